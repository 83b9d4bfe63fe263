//! What the mock answers: the webhook endpoints of the gateway's upstream
//! protocol (`/ws/connect`, `/ws/message`, `/ws/disconnect`), the
//! Centrifugo proxy endpoints (`/centrifugo/{connect,rpc,publish,subscribe}`)
//! and `GET /stats`, each with its counters, the sampled latency and the
//! `--failure-rate` 500s. See `/work/notes/upstream-protocol.md`.
//!
//! Why separate from the connection code: this is the behaviour the spec
//! pins down, written against a parsed request and a body, with no I/O, so
//! it reads like the spec and the server module only deals with bytes,
//! order and time.

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;
use serde_json::value::RawValue;
use wsproto::http::{Headers, Reject, Request};

use crate::latency::{Latency, Rng};
use crate::probe::{Found, Probe};
use crate::stats::{Stats, C};

/// Behaviour settings, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Name of a message's id field.
    pub id_field: String,
    /// Name of a message's type field.
    pub type_field: String,
    /// The ack value as a JSON string (quotes and escapes included), the way
    /// it appears in a message.
    pub ack_json: String,
    /// Echo messages that are not id-carrying JSON.
    pub echo: bool,
    /// Delay of every answer (but `/stats`).
    pub latency: Latency,
    /// Probability of a 500.
    pub failure_rate: f64,
    /// RNG seed (each worker derives its own stream).
    pub seed: u64,
}

/// Connection ids learned at `/ws/connect` and forgotten at
/// `/ws/disconnect` (or on a 410 from the push API), for the push thread.
#[derive(Debug, Default)]
pub struct Registry {
    ids: Mutex<Vec<String>>,
    cursor: AtomicUsize,
}

impl Registry {
    /// Remembers `id` (once).
    pub fn add(&self, id: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }

    /// Forgets `id`.
    pub fn remove(&self, id: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pos) = ids.iter().position(|i| i == id) {
            ids.swap_remove(pos);
        }
    }

    /// The next id, round robin; `None` when there is none.
    pub fn next(&self) -> Option<String> {
        let ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % ids.len();
        Some(ids[i].clone())
    }
}

/// State shared by every worker.
#[derive(Debug)]
pub struct Shared {
    /// Behaviour.
    pub settings: Settings,
    /// Counters (one set per worker, then the push thread's).
    pub stats: Arc<Stats>,
    /// Numbers the `mock-<n>` users.
    pub users: AtomicU64,
    /// Present when pushing (`--push-rate`).
    pub registry: Option<Arc<Registry>>,
}

/// The answer to one request.
#[derive(Debug)]
pub struct Reply {
    /// The complete response.
    pub bytes: Vec<u8>,
    /// How long to hold it, in microseconds.
    pub delay_us: u64,
    /// Whether the connection stays open after it.
    pub keep_alive: bool,
}

/// One worker's view: the shared state, its counter set and its RNG.
#[derive(Debug)]
pub struct App {
    shared: Arc<Shared>,
    worker: usize,
    rng: Rng,
}

/// What the gateway sends to `/ws/connect` (fields the mock reads).
#[derive(Debug, Default, Deserialize)]
struct ConnectHook<'a> {
    #[serde(borrow, default)]
    connection_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    query: Option<Cow<'a, str>>,
}

/// What the gateway sends to `/ws/disconnect` (fields the mock reads).
#[derive(Debug, Default, Deserialize)]
struct DisconnectHook<'a> {
    #[serde(borrow, default)]
    connection_id: Option<Cow<'a, str>>,
}

/// A Centrifugo proxy request (fields the mock reads).
#[derive(Debug, Deserialize)]
struct ProxyRequest<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Connect data the connect proxy looks at.
#[derive(Debug, Default, Deserialize)]
struct ConnectData {
    #[serde(default)]
    user: Option<serde_json::Value>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    reject: Option<String>,
}

/// The POST endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Connect,
    Message,
    Disconnect,
    ProxyConnect,
    ProxyRpc,
    ProxyPublish,
    ProxySubscribe,
}

impl Endpoint {
    fn of(path: &str) -> Option<Self> {
        Some(match path {
            "/ws/connect" => Endpoint::Connect,
            "/ws/message" => Endpoint::Message,
            "/ws/disconnect" => Endpoint::Disconnect,
            "/centrifugo/connect" => Endpoint::ProxyConnect,
            "/centrifugo/rpc" => Endpoint::ProxyRpc,
            "/centrifugo/publish" => Endpoint::ProxyPublish,
            "/centrifugo/subscribe" => Endpoint::ProxySubscribe,
            _ => return None,
        })
    }

