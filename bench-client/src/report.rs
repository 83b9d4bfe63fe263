//! Turning measurements into what people read: the terminal summary in the
//! shape the seed reports use, threshold verdicts, and the files under
//! `--out`: `summary.json`, `results.csv`, `report.md`, and SVG plots when
//! the matrix varies a key.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::runner::{CellOutcome, Cost};
use crate::scenario::{Cell, Matrix, Mode, Scenario};
use crate::stats::{new_histogram, Counts, LatencySummary};

/// One threshold's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The threshold key.
    pub threshold: &'static str,
    /// The limit set.
    pub limit: f64,
    /// What was measured.
    pub actual: f64,
    /// Whether it passed.
    pub pass: bool,
}

/// Subscribe mode with several targets: one target URL's (one node's) figures.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// Index into `target.urls`.
    pub index: usize,
    /// The URL.
    pub url: String,
    /// The publisher's own node (`publish.same_node_target`).
    pub publisher_node: bool,
    /// Subscribers established (reopened ones not included).
    pub connections: u64,
    /// Subscriptions confirmed (reopened ones not included).
    pub subscriptions: u64,
    /// Measured publications received.
    pub deliveries: u64,
    /// Deliveries expected of its subscribers.
    pub expected_deliveries: u64,
    /// Expected but not received.
    pub missing: u64,
    /// Received again.
    pub duplicate: u64,
    /// Received after a later one of the same channel.
    pub out_of_order: u64,
    /// Churn: subscribers closed and reopened (handshake done) on it.
    pub churn_closed: u64,
    /// See `churn_closed`.
    pub reconnects_ok: u64,
    /// Churn: publications in flight to its subscribers when they were closed.
    pub missed_during_churn: u64,
    /// Reconnect: publications its dropped subscribers missed while away.
    pub missed_during_reconnect: u64,
    /// Subscribers connected to it at the end of the run (reconnected ones included).
    pub up_at_end: u64,
    /// Delivery latency.
    pub latency: LatencySummary,
}

/// Delivery latency on the publisher's own node and on the others.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSplit {
    /// Index into `target.urls` of the publisher's node.
    pub same_node_target: usize,
    /// Deliveries to subscribers of the publisher's node.
    pub same_node: LatencySummary,
    /// Deliveries to subscribers of every other node (through the broker).
    pub cross_node: LatencySummary,
}

/// Subscribe mode with `load.churn_per_sec`: the churn's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    /// Churn asked for, connections per second.
    pub per_sec: f64,
    /// Subscribers closed.
    pub closed: u64,
    /// Connections opened in their place.
    pub reconnects: u64,
    /// Of those, established.
    pub reconnects_ok: u64,
    /// Of those, failed.
    pub reconnects_failed: u64,
    /// Subscriptions confirmed again.
    pub resubscribed: u64,
    /// Publications in flight to a subscriber when it was closed (not missing).
    pub missed_during_churn: u64,
    /// Publications a reopened connection received although they were sent
    /// before its subscribe reply (not counted as deliveries).
    pub early: u64,
    /// Connect-to-101 latency of the reopened connections.
    pub reconnect_latency: LatencySummary,
    /// Connect start to the last subscribe reply of the reopened connections.
    pub resubscribe_latency: LatencySummary,
}

/// Subscribe mode with `load.reconnect`: the failover's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ReconnectReport {
    /// `load.reconnect_delay_ms`.
    pub delay_ms: Vec<u64>,
    /// Connections the server closed or reset (`counts.conn_dropped`).
    pub dropped: u64,
    /// Subscribers that went looking for another node (once per outage).
    pub subscribers_dropped: u64,
    /// Of those, back with every subscription confirmed.
    pub subscribers_recovered: u64,
    /// Connect attempts (churn's reopens included when both are on).
    pub attempts: u64,
    /// Of those, established.
    pub attempts_ok: u64,
    /// Of those, failed (refused, reset, timed out, bad answer).
    pub attempts_failed: u64,
    /// Subscriptions confirmed again.
    pub resubscribed: u64,
    /// Publications sent while a subscriber was away, or in flight to it
    /// when it was dropped (not missing).
    pub missed_during_reconnect: u64,
    /// Publications received before the subscribe reply on the new connection.
    pub early: u64,
    /// Drop to the last subscribe reply on the new connection.
    pub latency: LatencySummary,
    /// From the first drop until every dropped subscriber was back, seconds
    /// (`None`: someone was not back by the end of the window).
    pub recovered_in_secs: Option<f64>,
}

/// One cell, ready for the files.
#[derive(Debug, Clone, Serialize)]
pub struct CellReport {
    /// Run order.
    pub index: usize,
    /// Varied keys and their values.
    pub params: Vec<(String, String)>,
    /// Mode.
    pub mode: &'static str,
    /// Connections asked for.
    pub connections: u64,
    /// Payload bytes.
    pub message_size: u64,
    /// Processes used.
    pub processes: u64,
    /// Client worker threads in all (processes x workers): the cores it could use.
    pub client_threads: u64,
    /// Counters.
    pub counts: Counts,
    /// Handshake latency.
    pub handshake: LatencySummary,
    /// Message (or pong) latency; rate mode: corrected.
    pub latency: LatencySummary,
    /// Rate mode: uncorrected latency.
    pub raw_latency: Option<LatencySummary>,
    /// Session mode: iteration duration.
    pub iteration: Option<LatencySummary>,
    /// Transactions (answered messages) per second over the window.
    pub tps: f64,
    /// Payload bytes per second, both directions, over the window.
    pub bytes_per_sec: f64,
    /// Answered in time / sent (connect-only: established and still up /
    /// attempted; subscribe: delivered / expected).
    pub success_rate: f64,
    /// Subscribe mode: deliveries expected (measured publications × their
    /// channel's subscribers; with churn, those in place when each was sent).
    pub expected_deliveries: u64,
    /// Subscribe mode with several target URLs: each one's figures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_target: Vec<TargetReport>,
    /// Subscribe mode with `publish.same_node_target`: same-node vs cross-node latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_split: Option<NodeSplit>,
    /// Subscribe mode with `load.churn_per_sec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnReport>,
    /// Subscribe mode with `load.reconnect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<ReconnectReport>,
    /// Seconds measured.
    pub window_secs: f64,
    /// Wall clock of the whole cell.
    pub elapsed_secs: f64,
    /// CPU and memory.
    pub cost: Cost,
    /// Thresholds.
    pub verdicts: Vec<Verdict>,
}

