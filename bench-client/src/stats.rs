//! What a run measured: counters and latency histograms, mergeable across
//! workers and processes, and serializable so child processes can hand them
//! to the parent losslessly.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency histograms cover 1 µs to 100 s at 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Counters of one worker, process or run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// TCP connects started.
    pub conn_attempted: u64,
    /// Handshakes completed with a valid 101.
    pub conn_established: u64,
    /// Connect refused (ECONNREFUSED).
    pub fail_refused: u64,
    /// Connect plus handshake not done within `handshake_timeout_ms`.
    pub fail_timeout: u64,
    /// Reset or closed by the peer before the handshake finished.
    pub fail_reset: u64,
    /// The server answered with a status other than 101.
    pub fail_bad_status: u64,
    /// 101 with a wrong or missing `Sec-WebSocket-Accept`.
    pub fail_bad_accept: u64,
    /// Any other connect error (e.g. EADDRNOTAVAIL: out of ephemeral ports).
    pub fail_other: u64,
    /// Established connections that the server closed or reset before we did.
    pub conn_dropped: u64,
    /// Established connections still up when the run ended.
    pub conn_up_at_end: u64,
    /// Messages sent inside the measured window.
    pub msgs_sent: u64,
    /// Replies to those received within `message_timeout_ms`.
    pub msgs_ok: u64,
    /// Replies later than `message_timeout_ms`, or none by the end on a live connection.
    pub msgs_timed_out: u64,
    /// No reply because the connection closed or failed first.
    pub msgs_lost: u64,
    /// Rate mode: sends that left more than 1 ms after their scheduled time.
    pub msgs_late: u64,
    /// Payload bytes sent in the window.
    pub bytes_sent: u64,
    /// Payload bytes received for window messages.
    pub bytes_received: u64,
    /// Ping mode: pings sent in the window.
    pub pings_sent: u64,
    /// Ping mode: matching pongs received.
    pub pongs_received: u64,
    /// Frames from the server that broke the protocol (wrong echo, bad frame).
    pub protocol_errors: u64,
    /// Replies received in any phase (warm-up included): the denominator of
    /// CPU time per message, since the server works on those too.
    pub replies_all: u64,
    /// Subscribe mode: subscriptions confirmed (replies, or server-side at connect).
    pub subs_ok: u64,
    /// Subscribe mode: connects or subscribes refused (error replies).
    pub subs_failed: u64,
    /// Subscribe mode: measured publications the server accepted.
    pub pubs_ok: u64,
    /// Subscribe mode: publications the server refused.
    pub pubs_failed: u64,
    /// Subscribe mode: measured publications received (first copy of each).
    pub deliveries: u64,
    /// Subscribe mode: a publication received again.
    pub deliveries_dup: u64,
    /// Subscribe mode: received after a later one of the same channel.
    pub deliveries_ooo: u64,
    /// Subscribe mode: server-side unsubscribes.
    pub unsubscribed: u64,
    /// Session mode: sessions started in the window.
    pub sessions_started: u64,
    /// Session mode: sessions that ran to their own close.
    pub sessions_completed: u64,
    /// Session mode: sessions that failed to connect or were dropped.
    pub sessions_failed: u64,
    /// Session mode: messages the VUs sent (window).
    pub vu_msgs_sent: u64,
    /// Session mode: messages the VUs received (window).
    pub vu_msgs_received: u64,
    /// Ack mode: window messages the gateway answered with an error
    /// (`{"error":{..,"id":N}}` for an outstanding id): failed.
    #[serde(default)]
    pub ack_errors: u64,
    /// Ack mode: window sends skipped because `load.ack.max_outstanding`
    /// messages were awaiting their acks (offered load not taken).
    #[serde(default)]
    pub ack_skipped: u64,
    /// Ack mode: client acks sent for window messages.
    #[serde(default)]
    pub client_acks_sent: u64,
    /// Ack mode (window and cool-down): acks for an id this connection
    /// sent but no longer awaits (a duplicate, or after its timeout).
    #[serde(default)]
    pub acks_stale: u64,
    /// Ack mode (window and cool-down): acks for an id never sent on the connection.
    #[serde(default)]
    pub acks_unknown: u64,
    /// Ack mode (window and cool-down): error answers without an
    /// outstanding id (null, unknown or already settled).
    #[serde(default)]
    pub errors_unmatched: u64,
    /// Ack mode (window and cool-down): messages that are no ack and no
    /// error answer (pushes, binary messages, anything without an id).
    #[serde(default)]
    pub non_ack_msgs: u64,
    /// Subscribe mode, churn (`load.churn_per_sec`): subscribers the client
    /// closed on purpose to reopen them.
    #[serde(default)]
    pub churn_closed: u64,
    /// Churn: connections opened again in their place.
    #[serde(default)]
    pub reconnects: u64,
    /// Churn: of those, handshakes completed.
    #[serde(default)]
    pub reconnects_ok: u64,
    /// Churn: of those, failed (refused, timed out, reset, bad answer).
    #[serde(default)]
    pub reconnects_failed: u64,
    /// Churn and reconnect: subscriptions confirmed again, on reopened
    /// connections or (reconnect) after the server unsubscribed them
    /// advising a resubscribe (codes 2500-2999).
    #[serde(default)]
    pub resubscribed: u64,
    /// Reconnect: of `resubscribed`, subscriptions made again on the same
    /// connection after the server unsubscribed them (2500-2999).
    #[serde(default)]
    pub resubscribed_in_place: u64,
    /// Reconnect: resubscribes the server refused with a temporary error,
    /// tried again after a delay.
    #[serde(default)]
    pub resubscribe_retries: u64,
    /// Churn: measured publications a reopened connection received although
    /// they were sent before its subscribe reply: neither expected nor
    /// counted as deliveries.
    #[serde(default)]
    pub churn_early: u64,
    /// Reconnect (`load.reconnect`): subscribers that lost their connection
    /// (server close or reset) and went looking for another node. A
    /// subscriber dropped again before it was back counts once.
    #[serde(default)]
    pub failover_dropped: u64,
    /// Reconnect: of those, subscribers back with every subscription confirmed.
    #[serde(default)]
    pub failover_recovered: u64,
    /// Connections open at the end that the server closed in order after
    /// our close frame (its FIN, within `client.close_timeout_ms`).
    #[serde(default)]
    pub closed_at_end: u64,
    /// Connections open at the end aborted after `client.close_timeout_ms`
    /// without the server's close. The rest of `conn_up_at_end` ended
    /// otherwise (a reset, a socket error).
    #[serde(default)]
    pub close_timeouts_at_end: u64,
    /// Close frames the server sent on open connections, by close code
    /// (1005: a close frame without a code). Connections that ended
    /// without one are `conn_dropped` minus the sum of these.
    #[serde(default)]
    pub close_codes: BTreeMap<u16, u64>,
}