    fn counter(self) -> C {
        match self {
            Endpoint::Connect => C::Connect,
            Endpoint::Message => C::Message,
            Endpoint::Disconnect => C::Disconnect,
            Endpoint::ProxyConnect => C::ProxyConnect,
            Endpoint::ProxyRpc => C::ProxyRpc,
            Endpoint::ProxyPublish => C::ProxyPublish,
            Endpoint::ProxySubscribe => C::ProxySubscribe,
        }
    }
}

/// Path of the counters.
pub const STATS_PATH: &str = "/stats";

impl App {
    /// Worker `worker`'s app.
    pub fn new(shared: Arc<Shared>, worker: usize) -> Self {
        let rng = Rng::new(shared.settings.seed, worker as u64);
        Self {
            shared,
            worker,
            rng,
        }
    }

    fn bump(&self, c: C) {
        self.shared.stats.set(self.worker).bump(c);
    }

    /// The answer to a request that could not be framed (the connection
    /// closes after it).
    pub fn reject(&self, r: Reject) -> Vec<u8> {
        self.bump(C::BadRequest);
        let mut body = Vec::with_capacity(r.reason.len() + 1);
        body.extend_from_slice(r.reason.as_bytes());
        body.push(b'\n');
        response(r.status, &[], Some("text/plain"), &[&body], false)
    }

    /// The answer to one complete request.
    pub fn handle(&mut self, req: &Request<'_, '_>, body: &[u8]) -> Reply {
        let keep = req.keep_alive();
        let path = req.path();
        let now = |bytes| Reply {
            bytes,
            delay_us: 0,
            keep_alive: keep,
        };
        if path == STATS_PATH {
            if req.method != "GET" {
                self.bump(C::NotFound);
                return now(method_not_allowed("GET", keep));
            }
            self.bump(C::Stats);
            let json = self.shared.stats.snapshot().to_json();
            return now(response(
                200,
                &[],
                Some("application/json"),
                &[json.as_bytes()],
                keep,
            ));
        }
        let Some(endpoint) = Endpoint::of(path) else {
            self.bump(C::NotFound);
            return now(response(
                404,
                &[],
                Some("text/plain"),
                &[b"not found\n"],
                keep,
            ));
        };
        if req.method != "POST" {
            self.bump(C::NotFound);
            return now(method_not_allowed("POST", keep));
        }
        self.bump(endpoint.counter());
        let s = &self.shared.settings;
        let delay_us = if s.latency.is_zero() {
            0
        } else {
            s.latency.sample(&mut self.rng)
        };
        let bytes = if self.rng.chance(s.failure_rate) {
            self.bump(C::Failures);
            response(500, &[], Some("text/plain"), &[b"mock failure\n"], keep)
        } else {
            let answer = match endpoint {
                Endpoint::Connect => self.ws_connect(req, body, keep),
                Endpoint::Message => Ok(self.ws_message(req, body, keep)),
                Endpoint::Disconnect => self.ws_disconnect(req, body, keep),
                Endpoint::ProxyConnect => self.proxy_connect(body, keep),
                Endpoint::ProxyRpc => self.proxy(body, keep, Self::rpc),
                Endpoint::ProxyPublish => self.proxy(body, keep, |_, _| "{\"result\":{}}".into()),
                Endpoint::ProxySubscribe => self.proxy(body, keep, Self::subscribe),
            };
            answer.unwrap_or_else(|e| {
                self.bump(C::InvalidBody);
                let msg = format!("invalid JSON body: {e}\n");
                response(400, &[], Some("text/plain"), &[msg.as_bytes()], keep)
            })
        };
        Reply {
            bytes,
            delay_us,
            keep_alive: keep,
        }
    }

    fn next_user(&self) -> String {
        let n = self.shared.users.fetch_add(1, Ordering::Relaxed) + 1;
        format!("mock-{n}")
    }

