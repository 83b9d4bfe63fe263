//! A raw io_uring TCP echo server: the kernel-limit reference for the
//! gateway's per-message CPU cost.
//!
//! ```text
//! cargo run --release -p engine --example raw_echo -- ADDR [--fds] [--buffers N] [--buffer-size BYTES]
//! ```
//! Prints `listening on ADDR` (with the resolved port) on stdout, then echoes
//! every byte it receives on every connection until it is killed.
//!
//! # Why it exists
//! It is the least an io_uring echo server can do per message, so the gap
//! between it and the gateway (`results/echo-vs-raw.md`, measured by
//! `results/echo-vs-raw/run.sh` in one paired run) is what the gateway's own
//! work costs: WebSocket framing and unmasking, its connection state machine,
//! timers, metrics. It deliberately does not use the engine crate (no
//! `Worker`, no `Ring`, no `BufRing`), only the `io-uring` crate, so engine
//! overhead shows up in the gap instead of in both numbers.
//!
//! # What it does
//! * One thread, one ring set up with `SINGLE_ISSUER | DEFER_TASKRUN` (the
//!   gateway's mode), no fallback: on an older kernel it fails at start-up.
//! * One multishot accept on the listener. Connections are direct descriptors
//!   (entries of the ring's sparse file table, as the gateway's
//!   `io.direct_descriptors = true` in `config/prod.toml`); `--fds` uses
//!   ordinary file descriptors instead.
//! * `TCP_NODELAY` is set on the listener; Linux copies it to every accepted
//!   socket (direct descriptors cannot be passed to `setsockopt`).
//! * One multishot receive per connection from one provided-buffer ring of
//!   whole buffers (`--buffers`, default 256, x `--buffer-size`, default
//!   16 KiB, the gateway's `io.recv_buffer_size`), advised to transparent
//!   huge pages. Whole buffers and not the gateway's incremental ones: a
//!   buffer held by a send must not be written by a later receive.
//! * One send per received chunk, straight from the provided buffer: no copy.
//!   The buffer is held until its send completes, then goes back to the
//!   ring. Sends of one connection go out one at a time in arrival order (a
//!   short send is continued before the next chunk), so bytes never reorder.
//! * End of stream or a receive error: the connection is closed (through the
//!   ring) once its send in flight, if any, has completed. A send error drops
//!   the unsent chunks, cancels the receive and closes after it ends. No
//!   operation of a connection is in flight when its close is submitted, so
//!   a reused slot or descriptor number never meets a stale completion.
//! * A receive that ran out of buffers (`ENOBUFS`: every buffer held by a
//!   send, or taken by the receives of one batch) is re-armed after the
//!   completion batch; stderr gets a line at the 1st, 2nd, 4th, 8th ... such
//!   event, so a measurement can tell whether the pool was large enough.
//!   Nothing else: no timers, no limits, no metrics, no shutdown.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::squeue::Entry;
use io_uring::types::{BufRingEntry, Fd, Fixed};
use io_uring::{cqueue, opcode, IoUring, SubmissionQueue, Submitter};

/// Default size of one provided receive buffer (the gateway's `io.recv_buffer_size`).
const BUF_SIZE: u32 = 16 * 1024;
/// Default number of provided buffers (a power of two, at most 32,768). A
/// buffer is held from its receive to its send's completion, which is read
/// in the loop turn after the send was submitted; one loop turn's receives
/// must find free buffers meanwhile. Not more: the buffers are used in ring
/// order, so all of them cycle through the caches (4,096 x 16 KiB cost the
/// gateway and the bench client ~4-6 % per ping-pong message against 256,
/// results/gateway-recv-buffers.md). 256 x 4 KiB touched by 4 KiB messages
/// is 1 MiB; 100-byte messages touch 2 cache lines per buffer.
const BUF_COUNT: u16 = 256;
/// Buffer group id of the provided-buffer ring.
const BGID: u16 = 0;
/// Submission queue entries; the completion queue gets 16 times as many.
const RING_ENTRIES: u32 = 4096;
/// Most direct descriptors (also capped by the open-files limit).
const MAX_FILE_TABLE: u32 = 65536;

/// Operation kinds in the top byte of `user_data`; the low 32 bits carry the
/// connection index (direct slot, or descriptor with `--fds`).
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_CLOSE: u64 = 4;
const OP_CANCEL: u64 = 5;

fn user_data(op: u64, idx: u32) -> u64 {
    (op << 56) | u64::from(idx)
}

/// A received chunk waiting to be echoed: `len` bytes at `off` of buffer `bid`.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    bid: u16,
    off: u32,
    len: u32,
}

