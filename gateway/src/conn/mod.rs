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
pub mod push;
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
use crate::app::{flow_after, AfterCall, Ctx, RouteApp};
use crate::broker::{BrokerCmd, BrokerLink};
use crate::config::{AppKind, Config};
use crate::counters::Counters;
use crate::telemetry::{self, latency, Telemetry, WorkerMetrics};
use crate::upstream::{Done, Purpose, Upstream};
use http::{Awaiting, HttpConn, Listener, Next, CONNECTIONS_PREFIX, METRICS_PATH};
use push::{ConnOp, PushAnswer, ReplyTo};
use ws::{Driver, WsConn};
use wsproto::session::Flow;

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
    pub fn new(
        config: &Config,
        mail: Arc<[Mailbox<HubMsg>]>,
        broker: Option<Arc<BrokerLink>>,
    ) -> Self {
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
                AppKind::Echo | AppKind::Upstream => Keepalive::Silence {
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
                    config.backends.iter().map(|b| b.name.clone()).collect(),
                ))
            }),
            pubsub: Arc::new(Settings::new(&config.pubsub, mail, broker)),
            started: Instant::now(),
            node: config.node_name(),
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
    /// A connection to a backend (its state lives in [`Upstream`]).
    Upstream,
    /// This worker's own broker connection (`broker.placement =
    /// "workers"`; its state lives in the hub's [`crate::broker::LocalBroker`]).
    Broker,
}

/// What every app of a worker shares: its counters, channels and backend
/// client (what an app's [`Ctx`] lends it).
#[derive(Debug)]
pub struct WorkerState {
    /// This worker's counters.
    pub counters: Counters,
    /// This worker's channels.
    pub hub: Hub,
    /// This worker's backend client.
    pub upstream: Upstream,
    /// Index of this worker (the `worker` metric label).
    pub worker: usize,
}

