//! Many concurrent connections: 2,000 echoing clients at once, twice (the
//! connection slots of the first wave must all come back), and the same with
//! two `SO_REUSEPORT` workers.

mod common;

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

/// The stress tests share two CPUs; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A reusable barrier that cannot hang: waiting times out, and a party that
/// panics releases everyone else (with a panic).
struct Rendezvous {
    state: Mutex<(usize, u64, bool)>, // (arrived, generation, failed)
    cv: Condvar,
    parties: usize,
}

impl Rendezvous {
    fn new(parties: usize) -> Self {
        Self {
            state: Mutex::new((0, 0, false)),
            cv: Condvar::new(),
            parties,
        }
    }

    fn wait(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        assert!(!st.2, "another party failed before {what}");
        st.0 += 1;
        if st.0 == self.parties {
            st.0 = 0;
            st.1 += 1;
            self.cv.notify_all();
            return;
        }
        let generation = st.1;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                st.2 = true;
                self.cv.notify_all();
                panic!("timed out waiting for everyone at {what}");
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if st.1 != generation {
                return;
            }
            assert!(!st.2, "another party failed before {what}");
        }
    }

    fn fail(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.2 = true;
        self.cv.notify_all();
    }
}

/// Marks the rendezvous failed if the owning thread unwinds.
struct FailOnPanic<'a>(&'a Rendezvous);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.fail();
        }
    }
}

/// Small client buffers: 2,000 clients with tungstenite's default 128 KiB
/// read buffer would be 256 MiB for nothing.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// The message client `client` sends in `round`: text and binary
/// alternating, distinct per client and round, 16 to ~215 bytes.
fn message(client: usize, round: usize) -> Message {
    let mut body = format!("client {client} round {round} ");
    let len = 16 + (client * 7 + round * 13) % 200;
    while body.len() < len {
        body.push(char::from(b'a' + ((client + body.len()) % 26) as u8));
    }
    if (client + round) % 2 == 0 {
        Message::text(body)
    } else {
        Message::binary(body.into_bytes())
    }
}

/// Connects one client, retrying while the server answers 503 (slots of
/// just-closed connections are released asynchronously).
fn connect_client(gw: &Gateway) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match try_ws_connect(gw.addr, gw.echo_url(), Some(client_config())) {
            Ok((ws, _)) => return ws,
            Err(tungstenite::Error::Http(r)) if r.status() == 503 && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect failed: {e}"),
        }
    }
}

/// Runs `threads` x `per_thread` clients. Every client connects; once all
/// are open at the same time each echoes `rounds` messages; then `while_open`
/// runs on the calling thread with every client still connected; then all
/// close. Returns (connect time, echo time).
fn echo_storm(
    gw: &Gateway,
    threads: usize,
    per_thread: usize,
    rounds: usize,
    while_open: impl FnOnce(),
) -> (Duration, Duration) {
    let gate = Rendezvous::new(threads + 1);
    let started = Instant::now();
    let mut connected_at = Duration::ZERO;
    let mut echoed_at = Duration::ZERO;
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let gate = &gate;
                thread::Builder::new()
                    .name(format!("storm-{t}"))
                    .spawn_scoped(scope, move || {
                        let _guard = FailOnPanic(gate);
                        let ids: Vec<usize> = (0..per_thread).map(|i| t * per_thread + i).collect();
                        let mut clients: Vec<Ws> = ids.iter().map(|_| connect_client(gw)).collect();
                        gate.wait("all connected");
                        for round in 0..rounds {
                            for (ws, &id) in clients.iter_mut().zip(&ids) {
                                ws.send(message(id, round)).unwrap_or_else(|e| {
                                    panic!("client {id} round {round}: send: {e}")
                                });
                            }
                            for (ws, &id) in clients.iter_mut().zip(&ids) {
                                let got = ws.read().unwrap_or_else(|e| {
                                    panic!("client {id} round {round}: read: {e}")
                                });
                                assert_eq!(got, message(id, round), "client {id} round {round}");
                            }
                        }
                        gate.wait("all echoed");
                        gate.wait("checks done while open");
                        for ws in clients {
                            ws_close(ws);
                        }
                    })
                    .expect("spawn client thread")
            })
            .collect();
        let _guard = FailOnPanic(&gate);
        gate.wait("all connected");
        connected_at = started.elapsed();
        gate.wait("all echoed");
        echoed_at = started.elapsed() - connected_at;
        while_open();
        gate.wait("checks done while open");
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    (connected_at, echoed_at)
}

