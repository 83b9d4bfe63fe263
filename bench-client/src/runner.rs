//! Runs one matrix cell: in this process, or — past the per-process
//! connection cap — spread over child processes whose per-second ticks and
//! final histograms are merged here. Prints the live line and samples CPU
//! and memory on both sides.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use engine::spawn::{spawn, SpawnOptions, WorkerSetup};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::{BenchHandler, Phase, Plan, Progress};
use crate::cost::{self, Sample, ServerProbe};
use crate::scenario::{Mode, Scenario};
use crate::stats::{hist_serde, new_histogram, Counts, Measurements};

/// Why a cell could not run at all (as opposed to running and measuring failures).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A worker could not set up its ring.
    #[error("client worker failed to start: {0}")]
    Setup(std::io::Error),
    /// A scenario value the plan could not use.
    #[error("{0}")]
    Plan(String),
    /// A child process failed.
    #[error("child process {index}: {problem}")]
    Child {
        /// Which child.
        index: usize,
        /// What went wrong.
        problem: String,
    },
}

/// One process's state, once a second: what a child sends its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    /// The least advanced worker's phase.
    pub phase: Phase,
    /// Connections open.
    pub conns_up: u64,
    /// Counters so far.
    pub counts: Counts,
    /// This process's CPU seconds so far.
    pub cpu_secs: f64,
    /// Latencies since the previous tick.
    #[serde(with = "hist_serde")]
    pub interval: Histogram<u64>,
}

/// A line a child writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChildMessage {
    /// Once a second.
    Tick(Box<Tick>),
    /// At the end.
    Final(Box<Measurements>),
}

/// What a child reads on stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildTask {
    /// The cell.
    pub scenario: Scenario,
    /// Connections for this child.
    pub connections: u64,
    /// Its index.
    pub process: u64,
    /// How many processes share the cell.
    pub processes: u64,
}

/// CPU per message and memory, both sides, over the measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cost {
    /// Client CPU µs per reply (all client processes).
    pub client_cpu_us_per_msg: Option<f64>,
    /// Server CPU µs per reply.
    pub server_cpu_us_per_msg: Option<f64>,
    /// Client CPU seconds during the window.
    pub client_cpu_secs: Option<f64>,
    /// Server CPU seconds during the window.
    pub server_cpu_secs: Option<f64>,
    /// Wall-clock seconds those CPU figures cover.
    pub span_secs: Option<f64>,
    /// Server RSS before any connection, bytes.
    pub server_rss_before: Option<u64>,
    /// Server RSS during the window (connections up), bytes.
    pub server_rss_window: Option<u64>,
    /// (window − before) / connections up, bytes (connect-only mode: with
    /// traffic the figure would mostly be receive buffers being touched).
    pub server_rss_per_conn: Option<f64>,
}

impl Cost {
    /// Share of one core the client processes used, summed.
    pub fn client_utilisation(&self) -> Option<f64> {
        Some(self.client_cpu_secs? / self.span_secs.filter(|s| *s > 0.0)?)
    }

    /// Share of one core the server used.
    pub fn server_utilisation(&self) -> Option<f64> {
        Some(self.server_cpu_secs? / self.span_secs.filter(|s| *s > 0.0)?)
    }
}

/// The outcome of one cell.
#[derive(Debug, Clone)]
pub struct CellOutcome {
    /// Everything measured, merged.
    pub measured: Measurements,
    /// Processes used.
    pub processes: u64,
    /// Wall-clock seconds of the whole cell.
    pub elapsed_secs: f64,
    /// Resource cost.
    pub cost: Cost,
}

/// Runs this process's share of a cell. `on_tick` gets a tick every second.
pub fn run_process(
    s: &Scenario,
    connections: u64,
    process: u64,
    processes: u64,
    abort: Arc<AtomicBool>,
    on_tick: &mut dyn FnMut(Tick),
) -> Result<Measurements, RunError> {
    let plan =
        Arc::new(Plan::new(s, connections, process, processes, abort).map_err(RunError::Plan)?);
    let workers = s.client.workers.clamp(1, connections.max(1));
    let engine = s.client.engine();
    let progress: Vec<Arc<Mutex<Progress>>> = (0..workers)
        .map(|_| Arc::new(Mutex::new(Progress::default())))
        .collect();
    let options = SpawnOptions {
        name: "client".into(),
        workers: workers as usize,
        cpus: s.client.cpus.iter().map(|&c| Some(c)).collect(),
        engine,
    };
    let (setup_plan, setup_progress) = (plan.clone(), progress.clone());
    let threads = spawn(
        options,
        &plan.abort,
        move |w| {
            let shutdown = Arc::new(AtomicBool::new(false));
            let handler = BenchHandler::new(
                setup_plan.clone(),
                w as u64,
                workers,
                setup_progress[w].clone(),
                shutdown.clone(),
            );
            Ok(WorkerSetup {
                handler,
                listeners: Vec::new(),
                shutdown,
                bell: None,
            })
        },
        |_, worker| worker.handler().measured().clone(),
    )
    .map_err(RunError::Setup)?;
    let tick = |final_phase: Option<Phase>| {
        let mut t = Tick {
            phase: final_phase.unwrap_or(Phase::Done),
            conns_up: 0,
            counts: Counts::default(),
            cpu_secs: cost::sample_self().cpu_secs,
            interval: new_histogram(),
        };
        for p in &progress {
            let mut p = p.lock().expect("progress lock");
            if final_phase.is_none() {
                t.phase = t.phase.min(p.phase);
            }
            t.conns_up += p.conns_up;
            t.counts.merge(&p.counts);
            t.interval.add(&p.interval).expect("same bounds");
            p.interval.reset();
        }
        t
    };
    let mut next = Instant::now() + Duration::from_secs(1);
    while !threads.all_finished() {
        std::thread::sleep(Duration::from_millis(20));
        if Instant::now() >= next {
            next += Duration::from_secs(1);
            on_tick(tick(None));
        }
    }
    let mut total = Measurements::default();
    for result in threads.join() {
        total.merge(&result.map_err(RunError::Setup)?);
    }
    let mut last = tick(Some(Phase::Done));
    last.counts = total.counts.clone();
    on_tick(last);
    Ok(total)
}

