//! HTTP/1.1 upgrade request parsing (RFC 6455 §4.2.1) and the responses the
//! gateway sends before switching to frames.
//!
//! [`parse_request`] is called with everything received so far on a fresh
//! connection; it either asks for more bytes, or decides: upgrade, health
//! check, or reject with a precise status. It never consumes bytes after the
//! request head, because a client may pipeline its first frame right behind
//! the request, and those bytes belong to the frame codec.

use tungstenite::handshake::derive_accept_key;

/// What the server accepts during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakePolicy {
    /// A request head larger than this is refused with 431 (and we stop
    /// waiting for its end, bounding per-connection memory).
    pub max_request_bytes: usize,
    /// More header fields than this are refused with 431.
    pub max_headers: usize,
    /// WebSocket paths, matched exactly against the request path with the
    /// query string ignored. The matching index is reported in
    /// [`Upgrade::route`].
    pub routes: Vec<String>,
    /// A plain `GET` (no `Upgrade: websocket`) on this path yields
    /// [`Parsed::Health`].
    pub health_path: Option<String>,
    /// Supported subprotocols in server preference order: the first of these
    /// that the client offers is selected.
    pub subprotocols: Vec<String>,
    /// Empty: any origin. Otherwise the `Origin` header must equal one of
    /// these (ASCII case-insensitively); a missing `Origin` is refused (403),
    /// since browsers always send it and an allow-list exists to stop them.
    pub allowed_origins: Vec<String>,
}

/// Outcome of [`parse_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The request head is not complete yet (and still within
    /// `max_request_bytes`): read more and call again with all bytes.
    Incomplete,
    /// A valid WebSocket upgrade request.
    Upgrade(Upgrade),
    /// A plain health-check request; answer with [`health_response`].
    Health {
        /// Length of the request head.
        consumed: usize,
    },
    /// Refuse the request: send [`Reject::response`] and close.
    Reject(Reject),
}

/// An accepted upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// Length of the request head. Bytes after it (a pipelined first frame)
    /// are not part of the handshake and must be fed to the codec.
    pub consumed: usize,
    /// Index into [`HandshakePolicy::routes`].
    pub route: usize,
    /// Index into [`HandshakePolicy::subprotocols`] of the selected
    /// subprotocol, if any was offered and supported.
    pub subprotocol: Option<usize>,
    /// `Sec-WebSocket-Accept` value derived from the client's key.
    accept: String,
}

impl Upgrade {
    /// The `101 Switching Protocols` response. `policy` must be the one the
    /// request was parsed with (it supplies the subprotocol name).
    pub fn response(&self, policy: &HandshakePolicy) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: ",
        );
        out.extend_from_slice(self.accept.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(name) = self.subprotocol.and_then(|i| policy.subprotocols.get(i)) {
            out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
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
    const fn new(status: u16, reason: &'static str) -> Self {
        Reject { status, reason }
    }

    /// The complete HTTP response; the connection is closed after it.
    /// A 426 carries `Sec-WebSocket-Version: 13` so the client learns which
    /// version to retry with (RFC 6455 §4.4).
    pub fn response(&self) -> Vec<u8> {
        // A 405 lists the allowed method (RFC 9110 §15.5.6).
        let version = match self.status {
            426 => "Sec-WebSocket-Version: 13\r\n",
            405 => "Allow: GET\r\n",
            _ => "",
        };
        format!(
            "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n{}\r\n{}\n",
            self.status,
            reason_phrase(self.status),
            self.reason.len() + 1,
            version,
            self.reason,
        )
        .into_bytes()
    }
}

/// Standard reason phrase for the statuses we produce.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Response to a health check: `200 OK`, body `ok\n`, then close.
pub fn health_response() -> &'static [u8] {
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\
      Content-Length: 3\r\n\r\nok\n"
}

/// Rejection sent when the server is at its connection limit.
pub fn service_unavailable() -> Reject {
    Reject::new(503, "connection limit reached")
}

