//! The gateway's engine handler: one [`Handler`] that dispatches each
//! connection to its kind, a client WebSocket ([`ws`]) or an admin HTTP
//! request ([`admin`]), and owns what the worker shares between them (the
//! apps of every route, counters, metrics, admission control).
//!
//! The data path of a client connection, in order: the engine accepts and
//! receives (`engine`), [`ws::WsConn`]'s sans-IO session parses the upgrade
//! and the frames (`wsproto::session`), the route's app acts on messages
//! ([`crate::app`]), and its sends go back through the engine's queue.

pub mod admin;
pub mod ws;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use engine::{CloseCause, CloseMode, ConnId, Handler, Io, Origin};
use wsproto::codec::Limits;
use wsproto::handshake::{self, HandshakePolicy};
use wsproto::http::{self, HeadLimits};
use wsproto::session::{Ending, Session, SessionConfig};

use crate::app::{Ctx, RouteApp};
use crate::config::Config;
use crate::counters::Counters;
use crate::telemetry::{self, latency, Telemetry, WorkerMetrics};
use admin::{AdminConn, AdminRequest};
use ws::{Driver, WsConn};

/// Index of the admin listener among worker 0's listeners (the client
/// listener is 0).
pub const ADMIN_LISTENER: usize = 1;

/// Settings shared (read-only) by every worker, plus the one shared counter
/// that `max_connections` needs.
#[derive(Debug)]
pub struct Shared {
    session: SessionConfig,
    config: Config,
    max_connections: usize,
    max_send_queue_bytes: usize,
    /// Connections admitted across all workers (touched once per accept and close).
    pub active: AtomicUsize,
    /// The metrics recorder, when metrics are enabled (`[admin]`).
    pub telemetry: Option<Arc<Telemetry>>,
}

impl Shared {
    /// Derives the worker settings from the configuration.
    pub fn new(config: &Config) -> Self {
        let ws = &config.websocket;
        let t = &config.timeouts;
        let routes = config.effective_routes();
        Self {
            session: SessionConfig {
                policy: HandshakePolicy {
                    max_request_bytes: config.limits.max_handshake_bytes,
                    max_headers: config.limits.max_headers,
                    routes: routes.iter().map(|r| r.path.clone()).collect(),
                    health_path: Some(ws.health_path.clone()),
                    subprotocols: ws.subprotocols.clone(),
                    allowed_origins: ws.allowed_origins.clone(),
                },
                limits: Limits {
                    max_frame_bytes: config.limits.max_frame_bytes,
                    max_message_bytes: config.limits.max_message_bytes,
                },
                handshake_ms: t.handshake_ms,
                idle_ms: t.idle_ms,
                ping_interval_ms: t.ping_interval_ms,
                close_ms: t.close_ms,
            },
            config: config.clone(),
            max_connections: config.server.max_connections,
            max_send_queue_bytes: config.io.max_send_queue_bytes,
            active: AtomicUsize::new(0),
            telemetry: config.admin.metrics_enabled().then(|| {
                Arc::new(Telemetry::new(
                    config.effective_workers(),
                    config.server.max_connections,
                ))
            }),
        }
    }
}

/// A connection, by kind.
#[derive(Debug)]
pub enum Conn {
    /// A client connection on the WebSocket listener.
    Ws(WsConn),
    /// A request on the admin listener.
    Admin(AdminConn),
}

/// The per-worker handler.
#[derive(Debug)]
pub struct GatewayHandler {
    shared: Arc<Shared>,
    /// This worker's counters.
    pub counters: Counters,
    /// Index of this worker (the `worker` metric label).
    worker: usize,
    /// Metric handles and latency accounting; `None` with metrics off.
    metrics: Option<Box<WorkerMetrics>>,
    /// The app of each route, on this worker.
    apps: Vec<RouteApp>,
}

impl GatewayHandler {
    /// A handler for worker `worker`.
    pub fn new(shared: Arc<Shared>, worker: usize) -> Self {
        let metrics = shared.telemetry.as_ref().map(|t| {
            Box::new(WorkerMetrics::new(
                t.clone(),
                worker,
                shared.config.admin.latency_sample_every,
            ))
        });
        let apps = RouteApp::for_routes(&shared.config.effective_routes());
        Self {
            shared,
            counters: Counters::default(),
            worker,
            metrics,
            apps,
        }
    }

    /// Publishes this worker's counters now and reschedules the next publish.
    fn publish(&mut self, io: &mut Io) {
        if let Some(m) = self.metrics.as_deref_mut() {
            m.next_publish_ms = io.now_ms() + self.shared.config.admin.publish_ms;
            m.publish(&self.counters, io);
            if self.worker == 0 {
                m.telemetry().upkeep();
            }
        }
    }