impl Counts {
    /// Adds another set.
    pub fn merge(&mut self, o: &Counts) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        add!(
            conn_attempted,
            conn_established,
            fail_refused,
            fail_timeout,
            fail_reset,
            fail_bad_status,
            fail_bad_accept,
            fail_other,
            conn_dropped,
            conn_up_at_end,
            closed_at_end,
            close_timeouts_at_end,
            msgs_sent,
            msgs_ok,
            msgs_timed_out,
            msgs_lost,
            msgs_late,
            bytes_sent,
            bytes_received,
            pings_sent,
            pongs_received,
            protocol_errors,
            replies_all,
            subs_ok,
            subs_failed,
            pubs_ok,
            pubs_failed,
            deliveries,
            deliveries_dup,
            deliveries_ooo,
            unsubscribed,
            sessions_started,
            sessions_completed,
            sessions_failed,
            vu_msgs_sent,
            vu_msgs_received,
            ack_errors,
            ack_skipped,
            client_acks_sent,
            acks_stale,
            acks_unknown,
            errors_unmatched,
            non_ack_msgs,
            churn_closed,
            reconnects,
            reconnects_ok,
            reconnects_failed,
            resubscribed,
            resubscribed_in_place,
            resubscribe_retries,
            churn_early,
            failover_dropped,
            failover_recovered
        );
        for (code, n) in &o.close_codes {
            *self.close_codes.entry(*code).or_default() += n;
        }
    }

    /// Established connections the server ended without a close frame.
    pub fn dropped_without_close(&self) -> u64 {
        self.conn_dropped
            .saturating_sub(self.close_codes.values().sum::<u64>())
    }

    /// Close codes as `1011 x3, 1013 x5` (empty when none).
    pub fn close_codes_text(&self) -> String {
        let parts: Vec<String> = self
            .close_codes
            .iter()
            .map(|(c, n)| format!("{c} x{n}"))
            .collect();
        parts.join(", ")
    }

    /// Connections that failed to establish, for any reason.
    pub fn conn_failed(&self) -> u64 {
        self.fail_refused
            + self.fail_timeout
            + self.fail_reset
            + self.fail_bad_status
            + self.fail_bad_accept
            + self.fail_other
    }

    /// Subscribe mode: deliveries expected from what was published and who
    /// subscribed (see [`Measurements::expected_deliveries`]).
    pub fn missing(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.deliveries)
    }

    /// Records a failed connect by errno.
    pub fn connect_failed(&mut self, errno: i32) {
        match errno {
            libc::ECONNREFUSED => self.fail_refused += 1,
            libc::ETIMEDOUT => self.fail_timeout += 1,
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => self.fail_reset += 1,
            _ => self.fail_other += 1,
        }
    }
}

