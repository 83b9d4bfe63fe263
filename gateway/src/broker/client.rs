//! One set of broker connections — a connection per broker shard (Redis:
//! each address is a shard, a channel lives on the shard its name hashes
//! to; NATS: one connection to the first server that answers) — and the
//! subscriptions they hold. The broker thread owns one set; with
//! `broker.placement = "workers"` every worker owns one more on its own
//! ring. Both drive it the same way: connection events in, [`Incoming`]
//! out, [`BrokerClient::reconcile`] once per loop iteration,
//! [`BrokerClient::upkeep`] once per tick.
//!
//! Subscriptions are reconciled, not replayed: each shard remembers what
//! it has subscribed; every shard that changed sends one subscribe and one
//! unsubscribe command for the difference between what is wanted and what
//! it has. A reconnect starts that set empty, so resubscribing every live
//! channel is the same code path.
//!
//! A subscription is confirmed by a barrier sent behind the subscribe
//! command (Redis `PING <token>`, a NATS `PING`): its answer means the
//! broker applied everything before it. A holder's request for a channel
//! not confirmed yet waits for that answer ([`Incoming::Subscribed`]); one
//! whose shard is lost first, or is down after a failed attempt, is
//! answered "not confirmed" at once.
//!
//! Faults: a connection that fails, closes or stays silent for three ping
//! intervals is dropped and re-made after a backoff (`reconnect_min_ms`
//! doubling to `reconnect_max_ms`); while any shard of any set is down the
//! node is degraded. When a shard comes back after a loss, its channels
//! are reported ([`Incoming::Resync`]): their subscribers may have missed
//! publications.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use engine::{CloseMode, ConnId, Io};

use super::wire::{Event, Name, Wire};
use super::BrokerLink;

/// Holders one connection set tells apart (a bit each in a `u128`): the
/// broker thread's holders are the workers, so `server.workers` is checked
/// against it when the thread carries the channels.
pub const MAX_HOLDERS: usize = 128;
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

/// A channel with holders (or kept for `unsubscribe_delay_ms`).
#[derive(Debug, Default)]
struct Chan {
    /// Which holders have it (a bit each).
    mask: u128,
    /// Since when no holder has (worker ms).
    since: Option<u64>,
    /// Holders waiting for the confirmation, with their request's token.
    waiting: Vec<(usize, u64)>,
}

/// What a connection set heard, for its owner to act on.
#[derive(Debug)]
pub enum Incoming {
    /// A message on a name (the gateway-internal spelling, see
    /// [`BrokerClient::name`]).
    Message {
        /// The name.
        name: String,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A shard came back after a loss: this channel's subscribers (the
    /// holders in `mask`) may have missed publications.
    Resync {
        /// The channel.
        channel: Arc<str>,
        /// Its holders (see [`BrokerClient::interest`]).
        mask: u128,
    },
    /// The answer to holder `holder`'s request `token` for `channel`: the
    /// broker subscription is in effect (`ok`), or could not be made.
    Subscribed {
        /// The holder.
        holder: usize,
        /// The channel.
        channel: Arc<str>,
        /// The holder's request.
        token: u64,
        /// Confirmed.
        ok: bool,
    },
}

/// A set of broker connections, one per shard, and their subscriptions.
#[derive(Debug)]
pub struct BrokerClient {
    link: Arc<BrokerLink>,
    shards: Vec<Shard>,
    /// Channels wanted: a bit per holder (the broker thread: a worker;
    /// a worker's own set: just holder 0), since when none holds it (a
    /// subscription kept for `unsubscribe_delay_ms`), confirmation state.
    channels: HashMap<Arc<str>, Chan>,
    next_barrier: u64,
    /// The earliest time a kept subscription expires (`u64::MAX`: none).
    next_expiry_ms: u64,
    /// Names always subscribed (the broker thread: control, info, its own).
    system: Vec<Arc<str>>,
    out: Vec<u8>,
    events: Vec<Event>,
    /// Every shard is up (this set's share of the node's health).
    up: bool,
    /// What arrived, for the owner to take after each call.
    pub incoming: Vec<Incoming>,
}

impl BrokerClient {
    /// A set for `link`'s broker that always subscribes `system`. It
    /// counts as down in the node's health until every shard is up.
    pub fn new(link: Arc<BrokerLink>, system: Vec<Arc<str>>) -> Self {
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
        Self {
            link,
            shards,
            channels: HashMap::new(),
            next_barrier: 1,
            next_expiry_ms: u64::MAX,
            system,
            out: Vec::new(),
            events: Vec::new(),
            up: false,
            incoming: Vec::new(),
        }
    }

