//! The gateway's engine handler: one [`Handler`] that dispatches each
//! connection to its kind, a client WebSocket ([`ws`]) or a plain HTTP
//! connection on the admin or API listener ([`http`]), and owns what the
//! worker shares between them: the apps of every route, the worker's
//! channels ([`Hub`]), counters, metrics, admission control.
//!
//! The data path of a client connection, in order: the engine accepts and
//! receives (`engine`), [`ws::WsConn`]'s sans-IO session parses the upgrade
//! and the frames (`wsproto::session`), the route's app acts on messages
//! ([`crate::app`]), and its sends go back through the engine's queue.

pub mod http;
pub mod ws;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use engine::mailbox::Mailbox;
use engine::{CloseCause, CloseMode, ConnId, Conns, Handler, Io, Origin};
use wsproto::codec::Limits;
use wsproto::handshake::{self, HandshakePolicy};
use wsproto::http::HeadLimits;
use wsproto::session::{Ending, Keepalive, Session, SessionConfig};

use crate::app::pubsub::api::{self, ApiContext};
use crate::app::pubsub::hub::{self, Hub, HubMsg, Settings};
use crate::app::{Ctx, RouteApp};
use crate::config::{AppKind, Config};
use crate::counters::Counters;
use crate::telemetry::{self, latency, Telemetry, WorkerMetrics};
use http::{HttpConn, Listener, Next, METRICS_PATH};
use ws::{Driver, WsConn};

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
    /// Channels: settings and every worker's mailbox.
    pub pubsub: Arc<Settings>,
    started: Instant,
    /// This node's name in `/api/info`.
    node: String,
    /// What each of worker 0's listeners serves, by listener index (the
    /// client listener, index 0, is `None`).
    pub listener_kinds: Vec<Option<Listener>>,
}

impl Shared {
    /// Derives the worker settings from the configuration; `mail` holds
    /// one mailbox per worker.
    pub fn new(config: &Config, mail: Arc<[Mailbox<HubMsg>]>) -> Self {
        let ws = &config.websocket;
        let t = &config.timeouts;
        let ps = &config.pubsub;
        let routes = config.effective_routes();
        let mut subprotocols = ws.subprotocols.clone();
        if routes.iter().any(|r| r.app == AppKind::Pubsub)
            && !subprotocols.iter().any(|p| p == "centrifuge-json")
        {
            // Centrifugo's upgrader offers it; a client that asks for it
            // must get it back (ws aborts otherwise).
            subprotocols.push("centrifuge-json".into());
        }
        let keepalive = routes
            .iter()
            .map(|r| match r.app {
                AppKind::Echo => Keepalive::Silence {
                    ping_ms: t.ping_interval_ms,
                    idle_ms: t.idle_ms,
                },
                AppKind::Pubsub => Keepalive::Periodic {
                    ping_ms: ps.ping_interval_ms,
                    pong_ms: ps.pong_timeout_ms,
                    ping: hub::ping_frame(),
                    close: (
                        centrifuge_proto::codes::NO_PONG.code,
                        centrifuge_proto::codes::NO_PONG.reason,
                    ),
                },
            })
            .collect();
        Self {
            session: SessionConfig {
                policy: HandshakePolicy {
                    max_request_bytes: config.limits.max_handshake_bytes,
                    max_headers: config.limits.max_headers,
                    routes: routes.iter().map(|r| r.path.clone()).collect(),
                    health_path: Some(ws.health_path.clone()),
                    subprotocols,
                    allowed_origins: ws.allowed_origins.clone(),
                },
                limits: Limits {
                    max_frame_bytes: config.limits.max_frame_bytes,
                    max_message_bytes: config.limits.max_message_bytes,
                },
                handshake_ms: t.handshake_ms,
                keepalive,
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
            pubsub: Arc::new(Settings::new(&config.pubsub, mail)),
            started: Instant::now(),
            node: config.server.listen.to_string(),
            listener_kinds: vec![None],
        }
    }
}

/// A connection, by kind.
#[derive(Debug)]
pub enum Conn {
    /// A client connection on the WebSocket listener.
    Ws(WsConn),
    /// A request stream on the admin or API listener.
    Http(HttpConn),
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
    /// This worker's channels.
    pub hub: Hub,
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
        let apps = RouteApp::for_routes(&shared.config.effective_routes(), &shared.pubsub);
        let hub = Hub::new(shared.pubsub.clone(), worker);
        Self {
            shared,
            counters: Counters::default(),
            worker,
            metrics,
            apps,
            hub,
        }
    }

