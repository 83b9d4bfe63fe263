//! The two broker protocols behind one small interface: the hello after
//! connecting, subscribe and unsubscribe in batches, publish, keepalive
//! pings, and received bytes turned into events. The protocol state
//! itself is `broker-proto`'s (sans-IO); this maps the gateway's names
//! onto each broker's namespace.
//!
//! - Redis (`HELLO 3`, so one connection can both publish and receive
//!   pushes): `{prefix}:c:{channel}`, `{prefix}:ctl`, `{prefix}:info`,
//!   `{prefix}:node:{name}`; sharded (`SSUBSCRIBE`/`SPUBLISH`) when the
//!   server is Redis ≥ 7 and `broker.sharded` allows.
//! - NATS: `{prefix}.c.{token}`, `{prefix}.ctl`, `{prefix}.info`,
//!   `{prefix}.node.{token}`, where the token is `broker-proto`'s
//!   reversible encoding of any channel name into one subject token; one
//!   `sid` per subscription.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use broker_proto::{nats, resp};

use crate::config::{BrokerConfig, BrokerKind, Sharded};

/// A gateway-side name: a channel, or one of the system names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name<'a> {
    /// A pub/sub channel.
    Channel(&'a str),
    /// The control channel.
    Control,
    /// The info channel.
    Info,
    /// A node's own channel.
    Node(&'a str),
}

impl Name<'_> {
    /// The gateway-internal spelling (system names start with NUL, which
    /// no channel name can).
    fn internal(&self) -> String {
        match self {
            Name::Channel(c) => (*c).to_owned(),
            Name::Control => "\u{0}ctl".into(),
            Name::Info => "\u{0}info".into(),
            Name::Node(n) => format!("\u{0}node:{n}"),
        }
    }
}

