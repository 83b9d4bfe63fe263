//! The push API (`/api/connections/{id}`, the AWS `@connections` model): a
//! backend sends a message to a connection, closes it, or asks about it.
//!
//! The id names the worker that holds the connection (see
//! [`crate::app::upstream::connection_id`]). The API connection's worker
//! posts the operation to that worker's mailbox, which performs it on the
//! connection's own session and posts the answer back; meanwhile the API
//! connection holds its later requests. The same path serves a connection
//! on the API's own worker, so there is one way, not two.

use bytes::Bytes;
use engine::ConnId;
use wsproto::codec::MessageKind;

use super::http::{Request, CONNECTIONS_PREFIX};
use crate::broker::envelope::{hex, unhex, Control};

/// What to do with a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnOp {
    /// Send one message.
    Send(MessageKind, Bytes),
    /// Close with this code and reason.
    Close(u16, String),
    /// Describe it.
    Info,
}

/// A parsed push request: the target node, worker and connection, and
/// the op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The node holding the connection, when the id names one (cluster).
    pub node: Option<String>,
    /// The id without the node part (what that node parses).
    pub local_id: String,
    /// The worker holding the connection.
    pub worker: usize,
    /// The connection.
    pub conn: ConnId,
    /// What to do.
    pub op: ConnOp,
}

/// Where an answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTo {
    /// An API connection of this node.
    Local {
        /// The API connection's worker.
        worker: usize,
        /// The API connection.
        conn: ConnId,
    },
    /// Another node's request (through the broker).
    Remote {
        /// The asking node.
        node: std::sync::Arc<str>,
        /// Its request number.
        request: u64,
    },
}

/// An answer: HTTP status and JSON body (empty for 204).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAnswer {
    /// Status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

impl PushAnswer {
    /// `status` with a `{"error":...}` body.
    pub fn error(status: u16, message: &str) -> Self {
        PushAnswer {
            status,
            body: serde_json::json!({ "error": message })
                .to_string()
                .into_bytes(),
        }
    }

    /// The answer for a connection that is not there (any more).
    pub fn gone() -> Self {
        Self::error(410, "no such connection")
    }
}

/// Parses an authorized request to `/api/connections/{id}` for a gateway
/// with `workers` workers; `Err` is the answer to give at once.
pub fn parse(req: &Request, workers: usize) -> Result<Push, PushAnswer> {
    let id = req
        .path
        .strip_prefix(CONNECTIONS_PREFIX)
        .unwrap_or_default();
    let (local_id, node) = match id.split_once('@') {
        Some((local, node)) => (local, Some(node.to_owned())),
        None => (id, None),
    };
    let Some((worker, conn)) = crate::app::upstream::parse_connection_id(local_id) else {
        return Err(PushAnswer::error(400, "malformed connection id"));
    };
    if node.is_none() && worker >= workers {
        return Err(PushAnswer::gone());
    }
    let op = match req.method.as_str() {
        "POST" => {
            let binary = req
                .content_type
                .as_deref()
                .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/octet-stream"));
            if binary {
                ConnOp::Send(MessageKind::Binary, Bytes::copy_from_slice(&req.body))
            } else if std::str::from_utf8(&req.body).is_err() {
                return Err(PushAnswer::error(
                    400,
                    "a text message must be UTF-8 (send binary as application/octet-stream)",
                ));
            } else {
                ConnOp::Send(MessageKind::Text, Bytes::copy_from_slice(&req.body))
            }
        }
        "DELETE" => {
            let (code, reason) = close_params(&req.query)?;
            ConnOp::Close(code, reason)
        }
        "GET" => ConnOp::Info,
        _ => return Err(PushAnswer::error(405, "use GET, POST or DELETE")),
    };
    Ok(Push {
        node,
        local_id: local_id.to_owned(),
        worker,
        conn,
        op,
    })
}

/// The broker form of a push for another node.
pub fn to_control(p: &Push) -> Control {
    let (method, code, reason, kind, body) = match &p.op {
        ConnOp::Send(MessageKind::Text, b) => (
            "POST",
            0,
            String::new(),
            "text",
            String::from_utf8_lossy(b).into_owned(),
        ),
        ConnOp::Send(MessageKind::Binary, b) => ("POST", 0, String::new(), "binary", hex(b)),
        ConnOp::Close(code, reason) => ("DELETE", *code, reason.clone(), "", String::new()),
        ConnOp::Info => ("GET", 0, String::new(), "", String::new()),
    };
    Control::Push {
        from: String::new(),
        request: 0,
        conn: p.local_id.clone(),
        method: method.into(),
        code,
        reason,
        kind: kind.into(),
        body,
    }
}

