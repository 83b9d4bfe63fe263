//! The gateway's connection handler: HTTP upgrade, then a WebSocket session
//! running the echo application, with timeouts, limits and a close path that
//! always ends in a released slot.
//!
//! Everything protocol-shaped is delegated to the sans-IO [`crate::proto`]
//! layer; this module only decides what to do with its events and errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tungstenite::protocol::frame::coding::{Control, OpCode};

use crate::config::Config;
use crate::counters::{CloseReason, Counters};
use crate::engine::{CloseCause, CloseMode, ConnId, Handler, Io, Origin};
use crate::proto::codec::{self, Codec, Event, Limits, Role};
use crate::proto::handshake::{self, HandshakePolicy, Parsed};

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
    /// Connections admitted across all workers (touched once per accept and close).
    pub active: AtomicUsize,
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
            active: AtomicUsize::new(0),
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Reading the HTTP request head; holds the bytes of an incomplete head
    /// (empty, and unallocated, in the common case of a head in one read).
    Http(Vec<u8>),
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
}

/// The per-worker handler.
#[derive(Debug)]
pub struct GatewayHandler {
    shared: Arc<Shared>,
    /// This worker's counters.
    pub counters: Counters,
}

impl GatewayHandler {
    /// A handler for one worker.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            counters: Counters::default(),
        }
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
        self.finish(
            io,
            id,
            s,
            Some(codec::encode_close(code, why, None)),
            reason,
        );
    }

    fn on_http(&mut self, io: &mut Io, id: ConnId, s: &mut Session, data: &mut [u8]) {
        let Phase::Http(pending) = &mut s.phase else {
            unreachable!()
        };
        // Parse straight from the receive buffer unless an earlier read left
        // an incomplete head behind.
        let mut owned = std::mem::take(pending);
        let buffered = !owned.is_empty();
        let head: &mut [u8] = if buffered {
            owned.extend_from_slice(data);
            &mut owned
        } else {
            data
        };
        match handshake::parse_request(head, &self.shared.policy) {
            Parsed::Incomplete => {
                let keep = if buffered { owned } else { head.to_vec() };
                s.phase = Phase::Http(keep);
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
        let Phase::Open(codec) = &mut s.phase else {
            unreachable!()
        };
        s.last_rx = io.now_ms();
        s.pinged = false;
        let counters = &mut self.counters;
        let max_queue = self.shared.max_send_queue_bytes;
        let mut peer_close = None;
        let mut slow = false;
        let result = codec.feed(data, &mut |event| {
            if peer_close.is_some() || slow {
                return;
            }
            let reply = match event {
                Event::Message(kind, payload) => {
                    counters.messages_in += 1;
                    counters.bytes_in += payload.len() as u64;
                    counters.messages_out += 1;
                    counters.bytes_out += payload.len() as u64;
                    codec::encode_message(kind, payload, None)
                }
                Event::Ping(payload) => {
                    counters.pings_in += 1;
                    codec::encode_frame(OpCode::Control(Control::Pong), true, payload, None)
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
            } else {
                let _ = io.send(id, reply);
            }
        });
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

impl Handler for GatewayHandler {
    type Conn = Session;

    fn on_open(&mut self, io: &mut Io, id: ConnId, _origin: Origin) -> Session {
        self.counters.accepted += 1;
        let mut s = Session {
            phase: Phase::Http(Vec::new()),
            last_rx: io.now_ms(),
            pinged: false,
            admitted: false,
            reason: None,
        };
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
            Phase::Http(_) => self.on_http(io, id, s, data),
            Phase::Open(_) => self.on_frames(io, id, s, data),
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
            Phase::Http(_) => {
                s.reason.get_or_insert(CloseReason::Error);
                io.close(id, CloseMode::Abort);
            }
            Phase::Closing => {}
        }
    }

    fn on_deadline(&mut self, io: &mut Io, id: ConnId, s: &mut Session) {
        let now = io.now_ms();
        match &s.phase {
            Phase::Http(_) => {
                let body = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec();
                self.http_reply(io, id, s, 408, body);
            }
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
                    let _ = io.send(
                        id,
                        codec::encode_frame(OpCode::Control(Control::Ping), true, &[], None),
                    );
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
            Phase::Http(_) => {
                s.reason.get_or_insert(CloseReason::Shutdown);
                io.close(id, CloseMode::Abort);
            }
            Phase::Closing => {}
        }
    }

    fn on_closed(&mut self, _io: &mut Io, _id: ConnId, s: Session, cause: CloseCause) {
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
        // plus the engine's slot; keep an eye on it.
        let size = std::mem::size_of::<Option<Session>>();
        assert!(size <= 112, "Session grew to {size} bytes");
    }
}
