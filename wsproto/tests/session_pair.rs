//! The server session against a simulated client, with no socket and no
//! clock: bytes move between the two in memory and time moves when the test
//! says so. An echo application sits behind the session, as in the gateway.

use bytes::Bytes;
use wsproto::codec::{self, Codec, Event, FrameClass, Limits, MessageKind, Role};
use wsproto::handshake::{ClientHandshake, HandshakePolicy, ServerAnswer};
use wsproto::http::Reject;
use wsproto::session::{
    Backpressure, Ending, Flow, Keepalive, Note, Opening, Refused, Session, SessionConfig, Sink,
    Transport, UpgradeRequest,
};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);
const CLIENT_LIMITS: Limits = Limits {
    max_frame_bytes: 1 << 20,
    max_message_bytes: 1 << 20,
};

fn config() -> SessionConfig {
    SessionConfig {
        policy: HandshakePolicy {
            max_request_bytes: 4096,
            max_headers: 32,
            routes: vec!["/echo".into(), "/private".into()],
            health_path: Some("/healthz".into()),
            subprotocols: vec![],
            allowed_origins: vec![],
        },
        limits: Limits {
            max_frame_bytes: 1 << 16,
            max_message_bytes: 1 << 20,
        },
        handshake_ms: 1_000,
        keepalive: vec![Keepalive::Silence {
            ping_ms: 3_000,
            idle_ms: 10_000,
        }],
        close_ms: 500,
    }
}

/// The driver side: what the gateway's connection does with the session's
/// requests, minus the ring.
#[derive(Default)]
struct Driver {
    /// Bytes queued for the client, not yet delivered.
    wire: Vec<u8>,
    transport: Option<Transport>,
    deadline: u64,
    ending: Option<Ending>,
    statuses: Vec<u16>,
    closes_in: Vec<Option<u16>>,
    closes_out: Vec<u16>,
    frames_out: Vec<FrameClass>,
    pings_out: u32,
    abnormal: u32,
    /// Queued-bytes limit; `Refused::Slow` past it (0 = none).
    max_queue: usize,
    /// Routes the application refuses to open.
    refuse_route: Option<usize>,
    /// Routes whose upgrade the application decides later (until then+100).
    defer_route: Option<usize>,
    messages: u32,
}

impl Sink for Driver {
    fn send(&mut self, bytes: Bytes, bp: Backpressure) -> Result<usize, Refused> {
        if self.transport.is_some() {
            return Err(Refused::Closed);
        }
        if bp == Backpressure::Check && self.max_queue > 0 && self.wire.len() > self.max_queue {
            return Err(Refused::Slow);
        }
        self.wire.extend_from_slice(&bytes);
        Ok(self.wire.len())
    }
    fn close_transport(&mut self, how: Transport) {
        // Abort overrides Graceful, as in the engine.
        if self.transport != Some(Transport::Abort) {
            self.transport = Some(how);
        }
    }
    fn set_deadline(&mut self, at_ms: u64) {
        self.deadline = at_ms;
    }
    fn open(&mut self, request: &UpgradeRequest<'_, '_, '_>) -> Result<Opening, Reject> {
        if Some(request.route) == self.refuse_route {
            return Err(Reject::new(403, "not for you"));
        }
        if Some(request.route) == self.defer_route {
            return Ok(Opening::Defer { until_ms: 100 });
        }
        Ok(Opening::Accept)
    }
    fn message(&mut self, kind: MessageKind, payload: &[u8]) -> Flow {
        // The echo application.
        self.messages += 1;
        match self.send(
            codec::encode_message(kind, payload, None),
            Backpressure::Check,
        ) {
            Ok(_) => Flow::Continue,
            Err(Refused::Slow) => Flow::Close {
                code: 1008,
                reason: "slow consumer",
                ending: Ending::SlowConsumer,
            },
            Err(Refused::Closed) => Flow::Continue,
        }
    }
    fn note(&mut self, note: Note<'_>) {
        match note {
            Note::Status(s) => self.statuses.push(s),
            Note::CloseIn(c) => self.closes_in.push(c),
            Note::CloseOut(c) => self.closes_out.push(c),
            Note::FrameOut(f) => self.frames_out.push(f),
            Note::PingOut => self.pings_out += 1,
            Note::Abnormal => self.abnormal += 1,
            Note::Ending(e) => {
                self.ending.get_or_insert(e);
            }
            Note::FramesIn(_) | Note::PingIn | Note::PongIn => {}
        }
    }
}