/// Entry point of a child process: reads a [`ChildTask`] on stdin, writes
/// [`ChildMessage`] lines on stdout.
pub fn child_main(abort: Arc<AtomicBool>) -> Result<(), RunError> {
    let task: ChildTask = serde_json::from_reader(std::io::stdin().lock())
        .map_err(|e| RunError::Plan(format!("bad child task on stdin: {e}")))?;
    let out = std::io::stdout();
    let emit = |m: &ChildMessage| {
        let mut lock = out.lock();
        let _ = serde_json::to_writer(&mut lock, m);
        let _ = lock.write_all(b"\n");
        let _ = lock.flush();
    };
    let total = run_process(
        &task.scenario,
        task.connections,
        task.process,
        task.processes,
        abort,
        &mut |t| emit(&ChildMessage::Tick(Box::new(t))),
    )?;
    emit(&ChildMessage::Final(Box::new(total)));
    Ok(())
}

/// Merges per-process ticks into the live line and the cost samples.
struct Aggregator {
    latest: Vec<Option<Tick>>,
    interval: Histogram<u64>,
    started: Instant,
    last_replies: u64,
    last_at: Instant,
    probe: Option<ServerProbe>,
    /// (all processes in Window, replies_all, client cpu, server sample)
    samples: Vec<(bool, u64, f64, Option<Sample>, u64, Instant)>,
    quiet: bool,
    total_conns: u64,
}

impl Aggregator {
    fn update(&mut self, process: usize, tick: Tick) {
        self.interval.add(&tick.interval).expect("same bounds");
        self.latest[process] = Some(tick);
    }

    fn emit(&mut self) {
        let now = Instant::now();
        let mut counts = Counts::default();
        let (mut up, mut cpu) = (0, 0.0);
        let mut phase = Phase::Done;
        for t in &self.latest {
            match t {
                Some(t) => {
                    counts.merge(&t.counts);
                    up += t.conns_up;
                    cpu += t.cpu_secs;
                    phase = phase.min(t.phase);
                }
                None => phase = Phase::Ramp,
            }
        }
        let server = self.probe.as_ref().and_then(|p| p.sample().ok());
        self.samples.push((
            phase == Phase::Window,
            counts.replies_all,
            cpu,
            server,
            up,
            now,
        ));
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        let rate = (counts.replies_all - self.last_replies.min(counts.replies_all)) as f64 / dt;
        self.last_replies = counts.replies_all;
        self.last_at = now;
        // The final tick arrives right after the previous one: its rate would
        // mean nothing, and the summary follows anyway.
        if !self.quiet && phase != Phase::Done {
            let q = |p: f64| self.interval.value_at_quantile(p) as f64 / 1000.0;
            let errors = counts.conn_failed()
                + counts.conn_dropped
                + counts.msgs_timed_out
                + counts.msgs_lost
                + counts.ack_errors
                + counts.protocol_errors;
            eprintln!(
                "[{:6.1}s] {:<8} conns {}/{} up  msgs/s {:>9.0}  p50 {:>8.3}ms  p99 {:>8.3}ms  errors {}",
                now.duration_since(self.started).as_secs_f64(),
                format!("{phase:?}").to_lowercase(),
                up,
                self.total_conns,
                rate,
                q(0.5),
                q(0.99),
                errors
            );
        }
        self.interval.reset();
    }

