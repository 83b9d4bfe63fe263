//! Protocol violations must end in the right close code, then a closed TCP
//! connection, while the gateway keeps serving everyone else.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

/// Sends `wire` on a fresh raw WebSocket, expects a close frame with `code`
/// and EOF, then checks the gateway still echoes on a new connection.
#[track_caller]
fn assert_fails_with(gw: &Gateway, wire: &[u8], code: u16) {
    let mut s = raw_ws(gw.addr);
    s.write_all(wire).unwrap();
    expect_close(&mut s, code);
    assert_still_serving(gw);
}

#[test]
fn invalid_utf8_text_is_1007() {
    let Some(gw) = Gateway::start("") else { return };
    assert_fails_with(&gw, &frame(OP_TEXT, true, b"valid then \xff\xfe"), 1007);
    // A truncated code point at the very end of a message.
    assert_fails_with(&gw, &frame(OP_TEXT, true, b"euro \xe2\x82"), 1007);
    // An overlong encoding of '/'.
    assert_fails_with(&gw, &frame(OP_TEXT, true, b"\xc0\xaf"), 1007);
}

/// The bad fragment is neither the first nor the last, and the final fragment
/// is never sent: the server must fail fast instead of waiting for it.
#[test]
fn invalid_utf8_in_middle_fragment_is_1007() {
    let Some(gw) = Gateway::start("") else { return };
    let mut wire = frame(OP_TEXT, false, b"fine so far ");
    wire.extend(frame(OP_CONT, false, b"broken \xc0\xaf here"));
    assert_fails_with(&gw, &wire, 1007);
}

#[test]
fn invalid_utf8_close_reason_is_1007() {
    let Some(gw) = Gateway::start("") else { return };
    let wire = frame(OP_CLOSE, true, b"\x03\xe8bad \xc3\x28");
    assert_fails_with(&gw, &wire, 1007);
}

/// Only the header of a 70 MiB frame is sent: the 1009 must come without the
/// server waiting for (or buffering) the payload.
#[test]
fn frame_over_max_frame_bytes_is_1009_at_header_time() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = raw_ws(gw.addr);
    let started = Instant::now();
    s.write_all(&frame_header(FIN | OP_BINARY, 70 << 20, Some(next_mask())))
        .unwrap();
    expect_close(&mut s, 1009);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "1009 took {:?}",
        started.elapsed()
    );
    assert_still_serving(&gw);
}

/// With `max_frame_bytes = 1024`: a 1024-byte frame is echoed, a header
/// announcing 1025 bytes is refused.
#[test]
fn configured_max_frame_bytes_is_exact() {
    let Some(gw) = Gateway::start("[limits]\nmax_frame_bytes = 1024\n") else {
        return;
    };
    let mut ws = ws_connect(&gw);
    assert_echo(&mut ws, Message::binary(vec![7u8; 1024]));
    ws_close(ws);
    let wire = frame_header(FIN | OP_BINARY, 1025, Some(next_mask()));
    assert_fails_with(&gw, &wire, 1009);
}

/// `max_frame_bytes = 1000`, `max_message_bytes = 2500`: three fragments of
/// 1000 bytes exceed the message limit when the third header arrives.
#[test]
fn message_over_max_message_bytes_across_fragments_is_1009() {
    let config = "[limits]\nmax_frame_bytes = 1000\nmax_message_bytes = 2500\n";
    let Some(gw) = Gateway::start(config) else {
        return;
    };
    // Exactly at the limit: 1000 + 1000 + 500 is echoed as one message.
    let mut s = raw_ws(gw.addr);
    let mut wire = frame(OP_BINARY, false, &[1; 1000]);
    wire.extend(frame(OP_CONT, false, &[2; 1000]));
    wire.extend(frame(OP_CONT, true, &[3; 500]));
    s.write_all(&wire).unwrap();
    let echo = must_read_frame(&mut s, "echo at the limit");
    assert_eq!(
        (echo.opcode, echo.fin, echo.payload.len()),
        (OP_BINARY, true, 2500)
    );
    s.write_all(&close_frame(1000, "")).unwrap();
    expect_close(&mut s, 1000);

    // One byte over: only the third header is sent, no payload.
    let mut wire = frame(OP_BINARY, false, &[1; 1000]);
    wire.extend(frame(OP_CONT, false, &[2; 1000]));
    wire.extend(frame_header(OP_CONT | FIN, 501, Some(next_mask())));
    assert_fails_with(&gw, &wire, 1009);

    // Text behaves the same.
    let mut wire = frame(OP_TEXT, false, &[b'a'; 1000]);
    wire.extend(frame(OP_CONT, false, &[b'b'; 1000]));
    wire.extend(frame(OP_CONT, true, &[b'c'; 1000]));
    assert_fails_with(&gw, &wire, 1009);
}

#[test]
fn unmasked_client_frame_is_1002() {
    let Some(gw) = Gateway::start("") else { return };
    assert_fails_with(&gw, &encode_frame(FIN | OP_TEXT, b"no mask", None), 1002);
    // Unmasked control frames too.
    assert_fails_with(&gw, &encode_frame(FIN | OP_PING, b"", None), 1002);
}