/// A server session, its driver, a client codec and the clock.
struct Pair {
    cfg: SessionConfig,
    server: Session,
    driver: Driver,
    client: Codec,
    now: u64,
}

impl Pair {
    fn new(cfg: SessionConfig) -> Pair {
        let (server, deadline) = Session::new(&cfg, 1);
        let driver = Driver {
            deadline,
            ..Driver::default()
        };
        Pair {
            cfg,
            server,
            driver,
            client: Codec::new(Role::Client),
            now: 1,
        }
    }

    /// A pair whose handshake on `/echo` is done.
    fn open() -> Pair {
        let mut p = Pair::new(config());
        let hs = ClientHandshake::new(KEY.into());
        p.send(&hs.request("example", "/echo", &[], &[]));
        let answer = p.take_wire();
        match hs.answer(&answer, &[]) {
            ServerAnswer::Accepted { consumed, .. } => assert_eq!(consumed, answer.len()),
            other => panic!("{other:?}"),
        }
        assert!(p.server.is_open());
        p
    }

    fn send(&mut self, bytes: &[u8]) {
        let mut copy = bytes.to_vec();
        self.server
            .input(&self.cfg, self.now, &mut copy, &mut self.driver);
    }

    fn take_wire(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.driver.wire)
    }

    /// Decodes everything the server sent into events (owned).
    fn received(&mut self) -> Vec<Received> {
        let mut wire = self.take_wire();
        let mut out = Vec::new();
        self.client
            .feed(&mut wire, &CLIENT_LIMITS, &mut |e| {
                out.push(match e {
                    Event::Message(k, p) => Received::Message(k, p.to_vec()),
                    Event::Ping(p) => Received::Ping(p.to_vec()),
                    Event::Pong(p) => Received::Pong(p.to_vec()),
                    Event::Close { code, .. } => Received::Close(code),
                })
            })
            .expect("server frames are valid");
        out
    }

    /// Moves the clock to `at` and fires the deadline if it has passed.
    fn advance(&mut self, at: u64) {
        self.now = at;
        if self.driver.deadline != 0 && self.driver.deadline <= at {
            self.driver.deadline = 0;
            self.server.timeout(&self.cfg, at, &mut self.driver);
        }
    }
}

