//! Redis serialization protocol (RESP2 and RESP3), sans-IO: an encoder for
//! commands, an incremental decoder for replies and pushes under limits, and
//! a classifier for the pub/sub messages the cluster broker relies on.
//!
//! The broker client runs on an io_uring ring, so nothing here reads a
//! socket: completed reads go into [`Decoder::feed`] and whole values come
//! out of [`Decoder::next`]; commands are appended to a `Vec<u8>` that the
//! ring sends. The decoder keeps its progress between reads (open
//! aggregates on a stack, the position of a pending bulk string, how far an
//! unfinished line was scanned), so a reply cut at any byte decodes exactly
//! as if it had arrived whole, and the work stays linear in the bytes
//! received however the reads split them.
//!
//! Every length on the wire is checked before anything is allocated for
//! it ([`Limits`]): a server — or whatever answers on that port — cannot
//! make the gateway reserve memory by announcing a huge bulk string or
//! array, nor exhaust the stack with nesting (the decoder does not recurse).
//! A decoding error is final: the byte stream has lost its framing, so the
//! decoder reports the same error from then on and the connection must be
//! dropped.
//!
//! RESP3 attributes (`|`) are side information about the value that
//! follows; they are decoded (under the same limits) and discarded. The
//! streamed RESP3 forms (`$?`, `*?`, `;`, `.`) are not used by Redis and
//! are refused.

use std::fmt;

const CRLF: &[u8] = b"\r\n";

/// Longest line accepted for a number-like header (`:`, `$`, `*`, `%`, `,`
/// ...). The longest legitimate one, a double, is 24 bytes.
const NUMBER_LINE: usize = 64;

/// Most elements reserved up front for an aggregate: the announced count
/// is only a promise until the elements arrive.
const PREALLOC: usize = 64;

/// Appends a command as a RESP array of bulk strings (binary-safe; this is
/// how clients send every command).
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    header(out, b'*', args.len());
    for arg in args {
        header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(CRLF);
    }
}

