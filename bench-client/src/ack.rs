//! `ack` mode: seed 000's transaction, sans-IO.
//!
//! One transaction: the client sends a JSON text message carrying an id
//! (`load.ack.send`), the gateway (through its upstream backend) answers
//! with an ack carrying the same id, and the client sends its own ack back
//! (`load.ack.ack`). A completed transaction is one TPS; its latency runs
//! from the message's send to the server's ack.
//!
//! Ids are per connection: 1, 2, 3, ... in send order (an id is unique on
//! its connection, not across connections; the gateway and the backend
//! route answers by connection, so that is all the match needs).
//!
//! Nothing here reads a clock: every call that needs the time takes `now`
//! (µs), so the bookkeeping is tested without sleeping.

use std::collections::VecDeque;

/// Digits of id the size check leaves room for: ids up to 9,999,999,999
/// per connection (at 1,000 msg/s that is over 100 days).
pub const ID_ROOM: usize = 10;

/// The default message envelope.
pub const DEFAULT_SEND: &str = r#"{"type":"msg","id":{id},"body":"{payload}"}"#;
/// The default client ack.
pub const DEFAULT_ACK: &str = r#"{"type":"ack","id":{id}}"#;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Vec<u8>),
    Id,
    Payload,
}

/// A message template: literal text with `{id}` and `{payload}` holes.
/// Any other brace is literal (JSON needs them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    fixed: usize,
}

impl Template {
    /// Parses `text`: `{id}` must occur exactly once, `{payload}` exactly
    /// once when `payload` is true and never otherwise. The error says
    /// what is wrong (the caller adds the key).
    pub fn parse(text: &str, payload: bool) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let (mut ids, mut payloads) = (0, 0);
        let mut rest = text;
        let mut lit = String::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{id}") {
                ids += 1;
                pieces.push(Piece::Lit(std::mem::take(&mut lit).into_bytes()));
                pieces.push(Piece::Id);
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{payload}") {
                payloads += 1;
                pieces.push(Piece::Lit(std::mem::take(&mut lit).into_bytes()));
                pieces.push(Piece::Payload);
                rest = r;
            } else {
                let c = rest.chars().next().expect("non-empty");
                lit.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        pieces.push(Piece::Lit(lit.into_bytes()));
        pieces.retain(|p| !matches!(p, Piece::Lit(l) if l.is_empty()));
        if ids != 1 {
            return Err(format!("must contain {{id}} exactly once (found {ids})"));
        }
        match (payload, payloads) {
            (true, 1) | (false, 0) => {}
            (true, n) => return Err(format!("must contain {{payload}} exactly once (found {n})")),
            (false, _) => return Err("must not contain {payload}".into()),
        }
        let fixed = pieces
            .iter()
            .map(|p| match p {
                Piece::Lit(l) => l.len(),
                _ => 0,
            })
            .sum();
        Ok(Self { pieces, fixed })
    }

    /// Bytes of the template without its id and payload.
    pub fn fixed_len(&self) -> usize {
        self.fixed
    }

    /// The template with `id` filled in and a payload of filler
    /// (`a`..`z`, safe inside a JSON string) making the whole `size`
    /// bytes, or no payload when the rest already takes `size` or more.
    pub fn render(&self, id: u64, size: usize) -> Vec<u8> {
        let mut digits = itoa(id);
        let filler = size.saturating_sub(self.fixed + digits.len());
        let mut out = Vec::with_capacity(self.fixed + digits.len() + filler);
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => out.extend_from_slice(l),
                Piece::Id => out.append(&mut digits),
                Piece::Payload => out.extend((0..filler).map(|i| b'a' + (i % 26) as u8)),
            }
        }
        out
    }
}

fn itoa(mut n: u64) -> Vec<u8> {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf[i..].to_vec()
}

/// What a text message from the server is, for ack mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An ack (its type matches, if a type is required) carrying this id.
    Ack(u64),
    /// The gateway's failure answer, `{"error":{...,"id":<id or null>}}`.
    Error(Option<u64>),
    /// Anything else (a push, an ack without a numeric id, not JSON).
    Other,
}

/// The mode's protocol: how messages are built and answers recognised.
#[derive(Debug, Clone)]
pub struct AckProtocol {
    send: Template,
    ack: Option<Template>,
    message_size: usize,
    id_key: Vec<u8>,
    type_key: Vec<u8>,
    reply_type: Vec<u8>,
    /// Outstanding messages per connection at most.
    pub max_outstanding: usize,
    /// An ack later than this (µs after the send) is a timeout.
    pub timeout_us: u64,
}

