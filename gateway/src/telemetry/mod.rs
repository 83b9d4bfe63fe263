//! Prometheus metrics, served by the gateway itself at `GET /metrics` on the
//! admin listener (see `session.rs`), with no extra thread or runtime.
//!
//! How the numbers get there:
//!
//! * Each worker keeps its counts as plain integers ([`Counters`], the
//!   engine's [`EngineStats`](engine::EngineStats)) and, every
//!   `admin.publish_ms` from its ring's tick, copies them into `metrics`
//!   facade handles with `Counter::absolute` / `Gauge::set`
//!   ([`WorkerMetrics::publish`]). Nothing on the per-message path touches an
//!   atomic; a publish is ~100 uncontended stores per second per worker.
//! * The handles belong to a [`PrometheusRecorder`] (from
//!   `metrics-exporter-prometheus` without its tokio/hyper listener), which
//!   renders the text format. It is used as a *local* recorder
//!   (`metrics::with_local_recorder`) rather than installed globally, so
//!   gateways started in one process (tests) stay independent.
//! * The handshake duration histogram goes through the facade (one sample
//!   per handshake is cheap). The per-message latency histogram does not:
//!   the exporter stores every histogram sample with a timestamp on a shared
//!   list, so it is kept as per-worker bucket counts ([`LocalHistogram`]),
//!   copied out under a mutex once per publish and rendered here.
//! * `process_*` metrics are read from `/proc/self` at render time.
//!
//! Naming: `gateway_` prefix, base units (seconds, bytes), `_total` on
//! counters, histograms rather than summaries, and only bounded labels
//! (`worker`, close `reason`, HTTP `status`, frame `opcode`, close `code`).

pub mod broker;
pub mod families;
pub mod histogram;
pub mod latency;
pub mod process;
pub mod pubsub;
pub mod upstream;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::conn::WorkerState;
use crate::counters::{
    close_code_label, status_label, CloseReason, Counters, CLOSE_CODES, STATUSES,
};
use engine::Io;
use families::{self as f, Family, Kind};
use histogram::LocalHistogram;
use latency::SendTracker;
use process::ProcessStats;
use wsproto::codec::FrameClass;

/// Upper bounds of the handshake duration histogram's buckets, seconds.
pub const HANDSHAKE_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Upper bounds of the message latency histogram's buckets, microseconds.
pub const MESSAGE_LATENCY_BUCKETS_US: [u64; 15] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000,
];
/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Shared by all workers: the recorder and what the workers copy out.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Each worker's latency histogram as of its last publish.
    latency: Vec<Mutex<LocalHistogram>>,
    /// Backend names, and each worker's backend latency histograms (one
    /// per backend) as of its last publish.
    backends: Vec<String>,
    upstream_latency: Vec<Mutex<Vec<LocalHistogram>>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("workers", &self.latency.len())
            .finish()
    }
}

impl Telemetry {
    /// A recorder for `workers` workers, with the process-wide series
    /// (`gateway_build_info`, `gateway_connections_limit`) set.
    pub fn new(workers: usize, max_connections: usize, backends: Vec<String>) -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(f::HANDSHAKE_DURATION.name.into()),
                &HANDSHAKE_BUCKETS,
            )
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            // The message and backend latency histograms are rendered by
            // `render`, not registered; everything else is described here.
            for family in f::ALL.iter().filter(|f| !f::LOCAL_HISTOGRAMS.contains(f)) {
                let (name, help) = (family.name, family.help);
                match family.kind {
                    Kind::Counter => metrics::describe_counter!(name, help),
                    Kind::Gauge => metrics::describe_gauge!(name, help),
                    Kind::Histogram => metrics::describe_histogram!(name, help),
                }
            }
            let profile = if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            };
            metrics::gauge!(
                f::BUILD_INFO.name,
                "version" => env!("CARGO_PKG_VERSION"),
                "profile" => profile
            )
            .set(1.0);
            metrics::gauge!(f::CONNECTIONS_LIMIT.name).set(max_connections as f64);
        });
        Self {
            recorder,
            handle,
            latency: (0..workers)
                .map(|_| Mutex::new(LocalHistogram::new(&MESSAGE_LATENCY_BUCKETS_US)))
                .collect(),
            upstream_latency: (0..workers)
                .map(|_| {
                    let one = LocalHistogram::new(&crate::upstream::LATENCY_BUCKETS_US);
                    Mutex::new(vec![one; backends.len()])
                })
                .collect(),
            backends,
        }
    }

    /// The exporter's periodic housekeeping (drains histogram samples into
    /// their buckets, commits descriptions); a worker runs it on its ring
    /// timer.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The whole exposition: the recorder's series, the per-worker message
    /// latency histograms and the process metrics.
    pub fn render(&self) -> String {
        let mut out = self.handle.render();
        let family = f::MESSAGE_LATENCY;
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} histogram", family.name);
        for (worker, h) in self.latency.iter().enumerate() {
            let h = h.lock().unwrap_or_else(PoisonError::into_inner);
            h.write_series(
                &mut out,
                f::MESSAGE_LATENCY.name,
                &format!("worker=\"{worker}\""),
            );
        }
        if !self.backends.is_empty() {
            let family = f::UPSTREAM_DURATION;
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} histogram", family.name);
            for (worker, hs) in self.upstream_latency.iter().enumerate() {
                let hs = hs.lock().unwrap_or_else(PoisonError::into_inner);
                for (h, backend) in hs.iter().zip(&self.backends) {
                    let labels = format!("worker=\"{worker}\",backend=\"{backend}\"");
                    h.write_series(&mut out, family.name, &labels);
                }
            }
        }
        out.push('\n');
        ProcessStats::read().write(&mut out);
        out
    }
}

