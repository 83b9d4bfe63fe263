//! The sans-IO server `Session`, driven by a small action language decoded
//! from the input, with an echo application behind a test `Sink` (as in
//! `wsproto/tests/session_pair.rs`) and a simulated client reading what the
//! session sends.
//!
//! Input: `[flags, actions..]`. Route 0 (`/echo`) keeps alive by silence
//! (ping at 3 s, close at 10 s), route 1 (`/private`) by periodic
//! application pings (every 1 s, answer within 300 ms). flags bit 0: no
//! silence pings; bit 1: a 256-byte send queue limit (slow consumer); bit 2:
//! the application refuses route 1; bit 3: a subprotocol; bit 4: an origin
//! allow-list; bit 5: the application closes at its third `tick`; bit 6: one
//! keepalive for both routes; bit 7: the application defers its decision on
//! route 1 (`Opening::Defer`, 200 ms). Each action is one byte (`% 12`) and
//! its operands:
//!
//! | op | action                                                        |
//! |----|---------------------------------------------------------------|
//! | 0,1| `input`: raw bytes, `[len, bytes..]`                          |
//! | 2  | `input`: an upgrade (or plain GET) request, `[variant]`       |
//! | 3  | `input`: one frame, `[opcode/fin/unmasked, len, payload..]`   |
//! | 4  | the clock moves `[n]` x 25 ms; the deadline fires if passed   |
//! | 5  | the clock moves to the deadline, which fires                  |
//! | 6  | `peer_eof`                                                    |
//! | 7  | `shutdown`                                                    |
//! | 8  | the application closes, `[code/reason]`                       |
//! | 9  | the client reads everything queued                            |
//! | 10 | `refuse`: 503 or the application's 401, `[variant]`           |
//! | 11 | `accept_pending`: no, an offered or an unoffered subprotocol  |
//!
//! Checked throughout: no panic; at most one HTTP answer; deadlines are in
//! the future; a closing session has closed its transport and recorded how
//! it ended; everything sent is one well-formed HTTP response, followed
//! after a 101 (naming only a subprotocol the client offered) by valid
//! unmasked frames with nothing after a close frame;
//! and once the peer falls silent the deadlines alone end the connection.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tungstenite::protocol::frame::coding::OpCode;
use wsproto::codec::{self, Codec, Event, Limits, MessageKind, Role};
use wsproto::handshake::{self, ClientHandshake, HandshakePolicy};
use wsproto::http::{self, BodyKind, Head, Headers, Reject};
use wsproto::session::{
    Backpressure, Ending, Flow, Keepalive, Note, Opening, Refused, Session, SessionConfig, Sink,
    Transport, UpgradeRequest,
};
use wsproto_fuzz::{cut_len, KEY};

const LIMITS: Limits = Limits {
    max_frame_bytes: 1024,
    max_message_bytes: 4096,
};
const CLIENT_LIMITS: Limits = Limits {
    max_frame_bytes: 1 << 20,
    max_message_bytes: 1 << 20,
};
const ROUTES: [&str; 4] = ["/echo", "/private", "/healthz", "/nope"];

fn config(flags: u8) -> SessionConfig {
    SessionConfig {
        policy: HandshakePolicy {
            max_request_bytes: 1024,
            max_headers: 16,
            routes: vec![ROUTES[0].into(), ROUTES[1].into()],
            health_path: Some(ROUTES[2].into()),
            subprotocols: if flags & 8 != 0 {
                vec!["v1.fuzz".into()]
            } else {
                vec![]
            },
            allowed_origins: if flags & 16 != 0 {
                vec!["https://good.example".into()]
            } else {
                vec![]
            },
        },
        limits: LIMITS,
        handshake_ms: 1_000,
        keepalive: {
            let silence = Keepalive::Silence {
                ping_ms: if flags & 1 != 0 { 0 } else { 3_000 },
                idle_ms: 10_000,
            };
            let periodic = Keepalive::Periodic {
                ping_ms: 1_000,
                pong_ms: 300,
                ping: codec::encode_message(MessageKind::Text, b"{}", None),
                close: (3012, "no pong"),
            };
            if flags & 64 != 0 {
                vec![silence]
            } else {
                vec![silence, periodic]
            }
        },
        close_ms: 500,
    }
}

