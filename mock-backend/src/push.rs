//! Server-initiated pushes (`--push-rate N`): a plain thread with a
//! blocking keep-alive HTTP/1.1 client that POSTs
//! `/api/connections/{id}` to the gateway's API, N times a second, round
//! robin over the connections the mock has seen connect and not yet seen
//! disconnect.
//!
//! Why a blocking std thread and not the engine: a mock may spend a thread
//! on it (the gateway may not), the rate is modest, and one request at a
//! time on one connection keeps the client trivially correct.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wsproto::http::{self, BodyKind, ChunkedDecoder, Head, HeadLimits};

use crate::app::Registry;
use crate::stats::{Stats, C};

/// `--gateway-api`: `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl {
    /// `host:port` as given (the `Host` header and what is resolved).
    pub authority: String,
    /// Path prefix without a trailing slash (usually empty).
    pub prefix: String,
}

/// Why a `--gateway-api` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `http://` (the push client speaks plain HTTP only).
    #[error("must start with http:// (plain HTTP only)")]
    Scheme,
    /// No `host:port`.
    #[error("needs host:port after http://")]
    Authority,
    /// A port that is not a number.
    #[error("bad port {0:?}")]
    Port(String),
}

impl FromStr for ApiUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let rest = s.strip_prefix("http://").ok_or(UrlError::Scheme)?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = authority.rsplit_once(':').ok_or(UrlError::Authority)?;
        if host.is_empty() {
            return Err(UrlError::Authority);
        }
        port.parse::<u16>()
            .map_err(|_| UrlError::Port(port.to_string()))?;
        Ok(ApiUrl {
            authority: authority.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// What the push thread needs.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Pushes per second.
    pub rate: f64,
    /// The gateway's API.
    pub api: ApiUrl,
    /// `X-API-Key`, if any.
    pub api_key: Option<String>,
}

/// Starts the push thread; it counts into `stats.set(writer)` and stops
/// when `shutdown` is set.
pub fn spawn(
    opts: PushOptions,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    writer: usize,
    shutdown: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("mock-push".into())
        .spawn(move || Pusher::new(opts, stats, writer).run(&registry, &shutdown))
}

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    Failed,
}

struct Pusher {
    opts: PushOptions,
    stats: Arc<Stats>,
    writer: usize,
    conn: Option<Client>,
    seq: u64,
}

/// One keep-alive connection and the bytes read past the last response.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Pusher {
    fn new(opts: PushOptions, stats: Arc<Stats>, writer: usize) -> Self {
        Self {
            opts,
            stats,
            writer,
            conn: None,
            seq: 0,
        }
    }

    fn run(mut self, registry: &Registry, shutdown: &AtomicBool) {
        let interval = Duration::from_secs_f64(1.0 / self.opts.rate);
        let mut next = Instant::now();
        while !shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now < next {
                std::thread::sleep((next - now).min(Duration::from_millis(100)));
                continue;
            }
            let Some(id) = registry.next() else {
                // Nobody to push to: wait, and do not build up a backlog.
                std::thread::sleep(Duration::from_millis(10));
                next = Instant::now();
                continue;
            };
            self.seq += 1;
            let c = match self.push(&id) {
                Outcome::Status(200) => C::PushesSent,
                Outcome::Status(410) => {
                    registry.remove(&id);
                    C::PushesGone
                }
                Outcome::Status(status) => {
                    log::debug!("push to {id}: status {status}");
                    C::PushesFailed
                }
                Outcome::Failed => {
                    // Connection trouble: do not hammer a gateway that is down.
                    std::thread::sleep(Duration::from_millis(100));
                    C::PushesFailed
                }
            };
            self.stats.set(self.writer).bump(c);
            next += interval;
            // Too far behind (a slow gateway): drop the backlog, keep the pace.
            if Instant::now().saturating_duration_since(next) > Duration::from_secs(1) {
                next = Instant::now();
            }
        }
    }

    fn push(&mut self, id: &str) -> Outcome {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let body = format!(r#"{{"type":"push","seq":{},"t":{unix_ms}}}"#, self.seq);
        let target = format!("{}/api/connections/{id}", self.opts.api.prefix);
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(key) = &self.opts.api_key {
            headers.push(("X-API-Key", key));
        }
        let request = http::request(
            "POST",
            &target,
            &self.opts.api.authority,
            &headers,
            body.as_bytes(),
        );
        // A kept-alive connection the gateway closed in the meantime fails
        // on first use: retry once on a fresh one.
        for attempt in 0..2 {
            let fresh = self.conn.is_none();
            match self.exchange(&request) {
                Ok((status, keep)) => {
                    if !keep {
                        self.conn = None;
                    }
                    return Outcome::Status(status);
                }
                Err(e) => {
                    self.conn = None;
                    if fresh || attempt == 1 {
                        log::debug!("push to {id}: {e}");
                        return Outcome::Failed;
                    }
                }
            }
        }
        Outcome::Failed
    }

    /// Sends `request` and reads the response: (status, keep-alive).
    fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, bool)> {
        if self.conn.is_none() {
            let addr = resolve(&self.opts.api.authority)?;
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_write_timeout(Some(Duration::from_secs(5)))?;
            self.conn = Some(Client {
                stream,
                buf: Vec::new(),
            });
        }
        let Some(c) = self.conn.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        c.stream.write_all(request)?;
        read_response(&mut c.stream, &mut c.buf)
    }
}

