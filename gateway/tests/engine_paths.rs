//! The engine's less common paths, with the gateway run in-process so its
//! counters can be inspected: the connect role (what the bench client uses),
//! buffer-ring exhaustion (ENOBUFS then re-arm) and a tiny submission queue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::{CloseCause, CloseMode, ConnId, EngineConfig, Handler, Io, Origin, Worker};
use gateway::config::Config;
use gateway::server;
use wsproto::codec::{self, Codec, Event, Limits, MessageKind, Role};

fn start(extra: &str) -> Option<(server::Running, Arc<AtomicBool>)> {
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\npin_workers = false\n[log]\nlevel = \"warn\"\n{extra}");
    let config = Config::parse(&text, "test").expect("valid test config");
    let shutdown = Arc::new(AtomicBool::new(false));
    match server::start(&config, shutdown.clone()) {
        Ok(r) => Some((r, shutdown)),
        Err(e) if e.to_string().contains("io_uring_setup") => {
            eprintln!("SKIP: io_uring unavailable: {e}");
            None
        }
        Err(e) => panic!("gateway failed to start: {e}"),
    }
}

const LIMITS: Limits = Limits {
    max_frame_bytes: 1 << 24,
    max_message_bytes: 1 << 24,
};

/// A client-role handler: handshake, then `messages` echoes of `size` bytes.
struct EchoClient {
    target: SocketAddr,
    to_open: usize,
    messages: usize,
    size: usize,
    done: usize,
    failed: Vec<String>,
}

#[derive(Default)]
struct ClientConn {
    head: Vec<u8>,
    codec: Option<Codec>,
    sent: usize,
}

impl EchoClient {
    fn send_next(&mut self, io: &mut Io, id: ConnId, c: &mut ClientConn) {
        let payload = vec![(c.sent % 251) as u8; self.size];
        c.sent += 1;
        io.send(
            id,
            codec::encode_message(MessageKind::Binary, &payload, Some([9, 8, 7, 6])),
        )
        .unwrap();
    }
}

impl Handler for EchoClient {
    type Conn = ClientConn;

    fn on_open(&mut self, io: &mut Io, id: ConnId, _: Origin) -> ClientConn {
        let req = format!(
            "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.target
        );
        io.send(id, req.into_bytes().into()).unwrap();
        ClientConn::default()
    }

    fn on_data(&mut self, io: &mut Io, id: ConnId, c: &mut ClientConn, data: &mut [u8]) {
        let mut rest: Vec<u8> = Vec::new();
        if c.codec.is_none() {
            c.head.extend_from_slice(data);
            let Some(end) = c.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            if !c.head.starts_with(b"HTTP/1.1 101") {
                self.failed
                    .push(String::from_utf8_lossy(&c.head).into_owned());
                io.close(id, CloseMode::Abort);
                return;
            }
            rest = c.head.split_off(end + 4);
            c.codec = Some(Codec::new(Role::Client));
            self.send_next(io, id, c);
            if rest.is_empty() {
                return;
            }
        }
        let input: &mut [u8] = if rest.is_empty() { data } else { &mut rest };
        let mut echoed = 0;
        let mut bad = None;
        let size = self.size;
        c.codec
            .as_mut()
            .unwrap()
            .feed(input, &LIMITS, &mut |ev| match ev {
                Event::Message(MessageKind::Binary, p) if p.len() == size => echoed += 1,
                other => bad = Some(format!("{other:?}")),
            })
            .unwrap();
        if let Some(b) = bad {
            self.failed.push(b);
        }
        for _ in 0..echoed {
            if c.sent < self.messages {
                self.send_next(io, id, c);
            } else {
                self.done += 1;
                io.close(id, CloseMode::Abort);
            }
        }
    }

    fn on_deadline(&mut self, _: &mut Io, _: ConnId, _: &mut ClientConn) {}

    fn on_closed(&mut self, _: &mut Io, _: ConnId, _: ClientConn, _: CloseCause) {}

    fn on_connect_failed(&mut self, _: &mut Io, _: ConnId, errno: i32) {
        self.failed.push(format!("connect failed: errno {errno}"));
    }

    fn on_tick(&mut self, io: &mut Io) {
        // Open connections from inside the loop, a batch per tick.
        for _ in 0..self.to_open.min(64) {
            io.connect(self.target, None).expect("socket");
            self.to_open -= 1;
        }
    }

    fn finished(&self, _: &Io) -> bool {
        self.to_open == 0
    }
}

fn run_clients(target: SocketAddr, conns: usize, messages: usize, size: usize) -> EchoClient {
    let cfg = EngineConfig {
        ring_entries: 64,
        recv_buffers: 256,
        recv_buffer_size: 4096,
        drain_ms: 1000,
        // Direct sockets: IORING_OP_SOCKET, linked set-up and connect.
        file_table: 1024,
        incremental_recv: true,
    };
    let handler = EchoClient {
        target,
        to_open: conns,
        messages,
        size,
        done: 0,
        failed: Vec::new(),
    };
    let mut worker = Worker::new(&cfg, Vec::new(), handler).expect("client worker");
    worker
        .run(&cfg, &AtomicBool::new(false))
        .expect("client loop");
    let (_, h) = worker.io_and_handler();
    EchoClient {
        failed: std::mem::take(&mut h.failed),
        ..*h
    }
}