impl CellReport {
    /// Derives the figures of a cell.
    pub fn new(cell: &Cell, out: &CellOutcome) -> Self {
        let s = &cell.scenario;
        let c = &out.measured.counts;
        let window = s.load.duration_secs;
        let (tps, success_rate) = match s.load.mode {
            Mode::ConnectOnly => (0.0, ratio(c.conn_up_at_end, c.conn_attempted)),
            Mode::Ping => (
                c.pongs_received as f64 / window,
                ratio(c.msgs_ok, c.pings_sent),
            ),
            // Ack mode: completed transactions (message, ack in time, client
            // ack) per second, and completed / sent.
            Mode::Echo | Mode::Rate | Mode::Ack => {
                (c.msgs_ok as f64 / window, ratio(c.msgs_ok, c.msgs_sent))
            }
            // Deliveries per second, and delivered / expected.
            Mode::Subscribe => (
                c.deliveries as f64 / window,
                ratio(c.deliveries, out.measured.expected_deliveries()),
            ),
            // Sessions per second, and completed / started.
            Mode::Session => (
                c.sessions_completed as f64 / window,
                ratio(c.sessions_completed, c.sessions_started),
            ),
        };
        let latency = LatencySummary::of(&out.measured.latency);
        let handshake = LatencySummary::of(&out.measured.handshake);
        let (per_target, node_split) = per_target(s, out);
        let churn =
            (s.load.mode == Mode::Subscribe && s.load.churn_per_sec > 0.0).then(|| ChurnReport {
                per_sec: s.load.churn_per_sec,
                closed: c.churn_closed,
                reconnects: c.reconnects,
                reconnects_ok: c.reconnects_ok,
                reconnects_failed: c.reconnects_failed,
                resubscribed: c.resubscribed,
                missed_during_churn: out.measured.churn_missed(),
                early: c.churn_early,
                reconnect_latency: LatencySummary::of(&out.measured.reconnect),
                resubscribe_latency: LatencySummary::of(&out.measured.resubscribe),
            });
        let m = &out.measured;
        let reconnect =
            (s.load.mode == Mode::Subscribe && s.load.reconnect).then(|| ReconnectReport {
                delay_ms: s.load.reconnect_delay_ms.clone(),
                dropped: c.conn_dropped,
                subscribers_dropped: c.failover_dropped,
                subscribers_recovered: c.failover_recovered,
                attempts: c.reconnects,
                attempts_ok: c.reconnects_ok,
                attempts_failed: c.reconnects_failed,
                resubscribed: c.resubscribed,
                missed_during_reconnect: m.reconnect_missed(),
                early: c.churn_early,
                latency: LatencySummary::of(&m.failover),
                recovered_in_secs: m.recovered_in_secs(),
            });
        let mut r = CellReport {
            index: cell.index,
            params: cell.params.clone(),
            mode: s.load.mode.label(),
            // Session mode has no fixed count: its peak is the largest stage target.
            connections: if s.load.mode == Mode::Session {
                s.session
                    .stages
                    .iter()
                    .map(|st| st.target)
                    .max()
                    .unwrap_or(0)
            } else {
                s.load.connections
            },
            message_size: s.load.message_size,
            processes: out.processes,
            client_threads: out.processes * s.client.workers.clamp(1, s.load.connections.max(1)),
            counts: c.clone(),
            raw_latency: (s.load.mode == Mode::Rate)
                .then(|| LatencySummary::of(&out.measured.raw_latency)),
            iteration: (s.load.mode == Mode::Session)
                .then(|| LatencySummary::of(&out.measured.iteration)),
            handshake,
            latency,
            tps,
            bytes_per_sec: (c.bytes_sent + c.bytes_received) as f64 / window,
            success_rate,
            expected_deliveries: out.measured.expected_deliveries(),
            per_target,
            node_split,
            churn,
            reconnect,
            window_secs: window,
            elapsed_secs: out.elapsed_secs,
            cost: out.cost.clone(),
            verdicts: Vec::new(),
        };
        r.verdicts = verdicts(s, &r);
        r
    }

    /// True when every threshold passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.pass)
    }
}

