//! Fixed-bucket histograms kept as plain integers by one worker.
//!
//! The exporter's own histogram storage takes a timestamp and pushes every
//! sample onto a shared lock-free list (its `record_many` is a loop of
//! `record`), which is fine once per handshake but not once per message. A
//! [`LocalHistogram`] costs one bucket search and two adds per sample; the
//! worker copies it out once per publish interval and the admin side renders
//! it in the Prometheus text format itself.

use std::fmt::Write as _;

/// Counts of samples (in microseconds) per explicit bucket, plus their sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHistogram {
    /// Inclusive upper bounds in microseconds, ascending; an implicit `+Inf`
    /// bucket follows.
    bounds_us: &'static [u64],
    /// Per-bucket (not cumulative) counts; `bounds_us.len() + 1` entries.
    counts: Box<[u64]>,
    sum_us: u64,
}

impl LocalHistogram {
    /// An empty histogram with the given upper bounds (microseconds, ascending).
    pub fn new(bounds_us: &'static [u64]) -> Self {
        debug_assert!(bounds_us.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Self {
            bounds_us,
            counts: vec![0; bounds_us.len() + 1].into_boxed_slice(),
            sum_us: 0,
        }
    }

    /// Records `n` samples of `value_us` microseconds.
    #[inline]
    pub fn record_n(&mut self, value_us: u64, n: u64) {
        // Prometheus buckets are inclusive: `le` = "less than or equal".
        let i = self.bounds_us.partition_point(|&b| b < value_us);
        self.counts[i] += n;
        self.sum_us = self.sum_us.wrapping_add(value_us.wrapping_mul(n));
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of all samples, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// Samples in the bucket whose upper bound is `bounds_us[i]` (or `+Inf`
    /// for `i == bounds_us.len()`), not cumulative.
    pub fn bucket(&self, i: usize) -> u64 {
        self.counts[i]
    }

    /// Overwrites `self` with `other` (same bounds) without allocating.
    pub fn copy_from(&mut self, other: &LocalHistogram) {
        debug_assert_eq!(self.bounds_us, other.bounds_us);
        self.counts.copy_from_slice(&other.counts);
        self.sum_us = other.sum_us;
    }

    /// Writes the `_bucket` (cumulative, with `le` in seconds), `_sum`
    /// (seconds) and `_count` lines of one series. `labels` is the rendered
    /// label list without braces (e.g. `worker="0"`), or empty.
    pub fn write_series(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, &bound) in self.bounds_us.iter().enumerate() {
            cumulative += self.counts[i];
            let le = bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds_us.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [u64; 3] = [100, 1_000, 10_000];

    #[test]
    fn buckets_are_inclusive_and_rendered_cumulatively() {
        let mut h = LocalHistogram::new(&BOUNDS);
        h.record_n(0, 1);
        h.record_n(100, 2); // on the bound: same bucket
        h.record_n(101, 1);
        h.record_n(10_000, 1);
        h.record_n(10_001, 3); // +Inf
        assert_eq!(h.count(), 8);
        assert_eq!(
            (0..4).map(|i| h.bucket(i)).collect::<Vec<_>>(),
            [3, 1, 1, 3]
        );
        assert_eq!(h.sum_us(), 200 + 101 + 10_000 + 30_003);
        let mut out = String::new();
        h.write_series(&mut out, "x_seconds", "worker=\"1\"");
        assert_eq!(
            out,
            "x_seconds_bucket{worker=\"1\",le=\"0.0001\"} 3\n\
             x_seconds_bucket{worker=\"1\",le=\"0.001\"} 4\n\
             x_seconds_bucket{worker=\"1\",le=\"0.01\"} 5\n\
             x_seconds_bucket{worker=\"1\",le=\"+Inf\"} 8\n\
             x_seconds_sum{worker=\"1\"} 0.040304\n\
             x_seconds_count{worker=\"1\"} 8\n"
        );
        let mut copy = LocalHistogram::new(&BOUNDS);
        copy.copy_from(&h);
        assert_eq!(copy, h);
    }

    #[test]
    fn unlabelled_series() {
        let mut out = String::new();
        LocalHistogram::new(&BOUNDS).write_series(&mut out, "y", "");
        assert!(out.starts_with("y_bucket{le=\"0.0001\"} 0\n"), "{out}");
        assert!(out.ends_with("y_sum 0\ny_count 0\n"), "{out}");
    }
}