/// Outcome of [`parse_get`]: a plain HTTP request such as the admin
/// listener's `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlainRequest<'a> {
    /// The request head is not complete yet (and still within the limit).
    Incomplete,
    /// A complete `GET` request.
    Get {
        /// The request path, query string removed.
        path: &'a str,
        /// Length of the request head.
        consumed: usize,
    },
    /// Refuse the request: send [`Reject::response`] and close.
    Reject(Reject),
}

/// Parses a plain (non-upgrade) HTTP/1.x request head at the start of `buf`.
/// Only `GET` is served (anything else is 405 with `Allow: GET`); HTTP/1.0
/// is accepted, since scrapers and `curl -0` may speak it. Same limits as
/// [`parse_request`]: a head over `max_request_bytes` or with more than
/// `max_headers` fields gets 431.
pub fn parse_get(buf: &[u8], max_request_bytes: usize, max_headers: usize) -> PlainRequest<'_> {
    let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
    let mut heap;
    let slots: &mut [httparse::Header<'_>] = if max_headers <= INLINE_HEADERS {
        &mut inline[..max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; max_headers];
        &mut heap
    };
    let window = &buf[..buf.len().min(max_request_bytes)];
    let mut request = httparse::Request::new(slots);
    let consumed = match request.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_request_bytes => {
            return PlainRequest::Reject(Reject::new(431, "request head too large"))
        }
        Ok(httparse::Status::Partial) => return PlainRequest::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            return PlainRequest::Reject(Reject::new(431, "too many headers"))
        }
        Err(_) => return PlainRequest::Reject(Reject::new(400, "malformed HTTP request")),
    };
    if request.method != Some("GET") {
        return PlainRequest::Reject(Reject::new(405, "method must be GET"));
    }
    let target = request.path.unwrap_or("");
    if !target.starts_with('/') {
        return PlainRequest::Reject(Reject::new(400, "request target must be a path"));
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    PlainRequest::Get { path, consumed }
}

/// A complete `200 OK` response with `body`, after which the connection is
/// closed (one request per connection keeps the admin side stateless).
pub fn ok_response(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Header slots kept on the stack; a policy allowing more falls back to a
/// heap array. Parsing is re-run on every read until the head is complete,
/// so avoiding an allocation per attempt matters a little.
const INLINE_HEADERS: usize = 32;

/// Parses the request head at the start of `buf` (everything received so
/// far) and decides what to do with the connection.
pub fn parse_request(buf: &[u8], policy: &HandshakePolicy) -> Parsed {
    let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
    let mut heap;
    let slots: &mut [httparse::Header<'_>] = if policy.max_headers <= INLINE_HEADERS {
        &mut inline[..policy.max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; policy.max_headers];
        &mut heap
    };
    // Never look further than the limit: a head that has not ended by then
    // is refused whatever follows.
    let window = &buf[..buf.len().min(policy.max_request_bytes)];
    let mut request = httparse::Request::new(slots);
    let consumed = match request.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > policy.max_request_bytes => {
            return reject(431, "request head too large")
        }
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return reject(431, "too many headers"),
        Err(_) => return reject(400, "malformed HTTP request"),
    };
    match check(&request, policy) {
        Ok(Route::Health) => Parsed::Health { consumed },
        Ok(Route::WebSocket {
            route,
            subprotocol,
            key,
        }) => Parsed::Upgrade(Upgrade {
            consumed,
            route,
            subprotocol,
            accept: derive_accept_key(key),
        }),
        Err(rejection) => Parsed::Reject(rejection),
    }
}

fn reject(status: u16, reason: &'static str) -> Parsed {
    Parsed::Reject(Reject::new(status, reason))
}

/// Where a well-formed request goes.
enum Route<'a> {
    Health,
    WebSocket {
        route: usize,
        subprotocol: Option<usize>,
        key: &'a [u8],
    },
}