/// `ty`, the decimal `n`, CRLF.
fn header(out: &mut Vec<u8>, ty: u8, n: usize) {
    out.push(ty);
    push_decimal(out, n as u64);
    out.extend_from_slice(CRLF);
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

/// One RESP value. Strings are bytes: Redis strings are binary-safe, and
/// even status and error lines may echo user data.
///
/// Equality compares doubles by their bits ([`f64::total_cmp`]), so that a
/// value always equals itself (NaN included) and `Value` is [`Eq`].
#[derive(Debug, Clone)]
pub enum Value {
    /// `+`: a status line such as `OK` or `PONG`.
    Simple(Vec<u8>),
    /// `-`: an error line, e.g. `ERR unknown command ...`.
    Error(Vec<u8>),
    /// `:`: a signed 64-bit integer.
    Integer(i64),
    /// `$`: a bulk string.
    Bulk(Vec<u8>),
    /// `$-1`: the RESP2 null bulk string.
    NullBulk,
    /// `*`: an array.
    Array(Vec<Value>),
    /// `*-1`: the RESP2 null array.
    NullArray,
    /// `_`: the RESP3 null.
    Null,
    /// `#t` / `#f`: a RESP3 boolean.
    Boolean(bool),
    /// `,`: a RESP3 double (`inf`, `-inf` and `nan` included; every NaN
    /// is decoded as [`f64::NAN`]).
    Double(f64),
    /// `(`: a RESP3 big number, as its decimal text (optional sign, digits).
    BigNumber(String),
    /// `!`: a RESP3 bulk error.
    BulkError(Vec<u8>),
    /// `=`: a RESP3 verbatim string: a three-byte format (`txt`, `mkd`) and
    /// the text.
    Verbatim {
        /// The format, e.g. `*b"txt"`.
        format: [u8; 3],
        /// The text after `format:`.
        text: Vec<u8>,
    },
    /// `%`: a RESP3 map, pairs in wire order.
    Map(Vec<(Value, Value)>),
    /// `~`: a RESP3 set, elements in wire order.
    Set(Vec<Value>),
    /// `>`: a RESP3 push (out-of-band data such as pub/sub messages).
    Push(Vec<Value>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Simple(a), Simple(b))
            | (Error(a), Error(b))
            | (Bulk(a), Bulk(b))
            | (BulkError(a), BulkError(b)) => a == b,
            (Integer(a), Integer(b)) => a == b,
            (NullBulk, NullBulk) | (NullArray, NullArray) | (Null, Null) => true,
            (Array(a), Array(b)) | (Set(a), Set(b)) | (Push(a), Push(b)) => a == b,
            (Boolean(a), Boolean(b)) => a == b,
            (Double(a), Double(b)) => a.total_cmp(b).is_eq(),
            (BigNumber(a), BigNumber(b)) => a == b,
            (
                Verbatim {
                    format: fa,
                    text: ta,
                },
                Verbatim {
                    format: fb,
                    text: tb,
                },
            ) => fa == fb && ta == tb,
            (Map(a), Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Value {
    /// True for the three nulls (`$-1`, `*-1`, `_`).
    pub fn is_null(&self) -> bool {
        matches!(self, Value::NullBulk | Value::NullArray | Value::Null)
    }

    /// The error text of an error line or bulk error.
    pub fn error_text(&self) -> Option<&[u8]> {
        match self {
            Value::Error(e) | Value::BulkError(e) => Some(e),
            _ => None,
        }
    }

    /// The bytes of a string-like value (status line, bulk string, verbatim
    /// text).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(s) | Value::Bulk(s) | Value::Verbatim { text: s, .. } => Some(s),
            _ => None,
        }
    }

    /// The integer of an integer reply.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// Appends the wire form of this value, as a server would send it (for
    /// mock servers and round-trip tests). Status and error lines are
    /// written as they are: they must not contain CR or LF.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Simple(s) => line(out, b'+', s),
            Value::Error(s) => line(out, b'-', s),
            Value::Integer(n) => {
                out.push(b':');
                if *n < 0 {
                    out.push(b'-');
                }
                push_decimal(out, n.unsigned_abs());
                out.extend_from_slice(CRLF);
            }
            Value::Bulk(b) => blob(out, b'$', b),
            Value::NullBulk => out.extend_from_slice(b"$-1\r\n"),
            Value::Array(items) => aggregate(out, b'*', items),
            Value::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Value::Null => out.extend_from_slice(b"_\r\n"),
            Value::Boolean(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Value::Double(d) => {
                let text = if d.is_nan() {
                    "nan".to_string()
                } else if d.is_infinite() {
                    if *d > 0.0 { "inf" } else { "-inf" }.to_string()
                } else {
                    // Debug is the shortest text that parses back to the
                    // same bits, with an exponent for very large or small
                    // magnitudes (at most 24 bytes).
                    format!("{d:?}")
                };
                line(out, b',', text.as_bytes());
            }
            Value::BigNumber(n) => line(out, b'(', n.as_bytes()),
            Value::BulkError(e) => blob(out, b'!', e),
            Value::Verbatim { format, text } => {
                header(out, b'=', text.len() + 4);
                out.extend_from_slice(format);
                out.push(b':');
                out.extend_from_slice(text);
                out.extend_from_slice(CRLF);
            }
            Value::Map(pairs) => {
                header(out, b'%', pairs.len());
                for (k, v) in pairs {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Value::Set(items) => aggregate(out, b'~', items),
            Value::Push(items) => aggregate(out, b'>', items),
        }
    }
}

fn line(out: &mut Vec<u8>, ty: u8, text: &[u8]) {
    out.push(ty);
    out.extend_from_slice(text);
    out.extend_from_slice(CRLF);
}

fn blob(out: &mut Vec<u8>, ty: u8, data: &[u8]) {
    header(out, ty, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(CRLF);
}

fn aggregate(out: &mut Vec<u8>, ty: u8, items: &[Value]) {
    header(out, ty, items.len());
    for item in items {
        item.encode(out);
    }
}

/// Bounds on what one decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string, bulk error or verbatim string, and longest
    /// status line, error line or big number.
    pub max_bulk_bytes: usize,
    /// Most elements in one top-level value, counted over all nesting
    /// levels as announced (a map pair counts two, attributes count too).
    pub max_elements: usize,
    /// Deepest nesting of aggregates (a flat array is depth 1). The
    /// decoder itself does not recurse, but dropping, comparing or
    /// printing a [`Value`] does: keep this small.
    pub max_depth: usize,
}

impl Default for Limits {
    /// 16 MiB strings, 1 Mi elements, depth 16: far above what pub/sub
    /// replies need, far below what would hurt the gateway.
    fn default() -> Self {
        Limits {
            max_bulk_bytes: 16 << 20,
            max_elements: 1 << 20,
            max_depth: 16,
        }
    }
}

/// Why the byte stream cannot be decoded. Each is final: the connection
/// must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// Not RESP: the reason names the first rule broken.
    #[error("malformed RESP ({0})")]
    Malformed(&'static str),
    /// Over [`Limits::max_bulk_bytes`] or [`Limits::max_elements`]; the
    /// reason names which.
    #[error("RESP value too large ({0})")]
    TooLarge(&'static str),
    /// Aggregates nested deeper than [`Limits::max_depth`] (the limit).
    #[error("RESP aggregates nested deeper than {0}")]
    TooDeep(usize),
}

/// Aggregate kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agg {
    Array,
    Set,
    Push,
    Map,
    Attribute,
}

/// An aggregate whose elements are still arriving.
#[derive(Debug)]
struct Open {
    kind: Agg,
    /// Elements announced (twice the pairs for maps and attributes).
    want: usize,
    items: Vec<Value>,
}

/// Length-prefixed kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blob {
    Bulk,
    BulkError,
    Verbatim,
}

/// What the next bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A type byte and its line.
    Line,
    /// `len` bytes of data then CRLF.
    Blob { kind: Blob, len: usize },
}

