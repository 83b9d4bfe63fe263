//! Several gateways as one: publications and cluster-wide API operations
//! travel between nodes through an existing broker (Redis pub/sub or NATS
//! core), never a home-made cluster protocol.
//!
//! **Where the broker client runs** (`broker.placement`):
//!
//! - `"thread"` (the default): **one broker thread per node**, itself an
//!   engine worker (its own ring, the connect role, the sans-IO codecs of
//!   `broker-proto`), talking to the gateway workers through engine
//!   mailboxes. The thread knows which workers hold each channel (a bit
//!   per worker), subscribes once per node, and posts each publication
//!   only to those workers: one mailbox message each, the same path a
//!   local publication takes. A publication crosses two mailboxes (worker
//!   → thread, thread → workers).
//! - `"workers"`: each worker keeps **its own broker connections on its
//!   own ring** ([`LocalBroker`]: the same connection set, `client.rs`,
//!   and `wire.rs` codecs), subscribes the channels its own subscribers need, publishes
//!   on its own connection and delivers what that connection receives to
//!   its own subscribers: no mailbox hop. The control path — cluster-wide
//!   API operations, the info beacon, pushes to another node's connection
//!   and their answers — stays on the broker thread. A channel with
//!   subscribers on several workers is subscribed once per such worker,
//!   and the broker sends every publication to each of them.
//!
//! Both placements share one implementation of a set of broker
//! connections (`client.rs`: shards, reconciled
//! subscriptions, subscribe barriers, hello, keepalive, reconnect with
//! backoff, "insufficient state" after a loss); the node is healthy only
//! while every set is up (the thread's and, with `"workers"`, every
//! worker's). Why `"thread"` stays the default, with the paired
//! measurement of both, is in `results/cluster.md` ("Where the broker
//! client runs").
//!
//! A subscription is answered only once it is in effect: a worker's first
//! local subscriber of a channel waits (its reply held, the channel not
//! delivered to) until the broker has confirmed the node's subscription —
//! a barrier sent behind the subscribe command (Redis `PING <token>`, a
//! NATS `PING`) comes back — and the thread posts [`HubMsg::Subscribed`]
//! (with `"workers"`, the barrier answer on the worker's own connection
//! confirms the worker's channels directly).
//! Otherwise a publication made through another node right after the
//! subscribe reply could miss this node (neither broker keeps history).
//!
//! What a worker tells the thread ([`BrokerCmd`]): its first local
//! subscriber of a channel arrived or its last one left (the thread
//! batches the broker's subscribe and unsubscribe commands per loop
//! iteration and keeps a subscription `unsubscribe_delay_ms` after the
//! last local subscriber left, so churn costs nothing), a publication to
//! send, a cluster-wide operation, a push for another node's connection.
//! With `"workers"` the first two never go to the thread: the worker's
//! own set does the same batching and keeping.

mod client;
pub mod envelope;
mod local;
mod thread;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use engine::mailbox::{Bell, Mailbox, WakeMode};

use crate::app::pubsub::hub::{HubMsg, HubStats, Publication};
use crate::config::{BrokerConfig, BrokerKind, Config, Placement};
use crate::conn::push::{PushAnswer, ReplyTo};
use envelope::Control;

pub use client::MAX_HOLDERS;
pub use local::LocalBroker;
pub use thread::spawn;

/// What the workers ask of the broker thread.
#[derive(Debug)]
pub enum BrokerCmd {
    /// Worker `worker` now has (`on`) or no longer has local subscribers
    /// of `channel`.
    Interest {
        /// The worker.
        worker: usize,
        /// The channel.
        channel: Arc<str>,
        /// Gained or lost.
        on: bool,
        /// The worker's number for this request, echoed in the
        /// [`HubMsg::Subscribed`] that answers a gain.
        token: u64,
    },
    /// Send to every node (this one included: local subscribers receive it
    /// back from the broker, so every node sees one order).
    Publish(Arc<Publication>),
    /// A cluster-wide operation (on the control channel).
    Control(Control),
    /// A push API operation on a connection of another node.
    Push {
        /// That node.
        node: String,
        /// The operation ([`Control::Push`], `from` and `request` filled
        /// in by the thread).
        control: Control,
        /// The API connection waiting for the answer.
        reply: ReplyTo,
    },
    /// The answer to a push another node asked this one for.
    Answer {
        /// The asking node.
        node: Arc<str>,
        /// Its request number.
        request: u64,
        /// The answer.
        answer: PushAnswer,
    },
}