/// A push another node sent: the worker, the connection and the op.
pub fn remote_op(
    conn: &str,
    method: &str,
    code: u16,
    reason: String,
    kind: &str,
    body: &str,
) -> Result<(usize, ConnId, ConnOp), PushAnswer> {
    let Some((worker, id)) = crate::app::upstream::parse_connection_id(conn) else {
        return Err(PushAnswer::error(400, "malformed connection id"));
    };
    let op = match (method, kind) {
        ("POST", "binary") => ConnOp::Send(
            MessageKind::Binary,
            unhex(body)
                .ok_or_else(|| PushAnswer::error(400, "bad binary body"))?
                .into(),
        ),
        ("POST", _) => ConnOp::Send(MessageKind::Text, Bytes::copy_from_slice(body.as_bytes())),
        ("DELETE", _) => ConnOp::Close(code, reason),
        ("GET", _) => ConnOp::Info,
        _ => return Err(PushAnswer::error(405, "use GET, POST or DELETE")),
    };
    Ok((worker, id, op))
}

/// `code` and `reason` of a DELETE's query: code 1000 or 3000–4999
/// (default 1000), reason at most 123 bytes.
fn close_params(query: &str) -> Result<(u16, String), PushAnswer> {
    let mut code = 1000;
    let mut reason = String::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "code" => {
                code = v
                    .parse()
                    .ok()
                    .filter(|c| *c == 1000 || (3000..5000).contains(c))
                    .ok_or_else(|| PushAnswer::error(400, "code must be 1000 or 3000-4999"))?;
            }
            "reason" => {
                reason = percent_decode(v)
                    .filter(|r| r.len() <= 123)
                    .ok_or_else(|| {
                        PushAnswer::error(400, "reason must be UTF-8 of at most 123 bytes")
                    })?;
            }
            _ => {}
        }
    }
    Ok((code, reason))
}

/// Decodes `%XX` and `+` of a query value.
fn percent_decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, query: &str, ct: Option<&str>, body: &[u8]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            content_type: ct.map(Into::into),
            authorized_with: None,
            body: body.to_vec(),
            keep_alive: true,
        }
    }

    #[test]
    fn requests_parse_into_ops() {
        let id = crate::app::upstream::connection_id(1, ConnId::from_parts(5, 9));
        let path = format!("{CONNECTIONS_PREFIX}{id}");
        let p = parse(&req("POST", &path, "", None, b"hi"), 2).unwrap();
        assert_eq!(
            (p.worker, p.conn, p.node.clone()),
            (1, ConnId::from_parts(5, 9), None)
        );
        let on = parse(&req("GET", &format!("{path}@n2"), "", None, b""), 1).unwrap();
        assert_eq!(on.node.as_deref(), Some("n2"), "another node's worker 1");
        let back = to_control(&on);
        let Control::Push { conn, method, .. } = &back else {
            panic!("{back:?}")
        };
        assert_eq!(
            remote_op(conn, method, 0, String::new(), "", "").unwrap().2,
            ConnOp::Info
        );
        assert_eq!(
            p.op,
            ConnOp::Send(MessageKind::Text, Bytes::from_static(b"hi"))
        );
        let p = parse(
            &req("POST", &path, "", Some("application/octet-stream"), b"\xff"),
            2,
        )
        .unwrap();
        assert_eq!(
            p.op,
            ConnOp::Send(MessageKind::Binary, Bytes::from_static(b"\xff"))
        );
        let p = parse(
            &req("DELETE", &path, "code=4001&reason=bye+now%21", None, b""),
            2,
        )
        .unwrap();
        assert_eq!(p.op, ConnOp::Close(4001, "bye now!".into()));
        let p = parse(&req("GET", &path, "", None, b""), 2).unwrap();
        assert_eq!(p.op, ConnOp::Info);
    }

    #[test]
    fn bad_requests_get_precise_answers() {
        let id = crate::app::upstream::connection_id(1, ConnId::from_parts(5, 9));
        let path = format!("{CONNECTIONS_PREFIX}{id}");
        let status = |r: Request, workers| parse(&r, workers).unwrap_err().status;
        assert_eq!(status(req("POST", &path, "", None, b"\xff"), 2), 400);
        assert_eq!(status(req("DELETE", &path, "code=1001", None, b""), 2), 400);
        assert_eq!(status(req("DELETE", &path, "code=x", None, b""), 2), 400);
        assert_eq!(
            status(req("DELETE", &path, "reason=%zz", None, b""), 2),
            400
        );
        assert_eq!(status(req("PUT", &path, "", None, b""), 2), 405);
        assert_eq!(
            status(req("GET", &path, "", None, b""), 1),
            410,
            "no worker 1"
        );
        assert_eq!(
            status(req("GET", "/api/connections/xyz", "", None, b""), 2),
            400
        );
    }
}
