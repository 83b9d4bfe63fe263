//! Cost and wake-up latency of the cross-worker mailbox, MSG_RING vs eventfd,
//! measured in one paired run (the modes alternate round by round).
//!
//! ```text
//! cargo run --release -p engine --example mailbox_bench -- [ROUNDS] [SECONDS]
//! ```
//! Two workers pinned to CPUs 0 and 1 (the first two allowed CPUs):
//! * ping-pong: one message in flight; worker 0 posts, worker 1 answers
//!   from its wake-up, worker 0 posts the next from its. Half the round trip
//!   is the wake-up latency of an idle worker (it sleeps in `io_uring_enter`).
//! * stream: worker 0 posts bursts of 64 every 100 µs (640k msg/s offered);
//!   worker 1 drains. Reports each thread's CPU per message
//!   (`CLOCK_THREAD_CPUTIME_ID`), wake-ups per message and post → pop latency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::mailbox::{Bell, Mailbox, WakeMode};
use engine::spawn::{spawn, SpawnOptions, WorkerSetup};
use engine::{affinity, CloseCause, ConnId, Conns, EngineConfig, Handler, Io, Origin};
use hdrhistogram::Histogram;

#[derive(Clone, Copy, PartialEq)]
enum Load {
    PingPong,
    Stream,
}

/// (sequence, post time in ns since the shared epoch)
type Msg = (u64, u64);

struct Node {
    me: usize,
    load: Load,
    boxes: Arc<Vec<Mailbox<Msg>>>,
    epoch: Instant,
    until: Instant,
    sent: u64,
    received: u64,
    refused: u64,
    latency: Histogram<u64>,
    next_burst: Instant,
    cpu_start: Duration,
    shutdown: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Report>>>,
}

#[derive(Debug, Clone)]
struct Report {
    me: usize,
    sent: u64,
    received: u64,
    refused: u64,
    cpu: Duration,
    wakes: u64,
    latency: Histogram<u64>,
}

fn thread_cpu() -> Duration {
    // SAFETY: writes a timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Node {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn post(&mut self, io: &mut Io) {
        let msg = (self.sent, self.now_ns());
        match self.boxes[1 - self.me].post(io, msg) {
            Ok(()) => self.sent += 1,
            Err(_) => self.refused += 1,
        }
    }

    fn finish(&mut self, io: &Io) {
        if self.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let mut out = self.out.lock().unwrap();
        if out.iter().any(|r| r.me == self.me) {
            return;
        }
        out.push(Report {
            me: self.me,
            sent: self.sent,
            received: self.received,
            refused: self.refused,
            cpu: thread_cpu() - self.cpu_start,
            wakes: io.stats().wakes(),
            latency: self.latency.clone(),
        });
        if out.len() == 2 {
            self.shutdown.store(true, Ordering::Relaxed);
        }
    }
}

impl Handler for Node {
    type Conn = ();
    fn on_open(&mut self, _: &mut Io, _: ConnId, _: Origin) {}
    fn on_data(&mut self, _: &mut Io, _: ConnId, _: &mut (), _: &mut [u8]) {}
    fn on_deadline(&mut self, _: &mut Io, _: ConnId, _: &mut ()) {}
    fn on_closed(&mut self, _: &mut Io, _: ConnId, _: (), _: CloseCause) {}

    fn on_wake(&mut self, io: &mut Io, _: &mut Conns<'_, ()>) {
        while let Some((_, posted)) = self.boxes[self.me].pop() {
            self.received += 1;
            let now = self.now_ns();
            let _ = self
                .latency
                .record((now.saturating_sub(posted) / 1000).max(1));
            if self.load == Load::PingPong && Instant::now() < self.until {
                // Answer (worker 1) or send the next (worker 0).
                self.post(io);
            }
        }
    }

    fn on_tick(&mut self, io: &mut Io) {
        let now = Instant::now();
        if now >= self.until {
            if now >= self.until + Duration::from_millis(200) {
                self.finish(io);
            }
            return;
        }
        if self.me == 0 {
            match self.load {
                Load::PingPong if self.sent == 0 => self.post(io),
                Load::Stream if now >= self.next_burst => {
                    self.next_burst += Duration::from_micros(100);
                    for _ in 0..64 {
                        self.post(io);
                    }
                }
                _ => {}
            }
        }
    }

