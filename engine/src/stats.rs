//! Engine-health counters: plain integers owned by one worker, published
//! elsewhere periodically (never an atomic per operation). Read through
//! the accessors; only the engine writes them.

/// Declares the counters once: the field and its accessor share the name
/// and the doc comment.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Counters one worker's engine keeps.
        #[derive(Debug, Default, Clone, Copy)]
        pub struct EngineStats {
            $(pub(crate) $name: u64,)*
        }

        impl EngineStats {
            $(
                $(#[doc = $doc])*
                pub fn $name(&self) -> u64 {
                    self.$name
                }
            )*
        }
    };
}

counters! {
    /// Connections accepted.
    accepted,
    /// Accept completions that failed (e.g. `EMFILE`).
    accept_errors,
    /// Multishot receives that ended with `ENOBUFS` (buffer ring empty) and were re-armed.
    recv_enobufs,
    /// Multishot receives the kernel ended for another reason and that were re-armed.
    recv_rearmed,
    /// Receive completions that carried an error other than cancel/ENOBUFS.
    recv_errors,
    /// Send completions that failed with a socket error.
    send_errors,
    /// Sends cancelled by our own abort (not socket errors).
    sends_cancelled,
    /// Sends that completed with `EAGAIN` and were parked for a retry.
    send_retries,
    /// Completions whose slot generation or in-flight state did not match
    /// (released or reused slot): ignored. Nonzero means an engine bug.
    stale_completions,
    /// Outgoing connects that failed.
    connect_errors,
    /// Closes of direct descriptors that the kernel refused (nonzero
    /// means an engine bug: a table entry closed twice or never held).
    close_errors,
    /// Mailbox wake-ups received (each may carry many messages).
    wakes,
    /// `MSG_RING` wake-ups the kernel refused (the eventfd was used instead).
    wake_errors,
    /// Completion batches reaped.
    loops,
    /// Completions reaped.
    completions,
    /// Loop iterations that found the kernel holding completions in its
    /// overflow list (the CQ was full; `FEAT_NODROP` kept them, but the ring
    /// is undersized for the load).
    cq_overflow_seen,
}
