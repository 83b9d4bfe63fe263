//! The `upstream` app (the AWS API Gateway WebSocket / Pushpin model): the
//! application lives in an HTTP backend, and the gateway turns WebSocket
//! events into webhook calls.
//!
//! - `$connect`: the upgrade request (line, headers, query, peer address)
//!   goes to the backend before the client gets an answer. A 2xx accepts
//!   (`X-Subprotocol` picks one the client offered, `X-User-Id` attaches a
//!   user); any other status and its body are the client's HTTP answer.
//! - each message: its payload, unchanged, with the connection id, route,
//!   kind and user in headers. One message per connection is in flight, so
//!   the backend sees a connection's messages in order; a 2xx body goes
//!   back to the client as one message.
//! - `$disconnect`: the close code, after the connection ends.
//!
//! A backend that fails (down, overloaded, slow, 5xx, garbage) gives the
//! client a defined answer in bounded time: `$connect` gets 502/503/504;
//! a message gets an error message naming its id, or a close 1011/1013
//! (`routes.upstream.on_error`). The protocol is in the README.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use engine::ConnId;
use wsproto::codec::MessageKind;
use wsproto::http::{self, Reject};
use wsproto::http_client::ClientResponse;
use wsproto::session::{Ending, Flow, Opening, UpgradeRequest};

use super::{flow_after, AfterCall, App, Ctx};
use crate::config::{OnError, UpstreamRoute};
use crate::upstream::{Caller, Failure, Purpose};

/// The public id of a connection: worker, slot and generation in 16 hex
/// digits, so the push API can route to the right worker without a lookup.
pub fn connection_id(worker: usize, id: ConnId) -> String {
    format!(
        "{:016x}",
        (worker as u64) << 56 | (id.index() as u64) << 32 | u64::from(id.generation())
    )
}

/// Parses [`connection_id`]: the worker and the connection.
pub fn parse_connection_id(s: &str) -> Option<(usize, ConnId)> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u64::from_str_radix(s, 16).ok()?;
    Some((
        (v >> 56) as usize,
        ConnId::from_parts(((v >> 32) & 0xff_ffff) as u32, v as u32),
    ))
}

/// A message on its way to the backend.
#[derive(Debug)]
struct Queued {
    kind: MessageKind,
    payload: Bytes,
}

/// One connection of the route.
#[derive(Debug)]
struct Conn {
    /// The backend accepted it (so `$disconnect` is due).
    accepted: bool,
    user: Option<Box<str>>,
    peer: Option<SocketAddr>,
    /// Unix milliseconds at accept.
    connected_at_ms: u64,
    /// The payload of the message in flight (its id is read from it only
    /// if the call fails).
    in_flight: Option<Bytes>,
    waiting: VecDeque<Queued>,
}

/// One worker's instance of one `upstream` route.
#[derive(Debug)]
pub struct Upstream {
    cfg: UpstreamRoute,
    path: String,
    route: u8,
    backend: u16,
    /// Request timeout of the backend: the session's backstop for `$connect`.
    timeout_ms: u64,
    conns: HashMap<ConnId, Conn>,
    /// This node's name in a cluster: ids become `{hex}@{node}`, so the
    /// push API on any node finds the connection.
    node: Option<String>,
}

impl Upstream {
    /// The app of route `route` (`path`), calling backend index `backend`.
    pub fn new(
        cfg: UpstreamRoute,
        path: String,
        route: u8,
        backend: u16,
        timeout_ms: u64,
        node: Option<String>,
    ) -> Self {
        Self {
            cfg,
            path,
            route,
            backend,
            timeout_ms,
            conns: HashMap::new(),
            node,
        }
    }

    /// The id the backend sees for a connection of worker `worker`.
    fn public_id(&self, worker: usize, id: ConnId) -> String {
        match &self.node {
            Some(node) => format!("{}@{node}", connection_id(worker, id)),
            None => connection_id(worker, id),
        }
    }

    fn caller(&self, ctx: &Ctx<'_>, purpose: Purpose) -> Caller {
        Caller {
            conn: ctx.id,
            route: self.route,
            purpose,
        }
    }