/// One worker's metric handles and hot-path accounting state.
pub struct WorkerMetrics {
    telemetry: Arc<Telemetry>,
    worker: usize,
    /// Replies in flight, for the latency histogram.
    pub tracker: SendTracker,
    /// Message latency samples of this worker (published by copy).
    pub latency: LocalHistogram,
    /// Accept-to-upgrade time, one sample per handshake.
    pub handshake: Histogram,
    /// When the next publish is due, in engine milliseconds.
    pub next_publish_ms: u64,
    accepted: Counter,
    closed: [Counter; 5],
    upgrades: Counter,
    health: Counter,
    /// (index into [`STATUSES`], counter) for every rejection status.
    rejections: Vec<(usize, Counter)>,
    messages_in: Counter,
    messages_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    frames_in: [Counter; 6],
    frames_out: [Counter; 6],
    close_sent: [Counter; CLOSE_CODES.len()],
    close_received: [Counter; CLOSE_CODES.len()],
    abnormal: Counter,
    active: Gauge,
    accept_errors: Counter,
    recv_enobufs: Counter,
    recv_rearms: Counter,
    recv_errors: Counter,
    send_errors: Counter,
    stale_completions: Counter,
    cq_overflow: Counter,
    cq_overflow_iterations: Counter,
    completions: Counter,
    loops: Counter,
    sq_backlog: Gauge,
    sq_backlog_peak: Gauge,
    send_queue_bytes: Gauge,
    timer_entries: Gauge,
    slots: Gauge,
    pubsub: pubsub::PubSubMetrics,
    upstream: upstream::UpstreamMetrics,
    /// Worker 0 in a cluster.
    broker: Option<broker::BrokerMetrics>,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMetrics")
            .field("worker", &self.worker)
            .field("tracker", &self.tracker)
            .finish()
    }
}