/// What arrived.
#[derive(Debug)]
pub enum Event {
    /// The hello was answered: subscriptions and publishes may go.
    Ready,
    /// A message on a name (the gateway-internal spelling).
    Message {
        /// Where it came.
        name: String,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// A keepalive answer.
    Pong,
    /// The answer to barrier `seq`: every command sent before it has taken
    /// effect (both brokers answer a connection's commands in order).
    Barrier(u64),
}

/// One broker connection's protocol.
pub trait Wire: Send + std::fmt::Debug {
    /// Forget everything about the previous connection.
    fn reset(&mut self);
    /// What to send right after connecting.
    fn hello(&mut self, out: &mut Vec<u8>);
    /// Subscribe to `names` (one command).
    fn subscribe(&mut self, out: &mut Vec<u8>, names: &[Name<'_>]);
    /// Unsubscribe from `names` (one command).
    fn unsubscribe(&mut self, out: &mut Vec<u8>, names: &[Name<'_>]);
    /// Publish `payload` on `name`.
    fn publish(&mut self, out: &mut Vec<u8>, name: Name<'_>, payload: &[u8]);
    /// A keepalive ping.
    fn ping(&mut self, out: &mut Vec<u8>);
    /// A marker answered with [`Event::Barrier`]`(seq)` once everything
    /// sent before it was applied: what confirms a subscription.
    fn barrier(&mut self, out: &mut Vec<u8>, seq: u64);
    /// Received bytes: events, and bytes to answer with (e.g. a NATS PONG).
    fn input(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), String>;
}

/// The shards of `cfg`: their addresses and protocol state.
pub fn shards(cfg: &BrokerConfig) -> Vec<(Vec<SocketAddr>, Box<dyn Wire>)> {
    match cfg.kind {
        BrokerKind::Redis => cfg
            .addresses
            .iter()
            .map(|a| {
                let w: Box<dyn Wire> = Box::new(Redis::new(&cfg.prefix, cfg.sharded));
                (vec![*a], w)
            })
            .collect(),
        BrokerKind::Nats => {
            let w: Box<dyn Wire> = Box::new(Nats::new(&cfg.prefix));
            vec![(cfg.addresses.clone(), w)]
        }
        BrokerKind::Memory => Vec::new(),
    }
}

/// Limits on what a broker may send us.
const MAX_PAYLOAD: usize = 16 << 20;

fn resp_limits() -> resp::Limits {
    resp::Limits {
        max_bulk_bytes: MAX_PAYLOAD,
        ..resp::Limits::default()
    }
}

fn nats_limits() -> nats::Limits {
    nats::Limits {
        max_payload: MAX_PAYLOAD,
        ..nats::Limits::default()
    }
}

/// The server version in a `HELLO 3` answer (a map with `version`).
fn redis_major(v: &resp::Value) -> u32 {
    let resp::Value::Map(pairs) = v else {
        return 0;
    };
    pairs
        .iter()
        .find(|(k, _)| k.as_bytes() == Some(b"version"))
        .and_then(|(_, v)| v.as_bytes())
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.split('.').next()?.parse().ok())
        .unwrap_or(0)
}

/// What a Redis barrier's `PING` carries before its number.
const BARRIER: &str = "gw-barrier:";

/// The number of a barrier's echoed `PING` text.
fn barrier_seq(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text.strip_prefix(BARRIER.as_bytes())?)
        .ok()?
        .parse()
        .ok()
}

/// Redis, RESP3.
#[derive(Debug)]
pub struct Redis {
    prefix: String,
    sharded_cfg: Sharded,
    /// Decided from the HELLO answer.
    sharded: bool,
    ready: bool,
    decoder: resp::Decoder,
}

impl Redis {
    fn new(prefix: &str, sharded: Sharded) -> Self {
        Self {
            prefix: prefix.to_owned(),
            sharded_cfg: sharded,
            sharded: false,
            ready: false,
            decoder: resp::Decoder::new(resp_limits()),
        }
    }

    fn wire_name(&self, name: &Name<'_>) -> Vec<u8> {
        let p = &self.prefix;
        match name {
            Name::Channel(c) => format!("{p}:c:{c}").into_bytes(),
            Name::Control => format!("{p}:ctl").into_bytes(),
            Name::Info => format!("{p}:info").into_bytes(),
            Name::Node(n) => format!("{p}:node:{n}").into_bytes(),
        }
    }

    fn gateway_name(&self, wire: &[u8]) -> Option<String> {
        let s = std::str::from_utf8(wire).ok()?;
        let rest = s.strip_prefix(self.prefix.as_str())?.strip_prefix(':')?;
        Some(match rest {
            "ctl" => Name::Control.internal(),
            "info" => Name::Info.internal(),
            r => match (r.strip_prefix("c:"), r.strip_prefix("node:")) {
                (Some(c), _) => c.to_owned(),
                (None, Some(n)) => Name::Node(n).internal(),
                _ => return None,
            },
        })
    }

    fn batch(&self, out: &mut Vec<u8>, verb: &[u8], names: &[Name<'_>]) {
        let wire: Vec<Vec<u8>> = names.iter().map(|n| self.wire_name(n)).collect();
        let mut args: Vec<&[u8]> = vec![verb];
        args.extend(wire.iter().map(Vec::as_slice));
        resp::command(out, &args);
    }
}

impl Wire for Redis {
    fn reset(&mut self) {
        self.ready = false;
        self.decoder = resp::Decoder::new(resp_limits());
    }

    fn hello(&mut self, out: &mut Vec<u8>) {
        resp::command(out, &[b"HELLO", b"3"]);
    }

    fn subscribe(&mut self, out: &mut Vec<u8>, names: &[Name<'_>]) {
        let verb: &[u8] = if self.sharded {
            b"SSUBSCRIBE"
        } else {
            b"SUBSCRIBE"
        };
        self.batch(out, verb, names);
    }

    fn unsubscribe(&mut self, out: &mut Vec<u8>, names: &[Name<'_>]) {
        let verb: &[u8] = if self.sharded {
            b"SUNSUBSCRIBE"
        } else {
            b"UNSUBSCRIBE"
        };
        self.batch(out, verb, names);
    }

    fn publish(&mut self, out: &mut Vec<u8>, name: Name<'_>, payload: &[u8]) {
        let verb: &[u8] = if self.sharded {
            b"SPUBLISH"
        } else {
            b"PUBLISH"
        };
        let wire = self.wire_name(&name);
        resp::command(out, &[verb, &wire, payload]);
    }

    fn ping(&mut self, out: &mut Vec<u8>) {
        resp::command(out, &[b"PING"]);
    }

    fn barrier(&mut self, out: &mut Vec<u8>, seq: u64) {
        // `PING <text>` echoes the text (a bulk string in RESP3).
        let token = format!("{BARRIER}{seq}");
        resp::command(out, &[b"PING", token.as_bytes()]);
    }

    fn input(
        &mut self,
        data: &[u8],
        _out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        self.decoder.feed(data);
        while let Some(v) = self.decoder.next().map_err(|e| e.to_string())? {
            if !self.ready {
                // The HELLO answer: a map with the server's version.
                match &v {
                    resp::Value::Error(e) => {
                        return Err(format!("HELLO refused: {}", String::from_utf8_lossy(e)))
                    }
                    v => {
                        let major = redis_major(v);
                        if major < 6 {
                            return Err(format!("Redis {major}: RESP3 (HELLO 3) needs Redis 6+"));
                        }
                        self.sharded = match self.sharded_cfg {
                            Sharded::Always => true,
                            Sharded::Never => false,
                            Sharded::Auto => major >= 7,
                        };
                        if self.sharded_cfg == Sharded::Always && major < 7 {
                            return Err(format!(
                                "broker.sharded = \"always\" needs Redis 7, got {major}"
                            ));
                        }
                        self.ready = true;
                        events.push(Event::Ready);
                    }
                }
                continue;
            }
            match resp::classify(v) {
                resp::PubSubEvent::Pong(text)
                | resp::PubSubEvent::Other(resp::Value::Bulk(text))
                    if barrier_seq(&text).is_some() =>
                {
                    events.extend(barrier_seq(&text).map(Event::Barrier));
                }
                resp::PubSubEvent::Message { channel, payload } => {
                    if let Some(name) = self.gateway_name(&channel) {
                        events.push(Event::Message { name, payload });
                    }
                }
                resp::PubSubEvent::Pong(_) => events.push(Event::Pong),
                resp::PubSubEvent::Other(resp::Value::Error(e)) => {
                    return Err(format!("Redis error: {}", String::from_utf8_lossy(&e)))
                }
                // Subscribe confirmations, PUBLISH counts, simple PONGs.
                _ => events.push(Event::Pong),
            }
        }
        Ok(())
    }
}

/// NATS core.
#[derive(Debug)]
pub struct Nats {
    prefix: String,
    ready: bool,
    decoder: nats::Decoder,
    /// Subscription ids by subject, and subjects by id.
    sids: HashMap<String, u64>,
    subjects: HashMap<u64, String>,
    next_sid: u64,
    /// Our PINGs not answered yet, oldest first: a barrier's number, or
    /// `None` for a keepalive (the server answers PINGs in order).
    pings: VecDeque<Option<u64>>,
}

impl Nats {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            ready: false,
            decoder: nats::Decoder::new(nats_limits()),
            sids: HashMap::new(),
            subjects: HashMap::new(),
            next_sid: 1,
            pings: VecDeque::new(),
        }
    }

    fn subject(&self, name: &Name<'_>) -> String {
        let p = &self.prefix;
        match name {
            Name::Channel(c) => format!("{p}.c.{}", nats::channel_token(c)),
            Name::Control => format!("{p}.ctl"),
            Name::Info => format!("{p}.info"),
            Name::Node(n) => format!("{p}.node.{}", nats::channel_token(n)),
        }
    }

    fn gateway_name(&self, subject: &str) -> Option<String> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let text = |t: &str| nats::channel_from_token(t).ok();
        Some(match rest {
            "ctl" => Name::Control.internal(),
            "info" => Name::Info.internal(),
            r => match (r.strip_prefix("c."), r.strip_prefix("node.")) {
                (Some(c), _) => text(c)?,
                (None, Some(n)) => Name::Node(&text(n)?).internal(),
                _ => return None,
            },
        })
    }
}

impl Wire for Nats {
    fn reset(&mut self) {
        self.ready = false;
        self.decoder = nats::Decoder::new(nats_limits());
        self.sids.clear();
        self.subjects.clear();
        self.pings.clear();
    }

    fn hello(&mut self, _out: &mut Vec<u8>) {
        // The server speaks first (INFO); CONNECT answers it in `input`.
    }

    fn subscribe(&mut self, out: &mut Vec<u8>, names: &[Name<'_>]) {
        for n in names {
            let subject = self.subject(n);
            if self.sids.contains_key(&subject) {
                continue;
            }
            let sid = self.next_sid;
            self.next_sid += 1;
            if nats::sub(out, &subject, sid).is_ok() {
                self.subjects.insert(sid, subject.clone());
                self.sids.insert(subject, sid);
            }
        }
    }

    fn unsubscribe(&mut self, out: &mut Vec<u8>, names: &[Name<'_>]) {
        for n in names {
            let subject = self.subject(n);
            if let Some(sid) = self.sids.remove(&subject) {
                self.subjects.remove(&sid);
                nats::unsub(out, sid, None);
            }
        }
    }

    fn publish(&mut self, out: &mut Vec<u8>, name: Name<'_>, payload: &[u8]) {
        let subject = self.subject(&name);
        if let Err(e) = nats::publish(out, &subject, payload) {
            log::warn!("nats: cannot publish on {subject:?}: {e}");
        }
    }

    fn ping(&mut self, out: &mut Vec<u8>) {
        self.pings.push_back(None);
        nats::ping(out);
    }

    fn barrier(&mut self, out: &mut Vec<u8>, seq: u64) {
        // The server handles a connection's SUBs before answering a later PING.
        self.pings.push_back(Some(seq));
        nats::ping(out);
    }

    fn input(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        self.decoder.feed(data);
        while let Some(op) = self.decoder.next().map_err(|e| e.to_string())? {
            match op {
                nats::ServerOp::Info(_) if !self.ready => {
                    let connect = r#"{"verbose":false,"pedantic":false,"name":"ws-gateway","lang":"rust","protocol":1,"echo":true}"#;
                    // A constant, valid CONNECT line: cannot fail.
                    let _ = nats::connect(out, connect);
                    // The PONG to this PING says CONNECT was accepted.
                    nats::ping(out);
                }
                nats::ServerOp::Info(_) => {}
                nats::ServerOp::Pong if !self.ready => {
                    self.ready = true;
                    events.push(Event::Ready);
                }
                nats::ServerOp::Pong => events.push(match self.pings.pop_front() {
                    Some(Some(seq)) => Event::Barrier(seq),
                    _ => Event::Pong,
                }),
                nats::ServerOp::Ping => nats::pong(out),
                nats::ServerOp::Msg {
                    subject, payload, ..
                } => {
                    if let Some(name) = self.gateway_name(&subject) {
                        events.push(Event::Message { name, payload });
                    }
                }
                nats::ServerOp::HMsg { .. } | nats::ServerOp::Ok => {}
                nats::ServerOp::Err(e) => return Err(format!("NATS error: {e}")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(w: &mut dyn Wire, input: &[u8]) -> Vec<Event> {
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        w.input(input, &mut out, &mut ev).unwrap();
        ev
    }

    #[test]
    fn redis_barriers_are_told_from_keepalive_pongs() {
        let mut r = Redis::new("gw", Sharded::Auto);
        let hello = b"%1\r\n$7\r\nversion\r\n$5\r\n7.0.1\r\n";
        assert!(matches!(events(&mut r, hello)[..], [Event::Ready]));
        let mut out = Vec::new();
        r.barrier(&mut out, 42);
        assert_eq!(out, b"*2\r\n$4\r\nPING\r\n$13\r\ngw-barrier:42\r\n");
        // RESP3 echoes the text as a bulk string; a keepalive gets +PONG.
        let ev = events(&mut r, b"+PONG\r\n$13\r\ngw-barrier:42\r\n");
        assert!(
            matches!(ev[..], [Event::Pong, Event::Barrier(42)]),
            "{ev:?}"
        );
    }

    #[test]
    fn nats_pongs_answer_pings_in_order() {
        let mut n = Nats::new("gw");
        let mut out = Vec::new();
        events(&mut n, b"INFO {}\r\n");
        assert!(matches!(events(&mut n, b"PONG\r\n")[..], [Event::Ready]));
        n.ping(&mut out);
        n.barrier(&mut out, 7);
        n.ping(&mut out);
        let ev = events(&mut n, b"PONG\r\nPONG\r\nPONG\r\n");
        assert!(
            matches!(ev[..], [Event::Pong, Event::Barrier(7), Event::Pong]),
            "{ev:?}"
        );
        // A new connection forgets the old one's pings.
        n.barrier(&mut out, 8);
        n.reset();
        events(&mut n, b"INFO {}\r\n");
        assert!(matches!(events(&mut n, b"PONG\r\n")[..], [Event::Ready]));
        n.ping(&mut out);
        assert!(matches!(events(&mut n, b"PONG\r\n")[..], [Event::Pong]));
    }
}