/// Subscribe mode with several target URLs: each target's figures, and
/// the same-node vs cross-node split when `publish.same_node_target` is set.
fn per_target(s: &Scenario, out: &CellOutcome) -> (Vec<TargetReport>, Option<NodeSplit>) {
    let m = &out.measured;
    if s.load.mode != Mode::Subscribe || s.target.urls.len() < 2 || m.per_target.is_empty() {
        return (Vec::new(), None);
    }
    let same = s.publish.same_node_target;
    let expectations = m.target_expectations();
    let targets = s
        .target
        .urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let t = m.per_target.get(i);
            let e = expectations.get(i).copied().unwrap_or_default();
            let deliveries = t.map_or(0, |t| t.deliveries);
            TargetReport {
                index: i,
                url: url.clone(),
                publisher_node: same == Some(i),
                connections: t.map_or(0, |t| t.conns),
                subscriptions: t.map_or(0, |t| t.subs_ok),
                deliveries,
                expected_deliveries: e.expected,
                missing: e.expected.saturating_sub(deliveries),
                duplicate: t.map_or(0, |t| t.deliveries_dup),
                out_of_order: t.map_or(0, |t| t.deliveries_ooo),
                churn_closed: t.map_or(0, |t| t.churn_closed),
                reconnects_ok: t.map_or(0, |t| t.reconnects_ok),
                missed_during_churn: e.churn_missed,
                missed_during_reconnect: e.reconnect_missed,
                up_at_end: t.map_or(0, |t| t.up_at_end),
                latency: t.map_or_else(LatencySummary::default, |t| LatencySummary::of(&t.latency)),
            }
        })
        .collect();
    let split = same.map(|i| {
        let mut cross = new_histogram();
        for (j, t) in m.per_target.iter().enumerate() {
            if j != i {
                cross.add(&t.latency).expect("same histogram bounds");
            }
        }
        NodeSplit {
            same_node_target: i,
            same_node: m
                .per_target
                .get(i)
                .map_or_else(LatencySummary::default, |t| LatencySummary::of(&t.latency)),
            cross_node: LatencySummary::of(&cross),
        }
    });
    (targets, split)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Evaluates a scenario's thresholds against a cell's figures.
pub fn verdicts(s: &Scenario, r: &CellReport) -> Vec<Verdict> {
    let t = &s.thresholds;
    let mut v = Vec::new();
    if let Some(limit) = t.p99_ms {
        let latency = if s.load.mode == Mode::ConnectOnly {
            &r.handshake
        } else {
            &r.latency
        };
        v.push(Verdict {
            threshold: "p99_ms",
            limit,
            actual: latency.p99_ms,
            // No samples at all cannot pass a latency threshold.
            pass: latency.count > 0 && latency.p99_ms <= limit,
        });
    }
    if let Some(limit) = t.min_success_rate {
        v.push(Verdict {
            threshold: "min_success_rate",
            limit,
            actual: r.success_rate,
            pass: r.success_rate >= limit,
        });
    }
    if let Some(limit) = t.min_tps {
        v.push(Verdict {
            threshold: "min_tps",
            limit,
            actual: r.tps,
            pass: r.tps >= limit,
        });
    }
    v
}

fn latency_row(name: &str, l: &LatencySummary) -> String {
    format!(
        "{name:<22} min {:.3}  avg {:.3}  p50 {:.3}  p90 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  stddev {:.3}  (ms, n={})",
        l.min_ms, l.avg_ms, l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms, l.stddev_ms, l.count
    )
}

fn node_split_line(n: &NodeSplit) -> String {
    format!(
        "cross-node vs same-node p50 {:.3} / {:.3} ms  p99 {:.3} / {:.3} ms  (deliveries {} / {}; same node: target {})",
        n.cross_node.p50_ms,
        n.same_node.p50_ms,
        n.cross_node.p99_ms,
        n.same_node.p99_ms,
        n.cross_node.count,
        n.same_node.count,
        n.same_node_target
    )
}

