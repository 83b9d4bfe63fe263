//! The per-core event loop: reap completions, dispatch them to the handler,
//! fire deadlines, submit, wait.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{cqueue, opcode, types};

use crate::bufring::BufRing;
use crate::io::{flag, CloseCause, CloseMode, Closing, ConnId, Io};
use crate::listener;
use crate::mailbox::{Bell, WAKE_BY_EVENTFD};
use crate::ring::Ring;
use crate::timer::TICK_MS;
use crate::token::{self, Op};

/// Sizing for one worker's engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Submission queue entries.
    pub ring_entries: u32,
    /// Provided receive buffers (power of two).
    pub recv_buffers: u32,
    /// Bytes per receive buffer.
    pub recv_buffer_size: u32,
    /// After shutdown begins, how long connections may take to close before
    /// they are aborted.
    pub drain_ms: u64,
    /// Entries of the ring's registered file table: connections then use
    /// direct descriptors, which do not count against the process's
    /// open-files limit (the kernel caps each ring's table at that limit
    /// instead, so N workers hold N times as many). 0 = regular
    /// descriptors.
    pub file_table: u32,
    /// Receive buffers are consumed incrementally (`IOU_PBUF_RING_INC`):
    /// small reads share a buffer, so a small pool absorbs large bursts
    /// and idle connections touch no buffer pages of their own.
    pub incremental_recv: bool,
}

/// An [`EngineConfig`] field, as named by [`EngineConfig::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKey {
    /// [`EngineConfig::ring_entries`].
    RingEntries,
    /// [`EngineConfig::recv_buffers`].
    RecvBuffers,
    /// [`EngineConfig::recv_buffer_size`].
    RecvBufferSize,
    /// [`EngineConfig::file_table`].
    FileTable,
}

impl EngineConfig {
    /// The one place the engine's sizing rules live; configuration layers
    /// map the key to their own name for it (e.g. `io.recv_buffers`).
    pub fn check(&self) -> Result<(), (EngineKey, &'static str)> {
        if !(8..=32768).contains(&self.ring_entries) || !self.ring_entries.is_power_of_two() {
            return Err((
                EngineKey::RingEntries,
                "must be a power of two from 8 to 32768",
            ));
        }
        if !(1..=32768).contains(&self.recv_buffers) || !self.recv_buffers.is_power_of_two() {
            return Err((
                EngineKey::RecvBuffers,
                "must be a power of two from 1 to 32768",
            ));
        }
        if !(256..=(1 << 20)).contains(&self.recv_buffer_size) {
            return Err((
                EngineKey::RecvBufferSize,
                "must be from 256 to 1048576 bytes",
            ));
        }
        if self.file_table > MAX_FILE_TABLE {
            return Err((
                EngineKey::FileTable,
                "exceeds 1048576, the kernel's most entries per ring (IORING_MAX_FIXED_FILES)",
            ));
        }
        if u64::from(self.file_table) > open_files_limit() {
            return Err((
                EngineKey::FileTable,
                "exceeds the open-files hard limit (ulimit -Hn), which caps each ring's file table",
            ));
        }
        Ok(())
    }
}

/// The kernel's most registered files per ring (`IORING_MAX_FIXED_FILES`).
pub const MAX_FILE_TABLE: u32 = 1 << 20;

/// The largest file table a ring may register here: the open-files hard
/// limit, capped at `MAX_FILE_TABLE` (the limit may be "unlimited").
pub fn default_file_table() -> u32 {
    open_files_limit().min(u64::from(MAX_FILE_TABLE)) as u32
}

