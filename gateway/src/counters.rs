//! Gateway counters, one set per worker: plain integers bumped on the worker
//! thread, published to the metrics recorder periodically
//! ([`crate::telemetry`]) and summed at exit (never a shared atomic per
//! message).

use std::fmt::Write as _;

use wsproto::codec::FrameCounts;

/// Why a connection ended: the session's [`Ending`](wsproto::session::Ending) (normal, error,
/// timeout, slow consumer, shutdown), also the `reason` metric label.
pub use wsproto::session::Ending as CloseReason;

/// HTTP statuses the gateway answers WebSocket clients with, in a fixed
/// table; the last entry (`u16::MAX`, label `other`) collects the rest
/// (e.g. a backend's own status relayed by an `upstream` route).
pub const STATUSES: [u16; 16] = [
    101,
    200,
    400,
    401,
    403,
    404,
    405,
    408,
    426,
    429,
    431,
    500,
    502,
    503,
    504,
    u16::MAX,
];

/// The metric label of `STATUSES[i]`.
pub fn status_label(status: u16) -> String {
    if status == u16::MAX {
        "other".into()
    } else {
        status.to_string()
    }
}

/// WebSocket close codes tracked individually. `0` stands for a close frame
/// without a code; the last entry collects every other code.
pub const CLOSE_CODES: [u16; 11] = [
    1000,
    1001,
    1002,
    1003,
    1007,
    1008,
    1009,
    1011,
    1013,
    0,
    u16::MAX,
];

/// The metric label for `CLOSE_CODES[i]`: the code, `none` for a close frame
/// without one, `other` for the catch-all.
pub fn close_code_label(i: usize) -> &'static str {
    const LABELS: [&str; CLOSE_CODES.len()] = [
        "1000", "1001", "1002", "1003", "1007", "1008", "1009", "1011", "1013", "none", "other",
    ];
    LABELS[i]
}

/// Counters of one worker.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed, by [`CloseReason`] (index into `CloseReason::ALL`).
    pub closed: [u64; 5],
    /// HTTP responses by status (index into [`STATUSES`]).
    pub http_responses: [u64; STATUSES.len()],
    /// Messages received (complete, reassembled).
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Payload bytes received in messages.
    pub bytes_in: u64,
    /// Payload bytes sent in messages.
    pub bytes_out: u64,
    /// Pings received.
    pub pings_in: u64,
    /// Pings the server sent (idle keepalive).
    pub pings_out: u64,
    /// Pongs received.
    pub pongs_in: u64,
    /// Close frames sent, by code (index into [`CLOSE_CODES`]; last = other).
    pub close_sent: [u64; CLOSE_CODES.len()],
    /// Close frames received, by code (index into [`CLOSE_CODES`]; last = other).
    pub close_received: [u64; CLOSE_CODES.len()],
    /// WebSocket connections that ended without a close frame from the peer (1006).
    pub abnormal_closures: u64,
    /// WebSocket frames received, by class (counted by the codec).
    pub frames_in: FrameCounts,
    /// WebSocket frames sent, by class.
    pub frames_out: FrameCounts,
    /// Client messages an `upstream` route answered with its failure
    /// answer because the backend failed.
    pub upstream_failure_answers: u64,
    /// ... because too many of the connection's messages were waiting.
    pub upstream_pending_full: u64,
}

fn code_index(code: u16) -> usize {
    CLOSE_CODES[..CLOSE_CODES.len() - 1]
        .iter()
        .position(|&c| c == code)
        .unwrap_or(CLOSE_CODES.len() - 1)
}

impl Counters {
    /// Counts one HTTP response.
    pub fn http(&mut self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len() - 1);
        self.http_responses[i] += 1;
    }

    /// Counts one close frame sent.
    pub fn close_sent(&mut self, code: u16) {
        self.close_sent[code_index(code)] += 1;
    }

    /// Counts one close frame received (`None`: empty close payload).
    pub fn close_received(&mut self, code: Option<u16>) {
        self.close_received[code_index(code.unwrap_or(0))] += 1;
    }

    /// Counts one closed connection.
    pub fn closed(&mut self, reason: CloseReason) {
        self.closed[reason as usize] += 1;
    }

    /// Connections accepted and not yet closed.
    pub fn open(&self) -> u64 {
        self.accepted.saturating_sub(self.closed.iter().sum())
    }

    /// Count of responses with `status`.
    pub fn http_count(&self, status: u16) -> u64 {
        STATUSES
            .iter()
            .position(|&s| s == status)
            .map_or(0, |i| self.http_responses[i])
    }

    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &Counters) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        self.accepted += o.accepted;
        add(&mut self.closed, &o.closed);
        add(&mut self.http_responses, &o.http_responses);
        self.messages_in += o.messages_in;
        self.messages_out += o.messages_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.pings_in += o.pings_in;
        self.pings_out += o.pings_out;
        self.pongs_in += o.pongs_in;
        add(&mut self.close_sent, &o.close_sent);
        add(&mut self.close_received, &o.close_received);
        self.abnormal_closures += o.abnormal_closures;
        self.frames_in.merge(&o.frames_in);
        self.frames_out.merge(&o.frames_out);
        self.upstream_failure_answers += o.upstream_failure_answers;
        self.upstream_pending_full += o.upstream_pending_full;
    }

    /// A one-line summary for the exit log.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "accepted={} msgs_in={} msgs_out={} bytes_in={} bytes_out={} abnormal={}",
            self.accepted,
            self.messages_in,
            self.messages_out,
            self.bytes_in,
            self.bytes_out,
            self.abnormal_closures
        );
        for r in CloseReason::ALL {
            let _ = write!(s, " closed_{}={}", r.label(), self.closed[r as usize]);
        }
        for (i, st) in STATUSES.iter().enumerate() {
            if self.http_responses[i] > 0 {
                let _ = write!(s, " http_{st}={}", self.http_responses[i]);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsproto::codec::FrameClass;

    #[test]
    fn merge_adds_every_field() {
        let mut a = Counters::default();
        a.http(404);
        a.close_sent(1009);
        a.close_received(None);
        a.closed(CloseReason::Timeout);
        a.messages_in = 3;
        a.accepted = 4;
        a.frames_in.add(FrameClass::Continuation);
        a.frames_out.add(FrameClass::Pong);
        let mut b = a.clone();
        b.close_sent(4000);
        b.merge(&a);
        assert_eq!(b.http_count(404), 2);
        assert_eq!(b.close_sent[code_index(1009)], 2);
        assert_eq!(
            b.close_sent[CLOSE_CODES.len() - 1],
            1,
            "unknown codes count as other"
        );
        assert_eq!(b.close_received[code_index(0)], 2);
        assert_eq!(b.closed[CloseReason::Timeout as usize], 2);
        assert_eq!(b.messages_in, 6);
        assert_eq!(b.open(), 6, "8 accepted, 2 closed");
        assert_eq!(b.frames_in.get(FrameClass::Continuation), 2);
        assert_eq!(b.frames_out.get(FrameClass::Pong), 2);
        assert_eq!(close_code_label(code_index(1009)), "1009");
        assert_eq!(close_code_label(code_index(0)), "none");
        assert_eq!(close_code_label(code_index(4000)), "other");
        assert!(b.summary().contains("http_404=2"));
    }
}