/// Subscribe mode: what the subscribers of one target URL (one node of a
/// cluster) saw. Indexed like `target.urls`; merged like [`Measurements`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetMeasurements {
    /// Subscriptions per channel held until the end of the run (those a
    /// churn closed move to [`Measurements::partial`]).
    pub subscribed: Vec<u64>,
    /// Subscribers whose handshake completed (reopened ones not included).
    pub conns: u64,
    /// Subscriptions confirmed (reopened ones not included).
    pub subs_ok: u64,
    /// Measured publications received (first copy of each).
    pub deliveries: u64,
    /// A publication received again.
    pub deliveries_dup: u64,
    /// Received after a later one of the same channel.
    pub deliveries_ooo: u64,
    /// Churn: subscribers closed on purpose, and reopened successfully.
    pub churn_closed: u64,
    /// See `churn_closed`.
    pub reconnects_ok: u64,
    /// Subscribers connected to it when the run ended (reopened ones included).
    #[serde(default)]
    pub up_at_end: u64,
    /// Delivery latency of `deliveries`, µs.
    #[serde(with = "hist_serde")]
    pub latency: Histogram<u64>,
}

impl TargetMeasurements {
    /// Empty tallies for `channels` channels.
    pub fn new(channels: usize) -> Self {
        Self {
            subscribed: vec![0; channels],
            conns: 0,
            subs_ok: 0,
            deliveries: 0,
            deliveries_dup: 0,
            deliveries_ooo: 0,
            churn_closed: 0,
            reconnects_ok: 0,
            up_at_end: 0,
            latency: new_histogram(),
        }
    }

    /// Adds another worker's or process's tallies of the same target.
    pub fn merge(&mut self, o: &TargetMeasurements) {
        add_vec(&mut self.subscribed, &o.subscribed);
        self.conns += o.conns;
        self.subs_ok += o.subs_ok;
        self.deliveries += o.deliveries;
        self.deliveries_dup += o.deliveries_dup;
        self.deliveries_ooo += o.deliveries_ooo;
        self.churn_closed += o.churn_closed;
        self.reconnects_ok += o.reconnects_ok;
        self.up_at_end += o.up_at_end;
        self.latency.add(&o.latency).expect("same histogram bounds");
    }
}

/// Churn: one subscription that did not last the whole run (closed by the
/// churn, or opened by it), with what it received. Its expected deliveries
/// are reckoned at the end against [`Measurements::pub_log`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialSub {
    /// Channel index.
    pub channel: u64,
    /// Target URL index.
    pub target: u32,
    /// Publications sent (`CLOCK_MONOTONIC` µs) from this time on were
    /// expected: its subscribe reply (0: subscribed since the ramp).
    pub from: u64,
    /// And up to this time: when the churn closed it (`u64::MAX`: open, or
    /// dropped by the server, until the end).
    pub until: u64,
    /// Publications sent after this time and after `last_seq` were in
    /// flight when the churn closed it: missed during churn, not lost
    /// (`until` − `load.message_timeout_ms`).
    pub in_flight_from: u64,
    /// Measured publications it received (`from` or later).
    pub delivered: u64,
    /// The highest sequence number it received on the channel.
    pub last_seq: Option<u64>,
    /// It ended because the server dropped it and it reconnected
    /// (`load.reconnect`): what was in flight counts as missed during
    /// reconnect rather than during churn.
    #[serde(default)]
    pub dropped: bool,
}

/// Reconnect: a channel of a dropped subscriber had no subscription from
/// `from` (the drop, `CLOCK_MONOTONIC` µs) to `until` (its subscribe reply
/// on the new connection; `u64::MAX`: not back by the end). Publications
/// sent in between were missed during reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Channel index.
    pub channel: u64,
    /// The target it was dropped from.
    pub target: u32,
    /// The drop.
    pub from: u64,
    /// Subscribed again.
    pub until: u64,
}

