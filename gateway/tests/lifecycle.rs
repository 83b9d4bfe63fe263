//! Connection life cycle: the connection limit and its slots, handshake and
//! idle timeouts with keepalive pings, and the SIGTERM drain.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

/// Tries to open an echo connection: `Some` on success, `None` on a 503
/// (the slot of a just-closed connection may not be released yet); panics on
/// anything else.
fn try_admit(gw: &Gateway) -> Option<Ws> {
    match try_ws_connect(gw.addr, gw.echo_url(), None) {
        Ok((ws, _)) => Some(ws),
        Err(tungstenite::Error::Http(response)) if response.status() == 503 => None,
        Err(e) => panic!("unexpected connect failure: {e}"),
    }
}

/// Opens an echo connection, waiting up to 2 s for a slot to free up.
#[track_caller]
fn admit(gw: &Gateway) -> Ws {
    let mut ws = retry(Duration::from_secs(2), || try_admit(gw))
        .expect("no connection slot became free within 2 s (slot leak?)");
    assert_echo(&mut ws, Message::text("admitted"));
    ws
}

#[track_caller]
fn assert_503(gw: &Gateway) {
    let response = assert_rejected(gw.addr, upgrade_request("/echo", "").as_bytes(), 503);
    assert_eq!(response.status_line, "HTTP/1.1 503 Service Unavailable");
}

#[test]
fn connection_limit_gives_503_and_closing_releases_the_slot() {
    let Some(gw) = Gateway::start("[server]\nmax_connections = 5\n") else {
        return;
    };
    let mut open: Vec<Ws> = (0..5).map(|_| admit(&gw)).collect();
    // The sixth, and more: 503, and refused connections take no slot.
    for _ in 0..3 {
        assert_503(&gw);
    }
    // Plain HTTP counts against the same limit.
    assert_rejected(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 503);

    // Closing one frees exactly one slot.
    ws_close(open.pop().unwrap());
    open.push(admit(&gw));
    assert_503(&gw);

    // The survivors still echo.
    for ws in &mut open {
        assert_echo(ws, Message::binary(vec![1, 2, 3]));
    }
    // Close everything: all five slots come back.
    for ws in open.drain(..) {
        ws_close(ws);
    }
    let again: Vec<Ws> = (0..5).map(|_| admit(&gw)).collect();
    assert_503(&gw);
    for ws in again {
        ws_close(ws);
    }
}

#[test]
fn every_way_a_connection_ends_releases_its_slot() {
    let config = "[server]\nmax_connections = 3\n[timeouts]\nhandshake_ms = 200\n";
    let Some(gw) = Gateway::start(config) else {
        return;
    };
    // Each ending is repeated more often than there are slots, so a single
    // leaked slot per kind would exhaust the limit.
    for round in 0..4 {
        // HTTP rejection and health check (a 503 only means an earlier
        // connection's slot is still being released: try again).
        for (request, status) in [
            (upgrade_request("/nope", ""), 404),
            ("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 200),
        ] {
            let got = retry(Duration::from_secs(2), || {
                let r = http_exchange(gw.addr, request.as_bytes());
                assert!(r.closed, "{r:?}");
                (r.status != 503).then_some(r.status)
            });
            assert_eq!(got, Some(status), "round {round}");
        }
        // Protocol error.
        let mut s = retry(Duration::from_secs(2), || {
            let mut s = tcp(gw.addr);
            s.write_all(upgrade_request("/echo", "").as_bytes()).ok()?;
            let head = read_http_head(&mut s).ok()?;
            (head.status == 101).then_some(s)
        })
        .unwrap_or_else(|| panic!("round {round}: no slot for a raw upgrade"));
        s.write_all(&frame(OP_TEXT, true, b"\xff")).unwrap();
        expect_close(&mut s, 1007);
        drop(s);
        // Normal close handshake.
        ws_close(admit(&gw));
        // Abrupt TCP close after the upgrade (no close frame).
        drop(admit(&gw));
        // Abrupt TCP close in the middle of the request head.
        let mut s = tcp(gw.addr);
        s.write_all(b"GET /echo HTTP/1.1\r\nHo").unwrap();
        drop(s);
        // Handshake timeout.
        let got = retry(Duration::from_secs(2), || {
            let mut s = tcp(gw.addr);
            let r = read_http_response(&mut s).expect("a response to a silent connection");
            (r.status != 503).then_some(r.status)
        });
        assert_eq!(got, Some(408), "round {round}");
    }

    // All three slots are free again (allowing a moment for the last closes).
    let all: Vec<Ws> = (0..3).map(|_| admit(&gw)).collect();
    assert_503(&gw);
    drop(all);
}

#[test]
fn silent_connection_gets_408_after_handshake_ms() {
    let Some(gw) = Gateway::start("[timeouts]\nhandshake_ms = 300\n") else {
        return;
    };
    let mut s = tcp(gw.addr);
    let started = Instant::now();
    let response = read_http_response(&mut s).expect("a 408 response");
    let elapsed = started.elapsed();
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.status_line, "HTTP/1.1 408 Request Timeout");
    assert!(response.closed, "connection not closed after 408");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "408 after {elapsed:?}, expected about 300 ms"
    );
    assert_still_serving(&gw);
}

