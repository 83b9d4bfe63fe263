//! The echo route: message types, sizes, fragmentation, ping/pong and the
//! close handshake, seen from a real client (tungstenite) and from raw frames.

mod common;

use std::io::Write;

use common::*;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Bytes, Message};

#[test]
fn text_echo_stays_text() {
    let Some(gw) = Gateway::start("") else { return };
    let mut ws = ws_connect(&gw);
    let msg = Message::text("hello, wörld 😀");
    ws.send(msg.clone()).unwrap();
    let reply = ws.read().unwrap();
    assert!(reply.is_text(), "text came back as {reply:?}");
    assert_eq!(reply, msg);
    ws_close(ws);
}

#[test]
fn binary_echo_stays_binary() {
    let Some(gw) = Gateway::start("") else { return };
    let mut ws = ws_connect(&gw);
    // Includes bytes that are not valid UTF-8: a binary message must not be
    // validated (or converted) as text.
    let msg = Message::binary((0..=255u8).collect::<Vec<u8>>());
    ws.send(msg.clone()).unwrap();
    let reply = ws.read().unwrap();
    assert!(reply.is_binary(), "binary came back as {reply:?}");
    assert_eq!(reply, msg);
    ws_close(ws);
}

#[test]
fn empty_messages_echo() {
    let Some(gw) = Gateway::start("") else { return };
    let mut ws = ws_connect(&gw);
    assert_echo(&mut ws, Message::text(""));
    assert_echo(&mut ws, Message::binary(Vec::new()));
    // And a normal message afterwards, so an empty echo cannot desynchronise.
    assert_echo(&mut ws, Message::text("after"));
    ws_close(ws);
}

#[test]
fn one_mib_messages_echo() {
    let Some(gw) = Gateway::start("") else { return };
    let mut ws = ws_connect(&gw);
    let binary: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 251) as u8).collect();
    assert_echo(&mut ws, Message::binary(binary));
    // 1 MiB of text with multi-byte characters spread over many receive
    // buffers (a buffer boundary will split some of them).
    let unit = "abc€😀é"; // 12 bytes
    let mut text = unit.repeat((1 << 20) / unit.len());
    text.push_str(&"x".repeat((1 << 20) - text.len()));
    assert_eq!(text.len(), 1 << 20);
    assert_echo(&mut ws, Message::text(text));
    ws_close(ws);
}

#[test]
fn fragmented_message_comes_back_as_one() {
    let Some(gw) = Gateway::start("") else { return };
    let mut ws = ws_connect(&gw);
    let whole = "fragments: héllo wörld €uro";
    let bytes = whole.as_bytes();
    // Split inside the multi-byte 'é' and '€'.
    let cut1 = whole.find('é').unwrap() + 1;
    let cut2 = whole.find('€').unwrap() + 2;
    let parts = [&bytes[..cut1], &bytes[cut1..cut2], &bytes[cut2..]];
    let opcodes = [
        OpCode::Data(Data::Text),
        OpCode::Data(Data::Continue),
        OpCode::Data(Data::Continue),
    ];
    for (i, (part, opcode)) in parts.iter().zip(opcodes).enumerate() {
        let frame = Frame::message(Bytes::copy_from_slice(part), opcode, i == parts.len() - 1);
        ws.send(Message::Frame(frame)).unwrap();
    }
    assert_eq!(ws.read().unwrap(), Message::text(whole));

    // Binary, five fragments, one of them empty.
    let chunks: [&[u8]; 5] = [&[1, 2], &[], &[3], &[4, 5, 6], &[7]];
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(Bytes::copy_from_slice(chunk), opcode, i == chunks.len() - 1);
        ws.send(Message::Frame(frame)).unwrap();
    }
    assert_eq!(
        ws.read().unwrap(),
        Message::binary(vec![1, 2, 3, 4, 5, 6, 7])
    );
    ws_close(ws);
}

#[test]
fn raw_fragments_with_interleaved_ping_come_back_as_one_frame() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = raw_ws(gw.addr);
    let mut wire = frame(OP_TEXT, false, "héllo ".as_bytes());
    wire.extend(frame(OP_PING, true, b"in between"));
    wire.extend(frame(OP_CONT, false, "wö".as_bytes()));
    wire.extend(frame(OP_CONT, true, "rld".as_bytes()));
    s.write_all(&wire).unwrap();

    let pong = must_read_frame(&mut s, "pong");
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (OP_PONG, &b"in between"[..])
    );
    let echo = must_read_frame(&mut s, "echo");
    assert_eq!(
        echo,
        RawFrame {
            fin: true,
            rsv: 0,
            opcode: OP_TEXT,
            masked: false,
            payload: "héllo wörld".as_bytes().to_vec(),
        },
        "the reassembled message must come back as one unmasked final text frame"
    );
    s.write_all(&close_frame(1000, "")).unwrap();
    expect_close(&mut s, 1000);
}

#[test]
fn ping_gets_pong_with_same_payload() {
    let Some(gw) = Gateway::start("") else { return };
    let mut ws = ws_connect(&gw);
    for payload in [
        Vec::new(),
        b"ping-payload".to_vec(),
        (0..125u8).collect::<Vec<u8>>(), // the largest control payload
    ] {
        ws.send(Message::Ping(payload.clone().into())).unwrap();
        match ws.read().unwrap() {
            Message::Pong(got) => assert_eq!(got.as_ref(), payload.as_slice()),
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    ws_close(ws);
}

#[test]
fn close_1000_is_echoed_and_tcp_closed() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = raw_ws(gw.addr);
    s.write_all(&close_frame(1000, "bye")).unwrap();
    expect_close(&mut s, 1000);
}

#[test]
fn close_4001_is_echoed_and_tcp_closed() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = raw_ws(gw.addr);
    s.write_all(&close_frame(4001, "application code")).unwrap();
    expect_close(&mut s, 4001);
}

