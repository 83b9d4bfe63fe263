//! `/metrics` on the admin listener: runs known traffic through a two-worker
//! gateway, then checks every counter against what the clients did.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

const ADMIN: &str = r#"
[server]
workers = 2

[admin]
listen = "127.0.0.1:0"
publish_ms = 50
latency_sample_every = 1
"#;

/// Polls `/metrics` until `ready` holds (workers publish every 50 ms).
#[track_caller]
fn settled(gw: &Gateway, ready: impl Fn(&Metrics) -> bool) -> Metrics {
    retry(Duration::from_secs(10), || {
        ready(&gw.metrics()).then_some(())
    })
    .unwrap_or_else(|| panic!("metrics never settled:\n{}", gw.metrics().text));
    // The traffic was over before `ready` held, but a scrape is not atomic
    // with a worker's publish: another worker's series may still lag. After
    // a few publish periods (50 ms) every worker has published its final
    // values, so any scrape sees them all.
    std::thread::sleep(Duration::from_millis(200));
    let m = gw.metrics();
    assert!(ready(&m), "metrics went back after settling:\n{}", m.text);
    m
}

#[test]
fn counters_match_the_traffic() {
    let Some(gw) = Gateway::start(ADMIN) else {
        return;
    };
    const CLIENTS: usize = 6;
    const PER_CLIENT: usize = 10;
    let (mut text_msgs, mut binary_msgs, mut payload_bytes) = (0u64, 0u64, 0u64);

    // Echo clients: alternating text and binary messages of growing size,
    // then a close handshake with 1000.
    for c in 0..CLIENTS {
        let mut ws = ws_connect(&gw);
        for i in 0..PER_CLIENT {
            let len = 1 + c * 100 + i * 37;
            let message = if i % 2 == 0 {
                text_msgs += 1;
                Message::text("t".repeat(len))
            } else {
                binary_msgs += 1;
                Message::binary(vec![i as u8; len])
            };
            payload_bytes += len as u64;
            assert_echo(&mut ws, message);
        }
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .expect("send close");
        while ws.read().is_ok() {}
    }

    // Raw client: a text message in three fragments, a ping, close 1000.
    let mut raw = raw_ws(gw.addr);
    let mut wire = frame(OP_TEXT, false, b"frag");
    wire.extend(frame(OP_CONT, false, b"men"));
    wire.extend(frame(OP_CONT, true, b"ted"));
    wire.extend(frame(OP_PING, true, b"p"));
    raw.write_all(&wire).unwrap();
    let echo = must_read_frame(&mut raw, "fragmented echo");
    assert_eq!(
        (echo.opcode, &echo.payload[..]),
        (OP_TEXT, &b"fragmented"[..])
    );
    assert_eq!(must_read_frame(&mut raw, "pong").opcode, OP_PONG);
    raw.write_all(&close_frame(1000, "")).unwrap();
    expect_close(&mut raw, 1000);
    drop(raw);
    text_msgs += 1;
    payload_bytes += 10;

    // A client that vanishes without a close frame (abnormal, reason error).
    let mut vanish = raw_ws(gw.addr);
    vanish.write_all(&frame(OP_BINARY, true, b"bye")).unwrap();
    must_read_frame(&mut vanish, "echo before vanishing");
    drop(vanish);
    binary_msgs += 1;
    payload_bytes += 3;

    // A rejected handshake, a health check, and one connection held open.
    assert_rejected(gw.addr, upgrade_request("/nope", "").as_bytes(), 404);
    let health = http_exchange(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(health.status, 200);
    let mut held = ws_connect(&gw);
    assert_echo(&mut held, Message::text("held"));
    text_msgs += 1;
    payload_bytes += 4;

    let messages = text_msgs + binary_msgs;
    let upgrades = CLIENTS as f64 + 3.0; // echo clients, raw, vanish, held
    let accepted = upgrades + 2.0; // plus the 404 and the health check
    let m = settled(&gw, |m| {
        // A scrape is not atomic with a worker's publish: wait for one
        // that saw every counter this test checks at its final value.
        m.sum("gateway_messages_received_total", &[]) == Some(messages as f64)
            && m.sum("gateway_connections_accepted_total", &[]) == Some(accepted)
            && m.sum("gateway_connections_closed_total", &[]) == Some(accepted - 1.0)
            && m.sum("gateway_message_latency_seconds_count", &[]) == Some(messages as f64)
    });

    // Connections.
    assert_eq!(m.get("gateway_connections_accepted_total", &[]), accepted);
    assert_eq!(
        m.get("gateway_connections_active", &[]),
        1.0,
        "the held one"
    );
    let closed = |reason| m.get("gateway_connections_closed_total", &[("reason", reason)]);
    assert_eq!(
        closed("normal"),
        CLIENTS as f64 + 3.0,
        "echo clients, raw, 404, health"
    );
    assert_eq!(closed("error"), 1.0, "the vanished client");
    for reason in ["timeout", "slow_consumer", "shutdown"] {
        assert_eq!(closed(reason), 0.0, "{reason}");
    }
    assert_eq!(m.get("gateway_abnormal_closures_total", &[]), 1.0);
    assert_eq!(m.get("gateway_websocket_upgrades_total", &[]), upgrades);
    assert_eq!(m.get("gateway_health_checks_total", &[]), 1.0);
    let rejected = |status| m.get("gateway_handshake_rejections_total", &[("status", status)]);
    assert_eq!(rejected("404"), 1.0);
    for status in ["400", "403", "408", "426", "431", "503"] {
        assert_eq!(rejected(status), 0.0, "{status}");
    }

    // Messages and bytes, both directions (every message is echoed).
    for dir in ["received", "sent"] {
        let msgs = m.get(&format!("gateway_messages_{dir}_total"), &[]);
        assert_eq!(msgs, messages as f64, "{dir}");
        let bytes = m.get(&format!("gateway_message_{dir}_bytes_total"), &[]);
        assert_eq!(bytes, payload_bytes as f64, "{dir}");
    }

    // Frames by opcode class.
    let rx = |op| m.get("gateway_frames_received_total", &[("opcode", op)]);
    let tx = |op| m.get("gateway_frames_sent_total", &[("opcode", op)]);
    assert_eq!(
        rx("text"),
        text_msgs as f64,
        "the fragmented message's first frame is text"
    );
    assert_eq!(rx("binary"), binary_msgs as f64);
    assert_eq!(rx("continuation"), 2.0);
    assert_eq!((rx("ping"), rx("pong")), (1.0, 0.0));
    assert_eq!(rx("close"), CLIENTS as f64 + 1.0);
    assert_eq!(tx("text"), text_msgs as f64, "echoes are never fragmented");
    assert_eq!(tx("binary"), binary_msgs as f64);
    assert_eq!(
        (tx("continuation"), tx("ping"), tx("pong")),
        (0.0, 0.0, 1.0)
    );
    assert_eq!(tx("close"), CLIENTS as f64 + 1.0);

    // Close codes.
    let code_rx = |c| m.get("gateway_close_frames_received_total", &[("code", c)]);
    let code_tx = |c| m.get("gateway_close_frames_sent_total", &[("code", c)]);
    assert_eq!(code_rx("1000"), CLIENTS as f64 + 1.0);
    assert_eq!(code_tx("1000"), CLIENTS as f64 + 1.0);
    assert_eq!((code_rx("none"), code_tx("1001")), (0.0, 0.0));

    // Histograms: one handshake sample per upgrade, one latency sample per
    // echoed message; cumulative buckets end in the count.
    for (name, count) in [
        ("gateway_handshake_duration_seconds", upgrades),
        ("gateway_message_latency_seconds", messages as f64),
    ] {
        assert_eq!(m.types.get(name).map(String::as_str), Some("histogram"));
        assert_eq!(m.get(&format!("{name}_count"), &[]), count, "{name}");
        assert_eq!(m.get(&format!("{name}_bucket"), &[("le", "+Inf")]), count);
        let sum = m.get(&format!("{name}_sum"), &[]);
        assert!(sum > 0.0 && sum < count * 5.0, "{name}_sum = {sum}");
    }

    // Engine health and process metrics are present for every worker.
    for w in ["0", "1"] {
        for name in [
            "gateway_engine_sq_backlog_entries",
            "gateway_engine_cq_overflow_total",
            "gateway_engine_recv_enobufs_total",
            "gateway_engine_send_queue_bytes",
            "gateway_engine_timer_entries",
            "gateway_engine_completions_total",
        ] {
            m.get(name, &[("worker", w)]);
        }
    }
    assert_eq!(m.get("gateway_engine_cq_overflow_total", &[]), 0.0);
    assert!(
        m.get("gateway_engine_timer_entries", &[]) >= 1.0,
        "the held connection's deadline"
    );
    assert_eq!(m.get("gateway_build_info", &[]), 1.0);
    assert!(m.get("process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.get("process_open_fds", &[]) >= 5.0);
    // Present; it may still read 0 (clock-tick resolution, 10 ms) this early.
    assert!(m.get("process_cpu_seconds_total", &[]) >= 0.0);

    // Naming conventions: counters end in _total, nothing else does.
    for (family, kind) in &m.types {
        assert!(
            family.starts_with("gateway_") || family.starts_with("process_"),
            "{family}"
        );
        assert_eq!(
            family.ends_with("_total"),
            kind == "counter",
            "{family} is a {kind}"
        );
    }

    // Scrapes are not client connections.
    let again = gw.metrics();
    assert_eq!(
        again.get("gateway_connections_accepted_total", &[]),
        accepted
    );
    ws_close(held);
}

#[test]
fn admin_listener_answers_only_get_metrics() {
    let Some(gw) = Gateway::start(ADMIN) else {
        return;
    };
    let admin = gw.admin.unwrap();
    let not_found = assert_rejected(admin, b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n", 404);
    assert!(not_found.body_text().contains("/metrics"));
    let post = assert_rejected(admin, b"POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 405);
    assert_eq!(post.header("Allow"), Some("GET"));
    assert_rejected(admin, b"GARBAGE\r\n\r\n", 400);
    // WebSocket upgrades are not served there.
    assert_rejected(admin, upgrade_request("/echo", "").as_bytes(), 404);
    // A request split over several reads, and HTTP/1.0.
    let mut s = tcp(admin);
    s.write_all(b"GET /met").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"rics HTTP/1.0\r\n\r\n").unwrap();
    let response = read_http_response(&mut s).unwrap();
    assert_eq!(response.status, 200);
    assert!(response.closed);
    assert!(response.body_text().contains("gateway_connections_active{"));
    // None of this counted as client traffic.
    let m = gw.metrics();
    assert_eq!(m.get("gateway_connections_accepted_total", &[]), 0.0);
    assert_eq!(m.get("gateway_handshake_rejections_total", &[]), 0.0);
    assert_still_serving(&gw);
}

#[test]
fn metrics_off_means_no_exposition() {
    let Some(gw) = Gateway::start(
        r#"
[admin]
listen = "127.0.0.1:0"
metrics = false
"#,
    ) else {
        return;
    };
    let response = assert_rejected(
        gw.admin.unwrap(),
        b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
        404,
    );
    assert!(response.body_text().contains("disabled"), "{response:?}");
    assert_still_serving(&gw);
}