/// The handshake deadline runs from accept: trickling bytes does not extend it.
#[test]
fn trickling_request_head_gets_408_on_time() {
    let Some(gw) = Gateway::start("[timeouts]\nhandshake_ms = 300\n") else {
        return;
    };
    let mut s = tcp(gw.addr);
    let started = Instant::now();
    s.write_all(b"GET /echo HTTP/1.1\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while started.elapsed() < Duration::from_secs(3) {
        // One more header byte every 50 ms; it never completes.
        if s.write_all(b"X").is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408 "),
        "expected a 408 while trickling, got {text:?} after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "408 only after {elapsed:?}, expected about 300 ms"
    );
}

/// A raw client that completes the handshake and then stays silent (never
/// answers the ping) gets a ping after `ping_interval_ms`, then close 1001
/// after `idle_ms`, then EOF.
///
/// `handshake_ms` is kept below `ping_interval_ms` here: see
/// `ping_and_idle_deadlines_shorter_than_handshake_ms_are_honoured` for what
/// happens otherwise.
#[test]
fn silent_client_gets_ping_then_1001_then_eof() {
    let config = "[timeouts]\nhandshake_ms = 100\nidle_ms = 1000\nping_interval_ms = 300\n";
    let Some(gw) = Gateway::start(config) else {
        return;
    };
    let mut s = raw_ws(gw.addr);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let started = Instant::now();

    let ping = must_read_frame(&mut s, "server ping");
    let ping_at = started.elapsed();
    assert_eq!(ping.opcode, OP_PING, "expected a ping, got {ping:?}");
    assert!(!ping.masked && ping.fin);
    assert!(
        ping_at >= Duration::from_millis(250) && ping_at < Duration::from_millis(900),
        "ping after {ping_at:?}, expected about 300 ms"
    );

    let close = expect_close(&mut s, 1001);
    let closed_at = started.elapsed();
    assert!(
        closed_at >= Duration::from_millis(900) && closed_at < Duration::from_millis(2500),
        "close 1001 after {closed_at:?}, expected about 1000 ms ({close:?})"
    );
}

/// The same with the default `handshake_ms` (10 s), which is longer than the
/// configured ping interval and idle timeout.
#[test]
fn ping_and_idle_deadlines_shorter_than_handshake_ms_are_honoured() {
    let config = "[timeouts]\nhandshake_ms = 4000\nidle_ms = 1000\nping_interval_ms = 300\n";
    let Some(gw) = Gateway::start(config) else {
        return;
    };
    let mut s = raw_ws(gw.addr);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let started = Instant::now();
    let ping = read_frame(&mut s).unwrap_or_else(|e| {
        panic!(
            "no ping within {:?} with ping_interval_ms = 300: {e}",
            started.elapsed()
        )
    });
    assert_eq!(
        ping.opcode,
        OP_PING,
        "expected a ping after ~300 ms, got {ping:?} after {:?}",
        started.elapsed()
    );
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    expect_close(&mut s, 1001);
    assert!(started.elapsed() < Duration::from_millis(2000));
}