impl AckProtocol {
    /// Builds the protocol from `[load.ack]` and `load.message_size`; the
    /// error is `(dotted key, problem)`.
    pub fn new(
        opts: &crate::scenario::AckOpts,
        message_size: u64,
        default_timeout_ms: u64,
    ) -> Result<Self, (&'static str, String)> {
        let send = Template::parse(&opts.send, true).map_err(|e| ("load.ack.send", e))?;
        let ack = if opts.ack.is_empty() {
            None
        } else {
            Some(Template::parse(&opts.ack, false).map_err(|e| ("load.ack.ack", e))?)
        };
        let smallest = send.fixed_len() + ID_ROOM;
        if (message_size as usize) < smallest {
            return Err((
                "load.message_size",
                format!(
                    "{message_size} is smaller than the load.ack.send envelope, which takes \
                     {smallest} bytes with a {ID_ROOM}-digit id and no payload"
                ),
            ));
        }
        let name_ok = |s: &str| !s.is_empty() && !s.contains(['"', '\\']) && s.is_ascii();
        if !name_ok(&opts.id_field) {
            return Err((
                "load.ack.id_field",
                "must be a non-empty ASCII field name without quotes or backslashes".into(),
            ));
        }
        if !opts.reply_type.is_empty() {
            if !name_ok(&opts.type_field) {
                return Err((
                    "load.ack.type_field",
                    "must be a non-empty ASCII field name without quotes or backslashes (or set load.ack.reply_type = \"\")".into(),
                ));
            }
            if !name_ok(&opts.reply_type) {
                return Err((
                    "load.ack.reply_type",
                    "must be ASCII without quotes or backslashes (\"\" accepts any type)".into(),
                ));
            }
        }
        let timeout_ms = opts.timeout_ms.unwrap_or(default_timeout_ms);
        if timeout_ms == 0 {
            let key = match opts.timeout_ms {
                Some(_) => "load.ack.timeout_ms",
                None => "load.message_timeout_ms",
            };
            return Err((key, "must be at least 1".into()));
        }
        if !(1..=65_536).contains(&opts.max_outstanding) {
            return Err(("load.ack.max_outstanding", "must be from 1 to 65536".into()));
        }
        Ok(Self {
            send,
            ack,
            message_size: message_size as usize,
            id_key: format!("\"{}\"", opts.id_field).into_bytes(),
            type_key: format!("\"{}\"", opts.type_field).into_bytes(),
            reply_type: if opts.reply_type.is_empty() {
                Vec::new()
            } else {
                format!("\"{}\"", opts.reply_type).into_bytes()
            },
            max_outstanding: opts.max_outstanding as usize,
            timeout_us: timeout_ms * 1000,
        })
    }

    /// The message with id `id`, exactly `load.message_size` bytes (ids
    /// of up to [`ID_ROOM`] digits, which validation guarantees room for).
    pub fn message(&self, id: u64) -> Vec<u8> {
        self.send.render(id, self.message_size)
    }

    /// The client's ack for `id` (none when `load.ack.ack` is empty).
    pub fn client_ack(&self, id: u64) -> Option<Vec<u8>> {
        self.ack.as_ref().map(|t| t.render(id, 0))
    }

    /// Whether `load.ack.ack` is set (a client ack follows each server ack).
    pub fn sends_client_acks(&self) -> bool {
        self.ack.is_some()
    }

    /// What a text message from the server is. An `"error"` field makes it
    /// an error answer (its id may be null); otherwise, with a required
    /// type, the type field must hold it; then the id field must hold an
    /// unsigned integer.
    pub fn classify(&self, msg: &[u8]) -> Answer {
        if value_of(msg, b"\"error\"").is_some() {
            return Answer::Error(scan_u64(msg, &self.id_key));
        }
        if !self.reply_type.is_empty() {
            match value_of(msg, &self.type_key) {
                Some(v) if v.starts_with(&self.reply_type) => {}
                _ => return Answer::Other,
            }
        }
        match scan_u64(msg, &self.id_key) {
            Some(id) => Answer::Ack(id),
            None => Answer::Other,
        }
    }
}

/// The bytes after the first `key` (quotes included) that is followed by
/// optional whitespace and a colon, whitespace skipped: where its value
/// starts. A fast scan, not a JSON parser: a key is anything quoted
/// followed by a colon, so keys inside string values (whose quotes JSON
/// escapes) never match.
pub fn value_of<'a>(msg: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while from + key.len() <= msg.len() {
        let at = from + msg[from..].windows(key.len()).position(|w| w == key)?;
        let mut i = at + key.len();
        while msg.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if msg.get(i) == Some(&b':') {
            i += 1;
            while msg.get(i).is_some_and(u8::is_ascii_whitespace) {
                i += 1;
            }
            return Some(&msg[i..]);
        }
        from = at + 1;
    }
    None
}

