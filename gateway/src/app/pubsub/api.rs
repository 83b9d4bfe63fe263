//! The server HTTP API, in Centrifugo's shapes: `POST /api/publish`,
//! `/api/broadcast`, `/api/subscribe`, `/api/unsubscribe`,
//! `/api/disconnect`, `/api/info`, with the key in `X-API-Key` or
//! `Authorization: apikey KEY` (compared in constant time).
//!
//! Transport errors get HTTP statuses as Centrifugo gives them (401 empty
//! body, 405, 400 for a body that is not the JSON object expected, 404, and
//! 413 over `api.max_body_bytes`); application errors get 200 with
//! `{"error":{"code":C,"message":M}}`; success is `{"result":{...}}`.
//!
//! Served by worker 0's ring: a publication is delivered to worker 0's
//! subscribers right away and posted to every other worker's mailbox.

use std::sync::Arc;
use std::time::Instant;

use centrifuge_proto::codes::{self, ErrorCode};
use engine::Io;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::hub::{Hub, HubMsg, Publication, Target};
use crate::counters::Counters;

/// API endpoints, in the order of the per-endpoint counters.
pub const ENDPOINTS: [&str; 8] = [
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "info",
    "connections",
    "other",
];

/// Statuses the API answers with, in the order of the counters (anything
/// else counts as the last).
pub const STATUSES: [u16; 11] = [200, 204, 400, 401, 404, 405, 410, 413, 415, 503, 500];

/// An API answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body (empty for a bare 401/405).
    pub body: Vec<u8>,
}

impl Answer {
    fn status(status: u16, text: &str) -> Self {
        Answer {
            status,
            body: text.as_bytes().to_vec(),
        }
    }

    fn result(json: &str) -> Self {
        Answer {
            status: 200,
            body: format!("{{\"result\":{json}}}").into_bytes(),
        }
    }

    fn error(e: ErrorCode) -> Self {
        Answer {
            status: 200,
            body: error_json(e).into_bytes(),
        }
    }
}

fn error_json(e: ErrorCode) -> String {
    format!(
        "{{\"error\":{{\"code\":{},\"message\":\"{}\"}}}}",
        e.code, e.message
    )
}

/// Compares in time independent of where the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the key a request presented (see `conn::http::Request`) is the
/// configured one; an empty configured key admits nobody.
pub fn authorized(presented: Option<&[u8]>, key: &str) -> bool {
    !key.is_empty() && presented.is_some_and(|k| ct_eq(k, key.as_bytes()))
}

/// The endpoint index of `path` (`other` for anything unknown).
pub fn endpoint(path: &str) -> usize {
    if path.starts_with(crate::conn::http::CONNECTIONS_PREFIX) {
        return ENDPOINTS
            .iter()
            .position(|e| *e == "connections")
            .unwrap_or(0);
    }
    path.strip_prefix("/api/")
        .and_then(|name| {
            ENDPOINTS[..ENDPOINTS.len() - 1]
                .iter()
                .position(|e| *e == name)
        })
        .unwrap_or(ENDPOINTS.len() - 1)
}

#[derive(Deserialize)]
struct PublishReq<'a> {
    #[serde(default, borrow)]
    channel: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct BroadcastReq<'a> {
    #[serde(default, borrow)]
    channels: Vec<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectAdvice {
    code: u16,
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TargetReq {
    user: String,
    client: String,
    channel: String,
    disconnect: Option<DisconnectAdvice>,
}

impl TargetReq {
    fn target(&self) -> Option<Target> {
        if !self.client.is_empty() {
            Some(Target::Client(self.client.as_str().into()))
        } else if !self.user.is_empty() {
            Some(Target::User(self.user.as_str().into()))
        } else {
            None
        }
    }
}

/// What the API needs besides the request.
#[derive(Debug)]
pub struct ApiContext<'a> {
    /// Worker 0's hub.
    pub hub: &'a mut Hub,
    /// Worker 0's engine.
    pub io: &'a mut Io,
    /// Worker 0's counters.
    pub counters: &'a mut Counters,
    /// When the gateway started, for `uptime`.
    pub started: Instant,
    /// Node name for `/api/info`.
    pub node: &'a str,
}