/// Reconnect: a dropped subscriber not yet back.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    /// Its first drop (`CLOCK_MONOTONIC` µs).
    pub since: u64,
    /// The target it was dropped from.
    pub target: u32,
    /// Per channel of the subscriber: start of its gap (0: subscribed again).
    pub from: Vec<u64>,
}

/// Expected deliveries of one target, split by why they are expected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expectation {
    /// Deliveries expected: measured publications × the subscriptions
    /// that were in place when each was sent.
    pub expected: u64,
    /// Publications in flight to a subscriber when the churn closed it:
    /// missed during churn, not part of `expected`.
    pub churn_missed: u64,
    /// Reconnect: publications sent while a subscriber was disconnected,
    /// or in flight to it when the server dropped it; not part of `expected`.
    pub reconnect_missed: u64,
}

fn add_vec(mine: &mut Vec<u64>, theirs: &[u64]) {
    if mine.len() < theirs.len() {
        mine.resize(theirs.len(), 0);
    }
    mine.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
}

/// Counters plus histograms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurements {
    /// Counters.
    pub counts: Counts,
    /// Subscribe mode: measured publications accepted, per channel.
    #[serde(default)]
    pub published: Vec<u64>,
    /// Subscribe mode: subscriptions, per channel.
    #[serde(default)]
    pub subscribed: Vec<u64>,
    /// Connect-to-101 latency, µs.
    #[serde(with = "hist_serde")]
    pub handshake: Histogram<u64>,
    /// Message latency, µs: echo RTT; rate mode from the scheduled send time
    /// (coordinated-omission corrected); ping mode pong RTT.
    #[serde(with = "hist_serde")]
    pub latency: Histogram<u64>,
    /// Rate mode: latency from the actual send time (uncorrected), µs.
    #[serde(with = "hist_serde")]
    pub raw_latency: Histogram<u64>,
    /// Session mode: iteration (session) duration, µs.
    #[serde(with = "hist_serde")]
    pub iteration: Histogram<u64>,
    /// Subscribe mode: per target URL (node).
    #[serde(default)]
    pub per_target: Vec<TargetMeasurements>,
    /// Churn: subscriptions that did not last the whole run.
    #[serde(default)]
    pub partial: Vec<PartialSub>,
    /// Churn: every measured publication accepted, as (channel, send time
    /// µs, sequence), for reckoning what `partial` subscriptions expected.
    #[serde(default)]
    pub pub_log: Vec<(u64, u64, u64)>,
    /// Churn: connect-to-101 latency of reopened connections, µs.
    #[serde(with = "hist_serde", default = "new_histogram")]
    pub reconnect: Histogram<u64>,
    /// Churn: connect start to the last subscribe reply of reopened connections, µs.
    #[serde(with = "hist_serde", default = "new_histogram")]
    pub resubscribe: Histogram<u64>,
    /// Reconnect: a dropped subscriber's drop to the last subscribe reply
    /// on its new connection (every attempt and delay included), µs.
    #[serde(with = "hist_serde", default = "new_histogram")]
    pub failover: Histogram<u64>,
    /// Reconnect: the first drop and the last return of a dropped
    /// subscriber (`CLOCK_MONOTONIC` µs; 0: none).
    #[serde(default)]
    pub first_drop: u64,
    /// See `first_drop`.
    #[serde(default)]
    pub last_recovered: u64,
    /// Reconnect: channels of dropped subscribers without a subscription, and for how long.
    #[serde(default)]
    pub gaps: Vec<Gap>,
    /// Reconnect: dropped subscribers not yet back, by connection number
    /// (the worker's working state; turned into `gaps` at the end).
    #[serde(skip)]
    pub outages: std::collections::HashMap<u64, Outage>,
}

impl Default for Measurements {
    fn default() -> Self {
        Self {
            counts: Counts::default(),
            published: Vec::new(),
            subscribed: Vec::new(),
            handshake: new_histogram(),
            latency: new_histogram(),
            raw_latency: new_histogram(),
            iteration: new_histogram(),
            per_target: Vec::new(),
            partial: Vec::new(),
            pub_log: Vec::new(),
            reconnect: new_histogram(),
            resubscribe: new_histogram(),
            failover: new_histogram(),
            first_drop: 0,
            last_recovered: 0,
            gaps: Vec::new(),
            outages: Default::default(),
        }
    }
}

