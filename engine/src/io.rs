//! Per-connection I/O state and the operations a [`Handler`](super::Handler)
//! may ask for: send, close, deadlines, connect.
//!
//! Ownership rule: a buffer, iovec or address referenced by an SQE stays in
//! the slot (or in the slot's boxed send vector) until that SQE's completion
//! has been reaped, and a slot is only freed once nothing is in flight for it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::time::Instant;

use bytes::Bytes;
use io_uring::{opcode, squeue, types};

use crate::listener::{self, PeerAddr};
use crate::mailbox::WakesInFlight;
use crate::ring::Ring;
use crate::stats::EngineStats;
use crate::timer::TimerWheel;
use crate::token::{self, Op};

/// Iovecs per `sendmsg`: enough to batch a burst of small frames in one call.
const MAX_IOV: usize = 64;

/// Empty send queues kept per worker for reuse ([`Io::sendq_pool`]), and the
/// largest capacity (in entries) one may have to be kept.
const SENDQ_POOL: usize = 256;
const SENDQ_POOL_MAX_CAP: usize = 16;

/// First retry delay of a send parked after `EAGAIN`; it doubles per failed
/// retry up to `RETRY_MIN_MS << RETRY_MAX_SHIFT` (640 ms).
const RETRY_MIN_MS: u64 = 10;
const RETRY_MAX_SHIFT: u8 = 6;

/// Most receives that ran the buffer ring dry ([`Io::starve`]) one loop
/// turn re-arms.
const REARM_MAX: usize = 4096;

/// `1` as a socket option value, for set-up steps the kernel reads at issue
/// time (static, so it outlives any SQE).
static ONE: libc::c_int = 1;

/// Builds an SQE on a descriptor: a fixed-file index in direct mode
/// (`IOSQE_FIXED_FILE`), a regular descriptor otherwise.
macro_rules! on_fd {
    ($direct:expr, $fd:expr, |$f:ident| $build:expr) => {
        if $direct {
            let $f = types::Fixed($fd as u32);
            $build
        } else {
            let $f = types::Fd($fd);
            $build
        }
    };
}

/// Identifies a connection: slot index plus the slot's generation, so a
/// stale id cannot reach a connection that reused the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub(crate) idx: u32,
    pub(crate) gen: u32,
}

impl ConnId {
    /// The slot index (dense, reused after close): handy for per-connection arrays.
    pub fn index(self) -> usize {
        self.idx as usize
    }

    /// The slot's generation when this id was issued.
    pub fn generation(self) -> u32 {
        self.gen
    }

    /// Rebuilds an id from [`ConnId::index`] and [`ConnId::generation`]
    /// (e.g. parsed from an id handed out earlier). Harmless if it names
    /// nothing: every lookup checks the generation.
    pub fn from_parts(index: u32, generation: u32) -> Self {
        ConnId {
            idx: index,
            gen: generation,
        }
    }
}

/// How to close a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Send everything queued, then `shutdown(SHUT_WR)`, then wait for the
    /// peer's EOF (the caller bounds the wait with a deadline and `Abort`).
    Graceful,
    /// Cancel everything in flight, drop unsent data and close.
    Abort,
    /// Send everything queued, then close without waiting for the peer:
    /// for a protocol whose closing handshake is already complete (a
    /// WebSocket close frame answered). Its FIN goes out with the close;
    /// no `shutdown`, which for a direct descriptor runs in io-wq.
    Finish,
}

/// How the TCP connection ended, as the engine saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// Both sides shut down in order.
    Clean,
    /// The peer closed (EOF) or the handler aborted before a clean close.
    Aborted,
    /// A socket error ended it (errno), e.g. `ECONNRESET` or `EPIPE`.
    Error(i32),
}

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closing or gone.
    #[error("connection is closed")]
    Closed,
    /// An outgoing connection whose connect has not completed: nothing may be
    /// in flight on it but the connect, whose failure releases the slot.
    #[error("connection is not established yet")]
    NotConnected,
}

pub(crate) mod flag {
    pub const IN_RECV: u8 = 1;
    pub const IN_SEND: u8 = 2;
    pub const IN_CONNECT: u8 = 4;
    /// A send that completed with `EAGAIN` waits in `Io::send_retry`
    /// (nothing in flight; the queue stays put).
    pub const SEND_PARKED: u8 = 8;
    pub const PEER_EOF: u8 = 16;
    pub const WR_SHUT: u8 = 32;
    pub const LIVE: u8 = 64;
    /// `shutdown(SHUT_WR)` is in flight.
    pub const IN_SHUT: u8 = 128;
    pub const INFLIGHT: u8 = IN_RECV | IN_SEND | IN_CONNECT | IN_SHUT;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    No,
    Graceful,
    Finish,
    Abort,
}