impl WorkerMetrics {
    /// Registers worker `worker`'s series (all of them, zero-valued, so
    /// dashboards see 0 rather than no data).
    pub fn new(telemetry: Arc<Telemetry>, worker: usize, latency_sample_every: u32) -> Self {
        let w = worker.to_string();
        let (counter, gauge) = (
            |f: &Family| metrics::counter!(f.name, "worker" => w.clone()),
            |f: &Family| metrics::gauge!(f.name, "worker" => w.clone()),
        );
        let shared = telemetry.clone();
        metrics::with_local_recorder(&shared.recorder, || WorkerMetrics {
            worker,
            tracker: SendTracker::sampling(latency_sample_every),
            latency: LocalHistogram::new(&MESSAGE_LATENCY_BUCKETS_US),
            handshake: metrics::histogram!(f::HANDSHAKE_DURATION.name, "worker" => w.clone()),
            next_publish_ms: 0,
            accepted: counter(&f::CONNECTIONS_ACCEPTED_TOTAL),
            closed: std::array::from_fn(|i| {
                metrics::counter!(f::CONNECTIONS_CLOSED_TOTAL.name,
                    "worker" => w.clone(), "reason" => CloseReason::ALL[i].label())
            }),
            upgrades: counter(&f::WEBSOCKET_UPGRADES_TOTAL),
            health: counter(&f::HEALTH_CHECKS_TOTAL),
            rejections: STATUSES
                .iter()
                .enumerate()
                .filter(|(_, &s)| s >= 400)
                .map(|(i, s)| {
                    let c = metrics::counter!(f::HANDSHAKE_REJECTIONS_TOTAL.name,
                        "worker" => w.clone(), "status" => status_label(*s));
                    (i, c)
                })
                .collect(),
            messages_in: counter(&f::MESSAGES_RECEIVED_TOTAL),
            messages_out: counter(&f::MESSAGES_SENT_TOTAL),
            bytes_in: counter(&f::MESSAGE_RECEIVED_BYTES_TOTAL),
            bytes_out: counter(&f::MESSAGE_SENT_BYTES_TOTAL),
            frames_in: std::array::from_fn(|i| {
                metrics::counter!(f::FRAMES_RECEIVED_TOTAL.name,
                    "worker" => w.clone(), "opcode" => FrameClass::ALL[i].label())
            }),
            frames_out: std::array::from_fn(|i| {
                metrics::counter!(f::FRAMES_SENT_TOTAL.name,
                    "worker" => w.clone(), "opcode" => FrameClass::ALL[i].label())
            }),
            close_sent: std::array::from_fn(|i| {
                metrics::counter!(f::CLOSE_FRAMES_SENT_TOTAL.name,
                    "worker" => w.clone(), "code" => close_code_label(i))
            }),
            close_received: std::array::from_fn(|i| {
                metrics::counter!(f::CLOSE_FRAMES_RECEIVED_TOTAL.name,
                    "worker" => w.clone(), "code" => close_code_label(i))
            }),
            abnormal: counter(&f::ABNORMAL_CLOSURES_TOTAL),
            active: gauge(&f::CONNECTIONS_ACTIVE),
            accept_errors: counter(&f::ENGINE_ACCEPT_ERRORS_TOTAL),
            recv_enobufs: counter(&f::ENGINE_RECV_ENOBUFS_TOTAL),
            recv_rearms: counter(&f::ENGINE_RECV_REARMS_TOTAL),
            recv_errors: counter(&f::ENGINE_RECV_ERRORS_TOTAL),
            send_errors: counter(&f::ENGINE_SEND_ERRORS_TOTAL),
            stale_completions: counter(&f::ENGINE_STALE_COMPLETIONS_TOTAL),
            cq_overflow: counter(&f::ENGINE_CQ_OVERFLOW_TOTAL),
            cq_overflow_iterations: counter(&f::ENGINE_CQ_OVERFLOW_ITERATIONS_TOTAL),
            completions: counter(&f::ENGINE_COMPLETIONS_TOTAL),
            loops: counter(&f::ENGINE_LOOP_ITERATIONS_TOTAL),
            sq_backlog: gauge(&f::ENGINE_SQ_BACKLOG_ENTRIES),
            sq_backlog_peak: gauge(&f::ENGINE_SQ_BACKLOG_PEAK_ENTRIES),
            send_queue_bytes: gauge(&f::ENGINE_SEND_QUEUE_BYTES),
            timer_entries: gauge(&f::ENGINE_TIMER_ENTRIES),
            slots: gauge(&f::ENGINE_SLOTS_IN_USE),
            pubsub: pubsub::PubSubMetrics::register(&w, worker),
            upstream: upstream::UpstreamMetrics::register(&w, &shared.backends),
            broker: (worker == 0).then(broker::BrokerMetrics::register),
            telemetry,
        })
    }

    /// The shared side (to render, or run upkeep).
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Copies the worker's counts into the recorder: one store per series.
    pub fn publish(&self, w: &WorkerState, io: &mut Io) {
        self.publish_counters(&w.counters);
        self.publish_engine(io);
        self.pubsub.publish(&w.hub, self.worker);
        if let Some(b) = &self.broker {
            b.publish(w.hub.settings.broker.as_deref());
        }
        let pools = self.upstream.publish(&w.upstream, &w.counters, io.now_ms());
        if let Some(slot) = self.telemetry.upstream_latency.get(self.worker) {
            let mut hs = slot.lock().unwrap_or_else(PoisonError::into_inner);
            for (h, p) in hs.iter_mut().zip(&pools) {
                h.copy_from(&p.latency);
            }
        }
    }

