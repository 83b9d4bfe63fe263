//! The NATS core client protocol, sans-IO: encoders for the client
//! operations the broker needs (`CONNECT`, `SUB`, `UNSUB`, `PUB`, `PING`,
//! `PONG`), an incremental decoder for what a server sends (`INFO`, `MSG`,
//! `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`), and a reversible mapping from
//! gateway channel names to subject tokens.
//!
//! As for RESP, nothing here touches a socket: the ring's reads go into
//! [`Decoder::feed`], operations come out of [`Decoder::next`], and
//! encoders append to a `Vec<u8>` the ring sends. A message split at any
//! byte decodes as if it had arrived whole; the decoder remembers how far
//! an unfinished control line was scanned and, once a `MSG` line is read,
//! only waits for the announced number of bytes, so work stays linear.
//!
//! Subjects are checked before they are written: NATS is line-based and
//! whitespace-delimited, so a space or line break in a subject would let a
//! channel name inject protocol operations. Gateway channel names are
//! arbitrary text, so they go through [`channel_token`] first.
//!
//! The decoder bounds the control line ([`Limits::max_control_line`]) and
//! the payload ([`Limits::max_payload`], to be set from the server's
//! `INFO` `max_payload`), both checked before anything is held. Errors are
//! final, the connection must be dropped.

use std::fmt;

const CRLF: &[u8] = b"\r\n";

/// Why an operation could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The subject breaks the NATS subject rules (the reason says which).
    #[error("invalid NATS subject ({0})")]
    InvalidSubject(&'static str),
    /// The `CONNECT` options are not one line of JSON object.
    #[error("invalid CONNECT options ({0})")]
    InvalidConnect(&'static str),
}

/// Appends `CONNECT <json>\r\n`. `json` must be a JSON object on one line
/// (only that much is checked: the server validates the rest).
pub fn connect(out: &mut Vec<u8>, json: &str) -> Result<(), EncodeError> {
    if json.contains(['\r', '\n']) {
        return Err(EncodeError::InvalidConnect("line break in the JSON"));
    }
    let trimmed = json.trim();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return Err(EncodeError::InvalidConnect("not a JSON object"));
    }
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(trimmed.as_bytes());
    out.extend_from_slice(CRLF);
    Ok(())
}

/// Appends `SUB <subject> <sid>\r\n`. Wildcards (`*` tokens, a final `>`
/// token) are allowed.
pub fn sub(out: &mut Vec<u8>, subject: &str, sid: u64) -> Result<(), EncodeError> {
    validate_subject(subject, true)?;
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    push_decimal(out, sid);
    out.extend_from_slice(CRLF);
    Ok(())
}

/// Appends `UNSUB <sid>[ <max>]\r\n`: with `max`, the server removes the
/// subscription by itself once that many messages were delivered in all.
pub fn unsub(out: &mut Vec<u8>, sid: u64, max: Option<u64>) {
    out.extend_from_slice(b"UNSUB ");
    push_decimal(out, sid);
    if let Some(max) = max {
        out.push(b' ');
        push_decimal(out, max);
    }
    out.extend_from_slice(CRLF);
}

/// Appends `PUB <subject> <len>\r\n<payload>\r\n`. The subject may not
/// hold wildcards. The payload is binary-safe; keeping it under the
/// server's `max_payload` is the caller's business (the server drops the
/// connection otherwise).
pub fn publish(out: &mut Vec<u8>, subject: &str, payload: &[u8]) -> Result<(), EncodeError> {
    validate_subject(subject, false)?;
    out.reserve(subject.len() + payload.len() + 32);
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    push_decimal(out, payload.len() as u64);
    out.extend_from_slice(CRLF);
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
    Ok(())
}

/// Appends `PING\r\n`.
pub fn ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