/// A `sendmsg` header and its iovecs, boxed so their address is stable while
/// the kernel reads them.
pub(crate) struct SendVec {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_IOV],
}

/// The addresses of a connect in flight (the kernel reads them when the
/// bind and connect are issued, which in direct mode is after the socket
/// operation completes).
pub(crate) struct ConnectAddrs {
    peer: (libc::sockaddr_storage, libc::socklen_t),
    local: Option<(libc::sockaddr_storage, libc::socklen_t)>,
}

/// The engine's half of a connection.
pub(crate) struct Slot {
    pub(crate) sendq: VecDeque<Bytes>,
    /// Present while a `sendmsg` is in flight.
    pub(crate) sendvec: Option<Box<SendVec>>,
    /// Present while a connect is in flight.
    pub(crate) connect_addr: Option<Box<ConnectAddrs>>,
    /// Bytes of `sendq.front()` already sent.
    pub(crate) send_off: usize,
    /// Bytes queued and not yet sent.
    pub(crate) queued: usize,
    /// Milliseconds since the worker's epoch; 0 = no deadline.
    pub(crate) deadline: u64,
    /// Scheduled time of the wheel entry that speaks for this slot; 0 = none.
    /// Other entries for the slot (superseded by an earlier deadline) are
    /// dropped when they come due.
    pub(crate) timer_at: u64,
    /// The descriptor: a fixed-file index in direct mode; -1 while a
    /// direct socket is being created.
    pub(crate) fd: RawFd,
    pub(crate) gen: u32,
    pub(crate) peer: PeerAddr,
    pub(crate) flags: u8,
    pub(crate) closing: Closing,
    /// Backoff exponent of a parked send's retry; 0 after a send succeeds.
    pub(crate) retry_shift: u8,
    pub(crate) cause: Option<CloseCause>,
}

impl Slot {
    fn new(fd: RawFd, gen: u32, peer: PeerAddr) -> Self {
        Self {
            peer,
            sendq: VecDeque::new(),
            sendvec: None,
            connect_addr: None,
            send_off: 0,
            queued: 0,
            deadline: 0,
            timer_at: 0,
            fd,
            gen,
            flags: flag::LIVE,
            closing: Closing::No,
            retry_shift: 0,
            cause: None,
        }
    }
}

/// The I/O side of one worker, as handlers see it.
pub struct Io {
    pub(crate) ring: Ring,
    pub(crate) slots: Vec<Slot>,
    free: Vec<u32>,
    pub(crate) timers: TimerWheel,
    /// Boxed so a vector keeps its address when it moves into a slot.
    #[allow(clippy::vec_box)]
    sendvec_pool: Vec<Box<SendVec>>,
    /// Empty send queues with their allocation: an idle connection holds
    /// none (it would be most of its memory), and taking one from here
    /// instead of the allocator saves a malloc and a free per message of a
    /// ping-pong load. At most [`SENDQ_POOL`] of at most
    /// [`SENDQ_POOL_MAX_CAP`] entries (512 B) each, per worker.
    sendq_pool: Vec<VecDeque<Bytes>>,
    /// Bells whose `MSG_RING` wake-up is in flight on this ring.
    pub(crate) wakes: WakesInFlight,
    /// Parked sends by retry time: (due ms, slot index, generation).
    send_retry: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Connections whose receive ended because the buffer ring was empty,
    /// oldest first: (slot index, generation). See [`Io::starve`].
    starved: VecDeque<(u32, u32)>,
    /// Bytes of the whole receive-buffer pool.
    pool_bytes: usize,
    /// Bytes per receive completion, a moving average (1/8 weight).
    recv_avg: usize,
    /// Slots whose close has completed; the worker finalizes them after the
    /// current callback returns (a handler may be holding the connection).
    pub(crate) finalize: Vec<u32>,
    epoch: Instant,
    /// Milliseconds since `epoch` plus 1, derived from `now_us`.
    now_ms: u64,
    /// Microseconds since `epoch`, read when the ring wait returned.
    now_us: u64,
    live: usize,
    /// Bytes queued and not yet sent, summed over this worker's connections.
    queued_total: usize,
    bgid: u16,
    /// Connections use direct descriptors (the ring's registered file
    /// table) instead of the process's descriptor table.
    pub(crate) direct: bool,
    /// Entries of the registered file table (0 in regular mode).
    file_table: u32,
    /// Table entries held by a slot or by a close not yet issued.
    pub(crate) files_held: u32,
    pub(crate) shutting_down: bool,
    pub(crate) stats: EngineStats,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("live", &self.live)
            .field("ring", &self.ring)
            .finish()
    }
}