/// Incremental RESP2/RESP3 decoder: [`feed`](Decoder::feed) received bytes,
/// then call [`next`](Decoder::next) until it returns `Ok(None)`.
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    /// Bytes after the type byte of the pending line known to hold no CR or
    /// LF (so an unfinished line is never scanned twice).
    scanned: usize,
    expect: Expect,
    /// Open aggregates, outermost first.
    stack: Vec<Open>,
    /// Elements announced so far in the current top-level value.
    elements: usize,
    limits: Limits,
    failed: Option<RespError>,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &self.buffered())
            .field("expect", &self.expect)
            .field("depth", &self.stack.len())
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
            expect: Expect::Line,
            stack: Vec::new(),
            elements: 0,
            limits,
            failed: None,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Received bytes not yet parsed. The parsed part of a value still
    /// incomplete (lines of its open aggregates) is held decoded and not
    /// counted.
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

    /// The next complete top-level value, `Ok(None)` if more bytes are
    /// needed. After an error every call returns that error.
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<Option<Value>, RespError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.step();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
            self.pos = 0;
            self.stack = Vec::new();
        }
        result
    }

    fn step(&mut self) -> Result<Option<Value>, RespError> {
        loop {
            let value = match self.expect {
                Expect::Line => match self.line()? {
                    Progress::Wait => return Ok(None),
                    Progress::Opened => continue,
                    Progress::Value(v) => v,
                },
                Expect::Blob { kind, len } => match self.blob(kind, len)? {
                    Some(v) => v,
                    None => return Ok(None),
                },
            };
            if let Some(top) = self.complete(value) {
                self.elements = 0;
                return Ok(Some(top));
            }
        }
    }

    /// A type byte and its line, if complete.
    fn line(&mut self) -> Result<Progress, RespError> {
        let Some(&ty) = self.buf.get(self.pos) else {
            return Ok(Progress::Wait);
        };
        let cap = match ty {
            b'+' | b'-' | b'(' => self.limits.max_bulk_bytes,
            b':' | b'$' | b'*' | b'_' | b'#' | b',' | b'!' | b'=' | b'%' | b'~' | b'|' | b'>' => {
                NUMBER_LINE
            }
            _ => return Err(RespError::Malformed("unknown type byte")),
        };
        let start = self.pos + 1;
        let avail = &self.buf[start..];
        // Content of at most `cap` bytes, then CR: nothing past that is
        // looked at, so a line is refused at the same byte however it was
        // split.
        let window = avail.len().min(cap.saturating_add(1));
        let found = avail[self.scanned.min(window)..window]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map(|i| i + self.scanned);
        let Some(end) = found else {
            if avail.len() > cap {
                return Err(if cap == NUMBER_LINE {
                    RespError::Malformed("header line too long")
                } else {
                    RespError::TooLarge("line over max_bulk_bytes")
                });
            }
            self.scanned = window;
            return Ok(Progress::Wait);
        };
        if avail[end] == b'\n' {
            return Err(RespError::Malformed("LF without CR"));
        }
        match avail.get(end + 1) {
            None => {
                self.scanned = end;
                return Ok(Progress::Wait);
            }
            Some(b'\n') => {}
            Some(_) => return Err(RespError::Malformed("CR without LF")),
        }
        self.pos = start + end + 2;
        self.scanned = 0;
        self.parse_line(ty, start, start + end)
    }

    /// Acts on the complete line `buf[from..to]` of type `ty`.
    fn parse_line(&mut self, ty: u8, from: usize, to: usize) -> Result<Progress, RespError> {
        let text = &self.buf[from..to];
        let value = match ty {
            b'+' => Value::Simple(text.to_vec()),
            b'-' => Value::Error(text.to_vec()),
            b':' => Value::Integer(
                std::str::from_utf8(text)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(RespError::Malformed("invalid integer"))?,
            ),
            b'_' if text.is_empty() => Value::Null,
            b'_' => return Err(RespError::Malformed("null with a payload")),
            b'#' => match text {
                b"t" => Value::Boolean(true),
                b"f" => Value::Boolean(false),
                _ => return Err(RespError::Malformed("boolean not t or f")),
            },
            b',' => Value::Double(parse_double(text)?),
            b'(' => Value::BigNumber(parse_big(text)?),
            b'$' | b'!' | b'=' => {
                let kind = match ty {
                    b'$' => Blob::Bulk,
                    b'!' => Blob::BulkError,
                    _ => Blob::Verbatim,
                };
                let len = match parse_len(text)? {
                    None if kind == Blob::Bulk => return Ok(Progress::Value(Value::NullBulk)),
                    None => return Err(RespError::Malformed("negative length")),
                    Some(len) => len,
                };
                if len > self.limits.max_bulk_bytes {
                    return Err(RespError::TooLarge("bulk string over max_bulk_bytes"));
                }
                if kind == Blob::Verbatim && len < 4 {
                    return Err(RespError::Malformed("verbatim string without format"));
                }
                self.expect = Expect::Blob { kind, len };
                return Ok(Progress::Opened);
            }
            _ => {
                let kind = match ty {
                    b'*' => Agg::Array,
                    b'~' => Agg::Set,
                    b'>' => Agg::Push,
                    b'%' => Agg::Map,
                    _ => Agg::Attribute,
                };
                let n = match parse_len(text)? {
                    None if kind == Agg::Array => return Ok(Progress::Value(Value::NullArray)),
                    None => return Err(RespError::Malformed("negative length")),
                    Some(n) => n,
                };
                return self.open(kind, n);
            }
        };
        Ok(Progress::Value(value))
    }

    /// Starts an aggregate of `n` entries (pairs for maps and attributes).
    fn open(&mut self, kind: Agg, n: usize) -> Result<Progress, RespError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(RespError::TooDeep(self.limits.max_depth));
        }
        let want = match kind {
            Agg::Map | Agg::Attribute => n.checked_mul(2),
            _ => Some(n),
        };
        let total = want.and_then(|w| w.checked_add(self.elements));
        let (Some(want), Some(total)) = (want, total) else {
            return Err(RespError::TooLarge("aggregate over max_elements"));
        };
        if total > self.limits.max_elements {
            return Err(RespError::TooLarge("aggregate over max_elements"));
        }
        self.elements = total;
        if want == 0 {
            return Ok(match kind {
                Agg::Attribute => Progress::Opened,
                _ => Progress::Value(finish(kind, Vec::new())),
            });
        }
        self.stack.push(Open {
            kind,
            want,
            items: Vec::with_capacity(want.min(PREALLOC)),
        });
        Ok(Progress::Opened)
    }

    /// The data of a bulk string, bulk error or verbatim string, if all of
    /// it (and its CRLF) has arrived.
    fn blob(&mut self, kind: Blob, len: usize) -> Result<Option<Value>, RespError> {
        if self.buf.len() - self.pos < len.saturating_add(2) {
            return Ok(None);
        }
        let data = &self.buf[self.pos..self.pos + len];
        if &self.buf[self.pos + len..self.pos + len + 2] != CRLF {
            return Err(RespError::Malformed("bulk data not followed by CRLF"));
        }
        let value = match kind {
            Blob::Bulk => Value::Bulk(data.to_vec()),
            Blob::BulkError => Value::BulkError(data.to_vec()),
            Blob::Verbatim => {
                if data[3] != b':' {
                    return Err(RespError::Malformed("verbatim string without format"));
                }
                Value::Verbatim {
                    format: [data[0], data[1], data[2]],
                    text: data[4..].to_vec(),
                }
            }
        };
        self.pos += len + 2;
        self.expect = Expect::Line;
        Ok(Some(value))
    }

    /// Places a finished value in the innermost open aggregate, closing
    /// those it completes. `Some` when a top-level value is done.
    fn complete(&mut self, mut value: Value) -> Option<Value> {
        loop {
            let Some(open) = self.stack.last_mut() else {
                return Some(value);
            };
            open.items.push(value);
            if open.items.len() < open.want {
                return None;
            }
            let open = self.stack.pop().expect("just seen");
            if open.kind == Agg::Attribute {
                // Side information for the value that follows: dropped,
                // and it is not an element of its parent.
                return None;
            }
            value = finish(open.kind, open.items);
        }
    }
}