/// The unsigned integer value of `key` (quotes included), if it has one:
/// `"id":17` and `"id" : 17}` give 17; `"id":null`, `"id":"17"`,
/// `"id":-1`, `"id":1.5` and overflowing numbers give `None`.
pub fn scan_u64(msg: &[u8], key: &[u8]) -> Option<u64> {
    let v = value_of(msg, key)?;
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || matches!(v.get(digits), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    std::str::from_utf8(&v[..digits]).ok()?.parse().ok()
}

/// One message waiting for its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: u64,
    sent_us: u64,
    measured: bool,
}

/// What an answer with a given id resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Outstanding and in time: the transaction completes.
    InTime {
        /// µs from the send.
        latency_us: u64,
        /// Sent in the measured window.
        measured: bool,
    },
    /// Outstanding but past the timeout (not yet swept): a timeout.
    Late {
        /// Sent in the measured window.
        measured: bool,
    },
    /// Sent on this connection but no longer outstanding: a duplicate
    /// answer, or one after its message timed out.
    Stale,
    /// An id this connection never sent.
    Unknown,
}

/// Messages expired or settled, split by whether they were measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// Sent in the measured window.
    pub measured: u64,
    /// Sent outside it (warm-up).
    pub unmeasured: u64,
}

/// One connection's outstanding messages, oldest first (ids ascending).
#[derive(Debug, Clone, Default)]
pub struct Outstanding {
    q: VecDeque<Entry>,
    last_id: u64,
}

impl Outstanding {
    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Registers the next message sent at `now`, and returns its id, unless
    /// `max` are outstanding already (the send is skipped: `None`).
    pub fn begin(&mut self, now: u64, measured: bool, max: usize) -> Option<u64> {
        if self.q.len() >= max {
            return None;
        }
        self.last_id += 1;
        self.q.push_back(Entry {
            id: self.last_id,
            sent_us: now,
            measured,
        });
        Some(self.last_id)
    }

    /// Forgets the message just begun (its send failed); the id is not reused.
    pub fn cancel(&mut self, id: u64) {
        if self.q.back().is_some_and(|e| e.id == id) {
            self.q.pop_back();
        }
    }

    /// Removes the messages sent more than `timeout_us` before `now`.
    pub fn expire(&mut self, now: u64, timeout_us: u64) -> Settled {
        let mut s = Settled::default();
        while let Some(e) = self.q.front() {
            if now.saturating_sub(e.sent_us) <= timeout_us {
                break;
            }
            if e.measured {
                s.measured += 1;
            } else {
                s.unmeasured += 1;
            }
            self.q.pop_front();
        }
        s
    }

    /// Matches an answer's id against the outstanding messages.
    pub fn resolve(&mut self, id: u64, now: u64, timeout_us: u64) -> Resolved {
        match self.q.binary_search_by_key(&id, |e| e.id) {
            Ok(pos) => {
                let e = self.q.remove(pos).expect("found");
                let latency_us = now.saturating_sub(e.sent_us).max(1);
                if latency_us > timeout_us {
                    Resolved::Late {
                        measured: e.measured,
                    }
                } else {
                    Resolved::InTime {
                        latency_us,
                        measured: e.measured,
                    }
                }
            }
            Err(_) if id >= 1 && id <= self.last_id => Resolved::Stale,
            Err(_) => Resolved::Unknown,
        }
    }

