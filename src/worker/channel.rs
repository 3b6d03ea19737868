//! The request side of the protocol channel: frames are written inline when the pipe has room,
//! and by a writer task otherwise (never blocking the worker actor).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Writes request frames to a worker, in order.
#[derive(Debug)]
pub(crate) struct RequestChannel {
    pipe: Arc<pipe::Sender>,
    /// Frames (or frame tails) handed to the writer task and not fully written yet.
    backlog: Arc<AtomicUsize>,
    queue: mpsc::UnboundedSender<Vec<u8>>,
}

impl RequestChannel {
    /// Starts the writer task in `tasks`.
    pub(crate) fn new(pipe: pipe::Sender, tasks: &mut JoinSet<()>) -> Self {
        let pipe = Arc::new(pipe);
        let backlog = Arc::new(AtomicUsize::new(0));
        let (queue, mut frames) = mpsc::unbounded_channel::<Vec<u8>>();
        let (writer_pipe, writer_backlog) = (pipe.clone(), backlog.clone());
        tasks.spawn(async move {
            while let Some(frame) = frames.recv().await {
                if write_all(&writer_pipe, &frame).await.is_err() {
                    break; // the reader or the exit watcher reports the broken channel
                }
                writer_backlog.fetch_sub(1, Ordering::AcqRel);
            }
        });
        RequestChannel {
            pipe,
            backlog,
            queue,
        }
    }

    /// Sends one whole frame. The common case — nothing queued and room in the pipe — is one
    /// `write` from the caller's task, with no hop through the writer task.
    pub(crate) fn send(&self, frame: Vec<u8>) {
        let mut written = 0;
        if self.backlog.load(Ordering::Acquire) == 0 {
            while written < frame.len() {
                match self.pipe.try_write(&frame[written..]) {
                    Ok(n) => written += n,
                    Err(_) => break,
                }
            }
            if written == frame.len() {
                return;
            }
        }
        self.backlog.fetch_add(1, Ordering::AcqRel);
        let rest = if written == 0 {
            frame
        } else {
            frame[written..].to_vec()
        };
        let _ = self.queue.send(rest);
    }
}

async fn write_all(pipe: &pipe::Sender, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        pipe.writable().await?;
        match pipe.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