/// The terminal summary of one cell.
pub fn summary_text(r: &CellReport) -> String {
    let c = &r.counts;
    let mut s = String::new();
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        s,
        "=== cell {}{}{} ===",
        r.index,
        if params.is_empty() { "" } else { ": " },
        params.join(" ")
    );
    let _ = writeln!(
        s,
        "mode {}  connections {}  message {} B  window {:.1} s  processes {}  elapsed {:.1} s",
        r.mode, r.connections, r.message_size, r.window_secs, r.processes, r.elapsed_secs
    );
    let _ = writeln!(s, "--- connections ---");
    let _ = writeln!(
        s,
        "attempted {}  established {}  failed {} (refused {}, timeout {}, reset {}, bad status {}, bad accept {}, other {})  dropped {}  up at end {}",
        c.conn_attempted,
        c.conn_established,
        c.conn_failed(),
        c.fail_refused,
        c.fail_timeout,
        c.fail_reset,
        c.fail_bad_status,
        c.fail_bad_accept,
        c.fail_other,
        c.conn_dropped,
        c.conn_up_at_end
    );
    if c.conn_up_at_end > 0 {
        let _ = writeln!(
            s,
            "closing at the end: closed by the server {}  no close within client.close_timeout_ms {} (aborted)  reset or failed {}",
            c.closed_at_end,
            c.close_timeouts_at_end,
            c.conn_up_at_end
                .saturating_sub(c.closed_at_end + c.close_timeouts_at_end)
        );
    }
    let _ = writeln!(s, "{}", latency_row("handshake latency", &r.handshake));
    if r.mode == "session" {
        let _ = writeln!(s, "--- sessions ---");
        let _ = writeln!(
            s,
            "started {}  completed {}  failed {}  messages sent {}  received {}  hub broadcasts received {}",
            c.sessions_started,
            c.sessions_completed,
            c.sessions_failed,
            c.vu_msgs_sent,
            c.vu_msgs_received,
            c.deliveries
        );
        if let Some(it) = &r.iteration {
            let _ = writeln!(s, "{}", latency_row("iteration duration", it));
        }
        if r.latency.count > 0 {
            let _ = writeln!(s, "{}", latency_row("broadcast latency", &r.latency));
        }
        let _ = writeln!(s, "throughput             {:.1} sessions/s", r.tps);
    } else if r.mode == "subscribe" {
        let _ = writeln!(s, "--- publications ---");
        let _ = write!(
            s,
            "subscriptions {} (refused {})  publications accepted {} (refused {})  unsubscribed by the server {}",
            c.subs_ok, c.subs_failed, c.pubs_ok, c.pubs_failed, c.unsubscribed
        );
        if c.resubscribed_in_place + c.resubscribe_retries > 0 {
            let _ = write!(
                s,
                " (subscribed again {}, after {} temporary refusals)",
                c.resubscribed_in_place, c.resubscribe_retries
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "deliveries {} of {} expected  missing {}  duplicate {}  out of order {}  protocol errors {}",
            c.deliveries,
            r.expected_deliveries,
            c.missing(r.expected_deliveries),
            c.deliveries_dup,
            c.deliveries_ooo,
            c.protocol_errors
        );
        let _ = writeln!(s, "{}", latency_row("delivery latency", &r.latency));
        let _ = writeln!(s, "throughput             {:.0} deliveries/s", r.tps);
        if let Some(ch) = &r.churn {
            let _ = writeln!(s, "--- churn ({} connections/s) ---", ch.per_sec);
            let _ = writeln!(
                s,
                "closed {}  reconnects {} (established {}, failed {})  resubscribed {}  missed during churn {} (in flight when closed; not missing)  received before resubscribing {}",
                ch.closed,
                ch.reconnects,
                ch.reconnects_ok,
                ch.reconnects_failed,
                ch.resubscribed,
                ch.missed_during_churn,
                ch.early
            );
            let _ = writeln!(
                s,
                "{}",
                latency_row("reconnect latency", &ch.reconnect_latency)
            );
            let _ = writeln!(
                s,
                "{}",
                latency_row("resubscribe latency", &ch.resubscribe_latency)
            );
        }
        if let Some(rc) = &r.reconnect {
            let delay = match rc.delay_ms[..] {
                [a, b] => format!("{a}..{b} ms"),
                _ => format!("{:?} ms", rc.delay_ms),
            };
            let _ = writeln!(
                s,
                "--- reconnect (delay {delay}, next target round robin) ---"
            );
            let _ = writeln!(
                s,
                "dropped {}  subscribers dropped {} back {}  reconnect attempts {} (established {}, failed {})  resubscribed {}",
                rc.dropped,
                rc.subscribers_dropped,
                rc.subscribers_recovered,
                rc.attempts,
                rc.attempts_ok,
                rc.attempts_failed,
                rc.resubscribed
            );
            let _ = writeln!(
                s,
                "missed during reconnect {} (sent while away or in flight at the drop; not missing)  received before resubscribing {}",
                rc.missed_during_reconnect, rc.early
            );
            let _ = writeln!(s, "{}", latency_row("drop to resubscribed", &rc.latency));
            match rc.recovered_in_secs {
                Some(secs) => {
                    let _ = writeln!(
                        s,
                        "recovered in {secs:.2} s (first drop to the last dropped subscriber resubscribed)"
                    );
                }
                None if rc.subscribers_dropped > 0 => {
                    let _ = writeln!(
                        s,
                        "not recovered: {} of {} dropped subscribers not back by the end of the window",
                        rc.subscribers_dropped - rc.subscribers_recovered,
                        rc.subscribers_dropped
                    );
                }
                None => {}
            }
        }
        if !r.per_target.is_empty() {
            let _ = writeln!(s, "--- per target (node) ---");
            for t in &r.per_target {
                let _ = writeln!(
                    s,
                    "target {} {}{}",
                    t.index,
                    t.url,
                    if t.publisher_node {
                        "  (the publisher's node)"
                    } else {
                        ""
                    }
                );
                let churn = if r.churn.is_some() {
                    format!(
                        "  churn closed {} reopened {} missed during churn {}",
                        t.churn_closed, t.reconnects_ok, t.missed_during_churn
                    )
                } else {
                    String::new()
                };
                let reconnect = if r.reconnect.is_some() {
                    format!(
                        "  up at end {}  reconnected here {}  missed during reconnect {}",
                        t.up_at_end, t.reconnects_ok, t.missed_during_reconnect
                    )
                } else {
                    String::new()
                };
                let churn = churn + &reconnect;
                let _ = writeln!(
                    s,
                    "  connections {}  subscriptions {}  deliveries {} of {} expected  missing {}  duplicate {}  out of order {}{churn}",
                    t.connections,
                    t.subscriptions,
                    t.deliveries,
                    t.expected_deliveries,
                    t.missing,
                    t.duplicate,
                    t.out_of_order
                );
                let _ = writeln!(s, "  {}", latency_row("delivery latency", &t.latency));
            }
            match &r.node_split {
                Some(n) => {
                    let _ = writeln!(s, "{}", node_split_line(n));
                }
                None => {
                    let _ = writeln!(
                        s,
                        "cross-node vs same-node: set publish.same_node_target to the publisher's node"
                    );
                }
            }
        }
    } else if r.mode == "ack" {
        // Seed 000's summary (总连接数, 总消息数, 成功, 失败, 运行时间,
        // 消息速率, 成功率), with the failures broken down.
        let _ = writeln!(
            s,
            "--- transactions (message -> server ack -> client ack) ---"
        );
        let _ = writeln!(
            s,
            "connections            {} up of {} ({} closed by the server)",
            c.conn_established, r.connections, c.conn_dropped
        );
        let _ = writeln!(s, "total sent             {}", c.msgs_sent);
        let _ = writeln!(s, "successful             {}", c.msgs_ok);
        let _ = writeln!(
            s,
            "failed                 {}  (timed out {}, error answers {}, lost on close {})",
            c.msgs_timed_out + c.ack_errors + c.msgs_lost,
            c.msgs_timed_out,
            c.ack_errors,
            c.msgs_lost
        );
        let _ = writeln!(
            s,
            "skipped                {}  (sends due while load.ack.max_outstanding awaited acks)",
            c.ack_skipped
        );
        let _ = writeln!(s, "duration               {:.1} s", r.window_secs);
        let _ = writeln!(s, "TPS                    {:.2} transactions/s", r.tps);
        let _ = writeln!(s, "{}", latency_row("transaction latency", &r.latency));
        let _ = writeln!(
            s,
            "client acks sent {}  stale acks {}  unknown-id acks {}  unmatched errors {}  non-ack messages {}  protocol errors {}",
            c.client_acks_sent,
            c.acks_stale,
            c.acks_unknown,
            c.errors_unmatched,
            c.non_ack_msgs,
            c.protocol_errors
        );
    } else if r.mode != "connect-only" {
        let _ = writeln!(s, "--- messages ---");
        if r.mode == "ping" {
            let _ = writeln!(
                s,
                "pings sent {}  pongs received {}  timed out {}  lost {}",
                c.pings_sent, c.pongs_received, c.msgs_timed_out, c.msgs_lost
            );
        } else {
            let _ = writeln!(
                s,
                "sent {}  answered in time {}  timed out {}  lost {}  late sends {}  protocol errors {}",
                c.msgs_sent, c.msgs_ok, c.msgs_timed_out, c.msgs_lost, c.msgs_late, c.protocol_errors
            );
        }
        let name = if r.mode == "rate" {
            "latency (corrected)"
        } else if r.mode == "ping" {
            "pong RTT"
        } else {
            "echo RTT"
        };
        let _ = writeln!(s, "{}", latency_row(name, &r.latency));
        if let Some(raw) = &r.raw_latency {
            let _ = writeln!(s, "{}", latency_row("latency (raw)", raw));
        }
        let _ = writeln!(
            s,
            "throughput             {:.0} msg/s  {:.2} MiB/s payload (both directions)",
            r.tps,
            r.bytes_per_sec / (1 << 20) as f64
        );
    }
    if !c.close_codes.is_empty() || (r.mode == "ack" && c.conn_dropped > 0) {
        let _ = writeln!(
            s,
            "close codes            {}  (closed without a close frame: {})",
            if c.close_codes.is_empty() {
                "none".to_string()
            } else {
                c.close_codes_text()
            },
            c.dropped_without_close()
        );
    }
    let _ = writeln!(s, "success rate           {:.4}%", r.success_rate * 100.0);
    let _ = writeln!(s, "--- cost ---");
    let k = &r.cost;
    let opt = |v: Option<f64>, unit: &str| {
        v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2} {unit}"))
    };
    let busy =
        |u: Option<f64>| u.map_or_else(String::new, |u| format!(", {:.0} % of a core", u * 100.0));
    let _ = writeln!(
        s,
        "client CPU {} per msg{}   server CPU {} per msg{}   (over {} of the window)",
        opt(k.client_cpu_us_per_msg, "µs"),
        busy(k.client_utilisation()),
        opt(k.server_cpu_us_per_msg, "µs"),
        busy(k.server_utilisation()),
        opt(k.span_secs, "s")
    );
    if k.client_utilisation()
        .is_some_and(|u| u > 0.9 * r.client_threads.max(1) as f64)
    {
        let _ = writeln!(
            s,
            "warning: the client was over 90 % busy: throughput and latency may be client-bound (add client.workers or processes on free cores)"
        );
    }
    if let (Some(b), Some(w)) = (k.server_rss_before, k.server_rss_window) {
        let _ = writeln!(
            s,
            "server RSS {:.1} MiB before, {:.1} MiB in window, {} per connection",
            b as f64 / (1 << 20) as f64,
            w as f64 / (1 << 20) as f64,
            opt(k.server_rss_per_conn, "B")
        );
    }
    for v in &r.verdicts {
        let _ = writeln!(
            s,
            "threshold {:<17} limit {:<10} actual {:<12.4} {}",
            v.threshold,
            v.limit,
            v.actual,
            if v.pass { "PASS" } else { "FAIL" }
        );
    }
    s
}

