//! One worker's share of the channels: which of its connections subscribe
//! to what, and the delivery of publications to them.
//!
//! There is no shared map on the hot path. Each worker indexes its own
//! connections (channel → subscribers, user → connections, client id →
//! connection). A publication reaches the other workers through the engine
//! mailboxes as one message per worker, however many subscribers they have;
//! each worker encodes it once into one WebSocket frame (`Bytes`) and
//! queues that same frame to every local subscriber. One publisher's
//! publications are posted, and so delivered, in order.
//!
//! A subscriber whose send queue is over `pubsub.client_queue_max_bytes`
//! gets the configured policy (drop this publication, or disconnect 3008)
//! alone: nothing waits for it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use centrifuge_proto::codes::{self, ErrorCode};
use centrifuge_proto::reply::{self, ClientInfo, Lines};
use engine::mailbox::Mailbox;
use engine::{ConnId, Io};
use serde_json::value::RawValue;
use wsproto::codec::{self, FrameClass, MessageKind};

use crate::broker::envelope::{Control, TargetRef};
use crate::broker::{BrokerCmd, BrokerLink, LocalBroker};
use crate::config::{ChannelOptions, PubSubConfig, SlowPolicy};
use crate::counters::Counters;

/// A publication on its way to subscribers.
#[derive(Debug)]
pub struct Publication {
    /// The channel.
    pub channel: Box<str>,
    /// The data, verbatim JSON.
    pub data: Box<RawValue>,
    /// The publishing client (`None` from the server API).
    pub info: Option<(Box<str>, Box<str>)>,
}

/// The cluster-wide form of an API operation (`None` for publications,
/// which have their own path).
fn control_of(msg: &HubMsg) -> Option<Control> {
    let target = |t: &Target| match t {
        Target::User(u) => TargetRef::User(u.to_string()),
        Target::Client(c) => TargetRef::Client(c.to_string()),
    };
    Some(match msg {
        HubMsg::Subscribe(t, ch) => Control::Subscribe {
            target: target(t),
            channel: ch.to_string(),
        },
        HubMsg::Unsubscribe(t, ch) => Control::Unsubscribe {
            target: target(t),
            channel: ch.to_string(),
        },
        HubMsg::Disconnect(t, code, reason) => Control::Disconnect {
            target: target(t),
            code: *code,
            reason: reason.to_string(),
        },
        _ => return None,
    })
}

/// Which connections an API call targets.
#[derive(Debug, Clone)]
pub enum Target {
    /// Every connection of this user.
    User(Box<str>),
    /// The connection with this client id.
    Client(Box<str>),
}

/// What workers post to each other.
#[derive(Debug, Clone)]
pub enum HubMsg {
    /// Deliver to the local subscribers of the channel.
    Publish(Arc<Publication>),
    /// Server-side subscribe (API): subscribe and tell the client.
    Subscribe(Target, Arc<str>),
    /// Server-side unsubscribe (API).
    Unsubscribe(Target, Arc<str>),
    /// Disconnect with this code and reason (API).
    Disconnect(Target, u16, Arc<str>),
    /// A push API operation on one of this worker's connections, answered
    /// to `reply` (see `conn::push`).
    Push {
        /// The connection.
        conn: ConnId,
        /// What to do.
        op: crate::conn::push::ConnOp,
        /// Where the answer goes.
        reply: crate::conn::push::ReplyTo,
    },
    /// The broker connection carrying this channel was lost and is back:
    /// its local subscribers may have missed publications.
    Resync(Arc<str>),
    /// The broker thread's answer to this worker's request `token` for
    /// `channel`: the node's broker subscription is in effect (`ok`), or
    /// could not be made.
    Subscribed {
        /// The channel.
        channel: Arc<str>,
        /// The request ([`BrokerCmd::Interest`]'s token).
        token: u64,
        /// Confirmed.
        ok: bool,
    },
    /// The answer to a push, for an API connection of this worker.
    PushAnswer {
        /// The API connection.
        conn: ConnId,
        /// The answer.
        answer: crate::conn::push::PushAnswer,
    },
}

