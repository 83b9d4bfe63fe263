//! `broker.placement = "workers"`: a worker's own broker connections, on
//! its own ring (the connect role, the same [`BrokerClient`] and codecs as
//! the broker thread). The worker subscribes the channels its own
//! subscribers need, publishes its clients' and API publications on its
//! own connection, and delivers what that connection receives to its own
//! subscribers: no mailbox hop either way. A channel with subscribers on
//! several workers of a node is subscribed once per such worker, and the
//! broker sends each publication to each of them.
//!
//! The control path (cluster-wide API operations, the info beacon, pushes
//! to another node's connection, their answers) stays on the broker
//! thread. The node is healthy while every set is up: the thread's and
//! every worker's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use engine::{ConnId, Io};

use super::client::{BrokerClient, Incoming};
use super::{envelope, BrokerLink};
use crate::app::pubsub::hub::{HubMsg, Publication};

/// The holder number of a worker's own set (it has one holder: itself).
const SELF: usize = 0;

/// One worker's broker connections.
#[derive(Debug)]
pub struct LocalBroker {
    client: BrokerClient,
}

impl LocalBroker {
    /// The worker's set for `link`'s broker (no system names: those are
    /// the broker thread's).
    pub fn new(link: Arc<BrokerLink>) -> Self {
        Self {
            client: BrokerClient::new(link, Vec::new()),
        }
    }

    /// Whether `id` is one of this worker's broker connections.
    pub fn owns(&self, id: ConnId) -> bool {
        self.client.owns(id)
    }

    /// The worker gained (`on`, its request `token`, answered with a
    /// [`HubMsg::Subscribed`] from [`Self::take`] once the subscription is
    /// in effect) or lost its last subscriber of `channel`.
    pub fn interest(&mut self, now: u64, channel: &Arc<str>, on: bool, token: u64) {
        self.client.interest(now, SELF, channel, on, token);
    }

    /// Sends a publication on this worker's connection; false (counted as
    /// dropped) while the node is degraded or this connection is down.
    pub fn publish(&mut self, io: &mut Io, p: &Publication) -> bool {
        let link = self.client.link().clone();
        let sent = link.is_up() && {
            let payload = envelope::encode_publication(p);
            self.client.publish(io, &p.channel, &payload)
        };
        link.stats.count_publication(sent);
        sent
    }

    /// Subscribe and unsubscribe commands for what changed (once per
    /// loop iteration; cheap when nothing did).
    pub fn reconcile(&mut self, io: &mut Io) {
        self.client.reconcile(io);
    }

    /// Reconnects and keepalives (once per tick).
    pub fn upkeep(&mut self, io: &mut Io) {
        self.client.upkeep(io);
    }

    /// The engine opened one of this worker's broker connections.
    pub fn on_open(&mut self, io: &mut Io, id: ConnId) {
        self.client.on_open(io, id);
    }

    /// A connect failed (false: not a broker connection).
    pub fn on_connect_failed(&mut self, io: &mut Io, id: ConnId, errno: i32) -> bool {
        let mine = self.client.owns(id);
        if mine {
            self.client.on_connect_failed(io, id, errno);
        }
        mine
    }

    /// Bytes from a broker connection.
    pub fn on_data(&mut self, io: &mut Io, id: ConnId, data: &[u8]) {
        self.client.on_data(io, id, data);
    }

    /// The broker closed its side, or the hello's deadline passed.
    pub fn abort(&mut self, io: &mut Io, id: ConnId, why: &str) {
        self.client.abort(io, id, why);
    }

    /// A broker connection is closed (re-made after the backoff).
    pub fn on_closed(&mut self, io: &mut Io, id: ConnId) {
        self.client.on_closed(io, id);
    }

    /// What arrived, as the worker's own hub messages: publications for
    /// its subscribers, confirmations of its subscriptions (the barrier
    /// behind its own subscribe command came back: no mailbox hop), and
    /// channels whose subscribers may have missed some
    /// ([`HubMsg::Resync`]).
    pub fn take(&mut self, into: &mut Vec<HubMsg>) {
        if self.client.incoming.is_empty() {
            return;
        }
        let link = self.client.link().clone();
        let stats = &link.stats;
        for m in self.client.incoming.drain(..) {
            match m {
                Incoming::Message { name, payload } => {
                    // A worker's set subscribes channels only.
                    if name.starts_with('\u{0}') {
                        continue;
                    }
                    match envelope::decode_publication(&name, &payload) {
                        Ok(p) => {
                            stats.received.fetch_add(1, Ordering::Relaxed);
                            into.push(HubMsg::Publish(Arc::new(p)));
                        }
                        Err(e) => {
                            log::debug!("broker: {e} on {name:?}");
                            stats.malformed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Incoming::Resync { channel, .. } => into.push(HubMsg::Resync(channel)),
                Incoming::Subscribed {
                    channel, token, ok, ..
                } => into.push(HubMsg::Subscribed { channel, token, ok }),
            }
        }
    }
}
