//! The worker's io_uring: set-up with fallbacks, and submission with a backlog.
//!
//! A full submission queue is not an error: entries wait in a backlog and go
//! in after the next `io_uring_enter` has consumed the queue.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::{squeue, types, IoUring};

/// io-wq worker threads per ring (bounded and unbounded), see [`Ring::new`].
const IOWQ_MAX_WORKERS: u32 = 1;

/// Which set-up the kernel accepted, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingMode {
    /// `SINGLE_ISSUER | DEFER_TASKRUN`: completions run only when we wait.
    DeferTaskrun,
    /// `COOP_TASKRUN`: no IPI to interrupt the worker for task work.
    CoopTaskrun,
    /// No flags.
    Plain,
}

/// One worker's ring plus its submission backlog.
pub struct Ring {
    pub(crate) uring: IoUring,
    /// Entries waiting for room, each with the number of entries (itself
    /// included) that must enter the queue together with it: a linked chain
    /// split over two submissions would lose its order (the kernel ends a
    /// chain at the submission's end). 0 marks a chain's later members.
    backlog: VecDeque<(squeue::Entry, u8)>,
    /// How set-up went.
    pub mode: RingMode,
    /// High-water mark of the backlog, for engine-health metrics.
    pub backlog_peak: usize,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("mode", &self.mode)
            .field("backlog", &self.backlog.len())
            .finish()
    }
}

impl Ring {
    /// Creates a ring with `entries` SQEs and a completion queue large enough
    /// that multishot operations do not overflow it in practice. Must be called
    /// on the thread that will use it (`SINGLE_ISSUER`).
    pub fn new(entries: u32) -> io::Result<Self> {
        let cq = entries.saturating_mul(16).clamp(entries * 2, 65536);
        type SetFlags = fn(&mut io_uring::Builder);
        let attempts: [(RingMode, SetFlags); 3] = [
            (RingMode::DeferTaskrun, |b| {
                b.setup_single_issuer().setup_defer_taskrun();
            }),
            (RingMode::CoopTaskrun, |b| {
                b.setup_coop_taskrun();
            }),
            (RingMode::Plain, |_| {}),
        ];
        let mut last_err = None;
        for (mode, flags) in attempts {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq).setup_submit_all();
            flags(&mut builder);
            match builder.build(entries) {
                Ok(uring) => {
                    // All our descriptors are non-blocking sockets, so io-wq
                    // should never need more than a thread or two: the kernel
                    // only punts a send there when a poll wake-up found no
                    // room (every poll wakes on the peer's FIN), and such a
                    // send fails with EAGAIN at once. Uncapped, a thousand
                    // peers half-closing together made a thousand `iou-wrk`
                    // threads (each lingers 5 s); capped, they queue behind
                    // one. Best effort: older kernels lack the call.
                    if let Err(e) = uring
                        .submitter()
                        .register_iowq_max_workers(&mut [IOWQ_MAX_WORKERS; 2])
                    {
                        log::debug!("io_uring: cannot cap io-wq workers: {e}");
                    }
                    if mode != RingMode::DeferTaskrun {
                        log::warn!(
                            "io_uring: SINGLE_ISSUER|DEFER_TASKRUN unavailable ({}), using {mode:?}",
                            last_err.as_ref().map_or("?".to_string(), |e: &io::Error| e.to_string())
                        );
                    }
                    return Ok(Self {
                        uring,
                        backlog: VecDeque::new(),
                        mode,
                        backlog_peak: 0,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        let e = last_err.expect("at least one attempt");
        let hint = match e.raw_os_error() {
            // Ring memory is charged to the locked-memory limit.
            Some(libc::ENOMEM) => "locked memory exhausted? raise `ulimit -l` / LimitMEMLOCK, or use fewer workers or ring entries",
            Some(libc::EPERM) | Some(libc::ENOSYS) => "is io_uring enabled? see sysctl kernel.io_uring_disabled",
            _ => "see kernel-tuning/README.md",
        };
        Err(io::Error::new(
            e.kind(),
            format!("io_uring_setup failed: {e} ({hint})"),
        ))
    }

    /// Queues an entry; if the submission queue is full it is submitted first,
    /// and if it is still full the entry waits in the backlog.
    ///
    /// # Safety
    /// Every buffer, iovec, msghdr or address the entry points to must stay
    /// valid and unmoved until its completion has been reaped.
    pub unsafe fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: the caller's contract is ours.
        unsafe { self.push_chain(std::slice::from_ref(&entry)) }
    }

    /// Queues entries that must enter the submission queue together: a
    /// chain whose members (all but the last) carry `IO_LINK`. At most 255.
    ///
    /// # Safety
    /// As [`Ring::push`], for every entry.
    pub unsafe fn push_chain(&mut self, entries: &[squeue::Entry]) {
        debug_assert!(!entries.is_empty() && entries.len() <= usize::from(u8::MAX));
        if self.backlog.is_empty() {
            // SAFETY: the caller guarantees the entries' pointers outlive their completions.
            if unsafe { self.uring.submission().push_multiple(entries) }.is_ok() {
                return;
            }
            let _ = self.uring.submit();
            // SAFETY: as above.
            if unsafe { self.uring.submission().push_multiple(entries) }.is_ok() {
                return;
            }
        }
        for (i, e) in entries.iter().enumerate() {
            let together = if i == 0 { entries.len() as u8 } else { 0 };
            self.backlog.push_back((e.clone(), together));
        }
        self.backlog_peak = self.backlog_peak.max(self.backlog.len());
    }

    /// Entries waiting for room in the submission queue.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    fn drain_backlog(&mut self) {
        let mut sq = self.uring.submission();
        while let Some(&(_, together)) = self.backlog.front() {
            let n = usize::from(together.max(1));
            if sq.capacity() - sq.len() < n {
                break;
            }
            for (entry, _) in self.backlog.drain(..n) {
                // SAFETY: entries in the backlog were pushed under `push`'s
                // contract, and the room for all `n` was checked above.
                let pushed = unsafe { sq.push(&entry) };
                debug_assert!(pushed.is_ok());
            }
        }
    }

    /// Submits everything queued and waits for at least one completion or the
    /// timeout. Interrupted and timed-out waits are not errors.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.drain_backlog();
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        if let Err(e) = self.uring.submitter().submit_with_args(1, &args) {
            match e.raw_os_error() {
                // Timed out or interrupted: the caller's loop runs its timers.
                Some(libc::ETIME) | Some(libc::EINTR) => {}
                // The completion queue is full (overflowed): reap first.
                Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => return Err(e),
            }
        }
        // Anything that did not fit before may fit now that the kernel consumed the SQ.
        if !self.backlog.is_empty() {
            self.drain_backlog();
            let _ = self.uring.submit();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    #[test]
    fn more_entries_than_the_queue_holds_all_complete() {
        let mut ring = match Ring::new(8) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("SKIP: {e}");
                return;
            }
        };
        let total = 1000u64;
        for i in 0..total {
            // SAFETY: a NOP references no memory.
            unsafe { ring.push(opcode::Nop::new().build().user_data(i)) };
        }
        let mut seen = vec![false; total as usize];
        let mut count = 0;
        while count < total {
            ring.submit_and_wait(Duration::from_millis(100)).unwrap();
            for cqe in ring.uring.completion() {
                assert_eq!(cqe.result(), 0);
                assert!(
                    !std::mem::replace(&mut seen[cqe.user_data() as usize], true),
                    "duplicate"
                );
                count += 1;
            }
        }
        assert_eq!(ring.backlog_len(), 0);
    }
}
