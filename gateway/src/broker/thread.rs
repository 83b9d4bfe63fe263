//! The broker thread: an engine worker in the connect role that keeps one
//! connection per broker shard (Redis: each address is a shard, a channel
//! lives on the shard its name hashes to; NATS: one connection to the
//! first server that answers), keeps their subscriptions equal to what
//! the workers need, and carries publications both ways.
//!
//! Subscriptions are reconciled, not replayed: each shard remembers what
//! it has subscribed; once per loop iteration every shard that changed
//! sends one subscribe and one unsubscribe command for the difference
//! between what is wanted and what it has. A reconnect starts that set
//! empty, so resubscribing every live channel is the same code path.
//!
//! Faults: a connection that fails, closes or stays silent for three ping
//! intervals is dropped and re-made after a backoff (`reconnect_min_ms`
//! doubling to `reconnect_max_ms`); while any shard is down the node is
//! degraded (`/healthz` answers 503, publishes are refused). When a shard
//! comes back after a loss, the workers are told which of its channels
//! may have missed publications, and they unsubscribe those subscribers
//! with code 2500 "insufficient state", which makes the Centrifugo SDKs
//! subscribe again (and recover from the application's own history, if
//! it keeps one).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use engine::mailbox::Mailbox;
use engine::spawn::{SpawnOptions, Spawned, WorkerSetup};
use engine::{CloseCause, CloseMode, ConnId, Conns, EngineConfig, Handler, Io, Origin};

use super::envelope::{self, Control, TargetRef};
use super::wire::{Event, Name, Wire};
use super::{node_info, post, BrokerCmd, BrokerLink};
use crate::app::pubsub::hub::{HubMsg, HubStats, Target};
use crate::conn::push::{PushAnswer, ReplyTo};

/// Starts the broker thread.
pub fn spawn(
    link: Arc<BrokerLink>,
    workers: Arc<[Mailbox<HubMsg>]>,
    stats: Arc<[HubStats]>,
    shutdown: Arc<AtomicBool>,
    abort: &AtomicBool,
) -> io::Result<Spawned<()>> {
    let options = SpawnOptions {
        name: "broker".into(),
        workers: 1,
        cpus: Vec::new(),
        engine: EngineConfig {
            ring_entries: 256,
            recv_buffers: 256,
            recv_buffer_size: 64 * 1024,
            drain_ms: 200,
            // One connection per broker address (and one being replaced).
            file_table: 64,
            incremental_recv: true,
        },
    };
    let started = Instant::now();
    engine::spawn::spawn(
        options,
        abort,
        move |_| {
            Ok(WorkerSetup {
                handler: BrokerHandler::new(link.clone(), workers.clone(), stats.clone(), started),
                listeners: Vec::new(),
                shutdown: shutdown.clone(),
                bell: Some(link.bell.clone()),
            })
        },
        |_, _| (),
    )
}

/// A shard's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No connection; try again at this time.
    Down { retry_at: u64 },
    /// Connecting or saying hello.
    Starting,
    /// Ready.
    Up,
}

/// One broker connection.
#[derive(Debug)]
struct Shard {
    /// Addresses to try, in order (one for a Redis shard, the servers for NATS).
    addresses: Vec<SocketAddr>,
    next_address: usize,
    conn: Option<ConnId>,
    state: State,
    wire: Box<dyn Wire>,
    backoff_ms: u64,
    /// Names subscribed at the broker on this connection, each with the
    /// barrier whose answer confirms it.
    subscribed: HashMap<Arc<str>, u64>,
    /// The last barrier answered on this connection: a subscription with a
    /// barrier up to this one is in effect.
    answered: u64,
    /// `subscribed` may differ from what is wanted.
    dirty: bool,
    /// It was up before (a loss and a return, not the first connect).
    was_up: bool,
    last_heard_ms: u64,
    last_ping_ms: u64,
    /// Barriers sent after subscribe commands, oldest first, with the
    /// channels each one confirms.
    barriers: VecDeque<(u64, Vec<Arc<str>>)>,
}