/// Appends `PONG\r\n` (the answer to a server's `PING`, which the server
/// sends unasked, the first one soon after `CONNECT`).
pub fn pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// Checks a subject as the server does: non-empty `.`-separated tokens,
/// none empty, no whitespace (nor any other ASCII control character); with
/// `wildcards`, `*` may be a whole token and `>` the whole last token,
/// without, neither may be a token (a `*` or `>` inside a longer token is
/// an ordinary character to NATS).
pub fn validate_subject(subject: &str, wildcards: bool) -> Result<(), EncodeError> {
    if subject.is_empty() {
        return Err(EncodeError::InvalidSubject("empty subject"));
    }
    if subject.bytes().any(|b| b == b' ' || b.is_ascii_control()) {
        return Err(EncodeError::InvalidSubject(
            "whitespace or control character",
        ));
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        match token {
            "" => return Err(EncodeError::InvalidSubject("empty token")),
            "*" | ">" if !wildcards => {
                return Err(EncodeError::InvalidSubject("wildcard in a publish subject"))
            }
            ">" if tokens.peek().is_some() => {
                return Err(EncodeError::InvalidSubject("'>' before the last token"))
            }
            _ => {}
        }
    }
    Ok(())
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// One operation sent by a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {...}`: the server's JSON, trimmed of surrounding blanks
    /// (nats-server 2.9 ends the line with a space).
    Info(String),
    /// `MSG <subject> <sid> [reply-to] <#bytes>` and its payload.
    Msg {
        /// The subject it was published to.
        subject: String,
        /// The subscription it is delivered for.
        sid: u64,
        /// Where to reply, if the publisher asked.
        reply: Option<String>,
        /// The payload.
        payload: Vec<u8>,
    },
    /// `HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>`:
    /// a message with headers.
    HMsg {
        /// The subject it was published to.
        subject: String,
        /// The subscription it is delivered for.
        sid: u64,
        /// Where to reply, if the publisher asked.
        reply: Option<String>,
        /// The raw header block: `NATS/1.0[ status[ description]]\r\n`,
        /// header lines, and the empty line that ends them.
        headers: Vec<u8>,
        /// The payload after the header block.
        payload: Vec<u8>,
    },
    /// `PING`: answer with [`pong`].
    Ping,
    /// `PONG`: the answer to a [`ping`].
    Pong,
    /// `+OK`: acknowledgement in verbose mode.
    Ok,
    /// `-ERR '<message>'`: the message without its quotes (non-UTF-8
    /// bytes replaced). Most errors are followed by the server closing.
    Err(String),
}

impl ServerOp {
    /// Appends the wire form, as a server would send it (for mock servers
    /// and round-trip tests; nothing is validated).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ServerOp::Info(json) => {
                out.extend_from_slice(b"INFO ");
                out.extend_from_slice(json.as_bytes());
                out.extend_from_slice(CRLF);
            }
            ServerOp::Msg {
                subject,
                sid,
                reply,
                payload,
            } => {
                msg_line(out, b"MSG ", subject, *sid, reply.as_deref());
                push_decimal(out, payload.len() as u64);
                out.extend_from_slice(CRLF);
                out.extend_from_slice(payload);
                out.extend_from_slice(CRLF);
            }
            ServerOp::HMsg {
                subject,
                sid,
                reply,
                headers,
                payload,
            } => {
                msg_line(out, b"HMSG ", subject, *sid, reply.as_deref());
                push_decimal(out, headers.len() as u64);
                out.push(b' ');
                push_decimal(out, (headers.len() + payload.len()) as u64);
                out.extend_from_slice(CRLF);
                out.extend_from_slice(headers);
                out.extend_from_slice(payload);
                out.extend_from_slice(CRLF);
            }
            ServerOp::Ping => out.extend_from_slice(b"PING\r\n"),
            ServerOp::Pong => out.extend_from_slice(b"PONG\r\n"),
            ServerOp::Ok => out.extend_from_slice(b"+OK\r\n"),
            ServerOp::Err(text) => {
                out.extend_from_slice(b"-ERR '");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"'\r\n");
            }
        }
    }
}