/// The hard `RLIMIT_NOFILE`: the most a ring's registered file table may
/// hold (once the soft limit is raised to it, see [`raise_open_files_limit`]).
pub fn open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_max
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one (the kernel checks a
/// registered file table's size against the soft limit, and a process with
/// regular descriptors needs one per connection) and returns the soft limit
/// now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// Accepts kept in flight per listener. Single-shot, each with its own
/// address buffer: a multishot accept has one buffer for every connection
/// it takes, and direct descriptors leave no descriptor for `getpeername`.
const ACCEPT_DEPTH: usize = 16;

/// One accept's peer-address buffer; the kernel writes it when the accept
/// completes, so it stays put (boxed in its listener) while armed.
struct AcceptBuf {
    addr: libc::sockaddr_storage,
    len: libc::socklen_t,
    armed: bool,
}

/// How a connection came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Accepted on the worker's listener with this index (the order given to [`Worker::new`]).
    Accepted(usize),
    /// Established by [`Io::connect`].
    Connected,
}

/// The handler's connections, looked up by id (see [`Handler::on_schedule`]).
#[derive(Debug)]
pub struct Conns<'a, C> {
    conns: &'a mut Vec<Option<C>>,
}

impl<C> Conns<'_, C> {
    /// The state of a live connection; `None` once it has closed (a stale id).
    pub fn get_mut(&mut self, io: &Io, id: ConnId) -> Option<&mut C> {
        io.slot(id)?;
        self.conns.get_mut(id.index())?.as_mut()
    }
}

/// A listening socket and its accepts in flight.
struct Listener {
    fd: Option<OwnedFd>,
    bufs: Box<[AcceptBuf]>,
    /// Accepts in flight.
    armed: usize,
    retry_at: u64,
}

impl Listener {
    fn new(fd: OwnedFd) -> Self {
        let bufs = (0..ACCEPT_DEPTH)
            .map(|_| AcceptBuf {
                // SAFETY: sockaddr_storage is plain data; all-zero is valid.
                addr: unsafe { std::mem::zeroed() },
                len: 0,
                armed: false,
            })
            .collect();
        Self {
            fd: Some(fd),
            bufs,
            armed: 0,
            retry_at: 0,
        }
    }
}

/// What the application does with connections. All callbacks run on the
/// worker thread; none may block.
pub trait Handler {
    /// Per-connection application state.
    type Conn;

    /// A connection was accepted (server role) or established (client role).
    fn on_open(&mut self, io: &mut Io, id: ConnId, origin: Origin) -> Self::Conn;

    /// Bytes arrived. `data` is a provided buffer, valid only for this call
    /// (it goes back to the kernel afterwards); it may be modified in place.
    fn on_data(&mut self, io: &mut Io, id: ConnId, conn: &mut Self::Conn, data: &mut [u8]);

    /// The peer shut down its sending side (EOF).
    fn on_peer_eof(&mut self, io: &mut Io, id: ConnId, _conn: &mut Self::Conn) {
        io.close(id, CloseMode::Graceful);
    }

    /// The connection's deadline (see [`Io::set_deadline`]) has passed.
    fn on_deadline(&mut self, io: &mut Io, id: ConnId, conn: &mut Self::Conn);

    /// The connection is gone: descriptor closed, slot free.
    fn on_closed(&mut self, io: &mut Io, id: ConnId, conn: Self::Conn, cause: CloseCause);

    /// An outgoing connect failed (client role); the slot is released after this.
    fn on_connect_failed(&mut self, _io: &mut Io, _id: ConnId, _errno: i32) {}

    /// Shutdown has begun: say goodbye to this connection.
    fn on_shutdown(&mut self, io: &mut Io, id: ConnId, _conn: &mut Self::Conn) {
        io.close(id, CloseMode::Abort);
    }

    /// A send completed: `bytes` more bytes of the connection's queue reached
    /// the kernel ([`Io::queued_bytes`] tells what is left). For accounting
    /// such as send-completion latency; the engine needs nothing from it.
    fn on_sent(&mut self, _io: &mut Io, _id: ConnId, _conn: &mut Self::Conn, _bytes: usize) {}

    /// Runs once per loop iteration, after completions and deadlines.
    fn on_tick(&mut self, _io: &mut Io) {}