#[derive(Debug, PartialEq)]
enum Received {
    Message(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
}

#[test]
fn upgrade_then_echo_in_both_kinds() {
    let mut p = Pair::open();
    assert_eq!(p.driver.statuses, [101]);
    p.send(&codec::encode_message(MessageKind::Text, b"hello", MASK));
    p.send(&codec::encode_message(
        MessageKind::Binary,
        &[0, 1, 2],
        MASK,
    ));
    assert_eq!(
        p.received(),
        [
            Received::Message(MessageKind::Text, b"hello".to_vec()),
            Received::Message(MessageKind::Binary, vec![0, 1, 2]),
        ]
    );
    assert_eq!(p.driver.transport, None);
}

#[test]
fn head_in_pieces_and_a_pipelined_frame_are_both_handled() {
    let mut p = Pair::new(config());
    let hs = ClientHandshake::new(KEY.into());
    let mut bytes = hs.request("example", "/echo?room=1", &[], &[]);
    bytes.extend_from_slice(&codec::encode_message(MessageKind::Text, b"early", MASK));
    for chunk in bytes.chunks(7) {
        p.send(chunk);
    }
    let wire = p.take_wire();
    let ServerAnswer::Accepted { consumed, .. } = hs.answer(&wire, &[]) else {
        panic!("not accepted: {:?}", String::from_utf8_lossy(&wire));
    };
    let mut frames = wire[consumed..].to_vec();
    let mut got = Vec::new();
    p.client
        .feed(&mut frames, &CLIENT_LIMITS, &mut |e| {
            if let Event::Message(_, m) = e {
                got.push(m.to_vec())
            }
        })
        .unwrap();
    assert_eq!(got, [b"early".to_vec()]);
}

#[test]
fn client_ping_gets_pong_and_unsolicited_pong_is_ignored() {
    let mut p = Pair::open();
    p.send(&codec::encode_frame(
        tungstenite::protocol::frame::coding::OpCode::Control(
            tungstenite::protocol::frame::coding::Control::Ping,
        ),
        true,
        b"abc",
        MASK,
    ));
    p.send(&codec::encode_frame(
        tungstenite::protocol::frame::coding::OpCode::Control(
            tungstenite::protocol::frame::coding::Control::Pong,
        ),
        true,
        b"x",
        MASK,
    ));
    assert_eq!(p.received(), [Received::Pong(b"abc".to_vec())]);
}

#[test]
fn client_close_is_echoed_and_finished_then_the_close_deadline_aborts() {
    let mut p = Pair::open();
    p.send(&codec::encode_close(4001, "bye", MASK));
    assert_eq!(p.received(), [Received::Close(Some(4001))]);
    // The closing handshake is complete: send the reply, then close (the
    // server closes TCP first, RFC 6455 §7.1.1), no shutdown and wait.
    assert_eq!(p.driver.transport, Some(Transport::Finish));
    assert_eq!(p.driver.ending, Some(Ending::Normal));
    assert_eq!(p.driver.closes_in, [Some(4001)]);
    assert_eq!(p.driver.deadline, p.now + 500);
    // Anything after the close is discarded.
    p.send(&codec::encode_message(MessageKind::Text, b"late", MASK));
    assert!(p.received().is_empty());
    // The peer never closes TCP: the deadline aborts.
    p.advance(p.now + 499);
    assert_eq!(p.driver.transport, Some(Transport::Finish));
    p.advance(p.now + 1);
    assert_eq!(p.driver.transport, Some(Transport::Abort));
}

#[test]
fn silence_gets_a_ping_then_1001_at_idle_ms() {
    let mut p = Pair::open();
    let opened = p.now;
    assert_eq!(p.driver.deadline, opened + 3_000);
    p.advance(opened + 3_000);
    assert_eq!(p.received(), [Received::Ping(vec![])]);
    assert_eq!(p.driver.pings_out, 1);
    assert_eq!(p.driver.deadline, opened + 10_000);
    p.advance(opened + 9_999);
    assert!(p.received().is_empty());
    p.advance(opened + 10_000);
    assert_eq!(p.received(), [Received::Close(Some(1001))]);
    assert_eq!(p.driver.ending, Some(Ending::Timeout));
}

#[test]
fn a_client_answering_pings_stays_open() {
    let mut p = Pair::open();
    let pong = codec::encode_frame(
        tungstenite::protocol::frame::coding::OpCode::Control(
            tungstenite::protocol::frame::coding::Control::Pong,
        ),
        true,
        &[],
        MASK,
    );
    for _ in 0..10 {
        let at = p.driver.deadline;
        p.advance(at);
        assert_eq!(p.received(), [Received::Ping(vec![])]);
        p.send(&pong);
    }
    assert!(p.server.is_open(), "closed after {} ms", p.now);
    assert!(p.now > 10_000 * 2);
}

#[test]
fn traffic_moves_the_idle_check_without_a_deadline_per_message() {
    let mut p = Pair::open();
    let first = p.driver.deadline;
    p.advance(2_000);
    p.send(&codec::encode_message(MessageKind::Text, b"x", MASK));
    // The deadline is not touched per message...
    assert_eq!(p.driver.deadline, first);
    // ...when it fires, the session sees the traffic and re-arms.
    p.advance(first);
    assert_eq!(
        p.received(),
        [Received::Message(MessageKind::Text, b"x".to_vec())]
    );
    assert_eq!(p.driver.deadline, 2_000 + 3_000);
}

#[test]
fn no_request_within_handshake_ms_is_408() {
    let mut p = Pair::new(config());
    p.send(b"GET /echo HTTP/1.1\r\nHost");
    p.advance(1_001);
    let wire = String::from_utf8(p.take_wire()).unwrap();
    assert!(
        wire.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{wire}"
    );
    assert_eq!(p.driver.ending, Some(Ending::Timeout));
    assert_eq!(p.driver.transport, Some(Transport::Graceful));
}

#[test]
fn http_answers_unknown_path_health_and_application_refusal() {
    let hs = ClientHandshake::new(KEY.into());
    for (request, status) in [
        (hs.request("h", "/nope", &[], &[]), 404),
        (b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), 200),
        (hs.request("h", "/private", &[], &[]), 403),
        (b"\x16\x03\x01\x00\x05hello\r\n\r\n".to_vec(), 400),
    ] {
        let mut p = Pair::new(config());
        p.driver.refuse_route = Some(1);
        p.send(&request);
        assert_eq!(p.driver.statuses, [status]);
        let answer = p.take_wire();
        assert_eq!(
            hs.answer(&answer, &[]),
            ServerAnswer::Refused { status },
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(p.driver.transport, Some(Transport::Graceful));
        assert!(!p.server.is_open());
    }
}

#[test]
fn protocol_errors_close_with_their_codes() {
    // Unmasked client frame: 1002. Invalid UTF-8 text: 1007. Oversized: 1009.
    let oversized = codec::encode_message(MessageKind::Binary, &vec![0; (1 << 16) + 1], MASK);
    for (wire, code) in [
        (
            codec::encode_message(MessageKind::Text, b"x", None).to_vec(),
            1002,
        ),
        (
            codec::encode_message(MessageKind::Text, b"\xff", MASK).to_vec(),
            1007,
        ),
        (oversized.to_vec(), 1009),
    ] {
        let mut p = Pair::open();
        p.send(&wire);
        assert_eq!(p.received(), [Received::Close(Some(code))]);
        assert_eq!(p.driver.ending, Some(Ending::Error));
        assert_eq!(p.driver.closes_out, [code]);
    }
}

#[test]
fn a_peer_that_does_not_read_is_closed_with_1008() {
    let mut p = Pair::open();
    p.driver.max_queue = 100;
    let big = codec::encode_message(MessageKind::Binary, &[7; 200], MASK);
    // The first echo goes out even though it is over the limit by itself.
    p.send(&big);
    assert!(p.server.is_open());
    p.send(&big);
    assert!(!p.server.is_open());
    assert_eq!(p.driver.ending, Some(Ending::SlowConsumer));
    assert_eq!(p.driver.closes_out, [1008]);
    // The close frame is queued behind the backlog, for a peer that reads late.
    let mut got = Vec::new();
    let mut wire = p.take_wire();
    p.client
        .feed(&mut wire, &CLIENT_LIMITS, &mut |e| {
            if let Event::Close { code, .. } = e {
                got.push(code)
            }
        })
        .unwrap();
    assert_eq!(got, [Some(1008)]);
}

#[test]
fn eof_without_close_is_abnormal_and_aborts() {
    let mut p = Pair::open();
    p.server.peer_eof(&mut p.driver);
    assert_eq!(p.driver.abnormal, 1);
    assert_eq!(p.driver.transport, Some(Transport::Abort));
    assert_eq!(p.driver.ending, Some(Ending::Error));
}

#[test]
fn shutdown_says_1001_and_drops_unfinished_handshakes() {
    let mut p = Pair::open();
    p.server.shutdown(&p.cfg, p.now, &mut p.driver);
    assert_eq!(p.received(), [Received::Close(Some(1001))]);
    assert_eq!(p.driver.ending, Some(Ending::Shutdown));
    let mut q = Pair::new(config());
    q.send(b"GET /echo");
    q.server.shutdown(&q.cfg, q.now, &mut q.driver);
    assert_eq!(q.driver.transport, Some(Transport::Abort));
}

#[test]
fn application_close_carries_code_and_reason() {
    let mut p = Pair::open();
    let long = "x".repeat(300);
    p.server
        .close(&p.cfg, p.now, 3500, &long, Ending::Normal, &mut p.driver);
    let mut wire = p.take_wire();
    let mut reason_len = 0;
    p.client
        .feed(&mut wire, &CLIENT_LIMITS, &mut |e| {
            if let Event::Close { code, reason } = e {
                assert_eq!(code, Some(3500));
                reason_len = reason.len();
            }
        })
        .unwrap();
    assert_eq!(reason_len, 123, "a close reason fits in a control frame");
}

#[test]
fn periodic_app_pings_go_out_whatever_the_traffic_and_need_an_answer() {
    let mut cfg = config();
    let app_ping = codec::encode_message(MessageKind::Text, b"{}", None);
    cfg.keepalive = vec![Keepalive::Periodic {
        ping_ms: 1_000,
        pong_ms: 300,
        ping: app_ping,
        close: (3012, "no pong"),
    }];
    let mut p = Pair::new(cfg);
    let hs = ClientHandshake::new(KEY.into());
    p.send(&hs.request("example", "/echo", &[], &[]));
    p.take_wire();
    let opened = p.now;
    assert_eq!(p.driver.deadline, opened + 1_000);
    // Traffic does not postpone the ping.
    p.advance(opened + 500);
    p.send(&codec::encode_message(MessageKind::Text, b"x", MASK));
    p.advance(opened + 1_000);
    assert_eq!(
        p.received(),
        [
            Received::Message(MessageKind::Text, b"x".to_vec()),
            Received::Message(MessageKind::Text, b"{}".to_vec()),
        ]
    );
    // Answered in time: the next ping comes a full interval later.
    p.advance(opened + 1_100);
    p.send(&codec::encode_message(MessageKind::Text, b"{}", MASK));
    p.advance(opened + 1_300);
    assert!(p.server.is_open());
    p.advance(opened + 2_000);
    assert_eq!(
        p.received(),
        [
            Received::Message(MessageKind::Text, b"{}".to_vec()),
            Received::Message(MessageKind::Text, b"{}".to_vec()),
        ]
    );
    // Not answered: closed with the configured code at pong_ms.
    p.advance(opened + 2_299);
    assert!(p.server.is_open());
    p.advance(opened + 2_300);
    assert_eq!(p.received(), [Received::Close(Some(3012))]);
    assert_eq!(p.driver.ending, Some(Ending::Timeout));
}

/// A pair whose `/private` upgrade request is waiting for the app's decision.
fn deferred(offer: &[&str]) -> (Pair, ClientHandshake) {
    let mut p = Pair::new(config());
    p.driver.defer_route = Some(1);
    let hs = ClientHandshake::new(KEY.into());
    let mut bytes = hs.request("example", "/private", offer, &[]);
    // A frame sent too early is kept for after the upgrade.
    bytes.extend_from_slice(&codec::encode_message(MessageKind::Text, b"early", MASK));
    p.send(&bytes);
    assert!(p.server.is_pending());
    assert!(p.take_wire().is_empty(), "no answer yet");
    assert_eq!(p.driver.deadline, 100);
    (p, hs)
}

#[test]
fn deferred_upgrade_accepted_with_the_apps_subprotocol() {
    let (mut p, hs) = deferred(&["chat", "superchat"]);
    let cfg = p.cfg.clone();
    assert!(p
        .server
        .accept_pending(&cfg, 50, Some("superchat"), &mut p.driver));
    let wire = p.take_wire();
    let ServerAnswer::Accepted {
        consumed,
        subprotocol,
    } = hs.answer(&wire, &["chat", "superchat"])
    else {
        panic!("not accepted: {:?}", String::from_utf8_lossy(&wire));
    };
    assert_eq!(subprotocol.as_deref(), Some("superchat"));
    // The early frame was echoed right after the 101.
    let mut frames = wire[consumed..].to_vec();
    let mut got = Vec::new();
    p.client
        .feed(&mut frames, &CLIENT_LIMITS, &mut |e| {
            if let Event::Message(_, m) = e {
                got.push(m.to_vec())
            }
        })
        .unwrap();
    assert_eq!(got, [b"early".to_vec()]);
    assert!(p.server.is_open());
    assert_eq!(p.driver.statuses, [101]);
}

#[test]
fn deferred_upgrade_refused_timed_out_or_given_a_foreign_subprotocol() {
    // Refused with the app's own answer.
    let (mut p, _) = deferred(&[]);
    let cfg = p.cfg.clone();
    let body = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec();
    p.server.refuse(&cfg, 10, 401, body.clone(), &mut p.driver);
    assert_eq!(p.take_wire(), body);
    assert_eq!(p.driver.statuses, [401]);
    assert_eq!(p.driver.transport, Some(Transport::Graceful));
    // No decision in time: 504.
    let (mut p, _) = deferred(&[]);
    p.advance(100);
    let wire = String::from_utf8(p.take_wire()).unwrap();
    assert!(wire.starts_with("HTTP/1.1 504 "), "{wire}");
    assert_eq!(p.driver.ending, Some(Ending::Timeout));
    // A subprotocol the client did not offer: 502, not a broken 101.
    let (mut p, _) = deferred(&["chat"]);
    let cfg = p.cfg.clone();
    assert!(!p
        .server
        .accept_pending(&cfg, 10, Some("mqtt"), &mut p.driver));
    let wire = String::from_utf8(p.take_wire()).unwrap();
    assert!(wire.starts_with("HTTP/1.1 502 "), "{wire}");
    assert!(!p.server.is_open());
    // The peer leaving while pending ends it.
    let (mut p, _) = deferred(&[]);
    p.server.peer_eof(&mut p.driver);
    assert_eq!(p.driver.transport, Some(Transport::Abort));
    // Flooding before the answer: 400.
    let (mut p, _) = deferred(&[]);
    p.send(&vec![0u8; 5000]);
    let wire = String::from_utf8(p.take_wire()).unwrap();
    assert!(wire.starts_with("HTTP/1.1 400 "), "{wire}");
}