fn resolve(authority: &str) -> io::Result<SocketAddr> {
    authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one response from `stream` (`buf` holds bytes already read);
/// returns its status and whether the connection may be reused. The body
/// is read and dropped.
pub fn read_response(stream: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<(u16, bool)> {
    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 16 * 1024,
        max_headers: 32,
    };
    let mut chunk = [0u8; 4096];
    loop {
        let head = http::with_response(buf, LIMITS, |h| match h {
            Head::Incomplete => Ok(None),
            Head::Invalid(r) => Err(bad(r.reason)),
            Head::Complete(r) => {
                let body = r.body(false).map_err(|r| bad(r.reason))?;
                Ok(Some((r.status, r.keep_alive(), body, r.head_len)))
            }
        })?;
        let Some((status, keep, body, head_len)) = head else {
            read_more(stream, buf, &mut chunk)?;
            continue;
        };
        if (100..200).contains(&status) {
            // An interim response: the real one follows.
            buf.drain(..head_len);
            continue;
        }
        match body {
            BodyKind::Length(n) => {
                while buf.len() < head_len + n {
                    read_more(stream, buf, &mut chunk)?;
                }
                buf.drain(..head_len + n);
                return Ok((status, keep));
            }
            BodyKind::Chunked => {
                let mut decoder = ChunkedDecoder::new(16 << 20);
                let mut sink = Vec::new();
                let mut used = head_len;
                loop {
                    used += decoder
                        .decode(&buf[used..], &mut sink)
                        .map_err(|_| bad("malformed chunked body"))?;
                    sink.clear();
                    if decoder.is_done() {
                        buf.drain(..used);
                        return Ok((status, keep));
                    }
                    read_more(stream, buf, &mut chunk)?;
                }
            }
            BodyKind::ToEof => {
                while stream.read(&mut chunk)? > 0 {}
                buf.clear();
                return Ok((status, false));
            }
        }
    }
}

fn read_more(stream: &mut impl Read, buf: &mut Vec<u8>, chunk: &mut [u8]) -> io::Result<()> {
    let n = stream.read(chunk)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls() {
        assert_eq!(
            "http://127.0.0.1:9091".parse(),
            Ok(ApiUrl {
                authority: "127.0.0.1:9091".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            "http://gw:80/base/".parse::<ApiUrl>().map(|u| u.prefix),
            Ok("/base".into())
        );
        assert_eq!("https://gw:1".parse::<ApiUrl>(), Err(UrlError::Scheme));
        assert_eq!("http://gw".parse::<ApiUrl>(), Err(UrlError::Authority));
        assert_eq!("http://:80".parse::<ApiUrl>(), Err(UrlError::Authority));
        assert!(matches!(
            "http://gw:x".parse::<ApiUrl>(),
            Err(UrlError::Port(_))
        ));
    }

    #[test]
    fn responses_in_pieces_and_pipelined() {
        let wire: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}\
            HTTP/1.1 410 Gone\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
            HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        /// A reader handing out one byte per read.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let Some((&b, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                out[0] = b;
                self.0 = rest;
                Ok(1)
            }
        }
        let mut r = Trickle(wire);
        let mut buf = Vec::new();
        assert_eq!(read_response(&mut r, &mut buf).unwrap(), (200, true));
        assert_eq!(read_response(&mut r, &mut buf).unwrap(), (410, true));
        assert_eq!(read_response(&mut r, &mut buf).unwrap(), (500, false));
        assert!(read_response(&mut r, &mut buf).is_err());
    }
}
