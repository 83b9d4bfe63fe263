//! The cluster broker's series (process-wide, no `worker` label; worker 0
//! publishes them): connection state, publications sent, received and
//! dropped, reconnects, subscriptions and connections held, commands sent.

use std::sync::atomic::Ordering::Relaxed;

use metrics::{Counter, Gauge};

use super::families as f;
use crate::broker::BrokerLink;

/// Handles, registered on worker 0 when there is a broker.
pub struct BrokerMetrics {
    up: Gauge,
    published: Counter,
    received: Counter,
    dropped: Counter,
    malformed: Counter,
    reconnects: Counter,
    channels: Gauge,
    connections: Gauge,
    commands: Counter,
    resynced: Counter,
    unconfirmed: Counter,
}

impl std::fmt::Debug for BrokerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerMetrics").finish_non_exhaustive()
    }
}

impl BrokerMetrics {
    /// Registers the series (call inside the local recorder).
    pub fn register() -> Self {
        Self {
            up: metrics::gauge!(f::BROKER_UP.name),
            published: metrics::counter!(f::BROKER_PUBLISHED_TOTAL.name),
            received: metrics::counter!(f::BROKER_RECEIVED_TOTAL.name),
            dropped: metrics::counter!(f::BROKER_DROPPED_TOTAL.name),
            malformed: metrics::counter!(f::BROKER_MALFORMED_TOTAL.name),
            reconnects: metrics::counter!(f::BROKER_RECONNECTS_TOTAL.name),
            channels: metrics::gauge!(f::BROKER_CHANNELS.name),
            connections: metrics::gauge!(f::BROKER_CONNECTIONS.name),
            commands: metrics::counter!(f::BROKER_COMMANDS_TOTAL.name),
            resynced: metrics::counter!(f::BROKER_RESYNCED_TOTAL.name),
            unconfirmed: metrics::counter!(f::BROKER_UNCONFIRMED_TOTAL.name),
        }
    }

    /// Copies the broker thread's figures (`None`: a single node, always
    /// "up").
    pub fn publish(&self, link: Option<&BrokerLink>) {
        let Some(link) = link else {
            self.up.set(1.0);
            return;
        };
        let s = &link.stats;
        self.up.set(if link.is_up() { 1.0 } else { 0.0 });
        self.published.absolute(s.published.load(Relaxed));
        self.received.absolute(s.received.load(Relaxed));
        self.dropped.absolute(s.dropped.load(Relaxed));
        self.malformed.absolute(s.malformed.load(Relaxed));
        self.reconnects.absolute(s.reconnects.load(Relaxed));
        self.channels.set(s.channels.load(Relaxed) as f64);
        self.connections.set(s.connections.load(Relaxed) as f64);
        self.commands.absolute(s.commands.load(Relaxed));
        self.resynced.absolute(s.resynced.load(Relaxed));
        self.unconfirmed.absolute(s.unconfirmed.load(Relaxed));
    }
}
