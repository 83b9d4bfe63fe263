//! The `upstream` app against a scripted HTTP backend (std threads, raw
//! HTTP/1.1): `$connect` before the 101, messages in order with their
//! answers, `$disconnect`, the push API across workers, and every failure:
//! backend down, slow, 5xx, garbage, killed mid-run and back. Each failure
//! must give the client its defined answer in bounded time and show in the
//! metrics. `mock-backend` (the user-facing mock) has its own tests.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

/// One request the backend received.
#[derive(Debug, Clone)]
struct Req {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// What the backend does with a request.
enum Reply {
    /// Send these bytes (a whole response).
    Raw(Vec<u8>),
    /// Wait, then send.
    After(Duration, Vec<u8>),
    /// Close the connection without answering.
    Hangup,
}

fn ok(headers: &[(&str, &str)], body: &[u8]) -> Reply {
    Reply::Raw(response(200, headers, body))
}

fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

type Script = dyn Fn(&Req) -> Reply + Send + Sync;

/// A scripted backend: a thread per connection, keep-alive, requests
/// recorded in order of arrival.
struct Backend {
    addr: SocketAddr,
    seen: mpsc::Receiver<Req>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start(script: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Backend {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::new(script))
    }

    fn start_on(addr: SocketAddr, script: Arc<Script>) -> Backend {
        let listener = TcpListener::bind(addr).expect("bind backend");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, seen) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        conns.lock().unwrap().push(s.try_clone().unwrap());
                        let (tx, script) = (tx.clone(), script.clone());
                        std::thread::spawn(move || serve(s, &tx, &*script));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // Killed: every connection goes down with the listener.
            for s in conns.lock().unwrap().iter() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        });
        Backend { addr, seen, stop }
    }

    /// The next request, within 5 s.
    fn next(&self) -> Req {
        self.seen
            .recv_timeout(Duration::from_secs(5))
            .expect("the backend got a request")
    }

    /// Requests that arrive within `wait`.
    fn drain(&self, wait: Duration) -> Vec<Req> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Ok(r) = self
            .seen
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            out.push(r);
        }
        out
    }

    fn kill(&self) {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(mut s: TcpStream, tx: &mpsc::Sender<Req>, script: &Script) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let req = Req {
            path,
            headers,
            body: buf[head_end..head_end + len].to_vec(),
        };
        buf.drain(..head_end + len);
        let reply = script(&req);
        let _ = tx.send(req);
        match reply {
            Reply::Raw(bytes) => {
                if s.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::After(wait, bytes) => {
                std::thread::sleep(wait);
                if s.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::Hangup => {
                let _ = s.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// Two workers, a message-answer route `/up` and a close-answer route
/// `/up-close`, both on backend `app` at `backend`.
fn config(backend: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
workers = 2

[[backends]]
name = "app"
address = "{backend}"
request_timeout_ms = 400
connect_timeout_ms = 300
failures_to_open = 3
open_ms = 300
max_open_ms = 600
{extra}

[[routes]]
path = "/up"
app = "upstream"
[routes.upstream]
backend = "app"

[[routes]]
path = "/up-close"
app = "upstream"
[routes.upstream]
backend = "app"
on_error = "close"

[api]
key = "k"

[admin]
listen = "127.0.0.1:0"
publish_ms = 20
"#
    )
}

/// The usual backend: accepts with user `u-<n>`, acks messages carrying an
/// id, echoes the rest.
fn app_backend() -> Backend {
    Backend::start(|r| match r.path.as_str() {
        "/ws/connect" => ok(&[("X-User-Id", "alice")], b""),
        "/ws/message" => {
            let text = String::from_utf8_lossy(&r.body);
            if text.starts_with('{') {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let ack = format!(r#"{{"type":"ack","id":{}}}"#, v["id"]);
                ok(&[("Content-Type", "application/json")], ack.as_bytes())
            } else {
                let kind = r.header("X-Message-Kind").unwrap_or("text").to_string();
                ok(&[("X-Message-Kind", &kind)], &r.body)
            }
        }
        _ => Reply::Raw(response(204, &[], b"")),
    })
}

fn connect(gw: &Gateway, path: &str) -> Result<Ws, tungstenite::Error> {
    try_ws_connect(gw.addr, gw.url(path), None).map(|(ws, _)| ws)
}

fn read_text(ws: &mut Ws) -> String {
    match ws.read().expect("a message") {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// The HTTP status of a refused upgrade on `path`, and its body.
fn refused(gw: &Gateway, path: &str) -> (u16, String) {
    match connect(gw, path) {
        Err(tungstenite::Error::Http(r)) => (
            r.status().as_u16(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Ok(_) => panic!("{path}: upgraded"),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// The metrics once `ok` holds (workers publish every few milliseconds).
fn metrics_when(gw: &Gateway, what: &str, ok: impl Fn(&Metrics) -> bool) -> Metrics {
    retry(Duration::from_secs(3), || {
        let m = gw.metrics();
        ok(&m).then_some(m)
    })
    .unwrap_or_else(|| panic!("the metrics never showed {what}"))
}

fn api(gw: &Gateway, method: &str, target: &str, body: &[u8]) -> HttpResponse {
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: a\r\nX-API-Key: k\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_exchange(gw.admin.unwrap(), &request)
}

#[test]
fn connect_messages_and_disconnect_reach_the_backend_and_answers_come_back() {
    let backend = Backend::start(|r| match r.path.as_str() {
        "/ws/connect" => ok(
            &[("X-User-Id", "alice"), ("X-Subprotocol", "chat")],
            b"welcome",
        ),
        "/ws/message" => {
            let kind = r.header("X-Message-Kind").unwrap_or("text").to_string();
            ok(
                &[("X-Message-Kind", &kind)],
                &[b"re:".as_slice(), &r.body].concat(),
            )
        }
        _ => Reply::Raw(response(204, &[], b"")),
    });
    let Some(gw) = Gateway::start(&config(backend.addr, "")) else {
        return;
    };
    let mut request = gw.url("/up?room=7").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt, chat".parse().unwrap());
    let (mut ws, resp) = try_ws_connect(gw.addr, request, None).expect("upgrade");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("chat"),
        "the backend's choice"
    );
    let c = backend.next();
    assert_eq!(c.path, "/ws/connect");
    assert_eq!(c.header("X-Gateway-Event"), Some("connect"));
    let v = c.json();
    assert_eq!(v["path"], "/up");
    assert_eq!(v["query"], "room=7");
    assert_eq!(v["subprotocols"], serde_json::json!(["mqtt", "chat"]));
    assert!(v["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    let id = v["connection_id"].as_str().unwrap().to_string();
    assert_eq!(c.header("X-Connection-Id"), Some(id.as_str()));
    assert_eq!(
        read_text(&mut ws),
        "welcome",
        "a 2xx body is the first message"
    );

    ws.send(Message::text("hello")).unwrap();
    assert_eq!(read_text(&mut ws), "re:hello");
    ws.send(Message::binary(vec![0u8, 255])).unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::binary(b"re:\x00\xff".to_vec()),
        "binary stays binary"
    );
    let m = backend.next();
    assert_eq!(m.path, "/ws/message");
    assert_eq!(m.header("X-Connection-Id"), Some(id.as_str()));
    assert_eq!(m.header("X-User-Id"), Some("alice"));
    assert_eq!(m.header("X-Message-Kind"), Some("text"));
    assert_eq!(m.header("X-Route"), Some("/up"));
    assert_eq!(m.body, b"hello");
    assert_eq!(backend.next().header("X-Message-Kind"), Some("binary"));

    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 4000.into(),
        reason: "bye".into(),
    }))
    .unwrap();
    // The client keeps its socket open: $disconnect must not wait for it.
    while ws.read().is_ok() {}
    let t = Instant::now();
    let d = backend.next();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(d.path, "/ws/disconnect");
    assert_eq!(d.header("X-Close-Code"), Some("4000"));
    assert_eq!(d.json()["connection_id"], id);
    assert_eq!(d.json()["user"], "alice");
}

#[test]
fn messages_of_a_connection_reach_the_backend_and_come_back_in_order() {
    // Every answer is slow, so messages pile up behind the one in flight.
    let backend = Backend::start(|r| match r.path.as_str() {
        "/ws/message" => Reply::After(Duration::from_millis(3), response(200, &[], &r.body)),
        _ => Reply::Raw(response(200, &[], b"")),
    });
    let Some(gw) = Gateway::start(&config(backend.addr, "")) else {
        return;
    };
    let mut ws = connect(&gw, "/up").unwrap();
    for i in 0..40 {
        ws.send(Message::text(format!("m{i}"))).unwrap();
    }
    for i in 0..40 {
        assert_eq!(read_text(&mut ws), format!("m{i}"));
    }
    let bodies: Vec<String> = backend
        .drain(Duration::from_millis(200))
        .into_iter()
        .filter(|r| r.path == "/ws/message")
        .map(|r| String::from_utf8(r.body).unwrap())
        .collect();
    assert_eq!(bodies, (0..40).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

#[test]
fn the_backend_refusing_a_connect_is_the_clients_answer() {
    let backend = Backend::start(|r| match r.path.as_str() {
        "/ws/connect" if r.json()["query"] == "token=bad" => Reply::Raw(response(
            401,
            &[("Content-Type", "text/plain")],
            b"bad token",
        )),
        "/ws/connect" => ok(&[("X-Subprotocol", "not-offered")], b""),
        _ => Reply::Raw(response(204, &[], b"")),
    });
    let Some(gw) = Gateway::start(&config(backend.addr, "")) else {
        return;
    };
    assert_eq!(refused(&gw, "/up?token=bad"), (401, "bad token".into()));
    let (status, body) = refused(&gw, "/up");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("subprotocol"), "{body}");
    let all = backend.drain(Duration::from_millis(300));
    assert!(
        all.iter().all(|r| r.path == "/ws/connect"),
        "no $disconnect for refused connections: {all:?}"
    );
    let rejected =
        |m: &Metrics, status| m.sum("gateway_handshake_rejections_total", &[("status", status)]);
    metrics_when(&gw, "a 401 and a 502", |m| {
        rejected(m, "401") == Some(1.0) && rejected(m, "502") == Some(1.0)
    });
}

#[test]
fn a_backend_that_is_down_gives_503_fast_and_opens_the_circuit() {
    // A port nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let Some(gw) = Gateway::start(&config(dead, "")) else {
        return;
    };
    for _ in 0..6 {
        let t = Instant::now();
        let (status, body) = refused(&gw, "/up");
        assert_eq!(status, 503, "{body}");
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
    let unavailable = |m: &Metrics| {
        m.sum(
            "gateway_upstream_requests_total",
            &[("backend", "app"), ("outcome", "unavailable")],
        )
    };
    let m = metrics_when(&gw, "6 unavailable", |m| unavailable(m) == Some(6.0));
    assert!(
        m.sum("gateway_upstream_circuit_opened_total", &[]).unwrap() >= 1.0,
        "three refused connects open the circuit"
    );
    assert!(
        m.sum("gateway_upstream_connect_failures_total", &[])
            .unwrap()
            >= 3.0
    );
}

#[test]
fn slow_garbage_and_5xx_answers_are_defined_answers_per_route() {
    let backend = Backend::start(|r| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        match (r.path.as_str(), body.as_str()) {
            ("/ws/connect", _) if r.json()["query"] == "slow" => {
                Reply::After(Duration::from_millis(1500), response(200, &[], b""))
            }
            ("/ws/connect", _) => ok(&[], b""),
            (_, b) if b.contains("slow") => {
                Reply::After(Duration::from_millis(1500), response(200, &[], b"late"))
            }
            (_, b) if b.contains("garbage") => Reply::Raw(b"SSH-2.0-nonsense\r\n\r\n".to_vec()),
            (_, b) if b.contains("fail") => Reply::Raw(response(500, &[], b"oops")),
            (_, b) if b.contains("hangup") => Reply::Hangup,
            _ => ok(&[], b"fine"),
        }
    });
    let Some(gw) = Gateway::start(&config(backend.addr, "")) else {
        return;
    };
    // $connect: a slow backend is a 504 within the request timeout.
    let t = Instant::now();
    assert_eq!(refused(&gw, "/up?slow").0, 504);
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );

    // Messages on /up: an error message naming the id, the connection stays.
    let mut ws = connect(&gw, "/up").unwrap();
    for (msg, code) in [
        (r#"{"id":1,"do":"slow"}"#, 504),
        (r#"{"id":"two","do":"garbage"}"#, 502),
        (r#"{"id":3,"do":"fail"}"#, 500),
        (r#"{"id":4,"do":"hangup"}"#, 502),
    ] {
        ws.send(Message::text(msg)).unwrap();
        let v: Value = serde_json::from_str(&read_text(&mut ws)).unwrap();
        assert_eq!(v["error"]["code"], code, "{msg}: {v}");
        let id: Value = serde_json::from_str(msg).unwrap();
        assert_eq!(v["error"]["id"], id["id"], "{v}");
    }
    ws.send(Message::text("plain")).unwrap();
    assert_eq!(read_text(&mut ws), "fine", "still served after failures");

    // The same on /up-close: 1011 for a backend error, 1013 for a timeout.
    for (msg, code) in [("fail", 1011), ("garbage", 1011), ("slow", 1013)] {
        let mut ws = connect(&gw, "/up-close").unwrap();
        ws.send(Message::text(msg)).unwrap();
        match ws.read() {
            Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), code, "{msg}"),
            other => panic!("{msg}: {other:?}"),
        }
    }
    let m = metrics_when(&gw, "7 failure answers", |m| {
        m.sum("gateway_upstream_failure_answers_total", &[]) >= Some(7.0)
    });
    for outcome in ["timeout", "bad_response", "5xx"] {
        assert!(
            m.sum("gateway_upstream_requests_total", &[("outcome", outcome)])
                .unwrap()
                >= 1.0,
            "{outcome} counted"
        );
    }
}

#[test]
fn a_backend_killed_mid_run_fails_fast_then_recovers() {
    let backend = app_backend();
    let addr = backend.addr;
    let Some(gw) = Gateway::start(&config(addr, "")) else {
        return;
    };
    let mut ws = connect(&gw, "/up").unwrap();
    ws.send(Message::text(r#"{"id":1}"#)).unwrap();
    assert!(read_text(&mut ws).contains(r#""type":"ack""#));
    backend.kill();
    drop(backend);
    // Every message still gets an answer, and fast (connects are refused;
    // then the circuit is open).
    for id in 2..12 {
        let t = Instant::now();
        ws.send(Message::text(format!(r#"{{"id":{id}}}"#))).unwrap();
        let v: Value = serde_json::from_str(&read_text(&mut ws)).unwrap();
        assert_eq!(v["error"]["code"], 503, "{v}");
        assert_eq!(v["error"]["id"], id);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    // The backend comes back on the same port: after the open period the
    // probe succeeds and messages flow again.
    let _backend = Backend::start_on(
        addr,
        Arc::new(|r: &Req| match r.path.as_str() {
            "/ws/message" => ok(&[], b"back"),
            _ => Reply::Raw(response(204, &[], b"")),
        }),
    );
    let back = retry(Duration::from_secs(5), || {
        ws.send(Message::text("again?")).unwrap();
        (read_text(&mut ws) == "back").then_some(())
    });
    assert!(back.is_some(), "recovered");
    metrics_when(&gw, "the circuit opening", |m| {
        m.sum("gateway_upstream_circuit_opened_total", &[]) >= Some(1.0)
    });
}

#[test]
fn the_push_api_reaches_connections_on_any_worker() {
    let backend = app_backend();
    let Some(gw) = Gateway::start(&config(backend.addr, "")) else {
        return;
    };
    // Connections until both workers hold some (SO_REUSEPORT spreads them
    // by a hash of the addresses: six landed on one worker 3 % of the time).
    let mut clients: Vec<(Ws, String)> = Vec::new();
    let mut workers = std::collections::BTreeSet::new();
    while workers.len() < 2 && clients.len() < 64 {
        let ws = connect(&gw, "/up").unwrap();
        let id = backend.next().json()["connection_id"]
            .as_str()
            .unwrap()
            .to_string();
        workers.insert(id[..2].to_string());
        clients.push((ws, id));
    }
    assert_eq!(workers.len(), 2, "connections on both workers: {workers:?}");
    for (ws, id) in &mut clients {
        let r = api(&gw, "POST", &format!("/api/connections/{id}"), b"pushed");
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert_eq!(read_text(ws), "pushed");
        let r = api(&gw, "GET", &format!("/api/connections/{id}"), b"");
        assert_eq!(r.status, 200);
        let info: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(info["connection_id"], id.as_str());
        assert_eq!(info["user"], "alice");
        assert_eq!(info["route"], "/up");
    }
    let pushed = 2.0 * clients.len() as f64;
    let (mut ws, id) = clients.pop().unwrap();
    let r = api(
        &gw,
        "DELETE",
        &format!("/api/connections/{id}?code=4001&reason=kicked"),
        b"",
    );
    assert_eq!(r.status, 204);
    match ws.read() {
        Ok(Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 4001);
            assert_eq!(f.reason, "kicked");
        }
        other => panic!("{other:?}"),
    }
    while ws.read().is_ok() {}
    let gone = retry(Duration::from_secs(2), || {
        let r = api(&gw, "POST", &format!("/api/connections/{id}"), b"x");
        (r.status == 410).then_some(())
    });
    assert!(gone.is_some(), "a closed connection is gone");
    let binary = api(&gw, "POST", "/api/connections/zz", b"");
    assert_eq!(binary.status, 400);
    let m = gw.metrics();
    let api_count = |status| {
        m.get(
            "gateway_api_requests_total",
            &[("endpoint", "connections"), ("status", status)],
        )
    };
    assert!(api_count("200") >= pushed);
    assert!(api_count("410") >= 1.0);
}

/// A Centrifugo-protocol exchange: sends `lines` in one frame, returns the
/// JSON lines received until `want` of them arrived.
fn centrifuge(ws: &mut Ws, lines: &[Value], want: usize) -> Vec<Value> {
    let frame: Vec<String> = lines.iter().map(Value::to_string).collect();
    ws.send(Message::text(frame.join("\n"))).unwrap();
    let mut got = Vec::new();
    while got.len() < want {
        match ws.read() {
            Ok(Message::Text(t)) => {
                for l in t.split('\n') {
                    let v: Value = serde_json::from_str(l).unwrap();
                    if v != serde_json::json!({}) {
                        got.push(v);
                    }
                }
            }
            Ok(Message::Close(f)) => {
                got.push(serde_json::json!({ "closed": f.map(|f| u16::from(f.code)) }));
                return got;
            }
            other => panic!("{other:?}"),
        }
    }
    got
}

#[test]
fn centrifugo_proxies_decide_connect_rpc_publish_and_subscribe() {
    let backend = Backend::start(|r| {
        let v = r.json();
        let answer = match r.path.as_str() {
            "/c/connect" if v["data"]["let_in"] == true => serde_json::json!({"result": {
                "user": "56", "channels": ["news"], "data": {"welcome": true}}}),
            "/c/connect" => serde_json::json!({"error": {"code": 4001, "message": "who are you"}}),
            "/c/rpc" if v["method"] == "kick" => {
                serde_json::json!({"disconnect": {"code": 4500, "reason": "kicked"}})
            }
            "/c/rpc" => {
                serde_json::json!({"result": {"data": {"echo": v["data"], "user": v["user"]}}})
            }
            "/c/publish" => serde_json::json!({"result": {"data": {"rewritten": v["data"]}}}),
            "/c/subscribe" if v["channel"] == "secret" => {
                serde_json::json!({"error": {"code": 103, "message": "permission denied"}})
            }
            "/c/subscribe" => serde_json::json!({"result": {"data": {"sub": v["channel"]}}}),
            _ => serde_json::json!({}),
        };
        ok(
            &[("Content-Type", "application/json")],
            answer.to_string().as_bytes(),
        )
    });
    let extra = r#"
[[routes]]
path = "/connection/websocket"
app = "pubsub"

[pubsub.proxy]
backend = "app"
connect_path = "/c/connect"
rpc_path = "/c/rpc"
publish_path = "/c/publish"
subscribe_path = "/c/subscribe"
"#;
    let config = format!("{}{extra}", config(backend.addr, ""));
    let Some(gw) = Gateway::start(&config) else {
        return;
    };
    let mut ws = connect(&gw, "/connection/websocket").unwrap();
    // Refused by the backend: its error is the connect's reply.
    let got = centrifuge(
        &mut ws,
        &[serde_json::json!({"id": 1, "connect": {"data": {}}})],
        1,
    );
    assert_eq!(got[0]["error"]["code"], 4001, "{got:?}");
    drop(ws);

    // Accepted, with a subscribe pipelined behind the connect (as
    // centrifuge-js does): it waits for the connect's answer.
    let mut ws = connect(&gw, "/connection/websocket").unwrap();
    let got = centrifuge(
        &mut ws,
        &[
            serde_json::json!({"id": 1, "connect": {"name": "test", "data": {"let_in": true}}}),
            serde_json::json!({"id": 2, "subscribe": {"channel": "room"}}),
        ],
        2,
    );
    assert_eq!(got[0]["id"], 1, "{got:?}");
    assert_eq!(
        got[0]["connect"]["data"],
        serde_json::json!({"welcome": true})
    );
    assert!(got[0]["connect"]["subs"]["news"].is_object(), "{got:?}");
    assert_eq!(
        got[1]["subscribe"]["data"],
        serde_json::json!({"sub": "room"})
    );
    let refused = backend.next();
    assert_eq!(refused.json()["data"], serde_json::json!({}));
    let c = backend.next();
    assert_eq!(c.path, "/c/connect");
    let body = c.json();
    assert_eq!(body["transport"], "websocket");
    assert_eq!(body["name"], "test");
    assert!(body["client"].as_str().is_some_and(|s| s.len() == 36));

    let got = centrifuge(
        &mut ws,
        &[
            serde_json::json!({"id": 3, "rpc": {"method": "echo", "data": [1, 2]}}),
            serde_json::json!({"id": 4, "subscribe": {"channel": "secret"}}),
            serde_json::json!({"id": 5, "publish": {"channel": "room", "data": {"t": 1}}}),
        ],
        4,
    );
    let by_id = |id: u32| got.iter().find(|v| v["id"] == id).cloned();
    assert_eq!(
        by_id(3).unwrap()["rpc"]["data"],
        serde_json::json!({"echo": [1, 2], "user": "56"})
    );
    assert_eq!(by_id(4).unwrap()["error"]["code"], 103);
    assert!(by_id(5).unwrap()["publish"].is_object());
    let publication = got.iter().find(|v| v["push"]["pub"].is_object()).unwrap();
    assert_eq!(
        publication["push"]["pub"]["data"],
        serde_json::json!({"rewritten": {"t": 1}}),
        "the publish proxy rewrote it"
    );
    // A disconnect verdict closes with its code.
    let got = centrifuge(
        &mut ws,
        &[serde_json::json!({"id": 6, "rpc": {"method": "kick"}})],
        1,
    );
    assert_eq!(got.last().unwrap()["closed"], 4500, "{got:?}");
}

#[test]
fn a_proxy_backend_that_is_down_is_a_temporary_internal_error() {
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = r#"
[[routes]]
path = "/connection/websocket"
app = "pubsub"

[pubsub.proxy]
backend = "app"
connect_path = "/c/connect"
"#;
    let config = format!("{}{extra}", config(dead, ""));
    let Some(gw) = Gateway::start(&config) else {
        return;
    };
    let mut ws = connect(&gw, "/connection/websocket").unwrap();
    let got = centrifuge(&mut ws, &[serde_json::json!({"id": 1, "connect": {}})], 1);
    assert_eq!(got[0]["error"]["code"], 100, "{got:?}");
    assert_eq!(got[0]["error"]["temporary"], true);
}

#[test]
fn shutdown_tells_the_backend_about_every_connection_it_closes() {
    let backend = app_backend();
    let Some(mut gw) = Gateway::start(&config(backend.addr, "[timeouts]\ndrain_ms = 2000\n"))
    else {
        return;
    };
    let mut clients: Vec<Ws> = (0..4).map(|_| connect(&gw, "/up").unwrap()).collect();
    for ws in &mut clients {
        ws.send(Message::text(r#"{"id":1}"#)).unwrap();
        assert!(read_text(ws).contains("ack"));
    }
    let connected: Vec<Req> = backend.drain(Duration::from_millis(200));
    assert_eq!(
        connected.iter().filter(|r| r.path == "/ws/connect").count(),
        4
    );
    let t = Instant::now();
    gw.sigterm();
    for ws in &mut clients {
        match ws.read() {
            Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("{other:?}"),
        }
    }
    drop(clients);
    let gone: Vec<Req> = backend.drain(Duration::from_millis(1000));
    let codes: Vec<Option<&str>> = gone
        .iter()
        .filter(|r| r.path == "/ws/disconnect")
        .map(|r| r.header("X-Close-Code"))
        .collect();
    assert_eq!(codes, vec![Some("1001"); 4], "{gone:?}");
    let status = gw.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success());
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}
