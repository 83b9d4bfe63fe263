//! Process metrics with the standard `process_*` names (as the official
//! Prometheus clients export them), read from `/proc/self` when `/metrics`
//! is rendered rather than published periodically: they are about the
//! process, not a worker, and cost a few small file reads per scrape.
//!
//! `process_cpu_seconds_total` is a fractional counter, which the `metrics`
//! facade (integer counters) cannot express, so this family is rendered
//! directly in the text format.

use std::fmt::Write as _;

/// One reading of the process's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft `RLIMIT_NOFILE`.
    pub max_fds: u64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// OS threads.
    pub threads: u64,
}

/// The fields of `/proc/PID/stat` we use, still in kernel units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime_ticks: u64,
    stime_ticks: u64,
    threads: u64,
    start_ticks: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The `btime` line of `/proc/stat`: boot time, seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).unwrap_or(0)
}

fn max_fds() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live local we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    }
}

/// `FDSize` of `/proc/self/status`: the descriptor table's size, above the
/// highest open descriptor.
fn fd_table_size() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))?
        .trim()
        .parse()
        .ok()
}

/// Open descriptors, counted with one `poll(2)` over every descriptor number
/// up to the table size (closed ones come back `POLLNVAL`; a zero timeout
/// registers no waits). Listing `/proc/self/fd`, as Prometheus clients
/// usually do, builds a dentry and inode per descriptor: with 15,000
/// connections a scrape took 16 ms of worker 0's loop that way (and the
/// kernel keeps the dentries cached).
fn count_open_fds(limit: u64) -> Option<u64> {
    let n = fd_table_size()?.min(limit);
    let mut fds: Vec<libc::pollfd> = (0..i32::try_from(n).ok()?)
        .map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a live array of exactly `fds.len()` pollfd entries;
    // with a zero timeout poll only writes their `revents` and returns.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    if rc < 0 {
        return None;
    }
    Some(
        fds.iter()
            .filter(|p| p.revents & libc::POLLNVAL == 0)
            .count() as u64,
    )
}

impl ProcessStats {
    /// Reads `/proc/self`. Fields that cannot be read are left at 0.
    pub fn read() -> ProcessStats {
        let mut stats = ProcessStats {
            max_fds: max_fds(),
            ..ProcessStats::default()
        };
        stats.open_fds = count_open_fds(stats.max_fds).unwrap_or(0);
        let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat)
        else {
            return stats;
        };
        let ticks = sysconf(libc::_SC_CLK_TCK).max(1) as f64;
        let page = sysconf(libc::_SC_PAGESIZE);
        stats.cpu_seconds = (stat.utime_ticks + stat.stime_ticks) as f64 / ticks;
        stats.resident_bytes = stat.rss_pages * page;
        stats.virtual_bytes = stat.vsize_bytes;
        stats.threads = stat.threads;
        if let Some(boot) = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_boot_time)
        {
            stats.start_time_seconds = boot as f64 + stat.start_ticks as f64 / ticks;
        }
        stats
    }

    /// Appends the `process_*` family in the Prometheus text format.
    pub fn write(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes as f64,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes as f64,
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds as f64,
        );
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds as f64,
        );
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds,
        );
        metric(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            self.threads as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A real line, with a command name containing ") (" to trip naive splitting.
        let line = "4242 (gw) (x y) S 1 4242 4242 0 -1 4194560 1024 0 0 0 \
                    150 50 0 0 20 0 3 0 987654 123456789 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 0 0 0 0 17 0 0 0 0 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            Stat {
                utime_ticks: 150,
                stime_ticks: 50,
                threads: 3,
                start_ticks: 987654,
                vsize_bytes: 123456789,
                rss_pages: 2048,
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read();
        assert!(
            s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes,
            "{s:?}"
        );
        assert!(s.open_fds >= 3 && s.max_fds >= s.open_fds, "{s:?}");
        // Same count as listing /proc/self/fd, whose own descriptor is one
        // more (retried: tests on other threads open files too).
        let mut last = (0, 0);
        let agrees = (0..50).any(|_| {
            let listed = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
            last = (count_open_fds(s.max_fds).unwrap(), listed);
            last.0 + 1 == last.1
        });
        assert!(agrees, "poll count vs /proc/self/fd listing: {last:?}");
        assert!(s.threads >= 1 && s.start_time_seconds > 1e9, "{s:?}");
        let mut out = String::new();
        s.write(&mut out);
        assert!(out.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(out.contains(&format!("\nprocess_open_fds {}\n", s.open_fds)));
    }
}
