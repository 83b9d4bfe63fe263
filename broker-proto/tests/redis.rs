//! The RESP codec against a real `redis-server` (7.x), over plain blocking
//! sockets: every byte sent is made by `resp::command`, every byte
//! received goes through `resp::Decoder` (in awkward read sizes).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use broker_proto::resp::{self, classify, PubSubEvent, SubKind, Value};
use common::{Server, READ_SIZES};

/// One client connection.
struct Conn {
    stream: TcpStream,
    decoder: resp::Decoder,
    reads: usize,
}

impl Conn {
    fn new(server: &Server) -> Conn {
        Conn {
            stream: server.connect(),
            decoder: resp::Decoder::default(),
            reads: 0,
        }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = Vec::new();
        resp::command(&mut out, args);
        self.stream.write_all(&out).unwrap();
    }

    fn recv(&mut self) -> Value {
        let mut buf = vec![0u8; 65536];
        loop {
            if let Some(v) = self.decoder.next().expect("valid RESP") {
                return v;
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

    fn event(&mut self) -> PubSubEvent {
        classify(self.recv())
    }

    fn call(&mut self, args: &[&[u8]]) -> Value {
        self.send(args);
        self.recv()
    }
}

fn bulk(s: &[u8]) -> Value {
    Value::Bulk(s.to_vec())
}

fn subscribed(kind: SubKind, channel: &[u8], count: u64) -> PubSubEvent {
    PubSubEvent::Subscribed {
        kind,
        channel: channel.to_vec(),
        count,
    }
}

fn message(channel: &[u8], payload: &[u8]) -> PubSubEvent {
    PubSubEvent::Message {
        channel: channel.to_vec(),
        payload: payload.to_vec(),
    }
}

#[test]
fn subscribe_and_publish_resp2() {
    let Some(server) = Server::redis(&[]) else {
        return;
    };
    let mut sub = Conn::new(&server);
    let mut publisher = Conn::new(&server);
    sub.send(&[b"SUBSCRIBE", b"ch1", b"ch 2"]);
    assert_eq!(sub.event(), subscribed(SubKind::Channel, b"ch1", 1));
    assert_eq!(sub.event(), subscribed(SubKind::Channel, b"ch 2", 2));

    let payload = b"hi\r\n$5\r\n\0\xff there";
    assert_eq!(
        publisher.call(&[b"PUBLISH", b"ch1", payload]),
        Value::Integer(1)
    );
    assert_eq!(sub.event(), message(b"ch1", payload));
    assert_eq!(
        publisher.call(&[b"PUBLISH", b"ch 2", b""]),
        Value::Integer(1)
    );
    assert_eq!(sub.event(), message(b"ch 2", b""));
    assert_eq!(
        publisher.call(&[b"PUBLISH", b"nobody", b"x"]),
        Value::Integer(0)
    );

    // PING in RESP2 subscribed mode is answered with a ["pong", arg] array.
    sub.send(&[b"PING"]);
    assert_eq!(sub.recv(), Value::Array(vec![bulk(b"pong"), bulk(b"")]));
    sub.send(&[b"PING", b"hello"]);
    assert_eq!(sub.event(), PubSubEvent::Pong(b"hello".to_vec()));
    // Other commands are refused in that mode, with an error reply.
    let refused = sub.call(&[b"GET", b"k"]);
    assert!(
        refused.error_text().is_some_and(|e| e.starts_with(b"ERR")),
        "{refused:?}"
    );

    // Unsubscribing from all: one confirmation per channel, any order.
    sub.send(&[b"UNSUBSCRIBE"]);
    let mut left = Vec::new();
    for _ in 0..2 {
        match sub.event() {
            PubSubEvent::Unsubscribed {
                kind: SubKind::Channel,
                channel: Some(c),
                count,
            } => left.push((c, count)),
            other => panic!("{other:?}"),
        }
    }
    left.sort();
    let counts: Vec<u64> = left.iter().map(|(_, n)| *n).collect();
    assert!(counts == [0, 1] || counts == [1, 0], "{left:?}");
    assert_eq!(left[0].0, b"ch 2");
    assert_eq!(left[1].0, b"ch1");
    // With nothing left, a null channel.
    sub.send(&[b"UNSUBSCRIBE"]);
    assert_eq!(
        sub.event(),
        PubSubEvent::Unsubscribed {
            kind: SubKind::Channel,
            channel: None,
            count: 0
        }
    );
    // Out of subscribed mode, PING is +PONG again.
    assert_eq!(sub.call(&[b"PING"]), Value::Simple(b"PONG".to_vec()));
    assert_eq!(
        classify(Value::Simple(b"PONG".to_vec())),
        PubSubEvent::Pong(Vec::new())
    );
    assert_eq!(sub.call(&[b"GET", b"k"]), Value::NullBulk);
}

#[test]
fn sharded_pubsub() {
    let Some(server) = Server::redis(&[]) else {
        return;
    };
    let mut sub = Conn::new(&server);
    let mut publisher = Conn::new(&server);
    // Standalone Redis 7.0 accepts SSUBSCRIBE, even for channels in
    // different hash slots in one command (a cluster would say CROSSSLOT).
    sub.send(&[b"SSUBSCRIBE", b"news", b"sports"]);
    assert_eq!(sub.event(), subscribed(SubKind::Shard, b"news", 1));
    assert_eq!(sub.event(), subscribed(SubKind::Shard, b"sports", 2));
    // Shard subscriptions are counted apart from plain ones.
    sub.send(&[b"SUBSCRIBE", b"news"]);
    assert_eq!(sub.event(), subscribed(SubKind::Channel, b"news", 1));

    assert_eq!(
        publisher.call(&[b"SPUBLISH", b"news", b"s1"]),
        Value::Integer(1)
    );
    assert_eq!(sub.event(), message(b"news", b"s1"));
    // The two namespaces are separate: PUBLISH reaches only SUBSCRIBE.
    assert_eq!(
        publisher.call(&[b"PUBLISH", b"news", b"p1"]),
        Value::Integer(1)
    );
    assert_eq!(sub.event(), message(b"news", b"p1"));
    assert_eq!(
        publisher.call(&[b"SPUBLISH", b"nobody", b"x"]),
        Value::Integer(0)
    );
    // The raw form is an "smessage" array.
    assert_eq!(
        publisher.call(&[b"SPUBLISH", b"sports", b"goal"]),
        Value::Integer(1)
    );
    assert_eq!(
        sub.recv(),
        Value::Array(vec![bulk(b"smessage"), bulk(b"sports"), bulk(b"goal")])
    );

    sub.send(&[b"SUNSUBSCRIBE", b"news"]);
    assert_eq!(
        sub.event(),
        PubSubEvent::Unsubscribed {
            kind: SubKind::Shard,
            channel: Some(b"news".to_vec()),
            count: 1
        }
    );
    sub.send(&[b"SUNSUBSCRIBE", b"sports"]);
    assert_eq!(
        sub.event(),
        PubSubEvent::Unsubscribed {
            kind: SubKind::Shard,
            channel: Some(b"sports".to_vec()),
            count: 0
        }
    );
    sub.send(&[b"SUNSUBSCRIBE"]);
    assert_eq!(
        sub.event(),
        PubSubEvent::Unsubscribed {
            kind: SubKind::Shard,
            channel: None,
            count: 0
        }
    );
    // Still subscribed to the plain channel: the connection stays in
    // subscribed mode (RESP2 PING answers with an array).
    sub.send(&[b"PING"]);
    assert_eq!(sub.event(), PubSubEvent::Pong(Vec::new()));
}

#[test]
fn resp3_pushes() {
    let Some(server) = Server::redis(&[]) else {
        return;
    };
    let mut sub = Conn::new(&server);
    let mut publisher = Conn::new(&server);
    let hello = sub.call(&[b"HELLO", b"3"]);
    let Value::Map(fields) = &hello else {
        panic!("HELLO 3 answers with a map: {hello:?}");
    };
    let field = |name: &[u8]| {
        fields
            .iter()
            .find(|(k, _)| k.as_bytes() == Some(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field(b"proto"), Some(Value::Integer(3)));
    assert_eq!(field(b"server"), Some(bulk(b"redis")));
    let version = field(b"version").and_then(|v| v.as_bytes().map(<[u8]>::to_vec));
    assert!(version.is_some_and(|v| v.starts_with(b"7.")));

    sub.send(&[b"SUBSCRIBE", b"ch1"]);
    let confirm = sub.recv();
    assert!(matches!(confirm, Value::Push(_)), "{confirm:?}");
    assert_eq!(classify(confirm), subscribed(SubKind::Channel, b"ch1", 1));
    sub.send(&[b"SSUBSCRIBE", b"sch"]);
    assert_eq!(sub.event(), subscribed(SubKind::Shard, b"sch", 1));

    assert_eq!(
        publisher.call(&[b"PUBLISH", b"ch1", b"p3"]),
        Value::Integer(1)
    );
    assert_eq!(
        sub.recv(),
        Value::Push(vec![bulk(b"message"), bulk(b"ch1"), bulk(b"p3")])
    );
    assert_eq!(
        publisher.call(&[b"SPUBLISH", b"sch", b"s3"]),
        Value::Integer(1)
    );
    assert_eq!(sub.event(), message(b"sch", b"s3"));

    // RESP3 PING in subscribed mode is a plain +PONG, and other commands
    // are allowed (their replies interleave with pushes).
    assert_eq!(sub.call(&[b"PING"]), Value::Simple(b"PONG".to_vec()));
    assert_eq!(
        classify(Value::Simple(b"PONG".to_vec())),
        PubSubEvent::Pong(Vec::new())
    );
    assert_eq!(sub.call(&[b"PING", b"x"]), bulk(b"x"));
    assert_eq!(sub.call(&[b"GET", b"missing"]), Value::Null);
    assert_eq!(sub.call(&[b"HGETALL", b"missing"]), Value::Map(Vec::new()));

    sub.send(&[b"UNSUBSCRIBE", b"ch1"]);
    assert_eq!(
        sub.event(),
        PubSubEvent::Unsubscribed {
            kind: SubKind::Channel,
            channel: Some(b"ch1".to_vec()),
            count: 0
        }
    );
    // With nothing left RESP3 says `_` (RESP2 said `$-1`).
    sub.send(&[b"UNSUBSCRIBE"]);
    assert_eq!(
        sub.recv(),
        Value::Push(vec![bulk(b"unsubscribe"), Value::Null, Value::Integer(0)])
    );
    sub.send(&[b"SUNSUBSCRIBE"]);
    assert_eq!(
        sub.event(),
        PubSubEvent::Unsubscribed {
            kind: SubKind::Shard,
            channel: Some(b"sch".to_vec()),
            count: 0
        }
    );
}

#[test]
#[allow(clippy::approx_constant)] // 3.141 is what Redis sends, not PI
fn resp3_types_from_a_real_server() {
    // DEBUG PROTOCOL <type> makes the server emit each RESP3 type.
    let Some(server) = Server::redis(&["--enable-debug-command", "local"]) else {
        return;
    };
    let mut c = Conn::new(&server);
    assert!(matches!(c.call(&[b"HELLO", b"3"]), Value::Map(_)));
    let probe = c.call(&[b"DEBUG", b"PROTOCOL", b"true"]);
    if probe.error_text().is_some() {
        println!("SKIP: DEBUG PROTOCOL unavailable: {probe:?}");
        return;
    }
    assert_eq!(probe, Value::Boolean(true));
    let mut debug = |what: &[u8]| c.call(&[b"DEBUG", b"PROTOCOL", what]);
    assert_eq!(debug(b"false"), Value::Boolean(false));
    assert_eq!(debug(b"null"), Value::Null);
    assert_eq!(debug(b"double"), Value::Double(3.141));
    assert_eq!(
        debug(b"bignum"),
        Value::BigNumber("1234567999999999999999999999999999999".into())
    );
    assert_eq!(
        debug(b"verbatim"),
        Value::Verbatim {
            format: *b"txt",
            text: b"This is a verbatim\nstring".to_vec()
        }
    );
    assert_eq!(
        debug(b"set"),
        Value::Set(vec![
            Value::Integer(0),
            Value::Integer(1),
            Value::Integer(2)
        ])
    );
    assert_eq!(
        debug(b"map"),
        Value::Map(vec![
            (Value::Integer(0), Value::Boolean(false)),
            (Value::Integer(1), Value::Boolean(true)),
            (Value::Integer(2), Value::Boolean(false)),
        ])
    );
    // The attribute is stripped; the reply it annotated remains.
    assert_eq!(
        debug(b"attrib"),
        bulk(b"Some real reply following the attribute")
    );
    // A push, then the reply.
    assert_eq!(
        debug(b"push"),
        Value::Push(vec![bulk(b"server-cpu-usage"), Value::Integer(42)])
    );
    assert_eq!(c.recv(), bulk(b"Some real reply following the push reply"));
    // An error reply and a Lua error.
    let e = c.call(&[b"EVAL", b"return redis.error_reply('boom')", b"0"]);
    assert_eq!(e, Value::Error(b"ERR boom".to_vec()));
    // (Lua false becomes a null, `_` in RESP3.)
    let nested = c.call(&[b"EVAL", b"return {1,{2,'x'},false}", b"0"]);
    assert_eq!(
        nested,
        Value::Array(vec![
            Value::Integer(1),
            Value::Array(vec![Value::Integer(2), bulk(b"x")]),
            Value::Null,
        ])
    );
    // Client-side caching invalidations are pushes classify leaves alone.
    assert_eq!(
        c.call(&[b"CLIENT", b"TRACKING", b"on"]),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(c.call(&[b"GET", b"k"]), Value::Null);
    let mut other = Conn::new(&server);
    assert_eq!(
        other.call(&[b"SET", b"k", b"v"]),
        Value::Simple(b"OK".to_vec())
    );
    let inval = c.recv();
    assert_eq!(
        inval,
        Value::Push(vec![bulk(b"invalidate"), Value::Array(vec![bulk(b"k")])])
    );
    assert!(matches!(
        classify(inval),
        PubSubEvent::Other(Value::Push(_))
    ));
}

#[test]
fn big_and_pipelined_messages() {
    let Some(server) = Server::redis(&[]) else {
        return;
    };
    let mut sub = Conn::new(&server);
    let mut publisher = Conn::new(&server);
    sub.send(&[b"SUBSCRIBE", b"bulk"]);
    assert_eq!(sub.event(), subscribed(SubKind::Channel, b"bulk", 1));

    let big: Vec<u8> = (0..(3 << 20)).map(|i| (i % 251) as u8).collect();
    // 3 MiB plus 500 small messages, pipelined in one write.
    let mut out = Vec::new();
    resp::command(&mut out, &[b"PUBLISH", b"bulk", &big]);
    for i in 0..500u32 {
        resp::command(&mut out, &[b"PUBLISH", b"bulk", i.to_string().as_bytes()]);
    }
    publisher.stream.write_all(&out).unwrap();
    for _ in 0..501 {
        assert_eq!(publisher.recv(), Value::Integer(1));
    }
    assert_eq!(sub.event(), message(b"bulk", &big));
    for i in 0..500u32 {
        assert_eq!(sub.event(), message(b"bulk", i.to_string().as_bytes()));
    }
    assert_eq!(sub.decoder.buffered(), 0);
}

#[test]
fn limits_hold_against_a_real_server() {
    let Some(server) = Server::redis(&[]) else {
        return;
    };
    let mut c = Conn::new(&server);
    c.decoder = resp::Decoder::new(resp::Limits {
        max_bulk_bytes: 1024,
        ..resp::Limits::default()
    });
    assert_eq!(
        c.call(&[b"SET", b"k", &[b'x'; 1025]]),
        Value::Simple(b"OK".to_vec())
    );
    c.send(&[b"GET", b"k"]);
    let mut buf = [0u8; 4096];
    let err = loop {
        match c.decoder.next() {
            Ok(Some(v)) => panic!("decoded {v:?}"),
            Ok(None) => {
                let n = c.stream.read(&mut buf).unwrap();
                c.decoder.feed(&buf[..n]);
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        err,
        resp::RespError::TooLarge("bulk string over max_bulk_bytes")
    );
}