/// Applies HTTP-level then RFC 6455 §4.2.1 checks to a complete head.
fn check<'a>(
    request: &httparse::Request<'_, 'a>,
    policy: &HandshakePolicy,
) -> Result<Route<'a>, Reject> {
    // httparse accepts HTTP/1.0 too; the upgrade mechanism needs 1.1.
    if request.version != Some(1) {
        return Err(Reject::new(400, "HTTP version must be 1.1"));
    }
    if request.method != Some("GET") {
        return Err(Reject::new(400, "method must be GET"));
    }
    let headers: &[httparse::Header<'a>] = request.headers;
    // RFC 9112 §3.2: a 1.1 request without exactly one Host gets a 400.
    match count(headers, "Host") {
        0 => return Err(Reject::new(400, "missing Host")),
        1 => {}
        _ => return Err(Reject::new(400, "duplicate Host")),
    }

    let target = request.path.unwrap_or("");
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let upgrade = values(headers, "Upgrade").next();
    let wants_websocket = has_token(headers, "Upgrade", "websocket");

    if !wants_websocket && policy.health_path.as_deref() == Some(path) {
        return Ok(Route::Health);
    }
    let Some(route) = policy.routes.iter().position(|r| r == path) else {
        return Err(Reject::new(404, "no such path"));
    };

    if upgrade.is_none() {
        return Err(Reject::new(426, "WebSocket upgrade required"));
    }
    if !wants_websocket {
        return Err(Reject::new(400, "Upgrade header must be websocket"));
    }
    if !has_token(headers, "Connection", "upgrade") {
        return Err(Reject::new(400, "Connection header must include Upgrade"));
    }
    let mut versions = values(headers, "Sec-WebSocket-Version");
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.trim_ascii() == b"13" => {}
        (None, _) => return Err(Reject::new(426, "missing Sec-WebSocket-Version")),
        _ => return Err(Reject::new(426, "unsupported Sec-WebSocket-Version")),
    }
    let mut keys = values(headers, "Sec-WebSocket-Key");
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) => key.trim_ascii(),
        (None, _) => return Err(Reject::new(400, "missing Sec-WebSocket-Key")),
        _ => return Err(Reject::new(400, "duplicate Sec-WebSocket-Key")),
    };
    if !is_valid_key(key) {
        return Err(Reject::new(400, "invalid Sec-WebSocket-Key"));
    }
    if !policy.allowed_origins.is_empty() {
        let mut origins = values(headers, "Origin");
        let allowed = match (origins.next(), origins.next()) {
            (Some(origin), None) => {
                let origin = origin.trim_ascii();
                policy
                    .allowed_origins
                    .iter()
                    .any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
            }
            _ => false,
        };
        if !allowed {
            return Err(Reject::new(403, "origin not allowed"));
        }
    }
    let subprotocol = policy
        .subprotocols
        .iter()
        .position(|p| offers(headers, "Sec-WebSocket-Protocol", p.as_bytes(), false));
    Ok(Route::WebSocket {
        route,
        subprotocol,
        key,
    })
}

/// Values of every header named `name` (case-insensitive), in order.
fn values<'h, 'b>(
    headers: &'h [httparse::Header<'b>],
    name: &'static str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn count(headers: &[httparse::Header<'_>], name: &'static str) -> usize {
    values(headers, name).count()
}

