//! Thread-per-core connection workers.
//!
//! Each accepted connection is handed, round-robin, to one of N single-threaded tokio
//! runtimes (one OS thread each, N = available cores) and stays there for its whole
//! life: TLS, HTTP, and the upstream connection it uses (upstream pools are per thread,
//! see `forward.rs`). Nothing about one request then crosses threads, which removes the
//! cross-thread wake-ups that dominated the profile of the work-stealing runtime
//! (scheduler and futex time, not crypto, was the top cost under keep-alive load).
//! Accepting, certificate work and the admin socket stay on the main runtime.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A fixed set of single-threaded runtimes.
#[derive(Debug)]
pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    // Dropping the senders lets each worker thread finish its runtime.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one).
    pub(crate) fn start(n: usize) -> std::io::Result<Workers> {
        let n = n.max(1);
        let mut handles = Vec::with_capacity(n);
        let mut stop = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new().name(format!("snirouter-io-{i}")).spawn(move || {
                runtime.block_on(async {
                    let _ = rx.await;
                });
            })?;
        }
        Ok(Workers { handles, next: AtomicUsize::new(0), _stop: stop })
    }

    /// As many workers as the machine has cores.
    pub(crate) fn per_core() -> std::io::Result<Workers> {
        Workers::start(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    }

    /// Runs `fut` on the next worker.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(fut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_their_worker_thread() {
        let workers = Workers::start(2).expect("workers");
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            workers.spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = tx.send(name);
            });
        }
        let mut names: Vec<String> = (0..4).filter_map(|_| rx.recv().ok().flatten()).collect();
        names.sort();
        assert_eq!(names, vec!["snirouter-io-0", "snirouter-io-0", "snirouter-io-1", "snirouter-io-1"]);
    }
}
