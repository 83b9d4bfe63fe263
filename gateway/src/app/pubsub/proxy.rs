//! Centrifugo-style proxies of the `pubsub` app: the backend decides what
//! the gateway's own rules would otherwise decide. Same request and answer
//! shapes as Centrifugo's HTTP proxies, so a backend written for
//! Centrifugo works unchanged:
//!
//! - connect (a connection without a token): `{"result":{"user","data",
//!   "channels",...}}` accepts;
//! - rpc: `{"result":{"data"}}` is the reply;
//! - publish: `{"result":{}}` allows, `{"result":{"data":D}}` rewrites;
//! - subscribe (a subscription without a token): `{"result":{}}` allows.
//!
//! Any of them may answer `{"error":{"code","message"}}` (a reply error)
//! or `{"disconnect":{"code","reason"}}`. A backend that fails (down,
//! timeout, non-2xx, not this JSON) gives the client error 100 "internal
//! server error" (temporary: the SDKs retry), as Centrifugo does.
//!
//! Not forwarded: the client's HTTP headers and cookies, `meta`, `b64data`.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use wsproto::http;
use wsproto::http_client::ClientResponse;

use crate::config::ProxyConfig;
use crate::upstream::{Failure, ProxyKind};

/// The proxies of the pubsub routes on one worker.
#[derive(Debug, Clone)]
pub struct Proxies {
    /// Backend index.
    pub backend: u16,
    /// Paths (empty: that proxy is off).
    pub cfg: ProxyConfig,
}

impl Proxies {
    /// The path of `kind`, if that proxy is on.
    pub fn path(&self, kind: ProxyKind) -> Option<&str> {
        let p = match kind {
            ProxyKind::Connect => &self.cfg.connect_path,
            ProxyKind::Rpc => &self.cfg.rpc_path,
            ProxyKind::Publish => &self.cfg.publish_path,
            ProxyKind::Subscribe => &self.cfg.subscribe_path,
        };
        (!p.is_empty()).then_some(p.as_str())
    }
}

/// The common fields of every proxy request.
pub fn base(client: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("client".into(), client.into());
    m.insert("transport".into(), "websocket".into());
    m.insert("protocol".into(), "json".into());
    m.insert("encoding".into(), "json".into());
    m
}

/// A raw JSON value as a field (kept verbatim).
pub fn raw(v: &RawValue) -> serde_json::Value {
    serde_json::from_str(v.get()).unwrap_or(serde_json::Value::Null)
}

/// The HTTP request for a proxy call.
pub fn request(host: &str, path: &str, body: &serde_json::Map<String, serde_json::Value>) -> Bytes {
    let body = serde_json::to_vec(body).unwrap_or_default();
    http::request(
        "POST",
        path,
        host,
        &[("Content-Type", "application/json")],
        &body,
    )
    .into()
}

/// `result` of a proxy answer: only the fields the gateway uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProxyResult {
    /// Connect: the user id.
    pub user: String,
    /// Connect: server-side subscriptions.
    pub channels: Vec<String>,
    /// Connect, subscribe and RPC: data for the client; publish: the
    /// replacement data.
    pub data: Option<Box<RawValue>>,
}

#[derive(Debug, Deserialize)]
struct ProxyError {
    code: u32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    temporary: bool,
}

#[derive(Debug, Deserialize)]
struct ProxyDisconnect {
    code: u16,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
struct Answer {
    result: Option<ProxyResult>,
    error: Option<ProxyError>,
    disconnect: Option<ProxyDisconnect>,
}

/// What the backend decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go ahead.
    Result(ProxyResult),
    /// A reply error for the command.
    Error {
        /// Code.
        code: u32,
        /// Message.
        message: String,
        /// The client may retry.
        temporary: bool,
    },
    /// Close the connection.
    Disconnect {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// Reads a proxy call's outcome. A failed call, a non-2xx answer or JSON
/// that is none of the three shapes is error 100 (temporary).
pub fn verdict(result: Result<ClientResponse, Failure>) -> Verdict {
    let internal = |why: String| {
        log::debug!("proxy call failed: {why}");
        Verdict::Error {
            code: 100,
            message: "internal server error".into(),
            temporary: true,
        }
    };
    let r = match result {
        Ok(r) if (200..300).contains(&r.status) => r,
        Ok(r) => return internal(format!("backend answered {}", r.status)),
        Err(f) => return internal(f.describe()),
    };
    match serde_json::from_slice::<Answer>(&r.body) {
        Ok(Answer {
            disconnect: Some(d),
            ..
        }) if (3000..5000).contains(&d.code) => Verdict::Disconnect {
            code: d.code,
            reason: d.reason,
        },
        Ok(Answer { error: Some(e), .. }) => Verdict::Error {
            code: e.code,
            message: e.message,
            temporary: e.temporary,
        },
        Ok(Answer {
            result: Some(res), ..
        }) => Verdict::Result(res),
        Ok(_) => internal("no result, error or disconnect".into()),
        Err(e) => internal(format!("answer is not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<ClientResponse, Failure> {
        Ok(ClientResponse {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        })
    }

    #[test]
    fn verdicts() {
        match verdict(answer(
            200,
            r#"{"result":{"user":"56","channels":["a"],"data":{"x":1}}}"#,
        )) {
            Verdict::Result(r) => {
                assert_eq!(r.user, "56");
                assert_eq!(r.channels, ["a"]);
                assert_eq!(r.data.unwrap().get(), r#"{"x":1}"#);
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            verdict(answer(200, r#"{"error":{"code":4000,"message":"no"}}"#)),
            Verdict::Error { code: 4000, .. }
        ));
        assert!(matches!(
            verdict(answer(
                200,
                r#"{"disconnect":{"code":4500,"reason":"bye"}}"#
            )),
            Verdict::Disconnect { code: 4500, .. }
        ));
        for bad in [
            answer(500, r#"{"result":{}}"#),
            answer(200, "nope"),
            answer(200, "{}"),
            answer(
                200,
                r#"{"disconnect":{"code":1000,"reason":"out of range"}}"#,
            ),
            Err(Failure::Timeout),
        ] {
            assert!(
                matches!(
                    verdict(bad),
                    Verdict::Error {
                        code: 100,
                        temporary: true,
                        ..
                    }
                ),
                "internal error"
            );
        }
    }
}
