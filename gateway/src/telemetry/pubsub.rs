//! The pub/sub series of one worker: channel gauges from the hub's shared
//! figures, and its counters (publications, deliveries, drops, protocol
//! errors and disconnects, API requests).

use std::sync::atomic::Ordering::Relaxed;

use metrics::{Counter, Gauge};

use super::families as f;
use crate::app::pubsub::api;
use crate::app::pubsub::hub::{Hub, DISCONNECTS};

/// Handles registered once per worker.
pub struct PubSubMetrics {
    clients: Gauge,
    users: Gauge,
    channels: Gauge,
    subscriptions: Gauge,
    published: [Counter; 2],
    deliveries: Counter,
    drops: [Counter; 2],
    errors: Vec<Counter>,
    disconnects: Vec<Counter>,
    /// Worker 0 serves the API; others register nothing for it.
    api: Vec<Vec<Counter>>,
}

impl std::fmt::Debug for PubSubMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubMetrics").finish_non_exhaustive()
    }
}

/// The label of `DISCONNECTS[i]`.
fn disconnect_label(code: u16) -> String {
    if code == 0 {
        "other".into()
    } else {
        code.to_string()
    }
}

impl PubSubMetrics {
    /// Registers worker `w`'s series (call inside the local recorder).
    pub fn register(w: &str, worker: usize) -> Self {
        let g = |fam: &f::Family| metrics::gauge!(fam.name, "worker" => w.to_string());
        let c = |fam: &f::Family| metrics::counter!(fam.name, "worker" => w.to_string());
        Self {
            clients: g(&f::PUBSUB_CLIENTS),
            users: g(&f::PUBSUB_USERS),
            channels: g(&f::PUBSUB_CHANNELS),
            subscriptions: g(&f::PUBSUB_SUBSCRIPTIONS),
            published: ["api", "client"].map(|s| {
                metrics::counter!(f::PUBSUB_PUBLICATIONS_TOTAL.name,
                    "worker" => w.to_string(), "source" => s)
            }),
            deliveries: c(&f::PUBSUB_DELIVERIES_TOTAL),
            drops: ["slow_consumer", "mailbox_full"].map(|r| {
                metrics::counter!(f::PUBSUB_DROPS_TOTAL.name,
                    "worker" => w.to_string(), "reason" => r)
            }),
            errors: (100..=111)
                .map(|code: u32| {
                    metrics::counter!(f::PUBSUB_ERRORS_TOTAL.name,
                        "worker" => w.to_string(), "code" => code.to_string())
                })
                .collect(),
            disconnects: DISCONNECTS
                .iter()
                .map(|&code| {
                    metrics::counter!(f::PUBSUB_DISCONNECTS_TOTAL.name,
                        "worker" => w.to_string(), "code" => disconnect_label(code))
                })
                .collect(),
            api: if worker == 0 {
                api::ENDPOINTS
                    .iter()
                    .map(|e| {
                        api::STATUSES
                            .iter()
                            .map(|s| {
                                metrics::counter!(f::API_REQUESTS_TOTAL.name,
                                    "endpoint" => *e, "status" => s.to_string())
                            })
                            .collect()
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Copies the hub's figures into the recorder.
    pub fn publish(&self, hub: &Hub, worker: usize) {
        let s = &hub.settings.stats[worker];
        self.clients.set(s.clients.load(Relaxed) as f64);
        self.users.set(s.users.load(Relaxed) as f64);
        self.channels.set(s.channels.load(Relaxed) as f64);
        self.subscriptions.set(s.subscriptions.load(Relaxed) as f64);
        let c = &hub.counters;
        self.published[0].absolute(c.published_api);
        self.published[1].absolute(c.published_client);
        self.deliveries.absolute(c.deliveries);
        self.drops[0].absolute(c.dropped_slow);
        self.drops[1].absolute(c.dropped_mailbox_full);
        for (h, &v) in self.errors.iter().zip(&c.errors) {
            h.absolute(v);
        }
        for (h, &v) in self.disconnects.iter().zip(&c.disconnects) {
            h.absolute(v);
        }
        for (row, counts) in self.api.iter().zip(&c.api) {
            for (h, &v) in row.iter().zip(counts) {
                h.absolute(v);
            }
        }
    }
}
