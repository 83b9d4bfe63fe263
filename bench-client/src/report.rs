//! Turning measurements into what people read: the terminal summary in the
//! shape the seed reports use, threshold verdicts, and the files under
//! `--out`: `summary.json`, `results.csv`, `report.md`, and SVG plots when
//! the matrix varies a key.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::runner::{CellOutcome, Cost};
use crate::scenario::{Cell, Matrix, Mode, Scenario};
use crate::stats::{Counts, LatencySummary};

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
    /// channel's subscribers).
    pub expected_deliveries: u64,
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
        let _ = writeln!(
            s,
            "subscriptions {} (refused {})  publications accepted {} (refused {})  unsubscribed by the server {}",
            c.subs_ok, c.subs_failed, c.pubs_ok, c.pubs_failed, c.unsubscribed
        );
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
errors,skipped,close_codes";

fn csv_row(r: &CellReport) -> String {
    let c = &r.counts;
    let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.1},{:.1},{:.6},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{},{},{},{},{},{},{},\"{}\"",
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
        c.close_codes_text()
    )
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
        assert!(row.ends_with(",30,12,\"1013 x5\""), "{row}");
        assert_eq!(
            CSV_HEADER.split(',').count(),
            row.split(',').count(),
            "a column per field"
        );
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