/// `<op><subject> <sid> [<reply> ]`.
fn msg_line(out: &mut Vec<u8>, op: &[u8], subject: &str, sid: u64, reply: Option<&str>) {
    out.extend_from_slice(op);
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    push_decimal(out, sid);
    out.push(b' ');
    if let Some(reply) = reply {
        out.extend_from_slice(reply.as_bytes());
        out.push(b' ');
    }
}

/// Bounds on what one decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, headers included (set it to the `max_payload` of
    /// the server's `INFO`).
    pub max_payload: usize,
    /// Longest control line (operation and arguments, without CRLF); at
    /// least 8 is enforced. `INFO` is the longest line a server sends.
    pub max_control_line: usize,
}

impl Default for Limits {
    /// 1 MiB payloads (the nats-server default `max_payload`) and 16 KiB
    /// lines (room for an `INFO` listing many cluster URLs).
    fn default() -> Self {
        Limits {
            max_payload: 1 << 20,
            max_control_line: 16 << 10,
        }
    }
}

/// Why the server's byte stream cannot be decoded. Each is final: the
/// connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsError {
    /// Not the NATS protocol: the reason names the first rule broken.
    #[error("malformed NATS protocol ({0})")]
    Malformed(&'static str),
    /// Over [`Limits::max_control_line`] or [`Limits::max_payload`]; the
    /// reason says which.
    #[error("NATS operation too large ({0})")]
    TooLarge(&'static str),
}

/// Operation names, longest 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Msg,
    HMsg,
    Info,
    Ping,
    Pong,
    Ok,
    Err,
}

const OPS: [(&[u8], Op); 7] = [
    (b"MSG", Op::Msg),
    (b"HMSG", Op::HMsg),
    (b"INFO", Op::Info),
    (b"PING", Op::Ping),
    (b"PONG", Op::Pong),
    (b"+OK", Op::Ok),
    (b"-ERR", Op::Err),
];

/// A `MSG`/`HMSG` whose payload is still arriving.
#[derive(Debug)]
struct Pending {
    subject: String,
    sid: u64,
    reply: Option<String>,
    /// Header block size, for `HMSG`.
    headers: Option<usize>,
    /// Bytes before the final CRLF.
    total: usize,
}