/// A channel with local subscribers (or kept for `unsubscribe_delay_ms`).
#[derive(Debug, Default)]
struct Chan {
    /// Which workers have local subscribers (a bit each).
    mask: u64,
    /// Since when no worker has (worker ms).
    since: Option<u64>,

    /// Workers waiting for the confirmation, with their request's token.
    waiting: Vec<(usize, u64)>,
}

/// The broker thread's handler.
pub(super) struct BrokerHandler {
    link: Arc<BrokerLink>,
    workers: Arc<[Mailbox<HubMsg>]>,
    stats: Arc<[HubStats]>,
    started: Instant,
    shards: Vec<Shard>,
    /// Channels with local subscribers.
    channels: HashMap<Arc<str>, Chan>,
    /// The system names every node subscribes: control, info, its own.
    system: Vec<Arc<str>>,
    out: Vec<u8>,
    next_info_ms: u64,
    /// Push requests this node sent, waiting for their answer.
    requests: HashMap<u64, (ReplyTo, u64)>,
    next_request: u64,
    events: Vec<Event>,
    next_barrier: u64,
    /// Confirmations a full worker mailbox refused, posted again later.
    unposted: Vec<(usize, HubMsg)>,
}

impl std::fmt::Debug for BrokerHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandler")
            .field("node", &self.link.node)
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

/// The control channel, the info channel and this node's own channel.
const CONTROL: &str = "\u{0}ctl";
const INFO: &str = "\u{0}info";
const PUSH_TIMEOUT_MS: u64 = 3_000;

impl BrokerHandler {
    fn new(
        link: Arc<BrokerLink>,
        workers: Arc<[Mailbox<HubMsg>]>,
        stats: Arc<[HubStats]>,
        started: Instant,
    ) -> Self {
        let cfg = &link.config;
        let shards = super::wire::shards(cfg)
            .into_iter()
            .map(|(addresses, wire)| Shard {
                addresses,
                next_address: 0,
                conn: None,
                state: State::Down { retry_at: 0 },
                wire,
                backoff_ms: cfg.reconnect_min_ms,
                subscribed: HashMap::new(),
                answered: 0,
                dirty: true,
                was_up: false,
                last_heard_ms: 0,
                last_ping_ms: 0,
                barriers: VecDeque::new(),
            })
            .collect();
        let own: Arc<str> = format!("\u{0}node:{}", link.node).into();
        Self {
            system: vec![CONTROL.into(), INFO.into(), own],
            link,
            workers,
            stats,
            started,
            shards,
            channels: HashMap::new(),
            out: Vec::new(),
            next_info_ms: 0,
            requests: HashMap::new(),
            next_request: 1,
            events: Vec::new(),
            next_barrier: 1,
            unposted: Vec::new(),
        }
    }

    /// The shard of a channel or system name.
    fn shard_of(&self, name: &str) -> usize {
        shard_index(self.shards.len(), name)
    }

    /// Tells worker `w` whether its subscription request `token` for
    /// `channel` is confirmed at the broker (`ok`) or failed.
    fn answer_interest(&mut self, io: &mut Io, w: usize, channel: Arc<str>, token: u64, ok: bool) {
        if !ok {
            self.link.stats.unconfirmed.fetch_add(1, Ordering::Relaxed);
        }
        let msg = HubMsg::Subscribed { channel, token, ok };
        if let Some(Err(msg)) = self.workers.get(w).map(|m| m.post(io, msg)) {
            self.unposted.push((w, msg));
        }
    }

    /// Posts the confirmations a full mailbox refused before.
    fn post_unposted(&mut self, io: &mut Io) {
        for (w, msg) in std::mem::take(&mut self.unposted) {
            if let Err(msg) = self.workers[w].post(io, msg) {
                self.unposted.push((w, msg));
            }
        }
    }