/// Empties a connection's send queue, keeping its allocation in `pool`
/// (bounded, see [`SENDQ_POOL`]); the slot is left with no allocation.
fn pool_sendq(pool: &mut Vec<VecDeque<Bytes>>, q: &mut VecDeque<Bytes>) {
    let mut q = std::mem::take(q);
    if q.capacity() > 0 && q.capacity() <= SENDQ_POOL_MAX_CAP && pool.len() < SENDQ_POOL {
        q.clear();
        pool.push(q);
    }
}

impl Io {
    /// `file_table`: entries of the ring's registered (sparse) file table
    /// that connections use as direct descriptors; 0 = regular descriptors.
    /// `pool_bytes`: the size of the receive-buffer pool (`bgid`).
    pub(crate) fn new(ring: Ring, bgid: u16, file_table: u32, pool_bytes: usize) -> Self {
        let epoch = Instant::now();
        Self {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            // Start at 1 so that deadline 0 can mean "none".
            timers: TimerWheel::new(1),
            sendvec_pool: Vec::new(),
            sendq_pool: Vec::new(),
            wakes: WakesInFlight::default(),
            send_retry: BinaryHeap::new(),
            starved: VecDeque::new(),
            pool_bytes,
            recv_avg: 4096,
            finalize: Vec::new(),
            epoch,
            now_ms: 1,
            now_us: 0,
            live: 0,
            queued_total: 0,
            bgid,
            direct: file_table > 0,
            file_table,
            files_held: 0,
            shutting_down: false,
            stats: EngineStats::default(),
        }
    }

    /// Reads the clock: once per loop iteration, as soon as the ring wait
    /// returns, so one reading stamps every completion reaped in that
    /// iteration. Both [`Io::now_ms`] and [`Io::now_us`] come from it; a
    /// second read per iteration would cost ~30 ns for nothing.
    pub(crate) fn update_clock(&mut self) {
        self.now_us = self.epoch.elapsed().as_micros() as u64;
        self.now_ms = self.now_us / 1000 + 1;
    }