const CSV_HEADER: &str = "cell,params,mode,connections,message_size,processes,attempted,established,failed,dropped,up_at_end,\
sent,ok,timed_out,lost,late,tps,bytes_per_sec,success_rate,hs_p50_ms,hs_p99_ms,p50_ms,p90_ms,p95_ms,p99_ms,p999_ms,max_ms,\
raw_p99_ms,client_cpu_us_per_msg,server_cpu_us_per_msg,server_rss_per_conn,pass,\
errors,skipped,close_codes,\
same_node_p50_ms,same_node_p99_ms,cross_node_p50_ms,cross_node_p99_ms,reconnects,missed_during_churn,per_target";

fn csv_row(r: &CellReport) -> String {
    let c = &r.counts;
    let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let split = |f: fn(&NodeSplit) -> f64| {
        r.node_split
            .as_ref()
            .map_or(String::new(), |n| format!("{:.3}", f(n)))
    };
    let churn =
        |f: fn(&ChurnReport) -> u64| r.churn.as_ref().map_or(String::new(), |c| f(c).to_string());
    let targets: Vec<String> = r
        .per_target
        .iter()
        .map(|t| {
            format!(
                "t{}{} {} deliveries={} expected={} missing={} dup={} ooo={} p50={:.3} p90={:.3} p99={:.3} p999={:.3} max={:.3}",
                t.index,
                if t.publisher_node { "*" } else { "" },
                t.url,
                t.deliveries,
                t.expected_deliveries,
                t.missing,
                t.duplicate,
                t.out_of_order,
                t.latency.p50_ms,
                t.latency.p90_ms,
                t.latency.p99_ms,
                t.latency.p999_ms,
                t.latency.max_ms
            )
        })
        .collect();
    format!(
        "{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.1},{:.1},{:.6},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{},{},{},{},{},{},{},\"{}\",{},{},{},{},{},{},\"{}\"",
        r.index,
        params.join(" "),
        r.mode,
        r.connections,
        r.message_size,
        r.processes,
        c.conn_attempted,
        c.conn_established,
        c.conn_failed(),
        c.conn_dropped,
        c.conn_up_at_end,
        c.msgs_sent,
        c.msgs_ok,
        c.msgs_timed_out,
        c.msgs_lost,
        c.msgs_late,
        r.tps,
        r.bytes_per_sec,
        r.success_rate,
        r.handshake.p50_ms,
        r.handshake.p99_ms,
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p95_ms,
        r.latency.p99_ms,
        r.latency.p999_ms,
        r.latency.max_ms,
        o(r.raw_latency.as_ref().map(|l| l.p99_ms)),
        o(r.cost.client_cpu_us_per_msg),
        o(r.cost.server_cpu_us_per_msg),
        o(r.cost.server_rss_per_conn),
        r.passed(),
        c.ack_errors,
        c.ack_skipped,
        c.close_codes_text(),
        split(|n| n.same_node.p50_ms),
        split(|n| n.same_node.p99_ms),
        split(|n| n.cross_node.p50_ms),
        split(|n| n.cross_node.p99_ms),
        churn(|c| c.reconnects),
        churn(|c| c.missed_during_churn),
        targets.join("; ")
    )
}

