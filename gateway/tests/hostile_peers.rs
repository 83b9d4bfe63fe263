//! Hostile and vanished peers: clients that stop reading while their echoes
//! pile up in the gateway's send queue, then leave by FIN, by RST, or not at
//! all (the close deadline or the shutdown drain ends them). Each must give
//! back everything it held: its admission (`gateway_connections_active`), its
//! descriptor, its queued bytes and its engine slot, and SIGTERM must still
//! exit promptly.
//!
//! The stalled reader is the one from the leak report: a receive buffer of
//! 4 KiB (set before connect, so the window stays small) and 64 KiB binary
//! messages written without ever reading the echoes, so the gateway's send
//! to it is parked in the kernel when the peer goes away.

mod common;

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;

/// These tests push hundreds of MiB through loopback; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Admin listener for the gauges, published often so they settle quickly.
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\npublish_ms = 20\n";

/// A queue limit no test reaches, so only the peer's FIN/RST ends a connection.
const NO_SLOW_CONSUMER: &str = "[io]\nmax_send_queue_bytes = 268435456\n";

/// Bytes per message the stalled readers write.
const CHUNK: usize = 64 * 1024;

/// A connection upgraded on `/echo` whose receive buffer is 4 KiB.
fn stalled_reader(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("tests listen on IPv4")
    };
    // SAFETY: plain socket calls on a descriptor this function owns until it
    // is handed to `TcpStream`, with a correctly sized sockaddr_in.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let size: libc::c_int = 4096;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    };
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut stream = stream;
    stream
        .write_all(upgrade_request("/echo", "").as_bytes())
        .expect("send upgrade");
    let head = read_http_head(&mut stream).expect("upgrade response");
    assert_eq!(head.status, 101, "{head:?}");
    stream
}

/// Writes `total` bytes of 64 KiB binary messages and never reads.
fn flood(stream: &mut TcpStream, total: usize) {
    let message = frame(OP_BINARY, true, &[0x5a; CHUNK]);
    for _ in 0..total / CHUNK {
        match stream.write_all(&message) {
            Ok(()) => {}
            // The gateway may close first (slow consumer); that is its answer.
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                return
            }
            Err(e) => panic!("flood: {e}"),
        }
    }
}

/// Makes the next close of `stream` a reset (`SO_LINGER` 0).
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor `stream` owns, with a correctly sized value.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// Open descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of process `pid` that are io_uring's io-wq workers (`iou-wrk-*`).
fn io_wq_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("iou-wrk"))
        .count()
}

/// What the gateway holds for its client connections right now.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Held {
    active: f64,
    queued_bytes: f64,
    /// Engine slots, not counting the scrape's own admin connection.
    slots: f64,
    fds: usize,
}

fn held(gw: &Gateway) -> Held {
    let m = gw.metrics();
    Held {
        active: m.get("gateway_connections_active", &[]),
        queued_bytes: m.get("gateway_engine_send_queue_bytes", &[]),
        slots: m.get("gateway_engine_slots_in_use", &[]) - 1.0,
        fds: fds(gw.pid()),
    }
}

