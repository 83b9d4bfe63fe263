//! The server side of one WebSocket connection's life, sans-IO: the HTTP
//! upgrade, the open session (pings, idle timeout, protocol errors, the
//! close echo) and the closing phase.
//!
//! Like `quinn-proto`, it owns no socket, ring or clock. The driver calls it
//! with received bytes ([`Session::input`]), the passing of its deadline
//! ([`Session::timeout`]) or the peer's EOF, always with `now` in
//! milliseconds, and the session answers through a [`Sink`]: bytes to
//! queue, the transport close to perform, its next deadline, application
//! events, and notes for metrics. Tests drive it with a simulated client and
//! a clock they advance (see `tests/session_pair.rs`).
//!
//! The application (echo, pub/sub, an upstream proxy) sits behind the sink:
//! it sees the upgrade request, then each message, and answers with a
//! [`Flow`].

use bytes::Bytes;
use tungstenite::protocol::frame::coding::{Control, OpCode};

use crate::codec::{self, Codec, Event, FrameClass, FrameCounts, Limits, MessageKind, Role};
use crate::handshake::{self, HandshakePolicy, Route};
use crate::http::{self, Head, Reject};

/// Settings every session of a server shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Routes, health path, subprotocols, origins and head limits.
    pub policy: HandshakePolicy,
    /// Frame and message limits.
    pub limits: Limits,
    /// Accept → complete request head, else 408.
    pub handshake_ms: u64,
    /// How each route keeps its connections alive (index = route; a
    /// missing entry uses the first).
    pub keepalive: Vec<Keepalive>,
    /// After our last bytes (close frame or HTTP answer), how long the peer
    /// has to close before the connection is aborted.
    pub close_ms: u64,
}

/// How an open WebSocket is kept alive and found dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keepalive {
    /// A WebSocket ping after `ping_ms` of silence (0: none); close 1001
    /// after `idle_ms` of silence.
    Silence {
        /// Silence before a ping.
        ping_ms: u64,
        /// Silence before the close.
        idle_ms: u64,
    },
    /// An application ping (`ping`, an encoded frame such as the text `{}`
    /// of the Centrifugo protocol) every `ping_ms` whatever the traffic;
    /// the peer must send something within `pong_ms` of each, else the
    /// session closes with `close`.
    Periodic {
        /// Interval between pings.
        ping_ms: u64,
        /// How long an answer may take.
        pong_ms: u64,
        /// The ping, ready to send.
        ping: Bytes,
        /// Close code and reason when no answer came.
        close: (u16, &'static str),
    },
}

/// How the driver should close the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Send what is queued, then shut down our side and wait for the peer's.
    Graceful,
    /// Send what is queued, then close: the closing handshake is complete
    /// (we answered the peer's close frame), and RFC 6455 §7.1.1 has the
    /// server close the TCP connection first.
    Finish,
    /// Drop everything now.
    Abort,
}

/// How a connection ended, decided once (the first decision sticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A close handshake, an HTTP answer, or the application closing.
    Normal,
    /// A protocol error, or the peer vanishing without a close frame.
    Error,
    /// Handshake, idle or close deadline.
    Timeout,
    /// The peer does not read what it is sent.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
}

impl Ending {
    /// Every ending, in index order (`as usize`).
    pub const ALL: [Ending; 5] = [
        Ending::Normal,
        Ending::Error,
        Ending::Timeout,
        Ending::SlowConsumer,
        Ending::Shutdown,
    ];

    /// Stable lower-case name (a metric label value).
    pub fn label(self) -> &'static str {
        match self {
            Ending::Normal => "normal",
            Ending::Error => "error",
            Ending::Timeout => "timeout",
            Ending::SlowConsumer => "slow_consumer",
            Ending::Shutdown => "shutdown",
        }
    }
}

/// Why [`Sink::send`] did not queue bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The transport is closing or gone.
    Closed,
    /// The peer is not reading: its queue is over the limit.
    Slow,
}