    /// `/ws/connect`: 403 for `deny=1`, else 200 with `X-User-Id`.
    fn ws_connect(
        &mut self,
        req: &Request<'_, '_>,
        body: &[u8],
        keep: bool,
    ) -> serde_json::Result<Vec<u8>> {
        let hook: ConnectHook<'_> = parse_or_default(body)?;
        // The client's query travels in the body; a query on the hook's own
        // URL counts too (handy with curl).
        let queries = [hook.query.as_deref(), req.query()];
        let param = |name: &str| queries.iter().flatten().find_map(|q| query_param(q, name));
        if param("deny").as_deref() == Some("1") {
            self.bump(C::Denied);
            return Ok(response(
                403,
                &[],
                Some("text/plain"),
                &[b"denied by mock\n"],
                keep,
            ));
        }
        let user = param("user")
            .filter(|u| !u.is_empty() && u.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .unwrap_or_else(|| self.next_user());
        if let Some(registry) = &self.shared.registry {
            let id = header_str(req, "X-Connection-Id").or(hook.connection_id.as_deref());
            if let Some(id) = id.filter(|i| valid_conn_id(i)) {
                registry.add(id);
            }
        }
        Ok(response(200, &[("X-User-Id", &user)], None, &[], keep))
    }

    /// `/ws/message`: ack an id-carrying JSON text message, 204 the
    /// client's own acks, echo or 204 the rest.
    fn ws_message(&mut self, req: &Request<'_, '_>, body: &[u8], keep: bool) -> Vec<u8> {
        let binary = req
            .header("X-Message-Kind")
            .is_some_and(|k| k.trim_ascii().eq_ignore_ascii_case(b"binary"));
        let s = &self.shared.settings;
        if !binary {
            let probe = Probe {
                id_field: &s.id_field,
                type_field: &s.type_field,
            };
            if let Some(Found { id: Some(id), ty }) = probe.run(body) {
                if ty.is_some_and(|t| t.get() == s.ack_json) {
                    self.bump(C::ClientAcks);
                    return response(204, &[], None, &[], keep);
                }
                self.bump(C::AcksSent);
                return response(
                    200,
                    &[],
                    Some("application/json"),
                    &[b"{\"type\":\"ack\",\"id\":", id.get().as_bytes(), b"}"],
                    keep,
                );
            }
        }
        if s.echo && !body.is_empty() {
            self.bump(C::Echoes);
            let (kind, default_ct) = if binary {
                ("binary", "application/octet-stream")
            } else {
                ("text", "text/plain; charset=utf-8")
            };
            let ct = header_str(req, "Content-Type").unwrap_or(default_ct);
            return response(200, &[("X-Message-Kind", kind)], Some(ct), &[body], keep);
        }
        response(204, &[], None, &[], keep)
    }

    /// `/ws/disconnect`: 204, and the connection is forgotten.
    fn ws_disconnect(
        &mut self,
        req: &Request<'_, '_>,
        body: &[u8],
        keep: bool,
    ) -> serde_json::Result<Vec<u8>> {
        let hook: DisconnectHook<'_> = parse_or_default(body)?;
        if let Some(registry) = &self.shared.registry {
            if let Some(id) = header_str(req, "X-Connection-Id").or(hook.connection_id.as_deref()) {
                registry.remove(id);
            }
        }
        Ok(response(204, &[], None, &[], keep))
    }

    /// `/centrifugo/connect`: the user from `data.user` or `mock-<n>`;
    /// `data.channels` become server-side subscriptions; `data.reject`
    /// `"error"` / `"disconnect"` answer with those shapes.
    fn proxy_connect(&mut self, body: &[u8], keep: bool) -> serde_json::Result<Vec<u8>> {
        let req: ProxyRequest<'_> = serde_json::from_slice(body)?;
        let data: ConnectData = req
            .data
            .and_then(|d| serde_json::from_str(d.get()).ok())
            .unwrap_or_default();
        let json = match data.reject.as_deref() {
            Some("error") => r#"{"error":{"code":1000,"message":"rejected by mock"}}"#.to_string(),
            Some("disconnect") => {
                r#"{"disconnect":{"code":4500,"reason":"rejected by mock"}}"#.to_string()
            }
            _ => {
                let user = match data.user {
                    Some(serde_json::Value::String(u)) => u,
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => self.next_user(),
                };
                let mut out = format!(
                    r#"{{"result":{{"user":{},"expire_at":0"#,
                    serde_json::Value::String(user)
                );
                if let Some(ch) = data.channels {
                    out.push_str(",\"channels\":");
                    out.push_str(&serde_json::to_string(&ch)?);
                }
                out.push_str("}}");
                out
            }
        };
        Ok(json_response(&json, keep))
    }

    /// A proxy endpoint whose answer `f` builds from the parsed request.
    fn proxy(
        &mut self,
        body: &[u8],
        keep: bool,
        f: fn(&Self, &ProxyRequest<'_>) -> String,
    ) -> serde_json::Result<Vec<u8>> {
        let req: ProxyRequest<'_> = serde_json::from_slice(body)?;
        Ok(json_response(&f(self, &req), keep))
    }

    /// `/centrifugo/rpc`: echoes `data`; methods `mock.error` and
    /// `mock.disconnect` answer with those shapes.
    fn rpc(&self, req: &ProxyRequest<'_>) -> String {
        match req.method.as_deref() {
            Some("mock.error") => r#"{"error":{"code":1000,"message":"mock error"}}"#.into(),
            Some("mock.disconnect") => {
                r#"{"disconnect":{"code":4500,"reason":"mock disconnect"}}"#.into()
            }
            _ => match req.data {
                Some(d) => format!(r#"{{"result":{{"data":{}}}}}"#, d.get()),
                None => r#"{"result":{}}"#.into(),
            },
        }
    }

    /// `/centrifugo/subscribe`: allowed, except channels starting with
    /// `forbidden` (error 103).
    fn subscribe(&self, req: &ProxyRequest<'_>) -> String {
        if req
            .channel
            .as_deref()
            .is_some_and(|c| c.starts_with("forbidden"))
        {
            r#"{"error":{"code":103,"message":"permission denied"}}"#.into()
        } else {
            r#"{"result":{}}"#.into()
        }
    }
}

/// An empty body means `{}`; anything else must be the JSON object.
fn parse_or_default<'a, T: Deserialize<'a> + Default>(body: &'a [u8]) -> serde_json::Result<T> {
    if body.trim_ascii().is_empty() {
        Ok(T::default())
    } else {
        serde_json::from_slice(body)
    }
}

fn header_str<'b>(req: &Request<'_, 'b>, name: &str) -> Option<&'b str> {
    std::str::from_utf8(req.header(name)?.trim_ascii())
        .ok()
        .filter(|s| !s.is_empty())
}

/// A connection id fit for a URL path segment.
fn valid_conn_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The first value of `name` in a query string, percent-decoded (`+` is a
/// space); `None` when absent or not UTF-8 once decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    let raw = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        505 => "HTTP Version Not Supported",
        s => wsproto::http::reason_phrase(s),
    }
}

/// A complete response whose body is the concatenation of `body`. No
/// `Content-Length` (and no `Content-Type`) on a 1xx or 204, which must
/// not carry one (RFC 9110 §8.6); `keep_alive: false` adds
/// `Connection: close`.
pub fn response(
    status: u16,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &[&[u8]],
    keep_alive: bool,
) -> Vec<u8> {
    let len: usize = body.iter().map(|b| b.len()).sum();
    let extra: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut out = Vec::with_capacity(128 + extra + len);
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    let bodiless = status == 204 || (100..200).contains(&status);
    if !bodiless {
        if let Some(ct) = content_type {
            let _ = write!(out, "Content-Type: {ct}\r\n");
        }
        let _ = write!(out, "Content-Length: {len}\r\n");
    }
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        for part in body {
            out.extend_from_slice(part);
        }
    }
    out
}

/// `100 Continue`.
pub fn continue_response() -> Vec<u8> {
    b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()
}

fn json_response(json: &str, keep: bool) -> Vec<u8> {
    response(200, &[], Some("application/json"), &[json.as_bytes()], keep)
}

fn method_not_allowed(allow: &str, keep: bool) -> Vec<u8> {
    response(
        405,
        &[("Allow", allow)],
        Some("text/plain"),
        &[b"method not allowed\n"],
        keep,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_decode() {
        assert_eq!(query_param("room=1&deny=1", "deny").as_deref(), Some("1"));
        assert_eq!(
            query_param("user=a%20b+c", "user").as_deref(),
            Some("a b c")
        );
        assert_eq!(query_param("user=%zz%4", "user").as_deref(), Some("%zz%4"));
        assert_eq!(query_param("flag&x=2", "flag").as_deref(), Some(""));
        assert_eq!(query_param("undeny=1", "deny"), None);
        assert_eq!(query_param("user=%ff", "user"), None);
    }

    #[test]
    fn responses_are_exact() {
        let r = response(204, &[("X-A", "b")], Some("text/plain"), &[b"x"], true);
        assert_eq!(r, b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n");
        let r = response(200, &[], Some("application/json"), &[b"{", b"}"], false);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn registry_round_robin_and_forget() {
        let r = Registry::default();
        assert_eq!(r.next(), None);
        r.add("a");
        r.add("b");
        r.add("a");
        let picks: Vec<_> = (0..4).filter_map(|_| r.next()).collect();
        assert_eq!(picks.iter().filter(|p| *p == "a").count(), 2);
        assert_eq!(picks.iter().filter(|p| *p == "b").count(), 2);
        r.remove("a");
        assert_eq!(r.next().as_deref(), Some("b"));
        assert!(valid_conn_id("00000001000000a3"));
        assert!(!valid_conn_id("a/b"));
    }
}
