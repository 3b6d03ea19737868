use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::identity::WorkerId;

/// Lines longer than this are cut (tqdm and friends write very long `\r` lines).
const MAX_LINE: usize = 16 * 1024;

/// The last lines a worker wrote to stderr, kept for crash reports.
#[derive(Debug, Clone)]
pub(crate) struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    keep: usize,
}

impl StderrTail {
    pub(crate) fn new(keep: usize) -> Self {
        StderrTail {
            lines: Arc::new(Mutex::new(VecDeque::with_capacity(keep))),
            keep,
        }
    }

    fn push(&self, line: String) {
        if self.keep == 0 {
            return;
        }
        let mut lines = self.lines.lock().expect("stderr tail lock");
        if lines.len() == self.keep {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.lines
            .lock()
            .expect("stderr tail lock")
            .iter()
            .cloned()
            .collect()
    }
}

/// Which stream a captured line came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Whose output a capture reads.
#[derive(Debug, Clone)]
pub(crate) enum OutputSource {
    Worker(WorkerId),
    /// A pool's template process (`LaunchMode::Template`), by its generation.
    Template {
        pool: String,
        generation: u64,
    },
}

/// Reads `stream` line by line until end of file, re-emitting each line as a `tracing` event with
/// target `pyvisor::python` and the worker's pool, slot, generation and pid (a template's lines
/// carry `template = true` and no slot); stderr lines also go into `tail`.
pub(crate) async fn capture<R: AsyncRead + Unpin>(
    mut input: R,
    stream: Stream,
    source: OutputSource,
    pid: u32,
    tail: Option<StderrTail>,
) {
    let emit = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let line = text.trim_end_matches(['\r', '\n']);
        let name = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        match &source {
            OutputSource::Worker(worker) => tracing::info!(
                target: "pyvisor::python",
                stream = name,
                pool = %worker.pool,
                slot = worker.slot,
                generation = worker.generation,
                pid,
                "{line}"
            ),
            OutputSource::Template { pool, generation } => tracing::info!(
                target: "pyvisor::python",
                stream = name,
                pool = %pool,
                template = true,
                generation,
                pid,
                "{line}"
            ),
        }
        if let Some(tail) = &tail {
            tail.push(line.to_string());
        }
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match input.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &chunk[..n];
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            if pending.is_empty() {
                emit(&rest[..pos]);
            } else {
                pending.extend_from_slice(&rest[..pos]);
                emit(&pending);
                pending.clear();
            }
            rest = &rest[pos + 1..];
        }
        pending.extend_from_slice(rest);
        if pending.len() >= MAX_LINE {
            emit(&pending[..MAX_LINE]);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        emit(&pending);
    }
}