/// Whether a send may be refused because the peer is not reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Refuse ([`Refused::Slow`]) when the queue is over the limit.
    Check,
    /// Queue regardless.
    Force,
}

/// What the application wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Close the WebSocket with this code and reason (further input is
    /// ignored), recording `ending`.
    Close {
        /// Close code sent to the peer.
        code: u16,
        /// Close reason sent to the peer.
        reason: &'static str,
        /// How the connection ends, for metrics.
        ending: Ending,
    },
}

/// Something worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note<'a> {
    /// An HTTP response with this status was queued (101 for an upgrade).
    Status(u16),
    /// Frames received in one input, by class.
    FramesIn(&'a FrameCounts),
    /// A frame the session queued itself (pong, ping, close).
    FrameOut(FrameClass),
    /// A close frame arrived (`None`: empty payload).
    CloseIn(Option<u16>),
    /// A close frame was queued (0: empty payload).
    CloseOut(u16),
    /// A ping arrived.
    PingIn,
    /// A pong arrived.
    PongIn,
    /// The session sent a keepalive ping.
    PingOut,
    /// The peer went away without a close frame (1006).
    Abnormal,
    /// How the connection is going to end (first decision).
    Ending(Ending),
}

/// A validated upgrade request, as the application sees it.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeRequest<'r, 'h, 'b> {
    /// Index of the matched route in the policy.
    pub route: usize,
    /// The selected subprotocol's index in the policy, if any.
    pub subprotocol: Option<usize>,
    /// The whole request head: path, query, headers.
    pub request: &'r http::Request<'h, 'b>,
}

/// The application's answer to a valid upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Upgrade now (`101`).
    Accept,
    /// Decide later (e.g. after asking a backend) with
    /// [`Session::accept_pending`] or [`Session::refuse`]; if neither
    /// happens by `until_ms`, the client gets `504`.
    Defer {
        /// Driver milliseconds.
        until_ms: u64,
    },
}

