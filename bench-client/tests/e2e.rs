//! bench-client end to end: the real binary against the real gateway binary
//! on an ephemeral port, and against targets that fail.
//!
//! The bench client does not depend on the gateway crate; the gateway is run
//! as a process, from the same target directory (built on demand when the
//! tests run alone, e.g. `cargo test -p bench-client`).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

struct Gateway {
    child: Child,
    addr: SocketAddr,
    /// The admin listener, when the configuration has one.
    admin: Option<SocketAddr>,
}

/// A gateway with an echo route, a pubsub route open to anonymous clients
/// and the API on the admin listener (key "k").
const PUBSUB: &str = "[[routes]]\npath = \"/echo\"\napp = \"echo\"\n\
    [[routes]]\npath = \"/connection/websocket\"\napp = \"pubsub\"\n\
    [pubsub]\nallow_anonymous = true\n\
    [pubsub.without_namespace]\nallow_subscribe_for_client = true\n\
    allow_subscribe_for_anonymous = true\nallow_publish_for_client = true\n\
    allow_publish_for_anonymous = true\n\
    [api]\nkey = \"k\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";

/// The gateway binary beside ours, built if it is not there yet.
fn gateway_binary() -> PathBuf {
    static BUILD: Once = Once::new();
    let bin = Path::new(env!("CARGO_BIN_EXE_bench-client")).with_file_name("gateway");
    BUILD.call_once(|| {
        if bin.exists() {
            return;
        }
        let profile_dir = bin.parent().and_then(Path::file_name);
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "gateway", "--bin", "gateway"]);
        if profile_dir.is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p gateway");
        assert!(status.success(), "cargo build -p gateway failed");
    });
    bin
}

impl Gateway {
    fn start() -> Option<Gateway> {
        Self::start_with("")
    }