/// The driver: a send queue, the transport, the clock and an echo app.
#[derive(Default)]
struct Driver {
    wire: Vec<u8>,
    transport: Option<Transport>,
    deadline: u64,
    now: u64,
    ending: Option<Ending>,
    statuses: Vec<u16>,
    max_queue: usize,
    refuse_route: Option<usize>,
    defer_route: Option<usize>,
    /// What the client offered, raw (tokens of `Sec-WebSocket-Protocol`)
    /// and as the session reports it (`handshake::offered_subprotocols`).
    offered_raw: Vec<Vec<u8>>,
    offered: Vec<String>,
    routes: usize,
    subprotocols: usize,
    /// The application closes at its third tick.
    tick_close: bool,
    ticks: u32,
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
        if self.transport != Some(Transport::Abort) {
            self.transport = Some(how);
        }
    }
    fn set_deadline(&mut self, at_ms: u64) {
        assert!(
            at_ms > self.now,
            "deadline {at_ms} not after now {}",
            self.now
        );
        self.deadline = at_ms;
    }
    fn open(&mut self, request: &UpgradeRequest<'_, '_, '_>) -> Result<Opening, Reject> {
        assert!(self.transport.is_none());
        assert!(request.route < self.routes);
        assert!(request.subprotocol.is_none_or(|i| i < self.subprotocols));
        self.offered_raw = request
            .request
            .values("Sec-WebSocket-Protocol")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        self.offered = handshake::offered_subprotocols(request.request);
        if Some(request.route) == self.refuse_route {
            return Err(Reject::new(403, "not for you"));
        }
        if Some(request.route) == self.defer_route {
            return Ok(Opening::Defer {
                until_ms: self.now + 200,
            });
        }
        Ok(Opening::Accept)
    }
    fn message(&mut self, kind: MessageKind, payload: &[u8]) -> Flow {
        assert!(payload.len() <= LIMITS.max_message_bytes);
        assert!(kind == MessageKind::Binary || std::str::from_utf8(payload).is_ok());
        match self.send(
            codec::encode_message(kind, payload, None),
            Backpressure::Check,
        ) {
            Ok(_) | Err(Refused::Closed) => Flow::Continue,
            Err(Refused::Slow) => Flow::Close {
                code: 1008,
                reason: "slow consumer",
                ending: Ending::SlowConsumer,
            },
        }
    }
    fn tick(&mut self, now: u64) -> Flow {
        assert_eq!(now, self.now);
        assert!(self.transport.is_none());
        self.ticks += 1;
        if self.tick_close && self.ticks == 3 {
            return Flow::Close {
                code: 4000,
                reason: "tick",
                ending: Ending::Normal,
            };
        }
        Flow::Continue
    }
    fn note(&mut self, note: Note<'_>) {
        match note {
            Note::Status(s) => self.statuses.push(s),
            Note::Ending(e) => {
                self.ending.get_or_insert(e);
            }
            _ => {}
        }
    }
}

/// The simulated client, reading what the session sent.
enum Peer {
    /// Waiting for the HTTP response.
    Head,
    /// After a 101: frames.
    Frames { codec: Codec, closed: bool },
    /// After any other (complete) response: nothing more may come.
    Done,
}

