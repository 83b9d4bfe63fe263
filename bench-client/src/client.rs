//! The load generator's connection handler, running on the gateway's engine
//! in the connect role. One per worker thread; no locks on the message path.
//!
//! Time is in microseconds since the process's epoch. Each worker runs the
//! same phases: ramp (open its share of connections on schedule), warm-up
//! (traffic, not measured), window (measured), cool-down (no new sends;
//! replies to window messages still count), then close everything.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::{CloseCause, CloseMode, ConnId, Conns, Handler, Io, Origin};
use hdrhistogram::Histogram;
use tungstenite::protocol::frame::coding::{Control, OpCode};
use wsproto::codec::{self, Codec, Event, Limits, MessageKind, Role};
use wsproto::handshake::{ClientHandshake, ServerAnswer};

use crate::ack::{self, AckProtocol, Answer, Resolved};
use crate::pubsub::{
    self as ps, ApiOutcome, ApiPublisher, Incoming, Layout, PublishOpts, SubscribeOpts, Via,
};
use crate::scenario::{self, Mode, SessionOpts, SessionProtocol};
use crate::stats::{new_histogram, Gap, Measurements, Outage, PartialSub, TargetMeasurements};
use crate::target_url::WsUrl;

/// A send more than this late (rate mode) is counted as late.
const LATE_US: u64 = 1_000;
/// Pre-masked copies of the message frame per process (see [`Plan::frames`]).
const FRAME_POOL: usize = 64;
/// Connects started per loop iteration at most, so a burst does not starve replies.
const CONNECTS_PER_TICK: u64 = 512;

/// Everything a worker needs to know about the run, shared read-only.
#[derive(Debug)]
pub struct Plan {
    /// Targets, path override applied.
    pub urls: Vec<WsUrl>,
    /// Source addresses to bind round-robin (empty: kernel's choice).
    pub sources: Vec<IpAddr>,
    /// Mode.
    pub mode: Mode,
    /// Message payload.
    pub payload: Bytes,
    /// The payload as ready-to-send client frames, each masked with its own
    /// random key. Sends rotate through them, so a message costs a reference
    /// count instead of an allocation and a masked copy, while the server
    /// still sees varying masks (RFC 6455 §5.3).
    pub frames: Vec<Bytes>,
    /// Text or binary frames.
    pub kind: MessageKind,
    /// What the client accepts from the server (`client.max_message_bytes`).
    pub limits: Limits,
    /// Echo mode: outstanding messages per connection.
    pub in_flight: usize,
    /// Rate mode: µs between sends on one connection; ping mode: between pings.
    pub interval_us: u64,
    /// Scheduled sends due within this many µs of a wake-up go out in it
    /// (`client.send_batch_us`).
    pub send_batch_us: u64,
    /// Reply timeout, µs.
    pub message_timeout_us: u64,
    /// Connect + handshake timeout, ms.
    pub handshake_timeout_ms: u64,
    /// How long a connection open at the end waits for the server's close, ms.
    pub close_timeout_ms: u64,
    /// Connections this process opens, over all its workers.
    pub connections: u64,
    /// Added to a connection's number before picking its URL and source
    /// address, so processes spread over different ones.
    pub conn_offset: u64,
    /// Processes sharing the run.
    pub processes: u64,
    /// µs between connection starts (0 = all at once).
    pub connect_interval_us: f64,
    /// Phase lengths, µs.
    pub warmup_us: u64,
    /// Measured window, µs.
    pub duration_us: u64,
    /// Cool-down, µs.
    pub cooldown_us: u64,
    /// Process epoch.
    pub epoch: Instant,
    /// Set (by SIGINT or the parent) to end the run early.
    pub abort: Arc<AtomicBool>,
    /// Subscribe mode: the channels.
    pub layout: Option<Layout>,
    /// Subscribe mode: who subscribes how.
    pub subscribe: SubscribeOpts,
    /// Subscribe mode: who publishes how.
    pub publish: PublishOpts,
    /// Subscribe mode: this process runs the publisher (the first one).
    pub publisher: bool,
    /// Subscribe mode: µs between publications.
    pub pub_interval_us: u64,
    /// Subscribe mode: connections closed and reopened per second, in all
    /// processes (`load.churn_per_sec`; 0 = none).
    pub churn_per_sec: f64,
    /// Subscribe mode with `load.reconnect`: the reconnect delay range, µs.
    pub reconnect: Option<(u64, u64)>,
    /// Session mode: the VUs' stages and behaviour.
    pub session: SessionOpts,
    /// Ack mode: envelopes, answer matching, bound and timeout.
    pub ack: Option<AckProtocol>,
}

impl Plan {
    /// Builds the plan of process `process` of `processes`, which opens
    /// `connections` of the scenario's total, from a scenario cell.
    pub fn new(
        s: &scenario::Scenario,
        connections: u64,
        process: u64,
        processes: u64,
        abort: Arc<AtomicBool>,
    ) -> Result<Self, String> {
        let urls = s
            .target
            .urls
            .iter()
            .map(|u| {
                let mut url = crate::target_url::parse(u)?;
                if let Some(p) = &s.target.path {
                    url.path = p.clone();
                }
                Ok(url)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let l = &s.load;
        let ack = match l.mode {
            Mode::Ack => Some(
                AckProtocol::new(&l.ack, l.message_size, l.message_timeout_ms)
                    .map_err(|(key, problem)| format!("`{key}` {problem}"))?,
            ),
            _ => None,
        };
        let payload: Bytes = match l.message_kind {
            scenario::MessageKind::Text => {
                (0..l.message_size).map(|i| b'a' + (i % 26) as u8).collect()
            }
            scenario::MessageKind::Binary => (0..l.message_size).map(|i| (i % 251) as u8).collect(),
        };
        // Each process opens its share at its share of the rate.
        let total = l.connections.max(1) as f64;
        let connect_interval_us = processes as f64
            * if l.ramp_secs > 0.0 {
                l.ramp_secs * 1e6 / total
            } else if l.connect_rate > 0.0 {
                1e6 / l.connect_rate
            } else {
                0.0
            };
        let secs = |s: f64| (s * 1e6) as u64;
        let kind = match l.message_kind {
            scenario::MessageKind::Text => MessageKind::Text,
            scenario::MessageKind::Binary => MessageKind::Binary,
        };
        let mut seed =
            0x853c_49e6_748f_ea9b_u64 ^ (process + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let frames = (0..FRAME_POOL)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                codec::encode_message(kind, &payload, Some(((seed >> 32) as u32).to_ne_bytes()))
            })
            .collect();
        Ok(Self {
            urls,
            sources: s.source_addrs(),
            mode: l.mode,
            payload,
            frames,
            kind,
            limits: Limits {
                max_frame_bytes: s.client.max_message_bytes,
                max_message_bytes: s.client.max_message_bytes,
            },
            in_flight: l.in_flight as usize,
            interval_us: match l.mode {
                Mode::Rate | Mode::Ack => (1e6 / l.rate) as u64,
                Mode::Ping => (l.ping_interval_ms * 1e3) as u64,
                _ => 0,
            }
            .max(1),
            send_batch_us: s.client.send_batch_us,
            message_timeout_us: ack
                .as_ref()
                .map_or(l.message_timeout_ms * 1000, |a| a.timeout_us),
            handshake_timeout_ms: l.handshake_timeout_ms,
            close_timeout_ms: s.client.close_timeout_ms,
            connections,
            conn_offset: process,
            processes,
            connect_interval_us,
            warmup_us: secs(l.warmup_secs),
            duration_us: match l.mode {
                Mode::Session => secs(s.session.total_secs()),
                _ => secs(l.duration_secs),
            },
            cooldown_us: secs(l.cooldown_secs),
            epoch: Instant::now(),
            abort,
            layout: match l.mode {
                Mode::Subscribe => Some(Layout::new(&s.subscribe, l.connections)),
                // The hub channel: `{channel_prefix}0`.
                Mode::Session => Some(Layout::new(
                    &SubscribeOpts {
                        pattern: crate::pubsub::Pattern::Shared,
                        ..s.subscribe.clone()
                    },
                    1,
                )),
                _ => None,
            },
            subscribe: s.subscribe.clone(),
            publish: s.publish.clone(),
            publisher: matches!(l.mode, Mode::Subscribe | Mode::Session)
                && process == 0
                && s.publish.via != Via::None,
            pub_interval_us: {
                let targets = match (l.mode, s.publish.per_channel) {
                    (Mode::Subscribe, true) => {
                        let range = Layout::new(&s.subscribe, l.connections).targets(s.publish.to);
                        (range.end - range.start).max(1) as f64
                    }
                    _ => 1.0,
                };
                (1e6 / (s.publish.rate * targets).max(1e-6)).max(1.0) as u64
            },
            churn_per_sec: match l.mode {
                Mode::Subscribe => l.churn_per_sec,
                _ => 0.0,
            },
            reconnect: match (l.mode, &l.reconnect_delay_ms[..]) {
                (Mode::Subscribe, &[min, max]) if l.reconnect => Some((min * 1000, max * 1000)),
                _ => None,
            },
            session: s.session.clone(),
            ack,
        })
    }

    /// Decides whether a message from the server answers one of ours.
    ///
    /// Echo and rate modes expect their own payload back, answering the
    /// oldest outstanding message. The gateway-protocol modes have their
    /// own paths: `ack` matches the server's ack by id (`on_ack_frames`,
    /// [`crate::ack`]), `subscribe` and `session` read the publish
    /// timestamp carried in a broadcast (`on_sub_frames`).
    pub fn classify(&self, kind: MessageKind, payload: &[u8]) -> Reply {
        match self.mode {
            Mode::Echo | Mode::Rate if kind == self.kind && payload.len() == self.payload.len() => {
                Reply::Answer
            }
            _ => Reply::Unexpected,
        }
    }

    /// Bytes of a publication's data (`load.message_size`, at least the stamp).
    pub fn publish_size(&self) -> usize {
        self.payload.len()
    }

    /// Subscriptions come and go (churn, reconnect), so what each one
    /// expected is reckoned from a log of the publications.
    pub fn logs_publications(&self) -> bool {
        self.churn_per_sec > 0.0 || self.reconnect.is_some()
    }

    /// µs since the epoch.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// What a server message means for the workload (see [`Plan::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answers the oldest outstanding message.
    Answer,
    /// Not something this mode expects: counted as a protocol error.
    Unexpected,
}

/// A connection this worker started: when, to which URL, as which
/// connection number (subscribe mode: its channels), and whether the churn
/// reopened it.
#[derive(Debug, Clone, Copy, Default)]
struct Started {
    /// µs since the epoch.
    at: u64,
    /// Index into `Plan::urls`.
    url: u32,
    /// Global connection number (VU number in session mode).
    global: u64,
    /// Opened by the churn in place of a closed connection, or (with
    /// `failover`) in place of one the server dropped.
    reopen: bool,
    /// A reconnect after a drop (`load.reconnect`): a failure schedules the next attempt.
    failover: bool,
}

impl Started {
    /// Records `s` for slot `id` in `v`.
    fn note(v: &mut Vec<Started>, id: ConnId, s: Started) {
        if v.len() <= id.index() {
            v.resize(id.index() + 1, Started::default());
        }
        v[id.index()] = s;
    }
}

/// A publication awaiting the server's answer.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Channel index.
    k: u64,
    /// Sent inside the measured window.
    measured: bool,
    /// Send time, `CLOCK_MONOTONIC` µs.
    t: u64,
    /// Sequence number on its channel.
    seq: u64,
}

/// Where a worker is in the run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Phase {
    /// Opening connections.
    Ramp,
    /// Traffic, not measured.
    Warmup,
    /// Measured.
    Window,
    /// Waiting for replies to window messages.
    Cooldown,
    /// Closing connections.
    Closing,
    /// Finished.
    Done,
}

