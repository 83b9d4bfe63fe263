use super::*;

/// Values decoded from `pieces` fed one by one, and the error if any.
fn decode(pieces: &[&[u8]], limits: Limits) -> (Vec<Value>, Option<RespError>) {
    let mut d = Decoder::new(limits);
    let mut values = Vec::new();
    for p in pieces {
        d.feed(p);
        loop {
            match d.next() {
                Ok(Some(v)) => values.push(v),
                Ok(None) => break,
                Err(e) => return (values, Some(e)),
            }
        }
    }
    (values, None)
}

fn decode_whole(wire: &[u8]) -> (Vec<Value>, Option<RespError>) {
    decode(&[wire], Limits::default())
}

/// One complete value from `wire`, which must hold exactly that.
fn one(wire: &[u8]) -> Value {
    let (mut values, err) = decode_whole(wire);
    assert_eq!(err, None, "{:?}", String::from_utf8_lossy(wire));
    assert_eq!(values.len(), 1, "{:?}", String::from_utf8_lossy(wire));
    values.pop().unwrap()
}

fn err(wire: &[u8]) -> RespError {
    err_with(wire, Limits::default())
}

fn err_with(wire: &[u8], limits: Limits) -> RespError {
    decode(&[wire], limits)
        .1
        .unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(wire)))
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

