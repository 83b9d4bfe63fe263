//! The HTTP/1.1 server on the engine's io_uring workers: one
//! `SO_REUSEPORT` listener and ring per worker thread, keep-alive and
//! pipelining, and answers held for their sampled latency.
//!
//! Why this shape: the mock must not be the bottleneck of a gateway load
//! test, so it runs on the same engine as the gateway (no thread per
//! connection, no copies in the common case) and costs a few microseconds
//! of CPU per request.
//!
//! Holding answers: each connection keeps a queue of finished responses,
//! each with the time it is due; the due times never decrease along the
//! queue (a response waits for the ones before it, as HTTP/1.1 requires of
//! pipelined answers). The worker keeps a heap with one entry per
//! connection whose queue is not empty (for its front), wakes the ring in
//! time for the earliest through `Handler::poll_timeout`, and sends what is
//! due in `Handler::on_schedule`. The engine's per-connection deadline is
//! not used for this: its timing wheel has 10 ms slots, so a 1-5 ms
//! latency would come out as 10 ms; the heap gets the sub-millisecond
//! resolution of the ring's wait timeout. Deadlines still bound a graceful
//! close.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use engine::spawn::{spawn, SpawnOptions, Spawned, WorkerSetup};
use engine::{listener, CloseCause, CloseMode, ConnId, Conns, EngineConfig, Handler, Io, Origin};
use wsproto::http::HeadLimits;

use crate::app::{continue_response, App, Shared};
use crate::framer::{frame, Frame, Limits};

/// How long a closing connection may take to finish (our queue sent, the
/// peer's EOF seen) before it is aborted.
const CLOSE_WAIT_MS: u64 = 2_000;

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Worker threads.
    pub workers: usize,
    /// CPU per worker (indexed modulo the length); empty: not pinned.
    pub cpus: Vec<usize>,
    /// Largest request body.
    pub max_body: usize,
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The bound address (port 0 resolved).
    pub local_addr: SocketAddr,
    workers: Spawned<()>,
}

impl Running {
    /// True once every worker has stopped.
    pub fn finished(&self) -> bool {
        self.workers.all_finished()
    }

    /// Waits for the workers (after shutdown was requested).
    pub fn join(self) -> io::Result<()> {
        self.workers.join().into_iter().collect()
    }
}

/// Binds and starts the workers; returns once all are serving.
pub fn start(
    opts: &ServerOptions,
    shared: Arc<Shared>,
    shutdown: Arc<AtomicBool>,
) -> io::Result<Running> {
    let listen = listener::ListenOptions {
        backlog: 4096,
        share: false,
        send_buffer: 0,
        recv_buffer: 0,
    };
    let (fds, local_addr) = listener::reuseport_listeners(opts.listen, opts.workers, listen)?;
    let per_worker: Mutex<Vec<Option<OwnedFd>>> = Mutex::new(fds.into_iter().map(Some).collect());
    let limits = Limits {
        head: HeadLimits {
            max_bytes: 16 * 1024,
            // At most the inline header slots: no allocation per parse.
            max_headers: 32,
        },
        max_body: opts.max_body,
    };
    let spawn_opts = SpawnOptions {
        name: "mock".into(),
        workers: opts.workers,
        cpus: opts.cpus.iter().copied().map(Some).collect(),
        engine: EngineConfig {
            ring_entries: 4096,
            recv_buffers: 1024,
            recv_buffer_size: 16 * 1024,
            drain_ms: 1_000,
            file_table: 0,
            incremental_recv: true,
        },
    };
    let stop = shutdown.clone();
    let workers = spawn(
        spawn_opts,
        &shutdown,
        move |i| {
            let fd = per_worker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(i)
                .and_then(Option::take);
            Ok(WorkerSetup {
                handler: MockHandler::new(App::new(shared.clone(), i), limits),
                listeners: fd.into_iter().collect(),
                shutdown: stop.clone(),
                bell: None,
            })
        },
        |_, _| (),
    )?;
    Ok(Running {
        local_addr,
        workers,
    })
}

/// A finished response waiting for its time.
#[derive(Debug)]
struct Held {
    due_us: u64,
    bytes: Vec<u8>,
    close: bool,
}

/// One connection.
#[derive(Debug, Default)]
pub struct Conn {
    /// Bytes received and not yet framed (empty in the common case: the
    /// request is framed straight from the receive buffer).
    buf: Vec<u8>,
    /// Responses not sent yet, due times non-decreasing.
    held: VecDeque<Held>,
    /// A `100 Continue` went out for the request being read.
    continue_sent: bool,
    /// No more requests are read: a rejection or `Connection: close` is queued.
    stopped: bool,
    /// The peer shut down its side; close once `held` is sent.
    peer_eof: bool,
}

/// One worker's handler.
#[derive(Debug)]
pub struct MockHandler {
    app: App,
    limits: Limits,
    /// Decoded chunked bodies.
    scratch: Vec<u8>,
    /// (due µs, connection): the front of each non-empty `held` queue.
    due: BinaryHeap<Reverse<(u64, ConnId)>>,
}