impl Peer {
    fn read(&mut self, driver: &mut Driver) {
        let mut bytes = std::mem::take(&mut driver.wire);
        if bytes.is_empty() {
            return;
        }
        if let Peer::Head = self {
            let limits = http::HeadLimits {
                max_bytes: 4096,
                max_headers: 16,
            };
            let (upgraded, head_len) = http::with_response(&bytes, limits, |h| {
                let Head::Complete(resp) = h else {
                    panic!("not one whole HTTP response: {h:?}")
                };
                assert_eq!(driver.statuses, [resp.status]);
                if resp.status != 101 {
                    assert!(!resp.keep_alive());
                    let Ok(BodyKind::Length(n)) = resp.body(false) else {
                        panic!("answer without a length")
                    };
                    assert_eq!(bytes.len(), resp.head_len + n, "bytes after the answer");
                    return (false, resp.head_len);
                }
                assert!(resp.has_token("Upgrade", b"websocket", true));
                assert!(resp.has_token("Connection", b"upgrade", true));
                let accept = resp.header("Sec-WebSocket-Accept").expect("accept");
                assert_eq!(accept.len(), 28);
                // Only a subprotocol the client offered (checked where the
                // offer is UTF-8, which the session's own list assumes).
                if let Some(p) = resp.header("Sec-WebSocket-Protocol") {
                    let utf8 = driver
                        .offered_raw
                        .iter()
                        .all(|o| std::str::from_utf8(o).is_ok());
                    if utf8 {
                        assert!(
                            driver.offered_raw.iter().any(|o| o == p.trim_ascii()),
                            "101 names {:?}, offered {:?}",
                            String::from_utf8_lossy(p),
                            driver.offered
                        );
                    }
                }
                (true, resp.head_len)
            });
            if !upgraded {
                *self = Peer::Done;
                return;
            }
            *self = Peer::Frames {
                codec: Codec::new(Role::Client),
                closed: false,
            };
            bytes.drain(..head_len);
        }
        match self {
            Peer::Head => unreachable!(),
            Peer::Done => panic!("{} bytes after a final HTTP answer", bytes.len()),
            Peer::Frames { codec, closed } => {
                let result = codec.feed(&mut bytes, &CLIENT_LIMITS, &mut |e| {
                    assert!(!*closed, "{e:?} after the close frame");
                    if let Event::Close { .. } = e {
                        *closed = true;
                    }
                });
                if let Err(e) = result {
                    panic!("the session sent an invalid frame: {e}");
                }
                if *closed {
                    assert!(driver.transport.is_some(), "close frame, transport open");
                }
            }
        }
    }
}

/// Input bytes, consumed front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

struct Run {
    cfg: SessionConfig,
    session: Session,
    driver: Driver,
    peer: Peer,
}

impl Run {
    fn input(&mut self, bytes: &[u8]) {
        let mut copy = bytes.to_vec();
        let now = self.driver.now;
        self.session
            .input(&self.cfg, now, &mut copy, &mut self.driver);
    }

    /// Fires the deadline if it has passed, as the driver's timer does.
    fn fire_if_due(&mut self) {
        let d = &mut self.driver;
        if d.deadline != 0 && d.deadline <= d.now {
            d.deadline = 0;
            let now = d.now;
            self.session.timeout(&self.cfg, now, &mut self.driver);
        }
    }

