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
pub mod pubsub;

use bytes::Bytes;
use engine::{ConnId, Io};
use wsproto::codec::{self, FrameClass, MessageKind};
use wsproto::http::Reject;
use wsproto::session::{Backpressure, Flow, Refused, UpgradeRequest};

use std::sync::Arc;

use crate::config::{AppKind, RouteConfig};
use crate::counters::Counters;
use pubsub::hub::Hub;

/// What an application does with its connections. Every method runs on the
/// worker thread and must not block.
pub trait App {
    /// A valid upgrade request on this app's route: accept (the client gets
    /// `101`) or refuse with an HTTP status.
    fn open(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _request: &UpgradeRequest<'_, '_, '_>,
    ) -> Result<(), Reject> {
        Ok(())
    }

    /// A complete message from the client (text is valid UTF-8).
    fn message(&mut self, ctx: &mut Ctx<'_>, kind: MessageKind, payload: &[u8]) -> Flow;

    /// The connection's keepalive tick (at most every ping interval): for
    /// per-connection timers of the app.
    fn tick(&mut self, _ctx: &mut Ctx<'_>, _now: u64) -> Flow {
        Flow::Continue
    }

    /// The connection is gone (after `open` accepted it).
    fn closed(&mut self, _ctx: &mut Ctx<'_>) {}
}

/// One worker's application instances, one per route (index = route).
#[derive(Debug)]
pub enum RouteApp {
    /// [`echo::Echo`].
    Echo(echo::Echo),
    /// [`pubsub::PubSub`].
    PubSub(pubsub::PubSub),
}

impl RouteApp {
    /// The instances for `routes`, in route order.
    pub fn for_routes(
        routes: &[RouteConfig],
        pubsub: &Arc<pubsub::hub::Settings>,
    ) -> Vec<RouteApp> {
        routes
            .iter()
            .map(|r| match r.app {
                AppKind::Echo => RouteApp::Echo(echo::Echo),
                AppKind::Pubsub => RouteApp::PubSub(pubsub::PubSub::new(pubsub.clone())),
            })
            .collect()
    }

    /// The app behind the trait.
    pub fn app(&mut self) -> &mut dyn App {
        match self {
            RouteApp::Echo(a) => a,
            RouteApp::PubSub(a) => a,
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
        counters: &'a mut Counters,
        hub: &'a mut Hub,
        max_queue: usize,
    ) -> Self {
        Self {
            io,
            id,
            counters,
            hub,
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

    /// Sends one message (one unmasked frame) to this connection.
    pub fn send_message(&mut self, kind: MessageKind, payload: &[u8]) -> Result<(), Refused> {
        let frame = codec::encode_message(kind, payload, None);
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