/// Incremental decoder of server operations: [`feed`](Decoder::feed)
/// received bytes, then call [`next`](Decoder::next) until it returns
/// `Ok(None)`.
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes.
    pos: usize,
    /// Bytes of the pending control line known to hold no CR or LF.
    scanned: usize,
    pending: Option<Pending>,
    limits: Limits,
    failed: Option<NatsError>,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &self.buffered())
            .field("pending", &self.pending)
            .field("limits", &self.limits)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Decoder {
    /// A decoder for one connection, refusing anything over `limits`.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            pending: None,
            limits,
            failed: None,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Raises or lowers the payload limit (after the server's `INFO`); it
    /// applies from the next control line.
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.limits.max_payload = max_payload;
    }

    /// Received bytes not yet returned as operations (a pending message's
    /// control line, once parsed, is not counted).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True once a decoding error has been reported.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Appends received bytes. Ignored after an error.
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        crate::append_input(&mut self.buf, &mut self.pos, data);
    }

    /// The next complete operation, `Ok(None)` if more bytes are needed.
    /// After an error every call returns that error.
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<Option<ServerOp>, NatsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = match self.pending.take() {
            Some(p) => self.payload(p),
            None => self.line(),
        };
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
            self.pos = 0;
        }
        result
    }

    /// A control line, if complete.
    fn line(&mut self) -> Result<Option<ServerOp>, NatsError> {
        let avail = &self.buf[self.pos..];
        let Some(op) = op_of(avail)? else {
            return Ok(None);
        };
        // At least room for every operation name and its separator, so the
        // name check above always decides first.
        let cap = self.limits.max_control_line.max(8);
        let window = avail.len().min(cap.saturating_add(1));
        let found = avail[self.scanned.min(window)..window]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map(|i| i + self.scanned);
        let Some(end) = found else {
            if avail.len() > cap {
                return Err(NatsError::TooLarge("control line over max_control_line"));
            }
            self.scanned = window;
            return Ok(None);
        };
        if avail[end] == b'\n' {
            return Err(NatsError::Malformed("LF without CR"));
        }
        match avail.get(end + 1) {
            None => {
                self.scanned = end;
                return Ok(None);
            }
            Some(b'\n') => {}
            Some(_) => return Err(NatsError::Malformed("CR without LF")),
        }
        let name_len = OPS.iter().find(|(_, o)| *o == op).expect("known").0.len();
        let args = &avail[name_len..end];
        let parsed = self.parse(op, args)?;
        self.pos += end + 2;
        self.scanned = 0;
        match parsed {
            Line::Op(op) => Ok(Some(op)),
            Line::Payload(p) => self.payload(p),
        }
    }

    /// Arguments of `op` (starting with the separator, if any).
    fn parse(&self, op: Op, args: &[u8]) -> Result<Line, NatsError> {
        let rest = trim(args);
        let simple = |v: ServerOp| {
            if rest.is_empty() {
                Ok(Line::Op(v))
            } else {
                Err(NatsError::Malformed("unexpected arguments"))
            }
        };
        match op {
            Op::Ping => simple(ServerOp::Ping),
            Op::Pong => simple(ServerOp::Pong),
            Op::Ok => simple(ServerOp::Ok),
            Op::Err => {
                let text = match rest {
                    [b'\'', inner @ .., b'\''] => inner,
                    _ => rest,
                };
                Ok(Line::Op(ServerOp::Err(
                    String::from_utf8_lossy(text).into_owned(),
                )))
            }
            Op::Info => {
                if rest.is_empty() {
                    return Err(NatsError::Malformed("INFO without JSON"));
                }
                let json = std::str::from_utf8(rest)
                    .map_err(|_| NatsError::Malformed("INFO is not UTF-8"))?;
                Ok(Line::Op(ServerOp::Info(json.to_string())))
            }
            Op::Msg | Op::HMsg => {
                let mut fields = [&b""[..]; 6];
                let mut n = 0;
                for field in rest
                    .split(|&b| b == b' ' || b == b'\t')
                    .filter(|f| !f.is_empty())
                {
                    if n == fields.len() {
                        n += 1;
                        break;
                    }
                    fields[n] = field;
                    n += 1;
                }
                let sizes = if op == Op::Msg { 1 } else { 2 };
                if n != 2 + sizes && n != 3 + sizes {
                    return Err(NatsError::Malformed(if op == Op::Msg {
                        "MSG needs 3 or 4 arguments"
                    } else {
                        "HMSG needs 4 or 5 arguments"
                    }));
                }
                let subject = utf8(fields[0], "subject is not UTF-8")?;
                let sid = number(fields[1]).ok_or(NatsError::Malformed("invalid sid"))?;
                let reply = (n == 3 + sizes)
                    .then(|| utf8(fields[2], "reply subject is not UTF-8"))
                    .transpose()?;
                let size = |f: &[u8]| number(f).ok_or(NatsError::Malformed("invalid size"));
                let total = size(fields[n - 1])?;
                let headers = if op == Op::HMsg {
                    let h = size(fields[n - 2])?;
                    if h > total {
                        return Err(NatsError::Malformed("header size over total size"));
                    }
                    Some(h)
                } else {
                    None
                };
                if total > self.limits.max_payload as u64 {
                    return Err(NatsError::TooLarge("message over max_payload"));
                }
                Ok(Line::Payload(Pending {
                    subject,
                    sid,
                    reply,
                    headers: headers.map(|h| h as usize),
                    total: total as usize,
                }))
            }
        }
    }

    /// The payload of `p`, if all of it (and its CRLF) has arrived.
    fn payload(&mut self, p: Pending) -> Result<Option<ServerOp>, NatsError> {
        let need = p.total + 2;
        if self.buf.len() - self.pos < need {
            self.pending = Some(p);
            return Ok(None);
        }
        let data = &self.buf[self.pos..self.pos + p.total];
        if &self.buf[self.pos + p.total..self.pos + need] != CRLF {
            return Err(NatsError::Malformed("payload not followed by CRLF"));
        }
        let op = match p.headers {
            None => ServerOp::Msg {
                subject: p.subject,
                sid: p.sid,
                reply: p.reply,
                payload: data.to_vec(),
            },
            Some(h) => ServerOp::HMsg {
                subject: p.subject,
                sid: p.sid,
                reply: p.reply,
                headers: data[..h].to_vec(),
                payload: data[h..].to_vec(),
            },
        };
        self.pos += need;
        Ok(Some(op))
    }
}

