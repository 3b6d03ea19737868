//! Processes as the kernel sees them: the host's resident memory and CPU time, allowed CPUs, a
//! worker's private memory.

/// The value of `key` in `/proc/<pid>/status` (`pid` may be `self`), trimmed.
fn status_field(pid: &str, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    Some(line[key.len()..].trim().to_string())
}

/// The host's resident set size, in KiB (0 when unknown).
pub fn vm_rss_kib() -> f64 {
    status_field("self", "VmRSS:")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The CPU list process `pid` may run on, as the kernel prints it (`0-1`).
pub fn cpus_allowed(pid: u32) -> String {
    status_field(&pid.to_string(), "Cpus_allowed_list:").unwrap_or_default()
}

/// (CPU seconds, voluntary, involuntary context switches) of this process, all threads.
pub fn usage() -> (f64, f64, f64) {
    // SAFETY: getrusage fills the struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (
        tv(ru.ru_utime) + tv(ru.ru_stime),
        ru.ru_nvcsw as f64,
        ru.ru_nivcsw as f64,
    )
}

/// The sum of the `keys` fields (`"Rss:"`) of `/proc/<pid>/smaps_rollup`, in KiB; `None` when
/// the file cannot be read.
pub fn smaps_kib(pid: u32, keys: &[&str]) -> Option<f64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib = rollup
        .lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(k)))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum();
    Some(kib)
}

/// Memory only process `pid` maps (`Private_Clean` + `Private_Dirty`), in KiB. Pages shared
/// copy-on-write with a parent (a template) or its other children are not private until written.
pub fn private_kib(pid: u32) -> Option<f64> {
    smaps_kib(pid, &["Private_Clean:", "Private_Dirty:"])
}
