//! A plain HTTP/1.1 connection on the admin or API listener: `GET /metrics`
//! (admin) and the server API (`POST /api/...`), with keep-alive and
//! pipelining, bodies by `Content-Length` or chunked. Not a client
//! connection: not counted as one, not admitted against `max_connections`,
//! never a WebSocket.
//!
//! This module only frames requests; what they mean is decided by the
//! handler (`conn::GatewayHandler::on_http`).

use wsproto::http::{self, BodyKind, ChunkedDecoder, Head, HeadLimits, Headers, Reject};

/// Path of the metrics exposition on the admin listener.
pub const METRICS_PATH: &str = "/metrics";

/// Prefix of the push API (`/api/connections/{id}`).
pub const CONNECTIONS_PREFIX: &str = "/api/connections/";

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `admin.listen`: metrics, and the API unless it has its own listener.
    Admin,
    /// `api.listen`.
    Api,
}

/// A complete request, owned (the handler may need it after the buffer moves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query (after `?`), or empty.
    pub query: String,
    /// `Content-Type`, if given.
    pub content_type: Option<String>,
    /// The API key from `X-API-Key`, or from `Authorization: apikey KEY`.
    pub authorized_with: Option<Vec<u8>>,
    /// The body.
    pub body: Vec<u8>,
    /// The client keeps the connection open after the response.
    pub keep_alive: bool,
}

/// What the bytes so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Wait for more.
    Incomplete,
    /// A request to answer; call [`HttpConn::input`] again with no new
    /// bytes for a pipelined next one.
    Request(Request),
    /// Answer this and close.
    Reject(Reject),
}

/// The state of one HTTP connection: bytes not yet consumed.
#[derive(Debug)]
pub struct HttpConn {
    /// Which listener.
    pub listener: Listener,
    buf: Vec<u8>,
    /// The answer to the current request comes from another worker (or a
    /// later loop iteration): later requests wait in `buf`.
    pub awaiting: Option<Awaiting>,
}

/// A request whose answer is on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Awaiting {
    /// The connection stays open after the answer.
    pub keep_alive: bool,
    /// Its endpoint (index into the API's endpoint list, for metrics).
    pub endpoint: usize,
}

impl HttpConn {
    /// A new connection from `listener`.
    pub fn new(listener: Listener) -> Self {
        Self {
            listener,
            buf: Vec::new(),
            awaiting: None,
        }
    }