    /// Runs `f` on a client connection's session with a driver for it, then
    /// hands the replies it queued to the latency tracker.
    fn drive(
        &mut self,
        io: &mut Io,
        id: ConnId,
        c: &mut WsConn,
        f: impl FnOnce(&mut Session, &SessionConfig, &mut Driver<'_>),
    ) {
        // Everything handled in this callback arrived in this loop iteration.
        let arrival_us = io.now_us() as u32;
        let WsConn {
            session,
            ending,
            route,
            track,
            since_us,
            ..
        } = c;
        let mut driver = Driver {
            ctx: Ctx::new(io, id, &mut self.counters, self.shared.max_send_queue_bytes),
            apps: &mut self.apps,
            metrics: self.metrics.as_deref(),
            route,
            ending,
            since_us: *since_us,
        };
        f(session, &self.shared.session, &mut driver);
        let (replies, queued_after) = (driver.ctx.replies, driver.ctx.queued_after);
        if let Some(m) = self.metrics.as_deref_mut() {
            // One call per callback: its replies share the arrival time.
            m.tracker.queued(track, arrival_us, replies, queued_after);
        }
    }

    fn on_admin(&mut self, io: &mut Io, id: ConnId, a: &mut AdminConn, data: &mut [u8]) {
        let limits = HeadLimits {
            max_bytes: self.shared.config.limits.max_handshake_bytes,
            max_headers: self.shared.config.limits.max_headers,
        };
        let response = match a.input(data, limits) {
            AdminRequest::Incomplete => return,
            AdminRequest::Metrics => match self.shared.telemetry.clone() {
                Some(t) => {
                    // This worker's own numbers are as fresh as the request.
                    self.publish(io);
                    let body = t.render();
                    http::response(
                        200,
                        &[],
                        Some(telemetry::CONTENT_TYPE),
                        body.as_bytes(),
                        false,
                    )
                }
                None => http::Reject::new(404, "metrics are disabled (admin.metrics = false)")
                    .response(),
            },
            AdminRequest::Reject(r) => r.response(),
        };
        admin::answer(io, id, response, self.shared.config.timeouts.close_ms);
    }
}

impl Handler for GatewayHandler {
    type Conn = Conn;

    fn on_open(&mut self, io: &mut Io, id: ConnId, origin: Origin) -> Conn {
        if origin == Origin::Accepted(ADMIN_LISTENER) {
            io.set_deadline(id, io.now_ms() + self.shared.config.timeouts.handshake_ms);
            return Conn::Admin(AdminConn::default());
        }
        self.counters.accepted += 1;
        let (session, deadline) = Session::new(&self.shared.session, io.now_ms());
        io.set_deadline(id, deadline);
        let mut c = WsConn {
            session,
            ending: None,
            admitted: false,
            route: None,
            track: latency::NONE,
            since_us: io.now_us() as u32,
        };
        if self.shared.active.fetch_add(1, Ordering::Relaxed) >= self.shared.max_connections {
            self.shared.active.fetch_sub(1, Ordering::Relaxed);
            let now = io.now_ms();
            self.drive(io, id, &mut c, |s, cfg, d| {
                s.refuse(cfg, now, handshake::service_unavailable(), d)
            });
        } else {
            c.admitted = true;
        }
        Conn::Ws(c)
    }

    fn on_data(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn, data: &mut [u8]) {
        match conn {
            Conn::Ws(c) => {
                let now = io.now_ms();
                self.drive(io, id, c, |s, cfg, d| s.input(cfg, now, data, d));
            }
            Conn::Admin(a) => self.on_admin(io, id, a, data),
        }
    }

    fn on_peer_eof(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        match conn {
            Conn::Ws(c) => self.drive(io, id, c, |s, _, d| s.peer_eof(d)),
            Conn::Admin(_) => io.close(id, CloseMode::Abort),
        }
    }

    fn on_deadline(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        match conn {
            Conn::Ws(c) => {
                let now = io.now_ms();
                self.drive(io, id, c, |s, cfg, d| s.timeout(cfg, now, d));
            }
            Conn::Admin(_) => io.close(id, CloseMode::Abort),
        }
    }

    fn on_shutdown(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        match conn {
            Conn::Ws(c) => {
                let now = io.now_ms();
                self.drive(io, id, c, |s, cfg, d| s.shutdown(cfg, now, d));
            }
            Conn::Admin(_) => io.close(id, CloseMode::Abort),
        }
    }

    fn on_sent(&mut self, io: &mut Io, _id: ConnId, conn: &mut Conn, bytes: usize) {
        if let (Some(m), Conn::Ws(c)) = (self.metrics.as_deref_mut(), conn) {
            m.tracker
                .sent(&mut c.track, bytes, io.now_us() as u32, &mut m.latency);
        }
    }

    fn on_tick(&mut self, io: &mut Io) {
        if self
            .metrics
            .as_ref()
            .is_some_and(|m| io.now_ms() >= m.next_publish_ms)
        {
            self.publish(io);
        }
    }

    fn on_closed(&mut self, _io: &mut Io, id: ConnId, conn: Conn, cause: CloseCause) {
        let Conn::Ws(mut c) = conn else {
            return;
        };
        if let Some(m) = self.metrics.as_deref_mut() {
            m.tracker.forget(&mut c.track);
        }
        if let Some(route) = c.route {
            self.apps[route as usize].app().closed(id);
        }
        if c.admitted {
            self.shared.active.fetch_sub(1, Ordering::Relaxed);
        }
        let ending = match (c.ending, cause) {
            (Some(e), _) => e,
            (None, CloseCause::Clean) => Ending::Normal,
            (None, _) => Ending::Error,
        };
        self.counters.closed(ending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_state_stays_small() {
        // The idle-connection memory budget (results/idle-memory.md) is
        // mostly this plus the engine's slot: keep it where it was (80 B).
        let size = std::mem::size_of::<Option<Conn>>();
        assert!(size <= 80, "Conn grew to {size} bytes");
    }
}