    /// A webhook request: `POST path` with the common headers.
    fn request(
        &self,
        ctx: &Ctx<'_>,
        path: &str,
        event: &str,
        user: Option<&str>,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Bytes {
        let id = self.public_id(ctx.worker, ctx.id);
        let mut headers: Vec<(&str, &str)> = vec![
            ("X-Gateway-Event", event),
            ("X-Connection-Id", &id),
            ("X-Route", &self.path),
        ];
        if let Some(u) = user {
            headers.push(("X-User-Id", u));
        }
        headers.extend_from_slice(extra);
        http::request(
            "POST",
            path,
            ctx.upstream.host(self.backend),
            &headers,
            body,
        )
        .into()
    }

    /// Sends one message to the backend.
    fn forward(&mut self, ctx: &mut Ctx<'_>, kind: MessageKind, payload: Bytes) {
        let Some(c) = self.conns.get(&ctx.id) else {
            return;
        };
        let (kind_name, content_type) = match kind {
            MessageKind::Text => ("text", "text/plain; charset=utf-8"),
            MessageKind::Binary => ("binary", "application/octet-stream"),
        };
        let request = self.request(
            ctx,
            &self.cfg.message_path,
            "message",
            c.user.as_deref(),
            &[
                ("X-Message-Kind", kind_name),
                ("Content-Type", content_type),
            ],
            &payload,
        );
        let caller = self.caller(ctx, Purpose::Message);
        if let Some(c) = self.conns.get_mut(&ctx.id) {
            c.in_flight = Some(payload);
        }
        ctx.upstream.call(ctx.io, self.backend, caller, request);
    }

    /// The failure answer for a message (`payload`, to quote its id):
    /// `code` is an HTTP-like status, `close` the close code when the
    /// route closes instead.
    fn fail_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        payload: &[u8],
        code: u16,
        close: u16,
        message: &str,
    ) -> Flow {
        if code == 429 {
            ctx.counters.upstream_pending_full += 1;
        } else {
            ctx.counters.upstream_failure_answers += 1;
        }
        match self.cfg.on_error {
            OnError::Close => Flow::Close {
                code: close,
                reason: if close == 1011 {
                    "backend error"
                } else {
                    "backend unavailable"
                },
                ending: Ending::Normal,
            },
            OnError::Message => {
                let id = message_id(payload, &self.cfg.id_field).unwrap_or("null");
                let mut text = String::with_capacity(64 + message.len());
                let _ = write!(
                    text,
                    r#"{{"error":{{"code":{code},"message":{},"id":{id}}}}}"#,
                    serde_json::Value::from(message)
                );
                flow_after(ctx.send_message(MessageKind::Text, text.as_bytes()))
            }
        }
    }

    /// The answer to a message call.
    fn message_done(&mut self, ctx: &mut Ctx<'_>, result: Result<ClientResponse, Failure>) -> Flow {
        let Some(c) = self.conns.get_mut(&ctx.id) else {
            return Flow::Continue;
        };
        let payload = c.in_flight.take().unwrap_or_default();
        let flow = match result {
            Ok(r) if (200..300).contains(&r.status) => {
                if r.body.is_empty() {
                    Flow::Continue
                } else {
                    match reply_kind(&r) {
                        Some(kind) => flow_after(ctx.send_message(kind, &r.body)),
                        None => self.fail_message(
                            ctx,
                            &payload,
                            502,
                            1011,
                            "backend answered text that is not UTF-8",
                        ),
                    }
                }
            }
            Ok(r) => {
                let close = if r.status < 500 { 1008 } else { 1011 };
                let why = format!("backend answered {}", r.status);
                self.fail_message(ctx, &payload, r.status, close, &why)
            }
            Err(f) => self.fail_message(ctx, &payload, f.status(), f.close_code(), &f.describe()),
        };
        if flow != Flow::Continue {
            return flow;
        }
        if let Some(next) = self
            .conns
            .get_mut(&ctx.id)
            .and_then(|c| c.waiting.pop_front())
        {
            self.forward(ctx, next.kind, next.payload);
        }
        Flow::Continue
    }

    /// The answer to `$connect`.
    fn connect_done(
        &mut self,
        ctx: &mut Ctx<'_>,
        result: Result<ClientResponse, Failure>,
    ) -> AfterCall {
        let r = match result {
            Ok(r) => r,
            Err(f) => {
                self.conns.remove(&ctx.id);
                let body = format!("{}\n", f.describe());
                return AfterCall::Refuse {
                    status: f.status(),
                    response: http::response(
                        f.status(),
                        &[],
                        Some("text/plain"),
                        body.as_bytes(),
                        false,
                    ),
                };
            }
        };
        if !(200..300).contains(&r.status) {
            self.conns.remove(&ctx.id);
            let content_type = r.header_str("Content-Type").map(str::to_owned);
            return AfterCall::Refuse {
                status: r.status,
                response: http::response(r.status, &[], content_type.as_deref(), &r.body, false),
            };
        }
        let first = if r.body.is_empty() {
            None
        } else {
            match reply_kind(&r) {
                Some(kind) => Some((kind, r.body.clone())),
                None => {
                    self.conns.remove(&ctx.id);
                    let body = b"backend answered text that is not UTF-8\n";
                    return AfterCall::Refuse {
                        status: 502,
                        response: http::response(502, &[], Some("text/plain"), body, false),
                    };
                }
            }
        };
        if let Some(c) = self.conns.get_mut(&ctx.id) {
            c.accepted = true;
            c.user = r
                .header_str("X-User-Id")
                .filter(|u| !u.is_empty())
                .map(Into::into);
        }
        AfterCall::Accept {
            subprotocol: r.header_str("X-Subprotocol").map(str::to_owned),
            first,
        }
    }

