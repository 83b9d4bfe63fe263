//! Starts the workers: one pinned thread per core, each with its own ring,
//! `SO_REUSEPORT` listener and [`GatewayHandler`], and waits for them.
//! Worker 0 also owns the admin listener (`[admin] listen`), so `/metrics`
//! is served from a ring like everything else: no extra thread.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::config::Config;
use crate::counters::Counters;
use crate::session::{GatewayHandler, Shared, ADMIN_LISTENER};
use engine::{affinity, listener, EngineConfig, EngineStats, Worker};

/// Why the gateway could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listening sockets failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Binding the admin listener failed.
    #[error("cannot listen on {addr} (admin.listen): {source}")]
    AdminListen {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A worker could not set up io_uring (or another resource).
    #[error("worker {worker} failed to start: {source}")]
    WorkerSetup {
        /// Worker index.
        worker: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// A worker's event loop failed.
    #[error("worker {worker} stopped with an error: {source}")]
    WorkerRun {
        /// Worker index.
        worker: usize,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What the workers counted, summed at exit.
#[derive(Debug, Default)]
pub struct Summary {
    /// Gateway counters.
    pub counters: Counters,
    /// Engine counters.
    pub engine: Vec<EngineStats>,
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// The address actually bound (port 0 resolved).
    pub local_addr: SocketAddr,
    /// The admin listener's address, if there is one (port 0 resolved).
    pub admin_addr: Option<SocketAddr>,
    threads: Vec<JoinHandle<Result<(Counters, EngineStats), ServerError>>>,
}

/// Binds, starts every worker and returns once all are serving.
pub fn start(config: &Config, shutdown: Arc<AtomicBool>) -> Result<Running, ServerError> {
    let workers = config.effective_workers();
    let s = &config.server;
    let opts = listener::ListenOptions {
        backlog: s.backlog,
        share: s.share_port,
        send_buffer: s.socket_send_buffer,
        recv_buffer: s.socket_recv_buffer,
    };
    let (listeners, local_addr) =
        listener::reuseport_listeners(s.listen, workers, opts).map_err(|source| {
            ServerError::Listen {
                addr: config.server.listen,
                source,
            }
        })?;
    // A plain listener (no SO_REUSEPORT: a second process must not share it).
    let mut admin = match config.admin.listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .map_err(|source| ServerError::AdminListen { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::AdminListen { addr, source })?;
            Some((OwnedFd::from(listener), bound))
        }
        None => None,
    };
    let admin_addr = admin.as_ref().map(|(_, a)| *a);
    let cpus = affinity::allowed_cpus();
    let shared = Arc::new(Shared::new(config));
    let engine = EngineConfig {
        ring_entries: config.io.ring_entries,
        recv_buffers: config.io.recv_buffers,
        recv_buffer_size: config.io.recv_buffer_size,
        drain_ms: config.timeouts.drain_ms,
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(workers);
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut fds = vec![listener];
        if i == 0 {
            if let Some((fd, _)) = admin.take() {
                fds.push(fd);
                debug_assert_eq!(fds.len() - 1, ADMIN_LISTENER);
            }
        }
        let cpu = config
            .server
            .pin_workers
            .then(|| cpus.get(i % cpus.len().max(1)).copied())
            .flatten();
        let (shared, engine, shutdown, ready) = (
            shared.clone(),
            engine.clone(),
            shutdown.clone(),
            ready_tx.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(e) = affinity::pin_current_thread(cpu) {
                        log::warn!("cannot pin worker {i} to cpu {cpu}: {e}");
                    }
                }
                let mut worker = match Worker::new(&engine, fds, GatewayHandler::new(shared, i)) {
                    Ok(w) => w,
                    Err(source) => {
                        let _ = ready.send(Err(ServerError::WorkerSetup { worker: i, source }));
                        return Err(ServerError::WorkerSetup {
                            worker: i,
                            source: std::io::Error::other("see above"),
                        });
                    }
                };
                log::debug!("worker {i} ready on cpu {cpu:?}: {worker:?}");
                let _ = ready.send(Ok(()));
                let result = worker.run(&engine, &shutdown);
                let (io, handler) = worker.io_and_handler();
                let stats = io.stats;
                let counters = handler.counters.clone();
                result.map_err(|source| ServerError::WorkerRun { worker: i, source })?;
                Ok((counters, stats))
            })
            .expect("spawning a worker thread");
        threads.push(thread);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
            Err(_) => break,
        }
    }
    Ok(Running {
        local_addr,
        admin_addr,
        threads,
    })
}

impl Running {
    /// Waits for every worker to finish (after shutdown was requested) and
    /// sums their counters.
    pub fn join(self) -> Result<Summary, ServerError> {
        let mut summary = Summary::default();
        let mut first_err = None;
        for t in self.threads {
            match t.join().expect("worker thread panicked") {
                Ok((counters, stats)) => {
                    summary.counters.merge(&counters);
                    summary.engine.push(stats);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(summary), Err)
    }
}
