//! The HTTP/1.1 client of the worker rings: how the gateway calls its
//! backends (the `upstream` app's webhooks, the pub/sub proxies).
//!
//! Each worker has one [`Upstream`] with a pool per `[[backends]]` entry:
//! keep-alive connections made with the engine's connect role, requests
//! written by `wsproto::http`, responses read by the sans-IO
//! `wsproto::http_client::ResponseReader`. No thread, no second runtime:
//! the connections are slots of the worker's ring like client connections.
//!
//! A call never waits unboundedly and never vanishes. It ends as exactly
//! one [`Done`], pushed to [`Upstream::done`] for the handler to hand back
//! to the app that made it: the backend's response, or a [`Failure`]
//! (unavailable, overloaded, timeout, bad response) within the backend's
//! `request_timeout_ms`. Requests are not pipelined: one per connection at
//! a time, so a slow answer delays only its own connection.

pub mod circuit;
mod pool;

use std::collections::HashMap;

use bytes::Bytes;
use engine::{ConnId, Io};
use wsproto::http::HeadLimits;
use wsproto::http_client::ClientResponse;

use crate::config::BackendConfig;
use pool::Pool;
pub use pool::{PoolStats, LATENCY_BUCKETS_US, OUTCOMES};

/// Why a call got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection: the connect failed, or the circuit is open.
    Unavailable(&'static str),
    /// The worker's queue for this backend is full.
    Overloaded,
    /// No complete answer within `request_timeout_ms`.
    Timeout,
    /// An answer that is not HTTP, or a connection that broke mid-answer.
    BadResponse(String),
}

impl Failure {
    /// The HTTP status a client gets for it (a `$connect` answer).
    pub fn status(&self) -> u16 {
        match self {
            Failure::Unavailable(_) | Failure::Overloaded => 503,
            Failure::Timeout => 504,
            Failure::BadResponse(_) => 502,
        }
    }

    /// The WebSocket close code for it: 1013 "try again later" when the
    /// backend is unreachable, overloaded or slow, 1011 when it misbehaved.
    pub fn close_code(&self) -> u16 {
        match self {
            Failure::BadResponse(_) => 1011,
            _ => 1013,
        }
    }

    /// Stable label (metrics).
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Unavailable(_) => "unavailable",
            Failure::Overloaded => "overloaded",
            Failure::Timeout => "timeout",
            Failure::BadResponse(_) => "bad_response",
        }
    }

    /// A short description for the client.
    pub fn describe(&self) -> String {
        match self {
            Failure::Unavailable(why) => format!("backend unavailable ({why})"),
            Failure::Overloaded => "backend overloaded (queue full)".into(),
            Failure::Timeout => "backend timeout".into(),
            Failure::BadResponse(why) => format!("bad backend response ({why})"),
        }
    }
}

/// What a call is for: handed back with its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An `upstream` route's `$connect`.
    Connect,
    /// An `upstream` route's message webhook.
    Message,
    /// An `upstream` route's `$disconnect` (nobody waits for it).
    Disconnect,
    /// A pub/sub proxy call for the client command with this id.
    Proxy(ProxyKind, u32),
}

/// The Centrifugo-style proxies of the `pubsub` app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// Authenticates a connection.
    Connect,
    /// Answers an `rpc` command.
    Rpc,
    /// Allows, rejects or rewrites a client publication.
    Publish,
    /// Allows or rejects a subscription.
    Subscribe,
}

/// Who made a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The client connection (may be gone by the time the answer comes).
    pub conn: ConnId,
    /// Its route (index of the app).
    pub route: u8,
    /// What for.
    pub purpose: Purpose,
}

/// A finished call.
#[derive(Debug)]
pub struct Done {
    /// Who made it.
    pub caller: Caller,
    /// The answer.
    pub result: Result<ClientResponse, Failure>,
}

/// A call on its way.
#[derive(Debug)]
struct Call {
    caller: Caller,
    request: Bytes,
    /// Worker milliseconds by which it must be answered.
    deadline: u64,
    /// When it was made (worker microseconds), for the latency histogram.
    started_us: u64,
    /// Sent again once already (see [`pool`]).
    retried: bool,
}