/// Answers one authorized `POST` to `endpoint` with `body`.
pub fn handle(cx: ApiContext<'_>, endpoint: usize, body: &[u8]) -> Answer {
    let bad = || Answer::status(400, "Bad Request\n");
    match ENDPOINTS[endpoint] {
        "publish" => {
            let Ok(req) = serde_json::from_slice::<PublishReq<'_>>(body) else {
                return bad();
            };
            let channel = req.channel.unwrap_or_default();
            match publish(cx.hub, cx.io, cx.counters, &channel, req.data) {
                Ok(()) => Answer::result("{}"),
                Err(e) => Answer::error(e),
            }
        }
        "broadcast" => {
            let Ok(req) = serde_json::from_slice::<BroadcastReq<'_>>(body) else {
                return bad();
            };
            if req.channels.is_empty() || req.data.is_none() {
                return Answer::error(codes::BAD_REQUEST);
            }
            let responses: Vec<String> = req
                .channels
                .iter()
                .map(
                    |ch| match publish(cx.hub, cx.io, cx.counters, ch, req.data) {
                        Ok(()) => "{\"result\":{}}".to_string(),
                        Err(e) => error_json(e),
                    },
                )
                .collect();
            Answer::result(&format!("{{\"responses\":[{}]}}", responses.join(",")))
        }
        name @ ("subscribe" | "unsubscribe" | "disconnect") => {
            let Ok(req) = serde_json::from_slice::<TargetReq>(body) else {
                return bad();
            };
            let Some(target) = req.target() else {
                return Answer::error(codes::BAD_REQUEST);
            };
            let msg = match name {
                "disconnect" => {
                    let advice = req.disconnect.unwrap_or_default();
                    let (code, reason) = if advice.code == 0 {
                        let d = codes::FORCE_DISCONNECT;
                        (d.code, d.reason.to_string())
                    } else {
                        (advice.code, advice.reason)
                    };
                    if !(3000..=4999).contains(&code) || reason.len() > 123 {
                        return Answer::error(codes::BAD_REQUEST);
                    }
                    HubMsg::Disconnect(target, code, Arc::from(reason))
                }
                _ if req.channel.is_empty() => return Answer::error(codes::BAD_REQUEST),
                _ if cx.hub.settings.options(&req.channel).is_none() => {
                    return Answer::error(codes::UNKNOWN_CHANNEL)
                }
                "subscribe" => HubMsg::Subscribe(target, Arc::from(req.channel)),
                _ => HubMsg::Unsubscribe(target, Arc::from(req.channel)),
            };
            cx.hub.broadcast(cx.io, cx.counters, msg);
            Answer::result("{}")
        }
        "info" => {
            if serde_json::from_slice::<serde_json::Value>(body).is_err() {
                return bad();
            }
            Answer::result(&info(&cx))
        }
        _ => Answer::status(404, "404 page not found\n"),
    }
}

fn publish(
    hub: &mut Hub,
    io: &mut Io,
    counters: &mut Counters,
    channel: &str,
    data: Option<&RawValue>,
) -> Result<(), ErrorCode> {
    let Some(data) = data else {
        return Err(codes::BAD_REQUEST);
    };
    let cfg = &hub.settings.config;
    if channel.is_empty() || channel.len() > cfg.channel_max_length {
        return Err(codes::BAD_REQUEST);
    }
    if data.get().len() > cfg.max_publication_bytes {
        return Err(codes::LIMIT_EXCEEDED);
    }
    if hub.settings.options(channel).is_none() {
        return Err(codes::UNKNOWN_CHANNEL);
    }
    let p = Publication {
        channel: channel.into(),
        data: data.to_owned(),
        info: None,
    };
    hub.publish(io, counters, p)?;
    hub.counters.published_api += 1;
    Ok(())
}

/// `{"nodes":[...]}` with this node's totals and each worker's share.
fn info(cx: &ApiContext<'_>) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &cx.hub.settings.stats;
    let sum = |f: fn(&super::hub::HubStats) -> u64| stats.iter().map(f).sum::<u64>();
    let workers: Vec<serde_json::Value> = stats
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({
                "worker": i,
                "num_clients": s.clients.load(Relaxed),
                "num_users": s.users.load(Relaxed),
                "num_channels": s.channels.load(Relaxed),
                "num_subs": s.subscriptions.load(Relaxed),
            })
        })
        .collect();
    let broker = cx.hub.settings.broker.as_ref();
    let mut nodes = vec![serde_json::json!({
        "uid": cx.node,
        "name": cx.node,
        "version": env!("CARGO_PKG_VERSION"),
        "num_clients": sum(|s| s.clients.load(Relaxed)),
        "num_users": sum(|s| s.users.load(Relaxed)),
        "num_channels": sum(|s| s.channels.load(Relaxed)),
        "num_subs": sum(|s| s.subscriptions.load(Relaxed)),
        "uptime": cx.started.elapsed().as_secs(),
        "workers": workers,
        "broker": broker.map(|b| if b.is_up() { "up" } else { "degraded" }),
    })];
    // The other nodes of the cluster, as they last announced themselves.
    if let Some(b) = broker {
        nodes.extend(
            b.nodes()
                .into_iter()
                .filter(|n| n["name"].as_str() != Some(cx.node)),
        );
    }
    serde_json::json!({ "nodes": nodes }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        assert!(ct_eq(b"dev", b"dev"));
        assert!(!ct_eq(b"dev", b"deV"));
        assert!(!ct_eq(b"dev", b"devx"));
        assert!(!ct_eq(b"", b"x"));
    }

    #[test]
    fn endpoints_by_path() {
        assert_eq!(ENDPOINTS[endpoint("/api/publish")], "publish");
        assert_eq!(ENDPOINTS[endpoint("/api/info")], "info");
        assert_eq!(ENDPOINTS[endpoint("/api/other")], "other");
        assert_eq!(ENDPOINTS[endpoint("/api/publish/x")], "other");
        assert_eq!(ENDPOINTS[endpoint("/metrics")], "other");
    }
}
