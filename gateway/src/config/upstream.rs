//! `[[backends]]` (HTTP backends the gateway calls), the `upstream` part of
//! a route, and `[pubsub.proxy]`: where each webhook and proxy call goes
//! and what a client gets when its backend fails.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[[backends]]`: one HTTP/1.1 backend and its per-worker connection pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// The name routes and proxies refer to.
    pub name: String,
    /// Address to connect to (an IP literal: no DNS on the worker rings).
    pub address: SocketAddr,
    /// `Host` header; empty: the address.
    pub host: String,
    /// Most connections per worker to this backend.
    pub pool_size: usize,
    /// Requests waiting for a connection, per worker; beyond it a request
    /// is refused at once (the client gets the overload answer).
    pub queue_size: usize,
    /// A connect must complete within this.
    pub connect_timeout_ms: u64,
    /// A request must be answered within this, counted from when it was
    /// made (queueing included).
    pub request_timeout_ms: u64,
    /// An idle pooled connection is closed after this.
    pub idle_timeout_ms: u64,
    /// Largest response body accepted (a bigger one is a bad response).
    pub max_response_bytes: usize,
    /// Consecutive transport failures (connect errors, resets, timeouts,
    /// unparsable answers) that open the circuit. HTTP statuses are
    /// answers, not failures.
    pub failures_to_open: u32,
    /// How long the circuit stays open the first time; it doubles after
    /// each failed probe, up to `max_open_ms`.
    pub open_ms: u64,
    /// Longest open period.
    pub max_open_ms: u64,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            address: SocketAddr::from(([127, 0, 0, 1], 9100)),
            host: String::new(),
            pool_size: 64,
            queue_size: 4096,
            connect_timeout_ms: 1_000,
            request_timeout_ms: 5_000,
            idle_timeout_ms: 30_000,
            max_response_bytes: 1 << 20,
            failures_to_open: 5,
            open_ms: 500,
            max_open_ms: 10_000,
        }
    }
}

/// What a client gets when the backend of one of its messages fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// A text message `{"error":{"code":..,"message":..,"id":..}}` naming
    /// the client's message id; the connection stays open.
    Message,
    /// Close 1011 (backend error) or 1013 (backend unavailable, try again).
    Close,
}

/// `[routes.upstream]`: webhooks of an `upstream` route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamRoute {
    /// Name of a `[[backends]]` entry.
    pub backend: String,
    /// `$connect` webhook path; empty: every valid upgrade is accepted
    /// without asking.
    pub connect_path: String,
    /// Message webhook path.
    pub message_path: String,
    /// `$disconnect` webhook path; empty: not called.
    pub disconnect_path: String,
    /// The failure answer for messages.
    pub on_error: OnError,
    /// JSON field of a text message that carries its id (quoted back in
    /// error messages).
    pub id_field: String,
    /// Messages of one connection waiting behind the one in flight (they
    /// reach the backend in order); beyond it the client gets the overload
    /// answer for that message.
    pub max_pending: usize,
}

impl Default for UpstreamRoute {
    fn default() -> Self {
        Self {
            backend: String::new(),
            connect_path: "/ws/connect".into(),
            message_path: "/ws/message".into(),
            disconnect_path: "/ws/disconnect".into(),
            on_error: OnError::Message,
            id_field: "id".into(),
            max_pending: 64,
        }
    }
}

/// `[pubsub.proxy]`: Centrifugo-style proxies of the `pubsub` app. An
/// empty path leaves that event to the gateway's own rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Name of a `[[backends]]` entry.
    pub backend: String,
    /// Connect proxy: the backend authenticates connections without a token.
    pub connect_path: String,
    /// RPC proxy: `rpc` commands.
    pub rpc_path: String,
    /// Publish proxy: client publications (allowed, rejected or rewritten).
    pub publish_path: String,
    /// Subscribe proxy: subscriptions to channels without a token.
    pub subscribe_path: String,
}

impl ProxyConfig {
    /// True when any proxy is on.
    pub fn any(&self) -> bool {
        [
            &self.connect_path,
            &self.rpc_path,
            &self.publish_path,
            &self.subscribe_path,
        ]
        .iter()
        .any(|p| !p.is_empty())
    }
}

/// Checks one backend; `Err((key, problem))`.
pub fn check_backend(b: &BackendConfig) -> Result<(), (&'static str, String)> {
    if b.name.is_empty() {
        return Err(("backends.name", "must be set".into()));
    }
    for (key, v, lo, hi) in [
        ("backends.pool_size", b.pool_size as u64, 1, 65_536),
        ("backends.queue_size", b.queue_size as u64, 1, 1 << 24),
        (
            "backends.connect_timeout_ms",
            b.connect_timeout_ms,
            1,
            600_000,
        ),
        (
            "backends.request_timeout_ms",
            b.request_timeout_ms,
            1,
            600_000,
        ),
        ("backends.idle_timeout_ms", b.idle_timeout_ms, 1, 3_600_000),
        (
            "backends.max_response_bytes",
            b.max_response_bytes as u64,
            1,
            1 << 30,
        ),
        (
            "backends.failures_to_open",
            u64::from(b.failures_to_open),
            1,
            1_000_000,
        ),
        ("backends.open_ms", b.open_ms, 1, 3_600_000),
        ("backends.max_open_ms", b.max_open_ms, 1, 3_600_000),
    ] {
        if !(lo..=hi).contains(&v) {
            return Err((key, format!("({v}) must be from {lo} to {hi}")));
        }
    }
    if b.max_open_ms < b.open_ms {
        return Err((
            "backends.max_open_ms",
            format!(
                "({}) must be at least open_ms ({})",
                b.max_open_ms, b.open_ms
            ),
        ));
    }
    if b.address.port() == 0 || b.address.ip().is_unspecified() {
        return Err((
            "backends.address",
            format!("({}) must name a host and port to connect to", b.address),
        ));
    }
    Ok(())
}

/// Checks a webhook path (`key` names it): empty, or a path without
/// characters that would break the request line.
pub fn check_path(key: &'static str, path: &str) -> Result<(), (&'static str, String)> {
    if !path.is_empty() && (!path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic())) {
        return Err((key, format!("{path:?} must be empty or a path like /hook")));
    }
    Ok(())
}
