//! The pubsub app over real WebSockets (tungstenite) and the server API
//! over raw HTTP: the Centrifugo protocol's commands, replies, pushes,
//! errors and disconnects, and fan-out across two workers. The real SDKs
//! are exercised by `ci/sdk-tests.sh`; this checks the wire exactly.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

const SECRET: &str = "test-secret";

/// Two workers, anonymous access to channels without a namespace, a
/// `chat` namespace for subscribers only, a `locked` namespace.
fn config(extra: &str) -> String {
    format!(
        r#"
[server]
workers = 2

[[routes]]
path = "/connection/websocket"
app = "pubsub"

[[routes]]
path = "/echo"
app = "echo"

[pubsub]
allow_anonymous = true
token_hmac_secret = "{SECRET}"
channel_limit = 3

[pubsub.without_namespace]
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true

[[pubsub.namespaces]]
name = "chat"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_subscriber = true

[[pubsub.namespaces]]
name = "locked"

[api]
key = "k"

[admin]
listen = "127.0.0.1:0"
publish_ms = 20
{extra}
"#
    )
}

/// A protocol client: sends commands, collects replies and pushes.
struct Client {
    ws: Ws,
    next_id: u32,
    /// Lines received and not yet taken.
    inbox: Vec<Value>,
}

impl Client {
    fn open(gw: &Gateway) -> Client {
        let (ws, _) = try_ws_connect(gw.addr, gw.url("/connection/websocket"), None)
            .expect("upgrade on the pubsub route");
        Client {
            ws,
            next_id: 1,
            inbox: Vec::new(),
        }
    }

    /// Sends one command (the id is added) and returns its id.
    fn send(&mut self, method: &str, params: Value) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({ "id": id, method: params }).to_string();
        self.ws.send(Message::text(line)).expect("send command");
        id
    }

    /// Reads frames until `pick` accepts a line (others are kept).
    fn wait(&mut self, what: &str, mut pick: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(i) = self.inbox.iter().position(&mut pick) {
                return self.inbox.remove(i);
            }
            assert!(Instant::now() < deadline, "no {what} in {:?}", self.inbox);
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    for line in t.split('\n') {
                        let v: Value = serde_json::from_str(line)
                            .unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
                        self.inbox.push(v);
                    }
                }
                Ok(other) => panic!("unexpected {other:?} waiting for {what}"),
                Err(e) => panic!("connection ended waiting for {what}: {e}"),
            }
        }
    }

    fn reply(&mut self, id: u32) -> Value {
        self.wait(&format!("reply {id}"), |v| v["id"] == id)
    }

    /// Sends and returns the reply.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.reply(id)
    }

    fn connect(gw: &Gateway, token: Option<&str>) -> (Client, Value) {
        let mut c = Client::open(gw);
        let params = match token {
            Some(t) => json!({ "token": t }),
            None => json!({}),
        };
        let r = c.call("connect", params);
        (c, r)
    }

    fn publication(&mut self, channel: &str) -> Value {
        self.wait(&format!("publication on {channel}"), |v| {
            v["push"]["channel"] == channel && !v["push"]["pub"].is_null()
        })["push"]["pub"]
            .clone()
    }

    /// Expects the server to close with `code`.
    fn expect_close(mut self, code: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "no close {code}");
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => {
                    assert_eq!(u16::from(f.code), code, "close reason {:?}", f.reason);
                    assert!(!f.reason.is_empty(), "SDKs need a close reason");
                    return;
                }
                Ok(Message::Text(_)) => continue,
                other => panic!("expected close {code}, got {other:?}"),
            }
        }
    }
}

