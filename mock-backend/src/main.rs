//! `mock-backend`: the backend end of the gateway's upstream protocol for
//! tests and load runs (seed 000's mock backend). It answers the webhooks
//! (`/ws/connect`, `/ws/message`, `/ws/disconnect`) and the Centrifugo
//! proxies as `/work/notes/upstream-protocol.md` describes, with a chosen
//! latency distribution and failure rate, optionally pushes through the
//! gateway's API, and counts everything (`GET /stats`, a periodic line,
//! a last line at exit).
//!
//! Why a separate binary on the engine: the gateway's load tests need a
//! backend that is never the bottleneck and behaves deterministically
//! (seeded draws), and the same io_uring workers as the gateway give both.
//!
//! This file wires the parts: flags, signals, workers, push thread, stats.

mod app;
mod cli;
mod framer;
mod latency;
mod probe;
mod push;
mod server;
mod stats;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::app::{Registry, Shared};
use crate::stats::Stats;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    engine::logger::init(log::LevelFilter::Info);
    let plan = match cli.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, shutdown.clone()) {
            eprintln!("error: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let workers = plan.server.workers;
    // One counter set per worker, then the push thread's.
    let stats = Arc::new(Stats::new(workers + 1));
    let registry = plan.push.as_ref().map(|_| Arc::new(Registry::default()));
    let shared = Arc::new(Shared {
        settings: plan.settings.clone(),
        stats: stats.clone(),
        users: AtomicU64::new(0),
        registry: registry.clone(),
    });
    let running = match server::start(&plan.server, shared, shutdown.clone()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot serve on {}: {e}", plan.server.listen);
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts wait for this line (it carries the resolved port).
    println!("listening on {}", running.local_addr);
    let _ = std::io::stdout().flush();
    log::info!(
        "{workers} worker(s), latency {}, failure rate {}",
        plan.settings.latency,
        plan.settings.failure_rate
    );
    let pusher = match (plan.push, registry) {
        (Some(opts), Some(registry)) => {
            log::info!(
                "pushing {}/s to http://{}{}/api/connections/{{id}}",
                opts.rate,
                opts.api.authority,
                opts.api.prefix
            );
            match push::spawn(opts, registry, stats.clone(), workers, shutdown.clone()) {
                Ok(h) => Some(h),
                Err(e) => {
                    eprintln!("error: cannot start the push thread: {e}");
                    shutdown.store(true, Ordering::Relaxed);
                    None
                }
            }
        }
        _ => None,
    };
    let interval = Duration::from_millis(plan.stats_interval_ms);
    let mut last = (stats.snapshot(), Instant::now());
    while !shutdown.load(Ordering::Relaxed) && !running.finished() {
        std::thread::sleep(Duration::from_millis(20));
        if !interval.is_zero() && last.1.elapsed() >= interval {
            let snap = stats.snapshot();
            let secs = last.1.elapsed().as_secs_f64();
            println!("{}", snap.to_line(Some((&last.0, secs))));
            let _ = std::io::stdout().flush();
            last = (snap, Instant::now());
        }
    }
    shutdown.store(true, Ordering::Relaxed);
    let result = running.join();
    if let Some(p) = pusher {
        let _ = p.join();
    }
    println!("{}", stats.snapshot().to_line(None));
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