#[test]
fn close_without_code_gets_empty_close() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = raw_ws(gw.addr);
    s.write_all(&frame(OP_CLOSE, true, b"")).unwrap();
    let reply = must_read_frame(&mut s, "close reply");
    assert_eq!(reply.opcode, OP_CLOSE, "{reply:?}");
    assert!(
        reply.payload.is_empty(),
        "an empty close must get an empty close (no 1005 on the wire), got {reply:?}"
    );
    expect_eof(&mut s);
}

#[test]
fn tungstenite_close_handshake_with_code() {
    let Some(gw) = Gateway::start("") else { return };
    let mut ws = ws_connect(&gw);
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "done".into(),
    }))
    .unwrap();
    match ws.read().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Library(4001)),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
}

#[test]
fn frame_pipelined_behind_handshake_is_echoed() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = tcp(gw.addr);
    let mut wire = upgrade_request("/echo", "").into_bytes();
    wire.extend(frame(OP_TEXT, true, b"right behind the request"));
    s.write_all(&wire).unwrap();
    let head = read_http_head(&mut s).unwrap();
    assert_eq!(head.status, 101, "{head:?}");
    let echo = must_read_frame(&mut s, "echo");
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (OP_TEXT, &b"right behind the request"[..])
    );
}

#[test]
fn many_frames_in_one_write_are_echoed_in_order() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = raw_ws(gw.addr);
    let messages: Vec<Vec<u8>> = (0..200usize)
        .map(|i| vec![(i % 256) as u8; (i * 97) % 3000])
        .collect();
    let wire: Vec<u8> = messages
        .iter()
        .flat_map(|m| frame(OP_BINARY, true, m))
        .collect();
    s.write_all(&wire).unwrap();
    for (i, m) in messages.iter().enumerate() {
        let echo = must_read_frame(&mut s, &format!("echo {i}"));
        assert_eq!(echo.opcode, OP_BINARY);
        assert!(echo.fin && !echo.masked);
        assert_eq!(echo.payload.len(), m.len(), "message {i}");
        assert_eq!(&echo.payload, m, "message {i}");
    }
    s.write_all(&close_frame(1000, "")).unwrap();
    expect_close(&mut s, 1000);
}

#[test]
fn echo_path_accepts_a_query_string() {
    let Some(gw) = Gateway::start("") else { return };
    let (mut ws, response) = try_ws_connect(gw.addr, gw.url("/echo?room=1&x=y"), None)
        .expect("upgrade with a query string");
    assert_eq!(response.status(), 101);
    assert_echo(&mut ws, Message::text("q"));
    ws_close(ws);
}

#[test]
fn custom_echo_path_is_used() {
    let Some(gw) = Gateway::start("[websocket]\necho_path = \"/v1/stream\"\n") else {
        return;
    };
    let (mut ws, _) = try_ws_connect(gw.addr, gw.url("/v1/stream"), None)
        .expect("upgrade on the configured echo_path");
    assert_echo(&mut ws, Message::text("custom path"));
    ws_close(ws);
    // The default path is no longer a route.
    assert_rejected(gw.addr, upgrade_request("/echo", "").as_bytes(), 404);
}

/// A frame arriving one byte per TCP segment is reassembled across reads.
#[test]
fn frame_trickled_byte_by_byte_is_echoed() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = raw_ws(gw.addr);
    let payload: Vec<u8> = (0..300u16).map(|i| (i % 251) as u8).collect();
    let mut wire = frame(OP_BINARY, true, &payload);
    // A ping straddling reads as well.
    wire.extend(frame(OP_PING, true, b"trickled ping"));
    for byte in &wire {
        s.write_all(std::slice::from_ref(byte)).unwrap();
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    let echo = must_read_frame(&mut s, "echo");
    assert_eq!((echo.opcode, echo.payload), (OP_BINARY, payload));
    let pong = must_read_frame(&mut s, "pong");
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (OP_PONG, &b"trickled ping"[..])
    );
}

#[test]
fn unsolicited_pong_is_ignored() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = raw_ws(gw.addr);
    let mut wire = frame(OP_PONG, true, b"unsolicited");
    wire.extend(frame(OP_TEXT, true, b"after the pong"));
    s.write_all(&wire).unwrap();
    let first = must_read_frame(&mut s, "echo");
    assert_eq!(
        (first.opcode, first.payload.as_slice()),
        (OP_TEXT, &b"after the pong"[..]),
        "a pong must not be answered"
    );
}

/// Nothing after the client's close frame is processed: the message sent
/// behind it in the same write is not echoed.
#[test]
fn data_after_close_is_ignored() {
    let Some(gw) = Gateway::start("") else { return };
    let mut s = raw_ws(gw.addr);
    let mut wire = frame(OP_TEXT, true, b"before");
    wire.extend(close_frame(1000, "bye"));
    wire.extend(frame(OP_TEXT, true, b"after the close"));
    s.write_all(&wire).unwrap();
    let echo = must_read_frame(&mut s, "echo");
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (OP_TEXT, &b"before"[..])
    );
    expect_close(&mut s, 1000);
}
