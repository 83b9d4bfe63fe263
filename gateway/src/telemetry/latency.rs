//! Time from a message's arrival to the completion of the send that carries
//! its reply, measured without a per-message allocation or clock read.
//!
//! Every completion handled in one loop iteration shares that iteration's
//! arrival stamp ([`Io::now_us`](engine::Io::now_us)), so the replies
//! queued on a connection fall into a few *groups* of equal arrival time. A
//! group is done when the last byte of its last reply has been sent; the
//! engine reports sent bytes through `Handler::on_sent`, and each group
//! remembers how many queued bytes were ahead of (and including) its last
//! reply.
//!
//! Per connection this needs two groups while replies are in flight (the
//! one being sent and the one queued behind it) and nothing while idle. So
//! the groups live in a per-worker side table, and a connection holds only a
//! `u32` handle into it, which fits in padding the session already had: the
//! idle-connection memory budget is untouched. With more than two distinct
//! arrival times pending (a peer far behind in reading), newer replies merge
//! into the second group at the count-weighted mean arrival time, which keeps
//! the sum of latencies exact and the distribution close.
//!
//! Only one receive in `sample_every` is tracked (counted per worker, so the
//! choice has nothing to do with latency and the quantiles stay unbiased);
//! the others cost a decrement.

use super::histogram::LocalHistogram;

/// "No pending replies": the handle an idle connection holds.
pub const NONE: u32 = u32::MAX;

/// Replies with one arrival time whose send has not completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Group {
    /// Arrival time, microseconds since worker start (wrapping).
    arrival_us: u32,
    /// Replies in the group; 0 = empty.
    count: u32,
    /// Queued bytes still to be sent before the group's last reply is out.
    ahead: u32,
}

/// Pending-reply groups of the connections of one worker.
#[derive(Debug, Default)]
pub struct SendTracker {
    entries: Vec<[Group; 2]>,
    free: Vec<u32>,
    /// Track one receive in this many (0 and 1: every receive).
    sample_every: u32,
    /// Receives to skip before the next tracked one.
    skip: u32,
}

impl SendTracker {
    /// A tracker that follows one receive in `every`.
    pub fn sampling(every: u32) -> Self {
        Self {
            sample_every: every,
            ..Self::default()
        }
    }

