//! Ack mode end to end: the real bench-client binary against a small
//! blocking tungstenite server that stands in for the gateway's upstream
//! route plus mock-backend: `{"type":"msg","id":N,...}` gets
//! `{"type":"ack","id":N}`, the client's `{"type":"ack","id":N}` gets
//! nothing. It misbehaves on purpose, by id (drops, error answers,
//! duplicate acks, pushes) or by closing, and checks what the client sends
//! (exact message size, client acks only for ids it acked).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// How the fake upstream answers message `id` (0 = never).
#[derive(Debug, Clone, Copy, Default)]
struct Behaviour {
    /// Ids that are a multiple of this get no answer (client timeout).
    drop_every: u64,
    /// Multiples of this (not dropped) get `{"error":{..,"id":N}}`.
    error_every: u64,
    /// Multiples of this (acked) get their ack twice.
    dup_every: u64,
    /// After multiples of this, a push `{"type":"push","id":N}` (an id, but no ack).
    push_every: u64,
    /// After multiples of this, an error answer with `"id":null`.
    null_error_every: u64,
    /// Close after this many messages: connections alternately with 1011 and 1013.
    close_after: u64,
    /// The size every client message must have.
    message_size: usize,
}

/// What the fake upstream saw and did, over the whole run.
#[derive(Debug, Default)]
struct Tally {
    conns: AtomicU64,
    msgs: AtomicU64,
    acks_sent: AtomicU64,
    errors_sent: AtomicU64,
    dropped: AtomicU64,
    client_acks: AtomicU64,
    /// Wrong size, not JSON, unknown type, or a client ack for an id the
    /// server did not ack.
    bad: AtomicU64,
}

fn spawn_upstream(b: Behaviour) -> (SocketAddr, Arc<Tally>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tally = Arc::new(Tally::default());
    let t = tally.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let t = t.clone();
            std::thread::spawn(move || {
                if let Ok(ws) = tungstenite::accept(stream) {
                    t.conns.fetch_add(1, Ordering::Relaxed);
                    serve(ws, b, &t, n);
                }
            });
        }
    });
    (addr, tally)
}