impl Measurements {
    /// Subscribe mode: Σ over channels of measured publications ×
    /// subscribers, plus what the subscriptions churn closed or opened
    /// expected while they were in place.
    pub fn expected_deliveries(&self) -> u64 {
        let stat: u64 = self
            .published
            .iter()
            .zip(&self.subscribed)
            .map(|(p, s)| p * s)
            .sum();
        stat + self
            .partial_expectations()
            .iter()
            .map(|(_, e)| e.expected)
            .sum::<u64>()
    }

    /// Churn: publications in flight to subscribers the churn closed.
    pub fn churn_missed(&self) -> u64 {
        self.partial_expectations()
            .iter()
            .map(|(_, e)| e.churn_missed)
            .sum()
    }

    /// Reconnect: publications sent while subscribers were disconnected
    /// or in flight to them when they were dropped.
    pub fn reconnect_missed(&self) -> u64 {
        self.partial_expectations()
            .iter()
            .map(|(_, e)| e.reconnect_missed)
            .sum()
    }

    /// Reconnect: from the first drop to the last dropped subscriber
    /// back, seconds; `None` when nobody was dropped or someone was not back.
    pub fn recovered_in_secs(&self) -> Option<f64> {
        let c = &self.counts;
        (c.failover_dropped > 0 && c.failover_recovered == c.failover_dropped)
            .then(|| self.last_recovered.saturating_sub(self.first_drop) as f64 / 1e6)
    }

    /// Each partial subscription's target and expectation, from the
    /// publication log: the measured publications of its channel sent
    /// from `from` to `until` were expected, except those sent after
    /// `in_flight_from` with a sequence past the last one it received
    /// (in flight when it was closed).
    pub fn partial_expectations(&self) -> Vec<(u32, Expectation)> {
        if self.partial.is_empty() && self.gaps.is_empty() {
            return Vec::new();
        }
        let mut by_channel: std::collections::HashMap<u64, Vec<(u64, u64)>> =
            std::collections::HashMap::new();
        for &(k, t, seq) in &self.pub_log {
            by_channel.entry(k).or_default().push((t, seq));
        }
        for log in by_channel.values_mut() {
            log.sort_unstable();
        }
        self.partial
            .iter()
            .map(|p| {
                let mut e = Expectation::default();
                let log = by_channel.get(&p.channel).map_or(&[][..], Vec::as_slice);
                let lo = log.partition_point(|&(t, _)| t < p.from);
                let hi = log.partition_point(|&(t, _)| t <= p.until);
                for &(t, seq) in &log[lo..hi.max(lo)] {
                    let after_last = p.last_seq.is_none_or(|l| seq > l);
                    if p.until != u64::MAX && t >= p.in_flight_from && after_last {
                        if p.dropped {
                            e.reconnect_missed += 1;
                        } else {
                            e.churn_missed += 1;
                        }
                    } else {
                        e.expected += 1;
                    }
                }
                (p.target, e)
            })
            .chain(self.gaps.iter().map(|g| {
                let log = by_channel.get(&g.channel).map_or(&[][..], Vec::as_slice);
                let lo = log.partition_point(|&(t, _)| t <= g.from);
                let hi = log.partition_point(|&(t, _)| t < g.until);
                let e = Expectation {
                    reconnect_missed: hi.saturating_sub(lo) as u64,
                    ..Expectation::default()
                };
                (g.target, e)
            }))
            .collect()
    }

    /// Subscribe mode: each target's expectation (indexed like `per_target`).
    pub fn target_expectations(&self) -> Vec<Expectation> {
        let mut out: Vec<Expectation> = self
            .per_target
            .iter()
            .map(|t| Expectation {
                expected: self
                    .published
                    .iter()
                    .zip(&t.subscribed)
                    .map(|(p, s)| p * s)
                    .sum(),
                churn_missed: 0,
                reconnect_missed: 0,
            })
            .collect();
        for (target, e) in self.partial_expectations() {
            if let Some(o) = out.get_mut(target as usize) {
                o.expected += e.expected;
                o.churn_missed += e.churn_missed;
                o.reconnect_missed += e.reconnect_missed;
            }
        }
        out
    }