/// The per-worker handler.
#[derive(Debug)]
pub struct GatewayHandler {
    shared: Arc<Shared>,
    /// Metric handles and latency accounting; `None` with metrics off.
    metrics: Option<Box<WorkerMetrics>>,
    /// The app of each route, on this worker.
    apps: Vec<RouteApp>,
    /// Counters, channels, backends.
    pub w: WorkerState,
    /// Scratch for [`Self::broker_received`].
    broker_msgs: Vec<HubMsg>,
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
        let apps = RouteApp::for_routes(&shared.config, &shared.pubsub);
        let hub = Hub::new(shared.pubsub.clone(), worker);
        let limits = HeadLimits {
            max_bytes: shared.config.limits.max_handshake_bytes,
            max_headers: shared.config.limits.max_headers,
        };
        let upstream = Upstream::new(&shared.config.backends, limits);
        Self {
            metrics,
            apps,
            w: WorkerState {
                counters: Counters::default(),
                hub,
                upstream,
                worker,
            },
            broker_msgs: Vec::new(),
            shared,
        }
    }

    /// Publishes this worker's counters now and reschedules the next publish.
    fn publish(&mut self, io: &mut Io) {
        if let Some(m) = self.metrics.as_deref_mut() {
            m.next_publish_ms = io.now_ms() + self.shared.config.admin.publish_ms;
            m.publish(&self.w, io);
            if self.w.worker == 0 {
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
            close_code,
            ..
        } = c;
        let max_queue = self.shared.max_send_queue_bytes;
        let mut driver = Driver {
            ctx: Ctx::new(io, id, &mut self.w, max_queue),
            apps: &mut self.apps,
            metrics: self.metrics.as_deref(),
            route,
            ending,
            close_code,
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
        for (id, code, reason) in std::mem::take(&mut self.w.hub.pending_closes) {
            let Some(Conn::Ws(c)) = conns.get_mut(io, id) else {
                continue;
            };
            if !c.session.is_open() {
                continue;
            }
            let ending = if code == centrifuge_proto::codes::SLOW.code {
                self.w.hub.counters.disconnected_slow += 1;
                Ending::SlowConsumer
            } else {
                Ending::Normal
            };
            self.w.hub.counters.disconnect(code);
            self.drive(io, id, c, |s, cfg, d| {
                s.close(cfg, now, code, &reason, ending, d)
            });
        }
    }

    /// Serves the requests of an admin or API connection, in order: a
    /// request whose answer comes later (a push to another worker's
    /// connection) holds the ones after it.
    fn on_http(&mut self, io: &mut Io, id: ConnId, h: &mut HttpConn, data: &[u8]) {
        let cfg = &self.shared.config;
        let limits = HeadLimits {
            max_bytes: cfg.limits.max_handshake_bytes,
            max_headers: cfg.limits.max_headers,
        };
        let max_body = cfg.api.max_body_bytes;
        let mut input = data;
        loop {
            if h.awaiting.is_some() {
                h.hold(input);
                return;
            }
            let (response, keep_alive) = match h.input(input, limits, max_body) {
                Next::Incomplete => return,
                Next::Reject(r) => (r.response(), false),
                Next::Request(req) => match self.answer_http(io, id, h.listener, req) {
                    HttpAnswer::Now(response, keep) => (response, keep),
                    HttpAnswer::Later(awaiting) => {
                        h.awaiting = Some(awaiting);
                        io.set_deadline(id, 0);
                        return;
                    }
                },
            };
            input = b"";
            if !self.respond(io, id, response, keep_alive) {
                return;
            }
        }
    }

    /// Sends an HTTP response and arms the next deadline: the next request
    /// is due within `handshake_ms`, or, when closing, the peer has
    /// `close_ms` to go. Returns whether the connection stays open.
    fn respond(&mut self, io: &mut Io, id: ConnId, response: Vec<u8>, keep_alive: bool) -> bool {
        let t = &self.shared.config.timeouts;
        let _ = io.send(id, response.into());
        if keep_alive {
            io.set_deadline(id, io.now_ms() + t.handshake_ms);
        } else {
            io.close(id, CloseMode::Graceful);
            io.set_deadline(id, io.now_ms() + t.close_ms);
        }
        keep_alive
    }

    /// The response to one request on the admin or API listener, and
    /// whether the connection stays open: only after a success the client
    /// wants to keep (a client error closes it, as a rejected upgrade does).
    fn answer_http(
        &mut self,
        io: &mut Io,
        id: ConnId,
        listener: Listener,
        req: http::Request,
    ) -> HttpAnswer {
        let (status, content_type, body) = match self.route_http(io, id, listener, &req) {
            Routed::Now(status, content_type, body) => (status, content_type, body),
            Routed::Later(endpoint) => {
                return HttpAnswer::Later(Awaiting {
                    keep_alive: req.keep_alive,
                    endpoint,
                })
            }
        };
        let keep = req.keep_alive && (200..300).contains(&status);
        HttpAnswer::Now(
            http::response(status, &req.path, content_type, &body, keep),
            keep,
        )
    }

    /// Status, content type and body for one request, or the endpoint
    /// whose answer will come later.
    fn route_http(
        &mut self,
        io: &mut Io,
        id: ConnId,
        listener: Listener,
        req: &http::Request,
    ) -> Routed {
        let api_here = !self.shared.config.api.key.is_empty()
            && (listener == Listener::Api || self.shared.config.api.listen.is_none());
        if listener == Listener::Admin && req.path == METRICS_PATH {
            if req.method != "GET" {
                return Routed::Now(405, "text/plain", b"method must be GET\n".to_vec());
            }
            return match self.shared.telemetry.clone() {
                Some(t) => {
                    // This worker's own numbers are as fresh as the request.
                    self.publish(io);
                    Routed::Now(200, telemetry::CONTENT_TYPE, t.render().into_bytes())
                }
                None => Routed::Now(
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
            return Routed::Now(404, "text/plain", hint.to_vec());
        }
        let endpoint = api::endpoint(&req.path);
        let authorized =
            api::authorized(req.authorized_with.as_deref(), &self.shared.config.api.key);
        let connections = req.path.starts_with(CONNECTIONS_PREFIX);
        // Centrifugo's order: no such endpoint, then the method, then the key.
        let answer = if endpoint == api::ENDPOINTS.len() - 1 {
            api::Answer {
                status: 404,
                body: b"404 page not found\n".to_vec(),
            }
        } else if !connections && req.method != "POST" {
            api::Answer {
                status: 405,
                body: Vec::new(),
            }
        } else if !authorized {
            api::Answer {
                status: 401,
                body: Vec::new(),
            }
        } else if connections {
            match push::parse(req, self.shared.pubsub.mail.len()) {
                Ok(p) => {
                    let reply = ReplyTo::Local {
                        worker: self.w.worker,
                        conn: id,
                    };
                    let broker = self.shared.pubsub.broker.as_ref();
                    let posted = match (&p.node, broker) {
                        (Some(node), Some(b)) if **node != *b.node => {
                            let cmd = BrokerCmd::Push {
                                node: node.clone(),
                                control: push::to_control(&p),
                                reply,
                            };
                            b.mail.post(io, cmd).is_ok()
                        }
                        (Some(_), None) => false,
                        _ => {
                            let msg = HubMsg::Push {
                                conn: p.conn,
                                op: p.op,
                                reply,
                            };
                            let mail = &self.shared.pubsub.mail;
                            mail.get(p.worker).is_some_and(|m| m.post(io, msg).is_ok())
                        }
                    };
                    if posted {
                        return Routed::Later(endpoint);
                    }
                    let a = if p.node.is_some() && broker.is_none() {
                        PushAnswer::gone()
                    } else {
                        PushAnswer::error(503, "a mailbox is full; retry")
                    };
                    api::Answer {
                        status: a.status,
                        body: a.body,
                    }
                }
                Err(a) => api::Answer {
                    status: a.status,
                    body: a.body,
                },
            }
        } else {
            let cx = ApiContext {
                hub: &mut self.w.hub,
                io,
                counters: &mut self.w.counters,
                started: self.shared.started,
                node: &self.shared.node,
            };
            api::handle(cx, endpoint, &req.body)
        };
        self.w.hub.counters.api(endpoint, answer.status);
        let content_type = if answer.status == 200 || answer.body.starts_with(b"{") {
            "application/json"
        } else {
            "text/plain"
        };
        Routed::Now(answer.status, content_type, answer.body)
    }

    /// Performs a push on one of this worker's connections and posts the
    /// answer back to the API connection that asked.
    fn run_push(
        &mut self,
        io: &mut Io,
        conns: &mut Conns<'_, Conn>,
        conn: ConnId,
        op: ConnOp,
        reply: ReplyTo,
    ) {
        let answer = self.push_to(io, conns, conn, op);
        let (worker, conn) = match reply {
            ReplyTo::Local { worker, conn } => (worker, conn),
            ReplyTo::Remote { node, request } => {
                if let Some(b) = &self.shared.pubsub.broker {
                    let cmd = BrokerCmd::Answer {
                        node,
                        request,
                        answer,
                    };
                    if b.mail.post(io, cmd).is_err() {
                        log::warn!("push answer for node dropped: broker mailbox full");
                    }
                }
                return;
            }
        };
        let msg = HubMsg::PushAnswer { conn, answer };
        if worker == self.w.worker {
            self.push_answered(io, conns, msg);
        } else if let Err(msg) = self.shared.pubsub.mail[worker].post(io, msg) {
            // The API worker's mailbox is full: its client times out (the
            // handshake deadline of a waiting API connection is off, so
            // close it rather than leave it hanging).
            log::warn!("push answer dropped: {msg:?}");
        }
    }

    /// One push operation on a local connection.
    fn push_to(
        &mut self,
        io: &mut Io,
        conns: &mut Conns<'_, Conn>,
        id: ConnId,
        op: ConnOp,
    ) -> PushAnswer {
        let Some(Conn::Ws(c)) = conns.get_mut(io, id) else {
            return PushAnswer::gone();
        };
        let Some(RouteApp::Upstream(app)) = c.route.and_then(|r| self.apps.get(r as usize)) else {
            return PushAnswer::gone();
        };
        if !c.session.is_open() {
            return PushAnswer::gone();
        }
        match op {
            ConnOp::Info => match app.info(self.w.worker, id) {
                Some(json) => PushAnswer {
                    status: 200,
                    body: json.into_bytes(),
                },
                None => PushAnswer::gone(),
            },
            ConnOp::Send(kind, payload) => {
                let now = io.now_ms();
                self.drive(io, id, c, |s, cfg, d| {
                    if let Flow::Close {
                        code,
                        reason,
                        ending,
                    } = flow_after(d.ctx.send_message(kind, &payload))
                    {
                        s.close(cfg, now, code, reason, ending, d);
                    }
                });
                PushAnswer {
                    status: 200,
                    body: b"{}".to_vec(),
                }
            }
            ConnOp::Close(code, reason) => {
                let now = io.now_ms();
                self.drive(io, id, c, |s, cfg, d| {
                    s.close(cfg, now, code, &reason, Ending::Normal, d)
                });
                PushAnswer {
                    status: 204,
                    body: Vec::new(),
                }
            }
        }
    }

    /// The answer to a push reached the API connection's worker.
    fn push_answered(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>, msg: HubMsg) {
        let HubMsg::PushAnswer { conn, answer } = msg else {
            return;
        };
        let Some(Conn::Http(h)) = conns.get_mut(io, conn) else {
            return;
        };
        let Some(awaiting) = h.awaiting.take() else {
            return;
        };
        self.w.hub.counters.api(awaiting.endpoint, answer.status);
        let keep = awaiting.keep_alive && (200..300).contains(&answer.status);
        let content_type = if answer.body.is_empty() {
            None
        } else {
            Some("application/json")
        };
        let response =
            wsproto::http::response(answer.status, &[], content_type, &answer.body, keep);
        if self.respond(io, conn, response, keep) {
            // Requests that arrived meanwhile.
            self.on_http(io, conn, h, b"");
        }
    }

    /// Delivers what this worker's own broker connection received
    /// (`placement = "workers"`): publications to its subscribers and
    /// confirmations of its subscriptions, no mailbox hop; "insufficient
    /// state" after a reconnect.
    fn broker_received(&mut self, io: &mut Io) {
        let Some(local) = self.w.hub.local.as_deref_mut() else {
            return;
        };
        let mut msgs = std::mem::take(&mut self.broker_msgs);
        local.take(&mut msgs);
        for msg in msgs.drain(..) {
            self.w.hub.apply(io, &mut self.w.counters, msg);
        }
        self.broker_msgs = msgs;
    }

    /// Hands finished backend calls to the apps that made them.
    fn deliver_upstream(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>) {
        while !self.w.upstream.done.is_empty() {
            for done in std::mem::take(&mut self.w.upstream.done) {
                self.upstream_done(io, conns, done);
            }
        }
    }

    fn upstream_done(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>, done: Done) {
        let caller = done.caller;
        if caller.purpose == Purpose::Disconnect {
            return;
        }
        let Some(Conn::Ws(c)) = conns.get_mut(io, caller.conn) else {
            return;
        };
        if c.route != Some(caller.route) {
            return;
        }
        let now = io.now_ms();
        let route = usize::from(caller.route);
        let result = done.result;
        self.drive(io, caller.conn, c, |s, cfg, d| {
            let after = d.apps[route]
                .app()
                .upstream_done(&mut d.ctx, caller.purpose, result);
            match after {
                AfterCall::Flow(Flow::Continue) => {}
                AfterCall::Flow(Flow::Close {
                    code,
                    reason,
                    ending,
                }) => s.close(cfg, now, code, reason, ending, d),
                AfterCall::Accept { subprotocol, first } => {
                    if s.accept_pending(cfg, now, subprotocol.as_deref(), d) {
                        if let Some((kind, message)) = first {
                            if let Flow::Close {
                                code,
                                reason,
                                ending,
                            } = flow_after(d.ctx.send_message(kind, &message))
                            {
                                s.close(cfg, now, code, reason, ending, d);
                            }
                        }
                    }
                }
                AfterCall::Refuse { status, response } => s.refuse(cfg, now, status, response, d),
            }
        });
    }
}

/// How a request on the admin or API listener is answered.
enum HttpAnswer {
    /// Now: the response and whether the connection stays open.
    Now(Vec<u8>, bool),
    /// Later (a push on another worker's connection).
    Later(Awaiting),
}

/// [`GatewayHandler::route_http`]'s verdict.
enum Routed {
    /// Status, content type, body.
    Now(u16, &'static str, Vec<u8>),
    /// The answer comes later; the endpoint, for metrics.
    Later(usize),
}

impl Handler for GatewayHandler {
    type Conn = Conn;

    fn on_open(&mut self, io: &mut Io, id: ConnId, origin: Origin) -> Conn {
        let http_listener = match origin {
            Origin::Accepted(i) => self.shared.listener_kinds.get(i).copied().flatten(),
            Origin::Connected => {
                if let Some(local) = self.w.hub.local.as_deref_mut().filter(|l| l.owns(id)) {
                    local.on_open(io, id);
                    return Conn::Broker;
                }
                self.w.upstream.on_open(io, id);
                return Conn::Upstream;
            }
        };
        if let Some(listener) = http_listener {
            io.set_deadline(id, io.now_ms() + self.shared.config.timeouts.handshake_ms);
            return Conn::Http(HttpConn::new(listener));
        }
        self.w.counters.accepted += 1;
        let (session, deadline) = Session::new(&self.shared.session, io.now_ms());
        io.set_deadline(id, deadline);
        let mut c = WsConn {
            session,
            ending: None,
            admitted: false,
            route: None,
            close_code: 0,
            track: latency::NONE,
            since_us: io.now_us() as u32,
        };
        // The reserve of this worker's file table is for exactly this
        // answer (and its backend connections): beyond it the kernel would
        // refuse accepts and leave clients in the backlog until they time out.
        let table_full = io
            .descriptor_headroom()
            .is_some_and(|free| free < self.shared.config.server.overload_reserve as usize);
        if table_full
            || self.shared.active.fetch_add(1, Ordering::Relaxed) >= self.shared.max_connections
        {
            if !table_full {
                self.shared.active.fetch_sub(1, Ordering::Relaxed);
            }
            let now = io.now_ms();
            let r = handshake::service_unavailable();
            self.drive(io, id, &mut c, |s, cfg, d| {
                s.refuse(cfg, now, r.status, r.response(), d)
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
            Conn::Upstream => self.w.upstream.on_data(io, id, data),
            Conn::Broker => {
                if let Some(local) = self.w.hub.local.as_deref_mut() {
                    local.on_data(io, id, data);
                }
                self.broker_received(io);
            }
        }
    }

    fn on_peer_eof(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        match conn {
            Conn::Ws(c) => self.drive(io, id, c, |s, _, d| s.peer_eof(d)),
            Conn::Http(_) => io.close(id, CloseMode::Abort),
            Conn::Upstream => self.w.upstream.on_peer_eof(io, id),
            Conn::Broker => io.close(id, CloseMode::Abort),
        }
    }

    fn on_deadline(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        match conn {
            Conn::Ws(c) => {
                let now = io.now_ms();
                self.drive(io, id, c, |s, cfg, d| s.timeout(cfg, now, d));
            }
            Conn::Http(_) => io.close(id, CloseMode::Abort),
            Conn::Upstream => self.w.upstream.on_deadline(io, id),
            Conn::Broker => {
                // Only the hello has a deadline.
                if let Some(local) = self.w.hub.local.as_deref_mut() {
                    local.abort(io, id, "no answer to the connection's hello in time");
                }
            }
        }
    }

    fn on_connect_failed(&mut self, io: &mut Io, id: ConnId, errno: i32) {
        if let Some(local) = self.w.hub.local.as_deref_mut() {
            if local.on_connect_failed(io, id, errno) {
                self.broker_received(io);
                return;
            }
        }
        self.w.upstream.on_connect_failed(io, id, errno);
    }

    fn on_shutdown(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        match conn {
            Conn::Ws(c) => {
                let now = io.now_ms();
                self.drive(io, id, c, |s, cfg, d| s.shutdown(cfg, now, d));
            }
            Conn::Http(_) => io.close(id, CloseMode::Abort),
            Conn::Upstream => self.w.upstream.on_shutdown(io, id),
            Conn::Broker => io.close(id, CloseMode::Abort),
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
        while let Some(msg) = settings.mail[self.w.worker].pop() {
            match msg {
                HubMsg::Push { conn, op, reply } => self.run_push(io, conns, conn, op, reply),
                HubMsg::PushAnswer { .. } => self.push_answered(io, conns, msg),
                msg => self.w.hub.apply(io, &mut self.w.counters, msg),
            }
        }
        self.deliver_upstream(io, conns);
        self.run_pending_closes(io, conns);
    }

    fn on_tick(&mut self, io: &mut Io) {
        self.w.upstream.tick(io);
        if let Some(local) = self.w.hub.local.as_deref_mut() {
            local.upkeep(io);
            self.broker_received(io);
        }
        if self
            .metrics
            .as_ref()
            .is_some_and(|m| io.now_ms() >= m.next_publish_ms)
        {
            self.publish(io);
        }
    }

    fn on_schedule(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>) {
        // Backend answers first: a proxy's disconnect becomes a pending close.
        self.deliver_upstream(io, conns);
        if !self.w.hub.pending_closes.is_empty() {
            self.run_pending_closes(io, conns);
        }
        if self.w.hub.interest_pending() {
            self.w.hub.flush_interest(io);
        }
        if let Some(local) = self.w.hub.local.as_deref_mut() {
            local.reconcile(io);
            // Answers to requests for channels already confirmed, or
            // whose connection is down.
            self.broker_received(io);
            if !self.w.hub.pending_closes.is_empty() {
                self.run_pending_closes(io, conns);
            }
        }
    }

    fn on_closed(&mut self, io: &mut Io, id: ConnId, conn: Conn, cause: CloseCause) {
        let mut c = match conn {
            Conn::Ws(c) => c,
            Conn::Http(_) => return,
            Conn::Upstream => return self.w.upstream.on_closed(io, id),
            Conn::Broker => {
                if let Some(local) = self.w.hub.local.as_deref_mut() {
                    local.on_closed(io, id);
                }
                self.broker_received(io);
                return;
            }
        };
        if let Some(m) = self.metrics.as_deref_mut() {
            m.tracker.forget(&mut c.track);
        }
        if let (Some(route), None) = (c.route, c.ending) {
            // Ended below the session (e.g. a socket error): the app has
            // not heard yet.
            let max_queue = self.shared.max_send_queue_bytes;
            let mut ctx = Ctx::new(io, id, &mut self.w, max_queue);
            let code = (c.close_code != 0).then_some(c.close_code);
            self.apps[route as usize].app().closed(&mut ctx, code);
        }
        if c.admitted {
            self.shared.active.fetch_sub(1, Ordering::Relaxed);
        }
        let ending = match (c.ending, cause) {
            (Some(e), _) => e,
            (None, CloseCause::Clean) => Ending::Normal,
            (None, _) => Ending::Error,
        };
        self.w.counters.closed(ending);
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
