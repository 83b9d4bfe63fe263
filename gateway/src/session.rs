//! The gateway's connection handler: HTTP upgrade, then a WebSocket session
//! running the echo application, with timeouts, limits and a close path that
//! always ends in a released slot.
//!
//! Everything protocol-shaped is delegated to the sans-IO [`crate::proto`]
//! layer; this module only decides what to do with its events and errors.
//!
//! On worker 0 the same handler also serves the admin listener (listener
//! index [`ADMIN_LISTENER`]): one plain `GET /metrics` per connection,
//! rendered on the ring thread. Admin connections are not client
//! connections: they are not counted, not admitted against
//! `max_connections`, and never become WebSockets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tungstenite::protocol::frame::coding::{Control, OpCode};

use crate::config::Config;
use crate::counters::{CloseReason, Counters};
use crate::telemetry::{self, latency, Telemetry, WorkerMetrics};
use engine::{CloseCause, CloseMode, ConnId, Handler, Io, Origin};
use wsproto::codec::{self, Codec, Event, FrameClass, FrameCounts, Limits, MessageKind, Role};
use wsproto::handshake::{self, HandshakePolicy, Parsed, PlainRequest, Reject};

/// Index of the admin listener among worker 0's listeners (the client
/// listener is 0).
pub const ADMIN_LISTENER: usize = 1;

/// Path of the metrics exposition on the admin listener.
pub const METRICS_PATH: &str = "/metrics";

/// Settings shared (read-only) by every worker, plus the one shared counter
/// that `max_connections` needs.
#[derive(Debug)]
pub struct Shared {
    policy: HandshakePolicy,
    limits: Limits,
    max_connections: usize,
    max_send_queue_bytes: usize,
    handshake_ms: u64,
    idle_ms: u64,
    ping_interval_ms: u64,
    close_ms: u64,
    publish_ms: u64,
    latency_sample_every: u32,
    /// Connections admitted across all workers (touched once per accept and close).
    pub active: AtomicUsize,
    /// The metrics recorder, when metrics are enabled (`[admin]`).
    pub telemetry: Option<Arc<Telemetry>>,
}