    /// `GET /api/connections/{id}`: what the gateway knows of a connection.
    pub fn info(&self, worker: usize, id: ConnId) -> Option<String> {
        let c = self.conns.get(&id).filter(|c| c.accepted)?;
        Some(
            serde_json::json!({
                "connection_id": self.public_id(worker, id),
                "route": self.path,
                "user": c.user.as_deref(),
                "remote_addr": c.peer.map(|p| p.to_string()),
                "connected_at_ms": c.connected_at_ms,
                "worker": worker,
                "pending_messages": c.waiting.len() + usize::from(c.in_flight.is_some()),
            })
            .to_string(),
        )
    }
}

/// The kind of a backend's reply: `X-Message-Kind`, else text for `text/*`
/// and JSON, else binary. `None` for "text" that is not UTF-8.
fn reply_kind(r: &ClientResponse) -> Option<MessageKind> {
    let text = match r.header_str("X-Message-Kind") {
        Some(k) if k.eq_ignore_ascii_case("binary") => false,
        Some(k) if k.eq_ignore_ascii_case("text") => true,
        _ => r.header_str("Content-Type").is_none_or(|ct| {
            let ct = ct.trim_start().to_ascii_lowercase();
            ct.starts_with("text/") || ct.starts_with("application/json")
        }),
    };
    match text {
        true if std::str::from_utf8(&r.body).is_err() => None,
        true => Some(MessageKind::Text),
        false => Some(MessageKind::Binary),
    }
}

/// The raw JSON value of `"field":` in a message, if it is a number or a
/// string (a scan, not a parse: only failures need it).
pub fn message_id<'a>(payload: &'a [u8], field: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(payload).ok()?;
    let key = format!("\"{field}\"");
    let mut from = 0;
    while let Some(at) = text[from..].find(&key) {
        let after = &text[from + at + key.len()..];
        from += at + key.len();
        let Some(value) = after.trim_start().strip_prefix(':') else {
            continue;
        };
        let value = value.trim_start();
        let end = if let Some(s) = value.strip_prefix('"') {
            // A string without escapes (an id, not prose).
            s.find(['"', '\\']).filter(|&e| s.as_bytes()[e] == b'"')? + 2
        } else {
            value
                .find(|ch: char| !(ch.is_ascii_digit() || ch == '-'))
                .unwrap_or(value.len())
        };
        return (end > 0 && end <= 128).then(|| &value[..end]);
    }
    None
}