    /// The gateway half of [`WorkerMetrics::publish`], plus the latency
    /// histogram.
    pub fn publish_counters(&self, c: &Counters) {
        self.accepted.absolute(c.accepted);
        for (h, &v) in self.closed.iter().zip(&c.closed) {
            h.absolute(v);
        }
        self.upgrades.absolute(c.http_count(101));
        self.health.absolute(c.http_count(200));
        for (i, h) in &self.rejections {
            h.absolute(c.http_responses[*i]);
        }
        self.messages_in.absolute(c.messages_in);
        self.messages_out.absolute(c.messages_out);
        self.bytes_in.absolute(c.bytes_in);
        self.bytes_out.absolute(c.bytes_out);
        for (h, &v) in self.frames_in.iter().zip(&c.frames_in.0) {
            h.absolute(v);
        }
        for (h, &v) in self.frames_out.iter().zip(&c.frames_out.0) {
            h.absolute(v);
        }
        for (h, &v) in self.close_sent.iter().zip(&c.close_sent) {
            h.absolute(v);
        }
        for (h, &v) in self.close_received.iter().zip(&c.close_received) {
            h.absolute(v);
        }
        self.abnormal.absolute(c.abnormal_closures);
        self.active.set(c.open() as f64);
        if let Some(slot) = self.telemetry.latency.get(self.worker) {
            slot.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .copy_from(&self.latency);
        }
    }