    /// Adds another worker's or process's measurements.
    pub fn merge(&mut self, o: &Measurements) {
        self.counts.merge(&o.counts);
        add_vec(&mut self.published, &o.published);
        add_vec(&mut self.subscribed, &o.subscribed);
        for (i, t) in o.per_target.iter().enumerate() {
            match self.per_target.get_mut(i) {
                Some(mine) => mine.merge(t),
                None => self.per_target.push(t.clone()),
            }
        }
        self.partial.extend_from_slice(&o.partial);
        self.pub_log.extend_from_slice(&o.pub_log);
        self.reconnect
            .add(&o.reconnect)
            .expect("same histogram bounds");
        self.resubscribe
            .add(&o.resubscribe)
            .expect("same histogram bounds");
        self.failover
            .add(&o.failover)
            .expect("same histogram bounds");
        self.gaps.extend_from_slice(&o.gaps);
        if o.first_drop != 0 && (self.first_drop == 0 || o.first_drop < self.first_drop) {
            self.first_drop = o.first_drop;
        }
        self.last_recovered = self.last_recovered.max(o.last_recovered);
        // Same bounds everywhere, so adding cannot fail.
        self.handshake
            .add(&o.handshake)
            .expect("same histogram bounds");
        self.latency.add(&o.latency).expect("same histogram bounds");
        self.raw_latency
            .add(&o.raw_latency)
            .expect("same histogram bounds");
        self.iteration
            .add(&o.iteration)
            .expect("same histogram bounds");
    }
}

/// Latency summary of one histogram, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Minimum.
    pub min_ms: f64,
    /// Mean.
    pub avg_ms: f64,
    /// Percentiles.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Standard deviation.
    pub stddev_ms: f64,
}

impl LatencySummary {
    /// Summarises a µs histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            min_ms: ms(h.min()),
            avg_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            stddev_ms: h.stdev() / 1000.0,
        }
    }
}