    /// This worker's bell rang (see [`crate::mailbox`]): drain the mailbox
    /// it belongs to. Runs once per wake-up, which may stand for many posts;
    /// every connection's state is at hand, as in `on_schedule`.
    fn on_wake(&mut self, _io: &mut Io, _conns: &mut Conns<'_, Self::Conn>) {}

    /// Runs after `on_tick` with access to every connection's state, for work
    /// no single connection's I/O triggers (e.g. sends on a schedule).
    fn on_schedule(&mut self, _io: &mut Io, _conns: &mut Conns<'_, Self::Conn>) {}

    /// How long the loop may sleep at most before `on_tick` must run again
    /// (e.g. the next scheduled send of an open-loop load generator). `None`
    /// (the default) means the timing wheel's 10 ms tick is fine.
    fn poll_timeout(&self, _io: &Io) -> Option<Duration> {
        None
    }

    /// Client role: return true when the worker should stop (checked each tick).
    fn finished(&self, _io: &Io) -> bool {
        false
    }
}

/// One worker: its ring, buffers, connections and handler.
pub struct Worker<H: Handler> {
    // Field order matters: the ring (inside `io`) is dropped before the
    // buffer memory it was registered with.
    io: Io,
    bufs: BufRing,
    conns: Vec<Option<H::Conn>>,
    handler: H,
    listeners: Vec<Listener>,
    cqes: Vec<(u64, i32, u32)>,
    due: Vec<(u64, u64)>,
    /// This worker's doorbell, when it has a mailbox.
    bell: Option<Arc<Bell>>,
}

impl<H: Handler> std::fmt::Debug for Worker<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("io", &self.io)
            .field("bufs", &self.bufs)
            .finish()
    }
}