    /// CPU per message and memory over the span where every process was in its window.
    fn cost(&self, before: Option<Sample>, mode: Mode) -> Cost {
        let window: Vec<_> = self.samples.iter().filter(|s| s.0).collect();
        let mut c = Cost {
            server_rss_before: before.map(|b| b.rss_bytes),
            ..Cost::default()
        };
        let (Some(first), Some(last)) = (window.first(), window.last()) else {
            return c;
        };
        let msgs = last.1.saturating_sub(first.1);
        let client_cpu = last.2 - first.2;
        if window.len() >= 2 {
            c.span_secs = Some(last.5.duration_since(first.5).as_secs_f64());
            c.client_cpu_secs = Some(client_cpu);
            if msgs > 0 && mode != Mode::ConnectOnly {
                c.client_cpu_us_per_msg = Some(client_cpu * 1e6 / msgs as f64);
            }
        }
        if let (Some(a), Some(b)) = (first.3, last.3) {
            if window.len() >= 2 {
                c.server_cpu_secs = Some(b.cpu_secs - a.cpu_secs);
                if msgs > 0 && mode != Mode::ConnectOnly {
                    c.server_cpu_us_per_msg = Some((b.cpu_secs - a.cpu_secs) * 1e6 / msgs as f64);
                }
            }
            c.server_rss_window = Some(b.rss_bytes);
            if let (Some(before), true) = (before, last.4 > 0 && mode == Mode::ConnectOnly) {
                c.server_rss_per_conn =
                    Some((b.rss_bytes as f64 - before.rss_bytes as f64) / last.4 as f64);
            }
        }
        c
    }
}

/// Runs one cell to completion.
pub fn run_cell(
    s: &Scenario,
    abort: Arc<AtomicBool>,
    quiet: bool,
) -> Result<CellOutcome, RunError> {
    let total = s.load.connections;
    let processes = total.div_ceil(s.client.max_conns_per_process).max(1);
    let probe = match (&s.target.pid, &s.target.metrics_url) {
        (Some(pid), _) => Some(ServerProbe::Pid(*pid)),
        (None, Some(url)) => Some(ServerProbe::Metrics(url.clone())),
        (None, None) => None,
    };
    let before = probe.as_ref().and_then(|p| match p.sample() {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("cannot sample the server ({p:?}): {e}");
            None
        }
    });
    let started = Instant::now();
    let mut agg = Aggregator {
        latest: (0..processes).map(|_| None).collect(),
        interval: new_histogram(),
        started,
        last_replies: 0,
        last_at: started,
        probe,
        samples: Vec::new(),
        quiet,
        total_conns: total,
    };
    let share = |p: u64| total / processes + u64::from(p < total % processes);
    let measured = if processes == 1 {
        run_process(s, total, 0, 1, abort, &mut |t| {
            agg.update(0, t);
            agg.emit();
        })?
    } else {
        run_children(s, processes, &share, abort, &mut agg)?
    };
    Ok(CellOutcome {
        measured,
        processes,
        elapsed_secs: started.elapsed().as_secs_f64(),
        cost: agg.cost(before, s.load.mode),
    })
}

fn run_children(
    s: &Scenario,
    processes: u64,
    share: &dyn Fn(u64) -> u64,
    abort: Arc<AtomicBool>,
    agg: &mut Aggregator,
) -> Result<Measurements, RunError> {
    let exe = std::env::current_exe()
        .map_err(|e| RunError::Plan(format!("cannot find own executable: {e}")))?;
    let (tx, rx) = mpsc::channel::<(usize, Result<ChildMessage, String>)>();
    let mut children = Vec::new();
    for p in 0..processes {
        let index = p as usize;
        let mut child = Command::new(&exe)
            .arg("__child")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| RunError::Child {
                index,
                problem: format!("spawn: {e}"),
            })?;
        let task = ChildTask {
            scenario: s.clone(),
            connections: share(p),
            process: p,
            processes,
        };
        let mut stdin = child.stdin.take().expect("piped stdin");
        serde_json::to_writer(&mut stdin, &task).map_err(|e| RunError::Child {
            index,
            problem: e.to_string(),
        })?;
        drop(stdin);
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let msg = line
                    .map_err(|e| e.to_string())
                    .and_then(|l| serde_json::from_str(&l).map_err(|e| e.to_string()));
                if tx.send((index, msg)).is_err() {
                    break;
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    let mut finals: Vec<Option<Measurements>> = (0..processes).map(|_| None).collect();
    let mut next = Instant::now() + Duration::from_secs(1);
    let mut forwarded = false;
    loop {
        if abort.load(Ordering::Relaxed) && !forwarded {
            forwarded = true;
            for c in &children {
                // SAFETY: plain kill(2) on a child we spawned and have not reaped.
                unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            }
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((i, Ok(ChildMessage::Tick(t)))) => agg.update(i, *t),
            Ok((i, Ok(ChildMessage::Final(m)))) => finals[i] = Some(*m),
            Ok((index, Err(problem))) => return Err(RunError::Child { index, problem }),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next {
            next += Duration::from_secs(1);
            agg.emit();
        }
    }
    agg.emit();
    let mut total = Measurements::default();
    for (index, mut child) in children.into_iter().enumerate() {
        let status = child.wait().map_err(|e| RunError::Child {
            index,
            problem: e.to_string(),
        })?;
        match finals[index].take() {
            Some(m) if status.success() => total.merge(&m),
            _ => {
                return Err(RunError::Child {
                    index,
                    problem: format!("exited with {status} before reporting"),
                })
            }
        }
    }
    Ok(total)
}
