//! The backend-client series of one worker, per backend: calls by outcome,
//! calls in flight and queued, connections, connects and their failures,
//! retries, the circuit breaker, and the answer latency histogram (kept
//! as plain bucket counts and rendered by [`super::Telemetry::render`]).

use metrics::{Counter, Gauge};

use super::families as f;
use crate::counters::Counters;
use crate::upstream::{PoolStats, Upstream, OUTCOMES};

/// One backend's handles.
struct Backend {
    outcomes: Vec<Counter>,
    in_flight: Gauge,
    queued: Gauge,
    connections: Gauge,
    connects: Counter,
    connect_failures: Counter,
    retries: Counter,
    circuit_state: Gauge,
    circuit_opened: Counter,
}

/// Handles registered once per worker.
pub struct UpstreamMetrics {
    backends: Vec<Backend>,
    failed_answers: Counter,
    pending_overflow: Counter,
}

impl std::fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamMetrics").finish_non_exhaustive()
    }
}

impl UpstreamMetrics {
    /// Registers worker `w`'s series for `backends` (call inside the local
    /// recorder).
    pub fn register(w: &str, backends: &[String]) -> Self {
        let backends = backends
            .iter()
            .map(|b| {
                let labels = || [("worker", w.to_string()), ("backend", b.clone())];
                Backend {
                    outcomes: OUTCOMES
                        .iter()
                        .map(|o| {
                            metrics::counter!(f::UPSTREAM_REQUESTS_TOTAL.name,
                                "worker" => w.to_string(), "backend" => b.clone(), "outcome" => *o)
                        })
                        .collect(),
                    in_flight: metrics::gauge!(f::UPSTREAM_IN_FLIGHT.name, &labels()),
                    queued: metrics::gauge!(f::UPSTREAM_QUEUED.name, &labels()),
                    connections: metrics::gauge!(f::UPSTREAM_CONNECTIONS.name, &labels()),
                    connects: metrics::counter!(f::UPSTREAM_CONNECTS_TOTAL.name, &labels()),
                    connect_failures: metrics::counter!(
                        f::UPSTREAM_CONNECT_FAILURES_TOTAL.name,
                        &labels()
                    ),
                    retries: metrics::counter!(f::UPSTREAM_RETRIES_TOTAL.name, &labels()),
                    circuit_state: metrics::gauge!(f::UPSTREAM_CIRCUIT_STATE.name, &labels()),
                    circuit_opened: metrics::counter!(
                        f::UPSTREAM_CIRCUIT_OPENED_TOTAL.name,
                        &labels()
                    ),
                }
            })
            .collect();
        Self {
            backends,
            failed_answers: metrics::counter!(f::UPSTREAM_FAILURE_ANSWERS_TOTAL.name,
                "worker" => w.to_string(), "reason" => "backend"),
            pending_overflow: metrics::counter!(f::UPSTREAM_FAILURE_ANSWERS_TOTAL.name,
                "worker" => w.to_string(), "reason" => "pending_full"),
        }
    }

    /// Copies the client's figures into the recorder; returns each pool's
    /// snapshot (for the latency histograms).
    pub fn publish(&self, upstream: &Upstream, counters: &Counters, now: u64) -> Vec<PoolStats> {
        let stats: Vec<PoolStats> = upstream.stats(now).collect();
        for (h, s) in self.backends.iter().zip(&stats) {
            for (c, &v) in h.outcomes.iter().zip(&s.outcomes) {
                c.absolute(v);
            }
            h.in_flight.set(s.in_flight as f64);
            h.queued.set(s.queued as f64);
            h.connections.set(s.connections as f64);
            h.connects.absolute(s.connects);
            h.connect_failures.absolute(s.connect_failures);
            h.retries.absolute(s.retries);
            h.circuit_state.set(f64::from(s.circuit_state));
            h.circuit_opened.absolute(s.circuit_opened);
        }
        self.failed_answers
            .absolute(counters.upstream_failure_answers);
        self.pending_overflow
            .absolute(counters.upstream_pending_full);
        stats
    }
}
