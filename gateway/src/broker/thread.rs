//! The broker thread: an engine worker in the connect role that owns one
//! set of broker connections ([`BrokerClient`]: a connection per shard,
//! subscriptions reconciled, reconnects, keepalives) and the node's
//! control path: cluster-wide API operations on the control channel, the
//! info beacon, pushes to another node's connection and their answers.
//!
//! With `broker.placement = "thread"` it also carries every publication
//! both ways and holds one broker subscription per channel the workers
//! need (a bit per worker); with `"workers"` the workers do that on their
//! own connections (`super::local`) and this set subscribes only the
//! system names.
//!
//! When a shard comes back after a loss, the workers holding its channels
//! are told, and they unsubscribe those subscribers with code 2500
//! "insufficient state", which makes the Centrifugo SDKs subscribe again
//! (and recover from the application's own history, if it keeps one).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use engine::mailbox::Mailbox;
use engine::spawn::{SpawnOptions, Spawned, WorkerSetup};
use engine::{CloseCause, ConnId, Conns, EngineConfig, Handler, Io, Origin};

use super::client::{BrokerClient, Incoming, MAX_HOLDERS};
use super::envelope::{self, Control, TargetRef};
use super::wire::Name;
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

/// The broker thread's handler.
pub(super) struct BrokerHandler {
    link: Arc<BrokerLink>,
    workers: Arc<[Mailbox<HubMsg>]>,
    stats: Arc<[HubStats]>,
    started: Instant,
    /// The connections: with `placement = "thread"` they carry every
    /// channel the workers hold (a bit per worker); with `"workers"`
    /// only the system names.
    client: BrokerClient,
    next_info_ms: u64,
    /// Push requests this node sent, waiting for their answer.
    requests: HashMap<u64, (ReplyTo, u64)>,
    next_request: u64,
    /// Confirmations a full worker mailbox refused, posted again later.
    unposted: Vec<(usize, HubMsg)>,
}

impl std::fmt::Debug for BrokerHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandler")
            .field("node", &self.link.node)
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
        let own: Arc<str> = format!("\u{0}node:{}", link.node).into();
        let system = vec![CONTROL.into(), INFO.into(), own];
        Self {
            client: BrokerClient::new(link.clone(), system),
            link,
            workers,
            stats,
            started,
            next_info_ms: 0,
            requests: HashMap::new(),
            next_request: 1,
            unposted: Vec::new(),
        }
    }

    fn command(&mut self, io: &mut Io, cmd: BrokerCmd) {
        match cmd {
            BrokerCmd::Interest {
                worker,
                channel,
                on,
                token,
            } => {
                self.client
                    .interest(io.now_ms(), worker, &channel, on, token);
                self.take_incoming(io);
            }
            BrokerCmd::Publish(p) => {
                let payload = envelope::encode_publication(&p);
                let sent = self.client.publish(io, &p.channel, &payload);
                self.link.stats.count_publication(sent);
            }
            BrokerCmd::Control(c) => {
                let payload = serde_json::to_vec(&c).unwrap_or_default();
                if !self.client.publish(io, CONTROL, &payload) {
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
                if self.client.publish(io, &name, &payload) {
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
                self.client.publish(io, &name, &payload);
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
                let Some(mask) = self.client.holders(channel) else {
                    return;
                };
                match envelope::decode_publication(channel, payload) {
                    Ok(p) => {
                        self.link.stats.received.fetch_add(1, Ordering::Relaxed);
                        let p = Arc::new(p);
                        for w in workers_in(mask, self.workers.len()) {
                            if !post(&self.workers, io, w, HubMsg::Publish(p.clone())) {
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
        self.client.upkeep(io);
        self.take_incoming(io);
        let now = io.now_ms();
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
            self.client.publish(io, INFO, &payload);
        }
    }

    /// What the connections heard: messages, and the channels of a shard
    /// that came back after a loss (their workers' subscribers get
    /// "insufficient state").
    fn take_incoming(&mut self, io: &mut Io) {
        for m in std::mem::take(&mut self.client.incoming) {
            match m {
                Incoming::Message { name, payload } => {
                    self.received(io, BrokerClient::name(&name), &payload)
                }
                Incoming::Resync { channel, mask } => {
                    for w in workers_in(mask, self.workers.len()) {
                        post(&self.workers, io, w, HubMsg::Resync(channel.clone()));
                    }
                }
                Incoming::Subscribed {
                    holder,
                    channel,
                    token,
                    ok,
                } => {
                    let msg = HubMsg::Subscribed { channel, token, ok };
                    if let Some(Err(msg)) = self.workers.get(holder).map(|m| m.post(io, msg)) {
                        self.unposted.push((holder, msg));
                    }
                }
            }
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
}

impl Handler for BrokerHandler {
    type Conn = ();

    fn on_open(&mut self, io: &mut Io, id: ConnId, _origin: Origin) {
        self.client.on_open(io, id);
    }

    fn on_connect_failed(&mut self, io: &mut Io, id: ConnId, errno: i32) {
        self.client.on_connect_failed(io, id, errno);
        self.take_incoming(io);
    }

    fn on_data(&mut self, io: &mut Io, id: ConnId, _conn: &mut (), data: &mut [u8]) {
        self.client.on_data(io, id, data);
        self.take_incoming(io);
    }

    fn on_peer_eof(&mut self, io: &mut Io, id: ConnId, _conn: &mut ()) {
        self.client.abort(io, id, "");
    }

    fn on_deadline(&mut self, io: &mut Io, id: ConnId, _conn: &mut ()) {
        // Only the hello has a deadline.
        self.client
            .abort(io, id, "no answer to the connection's hello in time");
    }

    fn on_closed(&mut self, io: &mut Io, id: ConnId, _conn: (), _cause: CloseCause) {
        self.client.on_closed(io, id);
        self.take_incoming(io);
    }

    fn on_wake(&mut self, io: &mut Io, _conns: &mut Conns<'_, ()>) {
        let link = self.link.clone();
        while let Some(cmd) = link.mail.pop() {
            self.command(io, cmd);
        }
        self.client.reconcile(io);
    }

    fn on_tick(&mut self, io: &mut Io) {
        self.upkeep(io);
        if !self.unposted.is_empty() {
            self.post_unposted(io);
        }
    }

    fn on_schedule(&mut self, io: &mut Io, _conns: &mut Conns<'_, ()>) {
        self.client.reconcile(io);
    }
}

/// The workers (of `workers`) whose bit is set in a holder mask.
fn workers_in(mask: u128, workers: usize) -> impl Iterator<Item = usize> {
    (0..workers.min(MAX_HOLDERS)).filter(move |w| mask & (1 << w) != 0)
}