fn encoded(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

#[test]
fn commands_are_arrays_of_bulk_strings() {
    let mut out = Vec::new();
    command(&mut out, &[b"SUBSCRIBE", b"news", b"a b"]);
    assert_eq!(
        out,
        b"*3\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n$3\r\na b\r\n".to_vec()
    );
    // Binary-safe and appending.
    command(&mut out, &[b"PUBLISH", b"\r\n", b"\0\xff"]);
    assert!(out.ends_with(b"*3\r\n$7\r\nPUBLISH\r\n$2\r\n\r\n\r\n$2\r\n\0\xff\r\n"));
    let mut empty = Vec::new();
    command(&mut empty, &[b"PING", b""]);
    assert_eq!(empty, b"*2\r\n$4\r\nPING\r\n$0\r\n\r\n");
    let mut none = Vec::new();
    command(&mut none, &[]);
    assert_eq!(none, b"*0\r\n");
    // A command is an array of bulk strings to the decoder too.
    let long = vec![b'x'; 12345];
    let mut out = Vec::new();
    command(&mut out, &[b"SPUBLISH", b"ch", &long]);
    assert_eq!(
        one(&out),
        Value::Array(vec![bulk("SPUBLISH"), bulk("ch"), Value::Bulk(long)])
    );
}

/// Every type, with the wire form Redis uses.
#[allow(clippy::approx_constant)] // 3.141 is what Redis sends, not PI
fn samples() -> Vec<(&'static [u8], Value)> {
    vec![
        (b"+OK\r\n", Value::Simple(b"OK".to_vec())),
        (b"+\r\n", Value::Simple(Vec::new())),
        (
            b"-ERR unknown command\r\n",
            Value::Error(b"ERR unknown command".to_vec()),
        ),
        (b":0\r\n", Value::Integer(0)),
        (b":-42\r\n", Value::Integer(-42)),
        (b":+7\r\n", Value::Integer(7)),
        (b":9223372036854775807\r\n", Value::Integer(i64::MAX)),
        (b":-9223372036854775808\r\n", Value::Integer(i64::MIN)),
        (b"$5\r\nhello\r\n", bulk("hello")),
        (b"$0\r\n\r\n", bulk("")),
        (b"$4\r\na\r\nb\r\n", bulk("a\r\nb")),
        (b"$-1\r\n", Value::NullBulk),
        (b"*-1\r\n", Value::NullArray),
        (b"*0\r\n", Value::Array(Vec::new())),
        (
            b"*3\r\n:1\r\n:2\r\n*2\r\n:3\r\n$1\r\nx\r\n",
            Value::Array(vec![
                Value::Integer(1),
                Value::Integer(2),
                Value::Array(vec![Value::Integer(3), bulk("x")]),
            ]),
        ),
        (
            b"*2\r\n$-1\r\n*-1\r\n",
            Value::Array(vec![Value::NullBulk, Value::NullArray]),
        ),
        (b"_\r\n", Value::Null),
        (b"#t\r\n", Value::Boolean(true)),
        (b"#f\r\n", Value::Boolean(false)),
        (b",3.141\r\n", Value::Double(3.141)),
        (b",-1.5e-3\r\n", Value::Double(-0.0015)),
        (b",10\r\n", Value::Double(10.0)),
        (b",inf\r\n", Value::Double(f64::INFINITY)),
        (b",-inf\r\n", Value::Double(f64::NEG_INFINITY)),
        (b",nan\r\n", Value::Double(f64::NAN)),
        (b",-nan\r\n", Value::Double(f64::NAN)),
        (
            b"(1234567999999999999999999999999999999\r\n",
            Value::BigNumber("1234567999999999999999999999999999999".into()),
        ),
        (b"(-5\r\n", Value::BigNumber("-5".into())),
        (
            b"!21\r\nSYNTAX invalid syntax\r\n",
            Value::BulkError(b"SYNTAX invalid syntax".to_vec()),
        ),
        (
            b"=29\r\ntxt:This is a verbatim\nstring\r\n",
            Value::Verbatim {
                format: *b"txt",
                text: b"This is a verbatim\nstring".to_vec(),
            },
        ),
        (
            b"=4\r\nmkd:\r\n",
            Value::Verbatim {
                format: *b"mkd",
                text: Vec::new(),
            },
        ),
        (
            b"%3\r\n:0\r\n#f\r\n:1\r\n#t\r\n:2\r\n#f\r\n",
            Value::Map(vec![
                (Value::Integer(0), Value::Boolean(false)),
                (Value::Integer(1), Value::Boolean(true)),
                (Value::Integer(2), Value::Boolean(false)),
            ]),
        ),
        (b"%0\r\n", Value::Map(Vec::new())),
        (
            b"~3\r\n:0\r\n:1\r\n:2\r\n",
            Value::Set(vec![
                Value::Integer(0),
                Value::Integer(1),
                Value::Integer(2),
            ]),
        ),
        (b"~0\r\n", Value::Set(Vec::new())),
        (
            b">3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$2\r\np3\r\n",
            Value::Push(vec![bulk("message"), bulk("ch1"), bulk("p3")]),
        ),
        (b">0\r\n", Value::Push(Vec::new())),
        // An attribute before a value is dropped.
        (
            b"|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n$39\r\nSome real reply following the attribute\r\n",
            bulk("Some real reply following the attribute"),
        ),
    ]
}

#[test]
fn every_type_decodes() {
    for (wire, value) in samples() {
        assert_eq!(one(wire), value, "{:?}", String::from_utf8_lossy(wire));
    }
}

#[test]
fn every_split_point_decodes_identically() {
    let mut wire = Vec::new();
    let mut want = Vec::new();
    for (w, v) in samples() {
        wire.extend_from_slice(w);
        want.push(v);
    }
    assert_eq!(decode_whole(&wire), (want.clone(), None));
    for cut in 0..=wire.len() {
        let got = decode(&[&wire[..cut], &wire[cut..]], Limits::default());
        assert_eq!(got, (want.clone(), None), "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode(&bytes, Limits::default()), (want.clone(), None));
    // Two cuts, over a smaller stretch with every kind of boundary.
    let small = b"*2\r\n|1\r\n+a\r\n:1\r\n$3\r\nxyz\r\n=5\r\ntxt:q\r\n%1\r\n,1.5\r\n~1\r\n_\r\n";
    let want_small = decode_whole(small);
    assert_eq!(want_small.0.len(), 2);
    for i in 0..=small.len() {
        for j in i..=small.len() {
            let got = decode(&[&small[..i], &small[i..j], &small[j..]], Limits::default());
            assert_eq!(got, want_small, "cuts {i} {j}");
        }
    }
}

#[test]
fn attributes_are_stripped_everywhere() {
    // Inside an array: not an element of it.
    assert_eq!(
        one(b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3\r\n:2\r\n"),
        Value::Array(vec![Value::Integer(1), Value::Integer(2)])
    );
    // Before a map key and a map value, nested, empty, and in a row.
    assert_eq!(
        one(b"%1\r\n|0\r\n+k\r\n|1\r\n|1\r\n:1\r\n:1\r\n:2\r\n:3\r\n+v\r\n"),
        Value::Map(vec![(
            Value::Simple(b"k".to_vec()),
            Value::Simple(b"v".to_vec())
        )])
    );
    assert_eq!(one(b"|0\r\n|0\r\n_\r\n"), Value::Null);
    // An attribute alone is not a value: wait for the one it describes.
    let mut d = Decoder::default();
    d.feed(b"|1\r\n+a\r\n+b\r\n");
    assert_eq!(d.next(), Ok(None));
    d.feed(b"#t\r\n");
    assert_eq!(d.next(), Ok(Some(Value::Boolean(true))));
    assert_eq!(d.next(), Ok(None));
}

#[test]
fn values_round_trip() {
    let mut values: Vec<Value> = samples().into_iter().map(|(_, v)| v).collect();
    for d in [
        0.0,
        -0.0,
        1e300,
        -1e-300,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        0.1 + 0.2,
        123456789.125,
        1e16,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ] {
        values.push(Value::Double(d));
    }
    values.push(Value::Integer(i64::MIN));
    values.push(Value::Push(vec![
        Value::Map(vec![(Value::Set(vec![Value::Null]), Value::NullBulk)]),
        Value::BulkError(b"\r\n\0".to_vec()),
        Value::Bulk((0..=255).collect()),
    ]));
    let mut wire = Vec::new();
    for v in &values {
        let one_wire = encoded(v);
        assert_eq!(
            one(&one_wire),
            *v,
            "{:?}",
            String::from_utf8_lossy(&one_wire)
        );
        wire.extend_from_slice(&one_wire);
    }
    // The encoder writes what Redis writes.
    for (w, v) in samples().into_iter().take(12) {
        if !matches!(&v, Value::Integer(7)) {
            assert_eq!(encoded(&v), w, "{v:?}");
        }
    }
    assert_eq!(encoded(&Value::Double(f64::NAN)), b",nan\r\n");
    assert_eq!(encoded(&Value::Double(-f64::INFINITY)), b",-inf\r\n");
    assert_eq!(encoded(&Value::Double(2.5)), b",2.5\r\n");
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode(&bytes, Limits::default()), (values, None));
}

#[test]
fn equality_is_by_bits_for_doubles() {
    assert_eq!(Value::Double(f64::NAN), Value::Double(f64::NAN));
    assert_ne!(Value::Double(0.0), Value::Double(-0.0));
    assert_ne!(Value::NullBulk, Value::Null);
    assert_ne!(Value::Array(vec![]), Value::Set(vec![]));
    assert_ne!(bulk("a"), Value::Simple(b"a".to_vec()));
}

#[test]
fn value_helpers() {
    assert!(Value::NullBulk.is_null() && Value::NullArray.is_null() && Value::Null.is_null());
    assert!(!bulk("").is_null());
    assert_eq!(
        Value::Error(b"ERR x".to_vec()).error_text(),
        Some(&b"ERR x"[..])
    );
    assert_eq!(
        Value::BulkError(b"E".to_vec()).error_text(),
        Some(&b"E"[..])
    );
    assert_eq!(bulk("x").error_text(), None);
    assert_eq!(bulk("x").as_bytes(), Some(&b"x"[..]));
    assert_eq!(Value::Simple(b"OK".to_vec()).as_bytes(), Some(&b"OK"[..]));
    assert_eq!(
        Value::Verbatim {
            format: *b"txt",
            text: b"t".to_vec()
        }
        .as_bytes(),
        Some(&b"t"[..])
    );
    assert_eq!(Value::Integer(1).as_bytes(), None);
    assert_eq!(Value::Integer(-3).as_integer(), Some(-3));
    assert_eq!(bulk("3").as_integer(), None);
}

#[test]
fn malformed_input_is_refused_precisely() {
    use RespError::Malformed as M;
    let cases: &[(&[u8], RespError)] = &[
        (b"x\r\n", M("unknown type byte")),
        (b"GET / HTTP/1.1\r\n", M("unknown type byte")),
        (b";4\r\n", M("unknown type byte")),
        (b"+OK\n", M("LF without CR")),
        (b"+O\rK\r\n", M("CR without LF")),
        (b":12a\r\n", M("invalid integer")),
        (b":\r\n", M("invalid integer")),
        (b":-\r\n", M("invalid integer")),
        (b":9223372036854775808\r\n", M("invalid integer")),
        (b": 1\r\n", M("invalid integer")),
        (b"_x\r\n", M("null with a payload")),
        (b"#x\r\n", M("boolean not t or f")),
        (b"#\r\n", M("boolean not t or f")),
        (b",\r\n", M("invalid double")),
        (b",1.2.3\r\n", M("invalid double")),
        (b",\xff\r\n", M("invalid double")),
        (b"(\r\n", M("invalid big number")),
        (b"(-\r\n", M("invalid big number")),
        (b"(12x\r\n", M("invalid big number")),
        (b"$-2\r\n", M("negative length")),
        (b"!-1\r\n", M("negative length")),
        (b"=-1\r\n", M("negative length")),
        (b"%-1\r\n", M("negative length")),
        (b"~-1\r\n", M("negative length")),
        (b">-1\r\n", M("negative length")),
        (b"|-1\r\n", M("negative length")),
        (b"*-5\r\n", M("negative length")),
        (b"$\r\n", M("invalid length")),
        (b"$+1\r\n", M("invalid length")),
        (b"$1x\r\n", M("invalid length")),
        (b"*12345678901234567890\r\n", M("invalid length")),
        (b"$?\r\n", M("streamed RESP3 types are not supported")),
        (b"*?\r\n", M("streamed RESP3 types are not supported")),
        (b"=3\r\ntxt\r\n", M("verbatim string without format")),
        (b"=5\r\ntxt-x\r\n", M("verbatim string without format")),
        (b"$3\r\nabcd\r\n", M("bulk data not followed by CRLF")),
        (b"$3\r\nab\r\n\r\n", M("bulk data not followed by CRLF")),
        (b"!1\r\nab\r\n", M("bulk data not followed by CRLF")),
        (
            b"*1\r\n*1\r\n$1\r\nabc",
            M("bulk data not followed by CRLF"),
        ),
    ];
    for (wire, want) in cases {
        assert_eq!(err(wire), *want, "{:?}", String::from_utf8_lossy(wire));
        // The same error at every split.
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
    // Header lines are short: a long one is refused after 64 bytes even
    // before its end arrives.
    let long = format!(":{}", "1".repeat(65));
    assert_eq!(err(long.as_bytes()), M("header line too long"));
    let ok = format!("*1\r\n,{}\r\n", "1".repeat(64));
    assert!(matches!(one(ok.as_bytes()), Value::Array(_)));
    // Values before the error are still delivered.
    assert_eq!(
        decode_whole(b"+a\r\n:1\r\n?"),
        (
            vec![Value::Simple(b"a".to_vec()), Value::Integer(1)],
            Some(M("unknown type byte"))
        )
    );
}

#[test]
fn errors_are_final() {
    let mut d = Decoder::default();
    d.feed(b"+OK\r\n$2\r\nabc\r\n+OK\r\n");
    assert_eq!(d.next(), Ok(Some(Value::Simple(b"OK".to_vec()))));
    let e = RespError::Malformed("bulk data not followed by CRLF");
    assert_eq!(d.next(), Err(e.clone()));
    assert!(d.is_failed());
    d.feed(b"+OK\r\n");
    assert_eq!(d.next(), Err(e.clone()));
    assert_eq!(d.buffered(), 0);
    assert_eq!(
        e.to_string(),
        "malformed RESP (bulk data not followed by CRLF)"
    );
    assert_eq!(
        RespError::TooLarge("x").to_string(),
        "RESP value too large (x)"
    );
    assert_eq!(
        RespError::TooDeep(3).to_string(),
        "RESP aggregates nested deeper than 3"
    );
}

const SMALL: Limits = Limits {
    max_bulk_bytes: 8,
    max_elements: 6,
    max_depth: 3,
};

#[test]
fn bulk_and_line_limits() {
    let (v, e) = decode(&[b"$8\r\n12345678\r\n+12345678\r\n-12345678\r\n(12345678\r\n!8\r\n12345678\r\n=8\r\ntxt:1234\r\n"], SMALL);
    assert_eq!((v.len(), e), (6, None));
    let big = RespError::TooLarge("bulk string over max_bulk_bytes");
    assert_eq!(err_with(b"$9\r\n", SMALL), big);
    assert_eq!(err_with(b"!9\r\n", SMALL), big);
    assert_eq!(err_with(b"=9\r\n", SMALL), big);
    // Refused from the header, before any data is held.
    assert_eq!(err_with(b"$99999999999\r\n", Limits::default()), big);
    let line = RespError::TooLarge("line over max_bulk_bytes");
    // Nine bytes without CR: refused before the line ends.
    assert_eq!(err_with(b"+123456789", SMALL), line);
    assert_eq!(err_with(b"-123456789\r\n", SMALL), line);
    assert_eq!(err_with(b"(123456789\r\n", SMALL), line);
    assert_eq!(decode(&[b"+12345678"], SMALL), (vec![], None));
    assert_eq!(decode(&[b"+12345678\r"], SMALL), (vec![], None));
}

#[test]
fn element_limit_counts_the_whole_value() {
    let many = RespError::TooLarge("aggregate over max_elements");
    assert!(
        decode(&[b"*6\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n"], SMALL)
            .1
            .is_none()
    );
    assert_eq!(err_with(b"*7\r\n", SMALL), many);
    assert_eq!(err_with(b"%4\r\n", SMALL), many);
    assert_eq!(err_with(b"~7\r\n", SMALL), many);
    assert_eq!(err_with(b">7\r\n", SMALL), many);
    assert_eq!(err_with(b"|4\r\n", SMALL), many);
    assert_eq!(
        err_with(b"*9223372036854775807\r\n", Limits::default()),
        many
    );
    assert_eq!(
        err_with(b"%9223372036854775807\r\n", Limits::default()),
        many
    );
    // Nested announcements add up: 2 + 2 + 3 > 6.
    assert_eq!(err_with(b"*2\r\n*2\r\n:1\r\n:1\r\n*3\r\n", SMALL), many);
    // Attributes count as well: 2 + 4 > 6.
    assert_eq!(err_with(b"|1\r\n+a\r\n+b\r\n*5\r\n", SMALL), many);
    // The count starts afresh with each top-level value.
    let (v, e) = decode(
        &[b"%3\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n~6\r\n_\r\n_\r\n_\r\n_\r\n_\r\n_\r\n"],
        SMALL,
    );
    assert_eq!((v.len(), e), (2, None));
}

#[test]
fn depth_limit() {
    let (v, e) = decode(&[b"*1\r\n*1\r\n*1\r\n:1\r\n"], SMALL);
    assert_eq!((v.len(), e), (1, None));
    assert_eq!(
        err_with(b"*1\r\n*1\r\n*1\r\n*0\r\n", SMALL),
        RespError::TooDeep(3)
    );
    assert_eq!(
        err_with(b"*1\r\n%1\r\n|1\r\n*0\r\n", SMALL),
        RespError::TooDeep(3)
    );
    // Deep nesting with a generous depth limit does not recurse.
    let depth = 10_000;
    let mut wire = b"*1\r\n".repeat(depth);
    wire.extend_from_slice(b":1\r\n");
    let limits = Limits {
        max_depth: depth,
        max_elements: depth,
        ..Limits::default()
    };
    let (mut v, e) = decode(&[&wire], limits);
    assert_eq!((v.len(), e), (1, None));
    // Drop without recursion overflow is the caller's concern; unwind it.
    let mut cur = v.pop().unwrap();
    while let Value::Array(mut items) = cur {
        cur = items.pop().unwrap_or(Value::Null);
    }
    assert_eq!(cur, Value::Integer(1));
}

#[test]
fn big_bulk_strings_fed_byte_by_byte_stay_linear() {
    // A megabyte one byte at a time, asking for a value after every byte:
    // quadratic work would take minutes.
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let mut wire = Vec::new();
    command(&mut wire, &[b"x", &data]);
    let mut d = Decoder::default();
    let mut got = None;
    for b in &wire {
        d.feed(std::slice::from_ref(b));
        if let Some(v) = d.next().unwrap() {
            got = Some(v);
        }
    }
    assert_eq!(got, Some(Value::Array(vec![bulk("x"), Value::Bulk(data)])));
    assert_eq!(d.buffered(), 0);
    // The same for a long status line (scanned once, not once per read).
    let limits = Limits {
        max_bulk_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut d = Decoder::new(limits);
    let mut line = vec![b'+'];
    line.extend(std::iter::repeat_n(b'a', 1 << 19));
    line.extend_from_slice(b"\r\n");
    let mut got = None;
    for b in &line {
        d.feed(std::slice::from_ref(b));
        if let Some(v) = d.next().unwrap() {
            got = Some(v);
        }
    }
    assert_eq!(got, Some(Value::Simple(vec![b'a'; 1 << 19])));
}

#[test]
fn buffer_bookkeeping() {
    let mut d = Decoder::default();
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.next(), Ok(None));
    d.feed(b"+a\r\n+b");
    assert_eq!(d.buffered(), 6);
    assert_eq!(d.next(), Ok(Some(Value::Simple(b"a".to_vec()))));
    assert_eq!(d.buffered(), 2);
    assert_eq!(d.next(), Ok(None));
    d.feed(b"\r\n");
    assert_eq!(d.next(), Ok(Some(Value::Simple(b"b".to_vec()))));
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.limits(), Limits::default());
    assert!(!d.is_failed());
    assert!(format!("{d:?}").contains("buffered: 0"));
}

fn push(items: &[&[u8]]) -> Value {
    Value::Push(items.iter().map(|s| Value::Bulk(s.to_vec())).collect())
}

#[test]
fn classify_resp2_pubsub_wire() {
    // Captured from redis-server 7.0.15 (RESP2).
    let wire: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$3\r\nch1\r\n:1\r\n\
        *2\r\n$4\r\npong\r\n$0\r\n\r\n\
        *2\r\n$4\r\npong\r\n$5\r\nhello\r\n\
        *3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$8\r\nhi there\r\n\
        *3\r\n$10\r\nssubscribe\r\n$3\r\nsch\r\n:1\r\n\
        *3\r\n$8\r\nsmessage\r\n$3\r\nsch\r\n$5\r\nshard\r\n\
        *3\r\n$12\r\nsunsubscribe\r\n$3\r\nsch\r\n:0\r\n\
        *3\r\n$11\r\nunsubscribe\r\n$3\r\nch1\r\n:0\r\n\
        *3\r\n$12\r\nsunsubscribe\r\n$-1\r\n:0\r\n\
        *3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:1\r\n\
        *3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n\
        *4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npq\r\n$1\r\nx\r\n\
        -ERR Can't execute 'get'\r\n\
        +PONG\r\n";
    let (values, e) = decode_whole(wire);
    assert_eq!(e, None);
    let events: Vec<PubSubEvent> = values.into_iter().map(classify).collect();
    use PubSubEvent as E;
    assert_eq!(
        events,
        vec![
            E::Subscribed {
                kind: SubKind::Channel,
                channel: b"ch1".to_vec(),
                count: 1
            },
            E::Pong(Vec::new()),
            E::Pong(b"hello".to_vec()),
            E::Message {
                channel: b"ch1".to_vec(),
                payload: b"hi there".to_vec()
            },
            E::Subscribed {
                kind: SubKind::Shard,
                channel: b"sch".to_vec(),
                count: 1
            },
            E::Message {
                channel: b"sch".to_vec(),
                payload: b"shard".to_vec()
            },
            E::Unsubscribed {
                kind: SubKind::Shard,
                channel: Some(b"sch".to_vec()),
                count: 0
            },
            E::Unsubscribed {
                kind: SubKind::Channel,
                channel: Some(b"ch1".to_vec()),
                count: 0
            },
            E::Unsubscribed {
                kind: SubKind::Shard,
                channel: None,
                count: 0
            },
            E::Subscribed {
                kind: SubKind::Pattern,
                channel: b"p*".to_vec(),
                count: 1
            },
            E::Unsubscribed {
                kind: SubKind::Pattern,
                channel: Some(b"p*".to_vec()),
                count: 0
            },
            E::Other(Value::Array(vec![
                bulk("pmessage"),
                bulk("p*"),
                bulk("pq"),
                bulk("x")
            ])),
            E::Other(Value::Error(b"ERR Can't execute 'get'".to_vec())),
            E::Pong(Vec::new()),
        ]
    );
}

#[test]
fn classify_resp3_pushes() {
    use PubSubEvent as E;
    // Captured from redis-server 7.0.15 after HELLO 3.
    let wire: &[u8] = b">3\r\n$9\r\nsubscribe\r\n$3\r\nch1\r\n:1\r\n\
        >3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$2\r\np3\r\n\
        >3\r\n$8\r\nsmessage\r\n$3\r\nsch\r\n$2\r\ns3\r\n\
        >3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n\
        >2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n";
    let events: Vec<E> = decode_whole(wire).0.into_iter().map(classify).collect();
    assert_eq!(
        events,
        vec![
            E::Subscribed {
                kind: SubKind::Channel,
                channel: b"ch1".to_vec(),
                count: 1
            },
            E::Message {
                channel: b"ch1".to_vec(),
                payload: b"p3".to_vec()
            },
            E::Message {
                channel: b"sch".to_vec(),
                payload: b"s3".to_vec()
            },
            E::Unsubscribed {
                kind: SubKind::Channel,
                channel: None,
                count: 0
            },
            E::Other(Value::Push(vec![
                bulk("invalidate"),
                Value::Array(vec![bulk("k")])
            ])),
        ]
    );
    // Names are matched without regard to case; binary channels are kept.
    assert_eq!(
        classify(push(&[b"MESSAGE", b"\0\r\n", b"\xff"])),
        E::Message {
            channel: b"\0\r\n".to_vec(),
            payload: b"\xff".to_vec()
        }
    );
    assert_eq!(
        classify(Value::Simple(b"pong".to_vec())),
        E::Pong(Vec::new())
    );
}

#[test]
fn near_misses_stay_other() {
    let others = [
        push(&[b"message", b"ch"]),
        push(&[b"message", b"ch", b"p", b"extra"]),
        push(&[b"subscribe", b"ch", b"1"]),
        push(&[b"pong"]),
        push(&[b"pong", b"a", b"b"]),
        push(&[b"hello"]),
        Value::Push(vec![]),
        Value::Array(vec![Value::Integer(1)]),
        Value::Array(vec![bulk("subscribe"), bulk("ch"), Value::Integer(-1)]),
        Value::Array(vec![bulk("subscribe"), Value::NullBulk, Value::Integer(0)]),
        Value::Array(vec![bulk("message"), Value::Integer(1), bulk("p")]),
        Value::Array(vec![
            bulk("unsubscribe"),
            Value::Integer(1),
            Value::Integer(0),
        ]),
        Value::Set(vec![bulk("message"), bulk("c"), bulk("p")]),
        Value::Simple(b"OK".to_vec()),
        Value::NullArray,
        bulk("pong"),
    ];
    for v in others {
        assert_eq!(classify(v.clone()), PubSubEvent::Other(v));
    }
}