#[track_caller]
fn assert_healthy(gw: &Gateway) {
    let response = http_exchange(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body_text().trim_end(), "ok");
}

const CLIENTS: usize = 2000;
const SPARE: usize = 10;

/// 2,000 clients open at once, each echoing 20 messages; all close; then
/// 2,000 again plus the 10 spare slots, and the next connection gets 503:
/// no slot of the first wave leaked.
#[test]
fn two_thousand_concurrent_echo_connections_then_again_without_slot_leak() {
    let _serial = serial();
    let config = format!(
        "[server]\nmax_connections = {}\n[io]\nrecv_buffers = 4096\n",
        CLIENTS + SPARE
    );
    let Some(gw) = Gateway::start(&config) else {
        return;
    };
    let started = Instant::now();

    let (connected, echoed) = echo_storm(&gw, 16, CLIENTS / 16, 20, || {});
    eprintln!("wave 1: {CLIENTS} connected in {connected:?}, 20 echoes each in {echoed:?}");
    assert_healthy(&gw);

    // Second wave: all 2,000 + 10 spare slots must be available again.
    let (connected, echoed) = echo_storm(&gw, 16, CLIENTS / 16, 2, || {
        let extra: Vec<Ws> = (0..SPARE).map(|_| connect_client(&gw)).collect();
        let over = http_exchange(gw.addr, upgrade_request("/echo", "").as_bytes());
        assert_eq!(
            over.status,
            503,
            "connection {} of max_connections = {} was not refused",
            CLIENTS + SPARE + 1,
            CLIENTS + SPARE
        );
        for ws in extra {
            ws_close(ws);
        }
    });
    eprintln!("wave 2: {CLIENTS} connected in {connected:?}, 2 echoes each in {echoed:?}");
    let health = retry(Duration::from_secs(2), || {
        let r = http_exchange(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        (r.status == 200).then_some(r)
    });
    assert!(
        health.is_some(),
        "/healthz does not answer 200 after the stress"
    );
    assert_still_serving(&gw);
    eprintln!("total {:?}", started.elapsed());
}

/// Two workers, each with its own `SO_REUSEPORT` listener: 2,000 concurrent
/// echoing clients work, and connections land on both workers.
#[test]
fn two_workers_share_the_load() {
    let _serial = serial();
    // Debug logging names the worker thread that handled each rejection.
    let config = "[server]\nworkers = 2\n[io]\nrecv_buffers = 2048\n[log]\nlevel = \"debug\"\n";
    let Some(gw) = Gateway::start(config) else {
        return;
    };
    assert_eq!(
        gw.workers, 2,
        "start-up line reports {} workers",
        gw.workers
    );

    let (connected, echoed) = echo_storm(&gw, 16, CLIENTS / 16, 20, || {});
    eprintln!("2 workers: {CLIENTS} connected in {connected:?}, 20 echoes each in {echoed:?}");

    // Which worker served a connection shows in the thread name of its
    // "handshake rejected" log line.
    for _ in 0..64 {
        assert_rejected(gw.addr, upgrade_request("/spread", "").as_bytes(), 404);
    }
    let log = gw.log();
    let count = |worker: &str| {
        log.lines()
            .filter(|l| l.contains(worker) && l.contains("handshake rejected"))
            .count()
    };
    let (w0, w1) = (count("[worker-0]"), count("[worker-1]"));
    assert_eq!(w0 + w1, 64, "expected 64 rejection log lines:\n{log}");
    assert!(
        w0 > 0 && w1 > 0,
        "all 64 connections went to one worker (worker-0: {w0}, worker-1: {w1})"
    );
    assert_healthy(&gw);
}
