//! Starting thread-per-core workers: one named thread per worker, pinned
//! when asked, building its [`Worker`] on that thread (a ring belongs to the
//! thread that submits to it: `SINGLE_ISSUER`) and reporting back before the
//! caller goes on, so a failed ring setup is an error at start-up rather than
//! a worker silently missing.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::mailbox::Bell;
use crate::{affinity, EngineConfig, Handler, Worker};

/// What one worker starts with, built on its own thread by the `setup`
/// closure of [`spawn`].
#[derive(Debug)]
pub struct WorkerSetup<H> {
    /// The application's handler.
    pub handler: H,
    /// Listening sockets the worker accepts on (empty in the client role).
    pub listeners: Vec<OwnedFd>,
    /// Set to begin the worker's drain.
    pub shutdown: Arc<AtomicBool>,
    /// The worker's doorbell, when others post to its mailbox.
    pub bell: Option<Arc<Bell>>,
}

/// How to start the workers.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// Thread names are `{name}-{index}`.
    pub name: String,
    /// Worker count.
    pub workers: usize,
    /// The CPU to pin each worker to (`None`: not pinned); indexed modulo its length.
    pub cpus: Vec<Option<usize>>,
    /// Ring and buffer sizing.
    pub engine: EngineConfig,
}

/// The running workers.
#[derive(Debug)]
pub struct Spawned<T> {
    threads: Vec<JoinHandle<io::Result<T>>>,
}

impl<T> Spawned<T> {
    /// Waits for every worker and returns each one's result, in worker order.
    pub fn join(self) -> Vec<io::Result<T>> {
        self.threads
            .into_iter()
            .map(|t| t.join().expect("worker thread panicked"))
            .collect()
    }

    /// True once every worker has returned.
    pub fn all_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }
}

/// Starts `opts.workers` workers and returns once all are running, or with
/// the first set-up error (after telling the others to stop through
/// `abort`). On worker `i`'s thread, `setup(i)` builds its handler and
/// listeners, the worker runs until its shutdown flag and drain end it, and
/// `finish(i, worker)` turns the stopped worker into its result.
pub fn spawn<H, T, S, F>(
    opts: SpawnOptions,
    abort: &AtomicBool,
    setup: S,
    finish: F,
) -> io::Result<Spawned<T>>
where
    H: Handler + 'static,
    T: Send + 'static,
    S: Fn(usize) -> io::Result<WorkerSetup<H>> + Send + Sync + 'static,
    F: Fn(usize, &mut Worker<H>) -> T + Send + Sync + 'static,
{
    let (setup, finish) = (Arc::new(setup), Arc::new(finish));
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(opts.workers);
    for i in 0..opts.workers {
        let cpu = match opts.cpus.len() {
            0 => None,
            n => opts.cpus[i % n],
        };
        let (setup, finish, ready) = (setup.clone(), finish.clone(), ready_tx.clone());
        let engine = opts.engine.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{}-{i}", opts.name))
            .spawn(move || -> io::Result<T> {
                if let Some(cpu) = cpu {
                    if let Err(e) = affinity::pin_current_thread(cpu) {
                        log::warn!("cannot pin worker {i} to cpu {cpu}: {e}");
                    }
                }
                let built = setup(i).and_then(|s| {
                    let mut worker = Worker::new(&engine, s.listeners, s.handler)?;
                    if let Some(bell) = s.bell {
                        worker.attach_bell(bell)?;
                    }
                    Ok((worker, s.shutdown))
                });
                let (mut worker, shutdown) = match built {
                    Ok(w) => w,
                    Err(e) => {
                        let e = io::Error::new(e.kind(), format!("worker {i}: {e}"));
                        let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                log::debug!("worker {i} ready on cpu {cpu:?}: {worker:?}");
                let _ = ready.send(Ok(()));
                drop(ready);
                let run = worker.run(&engine, &shutdown);
                let result = finish(i, &mut worker);
                run.map_err(|e| io::Error::new(e.kind(), format!("worker {i}: {e}")))?;
                Ok(result)
            })?;
        threads.push(thread);
    }
    drop(ready_tx);
    // One message per worker (each sender lives until its worker is set up).
    for r in ready_rx.iter().take(opts.workers) {
        if let Err(e) = r {
            abort.store(true, Ordering::Relaxed);
            return Err(e);
        }
    }
    Ok(Spawned { threads })
}