fn token(claims: Value) -> String {
    centrifuge_proto::token::sign(&claims.to_string(), SECRET.as_bytes())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `POST /api/{endpoint}` with the key; returns (status, parsed body).
fn api(admin: SocketAddr, endpoint: &str, body: &str, key: Option<&str>) -> (u16, Value) {
    let auth = key.map_or(String::new(), |k| format!("X-API-Key: {k}\r\n"));
    let request = format!(
        "POST /api/{endpoint} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = http_exchange(admin, request.as_bytes());
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

#[test]
fn anonymous_client_subscribes_and_gets_api_publications_on_both_workers() {
    let Some(gw) = Gateway::start(&config("")) else {
        return;
    };
    let admin = gw.admin.unwrap();
    let mut clients: Vec<Client> = (0..12)
        .map(|_| {
            let (mut c, r) = Client::connect(&gw, None);
            let res = &r["connect"];
            assert!(res["client"].as_str().is_some_and(|s| s.len() == 36), "{r}");
            assert_eq!(res["ping"], 25);
            assert_eq!(res["pong"], true);
            assert_eq!(
                c.call("subscribe", json!({"channel": "news"})),
                json!({"id": 2, "subscribe": {}})
            );
            c
        })
        .collect();
    // Both workers hold some of them.
    let (status, info) = api(admin, "info", "{}", Some("k"));
    assert_eq!(status, 200);
    let node = &info["result"]["nodes"][0];
    assert_eq!(node["num_clients"], 12, "{info}");
    assert_eq!(node["num_subs"], 12, "{info}");
    let workers = node["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    assert!(
        workers.iter().all(|w| w["num_clients"].as_u64() > Some(0)),
        "connections all on one worker: {info}"
    );
    let (status, body) = api(
        admin,
        "publish",
        r#"{"channel":"news","data":{"x":[1,"é"]}}"#,
        Some("k"),
    );
    assert_eq!((status, body), (200, json!({"result": {}})));
    for c in &mut clients {
        let p = c.publication("news");
        assert_eq!(p["data"], json!({"x": [1, "é"]}));
        assert!(
            p.get("info").is_none(),
            "API publications carry no client info"
        );
    }
    // Publications from one publisher arrive in order, on every worker.
    for i in 0..50 {
        let body = format!(r#"{{"channel":"news","data":{{"seq":{i}}}}}"#);
        assert_eq!(api(admin, "publish", &body, Some("k")).0, 200);
    }
    for c in &mut clients {
        for i in 0..50 {
            assert_eq!(c.publication("news")["data"]["seq"], i);
        }
    }
}

#[test]
fn client_publish_reaches_subscribers_with_publisher_info_and_respects_namespaces() {
    let Some(gw) = Gateway::start(&config("")) else {
        return;
    };
    let (mut a, ra) = Client::connect(&gw, None);
    let (mut b, _) = Client::connect(&gw, None);
    a.call("subscribe", json!({"channel": "room"}));
    b.call("subscribe", json!({"channel": "chat:1"}));
    // Without namespace: anyone may publish.
    assert_eq!(
        b.call("publish", json!({"channel": "room", "data": "hi"}))["publish"],
        json!({})
    );
    let p = a.publication("room");
    assert_eq!(p["data"], "hi");
    assert_eq!(p["info"]["user"], "");
    assert_eq!(p["info"]["client"].as_str().map(str::len), Some(36));
    // chat: subscribers only. a is not subscribed: 103.
    let r = a.call("publish", json!({"channel": "chat:1", "data": 1}));
    assert_eq!(
        r["error"],
        json!({"code": 103, "message": "permission denied"})
    );
    assert_eq!(
        b.call("publish", json!({"channel": "chat:1", "data": 2}))["publish"],
        json!({})
    );
    assert_eq!(
        b.publication("chat:1")["data"],
        2,
        "the publisher gets its own publication"
    );
    // locked: nobody subscribes without a token; unknown namespaces are 102.
    let r = a.call("subscribe", json!({"channel": "locked:x"}));
    assert_eq!(r["error"]["code"], 103);
    let r = a.call("subscribe", json!({"channel": "nope:x"}));
    assert_eq!(
        r["error"],
        json!({"code": 102, "message": "unknown channel"})
    );
    let r = a.call("publish", json!({"channel": "nope:x", "data": 1}));
    assert_eq!(r["error"]["code"], 102);
    // Already subscribed, and the per-connection limit (3).
    assert_eq!(
        a.call("subscribe", json!({"channel": "room"}))["error"]["code"],
        105
    );
    a.call("subscribe", json!({"channel": "r2"}));
    a.call("subscribe", json!({"channel": "r3"}));
    assert_eq!(
        a.call("subscribe", json!({"channel": "r4"}))["error"],
        json!({"code": 106, "message": "limit exceeded"})
    );
    // Unsubscribe stops deliveries.
    assert_eq!(
        a.call("unsubscribe", json!({"channel": "room"})),
        json!({"id": 11, "unsubscribe": {}})
    );
    b.call("publish", json!({"channel": "room", "data": "late"}));
    b.call("publish", json!({"channel": "r2", "data": "marker"}));
    assert_eq!(a.publication("r2")["data"], "marker");
    assert!(
        a.inbox.iter().all(|v| v["push"]["channel"] != "room"),
        "{:?}",
        a.inbox
    );
    drop(ra);
}

#[test]
fn tokens_identify_users_and_bad_ones_are_refused() {
    let Some(gw) = Gateway::start(&config("")) else {
        return;
    };
    let admin = gw.admin.unwrap();
    // A valid token with server-side channels, including a locked one.
    let t = token(json!({"sub": "42", "exp": now() + 3600, "channels": ["locked:inbox", "news"]}));
    let (mut c, r) = Client::connect(&gw, Some(&t));
    let subs = r["connect"]["subs"].as_object().unwrap();
    assert!(
        subs.contains_key("locked:inbox") && subs.contains_key("news"),
        "{r}"
    );
    api(
        admin,
        "publish",
        r#"{"channel":"locked:inbox","data":"dm"}"#,
        Some("k"),
    );
    assert_eq!(c.publication("locked:inbox")["data"], "dm");
    // A subscription token opens a locked channel for its user.
    let st = token(json!({"sub": "42", "channel": "locked:room"}));
    assert_eq!(
        c.call("subscribe", json!({"channel": "locked:room", "token": st}))["subscribe"],
        json!({})
    );
    // One for another user disconnects (3500), as Centrifugo does.
    let wrong = token(json!({"sub": "7", "channel": "locked:other"}));
    c.send(
        "subscribe",
        json!({"channel": "locked:other", "token": wrong}),
    );
    c.expect_close(3500);
    // Expired: error 109, the connection stays for a new try.
    let expired = token(json!({"sub": "42", "exp": now() - 10}));
    let (_, r) = Client::connect(&gw, Some(&expired));
    assert_eq!(r["error"], json!({"code": 109, "message": "token expired"}));
    // Bad signature (even if expired): 3500.
    let forged = centrifuge_proto::token::sign(r#"{"sub":"42"}"#, b"not-the-secret");
    let mut c = Client::open(&gw);
    c.send("connect", json!({"token": forged}));
    c.expect_close(3500);
}

#[test]
fn protocol_violations_and_unimplemented_commands_get_the_protocols_answers() {
    let Some(gw) = Gateway::start(&config("")) else {
        return;
    };
    // Anything before connect: 3501.
    let mut c = Client::open(&gw);
    c.send("subscribe", json!({"channel": "news"}));
    c.expect_close(3501);
    // Not JSON: 3501.
    let mut c = Client::open(&gw);
    c.ws.send(Message::text("{not json")).unwrap();
    c.expect_close(3501);
    // Binary (the protobuf format): 3506.
    let (mut c, _) = Client::connect(&gw, None);
    c.ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    c.expect_close(3506);
    // Unimplemented methods: 108, the connection goes on; the legacy ping
    // command is answered; a second connect is 3501.
    let (mut c, _) = Client::connect(&gw, None);
    for method in ["history", "presence", "presence_stats", "rpc", "refresh"] {
        let r = c.call(method, json!({"channel": "news"}));
        assert_eq!(
            r["error"],
            json!({"code": 108, "message": "not available"}),
            "{method}"
        );
    }
    assert_eq!(c.call("ping", json!({})), json!({"id": 7, "ping": {}}));
    // Several commands in one frame are answered in order.
    c.ws
        .send(Message::text(
            "{\"id\":100,\"subscribe\":{\"channel\":\"a\"}}\n{\"id\":101,\"subscribe\":{\"channel\":\"b\"}}",
        ))
        .unwrap();
    assert_eq!(c.reply(100)["subscribe"], json!({}));
    assert_eq!(c.reply(101)["subscribe"], json!({}));
    c.send("connect", json!({}));
    c.expect_close(3501);
}

#[test]
fn anonymous_connect_is_refused_where_not_allowed() {
    let cfg = config("").replace("allow_anonymous = true", "allow_anonymous = false");
    let Some(gw) = Gateway::start(&cfg) else {
        return;
    };
    let mut c = Client::open(&gw);
    c.send("connect", json!({}));
    c.expect_close(3501);
    let t = token(json!({"sub": "u1"}));
    let (_, r) = Client::connect(&gw, Some(&t));
    assert!(r["connect"]["client"].is_string(), "{r}");
}

#[test]
fn app_pings_are_sent_and_a_silent_client_is_dropped_with_no_pong() {
    let cfg = config("").replace(
        "channel_limit = 3",
        "channel_limit = 3\nping_interval_ms = 300\npong_timeout_ms = 200\nstale_ms = 250",
    );
    let Some(gw) = Gateway::start(&cfg) else {
        return;
    };
    let (mut c, r) = Client::connect(&gw, None);
    assert_eq!(r["connect"]["ping"], 1, "ping is whole seconds, rounded up");
    // A ping `{}` arrives; answering keeps the connection.
    c.wait("ping", |v| v == &json!({}));
    c.ws.send(Message::text("{}")).unwrap();
    c.wait("second ping", |v| v == &json!({}));
    // Not answering: 3012 "no pong".
    c.expect_close(3012);
    // Never sending connect: 3502 "stale" at the first tick past stale_ms.
    let c = Client::open(&gw);
    c.expect_close(3502);
}

#[test]
fn server_api_answers_like_centrifugo() {
    let Some(gw) = Gateway::start(&config("")) else {
        return;
    };
    let admin = gw.admin.unwrap();
    // Auth, method, body.
    assert_eq!(api(admin, "publish", "{}", None).0, 401);
    assert_eq!(api(admin, "publish", "{}", Some("wrong")).0, 401);
    let get = http_exchange(
        admin,
        b"GET /api/publish HTTP/1.1\r\nHost: a\r\nX-API-Key: k\r\n\r\n",
    );
    assert_eq!((get.status, get.header("Allow")), (405, Some("POST")));
    assert_eq!(api(admin, "publish", "not json", Some("k")).0, 400);
    assert_eq!(api(admin, "nope", "{}", Some("k")).0, 404);
    // Authorization: apikey.
    let body = r#"{"channel":"news","data":1}"#;
    let r = http_exchange(
        admin,
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: a\r\nAuthorization: apikey k\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    // Application errors: 200 with Centrifugo's error shape.
    assert_eq!(
        api(
            admin,
            "publish",
            r#"{"channel":"nope:x","data":1}"#,
            Some("k")
        )
        .1,
        json!({"error": {"code": 102, "message": "unknown channel"}})
    );
    assert_eq!(
        api(admin, "publish", r#"{"channel":"","data":1}"#, Some("k")).1["error"]["code"],
        107
    );
    assert_eq!(
        api(admin, "publish", r#"{"channel":"news"}"#, Some("k")).1["error"]["code"],
        107
    );
    // Body over api.max_body_bytes: 413.
    let big = format!(r#"{{"channel":"news","data":"{}"}}"#, "x".repeat(2 << 20));
    assert_eq!(api(admin, "publish", &big, Some("k")).0, 413);
    // Broadcast reports per channel.
    let (mut a, _) = Client::connect(&gw, None);
    a.call("subscribe", json!({"channel": "b1"}));
    a.call("subscribe", json!({"channel": "b2"}));
    let (_, r) = api(
        admin,
        "broadcast",
        r#"{"channels":["b1","nope:x","b2"],"data":{"n":1}}"#,
        Some("k"),
    );
    assert_eq!(
        r,
        json!({"result": {"responses": [
            {"result": {}},
            {"error": {"code": 102, "message": "unknown channel"}},
            {"result": {}}
        ]}})
    );
    assert_eq!(a.publication("b1")["data"]["n"], 1);
    assert_eq!(a.publication("b2")["data"]["n"], 1);
}

#[test]
fn api_subscribe_unsubscribe_and_disconnect_reach_users_on_any_worker() {
    let Some(gw) = Gateway::start(&config("")) else {
        return;
    };
    let admin = gw.admin.unwrap();
    // Several connections of user 42 (spread over both workers).
    let t = token(json!({"sub": "42"}));
    let mut cs: Vec<Client> = (0..6).map(|_| Client::connect(&gw, Some(&t)).0).collect();
    let (_, r) = api(
        admin,
        "subscribe",
        r#"{"user":"42","channel":"locked:dm"}"#,
        Some("k"),
    );
    assert_eq!(r, json!({"result": {}}));
    for c in &mut cs {
        c.wait("subscribe push", |v| {
            v["push"]["channel"] == "locked:dm" && v["push"]["subscribe"].is_object()
        });
    }
    api(
        admin,
        "publish",
        r#"{"channel":"locked:dm","data":"hello 42"}"#,
        Some("k"),
    );
    for c in &mut cs {
        assert_eq!(c.publication("locked:dm")["data"], "hello 42");
    }
    api(
        admin,
        "unsubscribe",
        r#"{"user":"42","channel":"locked:dm"}"#,
        Some("k"),
    );
    for c in &mut cs {
        let v = c.wait("unsubscribe push", |v| v["push"]["unsubscribe"].is_object());
        assert_eq!(
            v["push"]["unsubscribe"],
            json!({"code": 2000, "reason": "server unsubscribe"})
        );
    }
    let (_, r) = api(
        admin,
        "disconnect",
        r#"{"user":"42","disconnect":{"code":4001,"reason":"bye"}}"#,
        Some("k"),
    );
    assert_eq!(r, json!({"result": {}}));
    for c in cs {
        c.expect_close(4001);
    }
    // By client id, default code 3503.
    let (mut c, r) = Client::connect(&gw, None);
    let id = r["connect"]["client"].as_str().unwrap().to_string();
    api(
        admin,
        "disconnect",
        &format!(r#"{{"client":"{id}"}}"#),
        Some("k"),
    );
    c.expect_close(3503);
    c = Client::connect(&gw, None).0;
    drop(c);
    // Info counts go back down.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, info) = api(admin, "info", "{}", Some("k"));
        if info["result"]["nodes"][0]["num_clients"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "clients never left: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_slow_subscriber_is_disconnected_alone() {
    let cfg = config("").replace(
        "channel_limit = 3",
        "channel_limit = 3\nclient_queue_max_bytes = 65536",
    ) + "\n[server]\nsocket_send_buffer = 8192\nworkers = 1\n";
    let cfg = cfg.replacen("[server]\nworkers = 2\n", "", 1);
    let Some(gw) = Gateway::start(&cfg) else {
        return;
    };
    let admin = gw.admin.unwrap();
    // A subscriber that never reads, and one that does.
    let (mut slow, _) = Client::connect(&gw, None);
    slow.call("subscribe", json!({"channel": "firehose"}));
    let (mut fast, _) = Client::connect(&gw, None);
    fast.call("subscribe", json!({"channel": "firehose"}));
    let data = format!(
        r#"{{"channel":"firehose","data":"{}"}}"#,
        "x".repeat(16 << 10)
    );
    for i in 0..40 {
        assert_eq!(
            api(admin, "publish", &data, Some("k")).0,
            200,
            "publication {i}"
        );
        // The fast one keeps up.
        fast.publication("firehose");
    }
    let m = gw.metrics();
    assert_eq!(
        m.get("gateway_pubsub_disconnects_total", &[("code", "3008")]),
        1.0,
        "{}",
        m.text
    );
    // The slow one reads its backlog and finds the 3008 close behind it.
    slow.expect_close(3008);
    let delivered = m.get("gateway_pubsub_deliveries_total", &[]);
    assert!((40.0..80.0).contains(&delivered), "{delivered} deliveries");
}
