//! `[broker]`: how the nodes of a cluster share publications. `memory`
//! (the default) is one node on its own; `redis` and `nats` connect every
//! node to the same broker so a publication on any node reaches the
//! subscribers of every node.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The broker kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// No broker: this node alone.
    Memory,
    /// Redis pub/sub (sharded channels on Redis 7 when available).
    Redis,
    /// NATS core subjects.
    Nats,
}

/// Whether Redis channels are sharded (`SSUBSCRIBE`/`SPUBLISH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharded {
    /// When the server has the commands (Redis ≥ 7).
    Auto,
    /// Always (fails to connect on older servers).
    Always,
    /// Never: `SUBSCRIBE`/`PUBLISH`.
    Never,
}

/// Where a node's broker client runs (`broker.placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// One broker thread per node holds every broker connection and
    /// feeds the workers through their mailboxes: one broker subscription
    /// per channel per node.
    Thread,
    /// Each worker keeps its own broker connections on its own ring for
    /// the channels of its own subscribers and for its publications (a
    /// channel with subscribers on several workers is subscribed once per
    /// such worker); the control path stays on the broker thread.
    Workers,
}

/// `[broker]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `memory`, `redis` or `nats`.
    pub kind: BrokerKind,
    /// Broker addresses (IP literals). Redis: several are shards, a
    /// channel's shard is chosen by a hash of its name (every node must
    /// list them in the same order). NATS: servers of one cluster, tried
    /// in order.
    pub addresses: Vec<SocketAddr>,
    /// This node's name (unique in the cluster); empty: `server.listen`.
    pub node: String,
    /// Prefix of every broker channel or subject the gateway uses.
    pub prefix: String,
    /// Redis: sharded pub/sub.
    pub sharded: Sharded,
    /// Where publications and channel subscriptions travel: the broker
    /// thread (`thread`) or each worker's own connection (`workers`).
    pub placement: Placement,
    /// A connect must complete within this.
    pub connect_timeout_ms: u64,
    /// Keepalive ping interval on every broker connection; no answer
    /// within three intervals: the connection is dropped and re-made.
    pub ping_interval_ms: u64,
    /// Reconnect backoff: first wait, doubling up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// Longest wait between reconnect attempts.
    pub reconnect_max_ms: u64,
    /// A channel's broker subscription outlives its last local subscriber
    /// by this much, so churn (leave, rejoin) costs no broker traffic.
    pub unsubscribe_delay_ms: u64,
    /// How often each node announces itself (`/api/info` lists the nodes
    /// heard within three intervals).
    pub info_interval_ms: u64,
    /// Publications waiting in the broker thread's mailbox; full: the
    /// publish is refused (API 503, client error 100).
    pub queue_capacity: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            kind: BrokerKind::Memory,
            addresses: Vec::new(),
            node: String::new(),
            prefix: "gw".into(),
            sharded: Sharded::Auto,
            placement: Placement::Thread,
            connect_timeout_ms: 1_000,
            ping_interval_ms: 1_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5_000,
            unsubscribe_delay_ms: 200,
            info_interval_ms: 1_000,
            queue_capacity: 65_536,
        }
    }
}

/// Checks `[broker]`; `Err((key, problem))`.
pub fn check(b: &BrokerConfig) -> Result<(), (&'static str, String)> {
    if b.kind != BrokerKind::Memory && b.addresses.is_empty() {
        return Err((
            "broker.addresses",
            format!("must list at least one address for kind = {:?}", b.kind),
        ));
    }
    if b.kind == BrokerKind::Memory && !b.addresses.is_empty() {
        return Err((
            "broker.addresses",
            "is only for kind = \"redis\" or \"nats\"".into(),
        ));
    }
    if b.kind == BrokerKind::Memory && b.placement != Placement::Thread {
        return Err((
            "broker.placement",
            "is only for kind = \"redis\" or \"nats\"".into(),
        ));
    }
    if let Some(a) = b
        .addresses
        .iter()
        .find(|a| a.port() == 0 || a.ip().is_unspecified())
    {
        return Err((
            "broker.addresses",
            format!("({a}) must name a host and port to connect to"),
        ));
    }
    if b.prefix.is_empty()
        || !b
            .prefix
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        return Err((
            "broker.prefix",
            format!(
                "{:?} must be non-empty letters, digits, '_' or '-'",
                b.prefix
            ),
        ));
    }
    if b.node.len() > 64
        || !b
            .node
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-.:".contains(&c))
    {
        return Err((
            "broker.node",
            format!(
                "{:?}: at most 64 letters, digits, '_', '-', '.' or ':'",
                b.node
            ),
        ));
    }
    for (key, v, lo, hi) in [
        (
            "broker.connect_timeout_ms",
            b.connect_timeout_ms,
            1,
            600_000,
        ),
        ("broker.ping_interval_ms", b.ping_interval_ms, 10, 600_000),
        ("broker.reconnect_min_ms", b.reconnect_min_ms, 1, 600_000),
        ("broker.reconnect_max_ms", b.reconnect_max_ms, 1, 3_600_000),
        (
            "broker.unsubscribe_delay_ms",
            b.unsubscribe_delay_ms,
            0,
            600_000,
        ),
        ("broker.info_interval_ms", b.info_interval_ms, 10, 600_000),
        ("broker.queue_capacity", b.queue_capacity as u64, 1, 1 << 24),
    ] {
        if !(lo..=hi).contains(&v) {
            return Err((key, format!("({v}) must be from {lo} to {hi}")));
        }
    }
    if b.reconnect_max_ms < b.reconnect_min_ms {
        return Err((
            "broker.reconnect_max_ms",
            format!(
                "({}) must be at least reconnect_min_ms ({})",
                b.reconnect_max_ms, b.reconnect_min_ms
            ),
        ));
    }
    Ok(())
}
