//! Cross-worker mailboxes: any worker (or any other thread) posts a message
//! to any worker, which is woken and handles it on its own thread.
//!
//! A [`Mailbox`] is a bounded lock-free queue plus the target's [`Bell`].
//! Posting never blocks: a full mailbox hands the message back and counts
//! it, and the caller applies its policy (drop and count, or disconnect).
//! Messages from one poster arrive in the order posted.
//!
//! Waking costs nothing per message: the bell's flag says a wake-up is
//! already on its way, so a burst of posts rings once. How it rings is the
//! [`WakeMode`]:
//! * [`WakeMode::MsgRing`]: the posting worker queues an `IORING_OP_MSG_RING`
//!   on its own ring, which posts a completion straight into the target's
//!   ring when the poster next submits (no syscall of its own);
//! * [`WakeMode::EventFd`]: the poster writes the target's eventfd (one
//!   `write(2)`), which the target's ring polls.
//!
//! Threads without a ring always use the eventfd, so the target polls it in
//! both modes. `results/mailbox.md` measures the two.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use io_uring::{opcode, types};

use crate::token::{self, Op};
use crate::Io;

/// `Op::Wake` index of a wake-up that came by `MSG_RING`.
pub(crate) const WAKE_BY_MSG_RING: u32 = 0;
/// `Op::Wake` index of a completion of the eventfd poll.
pub(crate) const WAKE_BY_EVENTFD: u32 = 1;

/// Bells whose `MSG_RING` is in flight on this worker's ring, by the index
/// in its `user_data`: kept alive until the completion says whether the
/// kernel delivered it.
#[derive(Debug, Default)]
pub(crate) struct WakesInFlight {
    slots: Vec<Option<Arc<Bell>>>,
    free: Vec<u32>,
}

impl WakesInFlight {
    fn insert(&mut self, bell: Arc<Bell>) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(bell);
                i
            }
            None => {
                self.slots.push(Some(bell));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// The `MSG_RING` at `slot` completed with `res`: a refused one wakes
    /// the target through its eventfd instead. Returns whether it failed.
    pub(crate) fn complete(&mut self, slot: u32, res: i32) -> bool {
        let Some(bell) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return false;
        };
        self.free.push(slot);
        if res < 0 {
            log::warn!(
                "MSG_RING wake-up failed: {}; using the eventfd",
                io::Error::from_raw_os_error(-res)
            );
            bell.write_eventfd();
        }
        res < 0
    }
}

/// How a worker's bell is rung by another worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeMode {
    /// `IORING_OP_MSG_RING` from the poster's ring to the target's.
    MsgRing,
    /// A `write(2)` to the target's eventfd.
    EventFd,
}

/// What wakes one worker when something is posted to it.
#[derive(Debug)]
pub struct Bell {
    /// A wake-up is on its way (or being handled): posts need not ring again.
    rung: AtomicBool,
    /// The target's ring, once its worker has attached the bell (-1 before).
    ring_fd: AtomicI32,
    eventfd: OwnedFd,
    mode: WakeMode,
    /// Wake-ups sent (MSG_RING or eventfd writes), for measuring batching.
    rings: AtomicU64,
}