impl Shared {
    /// Derives the session settings from the configuration.
    pub fn new(config: &Config) -> Self {
        let ws = &config.websocket;
        Self {
            policy: HandshakePolicy {
                max_request_bytes: config.limits.max_handshake_bytes,
                max_headers: config.limits.max_headers,
                routes: vec![ws.echo_path.clone()],
                health_path: Some(ws.health_path.clone()),
                subprotocols: ws.subprotocols.clone(),
                allowed_origins: ws.allowed_origins.clone(),
            },
            limits: Limits {
                max_frame_bytes: config.limits.max_frame_bytes,
                max_message_bytes: config.limits.max_message_bytes,
            },
            max_connections: config.server.max_connections,
            max_send_queue_bytes: config.io.max_send_queue_bytes,
            handshake_ms: config.timeouts.handshake_ms,
            idle_ms: config.timeouts.idle_ms,
            ping_interval_ms: config.timeouts.ping_interval_ms,
            close_ms: config.timeouts.close_ms,
            publish_ms: config.admin.publish_ms,
            latency_sample_every: config.admin.latency_sample_every,
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

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Reading the HTTP request head.
    Http {
        /// The bytes of an incomplete head (empty, and unallocated, in the
        /// common case of a head in one read).
        head: Vec<u8>,
        /// Accept time ([`Io::now_us`], wrapping), for the handshake histogram.
        since_us: u32,
    },
    /// An admin connection reading its request head (bytes as in `Http`).
    Admin(Vec<u8>),
    /// An open WebSocket.
    Open(Codec),
    /// Our last bytes (close frame or HTTP response) are queued and our side
    /// is shutting down; input is discarded until the peer's EOF or the
    /// close deadline.
    Closing,
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    /// When we last received anything, in engine milliseconds.
    last_rx: u64,
    /// A keepalive ping is outstanding.
    pinged: bool,
    /// Holds one of the `max_connections` admissions.
    admitted: bool,
    /// How the connection is going to end, once decided.
    reason: Option<CloseReason>,
    /// Accepted on the admin listener: not a client connection.
    admin: bool,
    /// Handle of this connection's replies in flight in the worker's latency
    /// tracker ([`latency::NONE`] while none are). Lives in what was padding.
    track: u32,
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
}

impl GatewayHandler {
    /// A handler for worker `worker`.
    pub fn new(shared: Arc<Shared>, worker: usize) -> Self {
        let metrics = shared.telemetry.as_ref().map(|t| {
            Box::new(WorkerMetrics::new(
                t.clone(),
                worker,
                shared.latency_sample_every,
            ))
        });
        Self {
            shared,
            counters: Counters::default(),
            worker,
            metrics,
        }
    }

    /// Publishes this worker's counters now and reschedules the next publish.
    fn publish(&mut self, io: &mut Io) {
        if let Some(m) = self.metrics.as_deref_mut() {
            m.next_publish_ms = io.now_ms() + self.shared.publish_ms;
            m.publish(&self.counters, io);
            if self.worker == 0 {
                m.telemetry().upkeep();
            }
        }
    }

    /// Answers one admin request: `GET /metrics`, or an HTTP error.
    fn on_admin(&mut self, io: &mut Io, id: ConnId, s: &mut Session, data: &mut [u8]) {
        let Phase::Admin(pending) = &mut s.phase else {
            unreachable!()
        };
        let mut owned = std::mem::take(pending);
        let buffered = !owned.is_empty();
        let head = request_head(&mut owned, data);
        let limits = &self.shared.policy;
        let response =
            match handshake::parse_get(head, limits.max_request_bytes, limits.max_headers) {
                PlainRequest::Incomplete => {
                    let keep = if buffered { owned } else { head.to_vec() };
                    s.phase = Phase::Admin(keep);
                    return;
                }
                PlainRequest::Get { path, .. } if path == METRICS_PATH => {
                    match self.shared.telemetry.clone() {
                        Some(t) => {
                            // This worker's own numbers are as fresh as the request.
                            self.publish(io);
                            handshake::ok_response(telemetry::CONTENT_TYPE, t.render().as_bytes())
                        }
                        None => Reject {
                            status: 404,
                            reason: "metrics are disabled (admin.metrics = false)",
                        }
                        .response(),
                    }
                }
                PlainRequest::Get { .. } => Reject {
                    status: 404,
                    reason: "no such path; try /metrics",
                }
                .response(),
                PlainRequest::Reject(r) => r.response(),
            };
        self.finish(io, id, s, Some(response.into()), CloseReason::Normal);
    }

    /// Sends our last bytes and starts a graceful close bounded by `close_ms`.
    fn finish(
        &mut self,
        io: &mut Io,
        id: ConnId,
        s: &mut Session,
        last: Option<bytes::Bytes>,
        reason: CloseReason,
    ) {
        if let Some(bytes) = last {
            let _ = io.send(id, bytes);
        }
        s.phase = Phase::Closing;
        s.reason.get_or_insert(reason);
        io.close(id, CloseMode::Graceful);
        io.set_deadline(id, io.now_ms() + self.shared.close_ms);
    }

    fn http_reply(&mut self, io: &mut Io, id: ConnId, s: &mut Session, status: u16, body: Vec<u8>) {
        self.counters.http(status);
        let reason = if status == 408 {
            CloseReason::Timeout
        } else {
            CloseReason::Normal
        };
        self.finish(io, id, s, Some(body.into()), reason);
    }

    fn close_ws(
        &mut self,
        io: &mut Io,
        id: ConnId,
        s: &mut Session,
        code: u16,
        why: &str,
        reason: CloseReason,
    ) {
        self.counters.close_sent(code);
        self.counters.frames_out.add(FrameClass::Close);
        self.finish(
            io,
            id,
            s,
            Some(codec::encode_close(code, why, None)),
            reason,
        );
    }

    fn on_http(&mut self, io: &mut Io, id: ConnId, s: &mut Session, data: &mut [u8]) {
        let Phase::Http {
            head: pending,
            since_us,
        } = &mut s.phase
        else {
            unreachable!()
        };
        let since_us = *since_us;
        let mut owned = std::mem::take(pending);
        let buffered = !owned.is_empty();
        let head = request_head(&mut owned, data);
        match handshake::parse_request(head, &self.shared.policy) {
            Parsed::Incomplete => {
                let keep = if buffered { owned } else { head.to_vec() };
                s.phase = Phase::Http {
                    head: keep,
                    since_us,
                };
            }
            Parsed::Health { .. } => {
                self.http_reply(io, id, s, 200, handshake::health_response().to_vec());
            }
            Parsed::Reject(r) => {
                log::debug!("handshake rejected: {} {}", r.status, r.reason);
                self.http_reply(io, id, s, r.status, r.response());
            }
            Parsed::Upgrade(up) => {
                self.counters.http(101);
                if let Some(m) = &self.metrics {
                    let took_us = (io.now_us() as u32).wrapping_sub(since_us);
                    m.handshake.record(f64::from(took_us) / 1e6);
                }
                let _ = io.send(id, up.response(&self.shared.policy).into());
                s.phase = Phase::Open(Codec::new(Role::Server, self.shared.limits));
                s.last_rx = io.now_ms();
                io.set_deadline(id, self.next_idle_check(s));
                let rest = &mut head[up.consumed..];
                if !rest.is_empty() {
                    self.on_frames(io, id, s, rest);
                }
            }
        }
    }

    fn on_frames(&mut self, io: &mut Io, id: ConnId, s: &mut Session, data: &mut [u8]) {
        s.last_rx = io.now_ms();
        s.pinged = false;
        let Session { phase, track, .. } = s;
        let Phase::Open(codec) = phase else {
            unreachable!()
        };
        // Everything in this read arrived in this loop iteration.
        let arrival_us = io.now_us() as u32;
        let counters = &mut self.counters;
        // Replies queued in this read, and the queue length after the last.
        let (mut replies, mut queued_after) = (0u32, 0usize);
        let max_queue = self.shared.max_send_queue_bytes;
        let mut frames = FrameCounts::default();
        let mut peer_close = None;
        let mut slow = false;
        let result = codec.feed_counted(data, &mut frames, &mut |event| {
            if peer_close.is_some() || slow {
                return;
            }
            let (reply, class, message_len) = match event {
                Event::Message(kind, payload) => {
                    counters.messages_in += 1;
                    counters.bytes_in += payload.len() as u64;
                    let class = match kind {
                        MessageKind::Text => FrameClass::Text,
                        MessageKind::Binary => FrameClass::Binary,
                    };
                    let reply = codec::encode_message(kind, payload, None);
                    (reply, class, Some(payload.len()))
                }
                Event::Ping(payload) => {
                    counters.pings_in += 1;
                    let reply =
                        codec::encode_frame(OpCode::Control(Control::Pong), true, payload, None);
                    (reply, FrameClass::Pong, None)
                }
                Event::Pong(_) => {
                    counters.pongs_in += 1;
                    return;
                }
                Event::Close { code, .. } => {
                    peer_close = Some(code);
                    return;
                }
            };
            // A slow consumer is one whose backlog *before* this reply is over
            // the limit: a single large message (up to max_message_bytes)
            // must still be echoed to a peer that reads it.
            if io.queued_bytes(id) > max_queue {
                slow = true;
                return;
            }
            let Ok(queued) = io.send(id, reply) else {
                return;
            };
            counters.frames_out.add(class);
            if let Some(len) = message_len {
                counters.messages_out += 1;
                counters.bytes_out += len as u64;
                replies += 1;
                queued_after = queued;
            }
        });
        self.counters.frames_in.merge(&frames);
        if let Some(m) = self.metrics.as_deref_mut() {
            // One call per read: its replies share the arrival time.
            m.tracker.queued(track, arrival_us, replies, queued_after);
        }
        if let Some(code) = peer_close {
            self.counters.close_received(code);
            // Echo the peer's code (RFC 6455 §5.5.1); an empty close gets an empty reply.
            let reply = match code {
                Some(c) => {
                    self.counters.close_sent(c);
                    codec::encode_close(c, "", None)
                }
                None => {
                    self.counters.close_sent(0);
                    codec::encode_frame(OpCode::Control(Control::Close), true, &[], None)
                }
            };
            self.counters.frames_out.add(FrameClass::Close);
            self.finish(io, id, s, Some(reply), CloseReason::Normal);
        } else if slow {
            self.close_ws(io, id, s, 1008, "slow consumer", CloseReason::SlowConsumer);
        } else if let Err(e) = result {
            log::debug!("closing connection on protocol error: {e}");
            let mut why = e.to_string();
            why.truncate(100);
            self.close_ws(io, id, s, e.close_code(), &why, CloseReason::Error);
        }
    }

    /// The next moment the idle logic needs to look at this connection.
    fn next_idle_check(&self, s: &Session) -> u64 {
        let sh = &self.shared;
        if sh.ping_interval_ms > 0 && !s.pinged {
            s.last_rx + sh.ping_interval_ms
        } else {
            s.last_rx + sh.idle_ms
        }
    }
}

/// The request head so far: the receive buffer itself when no earlier read
/// left an incomplete head behind (the common case: no copy), else those
/// bytes with this read appended.
fn request_head<'a>(owned: &'a mut Vec<u8>, data: &'a mut [u8]) -> &'a mut [u8] {
    if owned.is_empty() {
        data
    } else {
        owned.extend_from_slice(data);
        owned
    }
}

impl Handler for GatewayHandler {
    type Conn = Session;

    fn on_open(&mut self, io: &mut Io, id: ConnId, origin: Origin) -> Session {
        let mut s = Session {
            phase: Phase::Http {
                head: Vec::new(),
                since_us: io.now_us() as u32,
            },
            last_rx: io.now_ms(),
            pinged: false,
            admitted: false,
            reason: None,
            admin: false,
            track: latency::NONE,
        };
        if origin == Origin::Accepted(ADMIN_LISTENER) {
            s.phase = Phase::Admin(Vec::new());
            s.admin = true;
            io.set_deadline(id, io.now_ms() + self.shared.handshake_ms);
            return s;
        }
        self.counters.accepted += 1;
        if self.shared.active.fetch_add(1, Ordering::Relaxed) >= self.shared.max_connections {
            self.shared.active.fetch_sub(1, Ordering::Relaxed);
            let r = handshake::service_unavailable();
            self.http_reply(io, id, &mut s, r.status, r.response());
            return s;
        }
        s.admitted = true;
        io.set_deadline(id, io.now_ms() + self.shared.handshake_ms);
        s
    }

    fn on_data(&mut self, io: &mut Io, id: ConnId, s: &mut Session, data: &mut [u8]) {
        match s.phase {
            Phase::Http { .. } => self.on_http(io, id, s, data),
            Phase::Open(_) => self.on_frames(io, id, s, data),
            Phase::Admin(_) => self.on_admin(io, id, s, data),
            Phase::Closing => {}
        }
    }

    fn on_peer_eof(&mut self, io: &mut Io, id: ConnId, s: &mut Session) {
        match s.phase {
            Phase::Open(_) => {
                // The peer went away without a close frame.
                self.counters.abnormal_closures += 1;
                s.reason.get_or_insert(CloseReason::Error);
                io.close(id, CloseMode::Abort);
            }
            Phase::Http { .. } | Phase::Admin(_) => {
                s.reason.get_or_insert(CloseReason::Error);
                io.close(id, CloseMode::Abort);
            }
            Phase::Closing => {}
        }
    }

    fn on_deadline(&mut self, io: &mut Io, id: ConnId, s: &mut Session) {
        let now = io.now_ms();
        match &s.phase {
            Phase::Http { .. } => {
                let body = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec();
                self.http_reply(io, id, s, 408, body);
            }
            Phase::Admin(_) => io.close(id, CloseMode::Abort),
            Phase::Closing => {
                s.reason.get_or_insert(CloseReason::Timeout);
                io.close(id, CloseMode::Abort);
            }
            Phase::Open(_) => {
                let sh = &self.shared;
                if now >= s.last_rx + sh.idle_ms {
                    self.close_ws(io, id, s, 1001, "idle timeout", CloseReason::Timeout);
                } else if sh.ping_interval_ms > 0
                    && !s.pinged
                    && now >= s.last_rx + sh.ping_interval_ms
                {
                    s.pinged = true;
                    self.counters.pings_out += 1;
                    let ping = codec::encode_frame(OpCode::Control(Control::Ping), true, &[], None);
                    if io.send(id, ping).is_ok() {
                        self.counters.frames_out.add(FrameClass::Ping);
                    }
                    io.set_deadline(id, self.next_idle_check(s));
                } else {
                    io.set_deadline(id, self.next_idle_check(s));
                }
            }
        }
    }

    fn on_shutdown(&mut self, io: &mut Io, id: ConnId, s: &mut Session) {
        match s.phase {
            Phase::Open(_) => self.close_ws(
                io,
                id,
                s,
                1001,
                "server shutting down",
                CloseReason::Shutdown,
            ),
            Phase::Http { .. } | Phase::Admin(_) => {
                s.reason.get_or_insert(CloseReason::Shutdown);
                io.close(id, CloseMode::Abort);
            }
            Phase::Closing => {}
        }
    }

    fn on_sent(&mut self, io: &mut Io, _id: ConnId, s: &mut Session, bytes: usize) {
        if let Some(m) = self.metrics.as_deref_mut() {
            m.tracker
                .sent(&mut s.track, bytes, io.now_us() as u32, &mut m.latency);
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

    fn on_closed(&mut self, _io: &mut Io, _id: ConnId, mut s: Session, cause: CloseCause) {
        if let Some(m) = self.metrics.as_deref_mut() {
            m.tracker.forget(&mut s.track);
        }
        if s.admin {
            return;
        }
        if s.admitted {
            self.shared.active.fetch_sub(1, Ordering::Relaxed);
        }
        let reason = match (s.reason, cause) {
            (Some(r), _) => r,
            (None, CloseCause::Clean) => CloseReason::Normal,
            (None, _) => CloseReason::Error,
        };
        self.counters.closed(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_stays_small() {
        // The idle-connection memory budget (512 B, see results/) is mostly this
        // plus the engine's slot. 80 B: the metrics fields (`admin`,
        // `track`) live in what was padding; keep it that way.
        let size = std::mem::size_of::<Option<Session>>();
        assert!(size <= 80, "Session grew to {size} bytes");
    }
}