/// Counters of the broker thread, read by metrics and `/api/info`.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Publications sent to the broker.
    pub published: AtomicU64,
    /// Publications received from the broker.
    pub received: AtomicU64,
    /// Publications not sent (broker down) or not handed to a worker
    /// (mailbox full), or refused before queueing.
    pub dropped: AtomicU64,
    /// Payloads from the broker that were not understood.
    pub malformed: AtomicU64,
    /// Broker connections (re)established after a loss.
    pub reconnects: AtomicU64,
    /// Channels this node holds a broker subscription for.
    pub channels: AtomicU64,
    /// Subscribe/unsubscribe commands sent (each may carry many channels).
    pub commands: AtomicU64,
    /// Local subscriptions ended with "insufficient state" after a loss.
    pub resynced: AtomicU64,
    /// Workers told a channel's broker subscription could not be made
    /// (its connection was down or lost before confirming it).
    pub unconfirmed: AtomicU64,
    /// Broker connections up (the broker thread's and, with
    /// `placement = "workers"`, every worker's).
    pub connections: AtomicU64,
}

impl BrokerStats {
    /// Counts a publication handed to the broker (`sent`) or not.
    fn count_publication(&self, sent: bool) {
        let counter = if sent { &self.published } else { &self.dropped };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the workers and the broker thread share.
#[derive(Debug)]
pub struct BrokerLink {
    /// The broker thread's mailbox.
    pub mail: Mailbox<BrokerCmd>,
    /// Its doorbell.
    pub bell: Arc<Bell>,
    /// Connection sets (the broker thread's, and each worker's with
    /// `placement = "workers"`) not wholly up: the node is degraded
    /// while this is not 0.
    down: AtomicUsize,
    /// This node's name.
    pub node: Arc<str>,
    /// The configuration.
    pub config: BrokerConfig,
    /// The nodes heard from (their `/api/info` entry and when).
    nodes: Mutex<HashMap<String, (serde_json::Value, Instant)>>,
    /// Counters.
    pub stats: BrokerStats,
}

impl BrokerLink {
    /// The link for `config`, when it names a broker.
    pub fn new(config: &Config) -> std::io::Result<Option<Arc<Self>>> {
        let b = &config.broker;
        if b.kind == BrokerKind::Memory {
            return Ok(None);
        }
        let bell = Bell::new(WakeMode::EventFd)?;
        let sets = match b.placement {
            Placement::Thread => 1,
            Placement::Workers => 1 + config.effective_workers(),
        };
        Ok(Some(Arc::new(Self {
            mail: Mailbox::new(b.queue_capacity, bell.clone()),
            bell,
            down: AtomicUsize::new(sets),
            node: config.node_name().into(),
            config: b.clone(),
            nodes: Mutex::new(HashMap::new()),
            stats: BrokerStats::default(),
        })))
    }

    /// True while every broker connection is up.
    pub fn is_up(&self) -> bool {
        self.down.load(Ordering::Relaxed) == 0
    }

    /// Whether publications and channel subscriptions go through each
    /// worker's own connections.
    pub fn on_workers(&self) -> bool {
        self.config.placement == Placement::Workers
    }

    /// One connection set came wholly up, or stopped being so (each set
    /// reports only its own changes).
    fn set_up(&self, up: bool) {
        if up {
            if self.down.fetch_sub(1, Ordering::Relaxed) == 1 {
                log::info!("broker: connected, node {} healthy", self.node);
            }
        } else if self.down.fetch_add(1, Ordering::Relaxed) == 0 {
            log::warn!("broker: connection lost, node {} degraded", self.node);
        }
    }

    /// The `/api/info` entries of the nodes heard within three info
    /// intervals (this one's own beacon too, while the broker carries it;
    /// `/api/info` adds this node's live entry itself).
    pub fn nodes(&self) -> Vec<serde_json::Value> {
        let horizon = std::time::Duration::from_millis(3 * self.config.info_interval_ms);
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.retain(|_, (_, at)| at.elapsed() <= horizon);
        let mut v: Vec<_> = nodes.values().map(|(info, _)| info.clone()).collect();
        v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        v
    }

    fn heard(&self, name: String, info: serde_json::Value) {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, (info, Instant::now()));
    }
}

/// This node's share of `/api/info`: the worker figures summed.
pub fn node_info(
    node: &str,
    stats: &[HubStats],
    started: Instant,
    broker_up: bool,
) -> serde_json::Value {
    let sum = |f: fn(&HubStats) -> &AtomicU64| -> u64 {
        stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
    };
    serde_json::json!({
        "name": node,
        "num_clients": sum(|s| &s.clients),
        "num_users": sum(|s| &s.users),
        "num_channels": sum(|s| &s.channels),
        "num_subs": sum(|s| &s.subscriptions),
        "uptime": started.elapsed().as_secs(),
        "workers": stats.len(),
        "broker": if broker_up { "up" } else { "degraded" },
    })
}

/// Hands a message from the broker to worker `w`; false if its mailbox
/// was full (counted as dropped by the caller).
fn post(mail: &[Mailbox<HubMsg>], io: &mut engine::Io, w: usize, msg: HubMsg) -> bool {
    mail.get(w).is_some_and(|m| m.post(io, msg).is_ok())
}
