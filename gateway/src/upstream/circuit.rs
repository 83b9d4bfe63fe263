//! A circuit breaker for one backend on one worker, sans-IO (it is told
//! the time). Closed: calls go through and consecutive transport failures
//! are counted. At `failures_to_open` it opens: calls are refused at once
//! (the client gets "unavailable" fast instead of waiting for timeouts),
//! for `open_ms`. Then one call goes through as a probe (half-open): its
//! success closes the circuit, its failure opens it again for twice as
//! long, up to `max_open_ms`. That doubling is the backoff towards a
//! backend that is down.

/// The breaker's state, as exported (`gateway_upstream_circuit_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed = 0,
    /// One probe call is allowed (or in flight).
    HalfOpen = 1,
    /// Calls are refused until the open period ends.
    Open = 2,
}

/// What the breaker says about a new call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go.
    Yes,
    /// Go: this call is the half-open probe.
    Probe,
    /// Refuse: the circuit is open (or its probe is out).
    No,
}

/// One breaker.
#[derive(Debug, Clone)]
pub struct Circuit {
    state: State,
    failures: u32,
    failures_to_open: u32,
    open_ms: u64,
    max_open_ms: u64,
    /// The current open period's length (doubles on a failed probe).
    period_ms: u64,
    /// While open: when the probe may go.
    until: u64,
    probe_out: bool,
    /// Times the circuit opened.
    pub opened: u64,
}

impl Circuit {
    /// A closed breaker.
    pub fn new(failures_to_open: u32, open_ms: u64, max_open_ms: u64) -> Self {
        Self {
            state: State::Closed,
            failures: 0,
            failures_to_open,
            open_ms,
            max_open_ms,
            period_ms: open_ms,
            until: 0,
            probe_out: false,
            opened: 0,
        }
    }

    /// The state at `now` (an open period that has ended reads half-open).
    pub fn state(&self, now: u64) -> State {
        match self.state {
            State::Open if now >= self.until => State::HalfOpen,
            s => s,
        }
    }

    /// Whether a call may start at `now`.
    pub fn admit(&mut self, now: u64) -> Admit {
        match self.state(now) {
            State::Closed => Admit::Yes,
            State::HalfOpen if !self.probe_out => {
                self.state = State::HalfOpen;
                self.probe_out = true;
                Admit::Probe
            }
            State::HalfOpen | State::Open => Admit::No,
        }
    }

    /// A call (or connect) succeeded: the backend answers.
    pub fn success(&mut self) {
        self.state = State::Closed;
        self.failures = 0;
        self.period_ms = self.open_ms;
        self.probe_out = false;
    }

    /// A call failed at the transport level at `now`. Returns true when
    /// this opened the circuit (the caller then fails what is queued).
    pub fn failure(&mut self, now: u64) -> bool {
        match self.state {
            State::Closed => {
                self.failures += 1;
                if self.failures < self.failures_to_open {
                    return false;
                }
                self.period_ms = self.open_ms;
            }
            State::HalfOpen => {
                self.period_ms = (self.period_ms * 2).min(self.max_open_ms);
            }
            // Calls admitted before the circuit opened, failing late.
            State::Open => return false,
        }
        self.state = State::Open;
        self.until = now + self.period_ms;
        self.probe_out = false;
        self.opened += 1;
        true
    }

    /// When an open circuit lets its probe go (`None` unless open).
    pub fn reopens_at(&self) -> Option<u64> {
        (self.state == State::Open).then_some(self.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_backs_off() {
        let mut c = Circuit::new(3, 100, 350);
        assert_eq!(c.admit(0), Admit::Yes);
        assert!(!c.failure(0));
        c.success();
        assert!(!c.failure(1));
        assert!(!c.failure(2));
        assert!(c.failure(3), "third consecutive failure opens");
        assert_eq!(c.state(50), State::Open);
        assert_eq!(c.admit(50), Admit::No);
        // Late failures of calls admitted before do not extend it.
        assert!(!c.failure(60));
        assert_eq!(c.reopens_at(), Some(103));
        assert_eq!(c.admit(103), Admit::Probe);
        assert_eq!(c.admit(104), Admit::No, "one probe at a time");
        assert!(c.failure(110), "failed probe reopens");
        assert_eq!(c.reopens_at(), Some(310), "for twice as long");
        assert_eq!(c.admit(310), Admit::Probe);
        assert!(c.failure(310));
        assert_eq!(c.reopens_at(), Some(660), "capped at max_open_ms");
        assert_eq!(c.admit(660), Admit::Probe);
        c.success();
        assert_eq!(c.state(661), State::Closed);
        assert_eq!(c.admit(661), Admit::Yes);
        assert!(!c.failure(662), "the count restarted");
        assert_eq!(c.opened, 3);
    }
}