    /// Milliseconds since this worker started, plus 1 (so that deadline 0
    /// can mean "none"); read once per loop iteration.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Microseconds since this worker started, read when the ring wait last
    /// returned: the arrival time of every completion handled in this loop
    /// iteration. For latency metrics, where [`Io::now_ms`] is too coarse.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// The peer address of a live connection.
    pub fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.slot(id)?.peer.get()
    }

    /// Direct mode: free entries of this worker's registered file table,
    /// which is what bounds its connections (accepted and outgoing). A
    /// server keeps a reserve of them to answer overload with a fast
    /// refusal instead of leaving connections in the listen backlog.
    /// `None` with regular descriptors.
    pub fn descriptor_headroom(&self) -> Option<usize> {
        self.direct
            .then(|| self.file_table.saturating_sub(self.files_held) as usize)
    }

    /// True once the worker has begun to drain (no new connections).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Counters for engine-health metrics.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Bytes queued for sending and not yet sent, over all of this worker's
    /// connections (kept as a running total, so reading it is free).
    pub fn send_queue_bytes(&self) -> usize {
        self.queued_total
    }

    /// Entries waiting for room in the submission queue right now.
    pub fn sq_backlog(&self) -> usize {
        self.ring.backlog_len()
    }

    /// The most entries that ever waited for room in the submission queue.
    pub fn sq_backlog_peak(&self) -> usize {
        self.ring.backlog_peak
    }

    /// The kernel's count of completions dropped because the completion
    /// queue was full (`io_uring`'s `cq.overflow`).
    pub fn cq_overflow(&mut self) -> u32 {
        self.ring.uring.completion().overflow()
    }

    /// Connections currently holding a slot on this worker.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Entries in the timing wheel (at most one per connection).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    pub(crate) fn slot(&self, id: ConnId) -> Option<&Slot> {
        self.slots
            .get(id.idx as usize)
            .filter(|s| s.gen == id.gen && s.flags & flag::LIVE != 0)
    }

    fn slot_mut(&mut self, id: ConnId) -> Option<&mut Slot> {
        self.slots
            .get_mut(id.idx as usize)
            .filter(|s| s.gen == id.gen && s.flags & flag::LIVE != 0)
    }

    pub(crate) fn id_of(&self, idx: u32) -> ConnId {
        ConnId {
            idx,
            gen: self.slots[idx as usize].gen,
        }
    }

    /// Bytes queued on a connection and not yet sent.
    pub fn queued_bytes(&self, id: ConnId) -> usize {
        self.slot(id).map_or(0, |s| s.queued)
    }

    pub(crate) fn alloc(&mut self, fd: RawFd, peer: Option<SocketAddr>) -> ConnId {
        self.live += 1;
        if self.direct && fd >= 0 {
            self.files_held += 1;
        }
        let peer = PeerAddr::from(peer);
        if let Some(idx) = self.free.pop() {
            let slot = &mut self.slots[idx as usize];
            let gen = slot.gen;
            *slot = Slot::new(fd, gen, peer);
            ConnId { idx, gen }
        } else {
            let idx =
                u32::try_from(self.slots.len()).expect("fewer than 2^32 connections per worker");
            self.slots.push(Slot::new(fd, 0, peer));
            ConnId { idx, gen: 0 }
        }
    }

    /// Closes a descriptor nothing is in flight on: through the ring in
    /// direct mode (the table entry is free once the close is issued).
    pub(crate) fn close_fd(&mut self, fd: RawFd) {
        if fd < 0 {
            return;
        }
        if self.direct {
            let entry = opcode::Close::new(types::Fixed(fd as u32))
                .build()
                .user_data(token::encode(Op::Close, 0, 0));
            // SAFETY: a close references no memory of ours.
            unsafe { self.ring.push(entry) };
            self.files_held = self.files_held.saturating_sub(1);
        } else {
            // SAFETY: the caller owns `fd` and nothing is in flight on it.
            unsafe { libc::close(fd) };
        }
    }

    /// Closes the descriptor and returns the slot to the free list.
    pub(crate) fn release(&mut self, idx: u32) -> (ConnId, CloseCause) {
        let slot = &mut self.slots[idx as usize];
        debug_assert_eq!(
            slot.flags & flag::INFLIGHT,
            0,
            "slot freed with an operation in flight"
        );
        let id = ConnId { idx, gen: slot.gen };
        let cause = slot.cause.unwrap_or(CloseCause::Aborted);
        let fd = std::mem::replace(&mut slot.fd, -1);
        slot.flags = 0;
        slot.gen = slot.gen.wrapping_add(1) & 0xff_ffff;
        pool_sendq(&mut self.sendq_pool, &mut slot.sendq);
        self.queued_total -= std::mem::take(&mut slot.queued);
        slot.deadline = 0;
        slot.timer_at = 0;
        if let Some(v) = slot.sendvec.take() {
            self.sendvec_pool.push(v);
        }
        self.free.push(idx);
        self.live -= 1;
        // The slot owns `fd` and nothing is in flight on it any more.
        self.close_fd(fd);
        (id, cause)
    }

    pub(crate) fn arm_recv(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        let entry = on_fd!(self.direct, slot.fd, |f| opcode::RecvMulti::new(
            f, self.bgid
        ))
        .build()
        .user_data(token::encode(Op::Recv, idx, slot.gen));
        slot.flags |= flag::IN_RECV;
        // SAFETY: a provided-buffer receive references no memory of ours.
        unsafe { self.ring.push(entry) };
    }

    /// A receive completion delivered `len` bytes (for the re-arm budget).
    pub(crate) fn received(&mut self, len: usize) {
        self.recv_avg = (self.recv_avg * 7 + len) / 8;
    }

    /// Connection `idx`'s multishot receive ended with `ENOBUFS`: the buffer
    /// ring was empty when its bytes came, which stay in the socket.
    /// Re-arming it at once, as every such receive was, made a storm when
    /// more connections had bytes waiting than the pool holds (200
    /// connections x 16 KiB against 4 x 64 KiB): each loop turn re-armed
    /// them all, the pool filled after a few, and the rest failed again,
    /// ~20 failed receives per message delivered. So it waits here, in
    /// order, for [`Io::rearm_starved`].
    pub(crate) fn starve(&mut self, idx: u32) {
        self.starved.push_back((idx, self.slots[idx as usize].gen));
    }

    /// Re-arms the oldest starved receives, as many as the pool holds
    /// receives of the average size (1 to [`REARM_MAX`]). Called once per
    /// loop turn, before the submit. A receive armed with bytes waiting
    /// takes its buffer at submission, before the receives of connections
    /// whose bytes arrive later in the turn, so those are the ones that
    /// find the ring empty next: starved connections take turns, in order.
    pub(crate) fn rearm_starved(&mut self) {
        if self.starved.is_empty() {
            return;
        }
        let mut n = (self.pool_bytes / self.recv_avg.max(64)).clamp(1, REARM_MAX);
        while n > 0 {
            let Some((idx, gen)) = self.starved.pop_front() else {
                break;
            };
            let slot = &self.slots[idx as usize];
            if slot.gen == gen
                && slot.flags & flag::LIVE != 0
                && slot.flags & (flag::IN_RECV | flag::PEER_EOF) == 0
                && slot.closing != Closing::Abort
            {
                self.arm_recv(idx);
                n -= 1;
            }
        }
    }

    /// True while receives wait for [`Io::rearm_starved`].
    pub(crate) fn has_starved(&self) -> bool {
        !self.starved.is_empty()
    }

    /// Queues `data` for sending. Returns the bytes now queued on the
    /// connection so the caller can apply its slow-consumer policy.
    pub fn send(&mut self, id: ConnId, data: Bytes) -> Result<usize, SendError> {
        let slot = self.slot_mut(id).ok_or(SendError::Closed)?;
        if slot.closing == Closing::Abort || slot.flags & flag::WR_SHUT != 0 {
            return Err(SendError::Closed);
        }
        if slot.flags & flag::IN_CONNECT != 0 {
            return Err(SendError::NotConnected);
        }
        if data.is_empty() {
            return Ok(slot.queued);
        }
        let slot = &mut self.slots[id.idx as usize];
        let len = data.len();
        slot.queued += len;
        if slot.sendq.capacity() == 0 {
            if let Some(q) = self.sendq_pool.pop() {
                slot.sendq = q;
            }
        }
        slot.sendq.push_back(data);
        let queued = slot.queued;
        self.queued_total += len;
        self.flush(id.idx);
        Ok(queued)
    }

    /// Starts a send for whatever is queued, unless one is in flight.
    fn flush(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if slot.flags & (flag::IN_SEND | flag::SEND_PARKED) != 0
            || slot.sendq.is_empty()
            || slot.closing == Closing::Abort
        {
            return;
        }
        let user_data = token::encode(Op::Send, idx, slot.gen);
        let entry = if slot.sendq.len() == 1 {
            let front = &slot.sendq[0][slot.send_off..];
            on_fd!(self.direct, slot.fd, |f| opcode::Send::new(
                f,
                front.as_ptr(),
                front.len() as u32
            )
            .flags(libc::MSG_NOSIGNAL)
            .build())
        } else {
            let mut vec = self.sendvec_pool.pop().unwrap_or_else(|| {
                Box::new(SendVec {
                    // SAFETY: msghdr and iovec are plain C structs; zero is valid.
                    hdr: unsafe { std::mem::zeroed() },
                    iov: [libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    }; MAX_IOV],
                })
            });
            let mut n = 0;
            for (i, buf) in slot.sendq.iter().take(MAX_IOV).enumerate() {
                let part = if i == 0 {
                    &buf[slot.send_off..]
                } else {
                    &buf[..]
                };
                vec.iov[i] = libc::iovec {
                    iov_base: part.as_ptr() as *mut _,
                    iov_len: part.len(),
                };
                n += 1;
            }
            vec.hdr.msg_iov = vec.iov.as_mut_ptr();
            vec.hdr.msg_iovlen = n;
            let hdr: *const libc::msghdr = &vec.hdr;
            slot.sendvec = Some(vec);
            on_fd!(self.direct, slot.fd, |f| opcode::SendMsg::new(f, hdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build())
        };
        slot.flags |= flag::IN_SEND;
        // SAFETY: the Bytes referenced stay in `sendq` and the boxed msghdr in
        // `slot.sendvec` until the send completion, which `complete_send` handles
        // before anything is popped or the slot is released.
        unsafe { self.ring.push(entry.user_data(user_data)) };
    }

    /// A send completed. What the close path needs afterwards (dropping
    /// what is unsent, finalizing) is [`Io::settle`]'s job, which the worker
    /// runs after every completion.
    pub(crate) fn complete_send(&mut self, idx: u32, res: i32) {
        let slot = &mut self.slots[idx as usize];
        slot.flags &= !flag::IN_SEND;
        if let Some(v) = slot.sendvec.take() {
            self.sendvec_pool.push(v);
        }
        if res < 0 {
            match -res {
                // Our own abort cancelled it (ECANCELED; EINTR if it was
                // running in an io-wq worker), or it failed after the abort
                // had already decided the connection's fate: not the cause.
                _ if slot.closing == Closing::Abort => {
                    self.stats.sends_cancelled += 1;
                }
                // io_uring wakes every poll on a socket whose peer has shut
                // down its side (EPOLLRDHUP is always in the mask), so a
                // send waiting for room to a half-closed peer that does not
                // read is woken at once, finds no room, and is run in io-wq,
                // where a non-blocking socket answers EAGAIN. Resubmitting
                // now would spin through that path, and a poll wait fires
                // the same way: retry from the timer with backoff instead.
                libc::EAGAIN => {
                    self.stats.send_retries += 1;
                    slot.flags |= flag::SEND_PARKED;
                    let delay = RETRY_MIN_MS << slot.retry_shift.min(RETRY_MAX_SHIFT);
                    slot.retry_shift = slot.retry_shift.saturating_add(1);
                    let due = self.now_ms + delay;
                    self.send_retry.push(Reverse((due, idx, slot.gen)));
                }
                errno => {
                    self.stats.send_errors += 1;
                    self.fail(idx, errno);
                }
            }
            return;
        }
        slot.retry_shift = 0;
        let mut n = res as usize;
        slot.queued -= n;
        self.queued_total -= n;
        while n > 0 {
            let left = slot.sendq[0].len() - slot.send_off;
            if n >= left {
                n -= left;
                slot.sendq.pop_front();
                slot.send_off = 0;
            } else {
                slot.send_off += n;
                n = 0;
            }
        }
        if slot.closing == Closing::Abort {
            // settle() drops the rest.
        } else if !slot.sendq.is_empty() {
            self.flush(idx);
        } else {
            // An idle connection holds no queue allocation (it is most of the
            // per-connection memory otherwise); the next burst takes one
            // from the pool.
            pool_sendq(&mut self.sendq_pool, &mut slot.sendq);
            self.after_drain(idx);
        }
    }

    /// Resubmits parked sends (see `complete_send`) whose retry time has come.
    pub(crate) fn retry_sends(&mut self) {
        while let Some(&Reverse((due, idx, gen))) = self.send_retry.peek() {
            if due > self.now_ms {
                break;
            }
            self.send_retry.pop();
            let slot = &mut self.slots[idx as usize];
            if slot.gen == gen && slot.flags & flag::SEND_PARKED != 0 {
                slot.flags &= !flag::SEND_PARKED;
                self.flush(idx);
            }
        }
    }

    /// Send queue empty: a graceful close can now shut down our side.
    fn after_drain(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if slot.closing == Closing::Finish && slot.flags & flag::IN_SEND == 0 {
            // Everything is sent: the close (after the receive's cancel)
            // sends our FIN. An orderly end, whatever the cancel completes with.
            slot.cause.get_or_insert(CloseCause::Clean);
            self.abort_idx(idx);
            return;
        }
        if slot.closing == Closing::Graceful
            && slot.flags & flag::WR_SHUT == 0
            && slot.flags & flag::IN_SEND == 0
        {
            if slot.flags & flag::PEER_EOF != 0 {
                // Both directions are done once ours is: the close that
                // follows sends our FIN, no shutdown needed.
                slot.flags |= flag::WR_SHUT;
                self.settle(idx);
                return;
            }
            if !self.direct {
                slot.flags |= flag::WR_SHUT;
                // SAFETY: plain syscall on a descriptor the slot owns.
                unsafe { libc::shutdown(slot.fd, libc::SHUT_WR) };
                self.settle(idx);
                return;
            }
            // A direct descriptor has no number for the syscall, and the
            // kernel always runs IORING_OP_SHUTDOWN in an io-wq thread (its
            // bounded pool, capped at one thread per ring, see `Ring::new`).
            slot.flags |= flag::WR_SHUT | flag::IN_SHUT;
            let entry = opcode::Shutdown::new(types::Fixed(slot.fd as u32), libc::SHUT_WR)
                .build()
                .user_data(token::encode(Op::Shutdown, idx, slot.gen));
            // SAFETY: a shutdown references no memory of ours.
            unsafe { self.ring.push(entry) };
        }
    }

    /// Our `shutdown(SHUT_WR)` completed; a failure (the peer reset first)
    /// changes nothing: the receive side reports how the connection ended.
    pub(crate) fn complete_shutdown(&mut self, idx: u32) {
        self.slots[idx as usize].flags &= !flag::IN_SHUT;
    }

    /// Records a socket error and aborts the connection.
    pub(crate) fn fail(&mut self, idx: u32, errno: i32) {
        let slot = &mut self.slots[idx as usize];
        slot.cause.get_or_insert(CloseCause::Error(errno));
        self.abort_idx(idx);
    }

    /// Closes a connection; see [`CloseMode`]. Closing twice is harmless, and
    /// `Abort` overrides an earlier `Graceful`. A connection still connecting
    /// has nothing to flush: any close aborts the connect.
    pub fn close(&mut self, id: ConnId, mode: CloseMode) {
        let Some(slot) = self.slot_mut(id) else {
            return;
        };
        let mode = if slot.flags & flag::IN_CONNECT != 0 {
            CloseMode::Abort
        } else {
            mode
        };
        match (mode, slot.closing) {
            (_, Closing::Abort)
            | (CloseMode::Graceful | CloseMode::Finish, Closing::Graceful | Closing::Finish) => {}
            (CloseMode::Graceful, Closing::No) => {
                slot.closing = Closing::Graceful;
                if slot.sendq.is_empty() {
                    self.after_drain(id.idx);
                }
            }
            (CloseMode::Finish, Closing::No) => {
                slot.closing = Closing::Finish;
                if slot.sendq.is_empty() {
                    self.after_drain(id.idx);
                }
            }
            (CloseMode::Abort, _) => self.abort_idx(id.idx),
        }
    }

    fn abort_idx(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if slot.closing == Closing::Abort {
            return;
        }
        slot.closing = Closing::Abort;
        // What ended the connection is the first thing that did: a socket
        // error recorded by `fail`, or this abort; not what the
        // cancellations it causes complete with.
        slot.cause.get_or_insert(CloseCause::Aborted);
        // One cancel per operation in flight, matched by its user_data: the
        // kernel finds those in a hash table. Matching by descriptor instead
        // (`ASYNC_CANCEL_FD | ALL`) walks every request on the ring, so at
        // 20,000 connections per ring tearing them all down took minutes of
        // CPU (measured in the million-connection run: `io_cancel_req_match`
        // at 90 % of both cores).
        let gen = slot.gen;
        let flags = slot.flags;
        for (bit, op) in [
            (flag::IN_RECV, Op::Recv),
            (flag::IN_SEND, Op::Send),
            (flag::IN_CONNECT, Op::Connect),
            (flag::IN_SHUT, Op::Shutdown),
        ] {
            if flags & bit != 0 {
                let entry = opcode::AsyncCancel::new(token::encode(op, idx, gen))
                    .build()
                    .user_data(token::encode(Op::Cancel, idx, gen));
                // SAFETY: a cancel request references no memory of ours.
                unsafe { self.ring.push(entry) };
            }
        }
        self.settle(idx);
    }

    /// Moves a closing slot forward: an aborted connection's unsent bytes
    /// are dropped as soon as no send references them, and the slot is
    /// queued for release once nothing is in flight and its close has run
    /// its course.
    ///
    /// This is the close path's single rule: it runs after *every*
    /// completion that belongs to a slot (the worker calls it, whatever the
    /// operation and its result) and after every close request. So whichever
    /// completion turns out to be a slot's last one, in whatever order the
    /// kernel delivers the cancelled ones, finalizes it; no call site has to
    /// remember to.
    pub(crate) fn settle(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if slot.flags & flag::LIVE == 0 {
            return;
        }
        if slot.closing == Closing::Abort && slot.flags & flag::IN_SEND == 0 && slot.queued > 0 {
            slot.flags &= !flag::SEND_PARKED;
            pool_sendq(&mut self.sendq_pool, &mut slot.sendq);
            slot.send_off = 0;
            self.queued_total -= std::mem::take(&mut slot.queued);
        }
        if slot.flags & flag::INFLIGHT != 0 {
            return;
        }
        let done = match slot.closing {
            // Finish becomes Abort once the queue has drained (after_drain).
            Closing::No | Closing::Finish => false,
            Closing::Abort => true,
            Closing::Graceful => {
                let clean = slot.flags & flag::WR_SHUT != 0 && slot.flags & flag::PEER_EOF != 0;
                if clean {
                    slot.cause.get_or_insert(CloseCause::Clean);
                }
                clean
            }
        };
        if done {
            slot.flags &= !flag::LIVE;
            self.finalize.push(idx);
        }
    }

    /// Sets (or with 0 clears) the connection's deadline, in [`Io::now_ms`] time.
    /// When it passes, the handler's `on_deadline` runs. Moving a deadline
    /// later is a store; moving it earlier adds a wheel entry.
    pub fn set_deadline(&mut self, id: ConnId, at_ms: u64) {
        let Some(slot) = self.slot_mut(id) else {
            return;
        };
        slot.deadline = at_ms;
        if at_ms != 0 && (slot.timer_at == 0 || at_ms < slot.timer_at) {
            slot.timer_at = at_ms;
            self.timers
                .insert(token::encode(Op::Timer, id.idx, id.gen), at_ms);
        }
    }

    /// Starts an outgoing connection (client role). The handler's `on_open`
    /// runs when it is established, `on_connect_failed` if it is not. A
    /// deadline set on the returned id before it is established is a connect
    /// timeout: `on_connect_failed` then gets `ETIMEDOUT`.
    pub fn connect(&mut self, addr: SocketAddr, bind: Option<SocketAddr>) -> io::Result<ConnId> {
        let addrs = Box::new(ConnectAddrs {
            peer: listener::sockaddr(&addr),
            local: bind.as_ref().map(listener::sockaddr),
        });
        if self.direct {
            // A direct socket: created by the ring, then set up and
            // connected by a linked chain (`start_connect`).
            let id = self.alloc(-1, Some(addr));
            let slot = &mut self.slots[id.idx as usize];
            slot.connect_addr = Some(addrs);
            slot.flags |= flag::IN_CONNECT;
            let family = if addr.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            let entry = opcode::Socket::new(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)
                .file_index(Some(types::DestinationSlot::auto_target()))
                .build()
                .user_data(token::encode(Op::Socket, id.idx, id.gen));
            // SAFETY: a socket request references no memory of ours.
            unsafe { self.ring.push(entry) };
            return Ok(id);
        }
        let fd = listener::tcp_socket(&addr, true)?;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        listener::set_int_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        if let Some(local) = bind {
            // Lets many connections share a source address before the port is picked.
            listener::set_int_opt(raw, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
            listener::bind(raw, &local)?;
        }
        let id = self.alloc(fd.into_raw_fd(), Some(addr));
        let slot = &mut self.slots[id.idx as usize];
        slot.connect_addr = Some(addrs);
        slot.flags |= flag::IN_CONNECT;
        self.start_connect(id.idx);
        Ok(id)
    }

    /// Direct mode: the socket operation of `connect` completed with the
    /// fixed-file index `res` (or an error). False if the connect cannot go
    /// on (failed or aborted meanwhile): the caller reports it.
    pub(crate) fn socket_created(&mut self, idx: u32, res: i32) -> bool {
        if res < 0 {
            return false;
        }
        self.files_held += 1;
        let slot = &mut self.slots[idx as usize];
        slot.fd = res;
        if slot.closing == Closing::Abort {
            return false;
        }
        self.start_connect(idx);
        true
    }

    /// Submits the connect, preceded in direct mode by its set-up steps
    /// (`TCP_NODELAY`, and a bind to the source address), linked so that
    /// they run in order and a failing step fails the connect.
    fn start_connect(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        let gen = slot.gen;
        let addrs = slot
            .connect_addr
            .as_deref()
            .expect("a connect in flight has its addresses");
        let (peer, peer_len) = (&addrs.peer.0 as *const libc::sockaddr_storage, addrs.peer.1);
        let connect = on_fd!(self.direct, slot.fd, |f| opcode::Connect::new(
            f,
            peer.cast(),
            peer_len
        )
        .build())
        .user_data(token::encode(Op::Connect, idx, gen));
        if !self.direct {
            // SAFETY: the address stays boxed in the slot until the connect completes.
            unsafe { self.ring.push(connect) };
            return;
        }
        let fixed = types::Fixed(slot.fd as u32);
        let link = squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS;
        let setup = token::encode(Op::Setup, idx, gen);
        let opt = |level: i32, name: i32| {
            opcode::SetSockOpt::new(
                fixed,
                level as u32,
                name as u32,
                (&ONE as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
            .build()
            .flags(link)
            .user_data(setup)
        };
        let mut chain = [
            opt(libc::IPPROTO_TCP, libc::TCP_NODELAY),
            connect.clone(),
            connect.clone(),
            connect,
        ];
        let mut n = 1;
        if let Some((local, local_len)) = &addrs.local {
            // Lets many connections share a source address before the port is picked.
            chain[1] = opt(libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT);
            chain[2] = opcode::Bind::new(
                fixed,
                (local as *const libc::sockaddr_storage).cast(),
                *local_len,
            )
            .build()
            .flags(link)
            .user_data(setup);
            n = 3;
        }
        // SAFETY: the addresses stay boxed in the slot until the connect
        // (the chain's last entry) completes; ONE is static.
        unsafe { self.ring.push_chain(&chain[..=n]) };
    }
}