    /// Removes everything still waiting (the connection or the run ended).
    pub fn drain(&mut self) -> Settled {
        let mut s = Settled::default();
        for e in self.q.drain(..) {
            if e.measured {
                s.measured += 1;
            } else {
                s.unmeasured += 1;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::AckOpts;

    fn proto(size: u64) -> AckProtocol {
        AckProtocol::new(&AckOpts::default(), size, 5000).unwrap()
    }

    #[test]
    fn messages_are_exactly_message_size_for_every_id_width() {
        let p = proto(100);
        for id in [1, 9, 10, 99, 12_345, 9_999_999_999] {
            let m = p.message(id);
            assert_eq!(m.len(), 100, "id {id}: {}", String::from_utf8_lossy(&m));
            let v: serde_json::Value = serde_json::from_slice(&m).expect("valid JSON");
            assert_eq!(v["id"], id);
            assert_eq!(v["type"], "msg");
        }
        // 30 bytes of envelope, 2 of id, 68 of filler.
        assert_eq!(
            String::from_utf8(p.message(17)).unwrap(),
            concat!(
                r#"{"type":"msg","id":17,"body":""#,
                "abcdefghijklmnopqrstuvwxyz",
                "abcdefghijklmnopqrstuvwxyz",
                "abcdefghijklmnop",
                r#""}"#
            )
        );
        assert_eq!(p.client_ack(17).unwrap(), br#"{"type":"ack","id":17}"#);
        // The smallest size the default envelope allows: a 10-digit id fits exactly.
        let fixed = Template::parse(DEFAULT_SEND, true).unwrap().fixed_len();
        assert_eq!(fixed, 30);
        let p = proto(40);
        assert_eq!(p.message(9_999_999_999).len(), 40);
        assert_eq!(p.message(1).len(), 40);
        assert_eq!(proto(5000).message(3).len(), 5000);
    }

    #[test]
    fn envelope_errors_name_the_key() {
        let err = |opts: AckOpts, size: u64| AckProtocol::new(&opts, size, 5000).unwrap_err();
        let (k, e) = err(AckOpts::default(), 39);
        assert_eq!(k, "load.message_size");
        assert!(
            e.contains("39") && e.contains("40") && e.contains("load.ack.send"),
            "{e}"
        );
        for (send, why) in [
            (r#"{"id":1,"body":"{payload}"}"#, "{id}"),
            (r#"{"id":{id},"b":"x"}"#, "{payload}"),
            (r#"{"id":{id},"a":{id},"b":"{payload}"}"#, "{id}"),
            (r#"{"id":{id},"a":"{payload}{payload}"}"#, "{payload}"),
        ] {
            let (k, e) = err(
                AckOpts {
                    send: send.into(),
                    ..AckOpts::default()
                },
                100,
            );
            assert_eq!(k, "load.ack.send", "{send}");
            assert!(e.contains(why), "{send}: {e}");
        }
        let (k, _) = err(
            AckOpts {
                ack: r#"{"id":{id},"p":"{payload}"}"#.into(),
                ..AckOpts::default()
            },
            100,
        );
        assert_eq!(k, "load.ack.ack");
        let (k, _) = err(
            AckOpts {
                ack: r#"{"type":"ack"}"#.into(),
                ..AckOpts::default()
            },
            100,
        );
        assert_eq!(k, "load.ack.ack");
        let (k, _) = err(
            AckOpts {
                id_field: "i\"d".into(),
                ..AckOpts::default()
            },
            100,
        );
        assert_eq!(k, "load.ack.id_field");
        let (k, _) = err(
            AckOpts {
                timeout_ms: Some(0),
                ..AckOpts::default()
            },
            100,
        );
        assert_eq!(k, "load.ack.timeout_ms");
        let (k, _) = err(
            AckOpts {
                max_outstanding: 0,
                ..AckOpts::default()
            },
            100,
        );
        assert_eq!(k, "load.ack.max_outstanding");
        // No client ack at all is allowed.
        let p = AckProtocol::new(
            &AckOpts {
                ack: String::new(),
                ..AckOpts::default()
            },
            100,
            5000,
        )
        .unwrap();
        assert_eq!(p.client_ack(1), None);
        assert_eq!(
            p.timeout_us, 5_000_000,
            "defaults to load.message_timeout_ms"
        );
    }

    #[test]
    fn other_braces_are_literal_and_a_custom_envelope_works() {
        let opts = AckOpts {
            send: r#"{"cmd":{"seq":{id}},"data":["{payload}"],"x":"{}"}"#.into(),
            ack: r#"{"ackSeq":{id}}"#.into(),
            id_field: "seq".into(),
            reply_type: String::new(),
            ..AckOpts::default()
        };
        let p = AckProtocol::new(&opts, 64, 5000).unwrap();
        let m = p.message(42);
        assert_eq!(m.len(), 64);
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["cmd"]["seq"], 42);
        assert_eq!(v["x"], "{}");
        assert_eq!(p.classify(br#"{"seq":42}"#), Answer::Ack(42));
        assert_eq!(p.classify(br#"{"type":"push","seq": 7}"#), Answer::Ack(7));
    }

    #[test]
    fn id_scan() {
        let k = b"\"id\"";
        for (msg, want) in [
            (&br#"{"type":"ack","id":17}"#[..], Some(17)),
            (br#"{"id" :  17 }"#, Some(17)),
            (br#"{"id":0}"#, Some(0)),
            (br#"{"msg_id":5,"id":6}"#, Some(6)),
            (br#"{"body":"id","id":8}"#, Some(8)),
            (br#"{"body":"\"id\":3","id":9}"#, Some(9)),
            (br#"{"id":null}"#, None),
            (br#"{"id":"17"}"#, None),
            (br#"{"id":-1}"#, None),
            (br#"{"id":1.5}"#, None),
            (br#"{"id":1e3}"#, None),
            (br#"{"id":99999999999999999999999}"#, None),
            (br#"{"id":"#, None),
            (br#"{"type":"push"}"#, None),
            (b"", None),
            (b"\"id\"", None),
            (b"not json at all", None),
        ] {
            assert_eq!(scan_u64(msg, k), want, "{}", String::from_utf8_lossy(msg));
        }
    }

    #[test]
    fn classify_acks_errors_and_pushes() {
        let p = proto(100);
        assert_eq!(p.classify(br#"{"type":"ack","id":17}"#), Answer::Ack(17));
        assert_eq!(
            p.classify(br#"{ "id": 3, "type" : "ack" }"#),
            Answer::Ack(3)
        );
        assert_eq!(
            p.classify(br#"{"error":{"code":503,"message":"backend unavailable","id":17}}"#),
            Answer::Error(Some(17))
        );
        assert_eq!(
            p.classify(br#"{"error":{"code":400,"message":"x","id":null}}"#),
            Answer::Error(None)
        );
        // A push that happens to carry an id is not an ack.
        assert_eq!(p.classify(br#"{"type":"push","id":17}"#), Answer::Other);
        assert_eq!(
            p.classify(br#"{"type":"acknowledged","id":1}"#),
            Answer::Other
        );
        assert_eq!(p.classify(br#"{"type":"ack"}"#), Answer::Other);
        assert_eq!(p.classify(br#"{"type":"ack","id":"x"}"#), Answer::Other);
        assert_eq!(p.classify(b"hello"), Answer::Other);
        assert_eq!(p.classify(b""), Answer::Other);
        // The client's own message echoed back is not an ack either.
        assert_eq!(p.classify(&p.message(5)), Answer::Other);
    }

    #[test]
    fn outstanding_matches_by_id_and_times_out_without_a_clock() {
        let mut o = Outstanding::default();
        let t = 1_000; // timeout, µs
        assert_eq!(o.begin(0, false, 3), Some(1));
        assert_eq!(o.begin(100, true, 3), Some(2));
        assert_eq!(o.begin(200, true, 3), Some(3));
        assert_eq!(o.begin(300, true, 3), None, "bound reached: skipped");
        // Out-of-order answer: 3 before 2.
        assert_eq!(
            o.resolve(3, 700, t),
            Resolved::InTime {
                latency_us: 500,
                measured: true
            }
        );
        assert_eq!(o.resolve(3, 710, t), Resolved::Stale, "duplicate");
        assert_eq!(o.resolve(4, 710, t), Resolved::Unknown, "never sent");
        assert_eq!(o.resolve(0, 710, t), Resolved::Unknown);
        // At 1,050 µs id 1 (sent at 0) is past the timeout; id 2 (100) is not.
        assert_eq!(
            o.expire(1_050, t),
            Settled {
                measured: 0,
                unmeasured: 1
            }
        );
        assert_eq!(o.len(), 1);
        assert_eq!(o.resolve(1, 1_060, t), Resolved::Stale, "ack after timeout");
        // Id 2 answered after its timeout but before a sweep: late.
        assert_eq!(o.resolve(2, 1_101, t), Resolved::Late { measured: true });
        assert!(o.is_empty());
        // Exactly at the timeout is in time.
        let id = o.begin(2_000, true, 3).unwrap();
        assert_eq!(id, 4, "ids keep counting");
        assert_eq!(o.expire(3_000, t), Settled::default());
        assert_eq!(
            o.resolve(4, 3_000, t),
            Resolved::InTime {
                latency_us: 1_000,
                measured: true
            }
        );
        // A failed send gives its slot back; the id is not reused.
        let id = o.begin(3_000, true, 1).unwrap();
        o.cancel(id);
        assert!(o.is_empty());
        assert_eq!(o.begin(3_000, true, 1), Some(id + 1));
        o.begin(3_000, false, 5);
        assert_eq!(
            o.drain(),
            Settled {
                measured: 1,
                unmeasured: 1
            }
        );
        assert!(o.is_empty());
    }

    #[test]
    fn expiry_stops_at_the_first_message_in_time() {
        let mut o = Outstanding::default();
        for now in [0, 10, 20, 30, 40] {
            o.begin(now, true, 10);
        }
        assert_eq!(o.expire(35, 10).measured, 3, "sent at 0, 10, 20");
        assert_eq!(o.len(), 2);
        assert_eq!(o.expire(35, 10).measured, 0, "idempotent");
        assert_eq!(o.expire(1_000, 10).measured, 2);
    }
}