#[derive(Debug, Default)]
struct Conn {
    open: bool,
    /// The multishot receive has ended for good (end of stream or error).
    recv_done: bool,
    /// The front of `queue` is being sent.
    sending: bool,
    /// A send failed: nothing more is sent, the connection is closing.
    failed: bool,
    queue: VecDeque<Chunk>,
}

/// The provided-buffer ring: `count` descriptors followed by the buffers of
/// `size` bytes, in one anonymous mapping registered as group [`BGID`].
#[derive(Debug)]
struct Buffers {
    base: NonNull<u8>,
    ring_bytes: usize,
    count: u16,
    size: u32,
    tail: u16,
}

impl Buffers {
    fn new(submitter: &Submitter<'_>, count: u16, size: u32) -> io::Result<Self> {
        assert!(count.is_power_of_two() && count <= 32768 && size > 0);
        let ring_bytes =
            (usize::from(count) * std::mem::size_of::<BufRingEntry>()).next_multiple_of(4096);
        let map_len = ring_bytes + usize::from(count) * size as usize;
        // SAFETY: an anonymous private mapping with no address hint; the result
        // is checked below. It is never unmapped: the process ends with it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Fewer TLB misses when the kernel copies into buffers all over the
        // mapping. Best effort: without THP it changes nothing.
        // SAFETY: advice on our own fresh mapping; it does not change its contents.
        unsafe { libc::madvise(ptr, map_len, libc::MADV_HUGEPAGE) };
        let base = NonNull::new(ptr.cast::<u8>()).expect("mmap returned non-null");
        // SAFETY: the mapping is page-aligned, holds `count` descriptors and
        // stays mapped for the life of the process, hence of the ring.
        unsafe { submitter.register_buf_ring_with_flags(base.as_ptr() as u64, count, BGID, 0)? };
        let mut bufs = Self {
            base,
            ring_bytes,
            count,
            size,
            tail: 0,
        };
        for bid in 0..count {
            bufs.recycle(bid);
        }
        bufs.commit();
        Ok(bufs)
    }

    /// Address of byte `off` of buffer `bid`.
    fn addr(&self, bid: u16, off: u32) -> *const u8 {
        assert!(bid < self.count && off < self.size);
        // SAFETY: bid and off are in bounds of the mapping (checked above).
        unsafe {
            self.base
                .as_ptr()
                .add(self.ring_bytes + usize::from(bid) * self.size as usize + off as usize)
        }
    }

