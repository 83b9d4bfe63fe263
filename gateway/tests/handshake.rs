//! The HTTP side: health check, every rejection status, header/size limits,
//! Origin allow-list and subprotocol negotiation.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::client::ClientRequestBuilder;
use tungstenite::Message;

fn uri(gw: &Gateway) -> tungstenite::http::Uri {
    gw.echo_url().parse().unwrap()
}

#[test]
fn health_check_answers_200_ok() {
    let Some(gw) = Gateway::start("") else { return };
    let response = http_exchange(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.status_line, "HTTP/1.1 200 OK");
    assert_eq!(response.body_text().trim_end(), "ok", "{response:?}");
    assert!(response.closed, "health check connection not closed");
    // A query string does not change the route.
    let response = http_exchange(gw.addr, b"GET /healthz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn health_check_uses_configured_path() {
    let Some(gw) = Gateway::start("[websocket]\nhealth_path = \"/ready\"\n") else {
        return;
    };
    let response = http_exchange(gw.addr, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200, "{response:?}");
    assert_rejected(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 404);
}

#[test]
fn non_get_method_is_400() {
    let Some(gw) = Gateway::start("") else { return };
    let req = upgrade_request("/echo", "").replacen("GET", "POST", 1);
    assert_rejected(gw.addr, req.as_bytes(), 400);
    let req = upgrade_request("/echo", "").replacen("GET", "PUT", 1);
    assert_rejected(gw.addr, req.as_bytes(), 400);
    assert_rejected(gw.addr, b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}

#[test]
fn garbage_request_line_is_400() {
    let Some(gw) = Gateway::start("") else { return };
    // A TLS ClientHello start (someone speaking https to us).
    assert_rejected(
        gw.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        400,
    );
    assert_rejected(gw.addr, b"NOT AN HTTP REQUEST\r\n\r\n", 400);
    assert_rejected(
        gw.addr,
        b"GET /echo HTTP/1.1\r\nBad Header Line\r\n\r\n",
        400,
    );
}

#[test]
fn http_1_0_and_missing_host_are_400() {
    let Some(gw) = Gateway::start("") else { return };
    let req = upgrade_request("/echo", "").replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_rejected(gw.addr, req.as_bytes(), 400);
    let req = without_header(&upgrade_request("/echo", ""), "Host");
    assert_rejected(gw.addr, req.as_bytes(), 400);
}

#[test]
fn unknown_path_is_404() {
    let Some(gw) = Gateway::start("") else { return };
    assert_rejected(gw.addr, upgrade_request("/nope", "").as_bytes(), 404);
    assert_rejected(gw.addr, upgrade_request("/echo/extra", "").as_bytes(), 404);
    assert_rejected(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404);
    // An upgrade on the health path is not a health check, and not a route.
    assert_rejected(gw.addr, upgrade_request("/healthz", "").as_bytes(), 404);
}

#[test]
fn missing_version_is_426_with_version_header() {
    let Some(gw) = Gateway::start("") else { return };
    let req = without_header(&upgrade_request("/echo", ""), "Sec-WebSocket-Version");
    let response = assert_rejected(gw.addr, req.as_bytes(), 426);
    assert_eq!(
        response.header("Sec-WebSocket-Version"),
        Some("13"),
        "{response:?}"
    );
}

#[test]
fn version_8_is_426_with_version_header() {
    let Some(gw) = Gateway::start("") else { return };
    let req = upgrade_request("/echo", "")
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let response = assert_rejected(gw.addr, req.as_bytes(), 426);
    assert_eq!(
        response.header("Sec-WebSocket-Version"),
        Some("13"),
        "{response:?}"
    );
}

#[test]
fn plain_get_on_echo_path_is_426() {
    let Some(gw) = Gateway::start("") else { return };
    let response = assert_rejected(gw.addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", 426);
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn missing_or_bad_key_is_400() {
    let Some(gw) = Gateway::start("") else { return };
    let req = without_header(&upgrade_request("/echo", ""), "Sec-WebSocket-Key");
    assert_rejected(gw.addr, req.as_bytes(), 400);
    // 16 bytes are required: this one decodes to 11.
    let req = upgrade_request("/echo", "").replace(KEY, "dGhlIHNhbXBsZQ==");
    assert_rejected(gw.addr, req.as_bytes(), 400);
    let req = upgrade_request("/echo", &format!("Sec-WebSocket-Key: {KEY}\r\n"));
    assert_rejected(gw.addr, req.as_bytes(), 400);
}

#[test]
fn wrong_upgrade_or_connection_header_is_400() {
    let Some(gw) = Gateway::start("") else { return };
    let req = upgrade_request("/echo", "").replace("Upgrade: websocket", "Upgrade: h2c");
    assert_rejected(gw.addr, req.as_bytes(), 400);
    let req = upgrade_request("/echo", "").replace("Connection: Upgrade", "Connection: keep-alive");
    assert_rejected(gw.addr, req.as_bytes(), 400);
    // Token lists and case are fine.
    let req = upgrade_request("/echo", "")
        .replace("Connection: Upgrade", "Connection: keep-alive, UPGRADE")
        .replace("Upgrade: websocket", "upgrade: WebSocket");
    raw_ws_with(gw.addr, &req);
}

/// With `limits.max_headers = 8`: exactly 8 header fields upgrade, 9 get 431.
#[test]
fn headers_over_max_headers_is_431() {
    let Some(gw) = Gateway::start("[limits]\nmax_headers = 8\n") else {
        return;
    };
    // upgrade_request has 5 header fields.
    let at_limit = upgrade_request("/echo", "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n");
    let mut s = raw_ws_with(gw.addr, &at_limit);
    s.write_all(&close_frame(1000, "")).unwrap();
    expect_close(&mut s, 1000);
    let over = upgrade_request("/echo", "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n");
    assert_rejected(gw.addr, over.as_bytes(), 431);
}

/// With `limits.max_handshake_bytes = 1024`: a 1024-byte head upgrades, a
/// 1025-byte one gets 431.
#[test]
fn head_over_max_handshake_bytes_is_431() {
    let Some(gw) = Gateway::start("[limits]\nmax_handshake_bytes = 1024\n") else {
        return;
    };
    let padded = |total: usize| {
        let base = upgrade_request("/echo", "X-Pad: \r\n").len();
        let req = upgrade_request("/echo", &format!("X-Pad: {}\r\n", "p".repeat(total - base)));
        assert_eq!(req.len(), total);
        req
    };
    let mut s = raw_ws_with(gw.addr, &padded(1024));
    s.write_all(&close_frame(1000, "")).unwrap();
    expect_close(&mut s, 1000);
    assert_rejected(gw.addr, padded(1025).as_bytes(), 431);
}

/// A head that never ends is refused as soon as it passes the limit, not
/// after the handshake timeout.
#[test]
fn endless_head_is_431_without_waiting_for_its_end() {
    let Some(gw) = Gateway::start("[limits]\nmax_handshake_bytes = 1024\n") else {
        return;
    };
    let mut s = tcp(gw.addr);
    let started = Instant::now();
    let mut head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Endless: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 1100));
    s.write_all(&head).unwrap();
    let response = read_http_response(&mut s).expect("a response before the head ends");
    assert_eq!(response.status, 431, "{response:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "431 took {:?}",
        started.elapsed()
    );
}

#[test]
fn origin_not_allowed_is_403_and_allowed_origin_upgrades() {
    let config = "[websocket]\nallowed_origins = [\"https://good.example\"]\n";
    let Some(gw) = Gateway::start(config) else {
        return;
    };
    let evil = upgrade_request("/echo", "Origin: https://evil.example\r\n");
    assert_rejected(gw.addr, evil.as_bytes(), 403);
    // With an allow-list, a request without Origin is refused too.
    assert_rejected(gw.addr, upgrade_request("/echo", "").as_bytes(), 403);
    // Prefix tricks do not pass an exact match.
    let tricky = upgrade_request("/echo", "Origin: https://good.example.evil\r\n");
    assert_rejected(gw.addr, tricky.as_bytes(), 403);

    // The allowed origin works with a real client, case-insensitively too.
    for origin in ["https://good.example", "https://GOOD.example"] {
        let request = ClientRequestBuilder::new(uri(&gw)).with_header("Origin", origin);
        let (mut ws, response) = try_ws_connect(gw.addr, request, None)
            .unwrap_or_else(|e| panic!("allowed origin {origin} refused: {e}"));
        assert_eq!(response.status(), 101);
        assert_echo(&mut ws, Message::text("from a good origin"));
        ws_close(ws);
    }
}

#[test]
fn any_origin_is_allowed_without_allow_list() {
    let Some(gw) = Gateway::start("") else { return };
    let req = upgrade_request("/echo", "Origin: https://anything.example\r\n");
    raw_ws_with(gw.addr, &req);
}

const SUBPROTOCOLS: &str = "[websocket]\nsubprotocols = [\"v2.gw\", \"v1.gw\"]\n";

#[test]
fn subprotocol_server_preference_wins() {
    let Some(gw) = Gateway::start(SUBPROTOCOLS) else {
        return;
    };
    // The client prefers v1 but the server's first choice that is offered wins.
    let request = ClientRequestBuilder::new(uri(&gw))
        .with_sub_protocol("v1.gw")
        .with_sub_protocol("v2.gw");
    let (mut ws, response) = try_ws_connect(gw.addr, request, None).expect("upgrade");
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("v2.gw")
    );
    assert_echo(&mut ws, Message::text("v2"));
    ws_close(ws);

    // Spread over two header lines, among unknown ones.
    let req = upgrade_request(
        "/echo",
        "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: x, v2.gw\r\n",
    );
    let mut s = tcp(gw.addr);
    s.write_all(req.as_bytes()).unwrap();
    let head = read_http_head(&mut s).unwrap();
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("Sec-WebSocket-Protocol"), Some("v2.gw"));
}