/// What a line did.
#[derive(Debug)]
enum Progress {
    /// Incomplete: wait for more bytes.
    Wait,
    /// Started a blob or aggregate (or read an empty attribute): go on.
    Opened,
    /// A finished value.
    Value(Value),
}

fn finish(kind: Agg, items: Vec<Value>) -> Value {
    match kind {
        Agg::Array => Value::Array(items),
        Agg::Set => Value::Set(items),
        Agg::Push => Value::Push(items),
        Agg::Map | Agg::Attribute => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Value::Map(pairs)
        }
    }
}

/// A length: `None` for `-1`, else a non-negative decimal.
fn parse_len(text: &[u8]) -> Result<Option<usize>, RespError> {
    if text == b"-1" {
        return Ok(None);
    }
    if text == b"?" {
        return Err(RespError::Malformed(
            "streamed RESP3 types are not supported",
        ));
    }
    if text.first() == Some(&b'-') {
        return Err(RespError::Malformed("negative length"));
    }
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return Err(RespError::Malformed("invalid length"));
    }
    let n = text.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    // Over usize on 32-bit targets: larger than any limit anyway.
    Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
}

fn parse_double(text: &[u8]) -> Result<f64, RespError> {
    let d: f64 = std::str::from_utf8(text)
        .ok()
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::Malformed("invalid double"))?;
    // One NaN (`-nan` parses to a negative one), so that equal text makes
    // equal values and re-encoding is lossless.
    Ok(if d.is_nan() { f64::NAN } else { d })
}

