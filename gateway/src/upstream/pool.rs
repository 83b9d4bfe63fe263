//! One backend's connections on one worker: idle keep-alive connections,
//! connects in progress, the bounded queue of calls waiting for a
//! connection, the circuit breaker, and the counters behind the metrics.
//!
//! A connection is idle, connecting, or busy with exactly one call. A call
//! is queued, or on a busy connection; it leaves as one [`Done`]. Retry
//! rule: a call sent on a *reused* connection that closes before any byte
//! of the answer arrives is sent once more on another connection (the
//! backend closed an idle keep-alive connection as we wrote; it never saw
//! the request). Any other break is a failure, never a silent resend.

use std::collections::{HashMap, VecDeque};

use engine::{CloseMode, ConnId, Io};
use wsproto::http::HeadLimits;
use wsproto::http_client::{ClientResponse, Progress, ResponseReader};

use super::circuit::{Admit, Circuit, State};
use super::{Call, Done, Failure};
use crate::config::BackendConfig;
use crate::telemetry::histogram::LocalHistogram;

/// Upper bounds of the upstream latency histogram's buckets, microseconds.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// Outcome labels of `gateway_upstream_requests_total`, by index.
pub const OUTCOMES: [&str; 9] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "unavailable",
    "overloaded",
    "timeout",
    "bad_response",
];

/// A connection of the pool.
#[derive(Debug)]
pub(super) struct UpConn {
    /// Its backend.
    pub(super) pool: u16,
    /// Connected (else the connect is in flight).
    connected: bool,
    /// Responses read on it so far.
    served: u32,
    /// The call it carries, with the reader of its answer.
    busy: Option<Box<(Call, ResponseReader)>>,
}

/// A snapshot for metrics.
#[derive(Debug, Clone)]
pub struct PoolStats {
    /// Backend name.
    pub name: String,
    /// Calls by outcome ([`OUTCOMES`]).
    pub outcomes: [u64; 9],
    /// Calls on a connection.
    pub in_flight: usize,
    /// Calls waiting for a connection.
    pub queued: usize,
    /// Connections open or connecting.
    pub connections: usize,
    /// Connects started / failed.
    pub connects: u64,
    /// Connects that failed.
    pub connect_failures: u64,
    /// Calls sent a second time (see the module docs).
    pub retries: u64,
    /// Times the circuit opened.
    pub circuit_opened: u64,
    /// 0 closed, 1 half-open, 2 open.
    pub circuit_state: u8,
    /// Latency of answered calls (made → answer complete).
    pub latency: LocalHistogram,
}

/// One backend's pool on one worker.
#[derive(Debug)]
pub(super) struct Pool {
    pub(super) cfg: BackendConfig,
    /// `Host` header value.
    pub(super) host: String,
    limits: HeadLimits,
    idle: Vec<ConnId>,
    /// Open or connecting connections.
    connections: usize,
    connecting: usize,
    in_flight: usize,
    queue: VecDeque<Call>,
    circuit: Circuit,
    outcomes: [u64; 9],
    connects: u64,
    connect_failures: u64,
    retries: u64,
    latency: LocalHistogram,
}

impl Pool {
    pub(super) fn new(cfg: &BackendConfig, limits: HeadLimits) -> Self {
        Self {
            host: if cfg.host.is_empty() {
                cfg.address.to_string()
            } else {
                cfg.host.clone()
            },
            cfg: cfg.clone(),
            limits,
            idle: Vec::new(),
            connections: 0,
            connecting: 0,
            in_flight: 0,
            queue: VecDeque::new(),
            circuit: Circuit::new(cfg.failures_to_open, cfg.open_ms, cfg.max_open_ms),
            outcomes: [0; 9],
            connects: 0,
            connect_failures: 0,
            retries: 0,
            latency: LocalHistogram::new(&LATENCY_BUCKETS_US),
        }
    }

    pub(super) fn stats(&self, now: u64) -> PoolStats {
        PoolStats {
            name: self.cfg.name.clone(),
            outcomes: self.outcomes,
            in_flight: self.in_flight,
            queued: self.queue.len(),
            connections: self.connections,
            connects: self.connects,
            connect_failures: self.connect_failures,
            retries: self.retries,
            circuit_opened: self.circuit.opened,
            circuit_state: self.circuit.state(now) as u8,
            latency: self.latency.clone(),
        }
    }

    /// Ends a call.
    fn finish(
        &mut self,
        io: &Io,
        done: &mut Vec<Done>,
        call: Call,
        result: Result<ClientResponse, Failure>,
    ) {
        let outcome = match &result {
            Ok(r) => (usize::from(r.status / 100)).clamp(1, 5) - 1,
            Err(Failure::Unavailable(_)) => 5,
            Err(Failure::Overloaded) => 6,
            Err(Failure::Timeout) => 7,
            Err(Failure::BadResponse(_)) => 8,
        };
        self.outcomes[outcome] += 1;
        if result.is_ok() {
            self.latency
                .record_n(io.now_us().saturating_sub(call.started_us), 1);
        }
        done.push(Done {
            caller: call.caller,
            result,
        });
    }