#[test]
fn reserved_opcode_is_1002() {
    let Some(gw) = Gateway::start("") else { return };
    for opcode in [0x3, 0x7, 0xB, 0xF] {
        let wire = encode_frame(FIN | opcode, b"x", Some(next_mask()));
        assert_fails_with(&gw, &wire, 1002);
    }
}

#[test]
fn rsv_bits_are_1002() {
    let Some(gw) = Gateway::start("") else { return };
    for rsv in [RSV1, RSV2, RSV3] {
        let wire = encode_frame(FIN | rsv | OP_TEXT, b"x", Some(next_mask()));
        assert_fails_with(&gw, &wire, 1002);
    }
}

#[test]
fn close_code_1005_from_client_is_1002() {
    let Some(gw) = Gateway::start("") else { return };
    assert_fails_with(&gw, &close_frame(1005, ""), 1002);
}

#[test]
fn other_forbidden_close_payloads_are_1002() {
    let Some(gw) = Gateway::start("") else { return };
    for code in [0u16, 999, 1004, 1006, 1015, 2999, 5000] {
        assert_fails_with(&gw, &close_frame(code, ""), 1002);
    }
    // A one-byte close payload.
    assert_fails_with(&gw, &frame(OP_CLOSE, true, &[3]), 1002);
}

#[test]
fn control_frame_violations_are_1002() {
    let Some(gw) = Gateway::start("") else { return };
    // Control payload over 125 bytes.
    assert_fails_with(&gw, &frame(OP_PING, true, &[0; 126]), 1002);
    // Fragmented control frame.
    assert_fails_with(&gw, &frame(OP_PING, false, b"frag"), 1002);
}

#[test]
fn fragmentation_violations_are_1002() {
    let Some(gw) = Gateway::start("") else { return };
    // Continuation with no message in progress.
    assert_fails_with(&gw, &frame(OP_CONT, true, b"orphan"), 1002);
    // A new data frame while a fragmented message is in progress.
    let mut wire = frame(OP_TEXT, false, b"first");
    wire.extend(frame(OP_BINARY, true, b"second"));
    assert_fails_with(&gw, &wire, 1002);
}

#[test]
fn messages_before_the_violation_are_still_echoed() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = raw_ws(gw.addr);
    let mut wire = frame(OP_TEXT, true, b"one");
    wire.extend(frame(OP_BINARY, true, b"two"));
    wire.extend(encode_frame(FIN | 0x3, b"", Some(next_mask())));
    wire.extend(frame(OP_TEXT, true, b"never echoed"));
    s.write_all(&wire).unwrap();
    let one = must_read_frame(&mut s, "first echo");
    assert_eq!((one.opcode, one.payload.as_slice()), (OP_TEXT, &b"one"[..]));
    let two = must_read_frame(&mut s, "second echo");
    assert_eq!(
        (two.opcode, two.payload.as_slice()),
        (OP_BINARY, &b"two"[..])
    );
    expect_close(&mut s, 1002);
}

/// `io.max_send_queue_bytes`: a client that sends but never reads is closed
/// with 1008 once the unsent echo backlog passes the limit, instead of the
/// gateway buffering without bound.
#[test]
fn slow_consumer_is_closed_with_1008() {
    let Some(gw) = Gateway::start("[io]\nmax_send_queue_bytes = 65536\n") else {
        return;
    };
    let config = WebSocketConfig::default().read_buffer_size(64 * 1024);
    let (mut ws, _) = try_ws_connect(gw.addr, gw.echo_url(), Some(config)).unwrap();
    // Each message is far below the limit: only the backlog of unsent echoes
    // (the kernel buffers on both sides being full) can exceed it.
    let payload = vec![0x5au8; 4 * 1024];
    let mut sent = 0usize;
    // 64 MiB is far beyond what the kernel buffers on both sides can hold.
    while sent < 64 << 20 {
        match ws.send(Message::binary(payload.clone())) {
            Ok(()) => sent += payload.len(),
            // The server may have stopped reading after its close; that is fine.
            Err(_) => break,
        }
    }
    let mut echoed = 0usize;
    let code = loop {
        match ws.read() {
            Ok(Message::Binary(b)) => echoed += b.len(),
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("no close frame after {echoed} echoed bytes: {e}"),
        }
    };
    assert_eq!(code, Some(1008), "after {echoed} of {sent} bytes echoed");
    assert!(
        echoed < sent,
        "everything was echoed: no backpressure limit"
    );
    drop(ws);
    assert_still_serving(&gw);
}

/// A client that reads promptly is not a slow consumer, whatever the size of
/// its (allowed) messages. With the shipped defaults `max_message_bytes` is
/// 16 MiB but `max_send_queue_bytes` is 4 MiB.
#[test]
fn large_allowed_message_does_not_count_as_slow_consumer() {
    let Some(gw) = Gateway::start("") else { return };
    let mut ws = ws_connect(&gw);
    // 5 MiB: within max_message_bytes (16 MiB), over max_send_queue_bytes (4 MiB).
    let big = Message::binary(vec![0xa5u8; 5 << 20]);
    assert_echo(&mut ws, big);
    // The connection must still be open and echoing.
    ws.send(Message::text("still open?")).unwrap();
    match ws.read() {
        Ok(m) => assert_eq!(
            m,
            Message::text("still open?"),
            "the connection was closed after echoing a 5 MiB message"
        ),
        Err(e) => panic!("connection unusable after a large echo: {e}"),
    }
    ws_close(ws);
}