/// Per-worker figures for `/api/info` and metrics, written by the worker,
/// read by anyone.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Connections that sent `connect` successfully.
    pub clients: AtomicU64,
    /// Distinct users among them (anonymous not counted).
    pub users: AtomicU64,
    /// Channels with at least one local subscriber.
    pub channels: AtomicU64,
    /// Subscriptions.
    pub subscriptions: AtomicU64,
}

/// The pub/sub settings every worker shares, resolved from config.
#[derive(Debug)]
pub struct Settings {
    /// The configuration.
    pub config: PubSubConfig,
    /// Namespace name → options.
    namespaces: HashMap<String, ChannelOptions>,
    /// Each worker's mailbox (index = worker).
    pub mail: Arc<[Mailbox<HubMsg>]>,
    /// Each worker's figures (index = worker).
    pub stats: Arc<[HubStats]>,
    /// The cluster's broker, when there is one: publications and API
    /// operations then go through it to every node.
    pub broker: Option<Arc<BrokerLink>>,
}

impl Settings {
    /// Resolves `config`; `mail` and `stats` have one entry per worker.
    pub fn new(
        config: &PubSubConfig,
        mail: Arc<[Mailbox<HubMsg>]>,
        broker: Option<Arc<BrokerLink>>,
    ) -> Self {
        let stats: Arc<[HubStats]> = (0..mail.len()).map(|_| HubStats::default()).collect();
        Self {
            namespaces: config
                .namespaces
                .iter()
                .map(|n| (n.name.clone(), n.options()))
                .collect(),
            config: config.clone(),
            mail,
            stats,
            broker,
        }
    }

    /// The options of `channel`'s namespace (the part before the first
    /// `:`, a leading `$` for private channels ignored); `None`: unknown.
    pub fn options(&self, channel: &str) -> Option<&ChannelOptions> {
        let name = channel.strip_prefix('$').unwrap_or(channel);
        match name.split_once(':') {
            None => Some(&self.config.without_namespace),
            Some((ns, _)) => self.namespaces.get(ns),
        }
    }
}

/// One pub/sub connection.
#[derive(Debug)]
pub struct Client {
    /// The engine's id for it.
    pub conn: ConnId,
    /// The protocol's client id.
    pub client_id: Box<str>,
    /// User id from the token ("" anonymous).
    pub user: Box<str>,
    /// `connect` succeeded.
    pub connected: bool,
    /// When the WebSocket opened (worker ms).
    pub opened_ms: u64,
    /// Channels, each with this connection's index in the channel's list.
    subs: Vec<(Arc<str>, u32)>,
    /// Output held back, in order, until the broker confirms the channels
    /// its first entry waits for (see [`Hub::hold`]).
    held: VecDeque<Held>,
}

/// Lines for a client that wait for broker confirmations.
#[derive(Debug)]
struct Held {
    /// The protocol lines (newline-separated).
    lines: Vec<u8>,
    /// Channels still unconfirmed.
    waits: Vec<Arc<str>>,
    /// What to do instead if one of them fails.
    fail: OnFail,
}

/// What becomes of a held reply whose channel the broker could not
/// subscribe. The subscription is removed in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFail {
    /// A subscribe command: answer its id with error 100 (temporary: the
    /// SDKs retry).
    Error(u32),
    /// A server-side subscribe push: not sent.
    Drop,
    /// A connect reply naming the channel: disconnect with 3004 (the SDKs
    /// reconnect).
    Disconnect,
}

/// A channel this worker asked the broker thread for, not confirmed yet:
/// its subscribers get no publications, and their replies wait.
#[derive(Debug)]
struct Awaiting {
    /// The request ([`BrokerCmd::Interest`]'s token).
    token: u64,
    /// Connections with held output waiting for it.
    conns: Vec<ConnId>,
}