    /// Queues buffer `bid` for the kernel (visible after [`Buffers::commit`]).
    /// Callers pass only buffers they hold: ones a receive completion handed
    /// out whose send has completed, or (at start-up) every buffer once.
    fn recycle(&mut self, bid: u16) {
        let addr = self.addr(bid, 0) as u64;
        let idx = usize::from(self.tail & (self.count - 1));
        // SAFETY: idx is masked into the ring; the kernel reads descriptors
        // only up to the published tail, which does not cover this one yet.
        let entry = unsafe { &mut *self.base.as_ptr().cast::<BufRingEntry>().add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes recycled buffers to the kernel.
    fn commit(&self) {
        // SAFETY: the tail lives inside the first descriptor of our mapping and
        // is read by the kernel concurrently, hence the atomic release store.
        let tail = unsafe {
            &*(BufRingEntry::tail(self.base.as_ptr().cast::<BufRingEntry>()) as *const AtomicU16)
        };
        tail.store(self.tail, Ordering::Release);
    }
}

struct Server<'a> {
    submitter: Submitter<'a>,
    sq: SubmissionQueue<'a>,
    listener: i32,
    direct: bool,
    conns: Vec<Conn>,
    bufs: Buffers,
    /// Connections whose receive ended with ENOBUFS, re-armed after the batch.
    starved: Vec<u32>,
    /// ENOBUFS completions so far.
    enobufs: u64,
}

impl Server<'_> {
    /// Queues `entry`, submitting first if the submission queue is full.
    ///
    /// # Safety
    /// Whatever `entry` points to must stay valid until its completion.
    unsafe fn push(&mut self, entry: Entry) {
        loop {
            // SAFETY: the caller guarantees the entry's memory outlives it.
            if unsafe { self.sq.push(&entry) }.is_ok() {
                return;
            }
            self.sq.sync();
            match self.submitter.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => panic!("io_uring_enter: {e}"),
            }
            self.sq.sync();
        }
    }

    fn arm_accept(&mut self) {
        let entry = opcode::AcceptMulti::new(Fd(self.listener))
            .allocate_file_index(self.direct)
            .build()
            .user_data(user_data(OP_ACCEPT, 0));
        // SAFETY: the entry points to no memory.
        unsafe { self.push(entry) };
    }

    fn arm_recv(&mut self, idx: u32) {
        let entry = if self.direct {
            opcode::RecvMulti::new(Fixed(idx), BGID).build()
        } else {
            opcode::RecvMulti::new(Fd(idx as i32), BGID).build()
        };
        // SAFETY: the entry points to no memory of ours (the kernel picks
        // buffers from the registered ring).
        unsafe { self.push(entry.user_data(user_data(OP_RECV, idx))) };
    }

    /// Sends the chunk at the front of `idx`'s queue.
    fn send_front(&mut self, idx: u32) {
        let conn = &mut self.conns[idx as usize];
        let chunk = *conn.queue.front().expect("a chunk to send");
        conn.sending = true;
        let ptr = self.bufs.addr(chunk.bid, chunk.off);
        let entry = if self.direct {
            opcode::Send::new(Fixed(idx), ptr, chunk.len)
        } else {
            opcode::Send::new(Fd(idx as i32), ptr, chunk.len)
        };
        let entry = entry
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(OP_SEND, idx));
        // SAFETY: the bytes are in buffer `bid`, which we hold (it is not
        // recycled) until this send's completion.
        unsafe { self.push(entry) };
    }

    fn close(&mut self, idx: u32) {
        let conn = &mut self.conns[idx as usize];
        debug_assert!(conn.recv_done && !conn.sending && conn.queue.is_empty());
        conn.open = false;
        let entry = if self.direct {
            opcode::Close::new(Fixed(idx)).build()
        } else {
            opcode::Close::new(Fd(idx as i32)).build()
        };
        // SAFETY: the entry points to no memory.
        unsafe { self.push(entry.user_data(user_data(OP_CLOSE, idx))) };
    }

    /// Drops the chunks not yet sent, giving their buffers back.
    fn drop_queue(&mut self, idx: u32) {
        let conn = &mut self.conns[idx as usize];
        let keep = usize::from(conn.sending);
        while conn.queue.len() > keep {
            let chunk = conn.queue.pop_back().expect("len checked");
            self.bufs.recycle(chunk.bid);
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if res >= 0 {
            let idx = res as u32;
            if self.conns.len() <= idx as usize {
                self.conns.resize_with(idx as usize + 1, Conn::default);
            }
            self.conns[idx as usize] = Conn {
                open: true,
                ..Conn::default()
            };
            self.arm_recv(idx);
        } else {
            // A full file table or descriptor limit: that peer is dropped.
            eprintln!("accept: {}", io::Error::from_raw_os_error(-res));
        }
        if !cqueue::more(flags) {
            self.arm_accept();
        }
    }

    fn on_recv(&mut self, idx: u32, res: i32, flags: u32) {
        if res > 0 {
            let bid = cqueue::buffer_select(flags).expect("a receive with data has a buffer");
            let conn = &mut self.conns[idx as usize];
            if conn.failed {
                self.bufs.recycle(bid);
            } else {
                conn.queue.push_back(Chunk {
                    bid,
                    off: 0,
                    len: res as u32,
                });
                if !conn.sending {
                    self.send_front(idx);
                }
            }
            if !cqueue::more(flags) {
                // The multishot receive stopped without an error (e.g. the
                // completion queue was full): arm it again, unless a failed
                // send is closing the connection.
                let conn = &mut self.conns[idx as usize];
                if !conn.failed {
                    self.arm_recv(idx);
                } else {
                    conn.recv_done = true;
                    if !conn.sending {
                        self.close(idx);
                    }
                }
            }
            return;
        }
        if res == -libc::ENOBUFS && !self.conns[idx as usize].failed {
            self.enobufs += 1;
            if self.enobufs.is_power_of_two() {
                eprintln!("recv: out of buffers ({} times so far)", self.enobufs);
            }
            self.starved.push(idx);
            return;
        }
        // End of stream (0) or an error (reset, or cancelled after a failed
        // send): the receive is over; close once no send is in flight.
        if res < 0 && res != -libc::ECONNRESET && res != -libc::ECANCELED {
            eprintln!("recv: {}", io::Error::from_raw_os_error(-res));
        }
        let conn = &mut self.conns[idx as usize];
        conn.recv_done = true;
        if !conn.sending {
            self.drop_queue(idx);
            self.close(idx);
        }
    }

    fn on_send(&mut self, idx: u32, res: i32) {
        let conn = &mut self.conns[idx as usize];
        conn.sending = false;
        let front = conn.queue.front_mut().expect("the chunk in flight");
        if res > 0 && !conn.failed {
            front.off += res as u32;
            front.len -= res as u32;
            if front.len == 0 {
                let bid = front.bid;
                conn.queue.pop_front();
                self.bufs.recycle(bid);
            }
        } else {
            // A send error (or a zero-length send, which should not happen):
            // the peer is gone. Stop the receive, close after it has ended.
            if res < 0 && res != -libc::EPIPE && res != -libc::ECONNRESET {
                eprintln!("send: {}", io::Error::from_raw_os_error(-res));
            }
            let bid = front.bid;
            conn.queue.pop_front();
            self.bufs.recycle(bid);
            let first_failure = !conn.failed;
            conn.failed = true;
            let recv_done = conn.recv_done;
            self.drop_queue(idx);
            if first_failure && !recv_done {
                let entry = opcode::AsyncCancel::new(user_data(OP_RECV, idx))
                    .build()
                    .user_data(user_data(OP_CANCEL, idx));
                // SAFETY: the entry points to no memory.
                unsafe { self.push(entry) };
            }
        }
        let conn = &self.conns[idx as usize];
        if !conn.queue.is_empty() {
            self.send_front(idx);
        } else if conn.recv_done {
            self.close(idx);
        }
    }

    fn run(&mut self, cq: &mut io_uring::CompletionQueue<'_>) -> io::Result<()> {
        self.arm_accept();
        loop {
            self.sq.sync();
            match self.submitter.submit_and_wait(1) {
                Ok(_) => {}
                // Interrupted, or the completion queue is full: reap first.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            cq.sync();
            for cqe in &mut *cq {
                let data = cqe.user_data();
                let idx = data as u32;
                match data >> 56 {
                    OP_ACCEPT => self.on_accept(cqe.result(), cqe.flags()),
                    OP_RECV => self.on_recv(idx, cqe.result(), cqe.flags()),
                    OP_SEND => self.on_send(idx, cqe.result()),
                    OP_CLOSE => {
                        if cqe.result() < 0 {
                            eprintln!("close: {}", io::Error::from_raw_os_error(-cqe.result()));
                        }
                    }
                    // Cancelling a receive that had already ended: ENOENT, fine.
                    OP_CANCEL => {}
                    op => unreachable!("completion of unknown operation {op}"),
                }
            }
            // Publish our head: the next wait must not count these again.
            cq.sync();
            self.bufs.commit();
            for idx in std::mem::take(&mut self.starved) {
                if self.conns[idx as usize].open {
                    self.arm_recv(idx);
                }
            }
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: raw_echo ADDR [--fds] [--buffers N (power of two)] [--buffer-size BYTES]");
    std::process::exit(2);
}

fn main() -> io::Result<()> {
    let mut addr = None;
    let mut direct = true;
    let mut buf_count = BUF_COUNT;
    let mut buf_size = BUF_SIZE;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fds" => direct = false,
            "--buffers" => match args.next().and_then(|v| v.parse::<u16>().ok()) {
                Some(n) if n.is_power_of_two() && n <= 32768 => buf_count = n,
                _ => usage(),
            },
            "--buffer-size" => match args.next().and_then(|v| v.parse::<u32>().ok()) {
                Some(n) if n > 0 => buf_size = n,
                _ => usage(),
            },
            a if addr.is_none() && !a.starts_with('-') => addr = Some(arg),
            _ => usage(),
        }
    }
    let Some(addr) = addr else { usage() };
    let nofile = engine::raise_open_files_limit();

    let listener = TcpListener::bind(&addr)?;
    let lfd = listener.as_raw_fd();
    // Accepted sockets inherit TCP_NODELAY from the listener.
    engine::listener::set_int_opt(lfd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    // A deeper accept queue than std's default, for connect storms (the
    // kernel caps it at net.core.somaxconn).
    // SAFETY: lfd is a bound, listening socket; listen again only resizes the queue.
    if unsafe { libc::listen(lfd, 65535) } != 0 {
        return Err(io::Error::last_os_error());
    }

    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_submit_all()
        .setup_cqsize(RING_ENTRIES * 16)
        .build(RING_ENTRIES)?;
    if direct {
        let table = MAX_FILE_TABLE.min(u32::try_from(nofile).unwrap_or(u32::MAX));
        ring.submitter().register_files_sparse(table)?;
    }
    let bufs = Buffers::new(&ring.submitter(), buf_count, buf_size)?;

    let local = listener.local_addr()?;
    println!("listening on {local}");
    io::stdout().flush()?;

    let (submitter, sq, mut cq) = ring.split();
    let mut server = Server {
        submitter,
        sq,
        listener: lfd,
        direct,
        conns: Vec::new(),
        bufs,
        starved: Vec::new(),
        enobufs: 0,
    };
    server.run(&mut cq)
}