    /// A transport failure: tell the breaker; if that opened the circuit,
    /// everything queued is answered "unavailable" now rather than left to
    /// time out.
    fn failed(&mut self, io: &Io, done: &mut Vec<Done>) {
        if self.circuit.failure(io.now_ms()) {
            log::warn!(
                "backend {} ({}): circuit open for {} ms after repeated failures",
                self.cfg.name,
                self.cfg.address,
                self.circuit.reopens_at().unwrap_or(0) - io.now_ms()
            );
            while let Some(call) = self.queue.pop_front() {
                self.finish(io, done, call, Err(Failure::Unavailable("circuit open")));
            }
        }
    }

    pub(super) fn submit(
        &mut self,
        io: &mut Io,
        conns: &mut HashMap<ConnId, UpConn>,
        done: &mut Vec<Done>,
        pool: u16,
        call: Call,
    ) {
        if self.queue.len() >= self.cfg.queue_size {
            return self.finish(io, done, call, Err(Failure::Overloaded));
        }
        if self.circuit.admit(io.now_ms()) == Admit::No {
            return self.finish(io, done, call, Err(Failure::Unavailable("circuit open")));
        }
        match self.idle.pop() {
            Some(id) => self.dispatch(io, conns, done, id, call),
            None => {
                self.queue.push_back(call);
                self.fill(io, conns, done, pool);
            }
        }
    }

    /// Starts connects while queued calls outnumber them and the pool has room.
    fn fill(
        &mut self,
        io: &mut Io,
        conns: &mut HashMap<ConnId, UpConn>,
        done: &mut Vec<Done>,
        pool: u16,
    ) {
        while self.queue.len() > self.connecting && self.connections < self.cfg.pool_size {
            self.connects += 1;
            match io.connect(self.cfg.address, None) {
                Ok(id) => {
                    self.connections += 1;
                    self.connecting += 1;
                    io.set_deadline(id, io.now_ms() + self.cfg.connect_timeout_ms);
                    conns.insert(
                        id,
                        UpConn {
                            pool,
                            connected: false,
                            served: 0,
                            busy: None,
                        },
                    );
                }
                Err(e) => {
                    log::warn!("backend {}: socket: {e}", self.cfg.name);
                    self.connect_failures += 1;
                    let call = self.queue.pop_front().expect("queue longer than connects");
                    self.finish(io, done, call, Err(Failure::Unavailable("no socket")));
                    self.failed(io, done);
                }
            }
        }
    }

    /// Puts `call` on connection `id`.
    fn dispatch(
        &mut self,
        io: &mut Io,
        conns: &mut HashMap<ConnId, UpConn>,
        done: &mut Vec<Done>,
        id: ConnId,
        call: Call,
    ) {
        let c = conns.get_mut(&id).expect("pooled connection");
        if io.send(id, call.request.clone()).is_err() {
            // Closing under us: it leaves the pool in `closed`.
            return self.finish(io, done, call, Err(Failure::Unavailable("connection lost")));
        }
        io.set_deadline(id, call.deadline);
        let reader = ResponseReader::new(self.limits, self.cfg.max_response_bytes, false);
        c.busy = Some(Box::new((call, reader)));
        self.in_flight += 1;
    }

    /// Connection `id` is free: give it the next call, or make it idle.
    fn next(
        &mut self,
        io: &mut Io,
        conns: &mut HashMap<ConnId, UpConn>,
        done: &mut Vec<Done>,
        id: ConnId,
    ) {
        self.expire_front(io, done);
        match self.queue.pop_front() {
            Some(call) => self.dispatch(io, conns, done, id, call),
            None if io.is_shutting_down() => io.close(id, CloseMode::Abort),
            None => {
                self.idle.push(id);
                io.set_deadline(id, io.now_ms() + self.cfg.idle_timeout_ms);
            }
        }
    }

    pub(super) fn opened(
        &mut self,
        io: &mut Io,
        conns: &mut HashMap<ConnId, UpConn>,
        done: &mut Vec<Done>,
        id: ConnId,
    ) {
        self.connecting -= 1;
        if let Some(c) = conns.get_mut(&id) {
            c.connected = true;
        }
        self.next(io, conns, done, id);
    }

    pub(super) fn connect_failed(
        &mut self,
        io: &mut Io,
        conns: &mut HashMap<ConnId, UpConn>,
        done: &mut Vec<Done>,
        pool: u16,
        errno: i32,
    ) {
        self.connecting -= 1;
        self.connections -= 1;
        self.connect_failures += 1;
        log::debug!(
            "backend {}: connect failed: {}",
            self.cfg.name,
            std::io::Error::from_raw_os_error(errno)
        );
        self.failed(io, done);
        if self.queue.len() > self.connecting && self.circuit.state(io.now_ms()) != State::Open {
            // Not enough failures yet to give up: try again.
            if self.connecting == 0 && errno != libc::ETIMEDOUT {
                // Nothing else is coming: the queued calls fail now rather
                // than at their deadline (a refused connect is an answer).
                let call = self.queue.pop_front().expect("non-empty queue");
                let why = if errno == libc::ECONNREFUSED {
                    "connection refused"
                } else {
                    "connect failed"
                };
                self.finish(io, done, call, Err(Failure::Unavailable(why)));
            }
            self.fill(io, conns, done, pool);
        }
    }

