//! CPU and memory of the server under test and of the client itself, so a
//! report can state CPU time per message on both sides — the honest figure
//! on a small machine, where wall-clock rates mostly say who got the cores.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// CPU seconds used and resident memory, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Where the server's figures come from.
#[derive(Debug, Clone)]
pub enum ServerProbe {
    /// `/proc/PID` on this machine.
    Pid(u32),
    /// A Prometheus endpoint exposing `process_cpu_seconds_total` and
    /// `process_resident_memory_bytes`.
    Metrics(String),
}

impl ServerProbe {
    /// Takes a sample.
    pub fn sample(&self) -> io::Result<Sample> {
        match self {
            ServerProbe::Pid(pid) => sample_pid(*pid),
            ServerProbe::Metrics(url) => sample_metrics(url),
        }
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Reads `/proc/PID/stat` (utime, stime) and `/proc/PID/status` (VmRSS).
pub fn sample_pid(pid: u32) -> io::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name, which may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu_secs = (ticks(14) + ticks(15)) / clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Sample {
        cpu_secs,
        rss_bytes: rss_kib * 1024,
    })
}

/// This process's own CPU (all threads) and RSS.
pub fn sample_self() -> Sample {
    sample_pid(std::process::id()).unwrap_or_default()
}

/// Fetches a Prometheus text endpoint over plain HTTP/1.1 and reads the
/// standard process metrics.
pub fn sample_metrics(url: &str) -> io::Result<Sample> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| io::Error::other("metrics_url must be http://"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)?
        .next()
        .ok_or_else(|| io::Error::other("metrics host resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    parse_process_metrics(&body)
        .ok_or_else(|| io::Error::other("no process_cpu_seconds_total in /metrics output"))
}

/// Reads `process_cpu_seconds_total` and `process_resident_memory_bytes`
/// from Prometheus text format.
pub fn parse_process_metrics(text: &str) -> Option<Sample> {
    let value = |name: &str| {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (metric, v) = l.rsplit_once(' ')?;
            (metric == name || metric.starts_with(&format!("{name}{{")))
                .then(|| v.parse::<f64>().ok())?
        })
    };
    Some(Sample {
        cpu_secs: value("process_cpu_seconds_total")?,
        rss_bytes: value("process_resident_memory_bytes").unwrap_or(0.0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_process_metrics() {
        let text = "# HELP process_cpu_seconds_total x\n# TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total 12.5\nprocess_resident_memory_bytes 1.048576e6\nother 1\n";
        assert_eq!(
            parse_process_metrics(text),
            Some(Sample {
                cpu_secs: 12.5,
                rss_bytes: 1_048_576
            })
        );
        assert_eq!(parse_process_metrics("nothing 1\n"), None);
    }

    #[test]
    fn samples_own_process() {
        // Burn a little CPU so the reading is measurably non-zero.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let s = sample_self();
        assert!(s.cpu_secs > 0.0 && s.rss_bytes > 0, "{s:?} {x}");
    }
}
