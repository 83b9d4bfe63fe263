//! The NATS codec against a real `nats-server` (2.x), over plain blocking
//! sockets: client operations are made by the `nats` encoders (a few raw
//! lines exercise what they do not cover), everything received goes
//! through `nats::Decoder` in awkward read sizes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use broker_proto::nats::{self, ServerOp};
use common::{Server, READ_SIZES};

const CONNECT_VERBOSE: &str = r#"{"verbose":true,"pedantic":true,"headers":true,"no_responders":true,"protocol":1,"lang":"rust","version":"0.1.0","name":"broker-proto-test"}"#;
const CONNECT_QUIET: &str =
    r#"{"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1}"#;

struct Conn {
    stream: TcpStream,
    decoder: nats::Decoder,
    reads: usize,
    /// Server PINGs answered along the way.
    pings: usize,
    info: String,
}

impl Conn {
    /// Connects, reads INFO, sends CONNECT.
    fn new(server: &Server, options: &str) -> Conn {
        let mut c = Conn {
            stream: server.connect(),
            decoder: nats::Decoder::default(),
            reads: 0,
            pings: 0,
            info: String::new(),
        };
        match c.recv() {
            ServerOp::Info(json) => c.info = json,
            other => panic!("expected INFO, got {other:?}"),
        }
        let mut out = Vec::new();
        nats::connect(&mut out, options).unwrap();
        c.write(&out);
        c
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn send(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut out = Vec::new();
        f(&mut out);
        self.write(&out);
    }

    /// The next operation, answering server PINGs on the way (nats-server
    /// sends one unasked soon after CONNECT).
    fn recv(&mut self) -> ServerOp {
        loop {
            let op = self.recv_raw();
            if op == ServerOp::Ping {
                self.pings += 1;
                self.send(nats::pong);
                continue;
            }
            return op;
        }
    }

    fn recv_raw(&mut self) -> ServerOp {
        let mut buf = vec![0u8; 65536];
        loop {
            if let Some(op) = self.decoder.next().expect("valid NATS protocol") {
                return op;
            }
            let size = READ_SIZES[self.reads % READ_SIZES.len()];
            self.reads += 1;
            let n = self
                .stream
                .read(&mut buf[..size])
                .expect("read (timed out?)");
            assert!(n > 0, "server closed the connection");
            self.decoder.feed(&buf[..n]);
        }
    }

    /// PING, then everything received before the PONG.
    fn sync(&mut self) -> Vec<ServerOp> {
        self.send(nats::ping);
        let mut ops = Vec::new();
        loop {
            match self.recv() {
                ServerOp::Pong => return ops,
                op => ops.push(op),
            }
        }
    }
}

fn msg(subject: &str, sid: u64, reply: Option<&str>, payload: &[u8]) -> ServerOp {
    ServerOp::Msg {
        subject: subject.into(),
        sid,
        reply: reply.map(Into::into),
        payload: payload.to_vec(),
    }
}

/// The `max_payload` field of an INFO JSON.
fn max_payload(info: &str) -> usize {
    let at = info.find("\"max_payload\":").expect("max_payload in INFO") + 14;
    info[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn connect_sub_pub_msg() {
    let Some(server) = Server::nats() else {
        return;
    };
    let mut a = Conn::new(&server, CONNECT_VERBOSE);
    assert!(
        a.info.starts_with('{') && a.info.ends_with('}'),
        "{}",
        a.info
    );
    assert!(a.info.contains("\"headers\":true"));
    assert_eq!(max_payload(&a.info), 1 << 20);
    assert_eq!(a.recv(), ServerOp::Ok);
    a.send(|o| nats::sub(o, "gw.news", 1).unwrap());
    assert_eq!(a.recv(), ServerOp::Ok);
    a.send(|o| nats::sub(o, "gw.*", 2).unwrap());
    assert_eq!(a.recv(), ServerOp::Ok);

    // Publishing from the subscriber's own connection (echo is on).
    let payload = b"hello\r\nMSG fake 1 1\r\n\0\xff";
    a.send(|o| nats::publish(o, "gw.news", payload).unwrap());
    assert_eq!(a.recv(), ServerOp::Ok);
    let mut got = vec![a.recv(), a.recv()];
    got.sort_by_key(|op| match op {
        ServerOp::Msg { sid, .. } => *sid,
        _ => u64::MAX,
    });
    assert_eq!(
        got,
        vec![
            msg("gw.news", 1, None, payload),
            msg("gw.news", 2, None, payload)
        ]
    );

    // From a second, quiet connection (no +OK).
    let mut b = Conn::new(&server, CONNECT_QUIET);
    b.send(|o| nats::publish(o, "gw.other", b"").unwrap());
    assert_eq!(b.sync(), vec![]);
    assert_eq!(a.recv(), msg("gw.other", 2, None, b""));

    // PING / PONG.
    a.send(nats::ping);
    assert_eq!(a.recv(), ServerOp::Pong);
}

#[test]
fn unsub_now_and_after_max() {
    let Some(server) = Server::nats() else {
        return;
    };
    let mut a = Conn::new(&server, CONNECT_QUIET);
    let mut b = Conn::new(&server, CONNECT_QUIET);
    a.send(|o| {
        nats::sub(o, "t.once", 1).unwrap();
        nats::sub(o, "t.gone", 2).unwrap();
        nats::sub(o, "t.twice", 3).unwrap();
        nats::unsub(o, 1, Some(1));
        nats::unsub(o, 3, Some(2));
        nats::unsub(o, 2, None);
    });
    assert_eq!(a.sync(), vec![]);
    b.send(|o| {
        for subject in ["t.once", "t.gone", "t.twice"] {
            for i in 0..3u8 {
                nats::publish(o, subject, &[b'0' + i]).unwrap();
            }
        }
    });
    assert_eq!(b.sync(), vec![]);
    assert_eq!(
        a.sync(),
        vec![
            msg("t.once", 1, None, b"0"),
            msg("t.twice", 3, None, b"0"),
            msg("t.twice", 3, None, b"1"),
        ]
    );
}

#[test]
fn headers_replies_and_no_responders() {
    let Some(server) = Server::nats() else {
        return;
    };
    let mut a = Conn::new(&server, CONNECT_QUIET);
    a.send(|o| nats::sub(o, "svc.echo", 9).unwrap());
    assert_eq!(a.sync(), vec![]);
    // The encoders have no reply-to or HPUB: written by hand.
    let headers = b"NATS/1.0\r\nTrace-Id: 42\r\nX: a b\r\n\r\n";
    let mut raw = format!(
        "PUB svc.echo _INBOX.r1 5\r\nhello\r\nHPUB svc.echo {} {}\r\n",
        headers.len(),
        headers.len() + 3
    )
    .into_bytes();
    raw.extend_from_slice(headers);
    raw.extend_from_slice(b"abc\r\n");
    a.write(&raw);
    assert_eq!(
        a.sync(),
        vec![
            msg("svc.echo", 9, Some("_INBOX.r1"), b"hello"),
            ServerOp::HMsg {
                subject: "svc.echo".into(),
                sid: 9,
                reply: None,
                headers: headers.to_vec(),
                payload: b"abc".to_vec(),
            }
        ]
    );
    // A request nobody serves: with no_responders the server answers on
    // the reply subject with a header-only 503 message.
    a.send(|o| nats::sub(o, "_INBOX.r2", 10).unwrap());
    a.write(b"PUB nobody.home _INBOX.r2 2\r\nhi\r\n");
    let ops = a.sync();
    assert_eq!(ops.len(), 1, "{ops:?}");
    match &ops[0] {
        ServerOp::HMsg {
            subject,
            sid: 10,
            reply: None,
            headers,
            payload,
        } => {
            assert_eq!(subject, "_INBOX.r2");
            assert!(headers.starts_with(b"NATS/1.0 503"), "{headers:?}");
            assert!(headers.ends_with(b"\r\n\r\n"));
            assert!(payload.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_errors() {
    let Some(server) = Server::nats() else {
        return;
    };
    let mut a = Conn::new(&server, CONNECT_VERBOSE);
    assert_eq!(a.recv(), ServerOp::Ok);
    // What our encoder refuses, the server refuses too (but keeps the
    // connection for this one).
    assert!(nats::publish(&mut Vec::new(), "gw.*", b"x").is_err());
    a.write(b"PUB gw.* 2\r\nhi\r\n");
    assert_eq!(a.recv(), ServerOp::Err("Invalid Publish Subject".into()));
    // In verbose mode the refused PUB is still acknowledged after that.
    assert_eq!(a.recv(), ServerOp::Ok);
    a.send(nats::ping);
    assert_eq!(a.recv(), ServerOp::Pong);
    // Over max_payload: an error, then the server closes.
    let max = max_payload(&a.info);
    // (Only the control line: the server refuses from it, and writing
    // the payload into a closing connection would fail.)
    a.write(format!("PUB gw.big {}\r\n", max + 1).as_bytes());
    assert_eq!(a.recv(), ServerOp::Err("Maximum Payload Violation".into()));
    let mut rest = Vec::new();
    let _ = a.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn server_pings_are_seen_and_answered() {
    let Some(server) = Server::nats() else {
        return;
    };
    let mut a = Conn::new(&server, CONNECT_QUIET);
    a.send(|o| nats::sub(o, "x", 1).unwrap());
    // nats-server pings a new client within a couple of seconds (its
    // first RTT measurement); keep the connection busy until it has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while a.pings == 0 && std::time::Instant::now() < deadline {
        assert_eq!(a.sync(), vec![]);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("server PINGs answered: {}", a.pings);
    // Still a healthy connection.
    a.send(|o| nats::publish(o, "x", b"after").unwrap());
    assert_eq!(a.sync(), vec![msg("x", 1, None, b"after")]);
}

#[test]
fn channel_tokens_through_the_server() {
    let Some(server) = Server::nats() else {
        return;
    };
    let mut a = Conn::new(&server, CONNECT_QUIET);
    let channels = [
        "news",
        "chat room #1",
        "a.b.c",
        "*",
        ">",
        "x > y * z",
        "",
        "caf\u{e9}\tt\u{e9}\r\n",
        "$SYS.REQ",
    ];
    for (sid, channel) in channels.iter().enumerate() {
        let subject = format!("gw.{}", nats::channel_token(channel));
        a.send(|o| nats::sub(o, &subject, sid as u64).unwrap());
    }
    // A wildcard over all of them, to check nothing leaked into a
    // second token.
    a.send(|o| nats::sub(o, "gw.*", 100).unwrap());
    assert_eq!(a.sync(), vec![]);
    for channel in channels {
        let subject = format!("gw.{}", nats::channel_token(channel));
        a.send(|o| nats::publish(o, &subject, channel.as_bytes()).unwrap());
    }
    let ops = a.sync();
    assert_eq!(ops.len(), 2 * channels.len(), "{ops:?}");
    for op in ops {
        let ServerOp::Msg {
            subject,
            sid,
            payload,
            ..
        } = op
        else {
            panic!("{op:?}");
        };
        let token = subject.strip_prefix("gw.").unwrap();
        let channel = nats::channel_from_token(token).unwrap();
        assert_eq!(channel.as_bytes(), payload);
        if sid != 100 {
            assert_eq!(channels[sid as usize], channel);
        }
    }
}

#[test]
fn big_and_pipelined_messages() {
    let Some(server) = Server::nats() else {
        return;
    };
    let mut a = Conn::new(&server, CONNECT_QUIET);
    let mut b = Conn::new(&server, CONNECT_QUIET);
    a.send(|o| nats::sub(o, "bulk", 1).unwrap());
    assert_eq!(a.sync(), vec![]);
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    b.send(|o| {
        nats::publish(o, "bulk", &big).unwrap();
        for i in 0..500u32 {
            nats::publish(o, "bulk", i.to_string().as_bytes()).unwrap();
        }
    });
    assert_eq!(b.sync(), vec![]);
    assert_eq!(a.recv(), msg("bulk", 1, None, &big));
    for i in 0..500u32 {
        assert_eq!(a.recv(), msg("bulk", 1, None, i.to_string().as_bytes()));
    }
    // The decoder's own limit: a payload over it is refused from the
    // control line.
    a.decoder.set_max_payload(1000);
    b.send(|o| nats::publish(o, "bulk", &[b'y'; 1001]).unwrap());
    let mut buf = [0u8; 4096];
    let err = loop {
        match a.decoder.next() {
            Ok(Some(ServerOp::Ping)) => a.send(nats::pong),
            Ok(Some(op)) => panic!("decoded {op:?}"),
            Ok(None) => {
                let n = a.stream.read(&mut buf).unwrap();
                a.decoder.feed(&buf[..n]);
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err, nats::NatsError::TooLarge("message over max_payload"));
}