impl Bell {
    /// A bell for one worker; attach it with `Worker::attach_bell`.
    pub fn new(mode: WakeMode) -> io::Result<Arc<Bell>> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Bell {
            rung: AtomicBool::new(false),
            ring_fd: AtomicI32::new(-1),
            // SAFETY: a fresh descriptor nobody else owns.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            mode,
            rings: AtomicU64::new(0),
        }))
    }

    /// The mode other workers ring this bell with.
    pub fn mode(&self) -> WakeMode {
        self.mode
    }

    /// Wake-ups sent so far.
    pub fn rings(&self) -> u64 {
        self.rings.load(Ordering::Relaxed)
    }

    /// Rings from a worker: `io` is the *poster's* engine, whose ring
    /// carries the `MSG_RING` (submitted with its next batch). Should the
    /// kernel refuse it, the poster writes the eventfd instead when its
    /// completion arrives.
    pub fn ring(self: &Arc<Self>, io: &mut Io) {
        if self.rung.swap(true, Ordering::SeqCst) {
            return;
        }
        self.rings.fetch_add(1, Ordering::Relaxed);
        let target = self.ring_fd.load(Ordering::Acquire);
        if self.mode == WakeMode::EventFd || target < 0 {
            self.write_eventfd();
            return;
        }
        let slot = io.wakes.insert(self.clone());
        let entry = opcode::MsgRingData::new(
            types::Fd(target),
            0,
            token::encode(Op::Wake, WAKE_BY_MSG_RING, 0),
            None,
        )
        .build()
        .user_data(token::encode(Op::WakeSent, slot, 0));
        // SAFETY: a message-ring request references no memory of ours.
        unsafe { io.ring.push(entry) };
    }

    /// Rings from a thread without a ring of its own.
    pub fn ring_from_thread(&self) {
        if !self.rung.swap(true, Ordering::SeqCst) {
            self.rings.fetch_add(1, Ordering::Relaxed);
            self.write_eventfd();
        }
    }

    pub(crate) fn write_eventfd(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. It
        // cannot block (EFD_NONBLOCK); EAGAIN means the counter is already
        // non-zero, i.e. the target will wake anyway.
        unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub(crate) fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Called by the target's worker when it attaches the bell.
    pub(crate) fn attach(&self, ring_fd: RawFd) -> RawFd {
        self.ring_fd.store(ring_fd, Ordering::Release);
        self.eventfd.as_raw_fd()
    }

    /// Called by the target's worker when it stops: later posts wake it
    /// through the eventfd (which nobody reads any more) instead of a ring
    /// descriptor that may be reused.
    pub(crate) fn detach(&self) {
        self.ring_fd.store(-1, Ordering::Release);
    }

    /// Called by the target's worker on a wake-up, before the handler drains:
    /// a post after this point rings again.
    pub(crate) fn answer(&self, from_eventfd: bool) {
        if from_eventfd {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from an eventfd we own;
            // non-blocking, so an already-cleared counter is just EAGAIN.
            unsafe { libc::read(self.eventfd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        }
        self.rung.store(false, Ordering::SeqCst);
    }
}

/// A bounded queue of messages for one worker, with its bell.
#[derive(Debug)]
pub struct Mailbox<M> {
    queue: ArrayQueue<M>,
    bell: Arc<Bell>,
    /// Posts refused because the mailbox was full.
    full: AtomicU64,
}

impl<M> Mailbox<M> {
    /// A mailbox of `capacity` messages (at least 1) that rings `bell`.
    pub fn new(capacity: usize, bell: Arc<Bell>) -> Self {
        Self {
            queue: ArrayQueue::new(capacity.max(1)),
            bell,
            full: AtomicU64::new(0),
        }
    }

    /// The target worker's bell.
    pub fn bell(&self) -> &Arc<Bell> {
        &self.bell
    }

    /// Posts from a worker (`io` is the poster's engine). A full mailbox
    /// returns the message, counted in [`Mailbox::full_count`]; nothing blocks.
    pub fn post(&self, io: &mut Io, msg: M) -> Result<(), M> {
        self.queue.push(msg).inspect_err(|_| self.count_full())?;
        self.bell.ring(io);
        Ok(())
    }

    /// Posts from a thread without a ring (wakes through the eventfd).
    pub fn post_from_thread(&self, msg: M) -> Result<(), M> {
        self.queue.push(msg).inspect_err(|_| self.count_full())?;
        self.bell.ring_from_thread();
        Ok(())
    }

    fn count_full(&self) {
        self.full.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the next message (the target worker, from `Handler::on_wake`).
    pub fn pop(&self) -> Option<M> {
        self.queue.pop()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when no message waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Posts refused because the mailbox was full, so far.
    pub fn full_count(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }
}