/// One worker's backend client.
#[derive(Debug)]
pub struct Upstream {
    pools: Vec<Pool>,
    /// Connections made by this worker, by slot: their pool and state.
    conns: HashMap<ConnId, pool::UpConn>,
    /// Finished calls, for the handler to deliver (drained every loop).
    pub done: Vec<Done>,
}

impl Upstream {
    /// A client with a pool per backend (index = position in `backends`).
    pub fn new(backends: &[BackendConfig], limits: HeadLimits) -> Self {
        Self {
            pools: backends.iter().map(|b| Pool::new(b, limits)).collect(),
            conns: HashMap::new(),
            done: Vec::new(),
        }
    }

    /// The `Host` of backend `pool`, for the caller's request head.
    pub fn host(&self, pool: u16) -> &str {
        &self.pools[usize::from(pool)].host
    }

    /// Sends `request` (a complete HTTP/1.1 request) to backend `pool`.
    /// Its outcome arrives in [`Upstream::done`], possibly before this
    /// returns (an open circuit or a full queue answer at once).
    pub fn call(&mut self, io: &mut Io, pool: u16, caller: Caller, request: Bytes) {
        let p = &mut self.pools[usize::from(pool)];
        let call = Call {
            caller,
            request,
            deadline: io.now_ms() + p.cfg.request_timeout_ms,
            started_us: io.now_us(),
            retried: false,
        };
        p.submit(io, &mut self.conns, &mut self.done, pool, call);
    }

    /// True when `id` is one of this client's connections.
    pub fn owns(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    /// A connect of ours completed.
    pub fn on_open(&mut self, io: &mut Io, id: ConnId) {
        if let Some(pool) = self.conns.get(&id).map(|c| c.pool) {
            self.pools[usize::from(pool)].opened(io, &mut self.conns, &mut self.done, id);
        } else {
            // Not ours: the gateway makes no other outgoing connections.
            io.close(id, engine::CloseMode::Abort);
        }
    }

    /// A connect of ours failed (refused, timed out, ...).
    pub fn on_connect_failed(&mut self, io: &mut Io, id: ConnId, errno: i32) {
        if let Some(c) = self.conns.remove(&id) {
            let pool = c.pool;
            self.pools[usize::from(pool)].connect_failed(
                io,
                &mut self.conns,
                &mut self.done,
                pool,
                errno,
            );
        }
    }

    /// Bytes from a backend.
    pub fn on_data(&mut self, io: &mut Io, id: ConnId, data: &[u8]) {
        if let Some(pool) = self.conns.get(&id).map(|c| c.pool) {
            self.pools[usize::from(pool)].data(io, &mut self.conns, &mut self.done, id, data);
        }
    }

    /// A backend closed its side.
    pub fn on_peer_eof(&mut self, io: &mut Io, id: ConnId) {
        if let Some(pool) = self.conns.get(&id).map(|c| c.pool) {
            self.pools[usize::from(pool)].peer_eof(io, &mut self.conns, &mut self.done, id);
        }
    }

    /// Shutdown has begun.
    pub fn on_shutdown(&mut self, io: &mut Io, id: ConnId) {
        if let Some(c) = self.conns.get(&id) {
            self.pools[usize::from(c.pool)].shutdown(io, id, c);
        }
    }

    /// A connection's deadline passed (request or idle timeout).
    pub fn on_deadline(&mut self, io: &mut Io, id: ConnId) {
        if let Some(pool) = self.conns.get(&id).map(|c| c.pool) {
            self.pools[usize::from(pool)].deadline(io, &mut self.conns, &mut self.done, id);
        }
    }

    /// A connection is gone (closed by us, reset, or failed).
    pub fn on_closed(&mut self, io: &mut Io, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            let pool = c.pool;
            self.pools[usize::from(pool)].closed(io, &mut self.conns, &mut self.done, pool, id, c);
        }
    }

    /// Per loop: times out calls that waited too long for a connection.
    pub fn tick(&mut self, io: &mut Io) {
        for p in &mut self.pools {
            p.expire_queue(io, &mut self.done);
        }
    }

    /// Statistics of each pool, for metrics (index = backend).
    pub fn stats(&self, now: u64) -> impl Iterator<Item = PoolStats> + '_ {
        self.pools.iter().map(move |p| p.stats(now))
    }
}