fn parse_big(text: &[u8]) -> Result<String, RespError> {
    let digits = match text.first() {
        Some(b'-' | b'+') => &text[1..],
        _ => text,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RespError::Malformed("invalid big number"));
    }
    Ok(String::from_utf8(text.to_vec()).expect("ASCII"))
}

/// Which kind of subscription a pub/sub confirmation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    /// `SUBSCRIBE` / `UNSUBSCRIBE`.
    Channel,
    /// `SSUBSCRIBE` / `SUNSUBSCRIBE` (sharded, Redis >= 7).
    Shard,
    /// `PSUBSCRIBE` / `PUNSUBSCRIBE`.
    Pattern,
}

/// A value received on a pub/sub connection, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubEvent {
    /// A publication: `message` (from `PUBLISH`) or `smessage` (from
    /// `SPUBLISH`).
    Message {
        /// The channel it was published to.
        channel: Vec<u8>,
        /// The published payload.
        payload: Vec<u8>,
    },
    /// A subscription confirmed: one per channel of the command.
    Subscribed {
        /// Which command.
        kind: SubKind,
        /// The channel (or pattern).
        channel: Vec<u8>,
        /// Subscriptions the connection now has. Redis 7.0 counts
        /// shard channels apart from channels and patterns.
        count: u64,
    },
    /// An unsubscription confirmed: one per channel.
    Unsubscribed {
        /// Which command.
        kind: SubKind,
        /// The channel, `None` when an unsubscribe-all found nothing to
        /// remove (Redis sends a null channel then).
        channel: Option<Vec<u8>>,
        /// Subscriptions left (of that kind's count, see
        /// [`PubSubEvent::Subscribed::count`]).
        count: u64,
    },
    /// The answer to `PING`: RESP2 in subscribed mode sends
    /// `["pong", argument]` (`""` without argument); otherwise `+PONG`
    /// (an empty payload here). RESP3's answer to `PING arg` is a plain
    /// bulk string and stays [`PubSubEvent::Other`].
    Pong(Vec<u8>),
    /// Anything else: command replies, errors, `pmessage`, other pushes.
    Other(Value),
}

