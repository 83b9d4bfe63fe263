//! Applications: what happens to the messages of an open WebSocket. Config
//! maps each route (a path) to one ([`crate::config::RouteConfig`]); the
//! connection layer ([`crate::conn`]) runs the WebSocket lifecycle and
//! calls the route's app with the upgrade request, each message, and the
//! end. Apps act through a [`Ctx`]: send to this connection, or ask for a
//! close by returning [`Flow::Close`].
//!
//! An app instance lives on one worker and serves that worker's connections
//! of its route, so it may keep per-worker state without locks.

pub mod echo;
pub mod frames;
pub mod pubsub;
pub mod upstream;

use bytes::Bytes;
use engine::{ConnId, Io};
use wsproto::codec::{self, FrameClass, MessageKind};
use wsproto::http::Reject;
use wsproto::session::{Backpressure, Flow, Opening, Refused, UpgradeRequest};

use std::sync::Arc;

use crate::config::{AppKind, Config};
use crate::conn::WorkerState;
use crate::counters::Counters;
use crate::upstream::{Failure, Purpose, Upstream as UpstreamClient};
use pubsub::hub::Hub;
use wsproto::http_client::ClientResponse;

/// What an application does with its connections. Every method runs on the
/// worker thread and must not block.
pub trait App {
    /// A valid upgrade request on this app's route: accept (the client gets
    /// `101`), defer (answer later through [`App::upstream_done`]), or
    /// refuse with an HTTP status.
    fn open(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _request: &UpgradeRequest<'_, '_, '_>,
    ) -> Result<Opening, Reject> {
        Ok(Opening::Accept)
    }

