//! One hashed timing wheel per worker.
//!
//! Connections keep their own deadline and the wheel is checked lazily: when
//! an entry comes due, the connection's current deadline is looked up and
//! either fires or is put back further along. Extending a deadline (every
//! received message does) therefore costs a store, not a wheel operation;
//! only moving it earlier inserts a new entry, and the entry it supersedes is
//! recognised by its time and dropped when it comes due. The wheel is driven
//! by the ring's wait timeout, not by a kernel timer per connection.

/// Milliseconds per wheel slot.
pub const TICK_MS: u64 = 10;
const SLOTS: usize = 8192;

/// A wheel of `(key, scheduled time)` entries.
#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<(u64, u64)>>,
    /// The tick the wheel has been advanced to (exclusive).
    current: u64,
    len: usize,
}

impl TimerWheel {
    /// An empty wheel starting at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            current: now_ms / TICK_MS,
            len: 0,
        }
    }

    /// Entries in the wheel.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the wheel holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `key` at `deadline_ms` (clamped to the wheel's horizon; the
    /// caller re-inserts entries that come due early).
    pub fn insert(&mut self, key: u64, deadline_ms: u64) {
        let tick =
            (deadline_ms.div_ceil(TICK_MS)).clamp(self.current, self.current + SLOTS as u64 - 1);
        self.slots[(tick % SLOTS as u64) as usize].push((key, deadline_ms));
        self.len += 1;
    }

    /// Moves every entry whose slot is due at `now_ms` into `due`. Entries
    /// beyond the horizon come out early, with their scheduled time intact.
    pub fn advance(&mut self, now_ms: u64, due: &mut Vec<(u64, u64)>) {
        let target = now_ms / TICK_MS;
        let steps = target.saturating_sub(self.current).min(SLOTS as u64 - 1) + 1;
        for _ in 0..steps {
            let slot = &mut self.slots[(self.current % SLOTS as u64) as usize];
            self.len -= slot.len();
            due.append(slot);
            if self.current < target {
                self.current += 1;
            } else {
                break;
            }
        }
        self.current = self.current.max(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_or_after_deadline_never_before() {
        let mut w = TimerWheel::new(1_000);
        w.insert(1, 1_050);
        w.insert(2, 1_200);
        let mut due = Vec::new();
        w.advance(1_040, &mut due);
        assert!(due.is_empty());
        w.advance(1_050, &mut due);
        assert_eq!(due, vec![(1, 1_050)]);
        due.clear();
        w.advance(5_000, &mut due);
        assert_eq!(due, vec![(2, 1_200)]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_deadlines_come_back_early_for_reinsertion() {
        let mut w = TimerWheel::new(0);
        w.insert(7, 10 * SLOTS as u64 * TICK_MS);
        let mut due = Vec::new();
        w.advance(SLOTS as u64 * TICK_MS, &mut due);
        assert_eq!(due, vec![(7, 10 * SLOTS as u64 * TICK_MS)]);
    }

    #[test]
    fn past_deadline_fires_on_next_advance() {
        let mut w = TimerWheel::new(500);
        w.advance(600, &mut Vec::new());
        w.insert(3, 10);
        let mut due = Vec::new();
        w.advance(600, &mut due);
        assert_eq!(due, vec![(3, 10)]);
    }
}
