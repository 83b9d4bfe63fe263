//! Counters: one cache-line-aligned set per writer thread (each worker, and
//! the push thread), summed by whoever reads them (`GET /stats`, the
//! periodic line, the exit line).
//!
//! Why per thread: the counters are bumped on every request, and a single
//! shared set would bounce its cache line between the workers; with one
//! writer per set a relaxed load and store is enough.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// What is counted. The order is the order of the stats line and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum C {
    /// `POST /ws/connect`.
    Connect,
    /// `/ws/connect` answered 403 (`deny=1`).
    Denied,
    /// `POST /ws/message`.
    Message,
    /// `POST /ws/disconnect`.
    Disconnect,
    /// `POST /centrifugo/connect`.
    ProxyConnect,
    /// `POST /centrifugo/rpc`.
    ProxyRpc,
    /// `POST /centrifugo/publish`.
    ProxyPublish,
    /// `POST /centrifugo/subscribe`.
    ProxySubscribe,
    /// `GET /stats`.
    Stats,
    /// Unknown path (404) or wrong method (405).
    NotFound,
    /// Malformed framing or over a limit (4xx/5xx, then the connection closes).
    BadRequest,
    /// A well-framed request whose body the endpoint cannot read (400,
    /// connection kept); also counted under its endpoint.
    InvalidBody,
    /// `{"type":"ack","id":..}` answers sent.
    AcksSent,
    /// Client acks seen (a message whose type is the ack value).
    ClientAcks,
    /// Messages echoed (`--echo`).
    Echoes,
    /// 500s from `--failure-rate`.
    Failures,
    /// Pushes the gateway queued (200).
    PushesSent,
    /// Pushes to a connection that was gone (410).
    PushesGone,
    /// Pushes that failed otherwise (other status, connection error).
    PushesFailed,
}

/// Number of counters.
pub const COUNT: usize = 19;

/// Names in [`C`] order.
pub const NAMES: [&str; COUNT] = [
    "connect",
    "connect_denied",
    "message",
    "disconnect",
    "proxy_connect",
    "proxy_rpc",
    "proxy_publish",
    "proxy_subscribe",
    "stats",
    "not_found",
    "bad_request",
    "invalid_body",
    "acks_sent",
    "client_acks",
    "echoes",
    "failures",
    "pushes_sent",
    "pushes_gone",
    "pushes_failed",
];

/// Counters that are requests (summed as `requests`).
const REQUESTS: [C; 10] = [
    C::Connect,
    C::Message,
    C::Disconnect,
    C::ProxyConnect,
    C::ProxyRpc,
    C::ProxyPublish,
    C::ProxySubscribe,
    C::Stats,
    C::NotFound,
    C::BadRequest,
];

/// One writer's counters, on cache lines of their own.
#[derive(Debug)]
#[repr(align(128))]
pub struct Set([AtomicU64; COUNT]);

impl Set {
    fn new() -> Self {
        Set(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// Adds one. Only the owning thread writes a set, so a relaxed load and
    /// store (no locked read-modify-write) is exact.
    pub fn bump(&self, c: C) {
        let a = &self.0[c as usize];
        a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// Every writer's set.
#[derive(Debug)]
pub struct Stats {
    sets: Vec<Set>,
}

/// Summed counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(pub [u64; COUNT]);

impl Stats {
    /// `writers` sets (workers plus the push thread).
    pub fn new(writers: usize) -> Self {
        Self {
            sets: (0..writers).map(|_| Set::new()).collect(),
        }
    }

    /// Writer `i`'s set.
    pub fn set(&self, i: usize) -> &Set {
        &self.sets[i]
    }

    /// The sums over every writer.
    pub fn snapshot(&self) -> Snapshot {
        let mut out = [0u64; COUNT];
        for set in &self.sets {
            for (o, a) in out.iter_mut().zip(&set.0) {
                *o += a.load(Ordering::Relaxed);
            }
        }
        Snapshot(out)
    }
}

impl Snapshot {
    /// One counter.
    pub fn get(&self, c: C) -> u64 {
        self.0[c as usize]
    }

    /// Every request served, whatever the endpoint.
    pub fn requests(&self) -> u64 {
        REQUESTS.iter().map(|&c| self.get(c)).sum()
    }

    /// `{"requests":N,"connect":N,...}`.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(512);
        let _ = write!(s, "{{\"requests\":{}", self.requests());
        for (name, v) in NAMES.iter().zip(self.0) {
            let _ = write!(s, ",\"{name}\":{v}");
        }
        s.push('}');
        s
    }

    /// `stats requests=N connect=N ...`, with the request rate since
    /// `prev` over `secs` when given.
    pub fn to_line(&self, prev: Option<(&Snapshot, f64)>) -> String {
        let mut s = String::with_capacity(512);
        let _ = write!(s, "stats requests={}", self.requests());
        if let Some((prev, secs)) = prev.filter(|p| p.1 > 0.0) {
            let rate = (self.requests() - prev.requests()) as f64 / secs;
            let _ = write!(s, " req_per_s={rate:.0}");
        }
        for (name, v) in NAMES.iter().zip(self.0) {
            let _ = write!(s, " {name}={v}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_writers_and_renders() {
        let stats = Stats::new(3);
        stats.set(0).bump(C::Message);
        stats.set(1).bump(C::Message);
        stats.set(2).bump(C::PushesSent);
        stats.set(1).bump(C::AcksSent);
        let snap = stats.snapshot();
        assert_eq!(snap.get(C::Message), 2);
        assert_eq!(snap.requests(), 2);
        let json: serde_json::Value = serde_json::from_str(&snap.to_json()).unwrap();
        assert_eq!(json["requests"], 2);
        assert_eq!(json["acks_sent"], 1);
        assert_eq!(json["pushes_sent"], 1);
        assert_eq!(json.as_object().unwrap().len(), COUNT + 1);
        let line = snap.to_line(None);
        assert!(line.starts_with("stats requests=2 connect=0"), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(NAMES.len(), C::PushesFailed as usize + 1);
    }
}