    /// The engine-health half of [`WorkerMetrics::publish`].
    pub fn publish_engine(&self, io: &mut Io) {
        let s = *io.stats();
        self.accept_errors.absolute(s.accept_errors());
        self.recv_enobufs.absolute(s.recv_enobufs());
        self.recv_rearms.absolute(s.recv_rearmed());
        self.recv_errors.absolute(s.recv_errors());
        self.send_errors.absolute(s.send_errors());
        self.stale_completions.absolute(s.stale_completions());
        self.cq_overflow.absolute(u64::from(io.cq_overflow()));
        self.cq_overflow_iterations.absolute(s.cq_overflow_seen());
        self.completions.absolute(s.completions());
        self.loops.absolute(s.loops());
        self.sq_backlog.set(io.sq_backlog() as f64);
        self.sq_backlog_peak.set(io.sq_backlog_peak() as f64);
        self.send_queue_bytes.set(io.send_queue_bytes() as f64);
        self.timer_entries.set(io.timer_entries() as f64);
        self.slots.set(io.live() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the one sample line that starts with `series ` (name
    /// plus rendered labels, label order as registered).
    fn value(text: &str, series: &str) -> f64 {
        let prefix = format!("{series} ");
        let mut hits = text.lines().filter_map(|l| l.strip_prefix(prefix.as_str()));
        let v = hits
            .next()
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(hits.next().is_none(), "{series} twice");
        v.parse().unwrap()
    }

    #[test]
    fn published_counters_render_per_worker() {
        let t = Arc::new(Telemetry::new(2, 500, Vec::new()));
        let mut w0 = WorkerMetrics::new(t.clone(), 0, 1);
        let w1 = WorkerMetrics::new(t.clone(), 1, 1);
        let mut c = Counters {
            accepted: 7,
            messages_in: 40,
            messages_out: 39,
            bytes_in: 4000,
            abnormal_closures: 1,
            ..Counters::default()
        };
        c.closed(CloseReason::SlowConsumer);
        c.closed(CloseReason::Normal);
        c.http(101);
        c.http(101);
        c.http(431);
        c.http(200);
        c.close_sent(1008);
        c.close_received(None);
        c.frames_in.add(FrameClass::Continuation);
        w0.latency.record_n(30, 3);
        w0.handshake.record(0.0003);
        w0.publish_counters(&c);
        w1.publish_counters(&Counters {
            accepted: 1,
            ..Counters::default()
        });
        // Publishing is idempotent: absolute values, not increments.
        w0.publish_counters(&c);
        let text = t.render();

        let w = "worker=\"0\"";
        for (series, want) in [
            (format!("gateway_connections_accepted_total{{{w}}}"), 7.0),
            (
                "gateway_connections_accepted_total{worker=\"1\"}".into(),
                1.0,
            ),
            (format!("gateway_connections_active{{{w}}}"), 5.0),
            ("gateway_connections_active{worker=\"1\"}".into(), 1.0),
            (
                format!("gateway_connections_closed_total{{{w},reason=\"slow_consumer\"}}"),
                1.0,
            ),
            (
                format!("gateway_connections_closed_total{{{w},reason=\"timeout\"}}"),
                0.0,
            ),
            (format!("gateway_websocket_upgrades_total{{{w}}}"), 2.0),
            (format!("gateway_health_checks_total{{{w}}}"), 1.0),
            (
                format!("gateway_handshake_rejections_total{{{w},status=\"431\"}}"),
                1.0,
            ),
            (
                format!("gateway_handshake_rejections_total{{{w},status=\"503\"}}"),
                0.0,
            ),
            (format!("gateway_messages_received_total{{{w}}}"), 40.0),
            (format!("gateway_messages_sent_total{{{w}}}"), 39.0),
            (
                format!("gateway_message_received_bytes_total{{{w}}}"),
                4000.0,
            ),
            (
                format!("gateway_frames_received_total{{{w},opcode=\"continuation\"}}"),
                1.0,
            ),
            (
                format!("gateway_close_frames_sent_total{{{w},code=\"1008\"}}"),
                1.0,
            ),
            (
                format!("gateway_close_frames_received_total{{{w},code=\"none\"}}"),
                1.0,
            ),
            (format!("gateway_abnormal_closures_total{{{w}}}"), 1.0),
            (
                format!("gateway_message_latency_seconds_bucket{{{w},le=\"0.000025\"}}"),
                0.0,
            ),
            (
                format!("gateway_message_latency_seconds_bucket{{{w},le=\"0.00005\"}}"),
                3.0,
            ),
            (format!("gateway_message_latency_seconds_count{{{w}}}"), 3.0),
            (
                format!("gateway_message_latency_seconds_sum{{{w}}}"),
                0.00009,
            ),
            (
                "gateway_message_latency_seconds_count{worker=\"1\"}".into(),
                0.0,
            ),
            (
                format!("gateway_handshake_duration_seconds_bucket{{{w},le=\"0.00025\"}}"),
                0.0,
            ),
            (
                format!("gateway_handshake_duration_seconds_bucket{{{w},le=\"0.0005\"}}"),
                1.0,
            ),
            (
                format!("gateway_handshake_duration_seconds_count{{{w}}}"),
                1.0,
            ),
            ("gateway_connections_limit".into(), 500.0),
        ] {
            assert_eq!(value(&text, &series), want, "{series}");
        }
        assert!(text.contains("# TYPE gateway_connections_closed_total counter\n"));
        assert!(text.contains("# TYPE gateway_message_latency_seconds histogram\n"));
        assert!(text.contains("# TYPE gateway_handshake_duration_seconds histogram\n"));
        assert!(text.contains("# HELP gateway_engine_sq_backlog_entries "));
        assert!(text.contains("\nprocess_open_fds "));
        assert!(text.contains(&format!(
            "gateway_build_info{{version=\"{}\",profile=",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn the_family_table_is_exactly_what_is_exported() {
        let t = Arc::new(Telemetry::new(1, 1, vec!["app".into()]));
        WorkerMetrics::new(t.clone(), 0, 1).publish_counters(&Counters::default());
        let text = t.render();
        let exported: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .filter(|name| name.starts_with("gateway_"))
            .collect();
        for family in f::ALL {
            assert!(
                exported.contains(&family.name),
                "{} not exported",
                family.name
            );
            assert!(
                text.contains(&format!("# HELP {} {}\n", family.name, family.help)),
                "{} lacks its HELP text",
                family.name
            );
        }
        for name in exported {
            assert!(
                f::ALL.iter().any(|f| f.name == name),
                "{name} is exported but not in the family table"
            );
        }
    }

    #[test]
    fn help_lines_cover_every_registered_family() {
        let t = Arc::new(Telemetry::new(1, 1, Vec::new()));
        WorkerMetrics::new(t.clone(), 0, 1).publish_counters(&Counters::default());
        let text = t.render();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let family = line.split(' ').nth(2).unwrap();
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family} has no HELP"
            );
        }
    }
}