/// The driver's side: I/O, time, the application and metrics.
pub trait Sink {
    /// Queues bytes for the peer. Returns the bytes now queued, or why not.
    /// With [`Backpressure::Check`] the driver refuses with
    /// [`Refused::Slow`] when the queue *before* these bytes is over its
    /// limit (so one large message still goes out); the session's last
    /// words (close frame, HTTP answer) and its pings are `Force`d.
    fn send(&mut self, bytes: Bytes, backpressure: Backpressure) -> Result<usize, Refused>;
    /// Closes the transport.
    fn close_transport(&mut self, how: Transport);
    /// The session's next deadline in the driver's milliseconds (0: none).
    fn set_deadline(&mut self, at_ms: u64);
    /// A valid upgrade request: the application accepts (the session sends
    /// `101`), defers its decision, or refuses with an HTTP status.
    fn open(&mut self, request: &UpgradeRequest<'_, '_, '_>) -> Result<Opening, Reject>;
    /// A complete message (text is valid UTF-8).
    fn message(&mut self, kind: MessageKind, payload: &[u8]) -> Flow;
    /// The open session's keepalive deadline passed (at most every ping
    /// interval): the application's chance to run its own per-connection
    /// timers, e.g. closing a client that never identified itself.
    fn tick(&mut self, _now: u64) -> Flow {
        Flow::Continue
    }
    /// Something to count.
    fn note(&mut self, note: Note<'_>);
    /// Whether the health path answers 200 (else 503 with this reason,
    /// e.g. a cluster node that lost its broker).
    fn health(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
}

#[derive(Debug)]
enum Phase {
    /// Reading the request head; holds an incomplete one (empty and
    /// unallocated in the common case of a head in one read).
    Http(Vec<u8>),
    /// A valid upgrade request whose answer the application deferred.
    Pending(Box<Pending>),
    /// An open WebSocket.
    Open(Open),
    /// Our last bytes are queued and our side is shutting down; input is
    /// discarded until the peer's EOF or the close deadline.
    Closing,
}

/// An upgrade waiting for the application's decision.
#[derive(Debug)]
struct Pending {
    upgrade: handshake::Upgrade,
    /// The subprotocols the client offered (the decision may pick one).
    offered: Vec<String>,
    /// Bytes that arrived meanwhile (a client may not send frames before
    /// the `101`, but a pipelining one might; bounded by the head limit).
    early: Vec<u8>,
}

/// The state of an open WebSocket.
#[derive(Debug)]
struct Open {
    codec: Codec,
    /// `Silence`: when we last received anything. `Periodic`: when we last
    /// sent a ping. Driver milliseconds.
    at: u64,
    /// A keepalive ping is outstanding (nothing received since it).
    pinged: bool,
    /// The route, for its keepalive.
    route: u8,
}

impl Open {
    /// The next moment the keepalive logic needs to look at this connection.
    fn next_check(&self, keepalive: &Keepalive) -> u64 {
        match *keepalive {
            Keepalive::Silence { ping_ms, .. } if ping_ms > 0 && !self.pinged => self.at + ping_ms,
            Keepalive::Silence { idle_ms, .. } => self.at + idle_ms,
            Keepalive::Periodic { pong_ms, .. } if self.pinged => self.at + pong_ms,
            Keepalive::Periodic { ping_ms, .. } => self.at + ping_ms,
        }
    }

    /// Something arrived from the peer at `now`.
    fn heard(&mut self, keepalive: &Keepalive, now: u64) {
        if let Keepalive::Silence { .. } = keepalive {
            self.at = now;
        }
        self.pinged = false;
    }
}

impl SessionConfig {
    fn keepalive(&self, route: u8) -> &Keepalive {
        self.keepalive
            .get(usize::from(route))
            .or(self.keepalive.first())
            .expect("at least one keepalive")
    }
}

/// One connection's protocol state: 64 bytes, no heap while idle (the
/// frame limits live in the shared [`SessionConfig`], not here).
#[derive(Debug)]
pub struct Session {
    phase: Phase,
}

impl Session {
    /// A fresh connection accepted at `now`, and its first deadline: the
    /// request head is due within `handshake_ms`.
    pub fn new(cfg: &SessionConfig, now: u64) -> (Self, u64) {
        let session = Session {
            phase: Phase::Http(Vec::new()),
        };
        (session, now + cfg.handshake_ms)
    }

    /// True while the WebSocket is open (upgraded, not closing).
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// True once the session has decided to end (closing or closed).
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing)
    }

    /// Bytes received. `data` may be modified in place (unmasking).
    pub fn input(&mut self, cfg: &SessionConfig, now: u64, data: &mut [u8], sink: &mut impl Sink) {
        match &mut self.phase {
            Phase::Http(_) => self.on_head(cfg, now, data, sink),
            Phase::Open(_) => self.on_frames(cfg, now, data, sink),
            Phase::Pending(p) => {
                if p.early.len() + data.len() > cfg.policy.max_request_bytes {
                    let r = Reject::new(400, "data sent before the upgrade was answered");
                    sink.note(Note::Status(r.status));
                    self.finish(cfg, now, Some(r.response().into()), Ending::Error, sink);
                } else {
                    p.early.extend_from_slice(data);
                }
            }
            Phase::Closing => {}
        }
    }

    /// True while the application decides on a deferred upgrade.
    pub fn is_pending(&self) -> bool {
        matches!(self.phase, Phase::Pending(_))
    }

    /// Accepts a deferred upgrade, naming `subprotocol` in the `101` (one
    /// the client offered) or, when `None`, the one the policy selected.
    /// Returns false (and answers `502`) when the client did not offer
    /// `subprotocol`; no-op unless pending.
    pub fn accept_pending(
        &mut self,
        cfg: &SessionConfig,
        now: u64,
        subprotocol: Option<&str>,
        sink: &mut impl Sink,
    ) -> bool {
        let Phase::Pending(p) = &mut self.phase else {
            return false;
        };
        if subprotocol.is_some_and(|s| !p.offered.iter().any(|o| o == s)) {
            let r = Reject::new(
                502,
                "the backend chose a subprotocol the client did not offer",
            );
            self.refuse(cfg, now, r.status, r.response(), sink);
            return false;
        }
        let response = match subprotocol {
            Some(name) => p.upgrade.response_naming(Some(name)),
            None => p.upgrade.response(&cfg.policy),
        };
        let route = p.upgrade.route as u8;
        let mut early = std::mem::take(&mut p.early);
        self.upgrade(cfg, now, route, response, &mut early, sink);
        true
    }

    /// The deadline the session last set has passed.
    pub fn timeout(&mut self, cfg: &SessionConfig, now: u64, sink: &mut impl Sink) {
        match self.phase {
            Phase::Http(_) => {
                let r = handshake::request_timeout();
                sink.note(Note::Status(r.status));
                self.finish(cfg, now, Some(r.response().into()), Ending::Timeout, sink);
            }
            Phase::Pending(_) => {
                let r = Reject::new(504, "no decision on the upgrade in time");
                sink.note(Note::Status(r.status));
                self.finish(cfg, now, Some(r.response().into()), Ending::Timeout, sink);
            }
            Phase::Closing => {
                sink.note(Note::Ending(Ending::Timeout));
                sink.close_transport(Transport::Abort);
            }
            Phase::Open(ref mut open) => {
                let keepalive = cfg.keepalive(open.route);
                match keepalive {
                    Keepalive::Silence { idle_ms, .. } if now >= open.at + idle_ms => {
                        return self.close(cfg, now, 1001, "idle timeout", Ending::Timeout, sink);
                    }
                    Keepalive::Silence { ping_ms, .. }
                        if *ping_ms > 0 && !open.pinged && now >= open.at + ping_ms =>
                    {
                        open.pinged = true;
                        let ping =
                            codec::encode_frame(OpCode::Control(Control::Ping), true, &[], None);
                        if sink.send(ping, Backpressure::Force).is_ok() {
                            sink.note(Note::PingOut);
                            sink.note(Note::FrameOut(FrameClass::Ping));
                        }
                    }
                    Keepalive::Periodic { pong_ms, close, .. }
                        if open.pinged && now >= open.at + pong_ms =>
                    {
                        let (code, reason) = *close;
                        return self.close(cfg, now, code, reason, Ending::Timeout, sink);
                    }
                    Keepalive::Periodic { ping_ms, ping, .. } if now >= open.at + ping_ms => {
                        open.at = now;
                        open.pinged = true;
                        if sink.send(ping.clone(), Backpressure::Force).is_ok() {
                            sink.note(Note::PingOut);
                            sink.note(Note::FrameOut(FrameClass::Text));
                        }
                    }
                    _ => {}
                }
                let next = open.next_check(keepalive);
                if let Flow::Close {
                    code,
                    reason,
                    ending,
                } = sink.tick(now)
                {
                    return self.close(cfg, now, code, reason, ending, sink);
                }
                sink.set_deadline(next);
            }
        }
    }

    /// The peer shut down its sending side.
    pub fn peer_eof(&mut self, sink: &mut impl Sink) {
        match self.phase {
            Phase::Open(_) => {
                sink.note(Note::Abnormal);
                sink.note(Note::Ending(Ending::Error));
                sink.close_transport(Transport::Abort);
            }
            Phase::Http(_) | Phase::Pending(_) => {
                sink.note(Note::Ending(Ending::Error));
                sink.close_transport(Transport::Abort);
            }
            Phase::Closing => {}
        }
    }

    /// The server is shutting down: say goodbye (1001) to an open WebSocket,
    /// drop a connection still in its handshake.
    pub fn shutdown(&mut self, cfg: &SessionConfig, now: u64, sink: &mut impl Sink) {
        match self.phase {
            Phase::Open(_) => self.close(
                cfg,
                now,
                1001,
                "server shutting down",
                Ending::Shutdown,
                sink,
            ),
            Phase::Http(_) | Phase::Pending(_) => {
                sink.note(Note::Ending(Ending::Shutdown));
                sink.close_transport(Transport::Abort);
            }
            Phase::Closing => {}
        }
    }

    /// Refuses the connection with a complete HTTP `response` of `status`,
    /// before the upgrade: before reading anything (503 at the connection
    /// limit) or instead of a deferred upgrade (the backend's answer).
    pub fn refuse(
        &mut self,
        cfg: &SessionConfig,
        now: u64,
        status: u16,
        response: Vec<u8>,
        sink: &mut impl Sink,
    ) {
        if let Phase::Http(_) | Phase::Pending(_) = self.phase {
            sink.note(Note::Status(status));
            self.finish(cfg, now, Some(response.into()), Ending::Normal, sink);
        }
    }

    /// Closes an open WebSocket with `code` and `reason` (truncated to the
    /// 123 bytes a close frame allows); no-op in other phases.
    pub fn close(
        &mut self,
        cfg: &SessionConfig,
        now: u64,
        code: u16,
        reason: &str,
        ending: Ending,
        sink: &mut impl Sink,
    ) {
        if !self.is_open() {
            return;
        }
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        sink.note(Note::CloseOut(code));
        sink.note(Note::FrameOut(FrameClass::Close));
        let frame = codec::encode_close(code, &reason[..end], None);
        self.finish(cfg, now, Some(frame), ending, sink);
    }

    /// Queues our last bytes and starts a graceful close bounded by `close_ms`.
    fn finish(
        &mut self,
        cfg: &SessionConfig,
        now: u64,
        last: Option<Bytes>,
        ending: Ending,
        sink: &mut impl Sink,
    ) {
        self.finish_with(cfg, now, last, ending, Transport::Graceful, sink);
    }

    /// [`Session::finish`] with the transport's close chosen by the caller.
    fn finish_with(
        &mut self,
        cfg: &SessionConfig,
        now: u64,
        last: Option<Bytes>,
        ending: Ending,
        transport: Transport,
        sink: &mut impl Sink,
    ) {
        if let Some(bytes) = last {
            let _ = sink.send(bytes, Backpressure::Force);
        }
        self.phase = Phase::Closing;
        sink.note(Note::Ending(ending));
        sink.close_transport(transport);
        sink.set_deadline(now + cfg.close_ms);
    }

    fn on_head(&mut self, cfg: &SessionConfig, now: u64, data: &mut [u8], sink: &mut impl Sink) {
        let Phase::Http(pending) = &mut self.phase else {
            unreachable!()
        };
        let mut owned = std::mem::take(pending);
        let buffered = !owned.is_empty();
        let head = http::gather(&mut owned, data);
        let decision = http::with_request(head, cfg.policy.limits(), |parsed| match parsed {
            Head::Incomplete => None,
            Head::Invalid(r) => Some(Err(r)),
            Head::Complete(req) => Some(match handshake::check(&req, &cfg.policy) {
                Ok(Route::Health) => Ok(None),
                Ok(Route::WebSocket(up)) => {
                    let request = UpgradeRequest {
                        route: up.route,
                        subprotocol: up.subprotocol,
                        request: &req,
                    };
                    sink.open(&request).map(|opening| {
                        let offered = match opening {
                            Opening::Accept => Vec::new(),
                            Opening::Defer { .. } => handshake::offered_subprotocols(&req),
                        };
                        Some((up, opening, offered))
                    })
                }
                Err(r) => Err(r),
            }),
        });
        match decision {
            None => {
                let keep = if buffered { owned } else { head.to_vec() };
                self.phase = Phase::Http(keep);
            }
            Some(Ok(None)) => match sink.health() {
                Ok(()) => {
                    sink.note(Note::Status(200));
                    let ok = Bytes::from_static(handshake::health_response());
                    self.finish(cfg, now, Some(ok), Ending::Normal, sink);
                }
                Err(why) => {
                    let r = Reject::new(503, why);
                    sink.note(Note::Status(503));
                    self.finish(cfg, now, Some(r.response().into()), Ending::Normal, sink);
                }
            },
            Some(Err(r)) => {
                sink.note(Note::Status(r.status));
                self.finish(cfg, now, Some(r.response().into()), Ending::Normal, sink);
            }
            Some(Ok(Some((up, Opening::Accept, _)))) => {
                let response = up.response(&cfg.policy);
                let route = up.route as u8;
                self.upgrade(cfg, now, route, response, &mut head[up.consumed..], sink);
            }
            Some(Ok(Some((upgrade, Opening::Defer { until_ms }, offered)))) => {
                let early = head[upgrade.consumed..].to_vec();
                sink.set_deadline(until_ms);
                self.phase = Phase::Pending(Box::new(Pending {
                    upgrade,
                    offered,
                    early,
                }));
            }
        }
    }

    /// Sends the `101` and opens the WebSocket; `rest` is what followed the
    /// request head (frames already).
    fn upgrade(
        &mut self,
        cfg: &SessionConfig,
        now: u64,
        route: u8,
        response: Vec<u8>,
        rest: &mut [u8],
        sink: &mut impl Sink,
    ) {
        sink.note(Note::Status(101));
        let _ = sink.send(response.into(), Backpressure::Force);
        let open = Open {
            codec: Codec::new(Role::Server),
            at: now,
            pinged: false,
            route,
        };
        sink.set_deadline(open.next_check(cfg.keepalive(open.route)));
        self.phase = Phase::Open(open);
        if !rest.is_empty() {
            self.on_frames(cfg, now, rest, sink);
        }
    }

    fn on_frames(&mut self, cfg: &SessionConfig, now: u64, data: &mut [u8], sink: &mut impl Sink) {
        let Phase::Open(open) = &mut self.phase else {
            unreachable!()
        };
        open.heard(cfg.keepalive(open.route), now);
        let mut frames = FrameCounts::default();
        let mut peer_close = None;
        let mut stop: Option<(u16, &'static str, Ending)> = None;
        let result = open
            .codec
            .feed_counted(data, &cfg.limits, &mut frames, &mut |event| {
                if peer_close.is_some() || stop.is_some() {
                    return;
                }
                match event {
                    Event::Message(kind, payload) => {
                        if let Flow::Close {
                            code,
                            reason,
                            ending,
                        } = sink.message(kind, payload)
                        {
                            stop = Some((code, reason, ending));
                        }
                    }
                    Event::Ping(payload) => {
                        sink.note(Note::PingIn);
                        let pong = codec::encode_frame(
                            OpCode::Control(Control::Pong),
                            true,
                            payload,
                            None,
                        );
                        match sink.send(pong, Backpressure::Check) {
                            Ok(_) => sink.note(Note::FrameOut(FrameClass::Pong)),
                            Err(Refused::Slow) => {
                                stop = Some((1008, "slow consumer", Ending::SlowConsumer));
                            }
                            Err(Refused::Closed) => {}
                        }
                    }
                    Event::Pong(_) => sink.note(Note::PongIn),
                    Event::Close { code, .. } => peer_close = Some(code),
                }
            });
        sink.note(Note::FramesIn(&frames));
        if let Some(code) = peer_close {
            sink.note(Note::CloseIn(code));
            // Echo the peer's code (RFC 6455 §5.5.1); an empty close gets an
            // empty reply.
            let reply = match code {
                Some(c) => codec::encode_close(c, "", None),
                None => codec::encode_frame(OpCode::Control(Control::Close), true, &[], None),
            };
            sink.note(Note::CloseOut(code.unwrap_or(0)));
            sink.note(Note::FrameOut(FrameClass::Close));
            self.finish_with(
                cfg,
                now,
                Some(reply),
                Ending::Normal,
                Transport::Finish,
                sink,
            );
        } else if let Some((code, reason, ending)) = stop {
            self.close(cfg, now, code, reason, ending, sink);
        } else if let Err(e) = result {
            let why = e.to_string();
            self.close(cfg, now, e.close_code(), &why, Ending::Error, sink);
        }
    }
}
#[cfg(test)]
mod tests {
    #[test]
    fn a_session_stays_small() {
        let size = std::mem::size_of::<super::Session>();
        assert!(size <= 64, "Session is {size} bytes");
    }
}
