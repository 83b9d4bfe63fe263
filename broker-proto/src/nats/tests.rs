use super::*;

fn decode(pieces: &[&[u8]], limits: Limits) -> (Vec<ServerOp>, Option<NatsError>) {
    let mut d = Decoder::new(limits);
    let mut ops = Vec::new();
    for p in pieces {
        d.feed(p);
        loop {
            match d.next() {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => break,
                Err(e) => return (ops, Some(e)),
            }
        }
    }
    (ops, None)
}

fn decode_whole(wire: &[u8]) -> (Vec<ServerOp>, Option<NatsError>) {
    decode(&[wire], Limits::default())
}

fn err_with(wire: &[u8], limits: Limits) -> NatsError {
    decode(&[wire], limits)
        .1
        .unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(wire)))
}

fn msg(subject: &str, sid: u64, reply: Option<&str>, payload: &[u8]) -> ServerOp {
    ServerOp::Msg {
        subject: subject.into(),
        sid,
        reply: reply.map(Into::into),
        payload: payload.to_vec(),
    }
}

fn enc(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn client_operations_are_exact() {
    assert_eq!(
        enc(|o| connect(o, r#"{"verbose":false,"pedantic":false}"#).unwrap()),
        "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n"
    );
    assert_eq!(enc(|o| connect(o, " {} ").unwrap()), "CONNECT {}\r\n");
    assert_eq!(enc(|o| sub(o, "gw.news", 7).unwrap()), "SUB gw.news 7\r\n");
    assert_eq!(
        enc(|o| sub(o, "gw.*.x.>", 0).unwrap()),
        "SUB gw.*.x.> 0\r\n"
    );
    assert_eq!(enc(|o| unsub(o, 7, None)), "UNSUB 7\r\n");
    assert_eq!(
        enc(|o| unsub(o, u64::MAX, Some(3))),
        "UNSUB 18446744073709551615 3\r\n"
    );
    assert_eq!(
        enc(|o| publish(o, "gw.news", b"hello").unwrap()),
        "PUB gw.news 5\r\nhello\r\n"
    );
    assert_eq!(enc(|o| publish(o, "a", b"").unwrap()), "PUB a 0\r\n\r\n");
    assert_eq!(enc(ping), "PING\r\n");
    assert_eq!(enc(pong), "PONG\r\n");
    // Binary payloads go as they are.
    let mut out = Vec::new();
    publish(&mut out, "b", b"\r\n\0\xff").unwrap();
    assert_eq!(out, b"PUB b 4\r\n\r\n\0\xff\r\n");
    // Non-ASCII subjects are fine; `*`/`>` inside a token are literal.
    assert!(publish(&mut out, "caf\u{e9}.a*b.c>", b"").is_ok());
}

#[test]
fn bad_subjects_and_options_are_refused() {
    use EncodeError::InvalidSubject as S;
    let cases: &[(&str, bool, EncodeError)] = &[
        ("", true, S("empty subject")),
        ("a b", true, S("whitespace or control character")),
        ("a\tb", true, S("whitespace or control character")),
        ("a\r\nPUB x 1", false, S("whitespace or control character")),
        ("a\x00", false, S("whitespace or control character")),
        ("a..b", true, S("empty token")),
        (".a", true, S("empty token")),
        ("a.", false, S("empty token")),
        ("a.*", false, S("wildcard in a publish subject")),
        (">", false, S("wildcard in a publish subject")),
        ("a.>.b", true, S("'>' before the last token")),
    ];
    for (subject, wild, want) in cases {
        assert_eq!(
            validate_subject(subject, *wild),
            Err(want.clone()),
            "{subject:?}"
        );
        let mut out = Vec::new();
        if *wild {
            assert_eq!(sub(&mut out, subject, 1), Err(want.clone()));
        } else {
            assert_eq!(publish(&mut out, subject, b"x"), Err(want.clone()));
        }
        assert!(out.is_empty(), "nothing written for {subject:?}");
    }
    assert_eq!(validate_subject("a.*.>", true), Ok(()));
    let mut out = Vec::new();
    assert_eq!(
        connect(&mut out, "{\n}"),
        Err(EncodeError::InvalidConnect("line break in the JSON"))
    );
    assert_eq!(
        connect(&mut out, "verbose"),
        Err(EncodeError::InvalidConnect("not a JSON object"))
    );
    assert!(out.is_empty());
    assert_eq!(
        S("empty token").to_string(),
        "invalid NATS subject (empty token)"
    );
}

/// Server operations as nats-server 2.9 sends them.
fn samples() -> Vec<(&'static [u8], ServerOp)> {
    vec![
        (
            b"INFO {\"server_id\":\"N1\",\"max_payload\":1048576,\"headers\":true} \r\n",
            ServerOp::Info(r#"{"server_id":"N1","max_payload":1048576,"headers":true}"#.into()),
        ),
        (b"+OK\r\n", ServerOp::Ok),
        (b"PING\r\n", ServerOp::Ping),
        (b"PONG\r\n", ServerOp::Pong),
        (
            b"MSG foo.bar 1 rep 5\r\nhello\r\n",
            msg("foo.bar", 1, Some("rep"), b"hello"),
        ),
        (b"MSG x 1 0\r\n\r\n", msg("x", 1, None, b"")),
        (
            b"MSG x 18446744073709551615 4\r\n\r\n\r\n\r\n",
            msg("x", u64::MAX, None, b"\r\n\r\n"),
        ),
        (
            b"HMSG foo.bar 1 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n",
            ServerOp::HMsg {
                subject: "foo.bar".into(),
                sid: 1,
                reply: None,
                headers: b"NATS/1.0\r\nA: b\r\n\r\n".to_vec(),
                payload: b"hello".to_vec(),
            },
        ),
        (
            b"HMSG _INBOX.1 2 r.1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
            ServerOp::HMsg {
                subject: "_INBOX.1".into(),
                sid: 2,
                reply: Some("r.1".into()),
                headers: b"NATS/1.0 503\r\n\r\n".to_vec(),
                payload: Vec::new(),
            },
        ),
        (
            b"-ERR 'Unknown Protocol Operation'\r\n",
            ServerOp::Err("Unknown Protocol Operation".into()),
        ),
        // Names in any case, any run of blanks between arguments.
        (b"ping\r\n", ServerOp::Ping),
        (b"PoNg \r\n", ServerOp::Pong),
        (b"+ok\r\n", ServerOp::Ok),
        (b"msg\ta  7\t 2\r\nhi\r\n", msg("a", 7, None, b"hi")),
        (b"-err plain text\r\n", ServerOp::Err("plain text".into())),
        (b"-ERR\r\n", ServerOp::Err(String::new())),
        (b"info\t{}\r\n", ServerOp::Info("{}".into())),
    ]
}

#[test]
fn every_operation_decodes() {
    for (wire, op) in samples() {
        assert_eq!(
            decode_whole(wire),
            (vec![op], None),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn every_split_point_decodes_identically() {
    let mut wire = Vec::new();
    let mut want = Vec::new();
    for (w, op) in samples() {
        wire.extend_from_slice(w);
        want.push(op);
    }
    for cut in 0..=wire.len() {
        assert_eq!(
            decode(&[&wire[..cut], &wire[cut..]], Limits::default()),
            (want.clone(), None),
            "cut {cut}"
        );
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode(&bytes, Limits::default()), (want, None));
    let small = b"MSG a 1 r 3\r\nabc\r\nPING\r\nHMSG b 2 12 14\r\nNATS/1.0\r\n\r\nxy\r\n";
    let want_small = decode_whole(small);
    assert_eq!(want_small.0.len(), 3);
    for i in 0..=small.len() {
        for j in i..=small.len() {
            let got = decode(&[&small[..i], &small[i..j], &small[j..]], Limits::default());
            assert_eq!(got, want_small, "cuts {i} {j}");
        }
    }
}

#[test]
fn operations_round_trip() {
    let mut ops: Vec<ServerOp> = samples().into_iter().map(|(_, op)| op).collect();
    ops.push(ServerOp::Err("it's 'quoted'".into()));
    ops.push(msg(
        "s",
        0,
        Some("_INBOX.x.y"),
        &(0..=255).collect::<Vec<u8>>(),
    ));
    let mut wire = Vec::new();
    for op in &ops {
        op.encode(&mut wire);
    }
    assert_eq!(decode_whole(&wire), (ops.clone(), None));
    // What a server writes, byte for byte.
    for (w, op) in samples().into_iter().skip(1).take(9) {
        let mut out = Vec::new();
        op.encode(&mut out);
        assert_eq!(out, w, "{op:?}");
    }
}

#[test]
fn malformed_input_is_refused_precisely() {
    use NatsError::Malformed as M;
    let cases: &[(&[u8], NatsError)] = &[
        (b"HTTP/1.1 200 OK\r\n", M("unknown operation")),
        (b"PINGX\r\n", M("unknown operation")),
        (b"PIN\r\n", M("unknown operation")),
        (b"PI\nNG\r\n", M("unknown operation")),
        (b" PING\r\n", M("unknown operation")),
        (b"\r\n", M("unknown operation")),
        (b"+OKAY\r\n", M("unknown operation")),
        (b"-ERROR x\r\n", M("unknown operation")),
        (b"PING\n", M("LF without CR")),
        (b"PING\rX", M("CR without LF")),
        (b"PING x\r\n", M("unexpected arguments")),
        (b"+OK ok\r\n", M("unexpected arguments")),
        (b"PONG 1\r\n", M("unexpected arguments")),
        (b"INFO\r\n", M("INFO without JSON")),
        (b"INFO  \t\r\n", M("INFO without JSON")),
        (b"INFO {\"a\":\"\xff\"}\r\n", M("INFO is not UTF-8")),
        (b"MSG a 1\r\n", M("MSG needs 3 or 4 arguments")),
        (b"MSG a 1 r s 2\r\n", M("MSG needs 3 or 4 arguments")),
        (b"MSG\r\n", M("MSG needs 3 or 4 arguments")),
        (b"HMSG a 1 2\r\n", M("HMSG needs 4 or 5 arguments")),
        (b"HMSG a 1 r s 2 3\r\n", M("HMSG needs 4 or 5 arguments")),
        (
            b"HMSG a 1 r s 2 3 4 5\r\n",
            M("HMSG needs 4 or 5 arguments"),
        ),
        (b"MSG \xff 1 2\r\n", M("subject is not UTF-8")),
        (b"MSG a 1 \xfe 2\r\n", M("reply subject is not UTF-8")),
        (b"MSG a x 2\r\n", M("invalid sid")),
        (b"MSG a -1 2\r\n", M("invalid sid")),
        (b"MSG a 99999999999999999999 2\r\n", M("invalid sid")),
        (b"MSG a 1 2x\r\n", M("invalid size")),
        (b"MSG a 1 -2\r\n", M("invalid size")),
        (b"HMSG a 1 x 3\r\n", M("invalid size")),
        (b"HMSG a 1 4 3\r\n", M("header size over total size")),
        (b"MSG a 1 2\r\nabc\r\n", M("payload not followed by CRLF")),
        (b"MSG a 1 2\r\na\r\n\r\n", M("payload not followed by CRLF")),
        (b"HMSG a 1 0 1\r\nabc", M("payload not followed by CRLF")),
    ];
    for (wire, want) in cases {
        assert_eq!(
            err_with(wire, Limits::default()),
            *want,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
        for cut in 0..=wire.len() {
            let (_, e) = decode(&[&wire[..cut], &wire[cut..]], Limits::default());
            assert_eq!(
                e.as_ref(),
                Some(want),
                "{:?} cut {cut}",
                String::from_utf8_lossy(wire)
            );
        }
    }
    // Garbage is refused as soon as no operation can start that way.
    let mut d = Decoder::default();
    d.feed(b"GET");
    assert_eq!(d.next(), Err(M("unknown operation")));
    let mut d = Decoder::default();
    d.feed(b"HMS");
    assert_eq!(d.next(), Ok(None));
    // Operations before the error are still delivered.
    assert_eq!(
        decode_whole(b"PING\r\n+OK\r\nBAD\r\n"),
        (
            vec![ServerOp::Ping, ServerOp::Ok],
            Some(M("unknown operation"))
        )
    );
}

#[test]
fn limits() {
    let small = Limits {
        max_payload: 4,
        max_control_line: 16,
    };
    let (ops, e) = decode(
        &[b"MSG a 1 4\r\nabcd\r\nHMSG a 1 2 4\r\nxyzw\r\nMSG a.b.c.de 1 0\r\n\r\n"],
        small,
    );
    assert_eq!((ops.len(), e), (3, None));
    let big = NatsError::TooLarge("message over max_payload");
    assert_eq!(err_with(b"MSG a 1 5\r\n", small), big);
    assert_eq!(err_with(b"HMSG a 1 2 5\r\n", small), big);
    assert_eq!(err_with(b"MSG a 1 9999999\r\n", Limits::default()), big);
    let long = NatsError::TooLarge("control line over max_control_line");
    // 17 bytes without CR: refused before the line ends.
    assert_eq!(err_with(b"MSG a.b.c.d.e.f 1", small), long);
    assert_eq!(err_with(b"INFO {\"x\":\"yyyyyy\"}\r\n", small), long);
    assert_eq!(decode(&[b"MSG a.b.c.de 1 0"], small), (vec![], None));
    assert_eq!(decode(&[b"MSG a.b.c.de 1 0\r"], small), (vec![], None));
    // A tiny line limit still lets every operation name be read.
    let tiny = Limits {
        max_payload: 0,
        max_control_line: 0,
    };
    assert_eq!(
        decode(&[b"PING\r\n+OK\r\nPONG  \r\n"], tiny),
        (vec![ServerOp::Ping, ServerOp::Ok, ServerOp::Pong], None)
    );
    assert_eq!(err_with(b"HMSG a 1 0 0\r\n", tiny), long);
    // The payload limit can follow the server's INFO.
    let mut d = Decoder::new(small);
    d.set_max_payload(10);
    assert_eq!(d.limits().max_payload, 10);
    d.feed(b"MSG a 1 10\r\n0123456789\r\n");
    assert_eq!(d.next().unwrap(), Some(msg("a", 1, None, b"0123456789")));
    assert_eq!(
        big.to_string(),
        "NATS operation too large (message over max_payload)"
    );
}

#[test]
fn errors_are_final_and_bookkeeping() {
    let mut d = Decoder::default();
    assert_eq!(d.next(), Ok(None));
    d.feed(b"PING\r\nMSG a 1 3\r\nab");
    assert_eq!(d.buffered(), 19);
    assert_eq!(d.next(), Ok(Some(ServerOp::Ping)));
    assert_eq!(d.next(), Ok(None));
    // The parsed control line is no longer counted.
    assert_eq!(d.buffered(), 2);
    assert!(format!("{d:?}").contains("sid: 1"));
    d.feed(b"cX\r\n");
    let e = NatsError::Malformed("payload not followed by CRLF");
    assert_eq!(d.next(), Err(e.clone()));
    assert!(d.is_failed());
    d.feed(b"PING\r\n");
    assert_eq!(d.next(), Err(e.clone()));
    assert_eq!(d.buffered(), 0);
    assert_eq!(
        e.to_string(),
        "malformed NATS protocol (payload not followed by CRLF)"
    );
}

#[test]
fn big_payloads_fed_byte_by_byte_stay_linear() {
    let payload: Vec<u8> = (0..(1 << 20)).map(|i| (i % 253) as u8).collect();
    let op = msg("big", 1, None, &payload);
    let mut wire = Vec::new();
    op.encode(&mut wire);
    let mut d = Decoder::new(Limits {
        max_payload: 1 << 20,
        max_control_line: 1 << 20,
    });
    let mut got = None;
    for b in &wire {
        d.feed(std::slice::from_ref(b));
        if let Some(op) = d.next().unwrap() {
            got = Some(op);
        }
    }
    assert_eq!(got, Some(op));
    // A long INFO line, scanned once.
    let info = ServerOp::Info(format!("{{\"x\":\"{}\"}}", "y".repeat(1 << 19)));
    let mut wire = Vec::new();
    info.encode(&mut wire);
    let mut got = None;
    for b in &wire {
        d.feed(std::slice::from_ref(b));
        if let Some(op) = d.next().unwrap() {
            got = Some(op);
        }
    }
    assert_eq!(got, Some(info));
}

#[test]
fn channel_tokens_are_valid_and_reversible() {
    let names = [
        "",
        "a",
        "ab",
        "abc",
        "news",
        "chat:room 1",
        "a.b.*.>",
        ">",
        "*",
        "$SYS.x",
        "tab\there\r\n",
        "caf\u{e9} \u{1f600}",
        "_",
        "-",
        "\u{0}",
    ];
    let mut seen = std::collections::HashSet::new();
    for name in names {
        let token = channel_token(name);
        assert!(!token.is_empty());
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // A valid single token, usable to publish to and subscribe on.
        assert_eq!(validate_subject(&token, false), Ok(()), "{name:?}");
        assert!(!token.contains('.'));
        assert_eq!(channel_from_token(&token).as_deref(), Ok(name));
        assert!(seen.insert(token), "{name:?} collides");
    }
    // Known answers (RFC 4648 test vectors, URL-safe alphabet).
    assert_eq!(channel_token("f"), "Zg");
    assert_eq!(channel_token("fo"), "Zm8");
    assert_eq!(channel_token("foo"), "Zm9v");
    assert_eq!(channel_token("foob"), "Zm9vYg");
    assert_eq!(channel_token("fooba"), "Zm9vYmE");
    assert_eq!(channel_token("foobar"), "Zm9vYmFy");
    assert_eq!(channel_token("\u{fb}\u{ff}"), "w7vDvw");
    assert_eq!(channel_token(""), "_");
    // Every 1-3 byte ASCII name round-trips.
    for a in 0u8..128 {
        for b in [0u8, b'.', b'~', 127] {
            let s = String::from_utf8(vec![a, b, a]).unwrap();
            assert_eq!(channel_from_token(&channel_token(&s)), Ok(s.clone()));
            assert_eq!(
                channel_from_token(&channel_token(&s[..2])).as_deref(),
                Ok(&s[..2])
            );
        }
    }
}

#[test]
fn foreign_tokens_are_refused() {
    assert_eq!(channel_from_token(""), Err(TokenError("impossible length")));
    assert_eq!(
        channel_from_token("A"),
        Err(TokenError("impossible length"))
    );
    assert_eq!(
        channel_from_token("Zm9vY"),
        Err(TokenError("impossible length"))
    );
    assert_eq!(
        channel_from_token("Zm9="),
        Err(TokenError("character outside base64url"))
    );
    assert_eq!(
        channel_from_token("a.bc"),
        Err(TokenError("character outside base64url"))
    );
    assert_eq!(
        channel_from_token("Zm+v"),
        Err(TokenError("character outside base64url"))
    );
    // "Zh" and "Zm9" + a changed last char decode to the same bytes as
    // "Zg" / "Zm8" but are not what the encoder writes.
    assert_eq!(
        channel_from_token("Zh"),
        Err(TokenError("non-canonical padding bits"))
    );
    assert_eq!(
        channel_from_token("Zm9"),
        Err(TokenError("non-canonical padding bits"))
    );
    assert_eq!(channel_from_token("_w"), Err(TokenError("not UTF-8")));
    assert_eq!(
        TokenError("not UTF-8").to_string(),
        "not a channel token (not UTF-8)"
    );
}