impl<H: Handler> Worker<H> {
    /// Sets up the ring and buffers. Call on the thread that will run it.
    /// `listeners` may be empty (client role); each keeps accepts armed.
    pub fn new(cfg: &EngineConfig, listeners: Vec<OwnedFd>, handler: H) -> io::Result<Self> {
        cfg.check().map_err(|(key, problem)| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{key:?} {problem}"))
        })?;
        let ring = Ring::new(cfg.ring_entries)?;
        if cfg.file_table > 0 {
            raise_open_files_limit();
            ring.uring
                .submitter()
                .register_files_sparse(cfg.file_table)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot register a file table of {} entries: {e} (the open-files \
                             limit caps it; kernel >= 5.19 needed for direct descriptors)",
                            cfg.file_table
                        ),
                    )
                })?;
        }
        // SAFETY: `run` unregisters the group before returning, and the ring
        // (in `io`) is declared before `bufs`, so it is dropped first.
        let bufs = unsafe {
            BufRing::new(
                &ring,
                0,
                cfg.recv_buffers,
                cfg.recv_buffer_size,
                cfg.incremental_recv,
            )?
        };
        let pool_bytes = cfg.recv_buffers as usize * cfg.recv_buffer_size as usize;
        let io = Io::new(ring, bufs.bgid(), cfg.file_table, pool_bytes);
        Ok(Self {
            io,
            bufs,
            conns: Vec::new(),
            handler,
            listeners: listeners.into_iter().map(Listener::new).collect(),
            cqes: Vec::with_capacity(1024),
            due: Vec::new(),
            bell: None,
        })
    }

    /// Makes `bell` this worker's doorbell: other workers' `MSG_RING`
    /// wake-ups target this ring, and its eventfd is polled for posts from
    /// threads without a ring. Each wake-up runs [`Handler::on_wake`].
    pub fn attach_bell(&mut self, bell: Arc<Bell>) -> io::Result<()> {
        let ring_fd = self.io.ring.uring.as_raw_fd();
        let eventfd = bell.attach(ring_fd);
        self.bell = Some(bell);
        self.arm_eventfd(eventfd);
        Ok(())
    }

    fn arm_eventfd(&mut self, eventfd: i32) {
        let entry = opcode::PollAdd::new(types::Fd(eventfd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(token::encode(Op::Wake, WAKE_BY_EVENTFD, 0));
        // SAFETY: a poll request references no memory of ours.
        unsafe { self.io.ring.push(entry) };
    }

    fn on_wake(&mut self, by: u32, flags: u32) {
        let Some(bell) = self.bell.clone() else {
            return;
        };
        let from_eventfd = by == WAKE_BY_EVENTFD;
        if from_eventfd && !cqueue::more(flags) && !self.io.shutting_down {
            // The multishot poll ended; keep listening.
            self.arm_eventfd(bell.eventfd());
        }
        self.io.stats.wakes += 1;
        bell.answer(from_eventfd);
        self.handler.on_wake(
            &mut self.io,
            &mut Conns {
                conns: &mut self.conns,
            },
        );
    }

    /// The handler, e.g. to read its counters.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Engine access outside the loop (e.g. to start connects before `run`).
    pub fn io_and_handler(&mut self) -> (&mut Io, &mut H) {
        (&mut self.io, &mut self.handler)
    }

    /// Runs until `shutdown` is set and every connection has closed (or the
    /// drain time ran out), or until the handler says it is finished.
    pub fn run(&mut self, cfg: &EngineConfig, shutdown: &AtomicBool) -> io::Result<()> {
        let mut drain_deadline = None;
        let mut aborted_all = false;
        self.io.update_clock();
        loop {
            let now = self.io.now_ms();
            if !self.io.shutting_down {
                self.arm_accepts(now);
            }
            if drain_deadline.is_none() && shutdown.load(Ordering::Relaxed) {
                drain_deadline = Some(now + cfg.drain_ms);
                self.begin_shutdown();
            }
            if let Some(deadline) = drain_deadline {
                if self.io.live() == 0 && self.listeners.iter().all(|l| l.armed == 0) {
                    break;
                }
                if now >= deadline && !aborted_all {
                    aborted_all = true;
                    log::warn!("drain time over: aborting {} connections", self.io.live());
                    self.abort_all();
                }
                if now >= deadline + 2_000 {
                    log::error!(
                        "{} connections did not finish closing; exiting anyway",
                        self.io.live()
                    );
                    break;
                }
            }
            if self.handler.finished(&self.io) && self.io.live() == 0 {
                break;
            }
            self.io.rearm_starved();
            self.bufs.commit();
            self.io.ring.submit_and_wait(self.wait_time())?;
            self.io.update_clock();
            self.reap();
            self.fire_deadlines();
            self.io.retry_sends();
            self.handler.on_tick(&mut self.io);
            self.handler.on_schedule(
                &mut self.io,
                &mut Conns {
                    conns: &mut self.conns,
                },
            );
            self.finalize();
        }
        self.bufs.unregister(&self.io.ring);
        if let Some(bell) = &self.bell {
            bell.detach();
        }
        Ok(())
    }

    fn wait_time(&self) -> Duration {
        // Starved receives still waiting are re-armed on the next turn,
        // whatever else happens (or does not) meanwhile.
        let tick = Duration::from_millis(if self.io.has_starved() { 1 } else { TICK_MS });
        self.handler
            .poll_timeout(&self.io)
            .map_or(tick, |d| d.min(tick))
    }

    fn arm_accepts(&mut self, now: u64) {
        // Non-blocking, so that a send the socket has no room for waits on
        // io_uring's poll path; on a blocking socket the kernel may hand it
        // to an io-wq thread that blocks (one per stalled peer) and whose
        // cancellation completes with EINTR. Close-on-exec means nothing
        // for a direct descriptor, and the kernel refuses it there.
        let flags = if self.io.direct {
            libc::SOCK_NONBLOCK
        } else {
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK
        };
        // Direct mode: an accept that finds the table full has already
        // taken the connection off the backlog and can only reset it; so
        // arm no more accepts than there are free entries, and a full
        // table leaves new connections waiting in the backlog instead.
        // One accept per listener is allowed beyond that while any entry is
        // free, so that a quiet listener's armed accepts (the admin one's)
        // cannot starve a busy one.
        let headroom = self.io.descriptor_headroom();
        let mut room = match headroom {
            Some(free) => free.saturating_sub(self.listeners.iter().map(|l| l.armed).sum()),
            None => usize::MAX,
        };
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let Some(fd) = &l.fd else { continue };
            if l.armed == ACCEPT_DEPTH || now < l.retry_at {
                continue;
            }
            if room == 0 && !(l.armed == 0 && headroom.is_some_and(|free| free > 0)) {
                continue;
            }
            let fd = fd.as_raw_fd();
            for (j, b) in l.bufs.iter_mut().enumerate().filter(|(_, b)| !b.armed) {
                if room == 0 && l.armed > 0 {
                    break;
                }
                room = room.saturating_sub(1);
                b.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                let accept = opcode::Accept::new(
                    types::Fd(fd),
                    (&mut b.addr as *mut libc::sockaddr_storage).cast(),
                    &mut b.len,
                )
                .flags(flags);
                let accept = if self.io.direct {
                    accept.file_index(Some(types::DestinationSlot::auto_target()))
                } else {
                    accept
                };
                let entry = accept
                    .build()
                    .user_data(token::encode(Op::Accept, i as u32, j as u32));
                // SAFETY: the address buffer is boxed in the listener, which
                // outlives the ring, and is not touched until this accept completes.
                unsafe { self.io.ring.push(entry) };
                b.armed = true;
                l.armed += 1;
            }
        }
    }

    fn begin_shutdown(&mut self) {
        self.io.shutting_down = true;
        for l in &mut self.listeners {
            match &l.fd {
                Some(fd) if l.armed > 0 => {
                    let cancel = types::CancelBuilder::fd(types::Fd(fd.as_raw_fd())).all();
                    let entry = opcode::AsyncCancel2::new(cancel)
                        .build()
                        .user_data(token::encode(Op::Cancel, 0, 0));
                    // SAFETY: a cancel request references no memory of ours.
                    unsafe { self.io.ring.push(entry) };
                }
                _ => l.fd = None,
            }
        }
        for idx in 0..self.conns.len() {
            if let Some(conn) = self.conns[idx].as_mut() {
                let id = self.io.id_of(idx as u32);
                self.handler.on_shutdown(&mut self.io, id, conn);
            }
        }
        self.finalize();
    }

    fn abort_all(&mut self) {
        for idx in 0..self.io.slots.len() {
            if self.io.slots[idx].flags & flag::LIVE != 0 {
                let id = self.io.id_of(idx as u32);
                self.io.close(id, CloseMode::Abort);
            }
        }
        self.finalize();
    }

    fn reap(&mut self) {
        self.cqes.clear();
        self.cqes.extend(
            self.io
                .ring
                .uring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        self.io.stats.loops += 1;
        self.io.stats.completions += self.cqes.len() as u64;
        if self.io.ring.uring.submission().cq_overflow() {
            self.io.stats.cq_overflow_seen += 1;
        }
        for i in 0..self.cqes.len() {
            let (user_data, res, flags) = self.cqes[i];
            self.dispatch(user_data, res, flags);
            self.finalize();
        }
    }

    fn dispatch(&mut self, user_data: u64, res: i32, flags: u32) {
        let Some((op, idx, gen)) = token::decode(user_data) else {
            log::error!("completion with unknown user_data {user_data:#x}");
            return;
        };
        let in_flight = match op {
            Op::Cancel | Op::Timer => return,
            Op::Wake => return self.on_wake(idx, flags),
            Op::WakeSent => {
                if self.io.wakes.complete(idx, res) {
                    self.io.stats.wake_errors += 1;
                }
                return;
            }
            Op::Accept => return self.on_accept(idx as usize, gen as usize, res),
            Op::Close => {
                self.io.stats.close_errors += u64::from(res < 0);
                return;
            }
            Op::Recv => flag::IN_RECV,
            Op::Send => flag::IN_SEND,
            Op::Connect | Op::Socket | Op::Setup => flag::IN_CONNECT,
            Op::Shutdown => flag::IN_SHUT,
        };
        // A completion belongs to a slot only while that slot's generation
        // matches and it has that operation in flight. Anything else would
        // act on a connection that has since been released or reused: count
        // it and touch nothing (it means an engine bug, so say so loudly).
        match self.io.slots.get(idx as usize) {
            Some(s) if s.gen == gen && s.flags & in_flight != 0 => {}
            _ => {
                self.io.stats.stale_completions += 1;
                log::error!(
                    "stale {op:?} completion (res {res}) for slot {idx} gen {gen}; ignored"
                );
                return;
            }
        }
        match op {
            Op::Recv => self.on_recv(idx, gen, res, flags),
            Op::Send => {
                self.io.complete_send(idx, res);
                if res > 0 {
                    if let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) {
                        let id = ConnId { idx, gen };
                        self.handler.on_sent(&mut self.io, id, conn, res as usize);
                    }
                }
            }
            Op::Connect => self.on_connect(idx, res),
            Op::Socket => {
                if !self.io.socket_created(idx, res) {
                    // Failed, or aborted while the socket was being made.
                    self.on_connect(idx, if res < 0 { res } else { -libc::ECANCELED });
                }
            }
            Op::Setup => {
                // A set-up step before the connect failed (successes post
                // nothing); the connect, linked after it, fails with
                // ECANCELED, so this is what the handler hears.
                self.io.slots[idx as usize]
                    .cause
                    .get_or_insert(CloseCause::Error(-res));
                return;
            }
            Op::Shutdown => self.io.complete_shutdown(idx),
            Op::Cancel | Op::Accept | Op::Close | Op::Timer | Op::Wake | Op::WakeSent => {
                unreachable!("handled above")
            }
        }
        // Whichever completion is the slot's last one finalizes it.
        self.io.settle(idx);
    }

    fn on_accept(&mut self, listener: usize, buf: usize, res: i32) {
        let l = &mut self.listeners[listener];
        l.bufs[buf].armed = false;
        l.armed -= 1;
        if res < 0 {
            let errno = -res;
            if errno == libc::ECANCELED || self.io.shutting_down {
                if l.armed == 0 {
                    l.fd = None;
                }
                return;
            }
            self.io.stats.accept_errors += 1;
            // Out of descriptors (ENFILE: the file table is full; EMFILE)
            // or memory: back off instead of spinning; the listen backlog
            // holds the connections meanwhile. Logged once per back-off.
            if self.io.now_ms() >= l.retry_at + 1000 {
                log::warn!("accept failed: {}", io::Error::from_raw_os_error(errno));
            }
            l.retry_at = self.io.now_ms() + 100;
            return;
        }
        let peer = listener::from_sockaddr(&l.bufs[buf].addr);
        if self.io.shutting_down {
            // A descriptor the kernel just gave us and nobody else knows.
            self.io.files_held += u32::from(self.io.direct);
            self.io.close_fd(res);
            return;
        }
        self.io.stats.accepted += 1;
        let id = self.io.alloc(res, peer);
        self.io.arm_recv(id.idx);
        self.open(id, Origin::Accepted(listener));
    }

    fn open(&mut self, id: ConnId, origin: Origin) {
        let conn = self.handler.on_open(&mut self.io, id, origin);
        let idx = id.idx as usize;
        if self.conns.len() <= idx {
            self.conns.resize_with(idx + 1, || None);
        }
        self.conns[idx] = Some(conn);
    }

    fn on_connect(&mut self, idx: u32, res: i32) {
        let slot = &mut self.io.slots[idx as usize];
        slot.flags &= !flag::IN_CONNECT;
        slot.connect_addr = None;
        let id = ConnId { idx, gen: slot.gen };
        if res < 0 || slot.closing != Closing::No {
            // Failed, timed out (see fire_deadlines) or aborted while
            // connecting. Nothing else can be in flight (sends are refused
            // before the connect completes), so the `settle` that follows
            // every completion releases the slot right after the handler
            // has heard.
            let cancelled = slot.closing == Closing::Abort && res == -libc::ECANCELED;
            let errno = match slot.cause {
                Some(CloseCause::Error(e)) => e,
                _ if res < 0 && !cancelled => -res,
                _ => libc::ECANCELED,
            };
            self.io.stats.connect_errors += u64::from(res < 0 && !cancelled);
            slot.cause = Some(CloseCause::Error(errno));
            slot.closing = Closing::Abort;
            self.handler.on_connect_failed(&mut self.io, id, errno);
            return;
        }
        self.io.arm_recv(idx);
        self.open(id, Origin::Connected);
    }

    fn on_recv(&mut self, idx: u32, gen: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let slot = &mut self.io.slots[idx as usize];
        if !more {
            slot.flags &= !flag::IN_RECV;
        }
        let aborting = slot.closing == Closing::Abort;
        let id = ConnId { idx, gen };
        if let Some(bid) = bid {
            if res > 0 && !aborting {
                self.io.received(res as usize);
                // SAFETY: this completion handed us `res` bytes of `bid`; they
                // go back to the kernel only below, after the handler.
                let data = unsafe { self.bufs.get_mut(bid, res as usize) };
                if let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) {
                    self.handler.on_data(&mut self.io, id, conn, data);
                }
            }
            let more = self.bufs.incremental() && cqueue::buffer_more(flags);
            // SAFETY: this completion handed us these bytes of `bid`, and the
            // slice above is gone.
            unsafe { self.bufs.consumed(bid, res.max(0) as usize, more) };
        }
        let slot = &mut self.io.slots[idx as usize];
        match res {
            0 => {
                slot.flags |= flag::PEER_EOF;
                if !aborting {
                    if let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) {
                        self.handler.on_peer_eof(&mut self.io, id, conn);
                    }
                }
            }
            r if r < 0 => match -r {
                libc::ECANCELED => {}
                libc::EINTR if aborting => {}
                libc::ENOBUFS => {
                    self.io.stats.recv_enobufs += 1;
                    if !more && !aborting {
                        self.io.starve(idx);
                    }
                }
                errno => {
                    self.io.stats.recv_errors += 1;
                    slot.flags |= flag::PEER_EOF;
                    self.io.fail(idx, errno);
                }
            },
            _ => {
                let slot = &self.io.slots[idx as usize];
                if !more
                    && slot.flags & (flag::IN_RECV | flag::PEER_EOF) == 0
                    && slot.closing != Closing::Abort
                {
                    self.io.stats.recv_rearmed += 1;
                    self.io.arm_recv(idx);
                }
            }
        }
    }

    fn fire_deadlines(&mut self) {
        if self.io.timers.is_empty() {
            return;
        }
        self.due.clear();
        let now = self.io.now_ms();
        self.io.timers.advance(now, &mut self.due);
        for i in 0..self.due.len() {
            let (key, at) = self.due[i];
            let Some((_, idx, gen)) = token::decode(key) else {
                continue;
            };
            let Some(slot) = self.io.slots.get_mut(idx as usize) else {
                continue;
            };
            if slot.gen != gen || slot.flags & flag::LIVE == 0 || slot.timer_at != at {
                // A released slot, or an entry superseded by an earlier deadline.
                continue;
            }
            let id = ConnId { idx, gen };
            if at > now {
                // Beyond the wheel's horizon: back in for another lap.
                self.io.timers.insert(key, at);
                continue;
            }
            slot.timer_at = 0;
            let deadline = slot.deadline;
            if deadline == 0 {
                continue;
            }
            if deadline > now {
                self.io.set_deadline(id, deadline);
                continue;
            }
            slot.deadline = 0;
            if let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) {
                self.handler.on_deadline(&mut self.io, id, conn);
            } else if slot.flags & flag::IN_CONNECT != 0 {
                // A deadline on a connect still in flight is a connect timeout.
                slot.cause = Some(CloseCause::Error(libc::ETIMEDOUT));
                self.io.close(id, CloseMode::Abort);
            }
            self.finalize();
        }
    }

    /// Releases slots whose close completed and tells the handler.
    fn finalize(&mut self) {
        while let Some(idx) = self.io.finalize.pop() {
            let (id, cause) = self.io.release(idx);
            if let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::take) {
                self.handler.on_closed(&mut self.io, id, conn, cause);
            }
        }
    }
}
