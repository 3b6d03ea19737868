//! Latency samples, percentiles, and figures collected over repetitions.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

#[derive(Clone, Copy, Debug, Default)]
pub struct Lat {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub mean: f64,
}

impl Lat {
    /// Percentiles in µs of samples in ns.
    pub fn of(mut ns: Vec<u64>) -> Lat {
        ns.sort_unstable();
        let n = ns.len().max(1);
        let pick = |q: f64| ns[((q * n as f64) as usize).min(n - 1)] as f64 / 1000.0;
        Lat {
            p50: pick(0.50),
            p99: pick(0.99),
            p999: pick(0.999),
            mean: ns.iter().sum::<u64>() as f64 / n as f64 / 1000.0,
        }
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Named figures collected over repetitions; each reported figure is the median.
#[derive(Default)]
pub struct Reps(BTreeMap<String, Vec<f64>>);

impl Reps {
    pub fn add(&mut self, key: &str, v: f64) {
        self.0.entry(key.to_string()).or_default().push(v);
    }

    pub fn lat(&mut self, key: &str, l: Lat) {
        self.add(&format!("{key}.p50"), l.p50);
        self.add(&format!("{key}.p99"), l.p99);
        self.add(&format!("{key}.p999"), l.p999);
        self.add(&format!("{key}.mean"), l.mean);
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).map(|v| median(v.clone()))
    }
}

/// Latencies of single calls, in ns, in the order they were taken.
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn with_capacity(n: usize) -> Samples {
        Samples(Vec::with_capacity(n))
    }

    /// Runs `f` and records how long it took.
    pub fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.0.push(t.elapsed().as_nanos() as u64);
        out
    }

    /// Awaits `fut` and records how long it took.
    pub async fn time_async<T>(&mut self, fut: impl Future<Output = T>) -> T {
        let t = Instant::now();
        let out = fut.await;
        self.0.push(t.elapsed().as_nanos() as u64);
        out
    }

    /// The percentiles of every sample.
    pub fn lat(self) -> Lat {
        Lat::of(self.0)
    }

    /// The percentiles of the samples after the first `warmup`.
    pub fn lat_after(mut self, warmup: usize) -> Lat {
        self.0.drain(..warmup.min(self.0.len()));
        Lat::of(self.0)
    }
}