/// Classifies a value read on a pub/sub connection: RESP2 arrays and RESP3
/// pushes of the same shape are treated alike. A value that only looks
/// close (wrong arity or element types) is [`PubSubEvent::Other`].
pub fn classify(v: Value) -> PubSubEvent {
    match v {
        Value::Simple(s) if s.eq_ignore_ascii_case(b"PONG") => PubSubEvent::Pong(Vec::new()),
        Value::Array(items) => {
            classify_items(items).unwrap_or_else(|i| PubSubEvent::Other(Value::Array(i)))
        }
        Value::Push(items) => {
            classify_items(items).unwrap_or_else(|i| PubSubEvent::Other(Value::Push(i)))
        }
        other => PubSubEvent::Other(other),
    }
}

/// The shape a pub/sub array is expected to have.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Message,
    Sub(SubKind),
    Unsub(SubKind),
    Pong,
}

fn classify_items(items: Vec<Value>) -> Result<PubSubEvent, Vec<Value>> {
    let Some(shape) = shape_of(&items) else {
        return Err(items);
    };
    let mut it = items.into_iter().skip(1);
    let (a, b) = (it.next(), it.next());
    Ok(match (shape, a, b) {
        (Shape::Message, Some(channel), Some(payload)) => PubSubEvent::Message {
            channel: into_bytes(channel),
            payload: into_bytes(payload),
        },
        (Shape::Sub(kind), Some(channel), Some(Value::Integer(n))) => PubSubEvent::Subscribed {
            kind,
            channel: into_bytes(channel),
            count: n as u64,
        },
        (Shape::Unsub(kind), Some(channel), Some(Value::Integer(n))) => PubSubEvent::Unsubscribed {
            kind,
            channel: (!channel.is_null()).then(|| into_bytes(channel)),
            count: n as u64,
        },
        (Shape::Pong, Some(payload), None) => PubSubEvent::Pong(into_bytes(payload)),
        _ => unreachable!("shape_of checked the elements"),
    })
}

/// Checks kind name, arity and element types without taking anything.
fn shape_of(items: &[Value]) -> Option<Shape> {
    let name = text_of(items.first()?)?;
    let lower = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    let shape = if lower("message") || lower("smessage") {
        Shape::Message
    } else if lower("subscribe") {
        Shape::Sub(SubKind::Channel)
    } else if lower("ssubscribe") {
        Shape::Sub(SubKind::Shard)
    } else if lower("psubscribe") {
        Shape::Sub(SubKind::Pattern)
    } else if lower("unsubscribe") {
        Shape::Unsub(SubKind::Channel)
    } else if lower("sunsubscribe") {
        Shape::Unsub(SubKind::Shard)
    } else if lower("punsubscribe") {
        Shape::Unsub(SubKind::Pattern)
    } else if lower("pong") {
        Shape::Pong
    } else {
        return None;
    };
    let count = |v: &Value| matches!(v, Value::Integer(n) if *n >= 0);
    let ok = match (shape, &items[1..]) {
        (Shape::Message, [c, p]) => text_of(c).is_some() && text_of(p).is_some(),
        (Shape::Sub(_), [c, n]) => text_of(c).is_some() && count(n),
        (Shape::Unsub(_), [c, n]) => (text_of(c).is_some() || c.is_null()) && count(n),
        (Shape::Pong, [p]) => text_of(p).is_some(),
        _ => false,
    };
    ok.then_some(shape)
}

/// A bulk string or status line.
fn text_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bulk(s) | Value::Simple(s) => Some(s),
        _ => None,
    }
}

fn into_bytes(v: Value) -> Vec<u8> {
    match v {
        Value::Bulk(s) | Value::Simple(s) => s,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
