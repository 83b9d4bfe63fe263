//! Engine-health counters: plain integers owned by one worker, published
//! elsewhere periodically (never an atomic per operation).

/// Counters one worker's engine keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Accept completions that failed (e.g. `EMFILE`).
    pub accept_errors: u64,
    /// Multishot receives that ended with `ENOBUFS` (buffer ring empty) and were re-armed.
    pub recv_enobufs: u64,
    /// Multishot receives the kernel ended for another reason and that were re-armed.
    pub recv_rearmed: u64,
    /// Receive completions that carried an error other than cancel/ENOBUFS.
    pub recv_errors: u64,
    /// Send completions that failed with a socket error.
    pub send_errors: u64,
    /// Sends cancelled by our own abort (not socket errors).
    pub sends_cancelled: u64,
    /// Sends that completed with `EAGAIN` and were submitted again.
    pub send_retries: u64,
    /// Completions whose slot generation or in-flight state did not match
    /// (released or reused slot): ignored. Nonzero means an engine bug.
    pub stale_completions: u64,
    /// Outgoing connects that failed.
    pub connect_errors: u64,
    /// Completion batches reaped.
    pub loops: u64,
    /// Completions reaped.
    pub completions: u64,
    /// Loop iterations that found the kernel holding completions in its
    /// overflow list (the CQ was full; `FEAT_NODROP` kept them, but the ring
    /// is undersized for the load).
    pub cq_overflow_seen: u64,
}