    /// The link this set reports to.
    pub fn link(&self) -> &Arc<BrokerLink> {
        &self.link
    }

    /// Whether `id` is one of this set's connections.
    pub fn owns(&self, id: ConnId) -> bool {
        self.shard_by_conn(id).is_some()
    }

    /// The holders of `channel` (0: none, or not wanted).
    pub fn holders(&self, channel: &str) -> Option<u128> {
        self.channels.get(channel).map(|ch| ch.mask)
    }

    /// The shard of a channel or system name.
    fn shard_of(&self, name: &str) -> usize {
        shard_index(self.shards.len(), name)
    }

    /// Answers holder `holder`'s request `token` for `channel`.
    fn answer(&mut self, holder: usize, channel: Arc<str>, token: u64, ok: bool) {
        if !ok {
            self.link.stats.unconfirmed.fetch_add(1, Ordering::Relaxed);
        }
        self.incoming.push(Incoming::Subscribed {
            holder,
            channel,
            token,
            ok,
        });
    }

    /// Barrier `seq` of shard `i` was answered: the channels it covers are
    /// subscribed, and the holders waiting for them are told.
    fn barrier_answered(&mut self, i: usize, seq: u64) {
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
            self.answer(w, channel, token, true);
        }
    }

    /// A gateway-internal name (system names start with NUL) as a [`Name`].
    pub fn name(name: &str) -> Name<'_> {
        match name.strip_prefix('\u{0}') {
            Some("ctl") => Name::Control,
            Some("info") => Name::Info,
            Some(n) => Name::Node(n.strip_prefix("node:").unwrap_or(n)),
            None => Name::Channel(name),
        }
    }

    fn update_health(&mut self) {
        let up = self.shards.iter().all(|s| s.state == State::Up);
        if up != self.up {
            self.up = up;
            self.link.set_up(up);
        }
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
    fn lost(&mut self, io: &Io, i: usize) {
        let cfg = &self.link.config;
        let s = &mut self.shards[i];
        if s.state == State::Up {
            self.link.stats.connections.fetch_sub(1, Ordering::Relaxed);
        }
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
            self.answer(w, channel, token, false);
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

    /// Holder `holder` (below [`MAX_HOLDERS`]) gained (`on`, request `token`, answered
    /// with [`Incoming::Subscribed`] once the subscription is in effect)
    /// or lost its interest in `channel`.
    pub fn interest(&mut self, now: u64, holder: usize, channel: &Arc<str>, on: bool, token: u64) {
        debug_assert!(
            holder < MAX_HOLDERS,
            "config check: at most MAX_HOLDERS workers"
        );
        let bit = 1u128 << (holder % MAX_HOLDERS);
        let s = &self.shards[self.shard_of(channel)];
        // Down after a failed attempt (not the first connect yet): no
        // point in making the subscriber wait for the backoff.
        let down = matches!(s.state, State::Down { retry_at } if retry_at > 0);
        // Confirmation lives with the connection: a channel whose entry
        // expired may still be subscribed (its unsubscribe not sent yet).
        let confirmed =
            s.state == State::Up && s.subscribed.get(channel).is_some_and(|&b| b <= s.answered);
        let entry = self.channels.entry(channel.clone()).or_default();
        let was = entry.mask;
        let mut answer = None;
        if on {
            entry.mask |= bit;
            entry.since = None;
            if confirmed || down {
                answer = Some(confirmed);
            } else {
                entry.waiting.push((holder, token));
            }
        } else {
            entry.mask &= !bit;
            entry.waiting.retain(|&(w, _)| w != holder);
            if entry.mask == 0 {
                entry.since = Some(now);
                let expiry = now + self.link.config.unsubscribe_delay_ms;
                self.next_expiry_ms = self.next_expiry_ms.min(expiry);
            }
        }
        let is = entry.mask;
        if let Some(ok) = answer {
            self.answer(holder, channel.clone(), token, ok);
        }
        if (was == 0) != (is == 0) {
            let i = self.shard_of(channel);
            self.shards[i].dirty = true;
            // Channels held by this set, summed over the node's sets.
            let stat = &self.link.stats.channels;
            if was == 0 {
                stat.fetch_add(1, Ordering::Relaxed);
            } else {
                stat.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Makes every up shard's subscriptions what the holders need: one
    /// subscribe and one unsubscribe command per changed shard. Cheap when
    /// nothing changed (call it once per loop iteration).
    pub fn reconcile(&mut self, io: &mut Io) {
        let now = io.now_ms();
        if now >= self.next_expiry_ms {
            let delay = self.link.config.unsubscribe_delay_ms;
            let mut expired = Vec::new();
            let mut next = u64::MAX;
            self.channels.retain(|c, ch| match ch.since {
                Some(t) if ch.mask == 0 && now >= t + delay => {
                    expired.push(c.clone());
                    false
                }
                Some(t) => {
                    next = next.min(t + delay);
                    true
                }
                None => true,
            });
            self.next_expiry_ms = next;
            // The expired subscriptions go in this round.
            for c in expired {
                let i = self.shard_of(&c);
                self.shards[i].dirty = true;
            }
        }
        if !self.shards.iter().any(|s| s.dirty && s.state == State::Up) {
            return;
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
    }

    /// Publishes `payload` on a gateway-internal name; false while its
    /// shard is down.
    pub fn publish(&mut self, io: &mut Io, name: &str, payload: &[u8]) -> bool {
        let i = self.shard_of(name);
        if self.shards[i].state != State::Up {
            return false;
        }
        let shard = &mut self.shards[i];
        shard.wire.publish(&mut self.out, Self::name(name), payload);
        self.flush_out(io, i);
        true
    }

    /// Per tick: reconnects and keepalives.
    pub fn upkeep(&mut self, io: &mut Io) {
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
    }

    /// Shard `i` came (back) up: after a loss, its channels go to
    /// [`Incoming::Resync`].
    fn came_up(&mut self, io: &mut Io, i: usize) {
        let now = io.now_ms();
        let s = &mut self.shards[i];
        s.state = State::Up;
        s.backoff_ms = self.link.config.reconnect_min_ms;
        s.last_heard_ms = now;
        s.last_ping_ms = now;
        s.dirty = true;
        self.link.stats.connections.fetch_add(1, Ordering::Relaxed);
        let was_up = std::mem::replace(&mut s.was_up, true);
        if was_up {
            self.link.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            let lost: Vec<Incoming> = self
                .channels
                .iter()
                .filter(|(c, ch)| ch.mask != 0 && self.shard_of(c) == i)
                .map(|(c, ch)| Incoming::Resync {
                    channel: c.clone(),
                    mask: ch.mask,
                })
                .collect();
            self.incoming.extend(lost);
        }
        self.update_health();
    }

    /// The engine opened connection `id` (not this set's: it is closed).
    pub fn on_open(&mut self, io: &mut Io, id: ConnId) {
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

    /// Connection `id` could not be made.
    pub fn on_connect_failed(&mut self, io: &mut Io, id: ConnId, errno: i32) {
        if let Some(i) = self.shard_by_conn(id) {
            log::debug!(
                "broker {:?}: connect failed: {}",
                self.shards[i].addresses,
                io::Error::from_raw_os_error(errno)
            );
            self.lost(io, i);
        }
    }

    /// Bytes from connection `id`: what they carry goes to `incoming`.
    pub fn on_data(&mut self, io: &mut Io, id: ConnId, data: &[u8]) {
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
                    self.incoming.push(Incoming::Message { name, payload });
                }
                Event::Pong => {}
                Event::Barrier(seq) => self.barrier_answered(i, seq),
            }
        }
        self.events = events;
        if let Err(e) = result {
            log::warn!("broker {:?}: {e}", self.shards[i].addresses);
            io.close(id, CloseMode::Abort);
        }
    }

    /// The peer closed its side, or the hello's deadline passed: drop the
    /// connection (re-made after the backoff).
    pub fn abort(&mut self, io: &mut Io, id: ConnId, why: &str) {
        if !why.is_empty() {
            log::warn!("broker: {why}");
        }
        io.close(id, CloseMode::Abort);
    }

    /// Connection `id` is closed.
    pub fn on_closed(&mut self, io: &mut Io, id: ConnId) {
        if let Some(i) = self.shard_by_conn(id) {
            self.lost(io, i);
        }
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