/// What a worker publishes about itself once a second.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Worker phase.
    pub phase: Phase,
    /// Connections currently open (handshake done).
    pub conns_up: u64,
    /// Counters so far.
    pub counts: crate::stats::Counts,
    /// Latencies recorded since the reader last took them (for the live line).
    pub interval: Histogram<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            phase: Phase::Ramp,
            conns_up: 0,
            counts: Default::default(),
            interval: new_histogram(),
        }
    }
}

/// One message waiting for its reply.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// When it should have been sent (rate mode) or was sent.
    scheduled_us: u64,
    /// When it was sent.
    sent_us: u64,
    /// Sent inside the measured window.
    measured: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for the 101; holds the response bytes so far.
    Handshake { hs: ClientHandshake, head: Vec<u8> },
    /// Open WebSocket.
    Open(Codec),
    /// We sent close and wait for the server; `at_end`: the run's end (its
    /// outcome is counted), not a session or churn close.
    Closing { at_end: bool },
    /// The handshake failed and was counted; the connection is being aborted.
    Failed,
    /// Subscribe mode: the HTTP connection to the server API.
    Api(ApiPublisher),
}

/// Subscribe mode: a Centrifugo-protocol connection.
#[derive(Debug, Default)]
struct SubConn {
    /// Publishes instead of subscribing.
    publisher: bool,
    /// Channels (subscribers).
    channels: Vec<u64>,
    /// Last sequence number seen per channel (`u64::MAX`: none yet).
    last: Vec<u64>,
    /// Measured deliveries counted per channel.
    delivered: Vec<u64>,
    /// When each subscription was confirmed (`CLOCK_MONOTONIC` µs; 0: not yet).
    since: Vec<u64>,
    /// Subscriptions not yet confirmed.
    unconfirmed: usize,
    /// Its target URL.
    url: u32,
    /// Its connection number.
    global: u64,
    /// Opened by the churn in place of a closed connection; when its connect started (µs since the epoch).
    reopened: bool,
    opened_us: u64,
    /// Its subscriptions have been accounted for at its end (see `BenchHandler::retire`).
    retired: bool,
    /// Per channel: subscribed again after the server unsubscribed it
    /// (see [`server_unsubscribed`]), so it expects, like a reopened
    /// connection's, what was published after its reply. Empty (no
    /// allocation per connection) until the first such unsubscribe.
    resub: Vec<bool>,
    /// Per channel: when the server unsubscribed it, while its new
    /// subscribe awaits a reply (`CLOCK_MONOTONIC` µs; 0: none). Empty
    /// like `resub`.
    gap_from: Vec<u64>,
    /// Publishers: next command id, and the publications awaiting replies.
    next_id: u32,
    awaiting: VecDeque<(u32, Sent)>,
}

impl SubConn {
    /// Subscription `i` began after the ramp (a reopened connection, or
    /// made again after a server unsubscribe): it expects what was
    /// published after its reply, and is tallied as a [`PartialSub`].
    fn late(&self, i: usize) -> bool {
        self.reopened || self.resub.get(i).copied().unwrap_or(false)
    }
}

/// Session mode: one virtual user's current iteration.
#[derive(Debug)]
struct Vu {
    /// VU number (for its personal channel and name).
    n: u64,
    /// When its connect started (µs since the epoch).
    started_us: u64,
    /// When it sends `LEAVE`, and when it closes.
    leave_us: u64,
    close_us: u64,
    /// `LEAVE` sent.
    left: bool,
    /// We closed: the iteration completed.
    closing: bool,
    /// Messages sent (sequence of its `SAY`s).
    said: u64,
}

/// Per-connection state.
#[derive(Debug)]
pub struct Conn {
    state: State,
    pending: VecDeque<Pending>,
    sub: Option<Box<SubConn>>,
    vu: Option<Box<Vu>>,
    /// Ack mode: messages awaiting their acks.
    ack: Option<Box<ack::Outstanding>>,
}

/// The per-worker handler.
#[derive(Debug)]
pub struct BenchHandler {
    plan: Arc<Plan>,
    workers: u64,
    /// Next connection number (of this process) this worker will open.
    next_conn: u64,
    /// When each slot's connect started, to which URL, for which
    /// connection number, by slot index.
    connect_started: Vec<Started>,
    phase: Phase,
    phase_until: u64,
    /// Connections not yet resolved (neither established nor failed).
    unresolved: u64,
    conns_up: u64,
    measured: Measurements,
    interval: Histogram<u64>,
    /// Rate and ping mode: next send per connection, earliest first.
    schedule: BinaryHeap<Reverse<(u64, ConnId)>>,
    progress: Arc<Mutex<Progress>>,
    next_publish_us: u64,
    shutdown: Arc<AtomicBool>,
    rng: u64,
    /// Subscribe mode, the publishing worker: the publisher's state.
    publisher: Option<Box<Publisher>>,
    /// Session mode: this worker's index and the workers of all processes.
    vu_slot: (u64, u64),
    /// Session mode: VUs running now, and VUs started so far.
    vus: u64,
    vus_started: u64,
    /// Session mode: when the stages began (µs since the epoch).
    stages_start: u64,
    /// Subscribe mode with churn: open subscribers, oldest first (stale
    /// ids are skipped when their turn comes).
    churn_queue: VecDeque<ConnId>,
    /// µs between this worker's churn steps (0: no churn), and the next one due.
    churn_interval_us: u64,
    next_churn_us: u64,
    /// Reconnect: dropped subscribers' next attempts as (due µs since the
    /// epoch, connection number, target URL), earliest first.
    retries: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// Reconnect: subscribe commands to send again as (due µs since the
    /// epoch, connection, channel index), earliest first (see
    /// [`server_unsubscribed`]).
    resubscribes: BinaryHeap<Reverse<(u64, ConnId, usize)>>,
}

/// The publishing side of subscribe mode (worker 0 of the first process).
#[derive(Debug, Default)]
struct Publisher {
    /// The server API connection (`via = "api"`).
    api: Option<ConnId>,
    /// Publishing WebSocket connections (`via = "client"`).
    conns: Vec<ConnId>,
    /// Connections opened.
    opened: bool,
    /// When the next publication is due (µs since the epoch).
    next_us: u64,
    /// Round-robin position over the target channels, and over `conns`.
    cursor: u64,
    conn_cursor: usize,
    /// Next sequence number per channel.
    seq: Vec<u64>,
    /// API requests awaiting their responses.
    fifo: VecDeque<Sent>,
}

