//! The WebSocket opening handshake (RFC 6455 §4), both roles.
//!
//! Server: [`check`] decides what a complete request head asks for (upgrade,
//! health check, or a precise rejection); [`parse_request`] does the same
//! from raw bytes. Neither consumes bytes after the head, because a client
//! may pipeline its first frame right behind the request, and those bytes
//! belong to the frame codec.
//!
//! Client: [`ClientHandshake`] writes the upgrade request and validates the
//! server's answer (status 101, `Sec-WebSocket-Accept`, subprotocol).

use tungstenite::handshake::derive_accept_key;

pub use crate::http::Reject;
use crate::http::{self, Head, HeadLimits, Headers};

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

impl HandshakePolicy {
    /// The head limits of this policy.
    pub fn limits(&self) -> HeadLimits {
        HeadLimits {
            max_bytes: self.max_request_bytes,
            max_headers: self.max_headers,
        }
    }
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

/// What a well-formed request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A plain `GET` on the health path.
    Health,
    /// A valid WebSocket upgrade.
    WebSocket(Upgrade),
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
        let name = self.subprotocol.and_then(|i| policy.subprotocols.get(i));
        switching_protocols(&self.accept, name.map(String::as_str))
    }

    /// The `101` response with a subprotocol chosen by someone else (an
    /// upstream backend); the caller checks that the client offered it.
    pub fn response_naming(&self, subprotocol: Option<&str>) -> Vec<u8> {
        switching_protocols(&self.accept, subprotocol)
    }
}

/// The subprotocols a client offered, in its order (every
/// `Sec-WebSocket-Protocol` field, split at commas).
pub fn offered_subprotocols(request: &http::Request<'_, '_>) -> Vec<String> {
    request
        .values("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect()
}

/// The `101` response with `accept` and an optional subprotocol.
fn switching_protocols(accept: &str, subprotocol: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(name) = subprotocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
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

/// Rejection sent when the request head does not arrive in time.
pub fn request_timeout() -> Reject {
    Reject::new(408, "request head not received in time")
}

/// Parses the request head at the start of `buf` (everything received so
/// far) and decides what to do with the connection.
pub fn parse_request(buf: &[u8], policy: &HandshakePolicy) -> Parsed {
    http::with_request(buf, policy.limits(), |head| match head {
        Head::Incomplete => Parsed::Incomplete,
        Head::Invalid(r) => Parsed::Reject(r),
        Head::Complete(req) => match check(&req, policy) {
            Ok(Route::Health) => Parsed::Health {
                consumed: req.head_len,
            },
            Ok(Route::WebSocket(up)) => Parsed::Upgrade(up),
            Err(r) => Parsed::Reject(r),
        },
    })
}

/// Applies HTTP-level then RFC 6455 §4.2.1 checks to a complete head.
pub fn check(request: &http::Request<'_, '_>, policy: &HandshakePolicy) -> Result<Route, Reject> {
    // httparse accepts HTTP/1.0 too; the upgrade mechanism needs 1.1.
    if request.minor_version != 1 {
        return Err(Reject::new(400, "HTTP version must be 1.1"));
    }
    if request.method != "GET" {
        return Err(Reject::new(400, "method must be GET"));
    }
    // RFC 9112 §3.2: a 1.1 request without exactly one Host gets a 400.
    match request.values("Host").count() {
        0 => return Err(Reject::new(400, "missing Host")),
        1 => {}
        _ => return Err(Reject::new(400, "duplicate Host")),
    }

    let path = request.path();
    let upgrade = request.header("Upgrade");
    let wants_websocket = request.has_token("Upgrade", b"websocket", true);

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
    if !request.has_token("Connection", b"upgrade", true) {
        return Err(Reject::new(400, "Connection header must include Upgrade"));
    }
    let mut versions = request.values("Sec-WebSocket-Version");
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.trim_ascii() == b"13" => {}
        (None, _) => return Err(Reject::new(426, "missing Sec-WebSocket-Version")),
        _ => return Err(Reject::new(426, "unsupported Sec-WebSocket-Version")),
    }
    let mut keys = request.values("Sec-WebSocket-Key");
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) => key.trim_ascii(),
        (None, _) => return Err(Reject::new(400, "missing Sec-WebSocket-Key")),
        _ => return Err(Reject::new(400, "duplicate Sec-WebSocket-Key")),
    };
    if !is_valid_key(key) {
        return Err(Reject::new(400, "invalid Sec-WebSocket-Key"));
    }
    if !policy.allowed_origins.is_empty() {
        let mut origins = request.values("Origin");
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
        .position(|p| request.has_token("Sec-WebSocket-Protocol", p.as_bytes(), false));
    Ok(Route::WebSocket(Upgrade {
        consumed: request.head_len,
        route,
        subprotocol,
        accept: derive_accept_key(key),
    }))
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

/// The client side of the handshake: the request, and the checks on the
/// server's answer. The key is the caller's (sans-IO: no randomness here;
/// `tungstenite::handshake::client::generate_key` makes a good one).
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    key: String,
}

