//! Real servers for the integration tests: each test starts its own
//! `redis-server` or `nats-server` on a free loopback port, in a temporary
//! directory, and kills it when dropped. A missing binary skips the test
//! (prints `SKIP: ...`); CI installs both.

#![allow(dead_code)] // each test binary uses part of this

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a read may wait before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Read sizes cycled through, so real traffic reaches the decoders in
/// awkward pieces too.
pub const READ_SIZES: [usize; 6] = [1, 3, 17, 4096, 65536, 7];

/// A server process, killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// `redis-server` with `extra` arguments, or `None` (after printing
    /// `SKIP`) when it is not installed.
    pub fn redis(extra: &[&str]) -> Option<Server> {
        let bin = find(
            "redis-server",
            &["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
        )?;
        Some(start(&bin, "Ready to accept connections", |port, dir| {
            let mut args = vec![
                "--port".to_string(),
                port.to_string(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--dir".into(),
                dir.display().to_string(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        }))
    }

    /// `nats-server`, or `None` (after printing `SKIP`) when it is not
    /// installed.
    pub fn nats() -> Option<Server> {
        let bin = find(
            "nats-server",
            &[
                "/usr/sbin/nats-server",
                "/usr/bin/nats-server",
                "/usr/local/bin/nats-server",
            ],
        )?;
        Some(start(&bin, "Server is ready", |port, _| {
            vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ]
        }))
    }

    /// A new connection to the server.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }
}

fn find(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    let found = from_path.or_else(|| fallbacks.iter().map(PathBuf::from).find(|p| p.is_file()));
    if found.is_none() {
        println!("SKIP: {name} is not installed");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "broker-proto-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Starts `bin` with `args(port, dir)` until it listens (another process
/// may take the free port first: then it is tried again on another).
/// Ready means the server's own log says so: a connect alone could reach
/// another test's server that took the same free port a moment earlier
/// (ours then fails to bind and exits, and the other one's connections are
/// reset when that test ends).
fn start(bin: &Path, ready: &str, args: impl Fn(u16, &Path) -> Vec<String>) -> Server {
    for _ in 0..5 {
        let dir = temp_dir();
        let port = free_port();
        let log = std::fs::File::create(dir.join("server.log")).expect("log file");
        let child = Command::new(bin)
            .args(args(port, &dir))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut server = Server { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
            let alive = matches!(server.child.try_wait(), Ok(None));
            if alive && log.contains(ready) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log =
                    std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
                eprintln!("{} exited ({status}), retrying: {log}", bin.display());
                break;
            }
            if Instant::now() > deadline {
                panic!("{} did not listen on {port}", bin.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("could not start {}", bin.display());
}