#[test]
fn idle_timeout_without_pings_closes_with_1001() {
    let config = "[timeouts]\nhandshake_ms = 100\nidle_ms = 500\nping_interval_ms = 0\n";
    let Some(gw) = Gateway::start(config) else {
        return;
    };
    let mut s = raw_ws(gw.addr);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let started = Instant::now();
    // No ping first: the first frame is the close.
    expect_close(&mut s, 1001);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2),
        "close after {elapsed:?}, expected about 500 ms"
    );
}

/// Answering pings (tungstenite does so while reading) counts as activity:
/// the connection outlives `idle_ms` several times over.
#[test]
fn client_answering_pings_stays_open() {
    let config = "[timeouts]\nhandshake_ms = 100\nidle_ms = 600\nping_interval_ms = 150\n";
    let Some(gw) = Gateway::start(config) else {
        return;
    };
    let mut ws = ws_connect(&gw);
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(2000) {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?} after {:?}", started.elapsed()),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("connection failed after {:?}: {e}", started.elapsed()),
        }
    }
    assert!(
        pings >= 3,
        "only {pings} pings in 2 s with ping_interval_ms = 150"
    );
    ws.get_mut().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_echo(&mut ws, Message::text("still here"));
    ws_close(ws);
}

/// After the server's close frame, `close_ms` bounds how long it waits for
/// the peer to close TCP. Observed through the slot: with
/// `max_connections = 1`, a new connection is admitted once the old one is
/// dropped.
#[test]
fn close_ms_bounds_the_wait_for_a_peer_that_never_closes() {
    let config = "[server]\nmax_connections = 1\n\
                  [timeouts]\nhandshake_ms = 5000\nclose_ms = 300\n";
    let Some(gw) = Gateway::start(config) else {
        return;
    };
    let mut s = raw_ws(gw.addr);
    // Protocol error: the server sends 1002 and waits for our EOF, which
    // never comes (we keep the socket open and silent).
    s.write_all(&encode_frame(FIN | 0x3, b"", Some(next_mask())))
        .unwrap();
    expect_close(&mut s, 1002);
    let started = Instant::now();
    let admitted = retry(Duration::from_millis(2000), || try_admit(&gw));
    assert!(
        admitted.is_some(),
        "slot still held {:?} after the close frame with close_ms = 300",
        started.elapsed()
    );
    drop(s);
}

/// Same as above with an expiring handshake deadline out of the way, so that
/// the passing part of the close_ms behaviour stays covered.
#[test]
fn close_ms_drops_a_peer_that_never_closes() {
    let config = "[server]\nmax_connections = 1\n\
                  [timeouts]\nhandshake_ms = 100\nping_interval_ms = 0\nidle_ms = 60000\nclose_ms = 300\n";
    let Some(gw) = Gateway::start(config) else {
        return;
    };
    // A rejected HTTP request whose client never closes: the 404 goes out at
    // once, the slot comes back after close_ms (or the earlier handshake
    // deadline, whichever is later: here close_ms).
    let mut s = tcp(gw.addr);
    s.write_all(upgrade_request("/nope", "").as_bytes())
        .unwrap();
    let response = read_http_response(&mut s).unwrap();
    assert_eq!(response.status, 404);
    assert!(response.closed);
    let started = Instant::now();
    assert!(
        try_admit(&gw).is_none(),
        "the unclosed 404 connection holds no slot?"
    );
    let admitted = retry(Duration::from_millis(2000), || try_admit(&gw));
    let elapsed = started.elapsed();
    assert!(
        admitted.is_some(),
        "slot still held {elapsed:?} after the 404 with close_ms = 300"
    );
    assert!(
        elapsed >= Duration::from_millis(150),
        "slot freed after {elapsed:?}, before close_ms = 300"
    );
    drop(s);
}