    /// A complete message from the client (text is valid UTF-8).
    fn message(&mut self, ctx: &mut Ctx<'_>, kind: MessageKind, payload: &[u8]) -> Flow;

    /// The connection's keepalive tick (at most every ping interval): for
    /// per-connection timers of the app.
    fn tick(&mut self, _ctx: &mut Ctx<'_>, _now: u64) -> Flow {
        Flow::Continue
    }

    /// A backend call this app made for this connection finished (see
    /// [`crate::upstream`]); the connection is still there.
    fn upstream_done(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _purpose: Purpose,
        _result: Result<ClientResponse, Failure>,
    ) -> AfterCall {
        AfterCall::Flow(Flow::Continue)
    }

    /// The connection is ending (after `open` accepted or deferred it):
    /// `code` is the first close code sent or received, 1006 when the
    /// WebSocket ended without one, `None` when it was never upgraded.
    /// Called once, when the end is decided; sends are refused from here.
    fn closed(&mut self, _ctx: &mut Ctx<'_>, _code: Option<u16>) {}
}

/// What the connection layer does after [`App::upstream_done`].
#[derive(Debug, PartialEq, Eq)]
pub enum AfterCall {
    /// For an open WebSocket: go on or close.
    Flow(Flow),
    /// Accept a deferred upgrade, naming `subprotocol`, then send `first`.
    Accept {
        /// A subprotocol the client offered (`None`: the policy's choice).
        subprotocol: Option<String>,
        /// A first message.
        first: Option<(MessageKind, Vec<u8>)>,
    },
    /// Refuse a deferred upgrade with this complete HTTP response.
    Refuse {
        /// Its status (for metrics).
        status: u16,
        /// The response bytes.
        response: Vec<u8>,
    },
}

/// One worker's application instances, one per route (index = route).
#[derive(Debug)]
pub enum RouteApp {
    /// [`echo::Echo`].
    Echo(echo::Echo),
    /// [`pubsub::PubSub`].
    PubSub(Box<pubsub::PubSub>),
    /// [`upstream::Upstream`].
    Upstream(Box<upstream::Upstream>),
}

impl RouteApp {
    /// The instances for the routes of `config`, in route order.
    pub fn for_routes(config: &Config, pubsub: &Arc<pubsub::hub::Settings>) -> Vec<RouteApp> {
        config
            .effective_routes()
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r.app {
                AppKind::Echo => RouteApp::Echo(echo::Echo),
                AppKind::Pubsub => {
                    let proxy = &config.pubsub.proxy;
                    let proxies = proxy.any().then(|| pubsub::proxy::Proxies {
                        backend: config
                            .backends
                            .iter()
                            .position(|b| b.name == proxy.backend)
                            .expect("validated: the proxy backend exists")
                            as u16,
                        cfg: proxy.clone(),
                    });
                    RouteApp::PubSub(Box::new(pubsub::PubSub::new(
                        pubsub.clone(),
                        proxies,
                        i as u8,
                    )))
                }
                AppKind::Upstream => {
                    let cfg = r
                        .upstream
                        .expect("validated: upstream routes have [routes.upstream]");
                    let backend = config
                        .backends
                        .iter()
                        .position(|b| b.name == cfg.backend)
                        .expect("validated: the backend exists");
                    let timeout = config.backends[backend].request_timeout_ms;
                    let node = (config.broker.kind != crate::config::BrokerKind::Memory)
                        .then(|| config.node_name());
                    RouteApp::Upstream(Box::new(upstream::Upstream::new(
                        cfg,
                        r.path,
                        i as u8,
                        backend as u16,
                        timeout,
                        node,
                    )))
                }
            })
            .collect()
    }

    /// The app behind the trait.
    pub fn app(&mut self) -> &mut dyn App {
        match self {
            RouteApp::Echo(a) => a,
            RouteApp::PubSub(a) => &mut **a,
            RouteApp::Upstream(a) => &mut **a,
        }
    }
}

/// An app's handle on the connection it is called for.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub(crate) io: &'a mut Io,
    pub(crate) id: ConnId,
    pub(crate) counters: &'a mut Counters,
    /// The worker's channels (pub/sub).
    pub(crate) hub: &'a mut Hub,
    /// The worker's backend client.
    pub(crate) upstream: &'a mut UpstreamClient,
    /// This worker's index.
    pub(crate) worker: usize,
    /// `io.max_send_queue_bytes`: past it the peer is a slow consumer.
    pub(crate) max_queue: usize,
    /// Messages queued during this callback batch (for latency metrics).
    pub(crate) replies: u32,
    /// Bytes queued on the connection after the last of them.
    pub(crate) queued_after: usize,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        io: &'a mut Io,
        id: ConnId,
        w: &'a mut WorkerState,
        max_queue: usize,
    ) -> Self {
        Self {
            io,
            id,
            counters: &mut w.counters,
            hub: &mut w.hub,
            upstream: &mut w.upstream,
            worker: w.worker,
            max_queue,
            replies: 0,
            queued_after: 0,
        }
    }

    /// The connection.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The worker's clock, in milliseconds (read once per loop iteration).
    pub fn now_ms(&self) -> u64 {
        self.io.now_ms()
    }

    /// Wall-clock time in Unix milliseconds (for what clients and backends
    /// read, never for deadlines).
    pub fn unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Queues bytes; with [`Backpressure::Check`], refuses when the
    /// connection's queue *before* them is over `io.max_send_queue_bytes`
    /// (one large message still goes out to a peer that reads it). Returns
    /// the bytes now queued.
    pub(crate) fn queue(&mut self, bytes: Bytes, bp: Backpressure) -> Result<usize, Refused> {
        if bp == Backpressure::Check && self.io.queued_bytes(self.id) > self.max_queue {
            return Err(Refused::Slow);
        }
        self.io.send(self.id, bytes).map_err(|_| Refused::Closed)
    }

    /// Sends one message (one unmasked frame) to this connection, encoded
    /// into a (pooled, see [`frames`]) buffer.
    pub fn send_message(&mut self, kind: MessageKind, payload: &[u8]) -> Result<(), Refused> {
        // Exactly the frame's length: a frame that fills its `Vec` becomes
        // `Bytes` without a second allocation.
        let frame = frames::frame(codec::message_len(payload.len(), false), |buf| {
            codec::encode_message_into(buf, kind, payload, None);
        });
        self.send_frame(frame, kind, payload.len())
    }

    /// Sends an already encoded message frame (e.g. one shared by every
    /// subscriber of a channel): `payload_len` is its payload's length.
    pub fn send_frame(
        &mut self,
        frame: Bytes,
        kind: MessageKind,
        payload_len: usize,
    ) -> Result<(), Refused> {
        let queued = self.queue(frame, Backpressure::Check)?;
        let c = &mut *self.counters;
        c.frames_out.add(match kind {
            MessageKind::Text => FrameClass::Text,
            MessageKind::Binary => FrameClass::Binary,
        });
        c.messages_out += 1;
        c.bytes_out += payload_len as u64;
        self.replies += 1;
        self.queued_after = queued;
        Ok(())
    }
}

/// The usual answer to a refused send: a slow consumer is closed with 1008
/// (a closed connection needs nothing more).
pub fn flow_after(sent: Result<(), Refused>) -> Flow {
    match sent {
        Err(Refused::Slow) => Flow::Close {
            code: 1008,
            reason: "slow consumer",
            ending: wsproto::session::Ending::SlowConsumer,
        },
        Ok(()) | Err(Refused::Closed) => Flow::Continue,
    }
}
