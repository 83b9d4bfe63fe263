//! Starts the workers: one pinned thread per core, each with its own ring,
//! `SO_REUSEPORT` listener and [`GatewayHandler`], and waits for them.
//! Worker 0 also owns the admin listener (`[admin] listen`), so `/metrics`
//! is served from a ring like everything else: no extra thread.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use engine::spawn::{spawn, SpawnOptions, Spawned, WorkerSetup};

use crate::app::pubsub::hub::HubMsg;
use crate::config::Config;
use crate::conn::http::Listener;
use crate::conn::{GatewayHandler, Shared};
use crate::counters::Counters;
use engine::mailbox::{Bell, Mailbox, WakeMode};

use crate::broker::{self, BrokerLink};
use engine::{affinity, listener, EngineStats};

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
    /// Binding the admin or API listener failed.
    #[error("cannot listen on {addr} ({key}): {source}")]
    PlainListen {
        /// The configured address.
        addr: SocketAddr,
        /// Its config key.
        key: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A worker could not set up io_uring (or another resource).
    #[error("failed to start: {0}")]
    WorkerSetup(std::io::Error),
    /// A worker's event loop failed.
    #[error("stopped with an error: {0}")]
    WorkerRun(std::io::Error),
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
    /// The API's own listener's address, if it has one.
    pub api_addr: Option<SocketAddr>,
    workers: Spawned<(Counters, EngineStats)>,
    /// The broker thread, in a cluster.
    broker: Option<Spawned<()>>,
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
    // A node named after its listen address (no `broker.node`) takes the
    // bound port: nodes started with port 0 must not all be ":0".
    let resolved;
    let config = if config.broker.node.is_empty() && config.server.listen != local_addr {
        let mut c = config.clone();
        c.server.listen = local_addr;
        resolved = c;
        &resolved
    } else {
        config
    };
    // Plain listeners (no SO_REUSEPORT: a second process must not share
    // them), served by worker 0 after its client listener.
    let plain = |addr: SocketAddr, key: &'static str| {
        let err = |source| ServerError::PlainListen { addr, key, source };
        let listener = TcpListener::bind(addr).map_err(err)?;
        let bound = listener.local_addr().map_err(err)?;
        Ok::<_, ServerError>((OwnedFd::from(listener), bound))
    };
    let admin = config
        .admin
        .listen
        .map(|a| plain(a, "admin.listen"))
        .transpose()?;
    let api = config
        .api
        .listen
        .map(|a| plain(a, "api.listen"))
        .transpose()?;
    let (admin_addr, api_addr) = (admin.as_ref().map(|l| l.1), api.as_ref().map(|l| l.1));
    // Each worker takes its listeners on its own thread.
    let mut per_worker: Vec<Vec<OwnedFd>> = listeners.into_iter().map(|l| vec![l]).collect();
    let mut kinds = vec![None];
    for (l, kind) in [(admin, Listener::Admin), (api, Listener::Api)] {
        if let Some((fd, _)) = l {
            per_worker[0].push(fd);
            kinds.push(Some(kind));
        }
    }
    let per_worker: Mutex<Vec<Option<Vec<OwnedFd>>>> =
        Mutex::new(per_worker.into_iter().map(Some).collect());
    let cpus = if s.pin_workers {
        affinity::allowed_cpus().into_iter().map(Some).collect()
    } else {
        Vec::new()
    };
    let options = SpawnOptions {
        name: "worker".into(),
        workers,
        cpus,
        engine: config.engine(),
    };
    // One mailbox per worker, woken through its eventfd (results/mailbox.md).
    let mut bells = Vec::with_capacity(workers);
    for _ in 0..workers {
        bells.push(Bell::new(WakeMode::EventFd).map_err(ServerError::WorkerSetup)?);
    }
    let mail: Arc<[Mailbox<HubMsg>]> = bells
        .iter()
        .map(|b| Mailbox::new(config.pubsub.mailbox_capacity, b.clone()))
        .collect();
    let link = BrokerLink::new(config).map_err(ServerError::WorkerSetup)?;
    let mut shared = Shared::new(config, mail.clone(), link.clone());
    shared.listener_kinds = kinds;
    let shared = Arc::new(shared);
    // The broker thread first: the workers' first subscriptions post to it.
    let broker = link
        .map(|link| {
            broker::spawn(
                link,
                mail.clone(),
                shared.pubsub.stats.clone(),
                shutdown.clone(),
                &shutdown,
            )
        })
        .transpose()
        .map_err(ServerError::WorkerSetup)?;
    let stop = shutdown.clone();
    let workers = spawn(
        options,
        &shutdown,
        move |i| {
            let listeners = per_worker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(i)
                .and_then(Option::take)
                .unwrap_or_default();
            Ok(WorkerSetup {
                handler: GatewayHandler::new(shared.clone(), i),
                listeners,
                shutdown: stop.clone(),
                bell: Some(bells[i].clone()),
            })
        },
        |_, worker| {
            let (io, handler) = worker.io_and_handler();
            (handler.w.counters.clone(), *io.stats())
        },
    )
    .map_err(ServerError::WorkerSetup)?;
    Ok(Running {
        local_addr,
        admin_addr,
        api_addr,
        workers,
        broker,
    })
}

impl Running {
    /// Waits for every worker to finish (after shutdown was requested) and
    /// sums their counters.
    pub fn join(self) -> Result<Summary, ServerError> {
        let mut summary = Summary::default();
        let mut first_err = None;
        let workers = self.workers.join();
        if let Some(b) = self.broker {
            for r in b.join() {
                if let Err(e) = r {
                    first_err.get_or_insert(ServerError::WorkerRun(e));
                }
            }
        }
        for result in workers {
            match result {
                Ok((counters, stats)) => {
                    summary.counters.merge(&counters);
                    summary.engine.push(stats);
                }
                Err(e) => {
                    first_err.get_or_insert(ServerError::WorkerRun(e));
                }
            }
        }
        first_err.map_or(Ok(summary), Err)
    }
}