    fn poll_timeout(&self, _: &Io) -> Option<Duration> {
        match (self.me, self.load) {
            (0, Load::Stream) => Some(self.next_burst.saturating_duration_since(Instant::now())),
            _ => None,
        }
    }
}

fn run(mode: WakeMode, load: Load, secs: u64, cpus: &[usize]) -> Vec<Report> {
    let bells: Vec<Arc<Bell>> = (0..2).map(|_| Bell::new(mode).unwrap()).collect();
    let boxes: Arc<Vec<Mailbox<Msg>>> = Arc::new(
        bells
            .iter()
            .map(|b| Mailbox::new(1 << 16, b.clone()))
            .collect(),
    );
    let shutdown = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(Vec::new()));
    let epoch = Instant::now();
    let until = epoch + Duration::from_millis(300) + Duration::from_secs(secs);
    let opts = SpawnOptions {
        name: "mbox".into(),
        workers: 2,
        cpus: cpus.iter().map(|&c| Some(c)).collect(),
        engine: EngineConfig {
            ring_entries: 256,
            recv_buffers: 1,
            recv_buffer_size: 256,
            drain_ms: 1000,
            file_table: 0,
            incremental_recv: false,
        },
    };
    let (b2, s2, o2) = (boxes.clone(), shutdown.clone(), out.clone());
    let spawned = spawn(
        opts,
        &shutdown,
        move |i| {
            Ok(WorkerSetup {
                handler: Node {
                    me: i,
                    load,
                    boxes: b2.clone(),
                    epoch,
                    until,
                    sent: 0,
                    received: 0,
                    refused: 0,
                    latency: Histogram::new_with_bounds(1, 10_000_000, 3).unwrap(),
                    next_burst: epoch + Duration::from_millis(300),
                    cpu_start: thread_cpu(),
                    shutdown: s2.clone(),
                    out: o2.clone(),
                },
                listeners: Vec::new(),
                shutdown: s2.clone(),
                bell: Some(bells[i].clone()),
            })
        },
        |_, _| (),
    )
    .expect("spawn");
    for r in spawned.join() {
        r.expect("worker");
    }
    let mut reports = out.lock().unwrap().clone();
    reports.sort_by_key(|r| r.me);
    reports
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("ROUNDS"));
    let secs: u64 = args.next().map_or(3, |a| a.parse().expect("SECONDS"));
    let allowed = affinity::allowed_cpus();
    let cpus = [allowed[0], allowed[allowed.len().min(2) - 1]];
    println!("workers pinned to CPUs {cpus:?}; {rounds} rounds of {secs} s per mode and load");
    println!(
        "{:<10} {:<9} {:>10} {:>9} {:>9} {:>9} {:>11} {:>11} {:>8}",
        "load",
        "wake",
        "msgs/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "ns/msg tx",
        "ns/msg rx",
        "wakes/msg"
    );
    for round in 0..rounds {
        for load in [Load::PingPong, Load::Stream] {
            // Alternate which mode goes first, so drift hits both alike.
            let modes = if round % 2 == 0 {
                [WakeMode::MsgRing, WakeMode::EventFd]
            } else {
                [WakeMode::EventFd, WakeMode::MsgRing]
            };
            for mode in modes {
                let r = run(mode, load, secs, &cpus);
                let (tx, rx) = (&r[0], &r[1]);
                // Ping-pong: worker 0 receives the answers; latency there is
                // a round trip (two wake-ups), reported halved.
                let (msgs, lat, div) = match load {
                    Load::PingPong => (tx.received, &tx.latency, 2),
                    Load::Stream => (rx.received, &rx.latency, 1),
                };
                let per = |cpu: Duration, n: u64| cpu.as_nanos() as f64 / n.max(1) as f64;
                println!(
                    "{:<10} {:<9} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>11.0} {:>11.0} {:>8.3}",
                    if load == Load::PingPong {
                        "ping-pong"
                    } else {
                        "stream"
                    },
                    format!("{mode:?}"),
                    msgs as f64 / secs as f64,
                    lat.value_at_quantile(0.5) as f64 / div as f64,
                    lat.value_at_quantile(0.99) as f64 / div as f64,
                    lat.value_at_quantile(0.999) as f64 / div as f64,
                    per(tx.cpu, tx.sent),
                    per(rx.cpu, rx.received),
                    rx.wakes as f64 / rx.received.max(1) as f64,
                );
                assert_eq!(tx.refused + rx.refused, 0, "mailbox full during the bench");
            }
        }
    }
}
