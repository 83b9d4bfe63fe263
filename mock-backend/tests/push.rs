//! End to end: `--push-rate` against a fake gateway API (a std listener in
//! the test) that records every push and answers 200 for live connections
//! and 410 for gone ones.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Mock;

/// One push as the fake API saw it.
#[derive(Debug)]
struct Seen {
    path: String,
    key: Option<String>,
    body: serde_json::Value,
    conn: usize,
}

/// Serves keep-alive connections; ids starting with `gone` get 410.
fn fake_api(listener: TcpListener, tx: mpsc::Sender<Seen>) {
    for (conn, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { return };
        let tx = tx.clone();
        std::thread::spawn(move || serve(stream, conn, &tx));
    }
}

fn serve(stream: TcpStream, conn: usize, tx: &mpsc::Sender<Seen>) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let (mut len, mut key) = (0, None);
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => len = value.trim().parse().unwrap(),
                "x-api-key" => key = Some(value.trim().to_string()),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let gone = path.starts_with("/api/connections/gone");
        let answer: &[u8] = if gone {
            b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        };
        w.write_all(answer).unwrap();
        let _ = tx.send(Seen {
            path,
            key,
            body: serde_json::from_slice(&body).unwrap(),
            conn,
        });
    }
}

#[test]
fn pushes_spread_over_connected_ids_and_stop_when_they_go() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || fake_api(listener, tx));
    let mock = Mock::start(&[
        "--push-rate",
        "200",
        "--gateway-api",
        &api,
        "--api-key",
        "dev",
    ]);
    // Nobody connected yet: nothing is pushed.
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    for id in ["00000000000000a1", "00000000000000a2", "gone000000000001"] {
        let r = mock.post("/ws/connect", &[("X-Connection-Id", id)], "{}");
        assert_eq!(r.status, 200);
    }
    // A refused connect is not pushed to.
    let r = mock.post(
        "/ws/connect",
        &[("X-Connection-Id", "00000000000000ff")],
        r#"{"query":"deny=1"}"#,
    );
    assert_eq!(r.status, 403);
    let start = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 60 {
        seen.push(rx.recv_timeout(Duration::from_secs(5)).expect("a push"));
    }
    let took = start.elapsed();
    // 200/s: 60 pushes take ~0.3 s, not all at once.
    assert!(took > Duration::from_millis(150), "{took:?}");
    let mut seqs = Vec::new();
    for s in &seen {
        assert_eq!(s.key.as_deref(), Some("dev"));
        assert_eq!(s.body["type"], "push");
        assert!(s.body["t"].as_u64().unwrap() > 1_600_000_000_000);
        seqs.push(s.body["seq"].as_u64().unwrap());
        assert_ne!(s.path, "/api/connections/00000000000000ff");
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let to = |id: &str| {
        seen.iter()
            .filter(|s| s.path == format!("/api/connections/{id}"))
            .count()
    };
    // The 410 made the mock forget that id; the others share the pushes.
    assert_eq!(to("gone000000000001"), 1);
    assert!(to("00000000000000a1") >= 25, "{seen:?}");
    assert!(to("00000000000000a2") >= 25, "{seen:?}");
    // Keep-alive: one connection carried them all.
    assert!(seen.iter().all(|s| s.conn == seen[0].conn));
    // After a disconnect, only the other id is pushed to.
    let r = mock.post(
        "/ws/disconnect",
        &[],
        r#"{"connection_id":"00000000000000a1","route":"/upstream","code":1000,"reason":""}"#,
    );
    assert_eq!(r.status, 204);
    // Drain what was in flight, then look at the next ones.
    std::thread::sleep(Duration::from_millis(50));
    while rx.try_recv().is_ok() {}
    for _ in 0..10 {
        let s = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(s.path, "/api/connections/00000000000000a2");
    }
    let stats = mock.stats();
    assert!(stats["pushes_sent"].as_u64().unwrap() >= 69, "{stats}");
    assert_eq!(stats["pushes_gone"], 1);
    assert_eq!(stats["pushes_failed"], 0);
}

#[test]
fn pushes_to_an_api_that_is_down_are_counted_as_failed() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let mock = Mock::start(&["--push-rate", "50", "--gateway-api", &api]);
    assert_eq!(
        mock.post("/ws/connect", &[("X-Connection-Id", "abc")], "")
            .status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let failed = mock.stats()["pushes_failed"].as_u64().unwrap();
        if failed >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no failed push counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(mock.stats()["pushes_sent"], 0);
}