/// A parsed control line.
#[derive(Debug)]
enum Line {
    Op(ServerOp),
    Payload(Pending),
}

/// The operation a control line starts with, `None` while its name may
/// still become one. Decided from the first five bytes at most.
fn op_of(avail: &[u8]) -> Result<Option<Op>, NatsError> {
    let head = &avail[..avail.len().min(5)];
    let end = head
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    let unknown = NatsError::Malformed("unknown operation");
    match end {
        Some(end) => OPS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&head[..end]))
            .map(|&(_, op)| Some(op))
            .ok_or(unknown),
        None if head.len() == 5 => Err(unknown),
        None => {
            let prefix = |name: &[u8]| {
                name.len() >= head.len() && name[..head.len()].eq_ignore_ascii_case(head)
            };
            if OPS.iter().any(|(name, _)| prefix(name)) {
                Ok(None)
            } else {
                Err(unknown)
            }
        }
    }
}

/// Without leading and trailing spaces and tabs.
fn trim(s: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !blank(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !blank(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

fn utf8(s: &[u8], why: &'static str) -> Result<String, NatsError> {
    String::from_utf8(s.to_vec()).map_err(|_| NatsError::Malformed(why))
}

/// A decimal that fits a u64 (digits only).
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The base64url alphabet (RFC 4648 §5).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The token standing for the empty channel. One character is never a
/// base64 encoding (lengths are 0, 2 or 3 mod 4), so it cannot collide.
const EMPTY_TOKEN: &str = "_";

/// Makes a gateway channel name one valid NATS subject token:
/// base64url (RFC 4648 §5) of its UTF-8 bytes, without padding; the empty
/// channel, whose encoding would be the (invalid) empty token, is `_`.
///
/// Why this encoding: channel names may hold anything NATS gives meaning to
/// (`.` splits tokens, `*` and `>` are wildcards, whitespace ends the
/// subject), so escaping only some characters would need a second escape
/// for the escape character; base64url maps every name to `[A-Za-z0-9_-]`,
/// which NATS never interprets, in 4 bytes per 3 (hex would take 2 per 1).
/// It is deterministic, and [`channel_from_token`] inverts it exactly,
/// refusing non-canonical spellings, so two names never share a subject.
/// The tokens are opaque in NATS monitoring output; a readable prefix
/// token (`gw.<token>`) is left to the caller.
pub fn channel_token(channel: &str) -> String {
    let bytes = channel.as_bytes();
    if bytes.is_empty() {
        return EMPTY_TOKEN.to_string();
    }
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A token that is not the output of [`channel_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a channel token ({0})")]
pub struct TokenError(pub &'static str);

/// The channel name [`channel_token`] made `token` from.
pub fn channel_from_token(token: &str) -> Result<String, TokenError> {
    if token == EMPTY_TOKEN {
        return Ok(String::new());
    }
    let t = token.as_bytes();
    if t.is_empty() || t.len() % 4 == 1 {
        return Err(TokenError("impossible length"));
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3 + 2);
    for chunk in t.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => return Err(TokenError("character outside base64url")),
            };
            n |= u32::from(v) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = chunk.len() - 1;
        // Bits past the last whole byte must be zero: one spelling only.
        if n & (0xff_ffff >> (8 * keep)) != 0 {
            return Err(TokenError("non-canonical padding bits"));
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    String::from_utf8(out).map_err(|_| TokenError("not UTF-8"))
}

#[cfg(test)]
mod tests;