const TARGETS_CSV_HEADER: &str = "cell,params,target,url,publisher_node,connections,subscriptions,\
deliveries,expected,missing,duplicate,out_of_order,churn_closed,reconnects_ok,missed_during_churn,\
p50_ms,p90_ms,p99_ms,p999_ms,max_ms";

/// `targets.csv`: a row per cell and target.
fn targets_csv(reports: &[CellReport]) -> String {
    let mut csv = String::from(TARGETS_CSV_HEADER);
    csv.push('\n');
    for r in reports {
        let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for t in &r.per_target {
            let _ = writeln!(
                csv,
                "{},\"{}\",{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3}",
                r.index,
                params.join(" "),
                t.index,
                t.url,
                t.publisher_node,
                t.connections,
                t.subscriptions,
                t.deliveries,
                t.expected_deliveries,
                t.missing,
                t.duplicate,
                t.out_of_order,
                t.churn_closed,
                t.reconnects_ok,
                t.missed_during_churn,
                t.latency.p50_ms,
                t.latency.p90_ms,
                t.latency.p99_ms,
                t.latency.p999_ms,
                t.latency.max_ms
            );
        }
    }
    csv
}

/// Writes `summary.json`, `results.csv`, `report.md` and plots into `dir`.
pub fn write_outputs(
    dir: &Path,
    matrix: &Matrix,
    reports: &[CellReport],
    command: &str,
) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let json = serde_json::json!({
        "scenario": matrix.name,
        "command": command,
        "varied": matrix.varied,
        "cells": reports,
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    written.push("summary.json".to_string());
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    for r in reports {
        csv.push_str(&csv_row(r));
        csv.push('\n');
    }
    std::fs::write(dir.join("results.csv"), csv)?;
    written.push("results.csv".to_string());
    if reports.iter().any(|r| !r.per_target.is_empty()) {
        std::fs::write(dir.join("targets.csv"), targets_csv(reports))?;
        written.push("targets.csv".to_string());
    }
    let mut plots = Vec::new();
    if let Some(key) = matrix.varied.first() {
        for (file, title, value) in [
            (
                "throughput.svg",
                "throughput (msg/s)",
                (|r: &CellReport| r.tps) as fn(&CellReport) -> f64,
            ),
            ("p99.svg", "p99 latency (ms)", |r: &CellReport| {
                r.latency.p99_ms
            }),
        ] {
            std::fs::write(
                dir.join(file),
                plot_svg(key, title, &matrix.varied, reports, value),
            )?;
            plots.push(file);
            written.push(file.to_string());
        }
    }
    std::fs::write(
        dir.join("report.md"),
        markdown(matrix, reports, command, &plots),
    )?;
    written.push("report.md".to_string());
    Ok(written)
}

fn markdown(matrix: &Matrix, reports: &[CellReport], command: &str, plots: &[&str]) -> String {
    let mut s = format!("# bench-client: {}\n\n", matrix.name);
    if let Some(first) = matrix.cells.first() {
        if !first.scenario.description.is_empty() {
            let _ = writeln!(s, "{}\n", first.scenario.description);
        }
        let _ = writeln!(
            s,
            "Target: {}  \nMode: {}\n",
            first.scenario.target.urls.join(", "),
            first.scenario.load.mode.label()
        );
    }
    let _ = writeln!(s, "Command:\n\n```\n{command}\n```\n");
    let _ = writeln!(
        s,
        "| cell | params | conns up/attempted | sent | ok | timed out | lost | msg/s | p50 ms | p99 ms | p99.9 ms | max ms | client µs/msg | server µs/msg | pass |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in reports {
        let c = &r.counts;
        let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let o = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            r.index,
            params.join(" "),
            c.conn_up_at_end,
            c.conn_attempted,
            c.msgs_sent,
            c.msgs_ok,
            c.msgs_timed_out,
            c.msgs_lost,
            r.tps,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.latency.p999_ms,
            r.latency.max_ms,
            o(r.cost.client_cpu_us_per_msg),
            o(r.cost.server_cpu_us_per_msg),
            if r.passed() { "yes" } else { "**no**" }
        );
    }
    if reports.iter().any(|r| !r.per_target.is_empty()) {
        let _ = writeln!(s, "\n## Per target (node)\n");
        let _ = writeln!(
            s,
            "| cell | target | deliveries | expected | missing | dup | out of order | missed during churn | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in reports {
            for t in &r.per_target {
                let _ = writeln!(
                    s,
                    "| {} | {} {}{} | {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    r.index,
                    t.index,
                    t.url,
                    if t.publisher_node { " (publisher's node)" } else { "" },
                    t.deliveries,
                    t.expected_deliveries,
                    t.missing,
                    t.duplicate,
                    t.out_of_order,
                    t.missed_during_churn,
                    t.latency.p50_ms,
                    t.latency.p90_ms,
                    t.latency.p99_ms,
                    t.latency.p999_ms,
                    t.latency.max_ms
                );
            }
        }
        for r in reports {
            if let Some(n) = &r.node_split {
                let _ = writeln!(s, "\nCell {}: {}", r.index, node_split_line(n));
            }
        }
    }
    for p in plots {
        let _ = writeln!(s, "\n![{p}]({p})");
    }
    let _ = writeln!(s, "\n## Cells in full\n");
    for r in reports {
        let _ = writeln!(s, "```\n{}```\n", summary_text(r));
    }
    s
}