fn serve(mut ws: WebSocket<TcpStream>, b: Behaviour, t: &Tally, n: usize) {
    let every = |k: u64, id: u64| k > 0 && id % k == 0;
    let mut acked = std::collections::HashSet::new();
    let mut msgs = 0u64;
    loop {
        let text = match ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => return,
            Ok(_) => continue,
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            t.bad.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let id = v["id"].as_u64().unwrap_or(0);
        match v["type"].as_str() {
            Some("ack") => {
                t.client_acks.fetch_add(1, Ordering::Relaxed);
                if !acked.remove(&id) {
                    t.bad.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            Some("msg") if text.len() == b.message_size && id > 0 => {}
            _ => {
                t.bad.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        msgs += 1;
        t.msgs.fetch_add(1, Ordering::Relaxed);
        if b.close_after > 0 && msgs >= b.close_after {
            let code = if n % 2 == 0 {
                CloseCode::Error
            } else {
                CloseCode::Again
            };
            let _ = ws.close(Some(CloseFrame {
                code,
                reason: "backend unavailable".into(),
            }));
            // Let the close handshake finish.
            while ws.read().is_ok() {}
            return;
        }
        let mut out = Vec::new();
        if every(b.drop_every, id) {
            t.dropped.fetch_add(1, Ordering::Relaxed);
        } else if every(b.error_every, id) {
            t.errors_sent.fetch_add(1, Ordering::Relaxed);
            out.push(format!(
                r#"{{"error":{{"code":503,"message":"backend unavailable","id":{id}}}}}"#
            ));
        } else {
            t.acks_sent.fetch_add(1, Ordering::Relaxed);
            acked.insert(id);
            out.push(format!(r#"{{"type":"ack","id":{id}}}"#));
            if every(b.dup_every, id) {
                out.push(format!(r#"{{"type":"ack","id":{id}}}"#));
            }
        }
        if every(b.push_every, id) {
            out.push(format!(r#"{{"type":"push","id":{id},"data":"news"}}"#));
        }
        if every(b.null_error_every, id) {
            out.push(r#"{"error":{"code":400,"message":"bad","id":null}}"#.into());
        }
        for m in out {
            if ws.send(Message::text(m)).is_err() {
                return;
            }
        }
    }
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bench-ack-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs ack mode against `addr` with `extra` TOML appended to `[load]`.
/// `None` when io_uring is unavailable here.
fn run(addr: SocketAddr, extra: &str, out: &Path) -> Option<(Output, serde_json::Value)> {
    let scenario = out.join("ack.toml");
    std::fs::write(
        &scenario,
        format!(
            "[target]\nurls = [\"ws://{addr}/upstream\"]\n\
             [load]\nmode = \"ack\"\nconnections = 10\nconnect_rate = 0\n\
             warmup_secs = 0.3\nduration_secs = 2\ncooldown_secs = 0.5\n\
             message_size = 120\nhandshake_timeout_ms = 3000\n{extra}\n\
             [client]\nworkers = 1\nrecv_buffers = 64\nrecv_buffer_size = 4096\n"
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bench-client"))
        .args(["-q", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run bench-client");
    let stderr = String::from_utf8_lossy(&o.stderr);
    if o.status.code() == Some(2) && stderr.contains("client worker failed to start") {
        eprintln!("SKIP: io_uring unavailable: {stderr}");
        return None;
    }
    assert!(
        o.status.success(),
        "{}\n{stderr}",
        String::from_utf8_lossy(&o.stdout)
    );
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    let cell = serde_json::from_str::<serde_json::Value>(&text).unwrap()["cells"][0].clone();
    Some((o, cell))
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// `x` is within `tol` of `want` × `of`.
fn near(x: u64, of: u64, want: f64, tol: f64) -> bool {
    let share = x as f64 / of.max(1) as f64;
    (share - want).abs() <= tol
}

#[test]
fn every_window_message_is_acked_timed_out_or_refused_exactly_once() {
    let b = Behaviour {
        drop_every: 10,
        error_every: 7,
        dup_every: 13,
        push_every: 25,
        null_error_every: 50,
        message_size: 120,
        ..Behaviour::default()
    };
    let (addr, tally) = spawn_upstream(b);
    let out = out_dir("mixed");
    // 10 connections x 100 msg/s x 2 s: about 2,000 window messages.
    let Some((o, cell)) = run(
        addr,
        "rate = 100\n[load.ack]\ntimeout_ms = 250\nmax_outstanding = 64\n",
        &out,
    ) else {
        return;
    };
    let c = &cell["counts"];
    let (sent, ok, timed_out, errors, lost) = (
        n(&c["msgs_sent"]),
        n(&c["msgs_ok"]),
        n(&c["msgs_timed_out"]),
        n(&c["ack_errors"]),
        n(&c["msgs_lost"]),
    );
    assert_eq!(n(&c["conn_established"]), 10, "{cell}");
    assert_eq!(tally.conns.load(Ordering::Relaxed), 10);
    assert!(
        (1_600..=2_400).contains(&sent),
        "rate x connections x window: {cell}"
    );
    assert_eq!(
        ok + timed_out + errors + lost,
        sent,
        "each settled once: {cell}"
    );
    assert_eq!(lost, 0, "{cell}");
    // Ids 10, 20, ... are dropped; 7, 14, ... (not also multiples of 10) refused.
    assert!(near(timed_out, sent, 0.1, 0.03), "timeouts ~1/10: {cell}");
    assert!(near(errors, sent, 9.0 / 70.0, 0.04), "errors ~9/70: {cell}");
    assert_eq!(n(&c["ack_skipped"]), 0, "bound never reached: {cell}");
    // Duplicate acks (13, 26, ... when acked) are stale; pushes are no acks,
    // even though they carry an id; null-id errors match nothing.
    let acked_share = 1.0 - 0.1 - 9.0 / 70.0;
    assert!(
        near(n(&c["acks_stale"]), sent, acked_share / 13.0, 0.02),
        "{cell}"
    );
    assert!(
        near(n(&c["non_ack_msgs"]), sent, 1.0 / 25.0, 0.015),
        "{cell}"
    );
    assert!(
        near(n(&c["errors_unmatched"]), sent, 1.0 / 50.0, 0.015),
        "{cell}"
    );
    assert_eq!(n(&c["acks_unknown"]), 0, "{cell}");
    assert_eq!(n(&c["protocol_errors"]), 0, "{cell}");
    // The transaction's third leg: a client ack for every completed one.
    assert_eq!(n(&c["client_acks_sent"]), ok, "{cell}");
    let server_acks = tally.client_acks.load(Ordering::Relaxed);
    assert!(
        server_acks >= ok && server_acks <= tally.acks_sent.load(Ordering::Relaxed),
        "server got {server_acks} client acks for {ok} window transactions: {cell}"
    );
    assert_eq!(
        tally.bad.load(Ordering::Relaxed),
        0,
        "every message {} B, client acks only for acked ids",
        b.message_size
    );
    // Figures.
    let tps = cell["tps"].as_f64().unwrap();
    assert!((tps - ok as f64 / 2.0).abs() < 1e-6, "{cell}");
    let rate = cell["success_rate"].as_f64().unwrap();
    assert!((rate - ok as f64 / sent as f64).abs() < 1e-9, "{cell}");
    let lat = &cell["latency"];
    assert_eq!(
        n(&lat["count"]),
        ok,
        "latency of completed transactions only"
    );
    // (3 significant digits: 250 ms may read as 250.1.)
    assert!(lat["max_ms"].as_f64().unwrap() <= 251.0, "{cell}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!("{stdout}");
    for want in [
        format!("total sent             {sent}"),
        format!("successful             {ok}"),
        format!(
            "failed                 {}  (timed out {timed_out}, error answers {errors}, lost on close 0)",
            timed_out + errors
        ),
        "transaction latency".to_string(),
        "TPS ".to_string(),
    ] {
        assert!(stdout.contains(&want), "missing {want:?}:\n{stdout}");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .contains(&format!(",{errors},0,\"\"")),
        "{csv}"
    );
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn a_server_that_closes_is_counted_by_close_code_and_its_messages_lost() {
    // Every connection is closed at its 60th message (0.6 s at 100/s, in the
    // window), which goes unanswered: half with 1011, half with 1013.
    let (addr, tally) = spawn_upstream(Behaviour {
        close_after: 60,
        message_size: 120,
        ..Behaviour::default()
    });
    let out = out_dir("close");
    let Some((o, cell)) = run(addr, "rate = 100\n", &out) else {
        return;
    };
    let c = &cell["counts"];
    assert_eq!(tally.msgs.load(Ordering::Relaxed), 600);
    assert_eq!(n(&c["conn_established"]), 10, "{cell}");
    assert_eq!(n(&c["conn_dropped"]), 10, "no reconnect: {cell}");
    assert_eq!(n(&c["conn_up_at_end"]), 0, "{cell}");
    assert_eq!(c["close_codes"], serde_json::json!({"1011": 5, "1013": 5}));
    // The unanswered 60th message of each connection, and any sent
    // before the close arrived.
    let (sent, lost) = (n(&c["msgs_sent"]), n(&c["msgs_lost"]));
    assert!((10..=20).contains(&lost), "{cell}");
    assert_eq!(n(&c["msgs_ok"]) + lost, sent, "{cell}");
    assert_eq!(n(&c["msgs_timed_out"]), 0, "{cell}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout
            .contains("close codes            1011 x5, 1013 x5  (closed without a close frame: 0)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("lost on close {lost}")),
        "{stdout}"
    );
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn a_slow_server_fills_the_outstanding_bound_and_sends_are_skipped() {
    // Nothing is ever answered: each connection has 5 outstanding, then
    // every further send is skipped until they time out (100 ms) and free
    // their slots.
    let (addr, _tally) = spawn_upstream(Behaviour {
        drop_every: 1,
        message_size: 120,
        ..Behaviour::default()
    });
    let out = out_dir("bound");
    let Some((_, cell)) = run(
        addr,
        "rate = 100\n[load.ack]\ntimeout_ms = 100\nmax_outstanding = 5\n",
        &out,
    ) else {
        return;
    };
    let c = &cell["counts"];
    let (sent, skipped, timed_out) = (
        n(&c["msgs_sent"]),
        n(&c["ack_skipped"]),
        n(&c["msgs_timed_out"]),
    );
    assert_eq!(n(&c["msgs_ok"]), 0, "{cell}");
    assert_eq!(timed_out, sent, "{cell}");
    // 100 sends due per second per connection, at most 5 per ~110 ms taken.
    assert!(near(skipped, sent + skipped, 0.55, 0.1), "{cell}");
    assert_eq!(cell["success_rate"], 0.0);
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn seed_scenarios_validate_and_a_too_small_message_names_the_key() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/scenarios");
    for (file, cells) in [("seed000-ack.toml", 3), ("seed000-ack-size.toml", 3)] {
        let o = Command::new(env!("CARGO_BIN_EXE_bench-client"))
            .arg("validate")
            .arg(dir.join(file))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(stdout.contains(&format!("{cells} cell(s)")), "{stdout}");
        assert!(stdout.contains("mode=ack connections=4000"), "{stdout}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_bench-client"))
        .arg("validate")
        .arg(dir.join("seed000-ack.toml"))
        .args(["--set", "load.message_size=39"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("load.message_size") && stderr.contains("load.ack.send"),
        "{stderr}"
    );
}