    /// Connections with replies in flight (entries in use).
    pub fn busy(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// `count` replies to messages that arrived at `arrival_us` were queued;
    /// `queued` bytes (the last reply included) now wait to be sent on the
    /// connection. `handle` is the connection's handle ([`NONE`] when idle).
    /// Called once per receive (its replies share the arrival time), not per
    /// message.
    #[inline]
    pub fn queued(&mut self, handle: &mut u32, arrival_us: u32, count: u32, queued: usize) {
        if count == 0 {
            return;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        self.skip = self.sample_every.saturating_sub(1);
        let ahead = u32::try_from(queued).unwrap_or(u32::MAX);
        if *handle == NONE {
            *handle = match self.free.pop() {
                Some(h) => h,
                None => {
                    self.entries.push([Group::default(); 2]);
                    (self.entries.len() - 1) as u32
                }
            };
        }
        let [first, second] = &mut self.entries[*handle as usize];
        let last = if second.count > 0 || (first.count > 0 && first.arrival_us != arrival_us) {
            second
        } else {
            first
        };
        if last.count == 0 {
            last.arrival_us = arrival_us;
        } else if last.arrival_us != arrival_us {
            // Merge: move the group's arrival to the mean over its replies.
            let delta = u64::from(arrival_us.wrapping_sub(last.arrival_us));
            let total = u64::from(last.count) + u64::from(count);
            let shift = delta * u64::from(count) / total;
            last.arrival_us = last.arrival_us.wrapping_add(shift as u32);
        }
        last.count = last.count.saturating_add(count);
        last.ahead = ahead;
    }

    /// `bytes` more of the connection's queue were sent, completing at
    /// `now_us`: groups whose last reply is now out are recorded in `hist`.
    #[inline]
    pub fn sent(&mut self, handle: &mut u32, bytes: usize, now_us: u32, hist: &mut LocalHistogram) {
        if *handle == NONE {
            return;
        }
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        let groups = &mut self.entries[*handle as usize];
        for g in groups.iter_mut() {
            g.ahead = g.ahead.saturating_sub(n);
        }
        while groups[0].count > 0 && groups[0].ahead == 0 {
            let done = groups[0];
            hist.record_n(
                u64::from(now_us.wrapping_sub(done.arrival_us)),
                u64::from(done.count),
            );
            groups[0] = groups[1];
            groups[1] = Group::default();
        }
        if groups[0].count == 0 {
            self.free.push(*handle);
            *handle = NONE;
        }
    }

    /// The connection closed with replies unsent: drop them (they were never
    /// delivered, so they are not latency samples).
    pub fn forget(&mut self, handle: &mut u32) {
        if *handle != NONE {
            self.entries[*handle as usize] = [Group::default(); 2];
            self.free.push(*handle);
            *handle = NONE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [u64; 4] = [10, 100, 1_000, 10_000];

    fn hist() -> LocalHistogram {
        LocalHistogram::new(&BOUNDS)
    }

    #[test]
    fn one_send_completes_a_batch() {
        let (mut t, mut h, mut c) = (SendTracker::default(), hist(), NONE);
        // Three replies of 10 bytes from one receive at t=1000, reported
        // once, then one more from a later receive in the same iteration.
        t.queued(&mut c, 1000, 3, 30);
        t.queued(&mut c, 1000, 1, 40);
        assert_eq!(t.busy(), 1);
        t.queued(&mut c, 1000, 0, 40); // no replies: nothing changes
        t.sent(&mut c, 40, 1050, &mut h);
        assert_eq!((h.count(), h.sum_us()), (4, 200));
        assert_eq!(h.bucket(1), 4, "50 us is in the 100 us bucket");
        assert_eq!((c, t.busy()), (NONE, 0), "idle again: entry freed");
    }

    #[test]
    fn sampling_tracks_one_receive_in_n() {
        let (mut t, mut h) = (SendTracker::sampling(4), hist());
        let mut conns = [NONE; 8];
        for (i, c) in conns.iter_mut().enumerate() {
            t.queued(c, 100, 1, 10);
            t.sent(c, 10, 100 + i as u32, &mut h);
        }
        assert_eq!(h.count(), 2, "receives 0 and 4 of 8");
        assert_eq!(h.sum_us(), 4, "their latencies: 0 and 4 us");
        assert_eq!(t.busy(), 0);
    }

    #[test]
    fn partial_sends_complete_groups_in_order() {
        let (mut t, mut h, mut c) = (SendTracker::default(), hist(), NONE);
        t.queued(&mut c, 100, 1, 50); // group A: 1 reply, 50 bytes (with 40 untracked ahead)
        t.queued(&mut c, 200, 1, 80); // group B: 30 more bytes
        t.queued(&mut c, 200, 1, 100); // group B: 20 more bytes
        t.sent(&mut c, 49, 300, &mut h);
        assert_eq!(h.count(), 0, "A's last byte not yet sent");
        t.sent(&mut c, 1, 305, &mut h);
        assert_eq!((h.count(), h.sum_us()), (1, 205));
        t.sent(&mut c, 30, 400, &mut h);
        assert_eq!(h.count(), 1, "B's last reply still queued");
        t.sent(&mut c, 20, 410, &mut h);
        assert_eq!((h.count(), h.sum_us()), (3, 205 + 2 * 210));
        assert_eq!(c, NONE);
    }

    #[test]
    fn a_third_arrival_time_merges_at_the_mean() {
        let (mut t, mut h, mut c) = (SendTracker::default(), hist(), NONE);
        t.queued(&mut c, 0, 1, 10); // A
        t.queued(&mut c, 100, 1, 20); // B
        t.queued(&mut c, 300, 1, 30); // merges into B: mean of 100 and 300
        t.queued(&mut c, 300, 1, 40); // and again: mean of 100, 300, 300
        t.queued(&mut c, 700, 2, 50); // two at once: mean of 100, 300, 300, 700, 700
        t.sent(&mut c, 50, 1000, &mut h);
        assert_eq!(h.count(), 6);
        // A: 1000; merged group: 5 samples at 1000 - 419 (the mean arrival,
        // 420, less integer truncation along the way).
        assert_eq!(h.sum_us(), 1000 + 5 * (1000 - 419));
    }

    #[test]
    fn forget_and_wrapping_clock() {
        let (mut t, mut h, mut c) = (SendTracker::default(), hist(), NONE);
        t.queued(&mut c, u32::MAX - 5, 1, 10);
        t.sent(&mut c, 10, 4, &mut h); // the u32 microsecond clock wrapped
        assert_eq!(h.sum_us(), 10);
        t.queued(&mut c, 7, 1, 10);
        t.forget(&mut c);
        assert_eq!((c, t.busy()), (NONE, 0));
        t.sent(&mut c, 10, 9, &mut h);
        assert_eq!(
            h.count(),
            1,
            "bytes of a forgotten or untracked connection record nothing"
        );
        // Freed entries are reused.
        let mut d = NONE;
        t.queued(&mut d, 1, 1, 1);
        assert_eq!(d, 0);
    }
}