/// A line chart of `value` against the first varied key; one series per
/// combination of the other varied keys.
fn plot_svg(
    key: &str,
    title: &str,
    varied: &[String],
    reports: &[CellReport],
    value: fn(&CellReport) -> f64,
) -> String {
    let x_of = |r: &CellReport| {
        r.params
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let series_of = |r: &CellReport| {
        let others: Vec<String> = r
            .params
            .iter()
            .filter(|(k, _)| k != key && varied.contains(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        others.join(" ")
    };
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in reports {
        let name = series_of(r);
        let point = (x_of(r), value(r));
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, pts)) => pts.push(point),
            None => series.push((name, vec![point])),
        }
    }
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 40.0, 200.0);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .collect();
    let (xmin, xmax) = (
        xs.iter().cloned().fold(f64::INFINITY, f64::min),
        xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    );
    let ymax = ys.iter().cloned().fold(0.0, f64::max).max(1e-9) * 1.1;
    let sx = |x: f64| {
        left + if xmax > xmin {
            (x - xmin) / (xmax - xmin)
        } else {
            0.5
        } * (w - left - right)
    };
    let sy = |y: f64| h - bottom - y / ymax * (h - bottom - top);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    ];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title} vs {key}</text>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        (w - right + left) / 2.0,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=4 {
        let y = ymax * i as f64 / 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            sy(y) + 4.0,
            fmt_num(y)
        );
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>",
            sy(y),
            w - right
        );
    }
    let mut xticks: Vec<f64> = xs.clone();
    xticks.sort_by(f64::total_cmp);
    xticks.dedup();
    for x in xticks {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            sx(x),
            h - bottom + 18.0,
            fmt_num(x)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{key}</text>",
        (w - right + left) / 2.0,
        h - 10.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let mut pts = pts.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (x, y) in &pts {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                sx(*x),
                sy(*y)
            );
        }
        let label = if name.is_empty() { "all" } else { name };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            w - right + 10.0,
            top + 16.0 * (i as f64 + 1.0),
            xml_escape(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario;

    fn report_with(p99_ms: f64, ok: u64, sent: u64) -> (Scenario, CellReport) {
        let text = "[target]\nurls = [\"ws://127.0.0.1:1/\"]\n[load]\nduration_secs = 10\n\
                    [thresholds]\np99_ms = 5\nmin_success_rate = 0.99\nmin_tps = 100\n";
        let m = scenario::parse(text, "t", "t", &[]).unwrap();
        let cell = m.cells[0].clone();
        let mut out = CellOutcome {
            measured: Default::default(),
            processes: 1,
            elapsed_secs: 12.0,
            cost: Cost::default(),
        };
        out.measured.counts.msgs_ok = ok;
        out.measured.counts.msgs_sent = sent;
        for _ in 0..100 {
            out.measured
                .latency
                .record((p99_ms * 1000.0) as u64)
                .unwrap();
        }
        let r = CellReport::new(&cell, &out);
        (cell.scenario, r)
    }

    #[test]
    fn thresholds_pass_and_fail_on_the_right_side() {
        let (_, r) = report_with(4.0, 2000, 2000);
        assert!(r.passed(), "{:?}", r.verdicts);
        assert_eq!(r.tps, 200.0);
        let (_, r) = report_with(6.0, 2000, 2000);
        assert!(!r.verdicts[0].pass && r.verdicts[1].pass && r.verdicts[2].pass);
        let (_, r) = report_with(1.0, 900, 1000);
        assert!(!r.verdicts[1].pass, "90% success under a 99% threshold");
        assert!(!r.verdicts[2].pass, "90 msg/s under 100");
    }

    #[test]
    fn ack_mode_reports_seed_000_figures() {
        let text = "[target]\nurls = [\"ws://127.0.0.1:1/upstream\"]\n[load]\nmode = \"ack\"\n\
                    connections = 4000\nrate = 1\nduration_secs = 40\n";
        let m = scenario::parse(text, "t", "t", &[]).unwrap();
        let mut out = CellOutcome {
            measured: Default::default(),
            processes: 1,
            elapsed_secs: 41.0,
            cost: Cost::default(),
        };
        let c = &mut out.measured.counts;
        (c.conn_established, c.conn_dropped) = (4000, 7);
        (
            c.msgs_sent,
            c.msgs_ok,
            c.msgs_timed_out,
            c.ack_errors,
            c.msgs_lost,
        ) = (138_805, 135_172, 3_600, 30, 3);
        c.ack_skipped = 12;
        c.close_codes.insert(1013, 5);
        for v in 1..=1000 {
            out.measured.latency.record(v * 10).unwrap();
        }
        let r = CellReport::new(&m.cells[0], &out);
        assert!((r.tps - 135_172.0 / 40.0).abs() < 1e-9);
        assert!((r.success_rate - 135_172.0 / 138_805.0).abs() < 1e-12);
        let t = summary_text(&r);
        for want in [
            "total sent             138805",
            "successful             135172",
            "failed                 3633  (timed out 3600, error answers 30, lost on close 3)",
            "skipped                12",
            "TPS                    3379.30 transactions/s",
            "success rate           97.3827%",
            "transaction latency",
            "p99.9 9.991",
            "close codes            1013 x5  (closed without a close frame: 2)",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        let row = csv_row(&r);
        assert!(row.contains(",30,12,\"1013 x5\","), "{row}");
        assert!(row.ends_with(",,,,,,,\"\""), "no per-target columns: {row}");
        assert_eq!(
            CSV_HEADER.split(',').count(),
            row.split(',').count(),
            "a column per field"
        );
    }

    /// A subscribe cell over three targets: target 0 (the publisher's
    /// node) delivers fast, 1 and 2 slower; target 2 misses one delivery.
    fn three_nodes(extra: &str) -> (Matrix, CellReport) {
        let text = format!(
            "[target]\nurls = [\"ws://127.0.0.1:9001/c\", \"ws://127.0.0.1:9002/c\", \"ws://127.0.0.1:9003/c\"]\n\
             [load]\nmode = \"subscribe\"\nconnections = 6\nduration_secs = 2\n{extra}"
        );
        let m = scenario::parse(&text, "t", "t", &[]).unwrap();
        let mut out = CellOutcome {
            measured: Default::default(),
            processes: 1,
            elapsed_secs: 3.0,
            cost: Cost::default(),
        };
        let mm = &mut out.measured;
        mm.published = vec![10];
        mm.subscribed = vec![6];
        mm.per_target = (0..3)
            .map(|_| crate::stats::TargetMeasurements::new(1))
            .collect();
        for (i, t) in mm.per_target.iter_mut().enumerate() {
            t.conns = 2;
            t.subs_ok = 2;
            t.subscribed = vec![2];
            let (n, us) = if i == 0 {
                (20, 500)
            } else {
                (20 - i as u64, 1500)
            };
            for _ in 0..n {
                t.latency.record(us).unwrap();
            }
            t.deliveries = n;
            mm.counts.deliveries += n;
            mm.latency.add(&t.latency).unwrap();
        }
        mm.per_target[2].deliveries_dup = 3;
        let r = CellReport::new(&m.cells[0], &out);
        (m, r)
    }

    #[test]
    fn subscribe_over_several_targets_reports_each_and_the_node_split() {
        let (m, r) = three_nodes("[publish]\nsame_node_target = 0\n");
        assert_eq!(r.per_target.len(), 3);
        assert_eq!(
            r.per_target.iter().map(|t| t.deliveries).sum::<u64>(),
            r.counts.deliveries
        );
        let t2 = &r.per_target[2];
        assert_eq!(
            (t2.expected_deliveries, t2.missing, t2.duplicate),
            (20, 2, 3)
        );
        assert!(r.per_target[0].publisher_node && !r.per_target[1].publisher_node);
        let n = r.node_split.as_ref().expect("same_node_target set");
        assert_eq!((n.same_node.count, n.cross_node.count), (20, 37));
        assert!((n.same_node.p50_ms - 0.5).abs() < 0.01, "{n:?}");
        assert!((n.cross_node.p99_ms - 1.5).abs() < 0.01, "{n:?}");
        let text = summary_text(&r);
        for want in [
            "--- per target (node) ---",
            "target 0 ws://127.0.0.1:9001/c  (the publisher's node)",
            "deliveries 18 of 20 expected  missing 2  duplicate 3",
            "cross-node vs same-node p50 1.500 / 0.500 ms  p99 1.500 / 0.500 ms  (deliveries 37 / 20; same node: target 0)",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(text.matches("\ntarget ").count(), 3, "{text}");
        let row = csv_row(&r);
        assert_eq!(
            CSV_HEADER.split(',').count(),
            row.split(',').count(),
            "{row}"
        );
        assert!(
            row.contains(",0.500,0.500,1.500,1.500,,,\"t0* ws://127.0.0.1:9001/c deliveries=20"),
            "{row}"
        );
        let dir = std::env::temp_dir().join(format!("bench-report-targets-{}", std::process::id()));
        let files = write_outputs(&dir, &m, &[r], "bench-client").unwrap();
        assert!(files.contains(&"targets.csv".to_string()), "{files:?}");
        let csv = std::fs::read_to_string(dir.join("targets.csv")).unwrap();
        assert_eq!(csv.lines().count(), 4, "header + a row per target:\n{csv}");
        assert_eq!(
            TARGETS_CSV_HEADER.split(',').count(),
            csv.lines().nth(1).unwrap().split(',').count()
        );
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(
            md.contains("## Per target (node)") && md.contains("Cell 0: cross-node vs same-node"),
            "{md}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["cells"][0]["per_target"].as_array().unwrap().len(), 3);
        assert_eq!(json["cells"][0]["node_split"]["same_node_target"], 0);
        std::fs::remove_dir_all(dir).ok();
        // Without the key: per-target figures, no split.
        let (_, r) = three_nodes("");
        assert!(r.node_split.is_none() && r.per_target.len() == 3);
        assert!(summary_text(&r).contains("set publish.same_node_target"));
    }

    #[test]
    fn outputs_are_written_with_plots_for_a_matrix() {
        let text = "[target]\nurls = [\"ws://127.0.0.1:1/\"]\n[load]\nconnections = [1, 2]\nmessage_size = [10, 20]\n";
        let m = scenario::parse(text, "t", "t", &[]).unwrap();
        let reports: Vec<CellReport> = m
            .cells
            .iter()
            .map(|c| {
                let out = CellOutcome {
                    measured: Default::default(),
                    processes: 1,
                    elapsed_secs: 1.0,
                    cost: Cost::default(),
                };
                CellReport::new(c, &out)
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("bench-report-{}", std::process::id()));
        let files = write_outputs(&dir, &m, &reports, "bench-client --scenario t").unwrap();
        assert_eq!(
            files,
            vec![
                "summary.json",
                "results.csv",
                "throughput.svg",
                "p99.svg",
                "report.md"
            ]
        );
        let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
        assert_eq!(csv.lines().count(), 5, "header + 4 cells");
        let svg = std::fs::read_to_string(dir.join("throughput.svg")).unwrap();
        assert!(svg.contains("load.message_size=10") && svg.contains("<polyline"));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["cells"].as_array().unwrap().len(), 4);
        std::fs::remove_dir_all(dir).ok();
    }
}
