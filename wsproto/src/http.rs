//! HTTP/1.1 heads and bodies, sans-IO: request and response heads parsed
//! with `httparse` under size limits, body framing (`Content-Length`,
//! chunked, or to end of stream) with an incremental chunked decoder, and
//! writers for requests and responses.
//!
//! The same code serves the WebSocket upgrade (server and client role), the
//! admin and API listener, and the gateway's upstream HTTP client. Parsing
//! never looks past the limits it is given: a head that has not ended
//! within `max_bytes` is refused (431) however much more arrives.

use std::fmt::Write as _;

/// Bounds on a message head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest head accepted, request/status line included.
    pub max_bytes: usize,
    /// Most header fields accepted.
    pub max_headers: usize,
}

/// A refused request: an HTTP status and a short reason sent as the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status code.
    pub status: u16,
    /// Short, stable description, e.g. `"missing Sec-WebSocket-Key"`.
    pub reason: &'static str,
}

impl Reject {
    /// A rejection with `status` and `reason`.
    pub const fn new(status: u16, reason: &'static str) -> Self {
        Reject { status, reason }
    }

    /// The complete response (`text/plain` body: the reason); the connection
    /// is closed after it. A 426 carries `Sec-WebSocket-Version: 13` so the
    /// client learns which version to retry with (RFC 6455 §4.4), a 405 the
    /// allowed method (RFC 9110 §15.5.6).
    pub fn response(&self) -> Vec<u8> {
        let extra: &[(&str, &str)] = match self.status {
            426 => &[("Sec-WebSocket-Version", "13")],
            405 => &[("Allow", "GET")],
            _ => &[],
        };
        let mut body = String::with_capacity(self.reason.len() + 1);
        body.push_str(self.reason);
        body.push('\n');
        response(
            self.status,
            extra,
            Some("text/plain"),
            body.as_bytes(),
            false,
        )
    }
}

/// Outcome of parsing a head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head<T> {
    /// Not complete yet (and still within the limits): read more, call again
    /// with everything received so far.
    Incomplete,
    /// A complete head.
    Complete(T),
    /// Malformed or over a limit.
    Invalid(Reject),
}

/// A parsed request head, borrowing the input.
#[derive(Debug, Clone, Copy)]
pub struct Request<'h, 'b> {
    /// Method, e.g. `GET`.
    pub method: &'b str,
    /// Request target as sent: path and query.
    pub target: &'b str,
    /// Minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Header fields in order.
    pub headers: &'h [httparse::Header<'b>],
    /// Length of the head; the body (or a pipelined message) starts here.
    pub head_len: usize,
}

/// A parsed response head, borrowing the input.
#[derive(Debug, Clone, Copy)]
pub struct Response<'h, 'b> {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: &'b str,
    /// Minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Header fields in order.
    pub headers: &'h [httparse::Header<'b>],
    /// Length of the head; the body starts here.
    pub head_len: usize,
}

/// Header lookups shared by requests and responses.
pub trait Headers<'b> {
    /// The header fields.
    fn fields(&self) -> &[httparse::Header<'b>];

    /// Values of every field named `name` (ASCII case-insensitive), in order.
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's
    where
        'b: 's,
    {
        self.fields()
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The first value of `name`, if any.
    fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.values(name).next()
    }

    /// Whether the comma-separated list in the `name` fields (possibly
    /// spread over several lines, RFC 9110 §5.3) contains `token`.
    fn has_token(&self, name: &str, token: &[u8], ignore_case: bool) -> bool {
        self.values(name)
            .flat_map(|value| value.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .any(|t| {
                if ignore_case {
                    t.eq_ignore_ascii_case(token)
                } else {
                    t == token
                }
            })
    }
}

impl<'b> Headers<'b> for Request<'_, 'b> {
    fn fields(&self) -> &[httparse::Header<'b>] {
        self.headers
    }
}

impl<'b> Headers<'b> for Response<'_, 'b> {
    fn fields(&self) -> &[httparse::Header<'b>] {
        self.headers
    }
}

impl<'b> Request<'_, 'b> {
    /// The path, query string removed.
    pub fn path(&self) -> &'b str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    /// The query string (after `?`), if any.
    pub fn query(&self) -> Option<&'b str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// How the request body is framed. Requests never run to end of stream:
    /// no length means no body (RFC 9112 §6.3).
    pub fn body(&self) -> Result<BodyKind, Reject> {
        match framing(self)? {
            BodyKind::ToEof => Ok(BodyKind::Length(0)),
            other => Ok(other),
        }
    }

    /// Whether the client lets the connection stay open after the response.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.has_token("Connection", b"keep-alive", true)
        } else {
            !self.has_token("Connection", b"close", true)
        }
    }
}