    pub(super) fn data(
        &mut self,
        io: &mut Io,
        conns: &mut HashMap<ConnId, UpConn>,
        done: &mut Vec<Done>,
        id: ConnId,
        data: &[u8],
    ) {
        let c = conns.get_mut(&id).expect("pooled connection");
        let Some(busy) = c.busy.as_mut() else {
            // Bytes nobody asked for: the connection cannot be trusted.
            log::debug!(
                "backend {}: {} unsolicited bytes",
                self.cfg.name,
                data.len()
            );
            self.idle.retain(|&i| i != id);
            io.close(id, CloseMode::Abort);
            return;
        };
        match busy.1.feed(data) {
            Ok(Progress::Incomplete) => {}
            Ok(Progress::Done(response)) => {
                let (call, _) = *c.busy.take().expect("busy");
                c.served += 1;
                self.in_flight -= 1;
                self.circuit.success();
                let keep = response.keep_alive;
                self.finish(io, done, call, Ok(response));
                if keep {
                    self.next(io, conns, done, id);
                } else {
                    io.close(id, CloseMode::Abort);
                }
            }
            Err(e) => {
                let (call, _) = *c.busy.take().expect("busy");
                self.in_flight -= 1;
                self.finish(io, done, call, Err(Failure::BadResponse(e.to_string())));
                self.failed(io, done);
                io.close(id, CloseMode::Abort);
            }
        }
    }

    pub(super) fn peer_eof(
        &mut self,
        io: &mut Io,
        conns: &mut HashMap<ConnId, UpConn>,
        done: &mut Vec<Done>,
        id: ConnId,
    ) {
        let c = conns.get_mut(&id).expect("pooled connection");
        if let Some(busy) = c.busy.as_mut() {
            if let Ok(response) = busy.1.eof() {
                // A body delimited by the end of the stream.
                let (call, _) = *c.busy.take().expect("busy");
                self.in_flight -= 1;
                self.circuit.success();
                self.finish(io, done, call, Ok(response));
            }
            // Otherwise the call is settled in `closed`.
        } else {
            self.idle.retain(|&i| i != id);
        }
        io.close(id, CloseMode::Abort);
    }

    pub(super) fn deadline(
        &mut self,
        io: &mut Io,
        conns: &mut HashMap<ConnId, UpConn>,
        done: &mut Vec<Done>,
        id: ConnId,
    ) {
        let c = conns.get_mut(&id).expect("pooled connection");
        if let Some(busy) = c.busy.take() {
            self.in_flight -= 1;
            self.finish(io, done, busy.0, Err(Failure::Timeout));
            self.failed(io, done);
        } else {
            // Idle too long.
            self.idle.retain(|&i| i != id);
        }
        io.close(id, CloseMode::Abort);
    }

    pub(super) fn closed(
        &mut self,
        io: &mut Io,
        conns: &mut HashMap<ConnId, UpConn>,
        done: &mut Vec<Done>,
        pool: u16,
        id: ConnId,
        c: UpConn,
    ) {
        self.connections -= 1;
        if !c.connected {
            // Aborted while connecting (shutdown).
            self.connecting -= 1;
        }
        self.idle.retain(|&i| i != id);
        if let Some(busy) = c.busy {
            let (mut call, reader) = *busy;
            self.in_flight -= 1;
            if c.served > 0 && reader.untouched() && !call.retried && !io.is_shutting_down() {
                call.retried = true;
                self.retries += 1;
                self.queue.push_front(call);
            } else {
                let why = if reader.untouched() {
                    "connection closed before an answer"
                } else {
                    "connection closed mid-answer"
                };
                self.finish(io, done, call, Err(Failure::BadResponse(why.into())));
                self.failed(io, done);
            }
        }
        self.fill(io, conns, done, pool);
    }

    /// Fails queued calls whose deadline passed.
    fn expire_front(&mut self, io: &Io, done: &mut Vec<Done>) {
        let now = io.now_ms();
        while self.queue.front().is_some_and(|c| c.deadline <= now) {
            let call = self.queue.pop_front().expect("front");
            self.finish(io, done, call, Err(Failure::Timeout));
            self.failed(io, done);
        }
    }

    pub(super) fn expire_queue(&mut self, io: &Io, done: &mut Vec<Done>) {
        if !self.queue.is_empty() {
            self.expire_front(io, done);
        }
    }

    /// Shutdown: an idle connection closes now, a busy one when its call
    /// is answered (or times out). Calls made while draining (the
    /// `$disconnect`s of the connections being closed) still go out, on
    /// new connections if need be, within `timeouts.drain_ms`.
    pub(super) fn shutdown(&mut self, io: &mut Io, id: ConnId, c: &UpConn) {
        if c.busy.is_none() {
            self.idle.retain(|&i| i != id);
            io.close(id, CloseMode::Abort);
        }
    }
}