    /// Invariants after every action.
    fn check(&self) {
        let d = &self.driver;
        assert!(
            d.statuses.len() <= 1,
            "several HTTP answers {:?}",
            d.statuses
        );
        if self.session.is_closing() {
            assert!(d.transport.is_some(), "closing with the transport open");
        }
        if d.transport == Some(Transport::Graceful) {
            assert!(self.session.is_closing());
        }
        if d.transport.is_some() {
            assert!(d.ending.is_some(), "transport closed, no ending recorded");
        }
        if self.session.is_open() {
            assert!(d.deadline != 0 || d.transport.is_some());
        }
        if self.session.is_pending() {
            // Pending until answered, or aborted (then the driver drops it).
            assert!(d.statuses.is_empty(), "answered yet pending");
            let waiting = d.transport.is_none() && d.deadline != 0;
            assert!(waiting || d.transport == Some(Transport::Abort));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, actions)) = data.split_first() else {
        return;
    };
    let cfg = config(flags);
    let (session, deadline) = Session::new(&cfg, 1);
    let driver = Driver {
        deadline,
        now: 1,
        max_queue: if flags & 2 != 0 { 256 } else { 0 },
        refuse_route: (flags & 4 != 0).then_some(1),
        defer_route: (flags & 128 != 0).then_some(1),
        routes: cfg.policy.routes.len(),
        subprotocols: cfg.policy.subprotocols.len(),
        tick_close: flags & 32 != 0,
        ..Driver::default()
    };
    let mut run = Run {
        cfg,
        session,
        driver,
        peer: Peer::Head,
    };
    let mut cur = Cursor(actions);
    while !cur.0.is_empty() {
        match cur.byte() % 12 {
            0 | 1 => {
                let n = cut_len(cur.byte());
                let bytes = cur.take(n);
                run.input(bytes);
            }
            2 => {
                let v = cur.byte();
                let path = ROUTES[usize::from(v & 3)];
                let offered: &[&str] = if v & 4 != 0 { &["v1.fuzz"] } else { &[] };
                let mut extra = Vec::new();
                if v & 8 != 0 {
                    extra.push(("Origin", "https://good.example"));
                }
                if v & 16 != 0 {
                    extra.push(("Origin", "https://evil.example"));
                }
                let req = if v & 32 != 0 {
                    http::request("GET", path, "fuzz", &extra, b"")
                } else {
                    ClientHandshake::new(KEY.into()).request("fuzz", path, offered, &extra)
                };
                run.input(&req);
            }
            3 => {
                let h = cur.byte();
                let n = cut_len(cur.byte());
                let payload = cur.take(n);
                let mask = (h & 0x40 == 0).then_some([h, 0x5a, 0xa5, n as u8]);
                let frame =
                    codec::encode_frame(OpCode::from(h & 0x0f), h & 0x80 != 0, payload, mask);
                run.input(&frame);
            }
            4 => {
                run.driver.now += cut_len(cur.byte()) as u64 * 25;
                run.fire_if_due();
            }
            5 => {
                run.driver.now = run.driver.now.max(run.driver.deadline);
                run.fire_if_due();
            }
            6 => run.session.peer_eof(&mut run.driver),
            7 => {
                let now = run.driver.now;
                run.session.shutdown(&run.cfg, now, &mut run.driver);
            }
            8 => {
                let v = cur.byte();
                let code = [1000, 1001, 1008, 3000, 4999][usize::from(v % 5)];
                let reason = "é".repeat(usize::from(v));
                let now = run.driver.now;
                run.session.close(
                    &run.cfg,
                    now,
                    code,
                    &reason,
                    Ending::Normal,
                    &mut run.driver,
                );
            }
            9 => run.peer.read(&mut run.driver),
            10 => {
                let now = run.driver.now;
                let (status, response) = if cur.byte() & 1 != 0 {
                    let r = Reject::new(503, "connection limit reached");
                    (r.status, r.response())
                } else {
                    let r = b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
                    (401, r.to_vec())
                };
                run.session
                    .refuse(&run.cfg, now, status, response, &mut run.driver);
            }
            _ => {
                let v = cur.byte();
                let offered = run.driver.offered.clone();
                let name = match v % 3 {
                    0 => None,
                    1 if !offered.is_empty() => {
                        Some(offered[usize::from(v / 3) % offered.len()].clone())
                    }
                    1 => Some("v1.fuzz".to_owned()),
                    _ => Some("mqtt".to_owned()),
                };
                let now = run.driver.now;
                let was_pending = run.session.is_pending();
                let ok =
                    run.session
                        .accept_pending(&run.cfg, now, name.as_deref(), &mut run.driver);
                assert!(!ok || was_pending);
                if ok {
                    assert!(run.session.is_open() || run.session.is_closing());
                }
            }
        }
        run.check();
        if run.driver.transport == Some(Transport::Abort) {
            // The driver drops an aborted connection.
            break;
        }
    }
    run.peer.read(&mut run.driver);
    // The peer falls silent: its deadlines alone end the connection (ping,
    // idle close, close deadline at most).
    for _ in 0..6 {
        if run.driver.transport == Some(Transport::Abort) {
            break;
        }
        assert!(
            run.driver.deadline != 0,
            "no deadline while the connection lives"
        );
        run.driver.now = run.driver.deadline;
        run.fire_if_due();
        run.check();
        run.peer.read(&mut run.driver);
    }
    assert_eq!(run.driver.transport, Some(Transport::Abort), "never ended");
});