/// The server's answer to a [`ClientHandshake`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAnswer {
    /// Not complete yet: read more and call again with everything so far.
    Incomplete,
    /// `101` with the right accept key: frames follow at `consumed`.
    Accepted {
        /// Length of the response head.
        consumed: usize,
        /// The subprotocol the server selected, if any.
        subprotocol: Option<String>,
    },
    /// A complete response with another status (e.g. 404, 503).
    Refused {
        /// Its status.
        status: u16,
    },
    /// A response that breaks the protocol (bad accept key, unoffered
    /// subprotocol, missing upgrade headers, malformed head).
    Invalid(&'static str),
}

impl ClientHandshake {
    /// A handshake with `key`, the base64 of 16 random bytes.
    pub fn new(key: String) -> Self {
        Self { key }
    }

    /// The upgrade request for `path` (with query) on `host`, offering
    /// `subprotocols` and adding `extra` header fields.
    pub fn request(
        &self,
        host: &str,
        path: &str,
        subprotocols: &[&str],
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        let protocols = subprotocols.join(", ");
        let mut headers: Vec<(&str, &str)> = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", &self.key),
            ("Sec-WebSocket-Version", "13"),
        ];
        if !subprotocols.is_empty() {
            headers.push(("Sec-WebSocket-Protocol", &protocols));
        }
        headers.extend_from_slice(extra);
        http::request("GET", path, host, &headers, b"")
    }

    /// Checks the server's answer so far (`buf`: everything received).
    pub fn answer(&self, buf: &[u8], offered: &[&str]) -> ServerAnswer {
        let limits = HeadLimits {
            max_bytes: 16 * 1024,
            max_headers: 64,
        };
        http::with_response(buf, limits, |head| {
            let resp = match head {
                Head::Incomplete => return ServerAnswer::Incomplete,
                Head::Invalid(_) => return ServerAnswer::Invalid("malformed response head"),
                Head::Complete(r) => r,
            };
            if resp.status != 101 {
                return ServerAnswer::Refused {
                    status: resp.status,
                };
            }
            if !resp.has_token("Upgrade", b"websocket", true)
                || !resp.has_token("Connection", b"upgrade", true)
            {
                return ServerAnswer::Invalid("101 without Upgrade: websocket");
            }
            let accept = resp.header("Sec-WebSocket-Accept").map(<[u8]>::trim_ascii);
            if accept != Some(derive_accept_key(self.key.as_bytes()).as_bytes()) {
                return ServerAnswer::Invalid("wrong Sec-WebSocket-Accept");
            }
            let subprotocol = match resp.header("Sec-WebSocket-Protocol") {
                None => None,
                Some(p) => match std::str::from_utf8(p.trim_ascii()) {
                    Ok(p) if offered.contains(&p) => Some(p.to_string()),
                    _ => return ServerAnswer::Invalid("subprotocol not offered"),
                },
            };
            ServerAnswer::Accepted {
                consumed: resp.head_len,
                subprotocol,
            }
        })
    }
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

    #[test]
    fn client_handshake_against_the_server_side() {
        let client = ClientHandshake::new(KEY.into());
        let req = client.request(
            "example.com",
            "/ws?x=1",
            &["v1.gateway"],
            &[("Origin", "o")],
        );
        let up = upgrade(parse_request(&req, &policy()));
        assert_eq!(up.route, 0);
        assert_eq!(up.subprotocol, Some(1));
        let mut answer = up.response(&policy());
        let head_len = answer.len();
        for end in 0..head_len {
            assert_eq!(
                client.answer(&answer[..end], &["v1.gateway"]),
                ServerAnswer::Incomplete
            );
        }
        answer.extend_from_slice(&[0x81, 0]);
        assert_eq!(
            client.answer(&answer, &["v1.gateway"]),
            ServerAnswer::Accepted {
                consumed: head_len,
                subprotocol: Some("v1.gateway".into())
            }
        );
        // A subprotocol we did not offer, a wrong key, a refusal.
        assert_eq!(
            client.answer(&answer, &["other"]),
            ServerAnswer::Invalid("subprotocol not offered")
        );
        let other = ClientHandshake::new("AAAAAAAAAAAAAAAAAAAAAA==".into());
        assert_eq!(
            other.answer(&answer, &["v1.gateway"]),
            ServerAnswer::Invalid("wrong Sec-WebSocket-Accept")
        );
        assert_eq!(
            client.answer(&service_unavailable().response(), &[]),
            ServerAnswer::Refused { status: 503 }
        );
        assert_eq!(
            client.answer(b"SSH-2.0-OpenSSH\r\n\r\n", &[]),
            ServerAnswer::Invalid("malformed response head")
        );
    }
}