/// Runs `conns` client-role connections of `messages` echoes each against a
/// gateway configured with `extra`, checks every echo, and returns the
/// gateway's summary (None when io_uring is unavailable).
fn echo_scenario(
    extra: &str,
    conns: usize,
    messages: usize,
    size: usize,
) -> Option<server::Summary> {
    let (running, shutdown) = start(extra)?;
    let client = run_clients(running.local_addr, conns, messages, size);
    shutdown.store(true, Ordering::Relaxed);
    let summary = running.join().unwrap();
    let failed = &client.failed[..client.failed.len().min(5)];
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(client.done, conns);
    assert_eq!(summary.counters.messages_in, (conns * messages) as u64);
    assert_eq!(summary.counters.accepted, conns as u64);
    Some(summary)
}

#[test]
fn connect_role_echoes_through_the_same_engine() {
    echo_scenario("", 300, 20, 100);
}

#[test]
fn exhausted_buffer_ring_rearms_and_loses_nothing() {
    // Two 256-byte buffers for 40 connections sending 4 KiB messages: the
    // ring runs dry constantly, every multishot receive ends in ENOBUFS.
    let extra = "[io]\nrecv_buffers = 2\nrecv_buffer_size = 256\nring_entries = 8\n";
    let Some(summary) = echo_scenario(extra, 40, 30, 4096) else {
        return;
    };
    let enobufs: u64 = summary.engine.iter().map(|s| s.recv_enobufs()).sum();
    assert!(enobufs > 0, "expected ENOBUFS re-arms with a 2-buffer ring");
}

/// More connections with bytes waiting than the pool holds (100 x 4 KiB in
/// flight against 4 x 4 KiB of buffers). Receives that find the ring empty
/// wait to be re-armed a few per loop turn (`Io::starve`); re-armed all at
/// once, as they were, most failed again on every turn, several times per
/// message delivered. Every connection still gets all its echoes.
#[test]
fn a_ring_too_small_for_the_burst_rearms_a_few_at_a_time() {
    let extra = "[io]\nrecv_buffers = 4\nrecv_buffer_size = 4096\n";
    let (conns, messages) = (100, 20);
    let Some(summary) = echo_scenario(extra, conns, messages, 4096) else {
        return;
    };
    let enobufs: u64 = summary.engine.iter().map(|s| s.recv_enobufs()).sum();
    let delivered = (conns * messages) as u64;
    eprintln!("{enobufs} failed receives for {delivered} messages");
    assert!(enobufs > 0, "the ring never ran dry: no test");
    assert!(
        enobufs < 4 * delivered,
        "{enobufs} receives failed for {delivered} messages"
    );
}

/// Connects that fail (refused, or aborted by the handler while in flight)
/// with sends attempted before they complete: the sends are refused, each
/// failure is reported once, and no completion lands on a released slot.
#[test]
fn sends_before_a_connect_completes_are_refused_and_failures_release_the_slot() {
    struct Refused {
        target: SocketAddr,
        to_open: usize,
        refused_sends: usize,
        failures: Vec<i32>,
        opened: usize,
        closed: usize,
    }
    impl Handler for Refused {
        type Conn = ();
        fn on_open(&mut self, _: &mut Io, _: ConnId, _: Origin) {
            self.opened += 1;
        }
        fn on_data(&mut self, _: &mut Io, _: ConnId, _: &mut (), _: &mut [u8]) {}
        fn on_deadline(&mut self, _: &mut Io, _: ConnId, _: &mut ()) {}
        fn on_closed(&mut self, _: &mut Io, _: ConnId, _: (), _: CloseCause) {
            self.closed += 1;
        }
        fn on_connect_failed(&mut self, io: &mut Io, id: ConnId, errno: i32) {
            // The slot is going away: nothing may start on it any more.
            assert!(io.send(id, "late".into()).is_err());
            self.failures.push(errno);
        }
        fn on_tick(&mut self, io: &mut Io) {
            for i in 0..self.to_open {
                let id = io.connect(self.target, None).expect("socket");
                match io.send(id, vec![0u8; 64 << 10].into()) {
                    Err(engine::SendError::NotConnected) => self.refused_sends += 1,
                    other => panic!("send before connect: {other:?}"),
                }
                // Every other connect is aborted by the handler in flight.
                if i % 2 == 1 {
                    io.close(id, CloseMode::Graceful);
                }
            }
            self.to_open = 0;
        }
        fn finished(&self, _: &Io) -> bool {
            self.to_open == 0
        }
    }
    // A port nobody listens on.
    let target = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = EngineConfig {
        ring_entries: 64,
        recv_buffers: 8,
        recv_buffer_size: 4096,
        drain_ms: 1000,
        file_table: 256,
        incremental_recv: false,
    };
    let handler = Refused {
        target,
        to_open: 100,
        refused_sends: 0,
        failures: Vec::new(),
        opened: 0,
        closed: 0,
    };
    let mut worker = match Worker::new(&cfg, Vec::new(), handler) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("SKIP: io_uring unavailable: {e}");
            return;
        }
    };
    worker.run(&cfg, &AtomicBool::new(false)).expect("loop");
    let (io, h) = worker.io_and_handler();
    assert_eq!(h.refused_sends, 100);
    assert_eq!(h.failures.len(), 100, "{:?}", h.failures);
    assert!(
        h.failures
            .iter()
            .all(|&e| e == libc::ECONNREFUSED || e == libc::ECANCELED),
        "{:?}",
        h.failures
    );
    assert_eq!((h.opened, h.closed), (0, 0));
    assert_eq!(io.live(), 0);
    assert_eq!(io.stats().stale_completions(), 0);
    assert_eq!(io.send_queue_bytes(), 0);
}