#[test]
fn subprotocol_only_supported_one_offered_is_selected() {
    let Some(gw) = Gateway::start(SUBPROTOCOLS) else {
        return;
    };
    let request = ClientRequestBuilder::new(uri(&gw))
        .with_sub_protocol("other")
        .with_sub_protocol("v1.gw");
    let (ws, response) = try_ws_connect(gw.addr, request, None).expect("upgrade");
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("v1.gw")
    );
    ws_close(ws);
}

#[test]
fn subprotocol_none_offered_or_none_matching_sends_no_header() {
    let Some(gw) = Gateway::start(SUBPROTOCOLS) else {
        return;
    };
    for extra in [
        "",
        "Sec-WebSocket-Protocol: chat, superchat\r\n",
        // Tokens are case-sensitive.
        "Sec-WebSocket-Protocol: V2.GW\r\n",
    ] {
        let mut s = tcp(gw.addr);
        s.write_all(upgrade_request("/echo", extra).as_bytes())
            .unwrap();
        let head = read_http_head(&mut s).unwrap();
        assert_eq!(head.status, 101, "{extra:?}: {head:?}");
        assert_eq!(
            head.header("Sec-WebSocket-Protocol"),
            None,
            "{extra:?}: {head:?}"
        );
    }
    // And a real client offering nothing connects fine.
    let mut ws = ws_connect(&gw);
    assert_echo(&mut ws, Message::text("no subprotocol"));
    ws_close(ws);
}

#[test]
fn rejections_do_not_stop_the_server() {
    let Some(gw) = Gateway::start("") else { return };
    for _ in 0..20 {
        assert_rejected(gw.addr, b"BREW /pot HTCPCP/1.0\r\n\r\n", 400);
        assert_rejected(gw.addr, upgrade_request("/nope", "").as_bytes(), 404);
    }
    assert_still_serving(&gw);
}

/// The request head arriving in small pieces (several reads) still
/// upgrades, and a frame sent right behind its last piece is echoed.
#[test]
fn request_head_in_small_pieces_upgrades() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = tcp(gw.addr);
    let mut wire = upgrade_request("/echo", "X-Filler: some more bytes\r\n").into_bytes();
    wire.extend(frame(OP_TEXT, true, b"behind a split head"));
    for piece in wire.chunks(7) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let head = read_http_head(&mut s).unwrap();
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("Sec-WebSocket-Accept"), Some(ACCEPT));
    let echo = must_read_frame(&mut s, "echo");
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (OP_TEXT, &b"behind a split head"[..])
    );
}