/// Waits until every client resource is back at `baseline` (no connection,
/// no queued byte, no slot, the same descriptors), or panics with what is
/// still held after `within`.
#[track_caller]
fn assert_released(gw: &Gateway, baseline_fds: usize, within: Duration) {
    let want = Held {
        active: 0.0,
        queued_bytes: 0.0,
        slots: 0.0,
        fds: baseline_fds,
    };
    let deadline = Instant::now() + within;
    loop {
        let now = held(gw);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still held after {within:?}: {now:?} (want {want:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the gateway has at least `bytes` queued and unsent (the
/// stalled readers' echoes are parked), and returns what it holds then.
#[track_caller]
fn wait_parked(gw: &Gateway, bytes: f64) -> Held {
    retry(Duration::from_secs(10), || {
        let h = held(gw);
        (h.queued_bytes >= bytes).then_some(h)
    })
    .unwrap_or_else(|| panic!("echoes never piled up: {:?}", held(gw)))
}

/// Starts a gateway, notes its descriptors, and opens `n` stalled readers
/// that each write `total` bytes.
fn stalled(config: &str, n: usize, total: usize) -> Option<(Gateway, usize, Vec<TcpStream>)> {
    let gw = Gateway::start(&format!("{ADMIN}{config}"))?;
    let baseline = fds(gw.pid());
    let mut clients: Vec<TcpStream> = (0..n).map(|_| stalled_reader(gw.addr)).collect();
    for c in &mut clients {
        flood(c, total);
    }
    Some((gw, baseline, clients))
}

#[test]
fn fin_while_a_send_is_parked_releases_everything() {
    let _serial = serial();
    for workers in [1, 2] {
        let config = format!("{NO_SLOW_CONSUMER}[server]\nworkers = {workers}\n");
        let Some((gw, baseline, clients)) = stalled(&config, 4, 8 << 20) else {
            return;
        };
        let parked = wait_parked(&gw, 4.0 * (4 << 20) as f64);
        assert_eq!(parked.active, 4.0, "{parked:?}");
        for c in &clients {
            c.shutdown(Shutdown::Write).unwrap();
        }
        // The peers keep their sockets open: only the FIN tells.
        assert_released(&gw, baseline, Duration::from_secs(3));
        // The FIN wakes each parked send's poll and the kernel may run it
        // once in an io-wq thread; on a non-blocking socket that returns at
        // once, so the thread is shared, not one per peer. Each ring has
        // at most two: the unbounded pool (such sends) and the bounded one
        // (IORING_OP_SHUTDOWN of a direct descriptor always runs there).
        let threads = io_wq_threads(gw.pid());
        assert!(
            threads <= 2 * workers,
            "{threads} io-wq threads for 4 peers"
        );
        // The parked sends were cancelled by our own abort: not socket errors.
        let m = gw.metrics();
        assert_eq!(m.get("gateway_engine_send_errors_total", &[]), 0.0);
        assert_eq!(
            m.get("gateway_connections_closed_total", &[("reason", "error")]),
            4.0
        );
        drop(clients);
        assert_still_serving(&gw);
    }
}

#[test]
fn slow_consumer_then_fin_then_close_deadline_releases_everything() {
    let _serial = serial();
    // Default 4 MiB queue limit: 16 MiB unread makes the gateway close with
    // 1008 (graceful: its close frame waits behind the parked echoes); the
    // peer's FIN then changes nothing, and close_ms aborts the parked send.
    let config = "[timeouts]\nclose_ms = 300\n";
    let Some((gw, baseline, clients)) = stalled(config, 4, 16 << 20) else {
        return;
    };
    for c in &clients {
        c.shutdown(Shutdown::Write).unwrap();
    }
    assert_released(&gw, baseline, Duration::from_secs(3));
    let m = gw.metrics();
    assert_eq!(
        m.get(
            "gateway_connections_closed_total",
            &[("reason", "slow_consumer")]
        ),
        4.0,
        "{}",
        m.text
    );
    drop(clients);
    assert_still_serving(&gw);
}

#[test]
fn rst_while_a_send_is_parked_releases_everything() {
    let _serial = serial();
    for workers in [1, 2] {
        let config = format!("{NO_SLOW_CONSUMER}[server]\nworkers = {workers}\n");
        let Some((gw, baseline, clients)) = stalled(&config, 4, 8 << 20) else {
            return;
        };
        wait_parked(&gw, 4.0 * (4 << 20) as f64);
        for c in clients {
            reset_on_close(&c);
        }
        assert_released(&gw, baseline, Duration::from_secs(3));
        assert_still_serving(&gw);
    }
}

/// SIGTERM while peers that stopped reading hold parked sends: the drain
/// aborts them after `drain_ms` and the process exits at once. The peers
/// were given up on (slow consumer) and half-closed first, so each one's
/// receive has ended and the cancelled send is its last completion.
#[test]
fn drain_with_parked_sends_exits_promptly() {
    let _serial = serial();
    let config = "[timeouts]\ndrain_ms = 500\nclose_ms = 60000\n";
    let Some((mut gw, _, clients)) = stalled(config, 4, 16 << 20) else {
        return;
    };
    // Every peer given up on (its 1008 close frame queued) with echoes still
    // parked. How much of them the kernel's send buffers took before the
    // queue passed 4 MiB varies with timing (up to ~3 MiB per connection,
    // taken later too), so only 1 MiB per connection is waited for.
    retry(Duration::from_secs(10), || {
        let given_up = gw
            .metrics()
            .get("gateway_close_frames_sent_total", &[("code", "1008")]);
        (given_up == 4.0 && held(&gw).queued_bytes >= 4.0 * (1 << 20) as f64).then_some(())
    })
    .unwrap_or_else(|| panic!("peers not given up on: {:?}", held(&gw)));
    for c in &clients {
        c.shutdown(Shutdown::Write).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_millis(500 + 1500))
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", started.elapsed()));
    assert!(status.success(), "exit status {status}");
    let log = gw.log();
    assert!(
        !log.contains("did not finish closing"),
        "drain left connections behind:\n{log}"
    );
    drop(clients);
}

/// The worst case for io-wq: a thousand peers stop reading, the gateway gives
/// up on them (slow consumer: a graceful close whose close frame waits
/// behind the unsent echoes), and then they half-close. io_uring wakes a
/// send's poll on the peer's FIN whether or not there is room, and runs it
/// again in an io-wq thread; on a blocking socket that thread blocks, one per
/// peer (the bug: a thousand kernel threads). Non-blocking sockets answer
/// EAGAIN at once and the engine retries from its timer.
#[test]
fn a_thousand_stalled_readers_use_no_io_wq_thread_each_and_leave_nothing() {
    let _serial = serial();
    const N: usize = 1000;
    // Small socket buffers make the sends park after a few tens of KiB each.
    let config = "[server]\nsocket_send_buffer = 8192\n\
                  [io]\nmax_send_queue_bytes = 65536\n\
                  [timeouts]\nclose_ms = 6000\n";
    let Some((gw, baseline, clients)) = stalled(config, N, 128 << 10) else {
        return;
    };
    let parked = wait_parked(&gw, (N * (32 << 10)) as f64);
    assert_eq!(parked.active, N as f64, "{parked:?}");
    // Not one per stalled peer: at most the bounded pool's thread that
    // earlier graceful closes (a shutdown of a direct descriptor) woke.
    let threads = io_wq_threads(gw.pid());
    assert!(
        threads <= 1,
        "{threads} io-wq threads with {N} stalled readers"
    );
    for c in &clients {
        c.shutdown(Shutdown::Write).unwrap();
    }
    // Watch the thread count while the graceful closes run out (close_ms).
    let mut most = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        most = most.max(io_wq_threads(gw.pid()));
        std::thread::sleep(Duration::from_millis(10));
    }
    // The rings cap io-wq at one thread per pool (the gateway has one
    // worker here): a burst of punted sends queues behind the unbounded
    // pool's, shutdowns behind the bounded pool's.
    assert!(
        most <= 2,
        "{most} io-wq threads after {N} stalled readers half-closed"
    );
    assert_released(&gw, baseline, Duration::from_secs(8));
    drop(clients);
    assert_still_serving(&gw);
}
