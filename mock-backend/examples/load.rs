//! A small keep-alive (optionally pipelined) HTTP/1.1 load client for the
//! mock backend, to measure what the mock costs per request.
//!
//! Why: the mock must not be the bottleneck of seed 000's load (~24k
//! webhook requests/s), and `curl` opens too few connections and costs too
//! much per request to show that. Each connection runs on its own thread and
//! sends what the gateway sends for one client message: `POST /ws/message`
//! with an id (answered with an ack) and, every other request, the client's
//! ack (answered 204). With `--pid` it reads the mock's CPU time from
//! `/proc/<pid>/stat` before and after and prints µs of CPU per request.
//!
//! ```text
//! mock-backend --listen 127.0.0.1:9100 &
//! cargo run --release -p mock-backend --example load -- \
//!     --addr 127.0.0.1:9100 --conns 64 --rate 24000 --secs 10 --pid $!
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

/// Load client for mock-backend.
#[derive(Debug, Parser)]
struct Args {
    /// The mock's address.
    #[arg(long, default_value = "127.0.0.1:9100")]
    addr: SocketAddr,
    /// Connections (one thread each).
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Requests written at once per connection (1 = no pipelining).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Total requests per second over all connections (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Run time.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// The mock's pid, to report its CPU per request.
    #[arg(long)]
    pid: Option<u32>,
}

/// The process's user + system CPU time, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

fn request(id: u64, conn: usize, size: usize, ack: bool) -> Vec<u8> {
    let body = if ack {
        format!(r#"{{"type":"ack","id":{id}}}"#)
    } else {
        let head = format!(r#"{{"type":"msg","id":{id},"pad":""#);
        let pad = size.saturating_sub(head.len() + 2);
        format!("{head}{}\"}}", "x".repeat(pad))
    };
    let mut out = format!(
        "POST /ws/message HTTP/1.1\r\nHost: mock\r\nX-Gateway-Event: message\r\n\
         X-Connection-Id: {conn:016x}\r\nX-Route: /upstream\r\nX-Message-Kind: text\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Reads `n` responses; returns how many were not 200/204.
fn read_responses(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> std::io::Result<u64> {
    let mut bad = 0;
    let mut chunk = [0u8; 64 * 1024];
    for _ in 0..n {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end]).unwrap_or("");
                let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    buf.drain(..end + 4 + len);
                    bad += u64::from(status != 200 && status != 204);
                    break;
                }
            }
            let got = stream.read(&mut chunk)?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..got]);
        }
    }
    Ok(bad)
}

fn main() {
    let args = Args::parse();
    let done = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let before = args.pid.and_then(cpu_time);
    let start = Instant::now();
    let end = start + Duration::from_secs(args.secs);
    // Each connection's share of the rate, in batches of `depth`.
    let interval = (args.rate > 0.0)
        .then(|| Duration::from_secs_f64(args.conns as f64 * args.depth as f64 / args.rate));
    let threads: Vec<_> = (0..args.conns)
        .map(|conn| {
            let (done, bad) = (done.clone(), bad.clone());
            let (addr, depth, size) = (args.addr, args.depth, args.size);
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.set_nodelay(true).unwrap();
                let mut buf = Vec::new();
                let mut id = 0u64;
                // Spread the connections' phases over one interval.
                let mut next = start + interval.unwrap_or_default() * conn as u32 / 64;
                while Instant::now() < end {
                    if let Some(iv) = interval {
                        let now = Instant::now();
                        if now < next {
                            std::thread::sleep(next - now);
                        }
                        next += iv;
                    }
                    let mut wire = Vec::new();
                    for _ in 0..depth {
                        id += 1;
                        wire.extend(request(id / 2, conn, size, id % 2 == 0));
                    }
                    stream.write_all(&wire).expect("write");
                    let b = read_responses(&mut stream, &mut buf, depth).expect("read");
                    done.fetch_add(depth as u64, Ordering::Relaxed);
                    bad.fetch_add(b, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let after = args.pid.and_then(cpu_time);
    let n = done.load(Ordering::Relaxed);
    print!(
        "requests={n} bad={} secs={secs:.1} req_per_s={:.0}",
        bad.load(Ordering::Relaxed),
        n as f64 / secs
    );
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = a.saturating_sub(b);
        print!(
            " mock_cpu_s={:.2} mock_cpu_us_per_req={:.2} mock_cores={:.2}",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
            cpu.as_secs_f64() / secs
        );
    }
    println!();
}