impl Client {
    /// Whether the client is subscribed to `channel`.
    pub fn subscribed(&self, channel: &str) -> bool {
        self.subs.iter().any(|(c, _)| &**c == channel)
    }

    /// How many channels it is subscribed to.
    pub fn subscriptions(&self) -> usize {
        self.subs.len()
    }
}

/// Pub/sub counters of one worker (published as metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct HubCounters {
    /// Publications accepted from the API.
    pub published_api: u64,
    /// Publications accepted from clients.
    pub published_client: u64,
    /// Copies queued to subscribers.
    pub deliveries: u64,
    /// Copies skipped: subscriber over its queue limit (drop policy).
    pub dropped_slow: u64,
    /// Subscribers disconnected for being slow.
    pub disconnected_slow: u64,
    /// Publications a worker's full mailbox refused.
    pub dropped_mailbox_full: u64,
    /// Error replies by code (index = code - 100, for 100..=111).
    pub errors: [u64; 12],
    /// Disconnects decided by the protocol, by code (see [`DISCONNECTS`]).
    pub disconnects: [u64; DISCONNECTS.len()],
    /// API requests by endpoint and status (see `api::ENDPOINTS`, `api::STATUSES`).
    pub api: [[u64; super::api::STATUSES.len()]; super::api::ENDPOINTS.len()],
}

/// Disconnect codes counted individually (the last entry: any other).
pub const DISCONNECTS: [u16; 12] = [
    3001, 3004, 3008, 3012, 3500, 3501, 3502, 3503, 3505, 3506, 3507, 0,
];

impl HubCounters {
    /// Counts an error reply.
    pub fn error(&mut self, e: ErrorCode) {
        if let Some(slot) = (e.code as usize)
            .checked_sub(100)
            .and_then(|i| self.errors.get_mut(i))
        {
            *slot += 1;
        }
    }

    /// Counts an API request.
    pub fn api(&mut self, endpoint: usize, status: u16) {
        let s = super::api::STATUSES
            .iter()
            .position(|&x| x == status)
            .unwrap_or(super::api::STATUSES.len() - 1);
        self.api[endpoint][s] += 1;
    }

    /// Counts a disconnect.
    pub fn disconnect(&mut self, code: u16) {
        let i = DISCONNECTS
            .iter()
            .position(|&c| c == code)
            .unwrap_or(DISCONNECTS.len() - 1);
        self.disconnects[i] += 1;
    }
}

/// One worker's hub.
#[derive(Debug)]
pub struct Hub {
    worker: usize,
    /// Shared settings and the other workers' mailboxes.
    pub settings: Arc<Settings>,
    clients: Vec<Option<Box<Client>>>,
    channels: HashMap<Arc<str>, Vec<ConnId>>,
    users: HashMap<Box<str>, Vec<ConnId>>,
    by_client_id: HashMap<Box<str>, ConnId>,
    /// Connections to disconnect once their state is at hand (the worker
    /// runs them after the current callback).
    pub pending_closes: Vec<(ConnId, u16, Arc<str>)>,
    /// Channels this worker gained or lost its last subscriber of, not yet
    /// told to the broker thread (with the request's token).
    interest: Vec<(Arc<str>, bool, u64)>,
    /// Channels waiting for the broker's confirmation.
    awaiting: HashMap<Arc<str>, Awaiting>,
    next_token: u64,
    /// This worker's own broker connections (`broker.placement =
    /// "workers"`): its channels and publications go through them.
    pub local: Option<Box<LocalBroker>>,
    /// Counters.
    pub counters: HubCounters,
    rng: u64,
}