/// Whether a comma-separated list header contains `token`, ASCII
/// case-insensitively (header names and these tokens are case-insensitive).
fn has_token(headers: &[httparse::Header<'_>], name: &'static str, token: &str) -> bool {
    offers(headers, name, token.as_bytes(), true)
}

/// Whether any `name` header, split on commas, contains `token`. The list
/// may be spread over several header lines (RFC 9110 §5.3).
fn offers(
    headers: &[httparse::Header<'_>],
    name: &'static str,
    token: &[u8],
    ignore_case: bool,
) -> bool {
    values(headers, name)
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

/// RFC 6455 §4.2.1 item 5: base64 of exactly 16 bytes, i.e. 22 base64
/// characters followed by `==`.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn policy() -> HandshakePolicy {
        HandshakePolicy {
            max_request_bytes: 1024,
            max_headers: 16,
            routes: vec!["/ws".into(), "/chat".into()],
            health_path: Some("/healthz".into()),
            subprotocols: vec!["v2.gateway".into(), "v1.gateway".into()],
            allowed_origins: vec![],
        }
    }

    /// A valid upgrade request for `path` with `extra` header lines.
    fn request(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    /// `request` with the header line starting with `name` removed.
    fn without(name: &str) -> String {
        request("/ws", "")
            .split_inclusive("\r\n")
            .filter(|line| !line.starts_with(name))
            .collect()
    }

    fn upgrade(parsed: Parsed) -> Upgrade {
        match parsed {
            Parsed::Upgrade(u) => u,
            other => panic!("expected upgrade, got {other:?}"),
        }
    }

    fn status(parsed: &Parsed) -> Option<u16> {
        match parsed {
            Parsed::Reject(r) => Some(r.status),
            _ => None,
        }
    }

    #[test]
    fn rfc6455_example_key() {
        let req = request("/ws", "");
        let up = upgrade(parse_request(req.as_bytes(), &policy()));
        assert_eq!(up.consumed, req.len());
        assert_eq!(up.route, 0);
        assert_eq!(up.subprotocol, None);
        let response = String::from_utf8(up.response(&policy())).unwrap();
        assert_eq!(
            response,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn accept_and_reject_table() {
        let base = policy();
        let long_head = format!("GET /ws HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(2000));
        let many_headers = format!(
            "GET /ws HTTP/1.1\r\n{}\r\n",
            "X-A: b\r\n".repeat(base.max_headers + 1)
        );
        let mut origin_policy = policy();
        origin_policy.allowed_origins = vec!["https://good.example".into()];
        let cases: Vec<(&str, String, &HandshakePolicy, Option<u16>)> = vec![
            ("valid", request("/ws", ""), &base, None),
            (
                "second route, query",
                request("/chat?room=1", ""),
                &base,
                None,
            ),
            (
                "connection list, mixed case",
                request("/ws", "")
                    .replace("Connection: Upgrade", "Connection: keep-alive, UPGRADE")
                    .replace("Upgrade: websocket", "upgrade: WebSocket"),
                &base,
                None,
            ),
            ("head too large", long_head, &base, Some(431)),
            ("too many headers", many_headers, &base, Some(431)),
            (
                "malformed",
                "GET /ws HTTP/1.1\r\nBad Header\r\n\r\n".into(),
                &base,
                Some(400),
            ),
            (
                "garbage",
                "\x16\x03\x01\x02\x00\r\n\r\n".into(),
                &base,
                Some(400),
            ),
            (
                "HTTP/1.0",
                request("/ws", "").replace("HTTP/1.1", "HTTP/1.0"),
                &base,
                Some(400),
            ),
            (
                "POST",
                request("/ws", "").replace("GET", "POST"),
                &base,
                Some(400),
            ),
            ("unknown path", request("/nope", ""), &base, Some(404)),
            ("missing Host", without("Host"), &base, Some(400)),
            (
                "duplicate Host",
                request("/ws", "Host: b\r\n"),
                &base,
                Some(400),
            ),
            ("no Upgrade header", without("Upgrade"), &base, Some(426)),
            (
                "wrong Upgrade",
                request("/ws", "").replace("Upgrade: websocket", "Upgrade: h2c"),
                &base,
                Some(400),
            ),
            ("no Connection", without("Connection"), &base, Some(400)),
            (
                "Connection without upgrade",
                request("/ws", "").replace("Connection: Upgrade", "Connection: keep-alive"),
                &base,
                Some(400),
            ),
            (
                "missing version",
                without("Sec-WebSocket-Version"),
                &base,
                Some(426),
            ),
            (
                "version 8",
                request("/ws", "").replace("Version: 13", "Version: 8"),
                &base,
                Some(426),
            ),
            (
                "missing key",
                without("Sec-WebSocket-Key"),
                &base,
                Some(400),
            ),
            (
                "short key",
                request("/ws", "").replace(KEY, "dGhlIHNhbXBsZQ=="),
                &base,
                Some(400),
            ),
            (
                "key without padding",
                request("/ws", "").replace(KEY, "dGhlIHNhbXBsZSBub25jZQAA"),
                &base,
                Some(400),
            ),
            (
                "key with bad char",
                request("/ws", "").replace(KEY, "dGhlIHNhbXBsZSBub25jZ*=="),
                &base,
                Some(400),
            ),
            (
                "duplicate key",
                request("/ws", &format!("Sec-WebSocket-Key: {KEY}\r\n")),
                &base,
                Some(400),
            ),
            (
                "origin allowed",
                request("/ws", "Origin: https://GOOD.example\r\n"),
                &origin_policy,
                None,
            ),
            (
                "origin denied",
                request("/ws", "Origin: https://evil.example\r\n"),
                &origin_policy,
                Some(403),
            ),
            (
                "origin missing",
                request("/ws", ""),
                &origin_policy,
                Some(403),
            ),
            (
                "any origin",
                request("/ws", "Origin: https://evil.example\r\n"),
                &base,
                None,
            ),
        ];
        for (name, req, policy, expected) in cases {
            let parsed = parse_request(req.as_bytes(), policy);
            assert_eq!(status(&parsed), expected, "{name}: {parsed:?}");
            if expected.is_none() {
                assert!(matches!(parsed, Parsed::Upgrade(_)), "{name}: {parsed:?}");
            }
        }
    }

    #[test]
    fn health_check() {
        let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_request(req, &policy()),
            Parsed::Health {
                consumed: req.len()
            }
        );
        // With a query string too.
        let req = b"GET /healthz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            parse_request(req, &policy()),
            Parsed::Health { .. }
        ));
        // An upgrade on the health path is not a health check (and not a route).
        let req = request("/healthz", "");
        assert_eq!(status(&parse_request(req.as_bytes(), &policy())), Some(404));
        // Without a health path configured it is just an unknown path.
        let mut p = policy();
        p.health_path = None;
        let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(status(&parse_request(req, &p)), Some(404));
        let body = std::str::from_utf8(health_response()).unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(body.ends_with("\r\n\r\nok\n"));
    }

    #[test]
    fn pipelined_frame_is_not_consumed() {
        let req = request("/ws", "");
        let mut bytes = req.clone().into_bytes();
        bytes.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let up = upgrade(parse_request(&bytes, &policy()));
        assert_eq!(up.consumed, req.len());
        // Even when the trailing bytes push the total over the head limit.
        let mut p = policy();
        p.max_request_bytes = req.len();
        let up = upgrade(parse_request(&bytes, &p));
        assert_eq!(up.consumed, req.len());
    }

    #[test]
    fn incremental_parse_at_every_byte() {
        let req = request("/ws", "Sec-WebSocket-Protocol: v1.gateway\r\n");
        let bytes = req.as_bytes();
        for end in 0..bytes.len() {
            assert_eq!(
                parse_request(&bytes[..end], &policy()),
                Parsed::Incomplete,
                "prefix of {end} bytes"
            );
        }
        let up = upgrade(parse_request(bytes, &policy()));
        assert_eq!(up.consumed, bytes.len());
        assert_eq!(up.subprotocol, Some(1));
    }

    #[test]
    fn oversized_incomplete_head_is_431() {
        let mut p = policy();
        p.max_request_bytes = 64;
        let partial = b"GET /ws HTTP/1.1\r\nX-Long: ".repeat(3);
        assert_eq!(partial.len(), 3 * 26);
        assert_eq!(parse_request(&partial[..64], &p), Parsed::Incomplete);
        assert_eq!(status(&parse_request(&partial[..65], &p)), Some(431));
        // A complete head just over the limit is refused as well.
        let req = request("/ws", "");
        p.max_request_bytes = req.len() - 1;
        assert_eq!(status(&parse_request(req.as_bytes(), &p)), Some(431));
    }

    #[test]
    fn subprotocol_selection() {
        let p = policy();
        let cases = [
            ("", None),
            ("Sec-WebSocket-Protocol: chat\r\n", None),
            ("Sec-WebSocket-Protocol: v1.gateway\r\n", Some(1)),
            // Server preference wins over client order.
            (
                "Sec-WebSocket-Protocol: v1.gateway, v2.gateway\r\n",
                Some(0),
            ),
            // Spread across several header lines.
            (
                "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: x , v2.gateway\r\n",
                Some(0),
            ),
            // Tokens are compared exactly.
            ("Sec-WebSocket-Protocol: V2.GATEWAY\r\n", None),
        ];
        for (extra, expected) in cases {
            let up = upgrade(parse_request(request("/ws", extra).as_bytes(), &p));
            assert_eq!(up.subprotocol, expected, "{extra:?}");
            let response = String::from_utf8(up.response(&p)).unwrap();
            match expected {
                Some(i) => assert!(response.contains(&format!(
                    "\r\nSec-WebSocket-Protocol: {}\r\n",
                    p.subprotocols[i]
                ))),
                None => assert!(!response.contains("Sec-WebSocket-Protocol")),
            }
        }
    }

    #[test]
    fn reject_responses() {
        let response = String::from_utf8(
            Reject {
                status: 426,
                reason: "missing Sec-WebSocket-Version",
            }
            .response(),
        )
        .unwrap();
        assert_eq!(
            response,
            "HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\n\
             Content-Type: text/plain\r\nContent-Length: 30\r\n\
             Sec-WebSocket-Version: 13\r\n\r\nmissing Sec-WebSocket-Version\n"
        );
        let response = String::from_utf8(service_unavailable().response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!response.contains("Sec-WebSocket-Version"));
        assert!(response.ends_with("\r\n\r\nconnection limit reached\n"));
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    fn plain_status(parsed: &PlainRequest<'_>) -> Option<u16> {
        match parsed {
            PlainRequest::Reject(r) => Some(r.status),
            _ => None,
        }
    }

    #[test]
    fn plain_get_requests() {
        let req = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            parse_get(req, 1024, 8),
            PlainRequest::Get {
                path: "/metrics",
                consumed: req.len()
            }
        );
        // HTTP/1.0 without Host is fine for a plain GET.
        assert!(matches!(
            parse_get(b"GET / HTTP/1.0\r\n\r\n", 1024, 8),
            PlainRequest::Get { path: "/", .. }
        ));
        // Every prefix of a valid head is incomplete, not an error.
        for end in 0..req.len() {
            assert_eq!(parse_get(&req[..end], 1024, 8), PlainRequest::Incomplete);
        }
        for (request, status) in [
            (&b"POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n"[..], 405),
            (b"HEAD /metrics HTTP/1.1\r\n\r\n", 405),
            (b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n", 400),
            (b"\x16\x03\x01 TLS hello", 400),
            (b"GET * HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431),
        ] {
            assert_eq!(
                plain_status(&parse_get(request, 1024, 2)),
                Some(status),
                "{:?}",
                String::from_utf8_lossy(request)
            );
        }
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert_eq!(plain_status(&parse_get(long.as_bytes(), 64, 8)), Some(431));
        let r405 = String::from_utf8(Reject::new(405, "method must be GET").response()).unwrap();
        assert!(
            r405.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{r405}"
        );
        assert!(r405.contains("\r\nAllow: GET\r\n"), "{r405}");
    }

    #[test]
    fn ok_response_has_exact_length() {
        let r = String::from_utf8(ok_response("text/plain", b"abc\n")).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\
             Content-Length: 4\r\n\r\nabc\n"
        );
    }
}
