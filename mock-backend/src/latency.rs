//! Simulated backend latency: a tiny deterministic RNG and the `--latency`
//! distributions it samples.
//!
//! Why its own RNG: runs must be repeatable (`--seed`), the sampling sits on
//! the per-request path, and xorshift64* is a handful of instructions, so no
//! `rand` dependency is worth it. Each worker seeds its own generator from
//! `--seed` and its index, so no state is shared between threads.

use std::fmt;
use std::str::FromStr;

/// xorshift64* (Vigna): fast, small state, good enough for load shaping.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` and `stream` (e.g. the worker index); any
    /// input, zero included, gives a valid non-zero state (via splitmix64).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (always for `p >= 1`, never for `p <= 0`).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }
}

/// A latency distribution; every time in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Always this long.
    Fixed(u64),
    /// Uniform between the bounds (inclusive low, exclusive high).
    Uniform(u64, u64),
    /// Exponential with this mean.
    Exp(f64),
    /// Normal with this mean and standard deviation, clamped at 0.
    Normal(f64, f64),
}

impl Latency {
    /// True when every sample is 0 (the fast path needs no RNG draw).
    pub fn is_zero(&self) -> bool {
        matches!(self, Latency::Fixed(0))
    }

    /// One delay, in microseconds.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match *self {
            Latency::Fixed(us) => us,
            Latency::Uniform(lo, hi) if hi <= lo => lo,
            Latency::Uniform(lo, hi) => lo + rng.next_u64() % (hi - lo),
            Latency::Exp(mean) => {
                // 1 - u is in (0, 1], so the logarithm is finite.
                let u = 1.0 - rng.next_f64();
                (-mean * u.ln()).round() as u64
            }
            Latency::Normal(mean, sd) => {
                // Box-Muller; one of the pair is enough here.
                let u1 = 1.0 - rng.next_f64();
                let u2 = rng.next_f64();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (mean + sd * z).max(0.0).round() as u64
            }
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Latency::Fixed(us) => write!(f, "fixed:{us}us"),
            Latency::Uniform(lo, hi) => write!(f, "uniform:{lo}us..{hi}us"),
            Latency::Exp(mean) => write!(f, "exp:{mean}us"),
            Latency::Normal(mean, sd) => write!(f, "normal:{mean}us,{sd}us"),
        }
    }
}

/// Why a `--latency` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LatencyError {
    /// No `kind:` prefix, or an unknown kind.
    #[error("unknown distribution {0:?}: use fixed:D, uniform:A..B, exp:MEAN or normal:MEAN,SD")]
    Kind(String),
    /// A duration that does not parse.
    #[error("bad duration {0:?}: a number with an optional unit us, ms (default) or s")]
    Duration(String),
    /// The parameters of a kind are not in its form.
    #[error("{0} expects {1}")]
    Form(&'static str, &'static str),
    /// `uniform:A..B` with `A > B`.
    #[error("uniform range is empty: {0} > {1}")]
    EmptyRange(String, String),
}

/// A duration in microseconds: `250us`, `2ms`, `1.5ms`, `1s`, or a bare
/// number of milliseconds (`0`, `5`).
pub fn parse_duration_us(s: &str) -> Result<f64, LatencyError> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("us").or_else(|| t.strip_suffix("µs")) {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        (t, 1_000.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 3.6e9 => Ok(v * scale),
        _ => Err(LatencyError::Duration(s.to_string())),
    }
}

impl FromStr for Latency {
    type Err = LatencyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, params) = s
            .split_once(':')
            .ok_or_else(|| LatencyError::Kind(s.to_string()))?;
        let us = |d: &str| parse_duration_us(d).map(|v| v.round() as u64);
        match kind.trim() {
            "fixed" => Ok(Latency::Fixed(us(params)?)),
            "uniform" => {
                let (a, b) = params
                    .split_once("..")
                    .ok_or(LatencyError::Form("uniform", "A..B, e.g. uniform:1ms..5ms"))?;
                let (lo, hi) = (us(a)?, us(b)?);
                if lo > hi {
                    return Err(LatencyError::EmptyRange(a.into(), b.into()));
                }
                Ok(Latency::Uniform(lo, hi))
            }
            "exp" => Ok(Latency::Exp(parse_duration_us(params)?)),
            "normal" => {
                let (m, sd) = params
                    .split_once(',')
                    .ok_or(LatencyError::Form("normal", "MEAN,SD, e.g. normal:5ms,1ms"))?;
                Ok(Latency::Normal(
                    parse_duration_us(m)?,
                    parse_duration_us(sd)?,
                ))
            }
            other => Err(LatencyError::Kind(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("fixed:0".parse(), Ok(Latency::Fixed(0)));
        assert_eq!("fixed:50ms".parse(), Ok(Latency::Fixed(50_000)));
        assert_eq!("fixed:250us".parse(), Ok(Latency::Fixed(250)));
        assert_eq!(
            "uniform:1ms..5ms".parse(),
            Ok(Latency::Uniform(1_000, 5_000))
        );
        assert_eq!("exp:2ms".parse(), Ok(Latency::Exp(2_000.0)));
        assert_eq!(
            "normal:5ms,1ms".parse(),
            Ok(Latency::Normal(5_000.0, 1_000.0))
        );
        assert_eq!("fixed:1.5s".parse(), Ok(Latency::Fixed(1_500_000)));
        for bad in [
            "5ms",
            "gauss:1ms",
            "fixed:-1",
            "fixed:abc",
            "uniform:5ms",
            "uniform:5ms..1ms",
            "normal:5ms",
            "exp:inf",
        ] {
            assert!(bad.parse::<Latency>().is_err(), "{bad}");
        }
    }

    #[test]
    fn samples_follow_the_distribution() {
        let mut rng = Rng::new(7, 0);
        let n = 20_000;
        let mean = |d: Latency, rng: &mut Rng| {
            (0..n).map(|_| d.sample(rng) as f64).sum::<f64>() / n as f64
        };
        assert_eq!(Latency::Fixed(42).sample(&mut rng), 42);
        let u = Latency::Uniform(1_000, 5_000);
        assert!((0..n).all(|_| (1_000..5_000).contains(&u.sample(&mut rng))));
        assert!((mean(u, &mut rng) - 3_000.0).abs() < 60.0);
        assert!((mean(Latency::Exp(2_000.0), &mut rng) - 2_000.0).abs() < 100.0);
        assert!((mean(Latency::Normal(5_000.0, 1_000.0), &mut rng) - 5_000.0).abs() < 50.0);
        // Clamped at zero, never negative (u64), never absurd.
        let wide = Latency::Normal(100.0, 1_000.0);
        assert!((0..n).all(|_| wide.sample(&mut rng) < 10_000));
    }

    #[test]
    fn rng_is_deterministic_and_chance_is_calibrated() {
        let a: Vec<u64> = {
            let mut r = Rng::new(1, 2);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(1, 2);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(Rng::new(1, 2).next_u64(), Rng::new(1, 3).next_u64());
        let mut r = Rng::new(0, 0);
        assert!((0..1000).all(|_| r.chance(1.0)));
        assert!((0..1000).all(|_| !r.chance(0.0)));
        let hits = (0..100_000).filter(|_| r.chance(0.1)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
    }
}