impl MockHandler {
    /// A handler answering with `app`.
    pub fn new(app: App, limits: Limits) -> Self {
        Self {
            app,
            limits,
            scratch: Vec::new(),
            due: BinaryHeap::new(),
        }
    }

    /// Frames and answers every whole request in `input`; returns the bytes used.
    fn serve(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn, input: &[u8]) -> usize {
        let now = io.now_us();
        let mut off = 0;
        while !conn.stopped {
            let Self {
                app,
                limits,
                scratch,
                ..
            } = self;
            match frame(&input[off..], *limits, scratch, |req, body| {
                app.handle(req, body)
            }) {
                Frame::Incomplete { expects_continue } => {
                    if expects_continue && !conn.continue_sent {
                        conn.continue_sent = true;
                        self.enqueue(io, id, conn, continue_response(), now, false);
                    }
                    break;
                }
                Frame::Reject(r) => {
                    let bytes = app.reject(r);
                    conn.stopped = true;
                    self.enqueue(io, id, conn, bytes, now, true);
                }
                Frame::Done { used, out } => {
                    off += used;
                    conn.continue_sent = false;
                    conn.stopped = !out.keep_alive;
                    let due = now + out.delay_us;
                    self.enqueue(io, id, conn, out.bytes, due, !out.keep_alive);
                }
            }
        }
        off
    }

    /// Sends `bytes` now if nothing is held and it is due, else holds it.
    fn enqueue(
        &mut self,
        io: &mut Io,
        id: ConnId,
        conn: &mut Conn,
        bytes: Vec<u8>,
        due_us: u64,
        close: bool,
    ) {
        match conn.held.back() {
            None if due_us <= io.now_us() => send(io, id, conn, bytes, close),
            None => {
                self.due.push(Reverse((due_us, id)));
                conn.held.push_back(Held {
                    due_us,
                    bytes,
                    close,
                });
            }
            Some(last) => {
                let due_us = due_us.max(last.due_us);
                conn.held.push_back(Held {
                    due_us,
                    bytes,
                    close,
                });
            }
        }
    }

    /// Sends the held responses that are due; re-arms for the next one.
    fn release(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        let now = io.now_us();
        while conn.held.front().is_some_and(|h| h.due_us <= now) {
            let Some(h) = conn.held.pop_front() else {
                break;
            };
            send(io, id, conn, h.bytes, h.close);
            if h.close {
                return;
            }
        }
        match conn.held.front() {
            Some(h) => self.due.push(Reverse((h.due_us, id))),
            None if conn.peer_eof => close(io, id),
            None => {}
        }
    }
}

/// Queues `bytes`; with `close`, the connection closes after them.
fn send(io: &mut Io, id: ConnId, conn: &mut Conn, bytes: Vec<u8>, close_after: bool) {
    let _ = io.send(id, Bytes::from(bytes));
    if close_after {
        conn.held.clear();
        close(io, id);
    }
}

fn close(io: &mut Io, id: ConnId) {
    io.close(id, CloseMode::Graceful);
    io.set_deadline(id, io.now_ms() + CLOSE_WAIT_MS);
}

impl Handler for MockHandler {
    type Conn = Conn;

    fn on_open(&mut self, _io: &mut Io, _id: ConnId, _origin: Origin) -> Conn {
        Conn::default()
    }

    fn on_data(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn, data: &mut [u8]) {
        if conn.stopped {
            return;
        }
        if conn.buf.is_empty() {
            let used = self.serve(io, id, conn, data);
            if !conn.stopped && used < data.len() {
                conn.buf.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut conn.buf);
            buf.extend_from_slice(data);
            let used = self.serve(io, id, conn, &buf);
            if !conn.stopped && used < buf.len() {
                buf.drain(..used);
                // Keep the allocation for the rest of a large request, but
                // not forever.
                if buf.capacity() > 256 * 1024 && buf.len() < 16 * 1024 {
                    buf.shrink_to(16 * 1024);
                }
                conn.buf = buf;
            }
        }
    }

    fn on_peer_eof(&mut self, io: &mut Io, id: ConnId, conn: &mut Conn) {
        conn.peer_eof = true;
        if conn.held.is_empty() {
            close(io, id);
        }
    }

    fn on_deadline(&mut self, io: &mut Io, id: ConnId, _conn: &mut Conn) {
        // Only a graceful close sets one: it took too long.
        io.close(id, CloseMode::Abort);
    }

    fn on_closed(&mut self, _io: &mut Io, _id: ConnId, _conn: Conn, _cause: CloseCause) {
        // Its heap entry, if any, goes stale (the id's generation changed).
    }

    fn on_schedule(&mut self, io: &mut Io, conns: &mut Conns<'_, Conn>) {
        let now = io.now_us();
        while let Some(&Reverse((due, id))) = self.due.peek() {
            if due > now {
                break;
            }
            self.due.pop();
            if let Some(conn) = conns.get_mut(io, id) {
                self.release(io, id, conn);
            }
        }
    }

    fn poll_timeout(&self, io: &Io) -> Option<Duration> {
        let &Reverse((due, _)) = self.due.peek()?;
        Some(Duration::from_micros(due.saturating_sub(io.now_us())))
    }
}