    /// Starts the gateway with `extra` TOML appended to the base config.
    fn start_with(extra: &str) -> Option<Gateway> {
        let dir = std::env::temp_dir().join(format!("bench-e2e-gw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join(format!("gateway-{:?}.toml", std::thread::current().id()));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\npin_workers = false\n\
                 [io]\nrecv_buffers = 256\nrecv_buffer_size = 4096\n[log]\nlevel = \"warn\"\n{extra}"
            ),
        )
        .unwrap();
        let stderr_path = config.with_extension("log");
        let mut child = Command::new(gateway_binary())
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn gateway");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let mut admin = None;
        if extra.contains("[admin]") {
            let mut second = String::new();
            let _ = stdout.read_line(&mut second);
            admin = second
                .trim_end()
                .strip_prefix("admin listening on ")
                .and_then(|a| a.parse().ok());
        }
        // Keep draining stdout so the gateway never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = line
            .strip_prefix("gateway listening on ")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(addr, _)| addr.parse().ok());
        match addr {
            Some(addr) => Some(Gateway { child, addr, admin }),
            None => {
                let _ = child.wait();
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                if err.contains("io_uring_setup") {
                    eprintln!("SKIP: io_uring unavailable: {err}");
                    return None;
                }
                panic!("gateway did not start: {line:?} {err}");
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/scenarios")
        .join(name)
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bench-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn bench(args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_bench-client"))
        .args(args)
        .output()
        .expect("run bench-client");
    (out, start.elapsed())
}

/// Runs `quick.toml` quietly against `target` (`host:port`) with extra
/// `--set` overrides, writing its files to `out`.
fn quick(target: &str, sets: &[&str], out: &Path) -> (Output, Duration) {
    let scenario = scenario("quick.toml");
    let url = format!("target.urls=[\"ws://{target}/echo\"]");
    let mut args = vec![
        "-q",
        "--scenario",
        scenario.to_str().unwrap(),
        "--set",
        &url,
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    args.extend(["--out", out.to_str().unwrap()]);
    bench(&args)
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn quick_scenario_against_the_gateway_succeeds_fully() {
    let Some(gw) = Gateway::start() else { return };
    let out = out_dir("quick");
    let (o, _) = quick(&gw.addr.to_string(), &[], &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s = summary(&out);
    let cell = &s["cells"][0];
    assert_eq!(cell["success_rate"], 1.0, "{cell}");
    assert!(cell["tps"].as_f64().unwrap() > 0.0);
    assert_eq!(cell["counts"]["conn_established"], 50);
    assert_eq!(cell["counts"]["msgs_lost"], 0);
    // The run ends with a close handshake the gateway finishes.
    assert_eq!(cell["counts"]["closed_at_end"], 50, "{cell}");
    assert_eq!(cell["counts"]["close_timeouts_at_end"], 0, "{cell}");
    assert!(cell["latency"]["count"].as_u64().unwrap() > 0);
    for f in ["results.csv", "report.md"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(
        stdout.contains("echo RTT") && stdout.contains("PASS"),
        "{stdout}"
    );
}

#[test]
fn every_mode_runs_and_a_matrix_writes_plots() {
    let Some(gw) = Gateway::start() else { return };
    for (mode, extra) in [
        ("rate", "load.rate=[50,100]"),
        ("ping", "load.ping_interval_ms=50"),
        ("connect-only", "load.connections=[10,20]"),
    ] {
        let out = out_dir(mode);
        let (o, _) = quick(
            &gw.addr.to_string(),
            &[
                &format!("load.mode={mode}"),
                extra,
                "load.duration_secs=1",
                "thresholds.min_tps=0",
            ],
            &out,
        );
        assert!(
            o.status.success(),
            "{mode}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let s = summary(&out);
        for cell in s["cells"].as_array().unwrap() {
            assert_eq!(cell["success_rate"], 1.0, "{mode}: {cell}");
        }
        if mode != "ping" {
            assert!(
                out.join("throughput.svg").exists() && out.join("p99.svg").exists(),
                "{mode}: plots for a matrix"
            );
        }
        if mode == "rate" {
            let raw = &s["cells"][1]["raw_latency"];
            assert!(
                raw["count"].as_u64().unwrap() > 0,
                "rate mode reports raw latency"
            );
        }
    }
}

#[test]
fn connections_past_the_process_cap_are_spread_and_merged() {
    let Some(gw) = Gateway::start() else { return };
    let out = out_dir("multi");
    let (o, _) = quick(
        &gw.addr.to_string(),
        &["load.connections=30", "client.max_conns_per_process=8"],
        &out,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cell = &summary(&out)["cells"][0];
    assert_eq!(cell["processes"], 4);
    assert_eq!(cell["counts"]["conn_established"], 30);
    assert_eq!(cell["counts"]["conn_up_at_end"], 30);
    let (sent, ok) = (
        cell["counts"]["msgs_sent"].as_u64().unwrap(),
        cell["counts"]["msgs_ok"].as_u64().unwrap(),
    );
    assert!(sent > 0 && sent == ok, "merged counts: sent {sent} ok {ok}");
    assert_eq!(
        cell["latency"]["count"].as_u64().unwrap(),
        ok,
        "merged histogram holds every sample"
    );
}

#[test]
fn a_dead_target_yields_refused_connections_not_a_hang() {
    // A port nobody listens on: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = out_dir("dead");
    let (o, took) = quick(&format!("127.0.0.1:{port}"), &["load.connections=20"], &out);
    assert_eq!(
        o.status.code(),
        Some(1),
        "thresholds fail: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let c = &summary(&out)["cells"][0]["counts"];
    assert_eq!(c["fail_refused"], 20, "{c}");
    assert_eq!(c["conn_established"], 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("refused 20"));
}

#[test]
fn a_silent_target_yields_handshake_timeouts() {
    // Accepts TCP (the kernel does, into the backlog) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = out_dir("silent");
    let (o, took) = quick(
        &format!("127.0.0.1:{port}"),
        &["load.connections=10", "load.handshake_timeout_ms=300"],
        &out,
    );
    drop(listener);
    assert_eq!(o.status.code(), Some(1));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let c = &summary(&out)["cells"][0]["counts"];
    assert_eq!(c["fail_timeout"], 10, "{c}");
}

#[test]
fn a_non_websocket_server_yields_bad_status() {
    // Answers every request with a 404, like a plain web server.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let mut s = s;
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                std::thread::sleep(Duration::from_millis(200));
            });
        }
    });
    let out = out_dir("404");
    let (o, _) = quick(&format!("127.0.0.1:{port}"), &["load.connections=5"], &out);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(summary(&out)["cells"][0]["counts"]["fail_bad_status"], 5);
}

#[test]
fn a_server_that_never_closes_is_aborted_after_the_close_timeout() {
    // Completes the WebSocket handshake, then reads and ignores everything:
    // the close frame at the end of the run is never answered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut s = s;
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let key = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .expect("a key")
                    .trim();
                let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
                let _ = write!(
                    s,
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let out = out_dir("never-closes");
    let (o, took) = quick(
        &format!("127.0.0.1:{port}"),
        &[
            "load.mode=connect-only",
            "load.connections=5",
            "load.duration_secs=0.5",
            "client.close_timeout_ms=300",
            "thresholds.min_tps=0",
        ],
        &out,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let c = &summary(&out)["cells"][0]["counts"];
    assert_eq!(c["conn_up_at_end"], 5, "{c}");
    assert_eq!(c["close_timeouts_at_end"], 5, "{c}");
    assert_eq!(c["closed_at_end"], 0, "{c}");
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("no close within client.close_timeout_ms 5 (aborted)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn bad_scenarios_exit_2_naming_the_key() {
    let dir = out_dir("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "[target]\nurls = [\"ws://127.0.0.1:1/\"]\n[load]\nin_flight = 0\n",
    )
    .unwrap();
    let (o, _) = bench(&["--scenario", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("load.in_flight"));
    let (o, _) = bench(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let (o, _) = bench(&["validate", scenario("seed000.toml").to_str().unwrap()]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("12 cell(s)"));
}

#[test]
fn subscribe_mode_counts_every_delivery_through_the_api() {
    let Some(gw) = Gateway::start_with(PUBSUB) else {
        return;
    };
    let out = out_dir("subscribe");
    let scenario = scenario("fanout.toml");
    let url = format!("target.urls=[\"ws://{}/connection/websocket\"]", gw.addr);
    let api = format!("publish.api_url=http://{}/api/publish", gw.admin.unwrap());
    let (o, _) = bench(&[
        "-q",
        "--scenario",
        scenario.to_str().unwrap(),
        "--set",
        &url,
        "--set",
        &api,
        "--set",
        "publish.api_key=\"k\"",
        "--set",
        "load.connections=60",
        "--set",
        "subscribe.channels=[3]",
        "--set",
        "load.warmup_secs=0.5",
        "--set",
        "load.duration_secs=1.5",
        "--set",
        "load.cooldown_secs=0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let cell = &summary(&out)["cells"][0];
    let c = &cell["counts"];
    assert_eq!(c["subs_ok"], 60, "{cell}");
    // 10 publications/s on each of 3 channels of 20 subscribers, 1.5 s.
    let deliveries = c["deliveries"].as_u64().unwrap();
    assert!((700..=1000).contains(&deliveries), "{cell}");
    assert_eq!(
        cell["expected_deliveries"].as_u64(),
        Some(deliveries),
        "{cell}"
    );
    assert_eq!(
        (c["deliveries_dup"].as_u64(), c["deliveries_ooo"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(text.contains("missing 0"), "{text}");
}

#[test]
fn session_mode_runs_stages_of_virtual_users() {
    let Some(gw) = Gateway::start_with(PUBSUB) else {
        return;
    };
    let out = out_dir("session");
    let scenario = scenario("seed004-hub.toml");
    let url = format!("target.urls=[\"ws://{}/connection/websocket\"]", gw.addr);
    let api = format!("publish.api_url=http://{}/api/publish", gw.admin.unwrap());
    let (o, _) = bench(&[
        "-q",
        "--scenario",
        scenario.to_str().unwrap(),
        "--set",
        &url,
        "--set",
        &api,
        "--set",
        "publish.api_key=\"k\"",
        "--set",
        "publish.rate=4",
        "--set",
        "session.stages=[{duration_secs = 2, target = 20}]",
        "--set",
        "session.session_secs=0.8",
        "--set",
        "session.close_after_leave_secs=0.2",
        "--set",
        "session.send_min_ms=100",
        "--set",
        "session.send_max_ms=300",
        "--set",
        "load.cooldown_secs=1.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let c = &summary(&out)["cells"][0]["counts"];
    let (started, completed) = (
        c["sessions_started"].as_u64().unwrap(),
        c["sessions_completed"].as_u64().unwrap(),
    );
    assert!(started >= 20, "{c}");
    assert_eq!(completed, started, "{c}");
    assert_eq!(c["sessions_failed"], 0, "{c}");
    assert!(c["vu_msgs_sent"].as_u64() > Some(started * 3), "{c}");
    assert!(
        c["deliveries"].as_u64() > Some(0),
        "hub broadcasts reached the VUs: {c}"
    );
}

/// Runs a cluster scenario against one gateway standing in for every node:
/// `nodes` target URLs that all point at it, its API as the publisher's.
fn cluster_run(gw: &Gateway, file: &str, nodes: usize, tag: &str, sets: &[&str]) -> PathBuf {
    let out = out_dir(tag);
    let scenario = scenario(file);
    let url = format!("\"ws://{}/connection/websocket\"", gw.addr);
    let urls = format!("target.urls=[{}]", vec![url; nodes].join(","));
    let api = format!("publish.api_url=http://{}/api/publish", gw.admin.unwrap());
    let mut args = vec![
        "-q",
        "--scenario",
        scenario.to_str().unwrap(),
        "--set",
        &urls,
        "--set",
        &api,
        "--set",
        "publish.api_key=\"k\"",
        "--set",
        "load.warmup_secs=0.5",
        "--set",
        "load.duration_secs=1.5",
        "--set",
        "load.cooldown_secs=0.5",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    args.extend(["--out", out.to_str().unwrap()]);
    let (o, _) = bench(&args);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(out.join("stdout.txt"), text).unwrap();
    out
}

/// The per-target sections of a cell add up to the whole.
fn assert_targets_add_up(cell: &serde_json::Value, nodes: usize) {
    let targets = cell["per_target"].as_array().expect("per_target");
    assert_eq!(targets.len(), nodes, "{cell}");
    let sum = |key: &str| -> u64 { targets.iter().map(|t| t[key].as_u64().unwrap()).sum() };
    assert_eq!(
        sum("deliveries"),
        cell["counts"]["deliveries"].as_u64().unwrap()
    );
    assert_eq!(
        sum("expected_deliveries"),
        cell["expected_deliveries"].as_u64().unwrap()
    );
    for t in targets {
        assert!(t["deliveries"].as_u64() > Some(0), "{t}");
        assert_eq!(t["latency"]["count"], t["deliveries"], "{t}");
        assert_eq!(t["missing"], 0, "{t}");
    }
}

#[test]
fn subscribe_mode_reports_each_target_and_same_vs_cross_node() {
    let Some(gw) = Gateway::start_with(PUBSUB) else {
        return;
    };
    // Two "nodes" that are the same gateway; same_node_target = 0 comes from the file.
    let out = cluster_run(
        &gw,
        "cluster-fanout.toml",
        2,
        "cluster-fanout",
        &["load.connections=40", "load.connect_rate=0"],
    );
    let cell = &summary(&out)["cells"][0];
    assert_targets_add_up(cell, 2);
    let c = &cell["counts"];
    assert_eq!(c["subs_ok"], 40, "{cell}");
    // 10 publications/s for 1.5 s to 40 subscribers.
    let deliveries = c["deliveries"].as_u64().unwrap();
    assert!((400..=800).contains(&deliveries), "{cell}");
    assert_eq!(cell["expected_deliveries"].as_u64(), Some(deliveries));
    let t = &cell["per_target"];
    assert_eq!(
        (t[0]["connections"].as_u64(), t[1]["connections"].as_u64()),
        (Some(20), Some(20))
    );
    assert_eq!(
        (
            t[0]["publisher_node"].as_bool(),
            t[1]["publisher_node"].as_bool()
        ),
        (Some(true), Some(false))
    );
    let split = &cell["node_split"];
    assert_eq!(split["same_node"]["count"], t[0]["deliveries"], "{split}");
    assert_eq!(split["cross_node"]["count"], t[1]["deliveries"], "{split}");
    let text = std::fs::read_to_string(out.join("stdout.txt")).unwrap();
    for want in [
        "--- per target (node) ---",
        "target 0 ws://",
        "(the publisher's node)",
        "target 1 ws://",
        "cross-node vs same-node p50 ",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let csv = std::fs::read_to_string(out.join("targets.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Per target (node)"), "{md}");
}

#[test]
fn subscribe_mode_churns_connections_and_counts_reconnects_apart() {
    let Some(gw) = Gateway::start_with(PUBSUB) else {
        return;
    };
    // The million-connection shape, small: 40 connections on personal
    // channels and groups of 10, 20 reconnects/s over the warm-up and the
    // window, 200 publications/s.
    let out = cluster_run(
        &gw,
        "cluster-million-shape.toml",
        2,
        "cluster-churn",
        &[
            "load.connections=40",
            "load.connect_rate=0",
            "load.churn_per_sec=20",
            "publish.rate=200",
        ],
    );
    let cell = &summary(&out)["cells"][0];
    assert_targets_add_up(cell, 2);
    let c = &cell["counts"];
    let churn = &cell["churn"];
    let reconnects = churn["reconnects"].as_u64().unwrap();
    assert!((20..=45).contains(&reconnects), "{churn}");
    assert_eq!(churn["reconnects_ok"].as_u64(), Some(reconnects), "{churn}");
    assert_eq!(churn["closed"].as_u64(), Some(reconnects), "{churn}");
    assert_eq!(churn["reconnects_failed"], 0, "{churn}");
    assert_eq!(
        churn["resubscribed"].as_u64(),
        Some(2 * reconnects),
        "{churn}"
    );
    assert_eq!(
        churn["reconnect_latency"]["count"].as_u64(),
        Some(reconnects)
    );
    assert_eq!(
        churn["resubscribe_latency"]["count"].as_u64(),
        Some(reconnects)
    );
    // Constant connections; nothing lost beyond what churn had in flight.
    assert_eq!(
        (c["conn_established"].as_u64(), c["conn_up_at_end"].as_u64()),
        (Some(40), Some(40))
    );
    assert_eq!(c["conn_dropped"], 0, "{c}");
    assert!(c["deliveries"].as_u64() > Some(100), "{c}");
    assert_eq!(cell["expected_deliveries"], c["deliveries"], "{cell}");
    let text = std::fs::read_to_string(out.join("stdout.txt")).unwrap();
    assert!(
        text.contains("--- churn (20 connections/s) ---") && text.contains("missing 0"),
        "{text}"
    );
}

/// A TCP proxy in front of the gateway standing in for a node that can be
/// killed: `kill` closes its listener (later connects are refused) and
/// then every connection through it (the subscribers see the server close).
struct Proxy {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn to(upstream: SocketAddr) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let acceptor = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let server = std::net::TcpStream::connect(upstream).unwrap();
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_in, mut c_out) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                conns2.lock().unwrap().extend([client, server]);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_in, &mut c_out);
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
            // The listener closes here: connects are refused from now on.
        });
        Proxy {
            addr,
            stop,
            conns,
            acceptor: Some(acceptor),
        }
    }

    fn stop_listening(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            a.join().unwrap();
        }
    }

    fn drop_connections(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Starts `cluster-fanout.toml` in the background with `load.reconnect`
/// (0-200 ms delays) against `targets`, publishing 50/s through `gw`'s API,
/// with `sets` on top; returns the bench process and its output directory.
fn failover_run(
    gw: &Gateway,
    targets: &[SocketAddr],
    tag: &str,
    sets: &[&str],
) -> (Child, PathBuf) {
    let out = out_dir(tag);
    let scenario = scenario("cluster-fanout.toml");
    let urls: Vec<String> = targets
        .iter()
        .map(|a| format!("\"ws://{a}/connection/websocket\""))
        .collect();
    let urls = format!("target.urls=[{}]", urls.join(","));
    let api = format!("publish.api_url=http://{}/api/publish", gw.admin.unwrap());
    let mut args = vec![
        "-q",
        "--scenario",
        scenario.to_str().unwrap(),
        "--set",
        &urls,
        "--set",
        &api,
    ];
    for s in [
        "publish.api_key=\"k\"",
        "publish.rate=50",
        "load.connect_rate=0",
        "load.warmup_secs=0.3",
        "load.cooldown_secs=0.5",
        "load.reconnect=true",
        "load.reconnect_delay_ms=[0, 200]",
    ]
    .iter()
    .chain(sets)
    {
        args.extend(["--set", s]);
    }
    args.extend(["--out", out.to_str().unwrap()]);
    let child = Command::new(env!("CARGO_BIN_EXE_bench-client"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bench-client");
    (child, out)
}

/// Waits for a [`failover_run`], checks that it succeeded and returns its
/// report.
fn finish(child: Child) -> String {
    let o = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text
}

#[test]
fn subscribe_mode_reconnects_dropped_subscribers_to_the_next_target() {
    let Some(gw) = Gateway::start_with(PUBSUB) else {
        return;
    };
    // Three "nodes": the gateway itself (target 0, the publisher's) and two
    // proxies to it (targets 1 and 2), 10 subscribers each. Both proxies
    // die 1 s into the run: their subscribers come back after 0-200 ms,
    // those of target 1 first to target 2 (refused), then to target 0.
    let mut proxies = [Proxy::to(gw.addr), Proxy::to(gw.addr)];
    let targets = [gw.addr, proxies[0].addr, proxies[1].addr];
    let (child, out) = failover_run(
        &gw,
        &targets,
        "cluster-reconnect",
        &["load.connections=30", "load.duration_secs=2.5"],
    );
    std::thread::sleep(Duration::from_millis(1000));
    for p in &mut proxies {
        p.stop_listening();
    }
    for p in &proxies {
        p.drop_connections();
    }
    let text = finish(child);
    let cell = &summary(&out)["cells"][0];
    let c = &cell["counts"];
    let rc = &cell["reconnect"];
    assert_eq!(c["conn_dropped"], 20, "{cell}");
    assert_eq!(rc["subscribers_dropped"], 20, "{rc}");
    assert_eq!(rc["subscribers_recovered"], 20, "{rc}");
    assert_eq!(rc["attempts_ok"], 20, "{rc}");
    assert_eq!(
        rc["attempts_failed"], 10,
        "target 1's went to 2 first: {rc}"
    );
    assert_eq!(rc["attempts"], 30, "{rc}");
    assert_eq!(rc["resubscribed"], 20, "{rc}");
    assert_eq!(rc["latency"]["count"], 20, "{rc}");
    assert!(rc["latency"]["max_ms"].as_f64() < Some(1000.0), "{rc}");
    let recovered = rc["recovered_in_secs"].as_f64().expect("recovered");
    assert!(recovered < 1.0, "{rc}");
    // Nothing missing, duplicated or out of order: what was sent while a
    // subscriber was away is counted apart.
    assert!(c["deliveries"].as_u64() > Some(1000), "{c}");
    assert_eq!(cell["expected_deliveries"], c["deliveries"], "{cell}");
    assert_eq!(
        (c["deliveries_dup"].as_u64(), c["deliveries_ooo"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(rc["missed_during_reconnect"].as_u64() > Some(0), "{rc}");
    let t = &cell["per_target"];
    let up: Vec<u64> = (0..3)
        .map(|i| t[i]["up_at_end"].as_u64().unwrap())
        .collect();
    assert_eq!(up, [30, 0, 0], "{t}");
    assert_eq!(t[0]["reconnects_ok"], 20, "{t}");
    for i in 0..3 {
        assert_eq!(t[i]["missing"], 0, "{t}");
    }
    for want in [
        "--- reconnect (delay 0..200 ms, next target round robin) ---",
        "subscribers dropped 20 back 20",
        "recovered in ",
        "up at end 30",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

/// A `redis-server` on a free port, killed on drop; `None` (the test
/// skips) when the binary is not installed.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn binary() -> Option<PathBuf> {
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("redis-server"))
                    .find(|p| p.is_file())
            })
            .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
    }

    fn start() -> Option<Redis> {
        let Some(bin) = Self::binary() else {
            eprintln!("SKIP: redis-server not installed");
            return None;
        };
        // A port free a moment ago may be taken by the time redis binds it.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .ok()?
                .port();
            if let Some(child) = Self::spawn_on(&bin, port) {
                return Some(Redis { child, port });
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// A server on `port`, once it accepts connections.
    fn spawn_on(bin: &Path, port: u16) -> Option<Child> {
        let mut child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(child);
            }
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGKILL, then a new server on the same port after `down`.
    fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let bin = Self::binary().expect("found at start");
        self.child = Self::spawn_on(&bin, self.port).expect("redis-server restarts on its port");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node whose broker goes away and comes back unsubscribes its clients
/// with code 2500; with `load.reconnect` the bench subscribes again on the
/// same connection, as the SDKs do, and what was published meanwhile is
/// missed during reconnect, not missing.
/// A subscribe proxy backend (the part a user writes): answers every
/// subscribe with `{"result":{}}`, except that while `fail` is above zero
/// it answers 500 and counts it down. HTTP/1.1 keep-alive, bodies by
/// Content-Length, as the gateway's client sends them.
fn subscribe_backend(fail: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> SocketAddr {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let fail = fail.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let body_len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() < end + 4 + body_len {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    }
                    buf.drain(..end + 4 + body_len);
                    let refuse = fail
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let (status, body) = if refuse {
                        ("500 Internal Server Error", "")
                    } else {
                        ("200 OK", "{\"result\":{}}")
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Subscribe mode with reconnect against one gateway over a real Redis
/// (`extra` appended to its config), Redis restarted mid-run after
/// `before_restart`: the counts of the run's cell.
fn broker_restart_run(
    tag: &str,
    extra: &str,
    before_restart: impl FnOnce(),
) -> Option<serde_json::Value> {
    let mut redis = Redis::start()?;
    let broker = format!(
        "[broker]\nkind = \"redis\"\naddresses = [\"127.0.0.1:{}\"]\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n",
        redis.port
    );
    let gw = Gateway::start_with(&format!("{PUBSUB}{broker}{extra}"))?;
    let (child, out) = failover_run(
        &gw,
        &[gw.addr],
        tag,
        &["load.connections=20", "load.duration_secs=4"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    before_restart();
    redis.restart(Duration::from_millis(500));
    finish(child);
    Some(summary(&out)["cells"][0].clone())
}

/// Every one of the 20 subscriptions was ended by the server, subscribed
/// again on its connection, and nothing published was missed.
fn assert_all_resubscribed(cell: &serde_json::Value) {
    let c = &cell["counts"];
    assert_eq!(c["unsubscribed"], 20, "every subscription told: {c}");
    assert_eq!(c["resubscribed"], 20, "and subscribed again: {c}");
    assert_eq!(c["resubscribed_in_place"], 20, "on their connections: {c}");
    assert_eq!(c["subs_failed"], 0, "{c}");
    assert_eq!(c["conn_dropped"], 0, "{c}");
    // Deliveries resumed after the restart, and nothing is missing.
    assert!(c["deliveries"].as_u64() > Some(20 * 150), "{c}");
    assert_eq!(cell["expected_deliveries"], c["deliveries"], "{cell}");
}

#[test]
fn subscribe_mode_resubscribes_after_a_broker_restart() {
    let Some(cell) = broker_restart_run("resubscribe", "", || {}) else {
        return;
    };
    assert_all_resubscribed(&cell);
    assert_eq!(cell["counts"]["resubscribe_retries"], 0, "{cell}");
}

#[test]
fn subscribe_mode_retries_a_resubscribe_refused_for_now() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // Subscriptions go through the subscribe proxy; once the broker is
    // back, the backend refuses the first 10 resubscribes (error 100,
    // temporary, to the client), which the bench must try again.
    let fail = Arc::new(AtomicUsize::new(0));
    let backend = subscribe_backend(fail.clone());
    let extra = format!(
        "[[backends]]\nname = \"app\"\naddress = \"{backend}\"\n\
         [pubsub.proxy]\nbackend = \"app\"\nsubscribe_path = \"/subscribe\"\n"
    );
    let Some(cell) = broker_restart_run("resubscribe-retry", &extra, || {
        fail.store(10, Ordering::SeqCst)
    }) else {
        return;
    };
    assert_eq!(fail.load(Ordering::SeqCst), 0, "the backend refused 10");
    assert_all_resubscribed(&cell);
    let retries = &cell["counts"]["resubscribe_retries"];
    assert_eq!(retries, 10, "each refusal tried again: {cell}");
}