    /// Keeps received bytes for later (while an answer is awaited).
    pub fn hold(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Adds received bytes and returns the next complete request, if any.
    pub fn input(&mut self, data: &[u8], limits: HeadLimits, max_body: usize) -> Next {
        self.buf.extend_from_slice(data);
        let parsed = http::with_request(&self.buf, limits, |head| match head {
            Head::Incomplete => Err(None),
            Head::Invalid(r) => Err(Some(r)),
            Head::Complete(req) => {
                if !req.target.starts_with('/') {
                    return Err(Some(Reject::new(400, "request target must be a path")));
                }
                let body = req.body().map_err(Some)?;
                let key = req
                    .header("X-API-Key")
                    .map(|k| k.trim_ascii().to_vec())
                    .or_else(|| {
                        let auth = req.header("Authorization")?;
                        let mut parts = auth
                            .trim_ascii()
                            .split(|&b| b == b' ')
                            .filter(|p| !p.is_empty());
                        match (parts.next(), parts.next(), parts.next()) {
                            (Some(s), Some(k), None) if s.eq_ignore_ascii_case(b"apikey") => {
                                Some(k.to_vec())
                            }
                            _ => Some(Vec::new()),
                        }
                    });
                let content_type = req
                    .header("Content-Type")
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                Ok((
                    (
                        req.method.to_string(),
                        req.path().to_string(),
                        req.query().unwrap_or("").to_string(),
                        content_type,
                    ),
                    key,
                    req.keep_alive(),
                    body,
                    req.head_len,
                ))
            }
        });
        let ((method, path, query, content_type), key, keep_alive, body, head_len) = match parsed {
            Err(None) => return Next::Incomplete,
            Err(Some(r)) => return Next::Reject(r),
            Ok(p) => p,
        };
        let (body, used) = match body {
            BodyKind::Length(n) if n > max_body => {
                return Next::Reject(Reject::new(413, "request body too large"))
            }
            BodyKind::Length(n) if self.buf.len() < head_len + n => return Next::Incomplete,
            BodyKind::Length(n) => (self.buf[head_len..head_len + n].to_vec(), head_len + n),
            BodyKind::Chunked => {
                // Decoded from the start each time more arrives: API bodies
                // are small and rarely chunked.
                let mut decoder = ChunkedDecoder::new(max_body);
                let mut body = Vec::new();
                match decoder.decode(&self.buf[head_len..], &mut body) {
                    Err(http::ChunkedError::TooLarge(_)) => {
                        return Next::Reject(Reject::new(413, "request body too large"))
                    }
                    Err(http::ChunkedError::Malformed) => {
                        return Next::Reject(Reject::new(400, "malformed chunked body"))
                    }
                    Ok(_) if !decoder.is_done() => return Next::Incomplete,
                    Ok(n) => (body, head_len + n),
                }
            }
            BodyKind::ToEof => unreachable!("requests never run to end of stream"),
        };
        self.buf.drain(..used);
        if self.buf.capacity() > 64 * 1024 && self.buf.is_empty() {
            self.buf = Vec::new();
        }
        Next::Request(Request {
            method,
            path,
            query,
            content_type,
            authorized_with: key,
            body,
            keep_alive,
        })
    }
}

/// A response with `body` (and its `Content-Type`, when non-empty); a 405
/// names the method `path` takes (GET for metrics, POST for the API).
pub fn response(
    status: u16,
    path: &str,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let ct = (!body.is_empty()).then_some(content_type);
    let allow = if path == METRICS_PATH {
        "GET"
    } else if path.starts_with(CONNECTIONS_PREFIX) {
        "GET, POST, DELETE"
    } else {
        "POST"
    };
    let extra: &[(&str, &str)] = match status {
        405 => &[("Allow", allow)],
        _ => &[],
    };
    http::response(status, extra, ct, body, keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_headers: 16,
    };

    #[test]
    fn pipelined_requests_with_bodies_in_pieces() {
        let wire = b"POST /api/publish HTTP/1.1\r\nHost: a\r\nX-API-Key: dev\r\n\
                     Content-Length: 5\r\n\r\nhello\
                     POST /api/info HTTP/1.1\r\nAuthorization: apikey k2\r\n\
                     Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut c = HttpConn::new(Listener::Admin);
            let mut got = Vec::new();
            for piece in [&wire[..split], &wire[split..]] {
                let mut input = piece;
                loop {
                    match c.input(input, LIMITS, 100) {
                        Next::Request(r) => got.push(r),
                        Next::Incomplete => break,
                        Next::Reject(r) => panic!("{r:?} at split {split}"),
                    }
                    input = b"";
                }
            }
            assert_eq!(got.len(), 2, "split {split}");
            assert_eq!(got[0].path, "/api/publish");
            assert_eq!(got[0].body, b"hello");
            assert_eq!(got[0].authorized_with.as_deref(), Some(&b"dev"[..]));
            assert!(got[0].keep_alive);
            assert_eq!(got[1].body, b"{}");
            assert_eq!(got[1].authorized_with.as_deref(), Some(&b"k2"[..]));
            assert!(!got[1].keep_alive);
        }
    }

    #[test]
    fn limits_and_garbage_are_refused() {
        let mut c = HttpConn::new(Listener::Api);
        let big = b"POST /api/publish HTTP/1.1\r\nContent-Length: 101\r\n\r\n";
        assert_eq!(
            c.input(big, LIMITS, 100),
            Next::Reject(Reject::new(413, "request body too large"))
        );
        let mut c = HttpConn::new(Listener::Api);
        assert!(
            matches!(c.input(b"\x16\x03\x01hello\r\n\r\n", LIMITS, 100), Next::Reject(r) if r.status == 400)
        );
        let mut c = HttpConn::new(Listener::Api);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(c.input(chunked, LIMITS, 100), Next::Reject(r) if r.status == 400));
    }
}
