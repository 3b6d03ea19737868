//! Helpers shared by the fuzz targets: running an input on a stack the size of the host's, and
//! independent walks over a [`Value`] that the targets check the host's code against.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread;

use pyvisor::{Ref, Value};

/// The stack of a tokio worker thread, where the host decodes replies and encodes requests. The
/// fuzzer's own thread has the 8 MiB main-thread stack, on which a stack overflow of the host
/// (the deep-nesting bug fixed before, `MAX_DEPTH`) would go unnoticed.
pub const HOST_STACK: usize = 2 * 1024 * 1024;

type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on a long-lived thread with a [`HOST_STACK`]-byte stack and waits for it. A panic
/// there aborts the process (libfuzzer-sys's panic hook), which libFuzzer reports as a crash.
pub fn on_host_stack(f: impl FnOnce() + Send + 'static) {
    static WORKER: OnceLock<Mutex<(Sender<Job>, Receiver<()>)>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (jobs, inbox) = channel::<Job>();
        let (done, finished) = channel();
        thread::Builder::new()
            .name("host-stack".into())
            .stack_size(HOST_STACK)
            .spawn(move || {
                for job in inbox {
                    job();
                    if done.send(()).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the host-stack thread");
        Mutex::new((jobs, finished))
    });
    let worker = worker.lock().expect("host-stack lock");
    worker.0.send(Box::new(f)).expect("host-stack thread alive");
    worker.1.recv().expect("host-stack thread alive");
}

/// Every ref and stream ref inside `value`, in the order the host serializes them (depth first;
/// map keys before their values; tuple and set items in order).
pub fn refs_in(value: &Value, out: &mut Vec<Ref>) {
    match value {
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => {
            for item in items {
                refs_in(item, out);
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                refs_in(k, out);
                refs_in(v, out);
            }
        }
        Value::Ref(r) => out.push(r.clone()),
        Value::StreamRef(r) => out.push(r.as_ref().clone()),
        _ => {}
    }
}

/// Whether `value` holds a float NaN anywhere (`Value`'s `PartialEq` is then not reflexive).
pub fn has_nan(value: &Value) -> bool {
    match value {
        Value::Float(f) => f.is_nan(),
        Value::Complex { re, im } => re.is_nan() || im.is_nan(),
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => {
            items.iter().any(has_nan)
        }
        Value::Map(entries) => entries.iter().any(|(k, v)| has_nan(k) || has_nan(v)),
        _ => false,
    }
}