impl Response<'_, '_> {
    /// How the response body is framed; `head_request` when it answers a
    /// `HEAD` (no body whatever the headers say).
    pub fn body(&self, head_request: bool) -> Result<BodyKind, Reject> {
        if head_request || (100..200).contains(&self.status) || matches!(self.status, 204 | 304) {
            return Ok(BodyKind::Length(0));
        }
        framing(self)
    }

    /// Whether the server keeps the connection open after this response.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.has_token("Connection", b"keep-alive", true)
        } else {
            !self.has_token("Connection", b"close", true)
        }
    }
}

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Exactly this many bytes (0: no body).
    Length(usize),
    /// `Transfer-Encoding: chunked`: decode with [`ChunkedDecoder`].
    Chunked,
    /// Until the peer closes (responses only).
    ToEof,
}

/// RFC 9112 §6: chunked wins and must be the last coding; a
/// `Content-Length` beside it, or two different lengths, is refused (the
/// classic request-smuggling ambiguity).
fn framing<'b>(h: &impl Headers<'b>) -> Result<BodyKind, Reject> {
    let mut codings = h.values("Transfer-Encoding").peekable();
    if codings.peek().is_some() {
        if h.header("Content-Length").is_some() {
            return Err(Reject::new(
                400,
                "both Content-Length and Transfer-Encoding",
            ));
        }
        let last = h
            .values("Transfer-Encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .last();
        return match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => Ok(BodyKind::Chunked),
            _ => Err(Reject::new(501, "unsupported Transfer-Encoding")),
        };
    }
    let mut length = None;
    for value in h.values("Content-Length") {
        for part in value.split(|&b| b == b',') {
            let n = parse_decimal(part.trim_ascii())
                .ok_or(Reject::new(400, "invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Reject::new(400, "conflicting Content-Length"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(BodyKind::ToEof, BodyKind::Length))
}

fn parse_decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Header slots kept on the stack; a limit above it falls back to the heap.
/// Heads are re-parsed on every read until complete, so avoiding an
/// allocation per attempt matters a little.
const INLINE_HEADERS: usize = 32;

/// Runs `f` with header storage for `max_headers` fields.
fn with_slots<'b, R>(max_headers: usize, f: impl FnOnce(&mut [httparse::Header<'b>]) -> R) -> R {
    if max_headers <= INLINE_HEADERS {
        let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
        f(&mut inline[..max_headers])
    } else {
        f(&mut vec![httparse::EMPTY_HEADER; max_headers])
    }
}

/// Maps httparse's verdict on the first `max_bytes` of `buf` to [`Head`].
fn verdict(
    result: httparse::Result<usize>,
    buf_len: usize,
    limits: HeadLimits,
) -> Result<usize, Head<std::convert::Infallible>> {
    match result {
        Ok(httparse::Status::Complete(n)) => Ok(n),
        Ok(httparse::Status::Partial) if buf_len > limits.max_bytes => {
            Err(Head::Invalid(Reject::new(431, "request head too large")))
        }
        Ok(httparse::Status::Partial) => Err(Head::Incomplete),
        Err(httparse::Error::TooManyHeaders) => {
            Err(Head::Invalid(Reject::new(431, "too many headers")))
        }
        Err(_) => Err(Head::Invalid(Reject::new(400, "malformed HTTP message"))),
    }
}

fn relay<T>(h: Head<std::convert::Infallible>) -> Head<T> {
    match h {
        Head::Incomplete => Head::Incomplete,
        Head::Invalid(r) => Head::Invalid(r),
        Head::Complete(never) => match never {},
    }
}

/// Parses the request head at the start of `buf` (everything received so
/// far) and passes the outcome to `f`. Bytes after the head are not
/// consumed: they are a body or a pipelined message.
pub fn with_request<R>(
    buf: &[u8],
    limits: HeadLimits,
    f: impl FnOnce(Head<Request<'_, '_>>) -> R,
) -> R {
    // Never look further than the limit: a head that has not ended by then
    // is refused whatever follows.
    let window = &buf[..buf.len().min(limits.max_bytes)];
    with_slots(limits.max_headers, |slots| {
        let mut req = httparse::Request::new(slots);
        match verdict(req.parse(window), buf.len(), limits) {
            Ok(head_len) => f(Head::Complete(Request {
                method: req.method.unwrap_or(""),
                target: req.path.unwrap_or(""),
                minor_version: req.version.unwrap_or(1),
                headers: req.headers,
                head_len,
            })),
            Err(h) => f(relay(h)),
        }
    })
}

/// Parses the response head at the start of `buf`; see [`with_request`].
pub fn with_response<R>(
    buf: &[u8],
    limits: HeadLimits,
    f: impl FnOnce(Head<Response<'_, '_>>) -> R,
) -> R {
    let window = &buf[..buf.len().min(limits.max_bytes)];
    with_slots(limits.max_headers, |slots| {
        let mut resp = httparse::Response::new(slots);
        match verdict(resp.parse(window), buf.len(), limits) {
            Ok(head_len) => f(Head::Complete(Response {
                status: resp.code.unwrap_or(0),
                reason: resp.reason.unwrap_or(""),
                minor_version: resp.version.unwrap_or(1),
                headers: resp.headers,
                head_len,
            })),
            Err(h) => f(relay(h)),
        }
    })
}

/// A head so far: the receive buffer itself when no earlier read left part
/// of it behind in `pending` (the common case: no copy), else `pending`
/// with this read appended.
pub fn gather<'a>(pending: &'a mut Vec<u8>, data: &'a mut [u8]) -> &'a mut [u8] {
    if pending.is_empty() {
        data
    } else {
        pending.extend_from_slice(data);
        pending
    }
}

/// Standard reason phrase for the statuses this project produces or relays.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        410 => "Gone",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// A complete response with a `Content-Length` body. `keep_alive: false`
/// adds `Connection: close` (the caller then closes after sending).
pub fn response(
    status: u16,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut head = String::with_capacity(128);
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    if let Some(ct) = content_type {
        let _ = write!(head, "Content-Type: {ct}\r\n");
    }
    // RFC 9110 §8.6: no Content-Length on 1xx and 204 (they have no body).
    if !(status < 200 || status == 204) {
        let _ = write!(head, "Content-Length: {}\r\n", body.len());
    }
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A request with a `Content-Length` body (none for an empty body on
/// `GET`/`HEAD`/`DELETE`).
pub fn request(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = String::with_capacity(128 + target.len());
    let _ = write!(head, "{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        let _ = write!(head, "Content-Length: {}\r\n", body.len());
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// Not valid chunked framing.
    #[error("malformed chunked body")]
    Malformed,
    /// The decoded body would exceed the limit.
    #[error("chunked body over {0} bytes")]
    TooLarge(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` seen so far.
    Size {
        size: usize,
        digits: u8,
    },
    /// After the size: extensions until CRLF.
    Extension {
        size: usize,
    },
    /// Expecting LF after CR of the size line.
    SizeLf {
        size: usize,
    },
    /// In chunk data, `left` bytes to go.
    Data {
        left: usize,
    },
    /// Expecting CR then LF after the data.
    DataCr,
    DataLf,
    /// In the trailer section: `blank` = this line is empty so far.
    Trailer {
        blank: bool,
        cr: bool,
    },
    Done,
}

/// Incremental decoder of a chunked body (RFC 9112 §7.1): feed it what
/// arrives, in any pieces; it appends the data to `out` and says when the
/// body ended. Extensions and trailers are skipped.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: Chunk,
    decoded: usize,
    max_body: usize,
    /// Bytes of extensions and trailers seen (bounded like a head).
    overhead: usize,
}

impl ChunkedDecoder {
    /// A decoder refusing bodies over `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        Self {
            state: Chunk::Size { size: 0, digits: 0 },
            decoded: 0,
            max_body,
            overhead: 0,
        }
    }

    /// True once the last chunk and trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes from `input`, appending body bytes to `out`. Returns how many
    /// input bytes were used: all of them unless the body ended inside
    /// `input` (the rest belongs to the next message).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkedError> {
        const MAX_OVERHEAD: usize = 8 * 1024;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                Chunk::Done => return Ok(i),
                Chunk::Size { size, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err(ChunkedError::Malformed);
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as usize;
                        Chunk::Size {
                            size: size * 16 + d,
                            digits: digits + 1,
                        }
                    }
                    _ if digits == 0 => return Err(ChunkedError::Malformed),
                    b';' | b' ' | b'\t' => Chunk::Extension { size },
                    b'\r' => Chunk::SizeLf { size },
                    _ => return Err(ChunkedError::Malformed),
                },
                Chunk::Extension { size } => {
                    self.overhead += 1;
                    if self.overhead > MAX_OVERHEAD {
                        return Err(ChunkedError::Malformed);
                    }
                    match b {
                        b'\r' => Chunk::SizeLf { size },
                        b'\n' => return Err(ChunkedError::Malformed),
                        _ => Chunk::Extension { size },
                    }
                }
                Chunk::SizeLf { size } => {
                    if b != b'\n' {
                        return Err(ChunkedError::Malformed);
                    }
                    if size == 0 {
                        Chunk::Trailer {
                            blank: true,
                            cr: false,
                        }
                    } else {
                        if self.decoded.saturating_add(size) > self.max_body {
                            return Err(ChunkedError::TooLarge(self.max_body));
                        }
                        Chunk::Data { left: size }
                    }
                }
                Chunk::Data { left } => {
                    let take = left.min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    self.decoded += take;
                    i += take;
                    self.state = if take == left {
                        Chunk::DataCr
                    } else {
                        Chunk::Data { left: left - take }
                    };
                    continue;
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::Size { size: 0, digits: 0 },
                Chunk::DataCr | Chunk::DataLf => return Err(ChunkedError::Malformed),
                Chunk::Trailer { blank, cr } => {
                    self.overhead += 1;
                    if self.overhead > MAX_OVERHEAD {
                        return Err(ChunkedError::Malformed);
                    }
                    match (b, cr) {
                        (b'\n', true) if blank => Chunk::Done,
                        (b'\n', true) => Chunk::Trailer {
                            blank: true,
                            cr: false,
                        },
                        (b'\r', false) => Chunk::Trailer { blank, cr: true },
                        (_, true) => return Err(ChunkedError::Malformed),
                        _ => Chunk::Trailer {
                            blank: false,
                            cr: false,
                        },
                    }
                }
            };
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_headers: 8,
    };

    fn req_status(buf: &[u8], limits: HeadLimits) -> Result<(String, usize), Option<u16>> {
        with_request(buf, limits, |h| match h {
            Head::Complete(r) => Ok((r.path().to_string(), r.head_len)),
            Head::Incomplete => Err(None),
            Head::Invalid(r) => Err(Some(r.status)),
        })
    }

    #[test]
    fn request_heads_within_limits() {
        let req = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\nBODY";
        assert_eq!(
            req_status(req, LIMITS),
            Ok(("/metrics".into(), req.len() - 4))
        );
        for end in 0..req.len() - 4 {
            assert_eq!(req_status(&req[..end], LIMITS), Err(None), "{end}");
        }
        let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let two = HeadLimits {
            max_bytes: 1024,
            max_headers: 2,
        };
        assert_eq!(req_status(many, two), Err(Some(431)));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        let small = HeadLimits {
            max_bytes: 64,
            max_headers: 8,
        };
        assert_eq!(req_status(long.as_bytes(), small), Err(Some(431)));
        assert_eq!(
            req_status(b"\x16\x03\x01 hello\r\n\r\n", LIMITS),
            Err(Some(400))
        );
        // More header slots than fit inline.
        let big = HeadLimits {
            max_bytes: 4096,
            max_headers: 100,
        };
        let h = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(60));
        assert_eq!(req_status(h.as_bytes(), big).map(|r| r.0), Ok("/".into()));
    }

    fn body_of(head: &str) -> Result<BodyKind, u16> {
        with_request(head.as_bytes(), LIMITS, |h| match h {
            Head::Complete(r) => r.body().map_err(|e| e.status),
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn request_body_framing() {
        assert_eq!(body_of("GET / HTTP/1.1\r\n\r\n"), Ok(BodyKind::Length(0)));
        assert_eq!(
            body_of("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            Ok(BodyKind::Length(12))
        );
        assert_eq!(
            body_of("POST / HTTP/1.1\r\nContent-Length: 12, 12\r\n\r\n"),
            Ok(BodyKind::Length(12))
        );
        assert_eq!(
            body_of("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok(BodyKind::Chunked)
        );
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(body_of(bad), Err(400), "{bad:?}");
        }
        assert_eq!(
            body_of("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(501)
        );
    }

    #[test]
    fn keep_alive_rules() {
        for (head, keep) in [
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ] {
            let got = with_request(head.as_bytes(), LIMITS, |h| match h {
                Head::Complete(r) => r.keep_alive(),
                other => panic!("{other:?}"),
            });
            assert_eq!(got, keep, "{head:?}");
        }
    }

    #[test]
    fn response_heads_and_body_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        with_response(raw, LIMITS, |h| match h {
            Head::Complete(r) => {
                assert_eq!((r.status, r.reason, r.head_len), (200, "OK", raw.len() - 3));
                assert_eq!(r.body(false), Ok(BodyKind::Length(3)));
                assert_eq!(r.body(true), Ok(BodyKind::Length(0)));
                assert!(r.keep_alive());
            }
            other => panic!("{other:?}"),
        });
        let raw = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        with_response(raw, LIMITS, |h| match h {
            Head::Complete(r) => {
                assert_eq!(r.body(false), Ok(BodyKind::Length(0)));
                assert!(!r.keep_alive());
            }
            other => panic!("{other:?}"),
        });
        with_response(b"HTTP/1.0 200 OK\r\n\r\n", LIMITS, |h| match h {
            Head::Complete(r) => assert_eq!(r.body(false), Ok(BodyKind::ToEof)),
            other => panic!("{other:?}"),
        });
        with_response(b"HTTP/1.1 200 OK\r\nX", LIMITS, |h| {
            assert_eq!(h.map_status(), None)
        });
    }

    impl Head<Response<'_, '_>> {
        fn map_status(&self) -> Option<u16> {
            match self {
                Head::Complete(r) => Some(r.status),
                _ => None,
            }
        }
    }

    #[test]
    fn writers_are_exact() {
        let r = String::from_utf8(response(200, &[], Some("text/plain"), b"abc\n", false)).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\
             Content-Length: 4\r\n\r\nabc\n"
        );
        let r = String::from_utf8(Reject::new(408, "request timeout").response()).unwrap();
        assert!(r.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{r}");
        let r = String::from_utf8(Reject::new(426, "missing Sec-WebSocket-Version").response())
            .unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\n\
             Content-Type: text/plain\r\nContent-Length: 30\r\n\
             Sec-WebSocket-Version: 13\r\n\r\nmissing Sec-WebSocket-Version\n"
        );
        let q = String::from_utf8(request(
            "POST",
            "/hook?a=1",
            "backend:80",
            &[("Content-Type", "application/json")],
            b"{}",
        ))
        .unwrap();
        assert_eq!(
            q,
            "POST /hook?a=1 HTTP/1.1\r\nHost: backend:80\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\n\r\n{}"
        );
        let g = String::from_utf8(request("GET", "/", "h", &[], b"")).unwrap();
        assert_eq!(g, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn chunked_bodies_in_any_pieces() {
        let wire =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let body = b"Wikipedia in\r\n\r\nchunks.";
        for split in 0..wire.len() {
            let mut d = ChunkedDecoder::new(1024);
            let mut out = Vec::new();
            let a = d.decode(&wire[..split], &mut out).unwrap();
            assert!(a == split || d.is_done(), "split {split}: used {a}");
            let b = d.decode(&wire[a..], &mut out).unwrap();
            assert!(d.is_done(), "split {split}");
            assert_eq!(out, body, "split {split}");
            assert_eq!(&wire[a + b..], b"NEXT", "split {split}");
        }
        for bad in [
            &b"x\r\n"[..],
            b"4\r\nWikiX\r\n",
            b"4\nWiki",
            b"\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\nX\rY",
        ] {
            let mut d = ChunkedDecoder::new(1024);
            assert_eq!(
                d.decode(bad, &mut Vec::new()),
                Err(ChunkedError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut d = ChunkedDecoder::new(8);
        assert_eq!(
            d.decode(b"9\r\n", &mut Vec::new()),
            Err(ChunkedError::TooLarge(8))
        );
    }
}