/// Reads until a close frame arrives and returns its code, then expects the
/// connection to end.
fn read_close_code(ws: &mut Ws) -> Option<CloseCode> {
    let code = loop {
        match ws.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| f.code),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("expected a close frame, got {other:?}"),
            Err(e) => panic!("expected a close frame, got error {e}"),
        }
    };
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected the connection to end after the close, got {other:?}"),
    }
    code
}

#[test]
fn sigterm_sends_1001_to_every_connection_and_exits_0() {
    let drain = Duration::from_millis(3000);
    let Some(mut gw) = Gateway::start("[timeouts]\ndrain_ms = 3000\n") else {
        return;
    };
    let mut clients: Vec<Ws> = (0..4).map(|_| ws_connect(&gw)).collect();
    for ws in &mut clients {
        assert_echo(ws, Message::text("before shutdown"));
    }
    let mut raw = raw_ws(gw.addr);

    let started = Instant::now();
    gw.sigterm();
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(read_close_code(ws), Some(CloseCode::Away), "client {i}");
    }
    expect_close(&mut raw, 1001);
    drop(raw);
    drop(clients);

    let status = gw
        .wait_exit(drain + Duration::from_secs(1))
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", started.elapsed()));
    assert!(status.success(), "exit status {status}");
    // Nothing is listening any more.
    assert!(
        TcpStream::connect(gw.addr).is_err(),
        "the port still accepts connections after exit"
    );
}

/// A client that ignores the close (never reads, never closes) and one stuck
/// in the middle of its request head do not keep the process alive past
/// `drain_ms`; new connections are not upgraded while draining.
#[test]
fn sigterm_drain_is_bounded_by_drain_ms() {
    let config = "[timeouts]\ndrain_ms = 1000\nclose_ms = 10000\n";
    let Some(mut gw) = Gateway::start(config) else {
        return;
    };
    let mut deaf = raw_ws(gw.addr);
    let mut half = tcp(gw.addr);
    half.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut polite = ws_connect(&gw);
    assert_echo(&mut polite, Message::text("hi"));

    let started = Instant::now();
    gw.sigterm();
    assert_eq!(read_close_code(&mut polite), Some(CloseCode::Away));
    drop(polite);

    // Shutdown has begun: a newcomer is not upgraded (refused, reset or closed).
    if let Ok(mut late) = TcpStream::connect(gw.addr) {
        late.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = late.write_all(upgrade_request("/echo", "").as_bytes());
        if let Ok(head) = read_http_head(&mut late) {
            assert_ne!(head.status, 101, "upgraded a connection while draining");
        }
    }

    let status = gw
        .wait_exit(Duration::from_millis(1000 + 3000))
        .unwrap_or_else(|| {
            panic!(
                "still running {:?} after SIGTERM with drain_ms = 1000",
                started.elapsed()
            )
        });
    let elapsed = started.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        elapsed >= Duration::from_millis(800),
        "exited after {elapsed:?}: did not wait drain_ms for the deaf client"
    );

    // The deaf client was sent 1001 before being dropped.
    let close = must_read_frame(&mut deaf, "close frame for the deaf client");
    assert_eq!(close.close_code(), Some(1001), "{close:?}");
    // The half-open handshake was dropped.
    let mut buf = [0u8; 64];
    match half.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("half-open handshake: expected EOF or reset, got {other:?}"),
    }
}

#[test]
fn a_second_gateway_on_a_listened_port_refuses_to_start_unless_share_port() {
    let Some(first) = Gateway::start("") else {
        return;
    };
    let listen = first.addr.to_string();
    let config = std::env::temp_dir().join(format!("gateway-it-share-{}.toml", std::process::id()));
    std::fs::write(&config, merged_config("")).expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(&listen)
        .output()
        .expect("run a second gateway");
    let _ = std::fs::remove_file(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second gateway started: {stderr}");
    assert!(
        stderr.contains("already listening") && stderr.contains("server.share_port"),
        "{stderr}"
    );
    assert_still_serving(&first);

    let second = Gateway::start_on(&listen, "[server]\nshare_port = true\n")
        .expect("with share_port the second gateway joins the port");
    assert_eq!(second.addr, first.addr);
    assert_still_serving(&second);
}