impl Hub {
    /// The hub of worker `worker`.
    pub fn new(settings: Arc<Settings>, worker: usize) -> Self {
        let seed = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            (worker, std::time::SystemTime::now()),
        );
        Self {
            worker,
            clients: Vec::new(),
            channels: HashMap::new(),
            users: HashMap::new(),
            by_client_id: HashMap::new(),
            pending_closes: Vec::new(),
            interest: Vec::new(),
            awaiting: HashMap::new(),
            next_token: 1,
            local: settings
                .broker
                .as_ref()
                .filter(|b| b.on_workers())
                .map(|b| Box::new(LocalBroker::new(b.clone()))),
            counters: HubCounters::default(),
            rng: seed | 1,
            settings,
        }
    }

    fn stats(&self) -> &HubStats {
        &self.settings.stats[self.worker]
    }

    /// A random client id in the UUID v4 text form.
    fn client_id(&mut self) -> Box<str> {
        let mut next = || {
            // splitmix64
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let (a, b) = (next(), next());
        let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
        .into_boxed_str()
    }

    /// A WebSocket opened on a pub/sub route.
    pub fn open(&mut self, conn: ConnId, now_ms: u64) {
        let client_id = self.client_id();
        let i = conn.index();
        if self.clients.len() <= i {
            self.clients.resize_with(i + 1, || None);
        }
        self.clients[i] = Some(Box::new(Client {
            conn,
            client_id,
            user: "".into(),
            connected: false,
            opened_ms: now_ms,
            subs: Vec::new(),
            held: VecDeque::new(),
        }));
    }

    /// The client of a live connection.
    pub fn client(&self, conn: ConnId) -> Option<&Client> {
        self.clients
            .get(conn.index())?
            .as_deref()
            .filter(|c| c.conn == conn)
    }

    fn client_mut(&mut self, conn: ConnId) -> Option<&mut Client> {
        self.clients
            .get_mut(conn.index())?
            .as_deref_mut()
            .filter(|c| c.conn == conn)
    }

    /// `connect` succeeded for `conn` as `user`.
    pub fn connected(&mut self, conn: ConnId, user: &str) {
        let Some(c) = self.client_mut(conn) else {
            return;
        };
        c.connected = true;
        c.user = user.into();
        let client_id = c.client_id.clone();
        self.by_client_id.insert(client_id, conn);
        self.stats().clients.fetch_add(1, Ordering::Relaxed);
        if !user.is_empty() {
            let conns = self.users.entry(user.into()).or_default();
            let first = conns.is_empty();
            conns.push(conn);
            if first {
                self.stats().users.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Checks and makes a subscription (client command, token claim or
    /// API). `with_token`: a valid subscription token grants it whatever
    /// the namespace allows.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        channel: &str,
        with_token: bool,
        server_side: bool,
    ) -> Result<(), ErrorCode> {
        let cfg = &self.settings.config;
        if channel.len() > cfg.channel_max_length {
            return Err(codes::BAD_REQUEST);
        }
        let Some(opts) = self.settings.options(channel) else {
            return Err(codes::UNKNOWN_CHANNEL);
        };
        let limit = cfg.channel_limit;
        let allowed = server_side
            || with_token
            || (!channel.starts_with('$') && opts.allow_subscribe_for_client && {
                let user_empty = self.client(conn).is_none_or(|c| c.user.is_empty());
                !user_empty || opts.allow_subscribe_for_anonymous
            });
        let Some(c) = self.client(conn) else {
            return Err(codes::INTERNAL);
        };
        if c.subscribed(channel) {
            return Err(codes::ALREADY_SUBSCRIBED);
        }
        if c.subs.len() >= limit {
            return Err(codes::LIMIT_EXCEEDED);
        }
        if !allowed {
            return Err(codes::PERMISSION_DENIED);
        }
        let key: Arc<str> = match self.channels.get_key_value(channel) {
            Some((k, _)) => k.clone(),
            None => {
                self.stats().channels.fetch_add(1, Ordering::Relaxed);
                let key: Arc<str> = Arc::from(channel);
                if self.settings.broker.is_some() {
                    let token = self.next_token;
                    self.next_token += 1;
                    self.interest.push((Arc::clone(&key), true, token));
                    let conns = Vec::new();
                    self.awaiting.insert(key.clone(), Awaiting { token, conns });
                }
                key
            }
        };
        let subs = self.channels.entry(key.clone()).or_default();
        let pos = subs.len() as u32;
        subs.push(conn);
        self.client_mut(conn)
            .expect("checked above")
            .subs
            .push((key, pos));
        self.stats().subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes a subscription; false if there was none.
    pub fn unsubscribe(&mut self, io: &mut Io, conn: ConnId, channel: &str) -> bool {
        let Some(c) = self.client_mut(conn) else {
            return false;
        };
        let Some(i) = c.subs.iter().position(|(ch, _)| &**ch == channel) else {
            return false;
        };
        let (key, pos) = c.subs.swap_remove(i);
        // A reply waiting for this channel no longer does: the subscription
        // it answers was made and is now undone.
        let mut freed = false;
        for h in &mut c.held {
            if let Some(j) = h.waits.iter().position(|w| *w == key) {
                h.waits.swap_remove(j);
                freed = true;
            }
        }
        self.remove_from_channel(&key, pos);
        if freed {
            self.release(io, conn);
        }
        true
    }

    /// Takes `conn` out of `channel`'s list at `pos`, fixing the position
    /// the moved subscriber remembers.
    fn remove_from_channel(&mut self, channel: &Arc<str>, pos: u32) {
        let Some(list) = self.channels.get_mut(channel) else {
            return;
        };
        list.swap_remove(pos as usize);
        let moved = list.get(pos as usize).copied();
        if list.is_empty() {
            self.channels.remove(channel);
            self.awaiting.remove(channel);
            self.stats().channels.fetch_sub(1, Ordering::Relaxed);
            if self.settings.broker.is_some() {
                self.interest.push((channel.clone(), false, 0));
            }
        }
        self.stats().subscriptions.fetch_sub(1, Ordering::Relaxed);
        if let Some(other) = moved.and_then(|m| self.client_mut(m)) {
            if let Some(entry) = other
                .subs
                .iter_mut()
                .find(|(ch, _)| Arc::ptr_eq(ch, channel))
            {
                entry.1 = pos;
            }
        }
    }

    /// The connection is gone: forget it everywhere.
    pub fn closed(&mut self, conn: ConnId) {
        let Some(slot) = self.clients.get_mut(conn.index()) else {
            return;
        };
        if slot.as_ref().is_none_or(|c| c.conn != conn) {
            return;
        }
        let c = slot.take().expect("checked above");
        // Each stored position is current: removals fix the positions of
        // the subscribers they move, and this client is no longer in the
        // table for anyone to move it.
        for (channel, pos) in &c.subs {
            self.remove_from_channel(channel, *pos);
        }
        if c.connected {
            self.by_client_id.remove(&c.client_id);
            self.stats().clients.fetch_sub(1, Ordering::Relaxed);
            if !c.user.is_empty() {
                if let Some(conns) = self.users.get_mut(&c.user) {
                    conns.retain(|&x| x != conn);
                    if conns.is_empty() {
                        self.users.remove(&c.user);
                        self.stats().users.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Publishes: delivers to this worker's subscribers and posts to every
    /// other worker (one message each); with a broker, hands it to the
    /// broker thread instead (`broker.placement = "workers"`: sends it on
    /// this worker's own broker connection), and every node (this one
    /// included) delivers what comes back. Refused (error 100) while the
    /// node is degraded or the broker thread's queue is full: the
    /// publisher learns it was not sent.
    pub fn publish(
        &mut self,
        io: &mut Io,
        counters: &mut Counters,
        p: Publication,
    ) -> Result<(), ErrorCode> {
        if let Some(local) = &mut self.local {
            // `placement = "workers"`: on this worker's own connection.
            return if local.publish(io, &p) {
                Ok(())
            } else {
                Err(codes::INTERNAL)
            };
        }
        let p = Arc::new(p);
        let settings = self.settings.clone();
        if let Some(broker) = &settings.broker {
            if !broker.is_up() || broker.mail.post(io, BrokerCmd::Publish(p)).is_err() {
                broker.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(codes::INTERNAL);
            }
            return Ok(());
        }
        for (w, mailbox) in settings.mail.iter().enumerate() {
            if w != self.worker && mailbox.post(io, HubMsg::Publish(p.clone())).is_err() {
                self.counters.dropped_mailbox_full += 1;
            }
        }
        self.deliver(io, counters, &p);
        Ok(())
    }

    /// Tells the broker thread (or, with `placement = "workers"`, this
    /// worker's own broker connections) which channels this worker gained
    /// or lost (run after each batch of work; what does not fit waits).
    pub fn flush_interest(&mut self, io: &mut Io) {
        if let Some(local) = &mut self.local {
            let now = io.now_ms();
            for (channel, on, token) in self.interest.drain(..) {
                local.interest(now, &channel, on, token);
            }
            return;
        }
        let Some(broker) = self.settings.broker.clone() else {
            return;
        };
        let worker = self.worker;
        while let Some((channel, on, token)) = self.interest.first().cloned() {
            let cmd = BrokerCmd::Interest {
                worker,
                channel,
                on,
                token,
            };
            if broker.mail.post(io, cmd).is_err() {
                return;
            }
            self.interest.remove(0);
        }
    }

    /// True when the broker thread has not heard of every change yet.
    pub fn interest_pending(&self) -> bool {
        !self.interest.is_empty()
    }

    /// Applies an API action here and on every other worker.
    pub fn broadcast(&mut self, io: &mut Io, counters: &mut Counters, msg: HubMsg) {
        let settings = self.settings.clone();
        if let Some(broker) = &settings.broker {
            // Every node (this one too) applies it when it comes back.
            if let Some(c) = control_of(&msg) {
                if broker.mail.post(io, BrokerCmd::Control(c)).is_err() {
                    self.counters.dropped_mailbox_full += 1;
                }
            }
            return;
        }
        for (w, mailbox) in settings.mail.iter().enumerate() {
            if w != self.worker && mailbox.post(io, msg.clone()).is_err() {
                self.counters.dropped_mailbox_full += 1;
            }
        }
        self.apply(io, counters, msg);
    }

    /// Handles a message from another worker (or this one's own share of
    /// an API call).
    pub fn apply(&mut self, io: &mut Io, counters: &mut Counters, msg: HubMsg) {
        match msg {
            HubMsg::Publish(p) => self.deliver(io, counters, &p),
            HubMsg::Subscribe(target, channel) => {
                for conn in self.targets(&target) {
                    if self.client(conn).is_some_and(|c| c.connected)
                        && self.subscribe(conn, &channel, false, true).is_ok()
                    {
                        let mut l = Lines::new();
                        l.subscribe_push(&channel);
                        self.reply_subscribed(io, conn, &channel, l.take(), OnFail::Drop);
                    }
                }
            }
            HubMsg::Unsubscribe(target, channel) => {
                for conn in self.targets(&target) {
                    if self.unsubscribe(io, conn, &channel) {
                        let mut l = Lines::new();
                        let (code, reason) = codes::UNSUBSCRIBE_SERVER;
                        l.unsubscribe_push(&channel, code, reason);
                        self.emit(io, conn, l.take());
                    }
                }
            }
            HubMsg::Disconnect(target, code, reason) => {
                for conn in self.targets(&target) {
                    self.pending_closes.push((conn, code, reason.clone()));
                }
            }
            HubMsg::Resync(channel) => {
                // The broker may have dropped publications of this channel
                // while its connection was down: the subscribers are told,
                // and the SDKs subscribe again.
                let subs = self.channels.get(&channel).cloned().unwrap_or_default();
                for conn in subs {
                    if self.unsubscribe(io, conn, &channel) {
                        let mut l = Lines::new();
                        let (code, reason) = codes::UNSUBSCRIBE_INSUFFICIENT_STATE;
                        l.unsubscribe_push(&channel, code, reason);
                        self.emit(io, conn, l.take());
                        if let Some(b) = &self.settings.broker {
                            b.stats.resynced.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            HubMsg::Subscribed { channel, token, ok } => self.confirmed(io, &channel, token, ok),
            HubMsg::Push { .. } | HubMsg::PushAnswer { .. } => {
                unreachable!("the connection layer handles pushes")
            }
        }
    }

    fn targets(&self, target: &Target) -> Vec<ConnId> {
        match target {
            Target::User(u) => self.users.get(u).cloned().unwrap_or_default(),
            Target::Client(c) => self.by_client_id.get(c).copied().into_iter().collect(),
        }
    }

    /// Encodes `p` once and queues it to every local subscriber.
    pub fn deliver(&mut self, io: &mut Io, counters: &mut Counters, p: &Publication) {
        let Some(subs) = self.channels.get(&*p.channel) else {
            return;
        };
        if !self.awaiting.is_empty() && self.awaiting.contains_key(&*p.channel) {
            // Published before the node's subscription took effect: not
            // (reliably) for these subscribers, whose replies still wait.
            return;
        }
        let info = p
            .info
            .as_ref()
            .map(|(user, client)| ClientInfo { user, client });
        let json = reply::publication_push(&p.channel, &p.data, info);
        let frame = codec::encode_message(MessageKind::Text, &json, None);
        let limit = self.settings.config.client_queue_max_bytes;
        let policy = self.settings.config.slow_subscriber;
        let mut delivered = 0u64;
        for &conn in subs {
            if io.queued_bytes(conn) > limit {
                match policy {
                    SlowPolicy::Drop => self.counters.dropped_slow += 1,
                    SlowPolicy::Disconnect => {
                        self.pending_closes.push((
                            conn,
                            codes::SLOW.code,
                            Arc::from(codes::SLOW.reason),
                        ));
                    }
                }
                continue;
            }
            if io.send(conn, frame.clone()).is_ok() {
                delivered += 1;
            }
        }
        self.counters.deliveries += delivered;
        counters.messages_out += delivered;
        counters.bytes_out += delivered * json.len() as u64;
        counters.frames_out.0[FrameClass::Text as usize] += delivered;
    }

    /// Whether replies about a subscription to `channel` must wait for the
    /// broker (the channel is new on this worker and not confirmed yet).
    pub fn awaits(&self, channel: &str) -> bool {
        self.awaiting.contains_key(channel)
    }

    /// Whether `conn` has output waiting (later replies queue behind it).
    pub fn is_held(&self, conn: ConnId) -> bool {
        self.client(conn).is_some_and(|c| !c.held.is_empty())
    }

    /// Sends protocol `lines` to `conn`, behind any held output.
    pub fn emit(&mut self, io: &mut Io, conn: ConnId, lines: Vec<u8>) {
        match self.client_mut(conn) {
            Some(c) if !c.held.is_empty() => c.held.push_back(Held {
                lines,
                waits: Vec::new(),
                fail: OnFail::Drop,
            }),
            _ => send_text(io, conn, &lines),
        }
    }

    /// Sends `lines` about a subscription of `conn` to `channel` (made with
    /// [`Hub::subscribe`]), holding them until the broker confirms the
    /// channel when it must.
    pub fn reply_subscribed(
        &mut self,
        io: &mut Io,
        conn: ConnId,
        channel: &str,
        lines: Vec<u8>,
        fail: OnFail,
    ) {
        let waits: Vec<Arc<str>> = self
            .awaiting
            .get_key_value(channel)
            .map(|(k, _)| k.clone())
            .into_iter()
            .collect();
        self.hold(io, conn, lines, waits, fail);
    }

    /// Queues `lines` for `conn` until every channel of `waits` is
    /// confirmed by the broker (sent at once when none is pending and
    /// nothing is held before it). Everything sent to the connection
    /// through the hub afterwards queues behind it, so replies keep their
    /// order.
    pub fn hold(
        &mut self,
        io: &mut Io,
        conn: ConnId,
        lines: Vec<u8>,
        mut waits: Vec<Arc<str>>,
        fail: OnFail,
    ) {
        waits.retain(|w| self.awaiting.contains_key(w));
        if waits.is_empty() {
            return self.emit(io, conn, lines);
        }
        if self.client(conn).is_none() {
            return;
        }
        for w in &waits {
            if let Some(a) = self.awaiting.get_mut(w) {
                a.conns.push(conn);
            }
        }
        if let Some(c) = self.client_mut(conn) {
            c.held.push_back(Held { lines, waits, fail });
        }
    }

    /// Sends `conn`'s held output up to the first entry still waiting.
    fn release(&mut self, io: &mut Io, conn: ConnId) {
        let Some(c) = self.client_mut(conn) else {
            return;
        };
        let mut out = Vec::new();
        while c.held.front().is_some_and(|h| h.waits.is_empty()) {
            let h = c.held.pop_front().expect("checked");
            if !out.is_empty() && !h.lines.is_empty() {
                out.push(b'\n');
            }
            out.extend_from_slice(&h.lines);
        }
        if !out.is_empty() {
            send_text(io, conn, &out);
        }
    }

    /// The broker thread's answer for `channel`: its subscribers' held
    /// replies go out, or (not confirmed) they get the failure answer and
    /// lose the subscription.
    fn confirmed(&mut self, io: &mut Io, channel: &Arc<str>, token: u64, ok: bool) {
        let mut conns = match self.awaiting.get(channel) {
            Some(a) if a.token == token => self.awaiting.remove(channel).map(|a| a.conns),
            // An answer to an earlier request for a channel since dropped.
            _ => None,
        }
        .unwrap_or_default();
        conns.dedup();
        for conn in conns {
            let Some(c) = self.client_mut(conn) else {
                continue;
            };
            let mut failed = None;
            for h in &mut c.held {
                let Some(j) = h.waits.iter().position(|w| w == channel) else {
                    continue;
                };
                h.waits.swap_remove(j);
                if !ok {
                    failed = Some(h.fail);
                    match h.fail {
                        OnFail::Error(id) => {
                            let mut l = Lines::new();
                            l.error(id, codes::INTERNAL);
                            h.lines = l.take();
                        }
                        OnFail::Drop | OnFail::Disconnect => h.lines.clear(),
                    }
                }
            }
            match failed {
                None => {}
                Some(OnFail::Disconnect) => {
                    let d = codes::SERVER_ERROR;
                    self.pending_closes
                        .push((conn, d.code, Arc::from(d.reason)));
                    continue;
                }
                Some(f) => {
                    if let OnFail::Error(_) = f {
                        self.counters.error(codes::INTERNAL);
                    }
                    self.unsubscribe(io, conn, channel);
                }
            }
            self.release(io, conn);
        }
    }

    /// Client ids and subscriptions this worker holds (for tests and info).
    pub fn local_counts(&self) -> (usize, usize) {
        (self.by_client_id.len(), self.channels.len())
    }
}

/// Queues protocol lines as one text frame to `conn` (server pushes
/// outside a request; a closed connection just drops them).
fn send_text(io: &mut Io, conn: ConnId, lines: &[u8]) {
    if !lines.is_empty() {
        let _ = io.send(conn, codec::encode_message(MessageKind::Text, lines, None));
    }
}

/// Frame bytes of an app-level ping (`{}` in a text frame).
pub fn ping_frame() -> Bytes {
    codec::encode_message(MessageKind::Text, b"{}", None)
}