    /// Publishes this worker's counters now and reschedules the next publish.
    fn publish(&mut self, io: &mut Io) {
        if let Some(m) = self.metrics.as_deref_mut() {
            m.next_publish_ms = io.now_ms() + self.shared.config.admin.publish_ms;
            m.publish(&self.counters, &self.hub, io);
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
        let max_queue = self.shared.max_send_queue_bytes;
        let mut driver = Driver {
            ctx: Ctx::new(io, id, &mut self.counters, &mut self.hub, max_queue),
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

    /// Disconnects what the hub asked to (slow subscribers, API
    /// disconnects), now that every connection's state is at hand.
    fn run_pending_closes(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>) {
        let now = io.now_ms();
        for (id, code, reason) in std::mem::take(&mut self.hub.pending_closes) {
            let Some(Conn::Ws(c)) = conns.get_mut(io, id) else {
                continue;
            };
            if !c.session.is_open() {
                continue;
            }
            let ending = if code == centrifuge_proto::codes::SLOW.code {
                self.hub.counters.disconnected_slow += 1;
                Ending::SlowConsumer
            } else {
                Ending::Normal
            };
            self.hub.counters.disconnect(code);
            self.drive(io, id, c, |s, cfg, d| {
                s.close(cfg, now, code, &reason, ending, d)
            });
        }
    }

    /// Serves the requests of an admin or API connection.
    fn on_http(&mut self, io: &mut Io, id: ConnId, h: &mut HttpConn, data: &[u8]) {
        let cfg = &self.shared.config;
        let limits = HeadLimits {
            max_bytes: cfg.limits.max_handshake_bytes,
            max_headers: cfg.limits.max_headers,
        };
        let (max_body, close_ms, handshake_ms) = (
            cfg.api.max_body_bytes,
            cfg.timeouts.close_ms,
            cfg.timeouts.handshake_ms,
        );
        let mut input = data;
        loop {
            let (response, keep_alive) = match h.input(input, limits, max_body) {
                Next::Incomplete => return,
                Next::Reject(r) => (r.response(), false),
                Next::Request(req) => self.answer_http(io, h.listener, req),
            };
            input = b"";
            let _ = io.send(id, response.into());
            if keep_alive {
                // The next request is due within handshake_ms.
                io.set_deadline(id, io.now_ms() + handshake_ms);
            } else {
                io.close(id, CloseMode::Graceful);
                io.set_deadline(id, io.now_ms() + close_ms);
                return;
            }
        }
    }

    /// The response to one request on the admin or API listener, and
    /// whether the connection stays open: only after a success the client
    /// wants to keep (a client error closes it, as a rejected upgrade does).
    fn answer_http(
        &mut self,
        io: &mut Io,
        listener: Listener,
        req: http::Request,
    ) -> (Vec<u8>, bool) {
        let (status, content_type, body) = self.route_http(io, listener, &req);
        let keep = req.keep_alive && status == 200;
        (
            http::response(status, &req.path, content_type, &body, keep),
            keep,
        )
    }

    /// Status, content type and body for one request.
    fn route_http(
        &mut self,
        io: &mut Io,
        listener: Listener,
        req: &http::Request,
    ) -> (u16, &'static str, Vec<u8>) {
        let api_here = !self.shared.config.api.key.is_empty()
            && (listener == Listener::Api || self.shared.config.api.listen.is_none());
        if listener == Listener::Admin && req.path == METRICS_PATH {
            if req.method != "GET" {
                return (405, "text/plain", b"method must be GET\n".to_vec());
            }
            return match self.shared.telemetry.clone() {
                Some(t) => {
                    // This worker's own numbers are as fresh as the request.
                    self.publish(io);
                    (200, telemetry::CONTENT_TYPE, t.render().into_bytes())
                }
                None => (
                    404,
                    "text/plain",
                    b"metrics are disabled (admin.metrics = false)\n".to_vec(),
                ),
            };
        }
        if !api_here || !req.path.starts_with("/api/") {
            let hint: &[u8] = if listener == Listener::Admin {
                b"no such path; try /metrics\n"
            } else {
                b"no such path\n"
            };
            return (404, "text/plain", hint.to_vec());
        }
        let endpoint = api::endpoint(&req.path);
        let answer =
            if !api::authorized(req.authorized_with.as_deref(), &self.shared.config.api.key) {
                api::Answer {
                    status: 401,
                    body: Vec::new(),
                }
            } else if req.method != "POST" {
                api::Answer {
                    status: 405,
                    body: Vec::new(),
                }
            } else {
                let cx = ApiContext {
                    hub: &mut self.hub,
                    io,
                    counters: &mut self.counters,
                    started: self.shared.started,
                    node: &self.shared.node,
                };
                api::handle(cx, endpoint, &req.body)
            };
        self.hub.counters.api(endpoint, answer.status);
        let content_type = if answer.status == 200 {
            "application/json"
        } else {
            "text/plain"
        };
        (answer.status, content_type, answer.body)
    }
}

impl Handler for GatewayHandler {
    type Conn = Conn;

    fn on_open(&mut self, io: &mut Io, id: ConnId, origin: Origin) -> Conn {
        let http_listener = match origin {
            Origin::Accepted(i) => self.shared.listener_kinds.get(i).copied().flatten(),
            Origin::Connected => None,
        };
        if let Some(listener) = http_listener {
            io.set_deadline(id, io.now_ms() + self.shared.config.timeouts.handshake_ms);
            return Conn::Http(HttpConn::new(listener));
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
            Conn::Http(h) => self.on_http(io, id, h, data),
        }
    }

    fn on_peer_eof(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        match conn {
            Conn::Ws(c) => self.drive(io, id, c, |s, _, d| s.peer_eof(d)),
            Conn::Http(_) => io.close(id, CloseMode::Abort),
        }
    }

    fn on_deadline(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        match conn {
            Conn::Ws(c) => {
                let now = io.now_ms();
                self.drive(io, id, c, |s, cfg, d| s.timeout(cfg, now, d));
            }
            Conn::Http(_) => io.close(id, CloseMode::Abort),
        }
    }

    fn on_shutdown(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        match conn {
            Conn::Ws(c) => {
                let now = io.now_ms();
                self.drive(io, id, c, |s, cfg, d| s.shutdown(cfg, now, d));
            }
            Conn::Http(_) => io.close(id, CloseMode::Abort),
        }
    }

    fn on_sent(&mut self, io: &mut Io, _id: ConnId, conn: &mut Conn, bytes: usize) {
        if let (Some(m), Conn::Ws(c)) = (self.metrics.as_deref_mut(), conn) {
            m.tracker
                .sent(&mut c.track, bytes, io.now_us() as u32, &mut m.latency);
        }
    }

    fn on_wake(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>) {
        let settings = self.shared.pubsub.clone();
        while let Some(msg) = settings.mail[self.worker].pop() {
            self.hub.apply(io, &mut self.counters, msg);
        }
        self.run_pending_closes(io, conns);
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

    fn on_schedule(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>) {
        if !self.hub.pending_closes.is_empty() {
            self.run_pending_closes(io, conns);
        }
    }

    fn on_closed(&mut self, io: &mut Io, id: ConnId, conn: Conn, cause: CloseCause) {
        let Conn::Ws(mut c) = conn else {
            return;
        };
        if let Some(m) = self.metrics.as_deref_mut() {
            m.tracker.forget(&mut c.track);
        }
        if let Some(route) = c.route {
            let max_queue = self.shared.max_send_queue_bytes;
            let mut ctx = Ctx::new(io, id, &mut self.counters, &mut self.hub, max_queue);
            self.apps[route as usize].app().closed(&mut ctx);
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