impl App for Upstream {
    fn open(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: &UpgradeRequest<'_, '_, '_>,
    ) -> Result<Opening, Reject> {
        let req = request.request;
        let peer = ctx.io.peer_addr(ctx.id);
        let deferred = !self.cfg.connect_path.is_empty();
        self.conns.insert(
            ctx.id,
            Conn {
                accepted: !deferred,
                user: None,
                peer,
                connected_at_ms: ctx.unix_ms(),
                in_flight: None,
                waiting: VecDeque::new(),
            },
        );
        if !deferred {
            return Ok(Opening::Accept);
        }
        let headers: Vec<(&str, String)> = req
            .headers
            .iter()
            .map(|h| (h.name, String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        let body = serde_json::json!({
            "connection_id": self.public_id(ctx.worker, ctx.id),
            "route": self.path,
            "method": req.method,
            "path": req.path(),
            "query": req.query().unwrap_or(""),
            "remote_addr": peer.map(|p| p.to_string()),
            "headers": headers,
            "subprotocols": wsproto::handshake::offered_subprotocols(req),
        })
        .to_string();
        let request = self.request(
            ctx,
            &self.cfg.connect_path,
            "connect",
            None,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        let caller = self.caller(ctx, Purpose::Connect);
        ctx.upstream.call(ctx.io, self.backend, caller, request);
        // The backend client answers within its timeout; this is a backstop.
        Ok(Opening::Defer {
            until_ms: ctx.now_ms() + self.timeout_ms + 1_000,
        })
    }

    fn message(&mut self, ctx: &mut Ctx<'_>, kind: MessageKind, payload: &[u8]) -> Flow {
        let Some(c) = self.conns.get_mut(&ctx.id) else {
            return Flow::Continue;
        };
        if c.in_flight.is_none() {
            self.forward(ctx, kind, Bytes::copy_from_slice(payload));
            return Flow::Continue;
        }
        if c.waiting.len() >= self.cfg.max_pending {
            let f = Failure::Overloaded;
            let why = "too many messages waiting for the backend";
            return self.fail_message(ctx, payload, 429, f.close_code(), why);
        }
        c.waiting.push_back(Queued {
            kind,
            payload: Bytes::copy_from_slice(payload),
        });
        Flow::Continue
    }

    fn upstream_done(
        &mut self,
        ctx: &mut Ctx<'_>,
        purpose: Purpose,
        result: Result<ClientResponse, Failure>,
    ) -> AfterCall {
        match purpose {
            Purpose::Connect => self.connect_done(ctx, result),
            Purpose::Message => AfterCall::Flow(self.message_done(ctx, result)),
            Purpose::Disconnect | Purpose::Proxy(..) => AfterCall::Flow(Flow::Continue),
        }
    }

    fn closed(&mut self, ctx: &mut Ctx<'_>, code: Option<u16>) {
        let (Some(c), Some(code)) = (self.conns.remove(&ctx.id), code) else {
            return;
        };
        if !c.accepted || self.cfg.disconnect_path.is_empty() {
            return;
        }
        let body = serde_json::json!({
            "connection_id": self.public_id(ctx.worker, ctx.id),
            "route": self.path,
            "code": code,
            "user": c.user.as_deref(),
        })
        .to_string();
        let code = code.to_string();
        let request = self.request(
            ctx,
            &self.cfg.disconnect_path,
            "disconnect",
            c.user.as_deref(),
            &[
                ("Content-Type", "application/json"),
                ("X-Close-Code", &code),
            ],
            body.as_bytes(),
        );
        let caller = self.caller(ctx, Purpose::Disconnect);
        ctx.upstream.call(ctx.io, self.backend, caller, request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_round_trip() {
        let id = ConnId::from_parts(0xab_cdef, 0xdead_beef);
        let s = connection_id(3, id);
        assert_eq!(s, "03abcdefdeadbeef");
        assert_eq!(parse_connection_id(&s), Some((3, id)));
        for bad in [
            "",
            "03abcdefdeadbee",
            "03abcdefdeadbeeg",
            "+3abcdefdeadbeef",
        ] {
            assert_eq!(parse_connection_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn message_ids_are_found_without_parsing() {
        assert_eq!(message_id(br#"{"type":"msg","id":17}"#, "id"), Some("17"));
        assert_eq!(
            message_id(br#"{"id" : "a-1", "x":2}"#, "id"),
            Some("\"a-1\"")
        );
        assert_eq!(message_id(br#"{"uid":1,"id":-4}"#, "id"), Some("-4"));
        assert_eq!(message_id(br#"{"msg_id":9}"#, "msg_id"), Some("9"));
        assert_eq!(message_id(br#"{"body":"id","x":1}"#, "id"), None);
        assert_eq!(message_id(br#"{"id":{"nested":1}}"#, "id"), None);
        assert_eq!(message_id(br#"{"id":"esc\"aped"}"#, "id"), None);
        assert_eq!(message_id(b"\xff\xfe", "id"), None);
        assert_eq!(message_id(b"plain text", "id"), None);
    }

    #[test]
    fn reply_kinds() {
        let r = |headers: &[(&str, &str)], body: &[u8]| ClientResponse {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
            keep_alive: true,
        };
        assert_eq!(reply_kind(&r(&[], b"x")), Some(MessageKind::Text));
        assert_eq!(
            reply_kind(&r(&[("Content-Type", "application/octet-stream")], b"x")),
            Some(MessageKind::Binary)
        );
        assert_eq!(
            reply_kind(&r(&[("Content-Type", "Application/JSON")], b"{}")),
            Some(MessageKind::Text)
        );
        assert_eq!(
            reply_kind(&r(&[("X-Message-Kind", "binary")], b"\xff")),
            Some(MessageKind::Binary)
        );
        assert_eq!(
            reply_kind(&r(&[("Content-Type", "text/plain")], b"\xff")),
            None
        );
    }
}