impl BenchHandler {
    /// Worker `worker` of `workers`; `shutdown` is the worker loop's flag,
    /// which the handler raises itself when the run is over.
    pub fn new(
        plan: Arc<Plan>,
        worker: u64,
        workers: u64,
        progress: Arc<Mutex<Progress>>,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        let mine = (plan.connections + workers - 1 - worker) / workers;
        Self {
            plan,
            workers,
            next_conn: worker,
            connect_started: Vec::new(),
            phase: Phase::Ramp,
            phase_until: 0,
            unresolved: mine,
            conns_up: 0,
            measured: Measurements::default(),
            interval: new_histogram(),
            schedule: BinaryHeap::new(),
            progress,
            next_publish_us: 0,
            shutdown,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (worker + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
            publisher: None,
            vu_slot: (0, 1),
            vus: 0,
            vus_started: 0,
            stages_start: 0,
            churn_queue: VecDeque::new(),
            churn_interval_us: 0,
            next_churn_us: 0,
            retries: BinaryHeap::new(),
            resubscribes: BinaryHeap::new(),
        }
        .with_subscribe_mode(worker)
    }

    /// Subscribe mode: per-channel tallies, and the publisher on worker 0
    /// of the publishing process (its WebSocket publishers count among the
    /// connections the ramp waits for).
    fn with_subscribe_mode(mut self, worker: u64) -> Self {
        if self.plan.mode == Mode::Session {
            // No fixed connection count: the ramp is over at once, the
            // stages run in the window.
            self.unresolved = 0;
            let p = &self.plan;
            self.vu_slot = (
                p.conn_offset * self.workers + worker,
                p.processes * self.workers,
            );
        }
        let Some(layout) = &self.plan.layout else {
            return self;
        };
        let n = layout.len() as usize;
        self.measured.subscribed = vec![0; n];
        if self.plan.mode == Mode::Subscribe {
            self.measured.per_target = (0..self.plan.urls.len())
                .map(|_| TargetMeasurements::new(n))
                .collect();
            if self.plan.churn_per_sec > 0.0 {
                // This worker's share of the churn.
                let shares = (self.plan.processes * self.workers) as f64;
                self.churn_interval_us = ((1e6 * shares / self.plan.churn_per_sec) as u64).max(1);
            }
        }
        if self.plan.publisher && worker == 0 {
            self.measured.published = vec![0; n];
            if self.plan.publish.via == Via::Client {
                self.unresolved += self.plan.publish.connections;
            }
            self.publisher = Some(Box::new(Publisher {
                seq: vec![0; n],
                ..Publisher::default()
            }));
        }
        self
    }

    /// Everything this worker measured.
    pub fn measured(&self) -> &Measurements {
        &self.measured
    }

    fn note_started(&mut self, id: ConnId, s: Started) {
        Started::note(&mut self.connect_started, id, s);
    }

    fn started(&self, id: ConnId) -> Started {
        self.connect_started
            .get(id.index())
            .copied()
            .unwrap_or_default()
    }

    /// A connection the churn reopened (its failures count as failed reconnects).
    fn reopened(&self, id: ConnId) -> bool {
        self.started(id).reopen
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: masks and schedule jitter need spread, not secrecy.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn mask(&mut self) -> Option<[u8; 4]> {
        Some((self.random() as u32).to_ne_bytes())
    }

    fn sending_allowed(&self) -> bool {
        matches!(self.phase, Phase::Ramp | Phase::Warmup | Phase::Window)
    }

    fn open_due_connections(&mut self, io: &mut Io, now: u64) {
        let plan = self.plan.clone();
        for _ in 0..CONNECTS_PER_TICK {
            let k = self.next_conn;
            if k >= plan.connections
                || self.phase != Phase::Ramp
                || (k as f64 * plan.connect_interval_us) as u64 > now
            {
                return;
            }
            self.next_conn += self.workers;
            // Processes interleave: process p of P takes global numbers p, p+P, ...
            let global = (k * plan.processes + plan.conn_offset) as usize;
            let url_index = global % plan.urls.len();
            let url = &plan.urls[url_index];
            let bind = (!plan.sources.is_empty())
                .then(|| SocketAddr::new(plan.sources[global % plan.sources.len()], 0));
            self.measured.counts.conn_attempted += 1;
            match io.connect(url.addr, bind) {
                Ok(id) => {
                    self.note_started(
                        id,
                        Started {
                            at: now,
                            url: url_index as u32,
                            global: global as u64,
                            reopen: false,
                            failover: false,
                        },
                    );
                    io.set_deadline(id, io.now_ms() + plan.handshake_timeout_ms);
                }
                Err(e) => {
                    // No socket or no source port: counted, not fatal.
                    log::debug!("connect {}: {e}", url.addr);
                    self.measured
                        .counts
                        .connect_failed(e.raw_os_error().unwrap_or(0));
                    self.unresolved = self.unresolved.saturating_sub(1);
                }
            }
        }
    }

    fn advance_phase(&mut self, now: u64) {
        let plan = &self.plan;
        if plan.abort.load(Ordering::Relaxed) && self.phase < Phase::Closing {
            self.phase = Phase::Closing;
        }
        loop {
            let next = match self.phase {
                Phase::Ramp if self.unresolved == 0 => Some((Phase::Warmup, plan.warmup_us)),
                Phase::Warmup | Phase::Window | Phase::Cooldown if now >= self.phase_until => {
                    Some(match self.phase {
                        Phase::Warmup => (Phase::Window, plan.duration_us),
                        Phase::Window => (Phase::Cooldown, plan.cooldown_us),
                        _ => (Phase::Closing, 0),
                    })
                }
                _ => None,
            };
            let Some((phase, len)) = next else { break };
            self.phase = phase;
            self.phase_until = now + len;
        }
        if self.phase == Phase::Closing && !self.shutdown.load(Ordering::Relaxed) {
            // The engine now calls on_shutdown for every connection.
            self.shutdown.store(true, Ordering::Relaxed);
            // Dropped subscribers not back by now missed everything since their drop.
            self.retries.clear();
            let m = &mut self.measured;
            for (global, o) in m.outages.drain() {
                let channels = self.plan.layout.as_ref().map(|l| l.of(global));
                for (i, k) in channels.into_iter().flatten().enumerate() {
                    if o.from.get(i).is_some_and(|&f| f != 0) {
                        m.gaps.push(Gap {
                            channel: k,
                            target: o.target,
                            from: o.from[i],
                            until: u64::MAX,
                        });
                    }
                }
            }
        }
    }

    fn send_message(&mut self, io: &mut Io, id: ConnId, c: &mut Conn, scheduled_us: u64, now: u64) {
        let measured = self.phase == Phase::Window;
        let pick = self.random() as usize % FRAME_POOL;
        let frame = self.plan.frames[pick].clone();
        if io.send(id, frame).is_err() {
            return;
        }
        if measured {
            let counts = &mut self.measured.counts;
            counts.msgs_sent += 1;
            counts.bytes_sent += self.plan.payload.len() as u64;
            if now > scheduled_us + LATE_US {
                counts.msgs_late += 1;
            }
        }
        c.pending.push_back(Pending {
            scheduled_us,
            sent_us: now,
            measured,
        });
    }

    fn send_ping(&mut self, io: &mut Io, id: ConnId, c: &mut Conn, now: u64) {
        let measured = self.phase == Phase::Window;
        let mask = self.mask();
        let frame = codec::encode_frame(
            OpCode::Control(Control::Ping),
            true,
            &now.to_be_bytes(),
            mask,
        );
        if io.send(id, frame).is_ok() {
            if measured {
                self.measured.counts.pings_sent += 1;
            }
            c.pending.push_back(Pending {
                scheduled_us: now,
                sent_us: now,
                measured,
            });
        }
    }

    fn on_reply(&mut self, now: u64, p: Pending, bytes: usize) {
        self.measured.counts.replies_all += 1;
        if !p.measured {
            return;
        }
        let latency = now.saturating_sub(p.scheduled_us).max(1);
        let counts = &mut self.measured.counts;
        if latency > self.plan.message_timeout_us {
            counts.msgs_timed_out += 1;
        } else {
            counts.msgs_ok += 1;
        }
        counts.bytes_received += bytes as u64;
        let _ = self.measured.latency.record(latency);
        let _ = self.interval.record(latency);
        if self.plan.mode == Mode::Rate {
            let _ = self
                .measured
                .raw_latency
                .record(now.saturating_sub(p.sent_us).max(1));
        }
    }

    fn on_handshake(&mut self, io: &mut Io, id: ConnId, c: &mut Conn, data: &mut [u8]) {
        let State::Handshake { hs, head } = &mut c.state else {
            unreachable!()
        };
        head.extend_from_slice(data);
        let consumed = match hs.answer(head, &[]) {
            ServerAnswer::Incomplete => return,
            ServerAnswer::Accepted { consumed, .. } => consumed,
            ServerAnswer::Refused { status } => {
                log::debug!("handshake refused with {status}");
                return self.fail_handshake(io, id, c, |k| k.fail_bad_status += 1);
            }
            ServerAnswer::Invalid("wrong Sec-WebSocket-Accept") => {
                return self.fail_handshake(io, id, c, |k| k.fail_bad_accept += 1);
            }
            ServerAnswer::Invalid(why) => {
                log::debug!("invalid handshake answer: {why}");
                return self.fail_handshake(io, id, c, |k| k.fail_bad_status += 1);
            }
        };
        let mut rest = head.split_off(consumed);
        let now = self.plan.now_us();
        let started = self.started(id);
        let took = now.saturating_sub(started.at).max(1);
        if started.reopen {
            let _ = self.measured.reconnect.record(took);
            self.measured.counts.reconnects_ok += 1;
            if let Some(t) = self.measured.per_target.get_mut(started.url as usize) {
                t.reconnects_ok += 1;
            }
        } else {
            let _ = self.measured.handshake.record(took);
            self.measured.counts.conn_established += 1;
            self.unresolved = self.unresolved.saturating_sub(1);
        }
        self.conns_up += 1;
        io.set_deadline(id, 0);
        c.state = State::Open(Codec::new(Role::Client));
        match self.plan.mode {
            Mode::Subscribe => self.say_hello(io, id, c),
            Mode::Session => self.vu_hello(io, id, c, now),
            Mode::Echo if self.sending_allowed() => {
                for _ in 0..self.plan.in_flight {
                    self.send_message(io, id, c, now, now);
                }
            }
            Mode::Rate | Mode::Ping | Mode::Ack => {
                if self.plan.mode == Mode::Ack {
                    c.ack = Some(Box::default());
                }
                // Random phase so connections do not send in lockstep.
                let first = now + self.random() % self.plan.interval_us;
                self.schedule.push(Reverse((first, id)));
            }
            _ => {}
        }
        if !rest.is_empty() {
            if self.plan.mode == Mode::Ack {
                self.on_ack_frames(io, id, c, &mut rest);
            } else {
                self.on_frames(io, id, c, &mut rest);
            }
        }
    }

    /// Counts a failed handshake once: the state it leaves behind tells
    /// `on_closed` that this connection's fate is already accounted for.
    fn fail_handshake(
        &mut self,
        io: &mut Io,
        id: ConnId,
        c: &mut Conn,
        count: impl FnOnce(&mut crate::stats::Counts),
    ) {
        c.state = State::Failed;
        if self.reopened(id) {
            self.measured.counts.reconnects_failed += 1;
            self.retry_after_failure(id);
        } else {
            count(&mut self.measured.counts);
            self.unresolved = self.unresolved.saturating_sub(1);
        }
        io.close(id, CloseMode::Abort);
    }

    fn on_frames(&mut self, io: &mut Io, id: ConnId, c: &mut Conn, data: &mut [u8]) {
        let State::Open(codec) = &mut c.state else {
            return;
        };
        let now = self.plan.now_us();
        let expect_len = self.plan.payload.len();
        let plan = &self.plan;
        let mut replies = 0usize;
        let mut pongs: Vec<u64> = Vec::new();
        let mut server_ping: Option<Vec<u8>> = None;
        let mut server_close: Option<Option<u16>> = None;
        let mut bad = 0u64;
        let result = codec.feed(data, &plan.limits, &mut |ev| match ev {
            Event::Message(kind, p) => match plan.classify(kind, p) {
                Reply::Answer => replies += 1,
                Reply::Unexpected => bad += 1,
            },
            Event::Pong(p) => match <[u8; 8]>::try_from(p) {
                Ok(ts) => pongs.push(u64::from_be_bytes(ts)),
                Err(_) => bad += 1,
            },
            Event::Ping(p) => server_ping = Some(p.to_vec()),
            Event::Close { code, .. } => server_close = Some(code),
        });
        self.measured.counts.protocol_errors += bad;
        for _ in 0..replies {
            let Some(p) = c.pending.pop_front() else {
                self.measured.counts.protocol_errors += 1;
                break;
            };
            self.on_reply(now, p, expect_len);
            if self.plan.mode == Mode::Echo && self.sending_allowed() {
                self.send_message(io, id, c, now, now);
            }
        }
        for ts in pongs {
            if let Some(pos) = c.pending.iter().position(|p| p.sent_us == ts) {
                let p = c.pending.remove(pos).expect("position is in range");
                if p.measured {
                    self.measured.counts.pongs_received += 1;
                }
                self.on_reply(now, p, 0);
            }
        }
        if let Some(payload) = server_ping {
            let mask = self.mask();
            let _ = io.send(
                id,
                codec::encode_frame(OpCode::Control(Control::Pong), true, &payload, mask),
            );
        }
        if let Err(e) = result {
            log::debug!("protocol error from server: {e}");
            self.measured.counts.protocol_errors += 1;
            io.close(id, CloseMode::Abort);
        } else if let Some(code) = server_close {
            // The server closed first: answer, and the connection counts as dropped in on_closed.
            log::debug!("server closed connection with {code:?}");
            *self
                .measured
                .counts
                .close_codes
                .entry(code.unwrap_or(1005))
                .or_default() += 1;
            let mask = self.mask();
            let _ = io.send(id, codec::encode_close(code.unwrap_or(1000), "", mask));
            io.close(id, CloseMode::Graceful);
        }
    }

    /// Ack mode: the connection's next message, unless `max_outstanding`
    /// still await their acks (then the send is skipped and counted).
    /// Timed-out messages are swept first, so the bound counts only live ones.
    fn send_ack_message(&mut self, io: &mut Io, id: ConnId, c: &mut Conn, now: u64) {
        let plan = self.plan.clone();
        let proto = plan.ack.as_ref().expect("ack mode has a protocol");
        let measured = self.phase == Phase::Window;
        let mask = self.mask();
        let out = c.ack.get_or_insert_with(Box::default);
        let counts = &mut self.measured.counts;
        counts.msgs_timed_out += out.expire(now, proto.timeout_us).measured;
        let Some(mid) = out.begin(now, measured, proto.max_outstanding) else {
            if measured {
                counts.ack_skipped += 1;
            }
            return;
        };
        let msg = proto.message(mid);
        if io
            .send(id, codec::encode_message(MessageKind::Text, &msg, mask))
            .is_err()
        {
            out.cancel(mid);
            return;
        }
        if measured {
            counts.msgs_sent += 1;
            counts.bytes_sent += msg.len() as u64;
        }
    }

    /// Ack mode: the server's acks, error answers, pushes and close.
    fn on_ack_frames(&mut self, io: &mut Io, id: ConnId, c: &mut Conn, data: &mut [u8]) {
        let State::Open(codec) = &mut c.state else {
            return;
        };
        let plan = self.plan.clone();
        let proto = plan.ack.as_ref().expect("ack mode has a protocol");
        let mut incoming: Vec<(Answer, usize)> = Vec::new();
        let mut server_ping: Option<Vec<u8>> = None;
        let mut server_close: Option<Option<u16>> = None;
        let result = codec.feed(data, &plan.limits, &mut |ev| match ev {
            Event::Message(MessageKind::Text, p) => incoming.push((proto.classify(p), p.len())),
            Event::Message(MessageKind::Binary, p) => incoming.push((Answer::Other, p.len())),
            Event::Pong(_) => {}
            Event::Ping(p) => server_ping = Some(p.to_vec()),
            Event::Close { code, .. } => server_close = Some(code),
        });
        let now = plan.now_us();
        // Oddities are counted for the window and the cool-down (answers
        // to window messages), not for the warm-up.
        let watch = matches!(self.phase, Phase::Window | Phase::Cooldown);
        let out = c.ack.get_or_insert_with(Box::default);
        for (what, bytes) in incoming {
            let mask = self.mask();
            let counts = &mut self.measured.counts;
            counts.replies_all += 1;
            match what {
                Answer::Ack(mid) => match out.resolve(mid, now, proto.timeout_us) {
                    Resolved::InTime {
                        latency_us,
                        measured,
                    } => {
                        let sent = match proto.client_ack(mid) {
                            Some(a) => io
                                .send(id, codec::encode_message(MessageKind::Text, &a, mask))
                                .is_ok(),
                            None => true,
                        };
                        if measured && sent {
                            counts.msgs_ok += 1;
                            counts.bytes_received += bytes as u64;
                            if proto.sends_client_acks() {
                                counts.client_acks_sent += 1;
                            }
                            let _ = self.measured.latency.record(latency_us);
                            let _ = self.interval.record(latency_us);
                        } else if measured {
                            // The connection is going away: the transaction did not complete.
                            counts.msgs_lost += 1;
                        }
                    }
                    Resolved::Late { measured } => {
                        if measured {
                            counts.msgs_timed_out += 1;
                        }
                    }
                    Resolved::Stale if watch => counts.acks_stale += 1,
                    Resolved::Unknown if watch => counts.acks_unknown += 1,
                    Resolved::Stale | Resolved::Unknown => {}
                },
                Answer::Error(Some(mid)) => match out.resolve(mid, now, proto.timeout_us) {
                    Resolved::InTime { measured, .. } | Resolved::Late { measured } => {
                        if measured {
                            counts.ack_errors += 1;
                        }
                    }
                    Resolved::Stale | Resolved::Unknown => {
                        if watch {
                            counts.errors_unmatched += 1;
                        }
                    }
                },
                Answer::Error(None) => {
                    if watch {
                        counts.errors_unmatched += 1;
                    }
                }
                Answer::Other => {
                    if watch {
                        counts.non_ack_msgs += 1;
                    }
                }
            }
        }
        if let Some(payload) = server_ping {
            let mask = self.mask();
            let _ = io.send(
                id,
                codec::encode_frame(OpCode::Control(Control::Pong), true, &payload, mask),
            );
        }
        if let Err(e) = result {
            log::debug!("protocol error from server: {e}");
            self.measured.counts.protocol_errors += 1;
            io.close(id, CloseMode::Abort);
        } else if let Some(code) = server_close {
            // E.g. 1011/1013 when the backend fails: counted by code; the
            // connection counts as dropped (its outstanding messages as
            // lost) in on_closed. No reconnect.
            log::debug!("server closed connection with {code:?}");
            *self
                .measured
                .counts
                .close_codes
                .entry(code.unwrap_or(1005))
                .or_default() += 1;
            let mask = self.mask();
            let _ = io.send(id, codec::encode_close(code.unwrap_or(1000), "", mask));
            io.close(id, CloseMode::Graceful);
        }
    }

    /// Subscribe mode: the publishing worker opens its connections once,
    /// at the start of the ramp.
    fn open_publishers(&mut self, io: &mut Io, now: u64) {
        let Some(p) = self.publisher.as_deref_mut().filter(|p| !p.opened) else {
            return;
        };
        p.opened = true;
        let plan = &self.plan;
        match plan.publish.via {
            Via::Api => {
                let (_, addr) = ApiPublisher::new(&plan.publish.api_url, &plan.publish.api_key)
                    .expect("validated with the scenario");
                match io.connect(addr, None) {
                    Ok(id) => p.api = Some(id),
                    Err(e) => log::error!("server API socket: {e}"),
                }
            }
            Via::Client => {
                for j in 0..plan.publish.connections {
                    let url_index = (j as usize) % plan.urls.len();
                    match io.connect(plan.urls[url_index].addr, None) {
                        Ok(id) => {
                            Started::note(
                                &mut self.connect_started,
                                id,
                                Started {
                                    at: now,
                                    url: url_index as u32,
                                    global: u64::MAX - j,
                                    reopen: false,
                                    failover: false,
                                },
                            );
                            io.set_deadline(id, io.now_ms() + plan.handshake_timeout_ms);
                            p.conns.push(id);
                        }
                        Err(e) => {
                            self.measured
                                .counts
                                .connect_failed(e.raw_os_error().unwrap_or(0));
                            self.unresolved = self.unresolved.saturating_sub(1);
                        }
                    }
                }
            }
            Via::None => {}
        }
    }

    /// Subscribe mode, after the 101: connect, and subscribe (publishers
    /// only connect).
    fn say_hello(&mut self, io: &mut Io, id: ConnId, c: &mut Conn) {
        let plan = self.plan.clone();
        let Some(layout) = &plan.layout else { return };
        let started = self.started(id);
        let global = started.global;
        let sub = c.sub.get_or_insert_with(Box::default);
        let names: Vec<String> = if sub.publisher {
            Vec::new()
        } else {
            sub.channels = layout.of(global);
            let n = sub.channels.len();
            sub.last = vec![u64::MAX; n];
            sub.delivered = vec![0; n];
            sub.since = vec![0; n];
            sub.unconfirmed = n;
            sub.url = started.url;
            sub.global = global;
            sub.reopened = started.reopen;
            sub.opened_us = started.at;
            if !started.reopen {
                if let Some(t) = self.measured.per_target.get_mut(started.url as usize) {
                    t.conns += 1;
                }
            }
            if self.churn_interval_us > 0 {
                self.churn_queue.push_back(id);
            }
            sub.channels.iter().map(|&k| layout.name(k)).collect()
        };
        let opts = &plan.subscribe;
        let token = (!opts.token_secret.is_empty()).then(|| {
            let user = if sub.publisher {
                format!("pub{}", u64::MAX - global)
            } else {
                format!("u{global}")
            };
            ps::token(&opts.token_secret, &user, &names, opts.server_side)
        });
        let frame = ps::hello(token.as_deref(), &names, opts.server_side);
        let mask = self.mask();
        let _ = io.send(
            id,
            codec::encode_message(MessageKind::Text, frame.as_bytes(), mask),
        );
    }

    /// Subscribe mode: what the server sent a subscriber or publisher.
    fn on_sub_frames(&mut self, io: &mut Io, id: ConnId, c: &mut Conn, data: &mut [u8]) {
        let State::Open(codec) = &mut c.state else {
            return;
        };
        let plan = self.plan.clone();
        let mut lines: Vec<Incoming> = Vec::new();
        let mut bad = 0u64;
        let mut server_close = None;
        let mut server_ping = None;
        let result = codec.feed(data, &plan.limits, &mut |ev| match ev {
            Event::Message(MessageKind::Text, p) => {
                for line in std::str::from_utf8(p).unwrap_or_default().split('\n') {
                    match ps::parse_line(line) {
                        Ok(i) => lines.push(i),
                        Err(_) => bad += 1,
                    }
                }
            }
            Event::Message(MessageKind::Binary, _) | Event::Pong(_) => bad += 1,
            Event::Ping(p) => server_ping = Some(p.to_vec()),
            Event::Close { code, .. } => server_close = Some(code),
        });
        let now_mono = ps::mono_us();
        let now_us = plan.now_us();
        let m = &mut self.measured;
        m.counts.protocol_errors += bad;
        let sub = c.sub.get_or_insert_with(Box::default);
        let mut pong = false;
        // Reconnect: channels to subscribe again (now, or after a delay).
        let mut resubscribe: Vec<(usize, bool)> = Vec::new();
        for line in lines {
            match line {
                Incoming::Ping => pong = true,
                Incoming::Connected if !sub.publisher && plan.subscribe.server_side => {
                    for i in 0..sub.channels.len() {
                        confirm(m, sub, i, now_mono, now_us);
                    }
                }
                Incoming::Connected => {}
                Incoming::Ok(reply) if sub.publisher => {
                    if let Some(pos) = sub.awaiting.iter().position(|a| a.0 == reply) {
                        let (_, sent) = sub.awaiting.remove(pos).expect("in range");
                        if sent.measured {
                            m.counts.pubs_ok += 1;
                            m.published[sent.k as usize] += 1;
                            if plan.logs_publications() {
                                m.pub_log.push((sent.k, sent.t, sent.seq));
                            }
                        }
                    }
                }
                Incoming::Ok(reply) => {
                    confirm(m, sub, (reply as usize).wrapping_sub(2), now_mono, now_us);
                }
                Incoming::Error(reply, code, temporary) => {
                    log::debug!("error {code} for command {reply}");
                    let i = (reply as usize).wrapping_sub(2);
                    if sub.publisher {
                        m.counts.pubs_failed += 1;
                        sub.awaiting.retain(|a| a.0 != reply);
                    } else if temporary && sub.gap_from.get(i).is_some_and(|&g| g != 0) {
                        // A resubscribe refused for now (e.g. the node's broker
                        // is down again): the SDKs retry after a delay.
                        m.counts.resubscribe_retries += 1;
                        resubscribe.push((i, true));
                    } else {
                        m.counts.subs_failed += 1;
                    }
                }
                Incoming::Publication(t, _, k, measured) if plan.mode == Mode::Session => {
                    // The hub's broadcasts are measured; the rest are the
                    // VU's own chat coming back.
                    m.counts.replies_all += 1;
                    m.counts.vu_msgs_received += 1;
                    if k == 0 && measured {
                        m.counts.deliveries += 1;
                        let latency = now_mono.saturating_sub(t).max(1);
                        let _ = m.latency.record(latency);
                        let _ = self.interval.record(latency);
                    }
                }
                Incoming::Publication(t, seq, k, measured) => {
                    m.counts.replies_all += 1;
                    let Some(i) = sub.channels.iter().position(|&ch| ch == k) else {
                        m.counts.protocol_errors += 1;
                        continue;
                    };
                    let mut target = m.per_target.get_mut(sub.url as usize);
                    let last = &mut sub.last[i];
                    if *last != u64::MAX && seq == *last {
                        m.counts.deliveries_dup += 1;
                        if let Some(t) = target {
                            t.deliveries_dup += 1;
                        }
                        continue;
                    }
                    if *last != u64::MAX && seq < *last {
                        m.counts.deliveries_ooo += 1;
                        if let Some(t) = target.as_deref_mut() {
                            t.deliveries_ooo += 1;
                        }
                    } else {
                        *last = seq;
                    }
                    if !measured {
                        continue;
                    }
                    // A reopened connection expects what was published
                    // after its subscribe reply (see `Measurements::partial`).
                    if sub.late(i) && (sub.since[i] == 0 || t < sub.since[i]) {
                        m.counts.churn_early += 1;
                        continue;
                    }
                    m.counts.deliveries += 1;
                    sub.delivered[i] += 1;
                    let latency = now_mono.saturating_sub(t).max(1);
                    let _ = m.latency.record(latency);
                    let _ = self.interval.record(latency);
                    if let Some(t) = target {
                        t.deliveries += 1;
                        let _ = t.latency.record(latency);
                    }
                }
                Incoming::Unsubscribed(name, code) => {
                    m.counts.unsubscribed += 1;
                    let again = plan.reconnect.is_some()
                        && !plan.subscribe.server_side
                        && ps::resubscribe_advised(code);
                    let i = plan
                        .layout
                        .as_ref()
                        .filter(|_| again)
                        .and_then(|l| sub.channels.iter().position(|&k| l.name(k) == name));
                    if let Some(i) = i {
                        let in_flight_from = now_mono.saturating_sub(plan.message_timeout_us);
                        if server_unsubscribed(m, sub, i, now_mono, in_flight_from) {
                            resubscribe.push((i, false));
                        }
                    }
                }
                Incoming::Other => {}
            }
        }
        for (i, later) in resubscribe {
            if later {
                self.schedule_resubscribe(id, i);
            } else {
                self.send_subscribe(io, id, i, sub.channels[i]);
            }
        }
        if pong {
            let mask = self.mask();
            let _ = io.send(id, codec::encode_message(MessageKind::Text, b"{}", mask));
        }
        if let Some(payload) = server_ping {
            let mask = self.mask();
            let _ = io.send(
                id,
                codec::encode_frame(OpCode::Control(Control::Pong), true, &payload, mask),
            );
        }
        if let Err(e) = result {
            log::debug!("protocol error from server: {e}");
            self.measured.counts.protocol_errors += 1;
            io.close(id, CloseMode::Abort);
        } else if let Some(code) = server_close {
            log::debug!("server closed connection with {code:?}");
            let mask = self.mask();
            let _ = io.send(id, codec::encode_close(code.unwrap_or(1000), "", mask));
            io.close(id, CloseMode::Graceful);
        }
    }

    /// Session mode: starts VUs until this worker runs its share of the
    /// current stage's target.
    fn start_vus(&mut self, io: &mut Io, now: u64) {
        if self.phase != Phase::Window {
            return;
        }
        if self.stages_start == 0 {
            self.stages_start = now;
        }
        let plan = self.plan.clone();
        let t = now.saturating_sub(self.stages_start) as f64 / 1e6;
        let total = plan.session.target_at(t).floor() as u64;
        let (slot, slots) = self.vu_slot;
        let mine = total / slots + u64::from(slot < total % slots);
        let mut budget = CONNECTS_PER_TICK;
        while self.vus < mine && budget > 0 {
            budget -= 1;
            let n = self.vus_started * slots + slot;
            self.vus_started += 1;
            let url_index = (n as usize) % plan.urls.len();
            let bind = (!plan.sources.is_empty())
                .then(|| SocketAddr::new(plan.sources[n as usize % plan.sources.len()], 0));
            self.measured.counts.conn_attempted += 1;
            self.measured.counts.sessions_started += 1;
            match io.connect(plan.urls[url_index].addr, bind) {
                Ok(id) => {
                    self.vus += 1;
                    self.note_started(
                        id,
                        Started {
                            at: now,
                            url: url_index as u32,
                            global: n,
                            reopen: false,
                            failover: false,
                        },
                    );
                    io.set_deadline(id, io.now_ms() + plan.handshake_timeout_ms);
                }
                Err(e) => {
                    self.measured
                        .counts
                        .connect_failed(e.raw_os_error().unwrap_or(0));
                    self.measured.counts.sessions_failed += 1;
                }
            }
        }
    }

    /// Session mode, after the 101: introduce the VU and plan its first message.
    fn vu_hello(&mut self, io: &mut Io, id: ConnId, c: &mut Conn, now: u64) {
        let Some(vu) = c.vu.as_deref() else { return };
        let n = vu.n;
        let frame = match self.plan.session.protocol {
            SessionProtocol::Raw => format!("{{\"event\":\"SET_NAME\",\"new_name\":\"Croc {n}\"}}"),
            SessionProtocol::Centrifuge => {
                let layout = self.plan.layout.as_ref().expect("session layout");
                let names = [layout.name(0), self.personal_channel(n)];
                let sub = c.sub.get_or_insert_with(Box::default);
                sub.channels = vec![0, u64::MAX];
                sub.last = vec![u64::MAX; 2];
                sub.delivered = vec![0; 2];
                sub.since = vec![0; 2];
                sub.unconfirmed = 2;
                let opts = &self.plan.subscribe;
                let token = (!opts.token_secret.is_empty())
                    .then(|| ps::token(&opts.token_secret, &format!("vu{n}"), &names, false));
                ps::hello(token.as_deref(), &names, false)
            }
        };
        self.send_vu_text(io, id, frame.as_bytes());
        let next = now + self.vu_gap();
        self.schedule.push(Reverse((next, id)));
    }

    fn personal_channel(&self, n: u64) -> String {
        format!("{}vu{n}", self.plan.subscribe.channel_prefix)
    }

    /// A random gap between two messages of a VU, µs.
    fn vu_gap(&mut self) -> u64 {
        let s = &self.plan.session;
        let span = s.send_max_ms - s.send_min_ms + 1;
        (s.send_min_ms + self.random() % span) * 1000
    }

    fn send_vu_text(&mut self, io: &mut Io, id: ConnId, text: &[u8]) {
        let mask = self.mask();
        if io
            .send(id, codec::encode_message(MessageKind::Text, text, mask))
            .is_ok()
            && self.phase <= Phase::Cooldown
        {
            self.measured.counts.vu_msgs_sent += 1;
        }
    }

    /// Session mode: VUs whose next step is due: a message, `LEAVE`, or the close.
    fn vu_events(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>, now: u64) {
        while let Some(&Reverse((due, id))) = self.schedule.peek() {
            if due > now {
                break;
            }
            self.schedule.pop();
            let Some(c) = conns.get_mut(io, id) else {
                continue;
            };
            let Some(vu) = c.vu.as_deref_mut() else {
                continue;
            };
            if vu.closing || !matches!(c.state, State::Open(_)) {
                continue;
            }
            if now >= vu.close_us {
                vu.closing = true;
                c.state = State::Closing { at_end: false };
                let mask = self.mask();
                let _ = io.send(id, codec::encode_close(1000, "", mask));
                io.close(id, CloseMode::Graceful);
                continue;
            }
            let (n, leave) = (vu.n, now >= vu.leave_us && !vu.left);
            let text = if leave {
                vu.left = true;
                "{\"event\":\"LEAVE\"}".to_string()
            } else {
                vu.said += 1;
                format!(
                    "{{\"event\":\"SAY\",\"message\":\"I'm saying {}\"}}",
                    vu.said
                )
            };
            let (left, leave_us, close_us, said) = (vu.left, vu.leave_us, vu.close_us, vu.said);
            let frame = match self.plan.session.protocol {
                SessionProtocol::Raw => text,
                SessionProtocol::Centrifuge => {
                    let data = ps::chat_data(ps::mono_us(), said, &text);
                    ps::publish_command(1000 + said as u32, &self.personal_channel(n), &data)
                }
            };
            self.send_vu_text(io, id, frame.as_bytes());
            let next = if left {
                close_us
            } else {
                (now + self.vu_gap()).min(leave_us)
            };
            self.schedule.push(Reverse((next, id)));
        }
    }

    /// Session mode, raw protocol: whatever the server sends is received.
    fn on_vu_frames(&mut self, io: &mut Io, id: ConnId, c: &mut Conn, data: &mut [u8]) {
        let State::Open(codec) = &mut c.state else {
            return;
        };
        let plan = self.plan.clone();
        let (mut received, mut ping, mut close) = (0u64, None, None);
        let result = codec.feed(data, &plan.limits, &mut |ev| match ev {
            Event::Message(..) => received += 1,
            Event::Ping(p) => ping = Some(p.to_vec()),
            Event::Pong(_) => {}
            Event::Close { code, .. } => close = Some(code),
        });
        self.measured.counts.vu_msgs_received += received;
        self.measured.counts.replies_all += received;
        if let Some(payload) = ping {
            let mask = self.mask();
            let _ = io.send(
                id,
                codec::encode_frame(OpCode::Control(Control::Pong), true, &payload, mask),
            );
        }
        if result.is_err() {
            self.measured.counts.protocol_errors += 1;
            io.close(id, CloseMode::Abort);
        } else if let Some(code) = close {
            let mask = self.mask();
            let _ = io.send(id, codec::encode_close(code.unwrap_or(1000), "", mask));
            io.close(id, CloseMode::Graceful);
        }
    }

    /// Subscribe mode: the server API answered a publication.
    fn on_api_outcome(&mut self, outcome: ApiOutcome) {
        let Some(p) = self.publisher.as_deref_mut() else {
            return;
        };
        let Some(sent) = p.fifo.pop_front() else {
            return;
        };
        match outcome {
            ApiOutcome::Ok if sent.measured => {
                self.measured.counts.pubs_ok += 1;
                self.measured.published[sent.k as usize] += 1;
                if self.plan.logs_publications() {
                    self.measured.pub_log.push((sent.k, sent.t, sent.seq));
                }
            }
            ApiOutcome::Ok => {}
            ApiOutcome::Failed(status) => {
                log::debug!("server API refused a publication ({status})");
                self.measured.counts.pubs_failed += 1;
            }
        }
    }

    /// Subscribe mode: accounts for a subscriber's subscriptions when it
    /// ends. `closed_at` (`CLOCK_MONOTONIC` µs): the churn closed it; `None`:
    /// it lasted to the end of the run, or the server dropped it (then
    /// what it did not receive is missing, as for any subscriber).
    /// Subscriptions held from the ramp to the end stay counted in
    /// `subscribed`; the others become [`PartialSub`]s.
    fn retire(&mut self, sub: &mut SubConn, closed_at: Option<u64>) {
        self.retire_as(sub, closed_at, false);
    }

    /// [`Self::retire`]; `dropped`: the server dropped it and it reconnects.
    fn retire_as(&mut self, sub: &mut SubConn, closed_at: Option<u64>, dropped: bool) {
        if self.plan.mode != Mode::Subscribe || sub.publisher || sub.retired {
            return;
        }
        sub.retired = true;
        let until = closed_at.unwrap_or(u64::MAX);
        let in_flight_from =
            closed_at.map_or(u64::MAX, |b| b.saturating_sub(self.plan.message_timeout_us));
        let m = &mut self.measured;
        for i in 0..sub.channels.len() {
            if let Some(from) = sub.gap_from.get_mut(i) {
                // Unsubscribed by the server and not subscribed again since.
                end_gap(&mut m.gaps, from, sub.channels[i], sub.url, until);
            }
            // Never confirmed: nothing was expected of it. Held from the
            // ramp to the end: it stays counted in `subscribed`.
            if sub.since[i] != 0 && (sub.late(i) || closed_at.is_some()) {
                end_subscription(m, sub, i, until, in_flight_from, dropped);
            }
        }
    }

    /// Subscribe mode with churn: closes the subscribers due to go, oldest
    /// first, and opens a connection in each one's place (same number, so
    /// the same target and channels).
    fn churn_due(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>, now: u64) {
        if self.churn_interval_us == 0 || !matches!(self.phase, Phase::Warmup | Phase::Window) {
            return;
        }
        if self.next_churn_us == 0 {
            // A random phase, so workers and processes do not churn in step.
            self.next_churn_us = now + self.random() % self.churn_interval_us;
        }
        let mut budget = CONNECTS_PER_TICK;
        while self.next_churn_us <= now && budget > 0 {
            budget -= 1;
            self.next_churn_us += self.churn_interval_us;
            let mut found = None;
            while let Some(id) = self.churn_queue.pop_front() {
                let live = conns.get_mut(io, id).is_some_and(|c| {
                    matches!(c.state, State::Open(_))
                        && c.sub.as_deref().is_some_and(|s| !s.publisher)
                });
                if live {
                    found = Some(id);
                    break;
                }
            }
            let Some(id) = found else {
                // Nobody to close now: try again an interval later.
                self.next_churn_us = now + self.churn_interval_us;
                break;
            };
            let started = self.started(id);
            let c = conns.get_mut(io, id).expect("checked above");
            if let Some(sub) = c.sub.as_deref_mut() {
                self.retire(sub, Some(ps::mono_us()));
            }
            c.state = State::Closing { at_end: false };
            let mask = self.mask();
            let _ = io.send(id, codec::encode_close(1000, "", mask));
            io.close(id, CloseMode::Graceful);
            self.measured.counts.churn_closed += 1;
            if let Some(t) = self.measured.per_target.get_mut(started.url as usize) {
                t.churn_closed += 1;
            }
            self.reopen(io, started, now);
        }
    }

    /// Churn: opens a connection in place of the one `closed` described.
    fn reopen(&mut self, io: &mut Io, closed: Started, now: u64) {
        let plan = self.plan.clone();
        let bind = (!plan.sources.is_empty())
            .then(|| SocketAddr::new(plan.sources[closed.global as usize % plan.sources.len()], 0));
        self.measured.counts.reconnects += 1;
        match io.connect(plan.urls[closed.url as usize].addr, bind) {
            Ok(id) => {
                self.note_started(
                    id,
                    Started {
                        at: now,
                        reopen: true,
                        failover: false,
                        ..closed
                    },
                );
                io.set_deadline(id, io.now_ms() + plan.handshake_timeout_ms);
            }
            Err(e) => {
                log::debug!("reconnect {}: {e}", plan.urls[closed.url as usize].addr);
                self.measured.counts.reconnects_failed += 1;
            }
        }
    }

    /// Reconnect: the server dropped subscriber `sub` (connection
    /// `started`). Its subscriptions end here (what was in flight is missed
    /// during reconnect), its channels are without a subscription from now
    /// until it is back, and its first attempt goes to the next target
    /// after a random delay.
    fn on_dropped(&mut self, sub: &mut SubConn, started: Started) {
        let now_mono = ps::mono_us();
        self.retire_as(sub, Some(now_mono), true);
        let m = &mut self.measured;
        if !m.outages.contains_key(&sub.global) {
            m.counts.failover_dropped += 1;
            if m.first_drop == 0 || now_mono < m.first_drop {
                m.first_drop = now_mono;
            }
            let o = Outage {
                since: now_mono,
                target: sub.url,
                from: Vec::new(),
            };
            m.outages.insert(sub.global, o);
        }
        let o = m.outages.get_mut(&sub.global).expect("inserted above");
        o.from.resize(sub.channels.len(), 0);
        for f in o.from.iter_mut().filter(|f| **f == 0) {
            // Subscribed when dropped (or never): the gap starts now. Gaps
            // of channels not yet back from an earlier drop go on.
            *f = now_mono;
        }
        // Channels it had subscribed again since an earlier drop are closed
        // as PartialSubs above; those it had not keep their gap's start.
        self.schedule_retry(started.global, started.url);
    }

    /// Reconnect: subscribes connection `id` again to bench channel `k`,
    /// its `i`-th, with the command id of its first subscribe.
    fn send_subscribe(&mut self, io: &mut Io, id: ConnId, i: usize, k: u64) {
        let Some(layout) = &self.plan.layout else {
            return;
        };
        let command = ps::subscribe_command(i + 2, &layout.name(k));
        let mask = self.mask();
        let _ = io.send(
            id,
            codec::encode_message(MessageKind::Text, command.as_bytes(), mask),
        );
    }

    /// Reconnect: a resubscribe of channel `i` on connection `id` was
    /// refused for now; it goes again after a delay drawn like a
    /// reconnect's.
    fn schedule_resubscribe(&mut self, id: ConnId, i: usize) {
        if let Some(due) = self.reconnect_due() {
            self.resubscribes.push(Reverse((due, id, i)));
        }
    }

    /// Reconnect: when an attempt made now is due (µs since the epoch),
    /// after a random delay in `load.reconnect_delay_ms`; `None` when there
    /// is no reconnect or no more sending.
    fn reconnect_due(&mut self) -> Option<u64> {
        let (min, max) = self.plan.reconnect?;
        if !self.sending_allowed() {
            return None;
        }
        Some(self.plan.now_us() + min + self.random() % (max - min + 1))
    }

    /// Reconnect: sends the resubscribes that are due, to connections still
    /// waiting for them.
    fn resubscribes_due(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>, now: u64) {
        if !self.sending_allowed() {
            self.resubscribes.clear();
            return;
        }
        while let Some(&Reverse((due, id, i))) = self.resubscribes.peek() {
            if due > now {
                break;
            }
            self.resubscribes.pop();
            let waiting = conns
                .get_mut(io, id)
                .and_then(|c| c.sub.as_deref())
                .filter(|s| s.gap_from.get(i).is_some_and(|&g| g != 0))
                .map(|s| s.channels[i]);
            if let Some(k) = waiting {
                self.send_subscribe(io, id, i, k);
            }
        }
    }

    /// Reconnect: the next attempt of subscriber `global`, last tried on
    /// target `url`, goes to the next target after a random delay.
    fn schedule_retry(&mut self, global: u64, url: u32) {
        if let Some(due) = self.reconnect_due() {
            let next = (url as usize + 1) % self.plan.urls.len();
            self.retries.push(Reverse((due, global, next as u32)));
        }
    }

    /// Reconnect: connection `id`, an attempt, failed (counted already).
    fn retry_after_failure(&mut self, id: ConnId) {
        let s = self.started(id);
        if s.failover {
            self.schedule_retry(s.global, s.url);
        }
    }

    /// Reconnect: starts the attempts that are due.
    fn retries_due(&mut self, io: &mut Io, now: u64) {
        if !self.sending_allowed() {
            self.retries.clear();
            return;
        }
        let plan = self.plan.clone();
        let mut budget = CONNECTS_PER_TICK;
        while let Some(&Reverse((due, global, url))) = self.retries.peek() {
            if due > now || budget == 0 {
                break;
            }
            budget -= 1;
            self.retries.pop();
            let bind = (!plan.sources.is_empty())
                .then(|| SocketAddr::new(plan.sources[global as usize % plan.sources.len()], 0));
            self.measured.counts.reconnects += 1;
            match io.connect(plan.urls[url as usize].addr, bind) {
                Ok(id) => {
                    self.note_started(
                        id,
                        Started {
                            at: now,
                            url,
                            global,
                            reopen: true,
                            failover: true,
                        },
                    );
                    io.set_deadline(id, io.now_ms() + plan.handshake_timeout_ms);
                }
                Err(e) => {
                    log::debug!("reconnect {}: {e}", plan.urls[url as usize].addr);
                    self.measured.counts.reconnects_failed += 1;
                    self.schedule_retry(global, url);
                }
            }
        }
    }

    /// Subscribe mode: sends the publications that are due.
    fn publish_due(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>, now: u64) {
        if !matches!(self.phase, Phase::Warmup | Phase::Window) {
            return;
        }
        let plan = self.plan.clone();
        let Some(layout) = &plan.layout else { return };
        let targets = layout.targets(plan.publish.to);
        let measured = self.phase == Phase::Window;
        let mut mask = self.mask();
        let p = self
            .publisher
            .as_deref_mut()
            .expect("checked by the caller");
        if p.next_us == 0 {
            p.next_us = now;
        }
        // At most a second's worth at once, should the loop have stalled.
        let mut budget = (1e6 / plan.pub_interval_us as f64).ceil() as u64 + 1;
        while p.next_us <= now && budget > 0 && !targets.is_empty() {
            budget -= 1;
            p.next_us += plan.pub_interval_us;
            let k = targets.start + p.cursor % (targets.end - targets.start);
            p.cursor += 1;
            let seq = p.seq[k as usize];
            p.seq[k as usize] += 1;
            let sent = Sent {
                k,
                measured,
                t: ps::mono_us(),
                seq,
            };
            let data = ps::publication_data(sent.t, seq, k, measured, plan.publish_size());
            let name = layout.name(k);
            if let Some(api) = p.api {
                let Some(Conn {
                    state: State::Api(a),
                    ..
                }) = conns.get_mut(io, api)
                else {
                    continue;
                };
                if io.send(api, a.request(&name, &data).into()).is_ok() {
                    p.fifo.push_back(sent);
                }
            } else if !p.conns.is_empty() {
                let pubconn = p.conns[p.conn_cursor % p.conns.len()];
                p.conn_cursor += 1;
                let Some(c) = conns.get_mut(io, pubconn) else {
                    continue;
                };
                let (State::Open(_), Some(sub)) = (&c.state, c.sub.as_deref_mut()) else {
                    continue;
                };
                let cmd_id = sub.next_id;
                sub.next_id += 1;
                let cmd = ps::publish_command(cmd_id, &name, &data);
                let frame = codec::encode_message(MessageKind::Text, cmd.as_bytes(), mask);
                mask = Some((cmd_id.wrapping_mul(0x9e37_79b9) ^ 0x5bd1_e995).to_ne_bytes());
                if io.send(pubconn, frame).is_ok() {
                    sub.awaiting.push_back((cmd_id, sent));
                }
            }
        }
    }

    fn publish(&mut self, now: u64, force: bool) {
        if !force && now < self.next_publish_us {
            return;
        }
        self.next_publish_us = now + 1_000_000;
        let mut p = self.progress.lock().expect("progress lock");
        p.phase = self.phase;
        p.conns_up = self.conns_up;
        p.counts = self.measured.counts.clone();
        // The reader takes the interval histogram and leaves an empty one.
        p.interval.add(&self.interval).expect("same bounds");
        self.interval.reset();
    }

    /// Messages still waiting when a connection ends or the run ends.
    fn settle_pending(&mut self, c: &mut Conn, connection_died: bool) {
        if let Some(out) = c.ack.as_deref_mut() {
            let counts = &mut self.measured.counts;
            if connection_died {
                // Those already past their timeout timed out; the rest were lost.
                let now = self.plan.now_us();
                counts.msgs_timed_out += out.expire(now, self.plan.message_timeout_us).measured;
                counts.msgs_lost += out.drain().measured;
            } else {
                counts.msgs_timed_out += out.drain().measured;
            }
        }
        for p in c.pending.drain(..) {
            if p.measured {
                if connection_died {
                    self.measured.counts.msgs_lost += 1;
                } else {
                    self.measured.counts.msgs_timed_out += 1;
                }
            }
        }
    }
}

/// Subscribe mode: subscription `i` of `sub` ends at `until` (µs; `u64::MAX`:
/// the end of the run): from here what it expected is reckoned from the
/// publication log (a [`PartialSub`]). One held since the ramp leaves the
/// `subscribed` tallies. `in_flight_from`: publications sent after it and
/// not received were in flight when it ended (missed, not missing).
fn end_subscription(
    m: &mut Measurements,
    sub: &SubConn,
    i: usize,
    until: u64,
    in_flight_from: u64,
    dropped: bool,
) {
    let k = sub.channels[i];
    if !sub.late(i) {
        if let Some(n) = m.subscribed.get_mut(k as usize) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = m
            .per_target
            .get_mut(sub.url as usize)
            .and_then(|t| t.subscribed.get_mut(k as usize))
        {
            *n = n.saturating_sub(1);
        }
    }
    m.partial.push(PartialSub {
        channel: k,
        target: sub.url,
        from: if sub.late(i) { sub.since[i] } else { 0 },
        until,
        in_flight_from,
        delivered: sub.delivered[i],
        last_seq: (sub.last[i] != u64::MAX).then_some(sub.last[i]),
        dropped,
    });
}

/// Reconnect: the server unsubscribed subscription `i` of `sub` at
/// `now_mono` with a code advising a resubscribe (2500-2999: a gateway
/// sends 2500 once its broker connection is back). The SDKs subscribe
/// again by themselves, and so does the bench: the subscription ends here
/// as a dropped one's does (publications in flight are missed during
/// reconnect), the channel is without it until the new reply (a [`Gap`],
/// closed by [`confirm`]), and the new one is tallied from its reply.
/// Returns false when it was not confirmed (nothing to subscribe again).
fn server_unsubscribed(
    m: &mut Measurements,
    sub: &mut SubConn,
    i: usize,
    now_mono: u64,
    in_flight_from: u64,
) -> bool {
    if sub.since.get(i).is_none_or(|&s| s == 0) {
        return false;
    }
    let n = sub.channels.len();
    sub.resub.resize(n, false);
    sub.gap_from.resize(n, 0);
    end_subscription(m, sub, i, now_mono, in_flight_from, true);
    sub.since[i] = 0;
    sub.delivered[i] = 0;
    sub.unconfirmed += 1;
    sub.resub[i] = true;
    sub.gap_from[i] = now_mono.max(1);
    true
}

/// Ends the gap on `channel` (of `target`) that began at `*from` (0: none)
/// at `until`, recording it; returns whether there was one.
fn end_gap(gaps: &mut Vec<Gap>, from: &mut u64, channel: u64, target: u32, until: u64) -> bool {
    if *from == 0 {
        return false;
    }
    gaps.push(Gap {
        channel,
        target,
        from: std::mem::take(from),
        until,
    });
    true
}

/// Subscribe and session modes: subscription `i` of `sub` is confirmed
/// (its subscribe reply, or the connect reply for server-side ones).
/// Replies to no subscription of ours, and repeated ones, count nothing.
fn confirm(m: &mut Measurements, sub: &mut SubConn, i: usize, now_mono: u64, now_us: u64) {
    let Some(since) = sub.since.get_mut(i).filter(|s| **s == 0) else {
        return;
    };
    *since = now_mono.max(1);
    sub.unconfirmed = sub.unconfirmed.saturating_sub(1);
    if let Some(from) = sub.gap_from.get_mut(i) {
        // Subscribed again after a server unsubscribe: the channel was
        // without this subscription from then until now.
        if end_gap(&mut m.gaps, from, sub.channels[i], sub.url, now_mono.max(1)) {
            m.counts.resubscribed += 1;
            m.counts.resubscribed_in_place += 1;
            return;
        }
    }
    if sub.reopened {
        if let Some(o) = m.outages.get_mut(&sub.global) {
            // Back after a drop: this channel's gap ends at its subscribe reply.
            if let Some(from) = o.from.get_mut(i) {
                end_gap(
                    &mut m.gaps,
                    from,
                    sub.channels[i],
                    o.target,
                    now_mono.max(1),
                );
            }
            if o.from.iter().all(|&f| f == 0) {
                let since = o.since;
                m.outages.remove(&sub.global);
                m.counts.failover_recovered += 1;
                let _ = m.failover.record(now_mono.saturating_sub(since).max(1));
                m.last_recovered = m.last_recovered.max(now_mono);
            }
        }
        m.counts.resubscribed += 1;
        if sub.unconfirmed == 0 {
            let _ = m
                .resubscribe
                .record(now_us.saturating_sub(sub.opened_us).max(1));
        }
        return;
    }
    m.counts.subs_ok += 1;
    // A session's personal channel is no bench channel.
    let k = sub.channels[i] as usize;
    if let Some(n) = m.subscribed.get_mut(k) {
        *n += 1;
    }
    if let Some(t) = m.per_target.get_mut(sub.url as usize) {
        t.subs_ok += 1;
        if let Some(n) = t.subscribed.get_mut(k) {
            *n += 1;
        }
    }
}

impl Handler for BenchHandler {
    type Conn = Conn;

    fn on_open(&mut self, io: &mut Io, id: ConnId, _: Origin) -> Conn {
        let publisher = self.publisher.as_deref();
        if publisher.is_some_and(|p| p.api == Some(id)) {
            let (api, _) =
                ApiPublisher::new(&self.plan.publish.api_url, &self.plan.publish.api_key)
                    .expect("validated with the scenario");
            return Conn {
                state: State::Api(api),
                pending: VecDeque::new(),
                sub: None,
                vu: None,
                ack: None,
            };
        }
        let sub = publisher.is_some_and(|p| p.conns.contains(&id)).then(|| {
            Box::new(SubConn {
                publisher: true,
                next_id: 2,
                ..SubConn::default()
            })
        });
        let hs = ClientHandshake::new(tungstenite::handshake::client::generate_key());
        let started = self.started(id);
        let url = &self.plan.urls[started.url as usize];
        let _ = io.send(id, hs.request(&url.host, &url.path, &[], &[]).into());
        let vu = (self.plan.mode == Mode::Session).then(|| {
            let leave_us = started.at + (self.plan.session.session_secs * 1e6) as u64;
            Box::new(Vu {
                n: started.global,
                started_us: started.at,
                leave_us,
                close_us: leave_us + (self.plan.session.close_after_leave_secs * 1e6) as u64,
                left: false,
                closing: false,
                said: 0,
            })
        });
        Conn {
            state: State::Handshake {
                hs,
                head: Vec::new(),
            },
            pending: VecDeque::new(),
            sub,
            vu,
            ack: None,
        }
    }

    fn on_data(&mut self, io: &mut Io, id: ConnId, c: &mut Conn, data: &mut [u8]) {
        match c.state {
            State::Handshake { .. } => self.on_handshake(io, id, c, data),
            State::Open(_)
                if self.plan.mode == Mode::Subscribe
                    || (self.plan.mode == Mode::Session
                        && self.plan.session.protocol == SessionProtocol::Centrifuge) =>
            {
                self.on_sub_frames(io, id, c, data)
            }
            State::Open(_) if self.plan.mode == Mode::Session => self.on_vu_frames(io, id, c, data),
            State::Open(_) if self.plan.mode == Mode::Ack => self.on_ack_frames(io, id, c, data),
            State::Open(_) => self.on_frames(io, id, c, data),
            State::Api(ref mut api) => {
                for outcome in api.input(data) {
                    self.on_api_outcome(outcome);
                }
            }
            State::Closing { .. } | State::Failed => {}
        }
    }

    fn on_peer_eof(&mut self, io: &mut Io, id: ConnId, _: &mut Conn) {
        io.close(id, CloseMode::Graceful);
    }

    fn on_deadline(&mut self, io: &mut Io, id: ConnId, c: &mut Conn) {
        match c.state {
            State::Handshake { .. } => self.fail_handshake(io, id, c, |k| k.fail_timeout += 1),
            State::Closing { at_end: true } => {
                self.measured.counts.close_timeouts_at_end += 1;
                io.close(id, CloseMode::Abort)
            }
            State::Open(_) | State::Closing { .. } | State::Failed | State::Api(_) => {
                io.close(id, CloseMode::Abort)
            }
        }
    }

    fn on_closed(&mut self, _: &mut Io, id: ConnId, mut c: Conn, cause: CloseCause) {
        if let Some(vu) = &c.vu {
            self.vus = self.vus.saturating_sub(1);
            if vu.closing {
                self.measured.counts.sessions_completed += 1;
                let took = self.plan.now_us().saturating_sub(vu.started_us).max(1);
                let _ = self.measured.iteration.record(took);
            } else {
                self.measured.counts.sessions_failed += 1;
            }
        }
        match c.state {
            State::Handshake { .. } => {
                // The server closed or reset before its 101 (failures we
                // decided ourselves left `State::Failed`, counted already).
                if self.reopened(id) {
                    self.measured.counts.reconnects_failed += 1;
                    self.retry_after_failure(id);
                } else {
                    self.measured.counts.fail_reset += 1;
                    self.unresolved = self.unresolved.saturating_sub(1);
                }
            }
            State::Failed => {}
            State::Api(_) => {
                if self.sending_allowed() {
                    log::error!("the server API closed the publisher's connection");
                }
            }
            State::Open(_) => {
                self.conns_up -= 1;
                self.measured.counts.conn_dropped += 1;
                let started = self.started(id);
                if let Some(sub) = c.sub.as_deref_mut() {
                    if self.plan.reconnect.is_some()
                        && !sub.publisher
                        && self.plan.mode == Mode::Subscribe
                        && self.sending_allowed()
                    {
                        self.on_dropped(sub, started);
                    } else {
                        self.retire(sub, None);
                    }
                }
                self.settle_pending(&mut c, true);
            }
            State::Closing { at_end } => {
                self.conns_up -= 1;
                if at_end && cause == CloseCause::Clean {
                    self.measured.counts.closed_at_end += 1;
                }
            }
        }
    }

    fn on_connect_failed(&mut self, _: &mut Io, id: ConnId, errno: i32) {
        if let Some(p) = self.publisher.as_deref_mut().filter(|p| p.api == Some(id)) {
            log::error!(
                "cannot connect to the server API at {}: {}",
                self.plan.publish.api_url,
                std::io::Error::from_raw_os_error(errno)
            );
            p.api = None;
            return;
        }
        if self.reopened(id) {
            self.measured.counts.reconnects_failed += 1;
            self.retry_after_failure(id);
            return;
        }
        self.measured.counts.connect_failed(errno);
        self.unresolved = self.unresolved.saturating_sub(1);
        if self.plan.mode == Mode::Session {
            self.vus = self.vus.saturating_sub(1);
            self.measured.counts.sessions_failed += 1;
        }
    }

    fn on_shutdown(&mut self, io: &mut Io, id: ConnId, c: &mut Conn) {
        if let State::Open(_) = c.state {
            self.measured.counts.conn_up_at_end += 1;
            if let Some(sub) = c.sub.as_deref().filter(|s| !s.publisher) {
                if let Some(t) = self.measured.per_target.get_mut(sub.url as usize) {
                    t.up_at_end += 1;
                }
            }
            if let Some(sub) = c.sub.as_deref_mut() {
                self.retire(sub, None);
            }
            self.settle_pending(c, false);
            c.state = State::Closing { at_end: true };
            let mask = self.mask();
            let _ = io.send(id, codec::encode_close(1000, "", mask));
            // Wait for the server to answer and close the TCP connection
            // first (RFC 6455 §7.1.1); its FIN lets the engine close without
            // a shutdown of its own (an io-wq round trip for each of a
            // million direct descriptors).
            io.set_deadline(id, io.now_ms() + self.plan.close_timeout_ms);
        } else {
            io.close(id, CloseMode::Abort);
        }
    }

    fn on_tick(&mut self, io: &mut Io) {
        let now = self.plan.now_us();
        self.advance_phase(now);
        if self.phase == Phase::Ramp {
            self.open_due_connections(io, now);
        }
        if self.phase < Phase::Cooldown {
            self.open_publishers(io, now);
        }
        if self.plan.mode == Mode::Session {
            self.start_vus(io, now);
        }
        if !self.retries.is_empty() {
            self.retries_due(io, now);
        }
        self.publish(now, false);
    }

    fn on_schedule(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>) {
        let now = self.plan.now_us();
        if self.publisher.is_some() {
            self.publish_due(io, conns, now);
        }
        self.churn_due(io, conns, now);
        if !self.resubscribes.is_empty() {
            self.resubscribes_due(io, conns, now);
        }
        if self.plan.mode == Mode::Session {
            return self.vu_events(io, conns, now);
        }
        while let Some(&Reverse((due, id))) = self.schedule.peek() {
            if due > now + self.plan.send_batch_us {
                break;
            }
            self.schedule.pop();
            if !self.sending_allowed() {
                self.schedule.clear();
                break;
            }
            let Some(c) = conns.get_mut(io, id) else {
                continue;
            };
            if !matches!(c.state, State::Open(_)) {
                continue;
            }
            if self.plan.mode == Mode::Ping {
                self.send_ping(io, id, c, now);
            } else if self.plan.mode == Mode::Ack {
                self.send_ack_message(io, id, c, now);
            } else {
                self.send_message(io, id, c, due.min(now), now);
            }
            self.schedule
                .push(Reverse((due + self.plan.interval_us, id)));
        }
    }

    fn poll_timeout(&self, _: &Io) -> Option<Duration> {
        let now = self.plan.now_us();
        let next_conn = (self.phase == Phase::Ramp && self.next_conn < self.plan.connections)
            .then(|| (self.next_conn as f64 * self.plan.connect_interval_us) as u64);
        let next_send = self.schedule.peek().map(|Reverse((due, _))| *due);
        let next_pub = self
            .publisher
            .as_deref()
            .filter(|_| matches!(self.phase, Phase::Warmup | Phase::Window))
            .map(|p| p.next_us);
        let next_churn = (self.churn_interval_us > 0
            && matches!(self.phase, Phase::Warmup | Phase::Window))
        .then_some(self.next_churn_us);
        let next_retry = self.retries.peek().map(|Reverse((due, _, _))| *due);
        let next = [next_conn, next_send, next_pub, next_churn, next_retry]
            .into_iter()
            .flatten()
            .min()?;
        Some(Duration::from_micros(next.saturating_sub(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker of a subscribe run over two targets: 4 subscribers, personal
    /// channels 0..4 and group channels 4 (subscribers 0, 1) and 5 (2, 3).
    fn handler(extra: &str) -> BenchHandler {
        let text = format!(
            "[target]\nurls = [\"ws://127.0.0.1:9/a\", \"ws://127.0.0.1:10/a\"]\n\
             [load]\nmode = \"subscribe\"\nconnections = 4\nmessage_timeout_ms = 1\n{extra}\n\
             [subscribe]\npattern = \"personal-group\"\ngroup_size = 2\n[publish]\nvia = \"none\"\n"
        );
        let m = scenario::parse(&text, "t", "t", &[]).unwrap();
        let abort = Arc::new(AtomicBool::new(false));
        let plan = Arc::new(Plan::new(&m.cells[0].scenario, 4, 0, 1, abort).unwrap());
        BenchHandler::new(
            plan,
            0,
            1,
            Arc::new(Mutex::new(Progress::default())),
            Arc::new(AtomicBool::new(false)),
        )
    }

    /// Subscriber `global`, as `say_hello` sets it up.
    fn subscriber(h: &BenchHandler, global: u64, reopened: bool) -> SubConn {
        let channels = h.plan.layout.as_ref().unwrap().of(global);
        let n = channels.len();
        SubConn {
            channels,
            last: vec![u64::MAX; n],
            delivered: vec![0; n],
            since: vec![0; n],
            unconfirmed: n,
            url: (global % 2) as u32,
            global,
            reopened,
            opened_us: 10,
            ..SubConn::default()
        }
    }

    #[test]
    fn subscriptions_are_tallied_per_target_and_churn_makes_them_partial() {
        let mut h = handler("churn_per_sec = 4");
        assert_eq!(h.measured.per_target.len(), 2);
        assert_eq!(h.churn_interval_us, 250_000, "one worker takes all 4/s");
        // Subscriber 1 (target 1) is there from the ramp to the end.
        let mut s1 = subscriber(&h, 1, false);
        for i in 0..2 {
            confirm(&mut h.measured, &mut s1, i, 1000, 20);
        }
        confirm(&mut h.measured, &mut s1, 0, 1001, 21); // a repeated reply
        confirm(&mut h.measured, &mut s1, 7, 1001, 21); // not one of ours
        assert_eq!(h.measured.counts.subs_ok, 2);
        assert_eq!(h.measured.per_target[1].subscribed, [0, 1, 0, 0, 1, 0]);
        assert_eq!(h.measured.per_target[1].subs_ok, 2);
        h.retire(&mut s1, None);
        assert!(
            h.measured.partial.is_empty(),
            "stays a whole-run subscription"
        );
        // Subscriber 3 (target 1) is closed by the churn at t = 5000 after
        // receiving seq 7 on its personal channel.
        let mut s3 = subscriber(&h, 3, false);
        for i in 0..2 {
            confirm(&mut h.measured, &mut s3, i, 1000, 20);
        }
        assert_eq!(h.measured.subscribed, [0, 1, 0, 1, 1, 1]);
        (s3.last[0], s3.delivered[0]) = (7, 3);
        h.retire(&mut s3, Some(5000));
        h.retire(&mut s3, Some(6000)); // once only
        assert_eq!(h.measured.subscribed, [0, 1, 0, 0, 1, 0]);
        assert_eq!(h.measured.per_target[1].subscribed, [0, 1, 0, 0, 1, 0]);
        assert_eq!(
            h.measured.partial[0],
            PartialSub {
                channel: 3,
                target: 1,
                from: 0,
                until: 5000,
                in_flight_from: 4000,
                delivered: 3,
                last_seq: Some(7),
                dropped: false,
            }
        );
        assert_eq!(h.measured.partial[1].channel, 5);
        assert_eq!(h.measured.partial[1].last_seq, None);
        // Its replacement resubscribes: not a static subscription, and its
        // resubscribe latency is taken at the last reply.
        let mut r3 = subscriber(&h, 3, true);
        confirm(&mut h.measured, &mut r3, 0, 7000, 30);
        assert!(h.measured.resubscribe.is_empty());
        confirm(&mut h.measured, &mut r3, 1, 7100, 40);
        assert_eq!(h.measured.resubscribe.max(), 30);
        assert_eq!(h.measured.counts.resubscribed, 2);
        assert_eq!(h.measured.counts.subs_ok, 4, "first subscriptions only");
        assert_eq!(h.measured.subscribed, [0, 1, 0, 0, 1, 0]);
        h.retire(&mut r3, None);
        let tail: Vec<(u64, u64, u64)> = h.measured.partial[2..]
            .iter()
            .map(|p| (p.channel, p.from, p.until))
            .collect();
        assert_eq!(tail, [(3, 7000, u64::MAX), (5, 7100, u64::MAX)]);
    }

    #[test]
    fn a_server_unsubscribe_advising_it_is_subscribed_again_and_its_gap_tallied() {
        let mut h = handler("reconnect = true\nreconnect_delay_ms = [100, 200]");
        h.phase = Phase::Window;
        // Subscriber 1 (target 1, channels 1 and 4) from the ramp.
        let mut s1 = subscriber(&h, 1, false);
        for i in 0..2 {
            confirm(&mut h.measured, &mut s1, i, 1000, 20);
        }
        (s1.last[0], s1.delivered[0]) = (7, 3);
        // At 5000 the server unsubscribes channel 1 with 2500.
        assert!(server_unsubscribed(&mut h.measured, &mut s1, 0, 5000, 4000));
        assert!(
            !server_unsubscribed(&mut h.measured, &mut s1, 0, 5100, 4100),
            "not subscribed again yet: nothing to end"
        );
        assert_eq!(h.measured.subscribed, [0, 0, 0, 0, 1, 0]);
        assert_eq!(
            h.measured.partial,
            [PartialSub {
                channel: 1,
                target: 1,
                from: 0,
                until: 5000,
                in_flight_from: 4000,
                delivered: 3,
                last_seq: Some(7),
                dropped: true,
            }]
        );
        // Its new subscribe reply at 6000 closes the channel's gap.
        confirm(&mut h.measured, &mut s1, 0, 6000, 30);
        assert_eq!(
            h.measured.gaps,
            [Gap {
                channel: 1,
                target: 1,
                from: 5000,
                until: 6000,
            }]
        );
        assert_eq!(h.measured.counts.resubscribed, 1);
        assert_eq!(h.measured.counts.resubscribed_in_place, 1);
        assert_eq!(h.measured.counts.subs_ok, 2, "first subscriptions only");
        // To the end: the new subscription is tallied from its reply, the
        // other channel stays a whole-run subscription.
        h.retire(&mut s1, None);
        let tail: Vec<(u64, u64, u64)> = h.measured.partial[1..]
            .iter()
            .map(|p| (p.channel, p.from, p.until))
            .collect();
        assert_eq!(tail, [(1, 6000, u64::MAX)]);
        assert_eq!(h.measured.subscribed, [0, 0, 0, 0, 1, 0]);
        // Channel 1's 20 publications, one every 500 us: 1-7 expected of
        // the first subscription, 8-10 in flight at its end, 11 (5500)
        // sent in the gap, 12-20 expected of the second.
        h.measured.pub_log = (1..=20).map(|s| (1, s * 500, s)).collect();
        let (expected, missed) = h
            .measured
            .partial_expectations()
            .iter()
            .fold((0, 0), |(e, r), (_, x)| {
                (e + x.expected, r + x.reconnect_missed)
            });
        assert_eq!((expected, missed), (16, 4));
    }

    #[test]
    fn an_unsubscribe_awaiting_its_resubscribe_at_the_end_leaves_an_open_gap() {
        let mut h = handler("reconnect = true");
        let mut s1 = subscriber(&h, 1, false);
        for i in 0..2 {
            confirm(&mut h.measured, &mut s1, i, 1000, 20);
        }
        assert!(server_unsubscribed(&mut h.measured, &mut s1, 1, 5000, 4000));
        h.retire(&mut s1, None);
        assert_eq!(
            h.measured.gaps,
            [Gap {
                channel: 4,
                target: 1,
                from: 5000,
                until: u64::MAX,
            }]
        );
        // Channel 1 stays whole-run; channel 4 ended at 5000.
        assert_eq!(h.measured.partial.len(), 1);
        assert_eq!(h.measured.subscribed, [0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn a_dropped_subscriber_reconnects_to_the_next_target_and_its_gap_is_tallied() {
        let mut h = handler("reconnect = true\nreconnect_delay_ms = [100, 200]");
        assert_eq!(h.plan.reconnect, Some((100_000, 200_000)));
        assert!(h.plan.logs_publications());
        h.phase = Phase::Window;
        // Subscriber 1 (target 1, channels 1 and 4) is dropped by the server.
        let mut s1 = subscriber(&h, 1, false);
        for i in 0..2 {
            confirm(&mut h.measured, &mut s1, i, 1000, 20);
        }
        let started = Started {
            at: 0,
            url: 1,
            global: 1,
            reopen: false,
            failover: false,
        };
        let now = h.plan.now_us();
        h.on_dropped(&mut s1, started);
        assert_eq!(h.measured.counts.failover_dropped, 1);
        assert!(h
            .measured
            .partial
            .iter()
            .all(|p| p.dropped && p.target == 1));
        assert_eq!(h.measured.subscribed, [0, 0, 0, 0, 0, 0]);
        // Its attempt: target 0 (the next one), within the jitter.
        let Reverse((due, global, url)) = *h.retries.peek().unwrap();
        assert_eq!((global, url), (1, 0));
        assert!((now + 100_000..=h.plan.now_us() + 200_000).contains(&due));
        let drop = h.measured.first_drop;
        assert!(drop > 0);
        // Back on target 0: both channels' gaps close at their replies.
        let mut r1 = subscriber(&h, 1, true);
        r1.url = 0;
        confirm(&mut h.measured, &mut r1, 0, drop + 500, 30);
        assert_eq!(h.measured.counts.failover_recovered, 0, "one channel to go");
        confirm(&mut h.measured, &mut r1, 1, drop + 700, 40);
        assert_eq!(h.measured.counts.failover_recovered, 1);
        assert_eq!(h.measured.failover.max(), 700);
        assert!(h.measured.outages.is_empty());
        let gaps: Vec<(u64, u32, u64, u64)> = h
            .measured
            .gaps
            .iter()
            .map(|g| (g.channel, g.target, g.from, g.until))
            .collect();
        assert_eq!(gaps, [(1, 1, drop, drop + 500), (4, 1, drop, drop + 700)]);
        assert_eq!(h.measured.recovered_in_secs(), Some(0.0007));
        // Dropped again and not back by the end: open gaps until the end.
        h.on_dropped(&mut r1, Started { url: 0, ..started });
        let Reverse((_, _, url)) = *h.retries.peek().unwrap();
        assert_eq!(url, 1, "from target 0 the next is 1");
        assert_eq!(h.measured.counts.failover_dropped, 2);
        h.phase = Phase::Cooldown;
        h.phase_until = 0;
        h.advance_phase(h.plan.now_us() + 10_000_000);
        assert!(h.retries.is_empty() && h.measured.outages.is_empty());
        assert_eq!(h.measured.gaps.len(), 4);
        assert!(h.measured.gaps[2..].iter().all(|g| g.until == u64::MAX));
        assert_eq!(h.measured.recovered_in_secs(), None);
    }

    #[test]
    fn without_churn_nothing_is_partial_and_no_churn_is_scheduled() {
        let mut h = handler("");
        assert_eq!(h.churn_interval_us, 0);
        let mut s0 = subscriber(&h, 0, false);
        confirm(&mut h.measured, &mut s0, 0, 1000, 20);
        h.retire(&mut s0, None);
        assert!(h.measured.partial.is_empty());
        assert_eq!(h.measured.per_target[0].subscribed, [1, 0, 0, 0, 0, 0]);
        assert_eq!(h.measured.per_target[1].subscribed, [0; 6]);
    }
}