    /// Barrier `seq` of shard `i` was answered: the channels it covers are
    /// subscribed, and the workers waiting for them are told.
    fn barrier_answered(&mut self, io: &mut Io, i: usize, seq: u64) {
        let mut answers = Vec::new();
        let s = &mut self.shards[i];
        s.answered = s.answered.max(seq);
        while s.barriers.front().is_some_and(|(b, _)| *b <= seq) {
            let (_, names) = s.barriers.pop_front().expect("checked");
            for name in names {
                // Still subscribed (not dropped and re-added behind a later barrier).
                let done = s.subscribed.get(&name).is_some_and(|&b| b <= s.answered);
                if let Some(ch) = self.channels.get_mut(&name).filter(|_| done) {
                    answers.extend(ch.waiting.drain(..).map(|(w, t)| (w, name.clone(), t)));
                }
            }
        }
        for (w, channel, token) in answers {
            self.answer_interest(io, w, channel, token, true);
        }
    }

    fn name(name: &str) -> Name<'_> {
        match name.strip_prefix('\u{0}') {
            Some("ctl") => Name::Control,
            Some("info") => Name::Info,
            Some(n) => Name::Node(n.strip_prefix("node:").unwrap_or(n)),
            None => Name::Channel(name),
        }
    }

    fn update_health(&self) {
        self.link
            .set_up(self.shards.iter().all(|s| s.state == State::Up));
    }

    fn connect(&mut self, io: &mut Io, i: usize) {
        let s = &mut self.shards[i];
        let addr = s.addresses[s.next_address % s.addresses.len()];
        s.next_address += 1;
        match io.connect(addr, None) {
            Ok(id) => {
                io.set_deadline(id, io.now_ms() + self.link.config.connect_timeout_ms);
                s.conn = Some(id);
                s.state = State::Starting;
            }
            Err(e) => {
                log::warn!("broker {addr}: {e}");
                self.lost(io, i);
            }
        }
    }

    /// Shard `i`'s connection is gone (or never came): retry after the backoff.
    fn lost(&mut self, io: &mut Io, i: usize) {
        let cfg = &self.link.config;
        let s = &mut self.shards[i];
        s.conn = None;
        s.subscribed.clear();
        s.dirty = true;
        s.state = State::Down {
            retry_at: io.now_ms() + s.backoff_ms,
        };
        s.backoff_ms = (s.backoff_ms * 2).min(cfg.reconnect_max_ms);
        s.barriers.clear();
        // Its subscriptions are gone with it: waiting subscribers fail
        // (error 100, temporary: the SDKs retry) rather than wait out the
        // outage; the others learn of it through `Resync` on return.
        let n = self.shards.len();
        let mut failed = Vec::new();
        for (name, ch) in &mut self.channels {
            if shard_index(n, name) == i {
                failed.extend(ch.waiting.drain(..).map(|(w, t)| (w, name.clone(), t)));
            }
        }
        for (w, channel, token) in failed {
            self.answer_interest(io, w, channel, token, false);
        }
        self.update_health();
    }

    fn shard_by_conn(&self, id: ConnId) -> Option<usize> {
        self.shards.iter().position(|s| s.conn == Some(id))
    }

    /// Sends what is in `self.out` on shard `i`.
    fn flush_out(&mut self, io: &mut Io, i: usize) {
        if self.out.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.out);
        if let Some(id) = self.shards[i].conn {
            let _ = io.send(id, bytes.into());
        }
    }

    /// Makes every up shard's subscriptions what the workers need.
    fn reconcile(&mut self, io: &mut Io) {
        let now = io.now_ms();
        let delay = self.link.config.unsubscribe_delay_ms;
        let n = self.shards.len();
        let mut expired = Vec::new();
        self.channels.retain(|name, ch| {
            let keep = ch.mask != 0 || ch.since.is_some_and(|t| now < t + delay);
            if !keep {
                expired.push(shard_index(n, name));
            }
            keep
        });
        // Their broker subscriptions go now, not with the shard's next change.
        for i in expired {
            self.shards[i].dirty = true;
        }
        for i in 0..self.shards.len() {
            if !self.shards[i].dirty || self.shards[i].state != State::Up {
                continue;
            }
            let wanted: HashSet<Arc<str>> = self
                .channels
                .keys()
                .chain(self.system.iter())
                .filter(|c| self.shard_of(c) == i)
                .cloned()
                .collect();
            let s = &mut self.shards[i];
            let add: Vec<Arc<str>> = wanted
                .iter()
                .filter(|c| !s.subscribed.contains_key(*c))
                .cloned()
                .collect();
            let remove: Vec<Arc<str>> = s
                .subscribed
                .keys()
                .filter(|c| !wanted.contains(*c))
                .cloned()
                .collect();
            if !add.is_empty() {
                let names: Vec<Name<'_>> = add.iter().map(|c| Self::name(c)).collect();
                s.wire.subscribe(&mut self.out, &names);
                self.link.stats.commands.fetch_add(1, Ordering::Relaxed);
                // Its answer confirms them (a subscriber's reply waits for it).
                let seq = self.next_barrier;
                self.next_barrier += 1;
                s.wire.barrier(&mut self.out, seq);
                s.subscribed.extend(add.iter().map(|c| (c.clone(), seq)));
                s.barriers.push_back((seq, add));
            }
            if !remove.is_empty() {
                let names: Vec<Name<'_>> = remove.iter().map(|c| Self::name(c)).collect();
                s.wire.unsubscribe(&mut self.out, &names);
                self.link.stats.commands.fetch_add(1, Ordering::Relaxed);
            }
            for c in &remove {
                s.subscribed.remove(c);
            }
            s.dirty = false;
            self.flush_out(io, i);
        }
        let n = self.channels.values().filter(|ch| ch.mask != 0).count();
        self.link.stats.channels.store(n as u64, Ordering::Relaxed);
    }

    /// Marks the shard of `channel` for reconciliation.
    fn touch(&mut self, channel: &str) {
        let i = self.shard_of(channel);
        self.shards[i].dirty = true;
    }

    fn publish_name(&mut self, io: &mut Io, name: &str, payload: &[u8]) -> bool {
        let i = self.shard_of(name);
        if self.shards[i].state != State::Up {
            return false;
        }
        let shard = &mut self.shards[i];
        shard.wire.publish(&mut self.out, Self::name(name), payload);
        self.flush_out(io, i);
        true
    }

    fn command(&mut self, io: &mut Io, cmd: BrokerCmd) {
        match cmd {
            BrokerCmd::Interest {
                worker,
                channel,
                on,
                token,
            } => {
                let bit = 1u64 << (worker % 64);
                let s = &self.shards[self.shard_of(&channel)];
                // Down after a failed attempt (not the first connect yet):
                // no point in making the subscriber wait for the backoff.
                let down = matches!(s.state, State::Down { retry_at } if retry_at > 0);
                let confirmed = s.state == State::Up
                    && s.subscribed.get(&channel).is_some_and(|&b| b <= s.answered);
                let now = io.now_ms();
                let entry = self.channels.entry(channel.clone()).or_default();
                let was = entry.mask;
                let mut answer = None;
                if on {
                    entry.mask |= bit;
                    entry.since = None;
                    if confirmed || down {
                        answer = Some(confirmed);
                    } else {
                        entry.waiting.push((worker, token));
                    }
                } else {
                    entry.mask &= !bit;
                    entry.waiting.retain(|&(w, _)| w != worker);
                    if entry.mask == 0 {
                        entry.since = Some(now);
                    }
                }
                if (was == 0) != (entry.mask == 0) {
                    self.touch(&channel);
                }
                if let Some(ok) = answer {
                    self.answer_interest(io, worker, channel, token, ok);
                }
            }
            BrokerCmd::Publish(p) => {
                let payload = envelope::encode_publication(&p);
                let sent = self.publish_name(io, &p.channel, &payload);
                let counter = if sent {
                    &self.link.stats.published
                } else {
                    &self.link.stats.dropped
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            BrokerCmd::Control(c) => {
                let payload = serde_json::to_vec(&c).unwrap_or_default();
                if !self.publish_name(io, CONTROL, &payload) {
                    log::warn!("broker down: cluster operation {c:?} not sent");
                }
            }
            BrokerCmd::Push {
                node,
                mut control,
                reply,
            } => {
                let request = self.next_request;
                self.next_request += 1;
                if let Control::Push {
                    from, request: r, ..
                } = &mut control
                {
                    *from = self.link.node.to_string();
                    *r = request;
                }
                let payload = serde_json::to_vec(&control).unwrap_or_default();
                let name = format!("\u{0}node:{node}");
                if self.publish_name(io, &name, &payload) {
                    self.requests
                        .insert(request, (reply, io.now_ms() + PUSH_TIMEOUT_MS));
                } else {
                    self.answer_local(io, reply, PushAnswer::error(503, "broker unavailable"));
                }
            }
            BrokerCmd::Answer {
                node,
                request,
                answer,
            } => {
                let c = Control::PushAnswer {
                    request,
                    status: answer.status,
                    body: String::from_utf8_lossy(&answer.body).into_owned(),
                };
                let payload = serde_json::to_vec(&c).unwrap_or_default();
                let name = format!("\u{0}node:{node}");
                self.publish_name(io, &name, &payload);
            }
        }
    }

    fn answer_local(&mut self, io: &mut Io, reply: ReplyTo, answer: PushAnswer) {
        if let ReplyTo::Local { worker, conn } = reply {
            post(
                &self.workers,
                io,
                worker,
                HubMsg::PushAnswer { conn, answer },
            );
        }
    }

    /// A message from the broker on `name`.
    fn received(&mut self, io: &mut Io, name: Name<'_>, payload: &[u8]) {
        match name {
            Name::Channel(channel) => {
                let Some(mask) = self.channels.get(channel).map(|ch| ch.mask) else {
                    return;
                };
                match envelope::decode_publication(channel, payload) {
                    Ok(p) => {
                        self.link.stats.received.fetch_add(1, Ordering::Relaxed);
                        let p = Arc::new(p);
                        for w in 0..self.workers.len().min(64) {
                            if mask & (1 << w) != 0
                                && !post(&self.workers, io, w, HubMsg::Publish(p.clone()))
                            {
                                self.link.stats.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(e) => {
                        log::debug!("broker: {e} on {channel:?}");
                        self.link.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Name::Control | Name::Info | Name::Node(_) => {
                match serde_json::from_slice::<Control>(payload) {
                    Ok(c) => self.control(io, c),
                    Err(e) => {
                        log::debug!("broker: bad control message: {e}");
                        self.link.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn control(&mut self, io: &mut Io, c: Control) {
        let target = |t: TargetRef| match t {
            TargetRef::User(u) => Target::User(u.into()),
            TargetRef::Client(c) => Target::Client(c.into()),
        };
        let msg = match c {
            Control::Subscribe { target: t, channel } => {
                HubMsg::Subscribe(target(t), channel.into())
            }
            Control::Unsubscribe { target: t, channel } => {
                HubMsg::Unsubscribe(target(t), channel.into())
            }
            Control::Disconnect {
                target: t,
                code,
                reason,
            } => HubMsg::Disconnect(target(t), code, reason.into()),
            Control::Info { node } => {
                let name = node["name"].as_str().unwrap_or_default().to_owned();
                self.link.heard(name, node);
                return;
            }
            Control::Push {
                from,
                request,
                conn,
                method,
                code,
                reason,
                kind,
                body,
            } => {
                let reply = ReplyTo::Remote {
                    node: from.into(),
                    request,
                };
                match crate::conn::push::remote_op(&conn, &method, code, reason, &kind, &body) {
                    Ok((worker, conn, op)) if worker < self.workers.len() => {
                        let msg = HubMsg::Push { conn, op, reply };
                        if !post(&self.workers, io, worker, msg) {
                            self.link.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => self.command(
                        io,
                        BrokerCmd::Answer {
                            node: match reply {
                                ReplyTo::Remote { node, .. } => node,
                                ReplyTo::Local { .. } => unreachable!(),
                            },
                            request,
                            answer: PushAnswer::gone(),
                        },
                    ),
                    Err(answer) => {
                        if let ReplyTo::Remote { node, request } = reply {
                            self.command(
                                io,
                                BrokerCmd::Answer {
                                    node,
                                    request,
                                    answer,
                                },
                            );
                        }
                    }
                }
                return;
            }
            Control::PushAnswer {
                request,
                status,
                body,
            } => {
                if let Some((reply, _)) = self.requests.remove(&request) {
                    let answer = PushAnswer {
                        status,
                        body: body.into_bytes(),
                    };
                    self.answer_local(io, reply, answer);
                }
                return;
            }
        };
        for w in 0..self.workers.len() {
            if !post(&self.workers, io, w, msg.clone()) {
                self.link.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Per loop: reconnects, keepalives, push timeouts, the info beacon.
    fn upkeep(&mut self, io: &mut Io) {
        let now = io.now_ms();
        let ping = self.link.config.ping_interval_ms;
        for i in 0..self.shards.len() {
            match self.shards[i].state {
                State::Down { retry_at } if now >= retry_at && !io.is_shutting_down() => {
                    self.connect(io, i)
                }
                State::Up => {
                    let s = &mut self.shards[i];
                    if now.saturating_sub(s.last_heard_ms) > 3 * ping {
                        log::warn!("broker {:?}: silent for {} ms", s.addresses, 3 * ping);
                        if let Some(id) = s.conn {
                            io.close(id, CloseMode::Abort);
                        }
                    } else if now.saturating_sub(s.last_ping_ms) >= ping {
                        s.last_ping_ms = now;
                        s.wire.ping(&mut self.out);
                        self.flush_out(io, i);
                    }
                }
                _ => {}
            }
        }
        if !self.requests.is_empty() {
            let expired: Vec<u64> = self
                .requests
                .iter()
                .filter(|(_, (_, at))| now >= *at)
                .map(|(r, _)| *r)
                .collect();
            for r in expired {
                if let Some((reply, _)) = self.requests.remove(&r) {
                    let answer = PushAnswer::error(504, "the connection's node did not answer");
                    self.answer_local(io, reply, answer);
                }
            }
        }
        if now >= self.next_info_ms {
            self.next_info_ms = now + self.link.config.info_interval_ms;
            let info = node_info(
                &self.link.node,
                &self.stats,
                self.started,
                self.link.is_up(),
            );
            let c = Control::Info { node: info };
            let payload = serde_json::to_vec(&c).unwrap_or_default();
            self.publish_name(io, INFO, &payload);
        }
    }

    /// Shard `i` came (back) up: channels it lost while down are announced
    /// to the workers, whose subscribers get "insufficient state".
    fn came_up(&mut self, io: &mut Io, i: usize) {
        let now = io.now_ms();
        let s = &mut self.shards[i];
        s.state = State::Up;
        s.backoff_ms = self.link.config.reconnect_min_ms;
        s.last_heard_ms = now;
        s.last_ping_ms = now;
        s.dirty = true;
        let was_up = std::mem::replace(&mut s.was_up, true);
        if was_up {
            self.link.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            let lost: Vec<(Arc<str>, u64)> = self
                .channels
                .iter()
                .filter(|(c, ch)| ch.mask != 0 && self.shard_of(c) == i)
                .map(|(c, ch)| (c.clone(), ch.mask))
                .collect();
            for (channel, mask) in lost {
                for w in 0..self.workers.len().min(64) {
                    if mask & (1 << w) != 0 {
                        post(&self.workers, io, w, HubMsg::Resync(channel.clone()));
                    }
                }
            }
        }
        self.update_health();
    }
}

impl Handler for BrokerHandler {
    type Conn = ();

    fn on_open(&mut self, io: &mut Io, id: ConnId, _origin: Origin) {
        let Some(i) = self.shard_by_conn(id) else {
            io.close(id, CloseMode::Abort);
            return;
        };
        io.set_deadline(id, io.now_ms() + self.link.config.connect_timeout_ms);
        let s = &mut self.shards[i];
        s.wire.reset();
        s.wire.hello(&mut self.out);
        self.flush_out(io, i);
    }

    fn on_connect_failed(&mut self, io: &mut Io, id: ConnId, errno: i32) {
        if let Some(i) = self.shard_by_conn(id) {
            log::debug!(
                "broker {:?}: connect failed: {}",
                self.shards[i].addresses,
                io::Error::from_raw_os_error(errno)
            );
            self.lost(io, i);
        }
    }

    fn on_data(&mut self, io: &mut Io, id: ConnId, _conn: &mut (), data: &mut [u8]) {
        let Some(i) = self.shard_by_conn(id) else {
            return;
        };
        self.shards[i].last_heard_ms = io.now_ms();
        let mut events = std::mem::take(&mut self.events);
        let result = self.shards[i].wire.input(data, &mut self.out, &mut events);
        self.flush_out(io, i);
        for e in events.drain(..) {
            match e {
                Event::Ready => {
                    io.set_deadline(id, 0);
                    self.came_up(io, i);
                }
                Event::Message { name, payload } => {
                    let channel = name;
                    let n = Self::name(&channel);
                    self.received(io, n, &payload);
                }
                Event::Pong => {}
                Event::Barrier(seq) => self.barrier_answered(io, i, seq),
            }
        }
        self.events = events;
        if let Err(e) = result {
            log::warn!("broker {:?}: {e}", self.shards[i].addresses);
            io.close(id, CloseMode::Abort);
        }
    }

    fn on_peer_eof(&mut self, io: &mut Io, id: ConnId, _conn: &mut ()) {
        io.close(id, CloseMode::Abort);
    }

    fn on_deadline(&mut self, io: &mut Io, id: ConnId, _conn: &mut ()) {
        // Only the hello has a deadline.
        log::warn!("broker: no answer to the connection's hello in time");
        io.close(id, CloseMode::Abort);
    }

    fn on_closed(&mut self, io: &mut Io, id: ConnId, _conn: (), _cause: CloseCause) {
        if let Some(i) = self.shard_by_conn(id) {
            self.lost(io, i);
        }
    }

    fn on_wake(&mut self, io: &mut Io, _conns: &mut Conns<'_, ()>) {
        let link = self.link.clone();
        while let Some(cmd) = link.mail.pop() {
            self.command(io, cmd);
        }
        self.reconcile(io);
    }

    fn on_tick(&mut self, io: &mut Io) {
        self.upkeep(io);
        if !self.unposted.is_empty() {
            self.post_unposted(io);
        }
    }

    fn on_schedule(&mut self, io: &mut Io, _conns: &mut Conns<'_, ()>) {
        self.reconcile(io);
    }
}

/// The shard of a channel or system name among `n` shards.
fn shard_index(n: usize, name: &str) -> usize {
    if n <= 1 || name.starts_with('\u{0}') {
        // System names all live on shard 0: one place for control.
        return 0;
    }
    // FNV-1a: stable across nodes and versions (std's hasher is neither).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}