/// Histograms travel as `[[value, count], ...]` of their recorded buckets:
/// lossless at the histogram's precision and plain JSON.
pub mod hist_serde {
    use hdrhistogram::Histogram;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes the recorded buckets.
    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u64, u64)> = h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        serde::Serialize::serialize(&pairs, s)
    }

    /// Rebuilds a histogram from its buckets.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let pairs: Vec<(u64, u64)> = Vec::deserialize(d)?;
        let mut h = super::new_histogram();
        for (v, n) in pairs {
            h.record_n(v, n).map_err(serde::de::Error::custom)?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_samples() {
        let mut a = Measurements::default();
        a.counts.msgs_ok = 3;
        a.counts.connect_failed(libc::ECONNREFUSED);
        a.latency.record(100).unwrap();
        a.counts.close_codes.insert(1013, 2);
        let mut b = Measurements::default();
        b.counts.close_codes.insert(1013, 1);
        b.counts.close_codes.insert(1011, 4);
        b.counts.ack_errors = 5;
        b.counts.msgs_ok = 4;
        b.counts.connect_failed(libc::ETIMEDOUT);
        b.counts.connect_failed(libc::EADDRNOTAVAIL);
        for v in [200, 300, 400] {
            b.latency.record(v).unwrap();
        }
        a.merge(&b);
        assert_eq!(a.counts.msgs_ok, 7);
        assert_eq!(a.counts.conn_failed(), 3);
        assert_eq!(
            (
                a.counts.fail_refused,
                a.counts.fail_timeout,
                a.counts.fail_other
            ),
            (1, 1, 1)
        );
        assert_eq!(a.latency.len(), 4);
        assert_eq!(a.latency.max(), 400);
        assert_eq!(a.counts.ack_errors, 5);
        assert_eq!(a.counts.close_codes_text(), "1011 x4, 1013 x3");
        a.counts.conn_dropped = 9;
        assert_eq!(a.counts.dropped_without_close(), 2);
        let json = serde_json::to_string(&a.counts).unwrap();
        let back: Counts = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back, a.counts,
            "close codes survive the child-to-parent JSON"
        );
    }

    #[test]
    fn histograms_survive_json_round_trip_and_merge_like_the_originals() {
        let mut m = Measurements::default();
        for v in 1..5000u64 {
            m.latency.record(v * 7).unwrap();
        }
        m.handshake.record(12_345).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let back: Measurements = serde_json::from_str(&json).unwrap();
        assert_eq!(back.latency.len(), m.latency.len());
        for q in [0.5, 0.9, 0.99, 0.999] {
            assert_eq!(
                back.latency.value_at_quantile(q),
                m.latency.value_at_quantile(q)
            );
        }
        assert_eq!(
            LatencySummary::of(&back.handshake),
            LatencySummary::of(&m.handshake)
        );
        // Merging a split set equals recording everything in one histogram.
        let (mut x, mut y, mut all) = (new_histogram(), new_histogram(), new_histogram());
        for v in 1..1000u64 {
            if v % 3 == 0 {
                x.record(v).unwrap()
            } else {
                y.record(v).unwrap()
            }
            all.record(v).unwrap();
        }
        x.add(&y).unwrap();
        assert_eq!(LatencySummary::of(&x), LatencySummary::of(&all));
    }

    fn target(
        channels: usize,
        subscribed: &[(usize, u64)],
        latencies: &[u64],
    ) -> TargetMeasurements {
        let mut t = TargetMeasurements::new(channels);
        for &(k, n) in subscribed {
            t.subscribed[k] = n;
            t.subs_ok += n;
        }
        for &v in latencies {
            t.latency.record(v).unwrap();
            t.deliveries += 1;
        }
        t
    }

    #[test]
    fn per_target_tallies_merge_by_index_and_survive_json() {
        // Two processes, each with two targets: what the parent merges.
        let a = Measurements {
            per_target: vec![
                target(2, &[(0, 3)], &[100, 200]),
                target(2, &[(1, 2)], &[500]),
            ],
            ..Measurements::default()
        };
        let mut b = Measurements {
            per_target: vec![target(2, &[(0, 1)], &[300]), target(2, &[], &[700, 900])],
            ..Measurements::default()
        };
        b.per_target[1].deliveries_dup = 2;
        let json = serde_json::to_string(&b).unwrap();
        let b: Measurements = serde_json::from_str(&json).unwrap();
        assert_eq!(b.per_target[1].latency.len(), 2, "histogram survives");
        let mut total = Measurements::default();
        total.merge(&a);
        total.merge(&b);
        assert_eq!(total.per_target.len(), 2);
        let (t0, t1) = (&total.per_target[0], &total.per_target[1]);
        assert_eq!((t0.deliveries, t1.deliveries), (3, 3));
        assert_eq!(
            (t0.subscribed.clone(), t1.subscribed.clone()),
            (vec![4, 0], vec![0, 2])
        );
        assert_eq!((t0.latency.len(), t1.latency.max()), (3, 900));
        assert_eq!(t1.deliveries_dup, 2);
        // Publications per channel times each target's subscribers.
        total.published = vec![10, 7];
        total.subscribed = vec![4, 2];
        let e = total.target_expectations();
        assert_eq!((e[0].expected, e[1].expected), (40, 14));
        assert_eq!(
            e.iter().map(|e| e.expected).sum::<u64>(),
            total.expected_deliveries(),
            "targets add up to the whole"
        );
        // An old child's JSON without the new fields still reads.
        let old = r#"{"counts":{"conn_attempted":0,"conn_established":0,"fail_refused":0,"fail_timeout":0,"fail_reset":0,"fail_bad_status":0,"fail_bad_accept":0,"fail_other":0,"conn_dropped":0,"conn_up_at_end":0,"msgs_sent":0,"msgs_ok":0,"msgs_timed_out":0,"msgs_lost":0,"msgs_late":0,"bytes_sent":0,"bytes_received":0,"pings_sent":0,"pongs_received":0,"protocol_errors":0,"replies_all":0,"subs_ok":0,"subs_failed":0,"pubs_ok":0,"pubs_failed":0,"deliveries":0,"deliveries_dup":0,"deliveries_ooo":0,"unsubscribed":0,"sessions_started":0,"sessions_completed":0,"sessions_failed":0,"vu_msgs_sent":0,"vu_msgs_received":0},"handshake":[],"latency":[],"raw_latency":[],"iteration":[]}"#;
        let m: Measurements = serde_json::from_str(old).unwrap();
        assert!(m.per_target.is_empty() && m.partial.is_empty() && m.reconnect.is_empty());
    }

    #[test]
    fn churned_subscriptions_expect_what_was_sent_while_they_were_there() {
        // Channel 0: measured publications at t = 100, 200, ..., 1000 (seq 0..9).
        let mut m = Measurements {
            per_target: vec![TargetMeasurements::new(1), TargetMeasurements::new(1)],
            pub_log: (0..10).map(|i| (0, 100 * (i + 1), i)).collect(),
            published: vec![10],
            ..Measurements::default()
        };
        // One subscriber there all along, on target 0.
        m.subscribed = vec![1];
        m.per_target[0].subscribed = vec![1];
        // Target 1: a subscriber from the ramp, closed at t = 550 having
        // received up to seq 3 (t = 400): 500 was in flight (after
        // in_flight_from = 450), so missed during churn, not missing.
        m.partial.push(PartialSub {
            channel: 0,
            target: 1,
            from: 0,
            until: 550,
            in_flight_from: 450,
            delivered: 4,
            last_seq: Some(3),
            dropped: false,
        });
        // Its replacement, subscribed at t = 650, there to the end: 700..1000.
        m.partial.push(PartialSub {
            channel: 0,
            target: 1,
            from: 650,
            until: u64::MAX,
            in_flight_from: u64::MAX,
            delivered: 4,
            last_seq: Some(9),
            dropped: false,
        });
        // Target 0: closed at t = 900 with nothing received since seq 2:
        // 300..700 are older than in_flight_from = 750, so lost; 800 and
        // 900 were in flight.
        m.partial.push(PartialSub {
            channel: 0,
            target: 0,
            from: 0,
            until: 900,
            in_flight_from: 750,
            delivered: 3,
            last_seq: Some(2),
            dropped: false,
        });
        let p = m.partial_expectations();
        assert_eq!(
            p.iter()
                .map(|(_, e)| (e.expected, e.churn_missed))
                .collect::<Vec<_>>(),
            vec![(4, 1), (4, 0), (7, 2)]
        );
        assert_eq!(m.churn_missed(), 3);
        assert_eq!(m.expected_deliveries(), 10 + 4 + 4 + 7);
        let t = m.target_expectations();
        assert_eq!(
            t[0],
            Expectation {
                expected: 17,
                churn_missed: 2,
                reconnect_missed: 0
            }
        );
        assert_eq!(
            t[1],
            Expectation {
                expected: 8,
                churn_missed: 1,
                reconnect_missed: 0
            }
        );
        // A closed subscription that never received anything: the recent
        // publications were in flight, the old ones lost.
        m.partial = vec![PartialSub {
            channel: 0,
            target: 0,
            from: 0,
            until: 1000,
            in_flight_from: 850,
            delivered: 0,
            last_seq: None,
            dropped: false,
        }];
        assert_eq!(
            m.partial_expectations()[0].1,
            Expectation {
                expected: 8,
                churn_missed: 2,
                reconnect_missed: 0
            }
        );
    }

    #[test]
    fn dropped_subscribers_miss_what_was_sent_while_they_were_away() {
        // Channel 0: measured publications at t = 100, 200, ..., 1000 (seq 0..9).
        let mut m = Measurements {
            per_target: vec![TargetMeasurements::new(1), TargetMeasurements::new(1)],
            pub_log: (0..10).map(|i| (0, 100 * (i + 1), i)).collect(),
            published: vec![10],
            ..Measurements::default()
        };
        // A subscriber of target 1 from the ramp, dropped at t = 450 having
        // received up to seq 2 (t = 300): 400 was in flight.
        m.partial.push(PartialSub {
            channel: 0,
            target: 1,
            from: 0,
            until: 450,
            in_flight_from: 350,
            delivered: 3,
            last_seq: Some(2),
            dropped: true,
        });
        // Back on target 0 (subscribe reply at t = 720): 500..700 were sent
        // while it was away, 800..1000 are expected of it.
        m.gaps.push(Gap {
            channel: 0,
            target: 1,
            from: 450,
            until: 720,
        });
        m.partial.push(PartialSub {
            channel: 0,
            target: 0,
            from: 720,
            until: u64::MAX,
            in_flight_from: u64::MAX,
            delivered: 3,
            last_seq: Some(9),
            dropped: false,
        });
        // Another, dropped at t = 850 and not back by the end: 900, 1000.
        m.gaps.push(Gap {
            channel: 0,
            target: 1,
            from: 850,
            until: u64::MAX,
        });
        assert_eq!(m.reconnect_missed(), 1 + 3 + 2);
        assert_eq!(m.churn_missed(), 0);
        assert_eq!(m.expected_deliveries(), 3 + 3);
        let t = m.target_expectations();
        assert_eq!((t[0].expected, t[0].reconnect_missed), (3, 0));
        assert_eq!((t[1].expected, t[1].reconnect_missed), (3, 6));
        // Recovery time: only when every dropped subscriber is back.
        m.counts.failover_dropped = 2;
        m.counts.failover_recovered = 1;
        (m.first_drop, m.last_recovered) = (1_000_000, 3_500_000);
        assert_eq!(m.recovered_in_secs(), None);
        let mut other = Measurements {
            first_drop: 900_000,
            ..Measurements::default()
        };
        other.counts.failover_recovered = 1;
        m.merge(&other);
        assert_eq!(m.recovered_in_secs(), Some(2.6));
        assert_eq!(m.gaps.len(), 2);
    }

    #[test]
    fn summary_of_known_values() {
        let mut h = new_histogram();
        for v in 1..=100u64 {
            h.record(v * 1000).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
    }
}
