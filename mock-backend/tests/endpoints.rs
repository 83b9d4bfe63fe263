//! End to end: the binary on a free port, spoken to with std `TcpStream`s.
//! Covers the behaviour of `/work/notes/upstream-protocol.md`'s "mock-backend
//! behaviour" section, the HTTP/1.1 framing (keep-alive, pipelining,
//! chunked, refusals), latency, failures, `/stats` and exit.

mod common;

use std::io::{BufRead, Read};
use std::time::{Duration, Instant};

use common::{post, Mock};

const CONNECT_BODY: &str = r#"{"connection_id":"00000001000000a3","route":"/upstream","method":"GET","path":"/upstream","query":"room=1","remote_addr":"127.0.0.1:53211","headers":[["Host","127.0.0.1:8080"]],"subprotocols":[]}"#;

#[test]
fn connect_accepts_with_a_user_id() {
    let mock = Mock::start(&[]);
    let r = mock.post(
        "/ws/connect",
        &[
            ("X-Gateway-Event", "connect"),
            ("X-Connection-Id", "00000001000000a3"),
            ("Content-Type", "application/json"),
        ],
        CONNECT_BODY,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-User-Id"), Some("mock-1"));
    assert!(r.body.is_empty());
    assert!(r.keep_alive);
    let r = mock.post("/ws/connect", &[], CONNECT_BODY);
    assert_eq!(r.header("X-User-Id"), Some("mock-2"));
    // The client's `user` query parameter wins.
    let r = mock.post("/ws/connect", &[], r#"{"query":"room=1&user=alice%20b"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-User-Id"), Some("alice b"));
}

#[test]
fn connect_with_deny_is_refused() {
    let mock = Mock::start(&[]);
    let r = mock.post("/ws/connect", &[], r#"{"query":"room=1&deny=1"}"#);
    assert_eq!(r.status, 403);
    assert!(r.header("X-User-Id").is_none());
    // deny=0 is no refusal; a query on the hook URL counts as well.
    assert_eq!(
        mock.post("/ws/connect", &[], r#"{"query":"deny=0"}"#)
            .status,
        200
    );
    assert_eq!(mock.post("/ws/connect?deny=1", &[], "").status, 403);
    let stats = mock.stats();
    assert_eq!(stats["connect"], 3);
    assert_eq!(stats["connect_denied"], 2);
}

#[test]
fn message_with_an_id_is_acked_with_that_id() {
    let mock = Mock::start(&[]);
    let text = [
        ("X-Message-Kind", "text"),
        ("Content-Type", "text/plain; charset=utf-8"),
    ];
    let r = mock.post(
        "/ws/message",
        &text,
        r#"{"type":"msg","id":12345,"pad":"xxxxxxxxxx"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!({"type":"ack","id":12345}));
    // The id goes back as sent, whatever its JSON type.
    let r = mock.post("/ws/message", &text, r#"{"id":"a-\"7\"","t":1.5}"#);
    assert_eq!(r.text(), r#"{"type":"ack","id":"a-\"7\""}"#);
    let r = mock.post("/ws/message", &text, r#"{"id":{"n":[1,2]}}"#);
    assert_eq!(r.json()["id"], serde_json::json!({"n":[1,2]}));
    assert_eq!(mock.stats()["acks_sent"], 3);
}

#[test]
fn client_acks_and_other_messages_get_204() {
    let mock = Mock::start(&[]);
    let r = mock.post("/ws/message", &[], r#"{"type":"ack","id":7}"#);
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty() && r.header("Content-Length").is_none());
    for body in [r#"{"type":"msg"}"#, "hello", "[1,2]", r#"{"id":1"#, ""] {
        let r = mock.post("/ws/message", &[], body);
        assert_eq!(r.status, 204, "{body:?}");
    }
    // Binary messages are never looked into.
    let r = mock.post(
        "/ws/message",
        &[("X-Message-Kind", "binary")],
        r#"{"id":1}"#,
    );
    assert_eq!(r.status, 204);
    let stats = mock.stats();
    assert_eq!(stats["client_acks"], 1);
    assert_eq!(stats["acks_sent"], 0);
    assert_eq!(stats["message"], 7);
}

#[test]
fn custom_fields_and_echo() {
    let mock = Mock::start(&[
        "--id-field",
        "rid",
        "--type-field",
        "kind",
        "--ack-value",
        "got",
        "--echo",
    ]);
    let r = mock.post("/ws/message", &[], r#"{"rid":3,"id":9}"#);
    assert_eq!(r.json(), serde_json::json!({"type":"ack","id":3}));
    let r = mock.post("/ws/message", &[], r#"{"rid":3,"kind":"got"}"#);
    assert_eq!(r.status, 204);
    // Not id-carrying: echoed with its kind.
    let r = mock.post("/ws/message", &[("X-Message-Kind", "text")], "plain words");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "plain words");
    assert_eq!(r.header("X-Message-Kind"), Some("text"));
    let r = mock.post(
        "/ws/message",
        &[
            ("X-Message-Kind", "binary"),
            ("Content-Type", "application/octet-stream"),
        ],
        "\u{1}\u{2}",
    );
    assert_eq!(r.body, b"\x01\x02");
    assert_eq!(r.header("X-Message-Kind"), Some("binary"));
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(mock.stats()["echoes"], 2);
}

#[test]
fn disconnect_is_204() {
    let mock = Mock::start(&[]);
    let r = mock.post(
        "/ws/disconnect",
        &[("X-Connection-Id", "00000001000000a3")],
        r#"{"connection_id":"00000001000000a3","route":"/upstream","code":1000,"reason":"bye"}"#,
    );
    assert_eq!(r.status, 204);
    assert!(r.keep_alive);
    // A body that is not JSON is a 400, but the connection stays usable.
    let mut c = mock.connect();
    c.send(&post("/ws/disconnect", &[], "{nope"));
    let r = c.read().unwrap();
    assert_eq!(r.status, 400);
    c.send(&post("/ws/disconnect", &[], ""));
    assert_eq!(c.read().unwrap().status, 204);
    let stats = mock.stats();
    assert_eq!(stats["disconnect"], 3);
    assert_eq!(stats["invalid_body"], 1);
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    // Random per-request latency: later requests may be due earlier, yet
    // answers must come in request order.
    let mock = Mock::start(&["--latency", "uniform:0ms..20ms"]);
    let mut c = mock.connect();
    let mut wire = Vec::new();
    for id in 0..20 {
        wire.extend(post("/ws/message", &[], &format!(r#"{{"id":{id}}}"#)));
    }
    wire.extend(post("/ws/message", &[], r#"{"type":"ack","id":1}"#));
    wire.extend(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    c.send(&wire);
    for id in 0..20 {
        let r = c.read().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["id"], id, "response {id} out of order");
    }
    assert_eq!(c.read().unwrap().status, 204);
    assert_eq!(c.read().unwrap().json()["message"], 21);
    // Still open for more, one at a time.
    c.send(&post("/ws/message", &[], r#"{"id":"last"}"#));
    assert_eq!(c.read().unwrap().json()["id"], "last");
}

#[test]
fn requests_split_across_writes() {
    let mock = Mock::start(&[]);
    let mut c = mock.connect();
    let wire = post("/ws/message", &[], r#"{"id":"split","pad":"0123456789"}"#);
    for byte in &wire {
        c.send(&[*byte]);
    }
    assert_eq!(c.read().unwrap().json()["id"], "split");
}

#[test]
fn chunked_request_body() {
    let mock = Mock::start(&[]);
    let mut c = mock.connect();
    c.send(
        b"POST /ws/message HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\n{\"id\r\n",
    );
    std::thread::sleep(Duration::from_millis(20));
    c.send(b"7;ext=1\r\n\":\"ch\"}\r\n0\r\nTrailer: x\r\n\r\n");
    let r = c.read().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"type":"ack","id":"ch"}));
    assert!(r.keep_alive);
}

#[test]
fn expect_continue_gets_an_interim_response() {
    let mock = Mock::start(&[]);
    let mut c = mock.connect();
    c.send(
        b"POST /ws/message HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 8\r\n\r\n",
    );
    assert_eq!(c.read().unwrap().status, 100);
    c.send(b"{\"id\":5}");
    assert_eq!(c.read().unwrap().json()["id"], 5);
}

#[test]
fn malformed_requests_get_a_precise_4xx_and_close() {
    let mock = Mock::start(&[]);
    for (wire, status) in [
        (&b"\x16\x03\x01\x02\x00garbage\r\n\r\n"[..], 400),
        (
            b"POST /ws/message HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            400,
        ),
        (
            b"POST /ws/message HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            b"POST /ws/message HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        (
            b"POST /ws/message HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            413,
        ),
    ] {
        let mut c = mock.connect();
        c.send(wire);
        let r = c.read().unwrap();
        assert_eq!(r.status, status, "{:?}", wire.escape_ascii());
        assert!(!r.keep_alive);
        assert!(c.at_eof(), "connection left open");
    }
    // A refusal after a good pipelined request: the good one is answered first.
    let mut c = mock.connect();
    let mut wire = post("/ws/message", &[], r#"{"id":1}"#);
    wire.extend(b"BAD\r\n\r\n");
    c.send(&wire);
    assert_eq!(c.read().unwrap().status, 200);
    assert_eq!(c.read().unwrap().status, 400);
    assert!(c.at_eof());
    assert_eq!(mock.stats()["bad_request"], 6);
}

#[test]
fn connection_close_is_honoured() {
    let mock = Mock::start(&[]);
    let mut c = mock.connect();
    c.send(&post(
        "/ws/message",
        &[("Connection", "close")],
        r#"{"id":1}"#,
    ));
    let r = c.read().unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.keep_alive);
    assert!(c.at_eof());
}

#[test]
fn unknown_paths_and_methods() {
    let mock = Mock::start(&[]);
    assert_eq!(mock.post("/nope", &[], "").status, 404);
    let mut c = mock.connect();
    c.send(b"GET /ws/message HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read().unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("POST"));
    assert_eq!(mock.post("/stats", &[], "").status, 405);
    assert_eq!(mock.stats()["not_found"], 3);
}

#[test]
fn failure_rate_one_always_fails() {
    let mock = Mock::start(&["--failure-rate", "1.0"]);
    for path in ["/ws/connect", "/ws/message", "/centrifugo/rpc"] {
        let r = mock.post(path, &[], r#"{"id":1}"#);
        assert_eq!(r.status, 500, "{path}");
        assert!(r.keep_alive);
    }
    // /stats is never failed.
    assert_eq!(mock.stats()["failures"], 3);
}

#[test]
fn failure_rate_is_roughly_respected() {
    let mock = Mock::start(&["--failure-rate", "0.25", "--seed", "3"]);
    let mut c = mock.connect();
    let mut wire = Vec::new();
    for id in 0..400 {
        wire.extend(post("/ws/message", &[], &format!(r#"{{"id":{id}}}"#)));
    }
    c.send(&wire);
    let fails = (0..400).filter(|_| c.read().unwrap().status == 500).count();
    assert!((60..140).contains(&fails), "{fails} of 400 failed");
}

#[test]
fn fixed_latency_delays_every_answer() {
    let mock = Mock::start(&["--latency", "fixed:50ms"]);
    let mut c = mock.connect();
    for id in 0..3 {
        let t = Instant::now();
        c.send(&post("/ws/message", &[], &format!(r#"{{"id":{id}}}"#)));
        let r = c.read().unwrap();
        let took = t.elapsed();
        assert_eq!(r.json()["id"], id);
        assert!(took >= Duration::from_millis(50), "answered after {took:?}");
        assert!(took < Duration::from_millis(500), "answered after {took:?}");
    }
    // /stats is not delayed.
    let t = Instant::now();
    mock.stats();
    assert!(t.elapsed() < Duration::from_millis(50));
}

#[test]
fn short_latencies_are_not_rounded_to_the_timer_wheel() {
    // 2 ms each, one after the other: 40 of them take ~80 ms here, where
    // the engine's 10 ms timer slots would round each up to the next slot
    // boundary (2-12 ms, ~280 ms in all).
    let mock = Mock::start(&["--latency", "fixed:2ms"]);
    let mut c = mock.connect();
    let t = Instant::now();
    for id in 0..40 {
        c.send(&post("/ws/message", &[], &format!(r#"{{"id":{id}}}"#)));
        assert_eq!(c.read().unwrap().json()["id"], id);
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(80), "{took:?}");
    assert!(took < Duration::from_millis(200), "{took:?}");
}

#[test]
fn centrifugo_proxy_shapes() {
    let mock = Mock::start(&[]);
    let base = r#""client":"9a1b","transport":"websocket","protocol":"json","encoding":"json""#;
    let r = mock.post(
        "/centrifugo/connect",
        &[("Content-Type", "application/json")],
        &format!(r#"{{{base},"name":"js","version":"1","data":{{"user":"56"}}}}"#),
    );
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({"result":{"user":"56","expire_at":0}})
    );
    let r = mock.post("/centrifugo/connect", &[], &format!("{{{base}}}"));
    let user = r.json()["result"]["user"].as_str().unwrap().to_string();
    assert!(user.starts_with("mock-"), "{user}");
    let r = mock.post(
        "/centrifugo/connect",
        &[],
        &format!(r#"{{{base},"data":{{"user":7,"channels":["news"]}}}}"#),
    );
    assert_eq!(
        r.json(),
        serde_json::json!({"result":{"user":"7","expire_at":0,"channels":["news"]}})
    );
    let r = mock.post(
        "/centrifugo/connect",
        &[],
        &format!(r#"{{{base},"data":{{"reject":"disconnect"}}}}"#),
    );
    assert_eq!(r.json()["disconnect"]["code"], 4500);
    let r = mock.post(
        "/centrifugo/rpc",
        &[],
        &format!(r#"{{{base},"user":"56","method":"sum","data":{{"a":[1,2]}}}}"#),
    );
    assert_eq!(r.json(), serde_json::json!({"result":{"data":{"a":[1,2]}}}));
    let r = mock.post(
        "/centrifugo/rpc",
        &[],
        &format!(r#"{{{base},"user":"56","method":"mock.error"}}"#),
    );
    assert_eq!(r.json()["error"]["code"], 1000);
    let r = mock.post(
        "/centrifugo/publish",
        &[],
        &format!(r#"{{{base},"user":"56","channel":"news","data":{{"x":1}}}}"#),
    );
    assert_eq!(r.json(), serde_json::json!({"result":{}}));
    let r = mock.post(
        "/centrifugo/subscribe",
        &[],
        &format!(r#"{{{base},"user":"56","channel":"news"}}"#),
    );
    assert_eq!(r.json(), serde_json::json!({"result":{}}));
    let r = mock.post(
        "/centrifugo/subscribe",
        &[],
        &format!(r#"{{{base},"user":"56","channel":"forbidden:x"}}"#),
    );
    assert_eq!(
        r.json(),
        serde_json::json!({"error":{"code":103,"message":"permission denied"}})
    );
    let r = mock.post("/centrifugo/publish", &[], "not json");
    assert_eq!(r.status, 400);
    let stats = mock.stats();
    assert_eq!(stats["proxy_connect"], 4);
    assert_eq!(stats["proxy_rpc"], 2);
    assert_eq!(stats["proxy_publish"], 2);
    assert_eq!(stats["proxy_subscribe"], 2);
}

#[test]
fn stats_counts_and_the_exit_line() {
    let mut mock = Mock::start(&["--stats-interval-ms", "100"]);
    mock.post("/ws/connect", &[], "");
    mock.post("/ws/message", &[], r#"{"id":1}"#);
    mock.post("/ws/message", &[], r#"{"id":1,"type":"ack"}"#);
    mock.post("/ws/disconnect", &[], "");
    let s = mock.stats();
    assert_eq!(s["requests"], 5);
    assert_eq!(
        (
            &s["connect"],
            &s["message"],
            &s["disconnect"],
            &s["acks_sent"],
            &s["client_acks"],
            &s["stats"]
        ),
        (
            &1.into(),
            &2.into(),
            &1.into(),
            &1.into(),
            &1.into(),
            &1.into()
        )
    );
    // A periodic line comes within the interval.
    let mut line = String::new();
    mock.stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("stats requests="), "{line:?}");
    // SIGTERM: exit 0 with a last line carrying the totals.
    // SAFETY: plain syscall on the pid of the child this test started.
    let rc = unsafe { libc::kill(mock.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = mock.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    mock.stdout.read_to_string(&mut rest).unwrap();
    let last = rest.lines().last().unwrap_or(&line).to_string();
    assert!(last.contains("requests=5 "), "{last:?}");
    assert!(last.contains(" acks_sent=1 "), "{last:?}");
}

#[test]
fn bad_flags_name_the_flag() {
    for (args, flag) in [
        (&["--latency", "gauss:1"][..], "--latency"),
        (&["--failure-rate", "2"], "--failure-rate"),
        (&["--push-rate", "10"], "--gateway-api"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mock-backend"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}
