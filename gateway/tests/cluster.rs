//! Several gateways as one, over a real `redis-server` and a real
//! `nats-server` (Debian packages; CI installs them, a missing binary skips
//! the test): publications from any node reach subscribers on every node in
//! order, API operations and pushes reach connections wherever they are,
//! `/api/info` lists every node, and a broker restart degrades the nodes,
//! then they recover and tell their subscribers (2500). The publication
//! and restart tests run with both `broker.placement`s: the broker thread,
//! and each worker's own broker connection.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Redis,
    Nats,
}

/// A broker process on a fixed loopback port (so it can be restarted on it).
struct Broker {
    kind: Kind,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(kind: Kind) -> Option<Broker> {
        // A port free a moment ago may be taken by the time the broker
        // binds it (by another test's connection or listener): then the
        // broker exits, and another port is tried.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .ok()?
                .port();
            let mut b = Broker {
                kind,
                port,
                child: None,
            };
            if b.launch()? {
                return Some(b);
            }
        }
        panic!("{kind:?} broker did not start on any of 5 free ports");
    }

    /// Starts the broker again on its port (after `kill`).
    fn spawn(&mut self) -> Option<()> {
        self.launch()?
            .then_some(())
            .or_else(|| panic!("broker ready again on port {} (its log says so)", self.port))
    }

    fn binary(kind: Kind) -> Option<PathBuf> {
        let (name, paths): (&str, &[&str]) = match kind {
            Kind::Redis => ("redis-server", &["/usr/bin/redis-server"]),
            Kind::Nats => (
                "nats-server",
                &["/usr/sbin/nats-server", "/usr/bin/nats-server"],
            ),
        };
        let found = std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
            .or_else(|| paths.iter().map(PathBuf::from).find(|p| p.is_file()));
        if found.is_none() {
            eprintln!("SKIP: {name} is not installed");
        }
        found
    }

    /// Starts the broker on its port: `None` if it is not installed,
    /// `Some(false)` if it did not come up (it exited: the port was taken).
    fn launch(&mut self) -> Option<bool> {
        let bin = Self::binary(self.kind)?;
        let port = self.port.to_string();
        let args: Vec<&str> = match self.kind {
            Kind::Redis => vec![
                "--port",
                &port,
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ],
            Kind::Nats => vec!["-a", "127.0.0.1", "-p", &port],
        };
        let log_path = std::env::temp_dir().join(format!(
            "cluster-broker-{}-{}.log",
            std::process::id(),
            port
        ));
        let log = std::fs::File::create(&log_path).ok()?;
        let child = Command::new(bin)
            .args(&args)
            .current_dir(std::env::temp_dir())
            .stdout(log.try_clone().ok()?)
            .stderr(log)
            .spawn()
            .ok()?;
        self.child = Some(child);
        // Ready when its own log says so: a connect alone could reach another
        // test's broker that took the same free port (ours would then fail
        // to bind and exit).
        let ready = match self.kind {
            Kind::Redis => "Ready to accept connections",
            Kind::Nats => "Server is ready",
        };
        let up = retry(Duration::from_secs(5), || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let alive = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            (alive && text.contains(ready)).then_some(())
        });
        let _ = std::fs::remove_file(&log_path);
        if up.is_none() {
            self.kill();
        }
        Some(up.is_some())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Node `i` of a cluster on `broker` (two workers each, so a node's own
/// fan-out crosses workers too).
fn node(broker: &Broker, i: usize, extra: &str) -> Option<Gateway> {
    node_at(broker.kind, broker.addr(), i, extra)
}

/// Node `i` using the broker at `addr` (a relay in front of it, say).
fn node_at(kind: Kind, addr: SocketAddr, i: usize, extra: &str) -> Option<Gateway> {
    let kind = match kind {
        Kind::Redis => "redis",
        Kind::Nats => "nats",
    };
    Gateway::start(&format!(
        r#"{CLUSTER_NODE}
[admin]
listen = "127.0.0.1:0"
publish_ms = 20

[broker]
kind = "{kind}"
addresses = ["{addr}"]
node = "n{i}"
ping_interval_ms = 200
reconnect_min_ms = 50
reconnect_max_ms = 400
info_interval_ms = 100
{extra}
"#
    ))
}

/// `broker.placement` of a test's nodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Placement {
    Thread,
    Workers,
}

impl Placement {
    /// The `[broker]` line.
    fn key(self) -> &'static str {
        match self {
            Placement::Thread => "placement = \"thread\"\n",
            Placement::Workers => "placement = \"workers\"\n",
        }
    }

    /// Broker connections of a node with one broker address and
    /// `CLUSTER_NODE`'s two workers.
    fn connections(self) -> f64 {
        match self {
            Placement::Thread => 1.0,
            Placement::Workers => 3.0,
        }
    }
}

fn cluster(broker: &Broker, n: usize, placement: Placement) -> Option<Vec<Gateway>> {
    let nodes: Option<Vec<Gateway>> = (0..n).map(|i| node(broker, i, placement.key())).collect();
    let nodes = nodes?;
    await_each_other(&nodes);
    Some(nodes)
}

/// Every node up and aware of the others.
fn await_each_other(nodes: &[Gateway]) {
    let n = nodes.len();
    for gw in nodes {
        retry(Duration::from_secs(5), || {
            let (_, v) = api(gw, "info", &json!({}));
            (v["result"]["nodes"].as_array().map_or(0, Vec::len) == n).then_some(())
        })
        .unwrap_or_else(|| panic!("/api/info never listed {n} nodes"));
    }
}

fn api(gw: &Gateway, endpoint: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let request = format!(
        "POST /api/{endpoint} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-API-Key: k\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = http_exchange(gw.admin.unwrap(), request.as_bytes());
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// A Centrifugo-protocol client.
struct Client {
    ws: Ws,
    next: u32,
    inbox: Vec<Value>,
}

impl Client {
    fn connect(gw: &Gateway, token: Option<&str>) -> Client {
        let (ws, _) = try_ws_connect(gw.addr, gw.url("/connection/websocket"), None).unwrap();
        let mut c = Client {
            ws,
            next: 1,
            inbox: Vec::new(),
        };
        let params = token.map_or(json!({}), |t| json!({ "token": t }));
        let r = c.call("connect", params);
        assert!(r["connect"]["client"].is_string(), "{r}");
        c
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.ws
            .send(Message::text(
                json!({ "id": id, method: params }).to_string(),
            ))
            .unwrap();
        self.wait(&format!("reply {id}"), |v| v["id"] == id)
    }

    fn wait(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(i) = self.inbox.iter().position(&pick) {
                return self.inbox.remove(i);
            }
            assert!(Instant::now() < deadline, "no {what} in {:?}", self.inbox);
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    for line in t.split('\n') {
                        let v: Value = serde_json::from_str(line).unwrap();
                        if v == json!({}) {
                            // App-level ping.
                            self.ws.send(Message::text("{}")).unwrap();
                        } else {
                            self.inbox.push(v);
                        }
                    }
                }
                Ok(Message::Close(f)) => {
                    let code = f.map(|f| u16::from(f.code));
                    self.inbox.push(json!({ "closed": code }));
                }
                Ok(_) => {}
                Err(e) => panic!("waiting for {what}: {e}"),
            }
        }
    }

    fn publication(&mut self, channel: &str) -> Value {
        self.wait(&format!("publication on {channel}"), |v| {
            v["push"]["channel"] == channel && v["push"]["pub"].is_object()
        })["push"]["pub"]["data"]
            .clone()
    }

    fn subscribe(&mut self, channel: &str) {
        let r = self.call("subscribe", json!({ "channel": channel }));
        assert!(r["subscribe"].is_object(), "{r}");
    }
}

/// HS256 connection token for `sub` (secret "s").
fn token(sub: &str) -> String {
    centrifuge_proto::token::sign(&json!({ "sub": sub }).to_string(), b"s")
}

/// A TCP relay to `target` that holds every byte the client sends for
/// `delay` (answers come back at once): a broker far from one node, so
/// that its subscribe commands arrive late.
fn delay_relay(target: SocketAddr, delay: Duration) -> SocketAddr {
    use std::net::{Shutdown, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (mut from_server, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Both);
            });
            let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
            let mut from_client = client;
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n @ 1..) = from_client.read(&mut buf) {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            });
            let mut to_server = server;
            std::thread::spawn(move || {
                for (at, bytes) in rx {
                    std::thread::sleep((at + delay).saturating_duration_since(Instant::now()));
                    if to_server.write_all(&bytes).is_err() {
                        break;
                    }
                }
                let _ = to_server.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// A subscription is answered only once the node's broker subscription is
/// in effect, so a publication through another node right after the
/// answer is delivered. Node 1's commands reach the broker 300 ms late:
/// without the wait, the publication would get there before node 1's
/// subscribe and be lost (neither broker keeps history).
fn subscriptions_are_answered_once_in_effect(kind: Kind, placement: Placement) {
    const DELAY: Duration = Duration::from_millis(300);
    let Some(broker) = Broker::start(kind) else {
        return;
    };
    let far = delay_relay(broker.addr(), DELAY);
    let key = placement.key();
    let (Some(n0), Some(n1)) = (node(&broker, 0, key), node_at(kind, far, 1, key)) else {
        return;
    };
    let nodes = [n0, n1];
    await_each_other(&nodes);
    // Subscribed in the connect reply (token `channels`).
    let claims = json!({ "sub": "bob", "channels": ["early"] }).to_string();
    let t = Instant::now();
    let mut bob = Client::connect(
        &nodes[1],
        Some(&centrifuge_proto::token::sign(&claims, b"s")),
    );
    assert!(
        t.elapsed() >= DELAY,
        "the connect reply waited for the broker"
    );
    api(
        &nodes[0],
        "publish",
        &json!({"channel": "early", "data": 1}),
    );
    assert_eq!(bob.publication("early"), json!(1));
    // A subscribe command.
    let t = Instant::now();
    bob.subscribe("fresh");
    assert!(
        t.elapsed() >= DELAY,
        "the subscribe reply waited for the broker"
    );
    api(
        &nodes[0],
        "publish",
        &json!({"channel": "fresh", "data": 2}),
    );
    assert_eq!(bob.publication("fresh"), json!(2));
    // Later subscribers of a channel the node has are answered at once
    // (on either worker); with worker connections, a worker that does not
    // hold the channel yet waits for its own subscription.
    let mut others = Vec::new();
    for _ in 0..2 {
        let mut other = Client::connect(&nodes[1], None);
        let t = Instant::now();
        other.subscribe("fresh");
        if placement == Placement::Thread {
            assert!(
                t.elapsed() < DELAY,
                "no wait for a channel already in effect"
            );
        }
        others.push(other);
    }
    api(
        &nodes[0],
        "publish",
        &json!({"channel": "fresh", "data": 22}),
    );
    assert_eq!(bob.publication("fresh"), json!(22));
    for o in &mut others {
        assert_eq!(o.publication("fresh"), json!(22));
    }
    // A server-side subscribe through the API of the other node.
    let (status, v) = api(
        &nodes[0],
        "subscribe",
        &json!({"user": "bob", "channel": "pushed"}),
    );
    assert_eq!(status, 200, "{v}");
    bob.wait("server-side subscribe", |v| {
        v["push"]["channel"] == "pushed" && v["push"]["subscribe"].is_object()
    });
    api(
        &nodes[0],
        "publish",
        &json!({"channel": "pushed", "data": 3}),
    );
    assert_eq!(bob.publication("pushed"), json!(3));
    // Subscribing again after the node gave the channel up (its last
    // subscriber left more than `unsubscribe_delay_ms` ago) is answered,
    // and delivered to.
    bob.subscribe("again");
    let r = bob.call("unsubscribe", json!({"channel": "again"}));
    assert!(r["unsubscribe"].is_object(), "{r}");
    std::thread::sleep(Duration::from_millis(400));
    bob.subscribe("again");
    api(
        &nodes[0],
        "publish",
        &json!({"channel": "again", "data": 4}),
    );
    assert_eq!(bob.publication("again"), json!(4));
}

#[test]
fn subscriptions_are_answered_once_in_effect_over_redis() {
    subscriptions_are_answered_once_in_effect(Kind::Redis, Placement::Thread);
}

#[test]
fn subscriptions_are_answered_once_in_effect_over_nats() {
    subscriptions_are_answered_once_in_effect(Kind::Nats, Placement::Thread);
}

#[test]
fn subscriptions_are_answered_once_in_effect_over_redis_worker_connections() {
    subscriptions_are_answered_once_in_effect(Kind::Redis, Placement::Workers);
}

#[test]
fn subscriptions_are_answered_once_in_effect_over_nats_worker_connections() {
    subscriptions_are_answered_once_in_effect(Kind::Nats, Placement::Workers);
}

fn publications_reach_every_node(kind: Kind, placement: Placement) {
    let Some(broker) = Broker::start(kind) else {
        return;
    };
    let Some(nodes) = cluster(&broker, 3, placement) else {
        return;
    };
    // Four subscribers per node: with two workers, both hold the channel
    // unless all four land on one (1 in 8).
    let mut clients: Vec<Client> = nodes
        .iter()
        .flat_map(|gw| (0..4).map(|_| Client::connect(gw, None)))
        .collect();
    for c in &mut clients {
        c.subscribe("news");
    }
    for gw in &nodes {
        let m = retry(Duration::from_secs(3), || {
            let m = gw.metrics();
            let channels = m.get("gateway_broker_channels", &[]);
            let ok = match placement {
                // One broker subscription per node for the channel,
                // whatever the number of local subscribers and workers.
                Placement::Thread => channels == 1.0,
                // One per worker holding it.
                Placement::Workers => channels == 1.0 || channels == 2.0,
            };
            let conns = m.get("gateway_broker_connections", &[]);
            (ok && conns == placement.connections()).then_some(m)
        });
        assert!(m.is_some(), "broker subscriptions and connections");
    }
    // Through the API of node 0, in order, to everyone.
    for i in 0..30 {
        let (status, v) = api(
            &nodes[0],
            "publish",
            &json!({"channel": "news", "data": {"n": i}}),
        );
        assert_eq!((status, &v["result"]), (200, &json!({})), "{v}");
    }
    for c in &mut clients {
        for i in 0..30 {
            assert_eq!(
                c.publication("news"),
                json!({"n": i}),
                "order kept across nodes"
            );
        }
    }
    // A client's publication on node 2 reaches node 0's subscribers.
    let r = clients[11].call("publish", json!({"channel": "news", "data": "from n2"}));
    assert!(r["publish"].is_object(), "{r}");
    for c in &mut clients {
        assert_eq!(c.publication("news"), json!("from n2"));
    }
    // Nothing twice.
    std::thread::sleep(Duration::from_millis(200));
    for c in &mut clients {
        c.ws.send(Message::text(json!({"id": 99, "ping": {}}).to_string()))
            .unwrap();
        c.wait("ping reply", |v| v["id"] == 99);
        assert!(
            !c.inbox.iter().any(|v| v["push"]["pub"].is_object()),
            "duplicate deliveries: {:?}",
            c.inbox
        );
    }
    let (_, info) = api(&nodes[1], "info", &json!({}));
    let names: Vec<&str> = info["result"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{info}");
    for n in ["n0", "n1", "n2"] {
        assert!(names.contains(&n), "{names:?}");
    }
}

#[test]
fn publications_reach_every_node_over_redis() {
    publications_reach_every_node(Kind::Redis, Placement::Thread);
}

#[test]
fn publications_reach_every_node_over_nats() {
    publications_reach_every_node(Kind::Nats, Placement::Thread);
}

#[test]
fn publications_reach_every_worker_over_redis_from_worker_connections() {
    publications_reach_every_node(Kind::Redis, Placement::Workers);
}

#[test]
fn publications_reach_every_worker_over_nats_from_worker_connections() {
    publications_reach_every_node(Kind::Nats, Placement::Workers);
}

#[test]
fn api_operations_reach_users_on_any_node() {
    api_operations_reach_users(Placement::Thread);
}

#[test]
fn api_operations_reach_users_on_any_node_with_worker_connections() {
    api_operations_reach_users(Placement::Workers);
}

fn api_operations_reach_users(placement: Placement) {
    let Some(broker) = Broker::start(Kind::Redis) else {
        return;
    };
    let Some(nodes) = cluster(&broker, 3, placement) else {
        return;
    };
    let mut alice = Client::connect(&nodes[2], Some(&token("alice")));
    let (status, v) = api(
        &nodes[0],
        "subscribe",
        &json!({"user": "alice", "channel": "room"}),
    );
    assert_eq!(status, 200, "{v}");
    alice.wait("server-side subscribe", |v| {
        v["push"]["channel"] == "room" && v["push"]["subscribe"].is_object()
    });
    // The push waited for node 2's broker subscription: publishing right
    // away reaches alice.
    api(&nodes[1], "publish", &json!({"channel": "room", "data": 7}));
    assert_eq!(alice.publication("room"), json!(7));
    let (status, _) = api(
        &nodes[1],
        "disconnect",
        &json!({"user": "alice", "disconnect": {"code": 4501, "reason": "bye"}}),
    );
    assert_eq!(status, 200);
    let closed = alice.wait("disconnect", |v| v.get("closed").is_some());
    assert_eq!(closed["closed"], 4501);
}

/// A backend that accepts every `$connect` and reports its connection id.
fn id_backend() -> (SocketAddr, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            break;
                        }
                        if let Some(id) = head
                            .lines()
                            .find_map(|l| l.strip_prefix("X-Connection-Id: "))
                        {
                            if head.contains("X-Gateway-Event: connect") {
                                let _ = tx.send(id.trim().to_string());
                            }
                        }
                        buf.drain(..end + 4 + len);
                        let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[test]
fn the_push_api_reaches_a_connection_on_another_node() {
    let Some(broker) = Broker::start(Kind::Redis) else {
        return;
    };
    let (backend, ids) = id_backend();
    let extra = format!(
        "[[backends]]\nname = \"b\"\naddress = \"{backend}\"\n\
         [[routes]]\npath = \"/up\"\napp = \"upstream\"\n[routes.upstream]\nbackend = \"b\"\n"
    );
    let nodes: Option<Vec<Gateway>> = (0..2).map(|i| node(&broker, i, &extra)).collect();
    let Some(nodes) = nodes else {
        return;
    };
    for gw in &nodes {
        retry(Duration::from_secs(5), || {
            let (_, v) = api(gw, "info", &json!({}));
            (v["result"]["nodes"].as_array().map_or(0, Vec::len) == 2).then_some(())
        })
        .expect("both nodes up");
    }
    let (mut ws, _) = try_ws_connect(nodes[1].addr, nodes[1].url("/up"), None).unwrap();
    let id = ids.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(id.ends_with("@n1"), "{id}");
    let push = |method: &str, target: &str, body: &[u8]| {
        let mut request = format!(
            "{method} /api/connections/{target} HTTP/1.1\r\nHost: a\r\nX-API-Key: k\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        http_exchange(nodes[0].admin.unwrap(), &request)
    };
    let r = push("POST", &id, b"across nodes");
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(ws.read().unwrap(), Message::text("across nodes"));
    let r = push("GET", &id, b"");
    assert_eq!(r.status, 200);
    let info: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(info["connection_id"], id.as_str());
    let r = push("DELETE", &format!("{id}?code=4002"), b"");
    assert_eq!(r.status, 204);
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 4002),
        other => panic!("{other:?}"),
    }
    // A node nobody runs: no answer within the push timeout.
    let ghost = format!("{}@nobody", id.split('@').next().unwrap());
    let t = Instant::now();
    assert_eq!(push("GET", &ghost, b"").status, 504);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_broker_restart_degrades_then_recovers_and_resubscribes() {
    broker_restart(Kind::Redis, Placement::Thread);
}

#[test]
fn a_broker_restart_degrades_then_recovers_and_resubscribes_worker_connections() {
    broker_restart(Kind::Redis, Placement::Workers);
}

#[test]
fn a_nats_restart_degrades_then_recovers_and_resubscribes_worker_connections() {
    broker_restart(Kind::Nats, Placement::Workers);
}

fn broker_restart(kind: Kind, placement: Placement) {
    let Some(mut broker) = Broker::start(kind) else {
        return;
    };
    let Some(nodes) = cluster(&broker, 2, placement) else {
        return;
    };
    let mut sub = Client::connect(&nodes[1], None);
    sub.subscribe("live");
    api(&nodes[0], "publish", &json!({"channel": "live", "data": 1}));
    assert_eq!(sub.publication("live"), json!(1));

    broker.kill();
    let health = |gw: &Gateway| {
        let r = http_exchange(
            gw.addr,
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        r.status
    };
    let degraded = retry(Duration::from_secs(3), || {
        (health(&nodes[0]) == 503).then_some(())
    });
    assert!(degraded.is_some(), "a node without its broker says so");
    // Publishing is refused, not silently lost.
    let (_, v) = api(&nodes[0], "publish", &json!({"channel": "live", "data": 2}));
    assert_eq!(v["error"]["code"], 100, "{v}");
    // So is a subscription the node cannot make: error 100, temporary (the
    // SDKs try again), counted.
    let mut late = Client::connect(&nodes[1], None);
    let r = late.call("subscribe", json!({"channel": "new-while-down"}));
    assert_eq!(r["error"]["code"], 100, "{r}");
    assert_eq!(r["error"]["temporary"], true, "{r}");
    let counted = retry(Duration::from_secs(3), || {
        (nodes[1]
            .metrics()
            .get("gateway_broker_unconfirmed_total", &[])
            >= 1.0)
            .then_some(())
    });
    assert!(
        counted.is_some(),
        "counted in gateway_broker_unconfirmed_total"
    );

    broker.spawn().expect("broker restarts");
    let healthy = retry(Duration::from_secs(5), || {
        nodes.iter().all(|gw| health(gw) == 200).then_some(())
    });
    assert!(healthy.is_some(), "both nodes recover");
    // The subscriber is told it may have missed publications, and can
    // subscribe again.
    let unsub = sub.wait("insufficient state", |v| {
        v["push"]["channel"] == "live" && v["push"]["unsubscribe"].is_object()
    });
    assert_eq!(unsub["push"]["unsubscribe"]["code"], 2500);
    sub.subscribe("live");
    retry(Duration::from_secs(3), || {
        let (_, v) = api(&nodes[0], "publish", &json!({"channel": "live", "data": 3}));
        (v["result"] == json!({})).then_some(())
    })
    .expect("publishing works again");
    assert_eq!(sub.publication("live"), json!(3));
    let m = nodes[1].metrics();
    assert!(m.get("gateway_broker_reconnects_total", &[]) >= 1.0);
    assert!(m.get("gateway_broker_resynced_total", &[]) >= 1.0);
}

/// A channel's broker subscription is dropped once `unsubscribe_delay_ms`
/// has passed after its last local subscriber left, without waiting for
/// another change on the connection.
fn broker_unsubscribes_after_the_delay(placement: Placement) {
    let Some(broker) = Broker::start(Kind::Redis) else {
        return;
    };
    let extra = format!("{}unsubscribe_delay_ms = 100\n", placement.key());
    let Some(gw) = node(&broker, 0, &extra) else {
        return;
    };
    await_each_other(std::slice::from_ref(&gw));
    let commands = |gw: &Gateway| gw.metrics().get("gateway_broker_commands_total", &[]);
    let mut c = Client::connect(&gw, None);
    c.subscribe("brief");
    let subscribed = retry(Duration::from_secs(3), || {
        (gw.metrics().get("gateway_broker_channels", &[]) == 1.0).then_some(())
    });
    assert!(subscribed.is_some(), "subscribed at the broker");
    let before = commands(&gw);
    let r = c.call("unsubscribe", json!({"channel": "brief"}));
    assert!(r["unsubscribe"].is_object(), "{r}");
    // One unsubscribe command once the delay has passed, and nothing
    // else happens on the connection meanwhile.
    let sent = retry(Duration::from_secs(3), || {
        (commands(&gw) == before + 1.0).then_some(())
    });
    assert!(sent.is_some(), "the unsubscribe went after the delay");
}

#[test]
fn the_broker_unsubscribes_after_the_delay() {
    broker_unsubscribes_after_the_delay(Placement::Thread);
}

#[test]
fn the_broker_unsubscribes_after_the_delay_worker_connections() {
    broker_unsubscribes_after_the_delay(Placement::Workers);
}

/// Without `broker.node` a node is named after its listen address, with
/// the port it was given: two nodes started on port 0 are two nodes.
#[test]
fn nodes_without_a_name_are_told_apart() {
    let Some(broker) = Broker::start(Kind::Redis) else {
        return;
    };
    let start = || {
        Gateway::start(&format!(
            "{CLUSTER_NODE}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[broker]\nkind = \"redis\"\n\
             addresses = [\"{}\"]\ninfo_interval_ms = 100\n",
            broker.addr()
        ))
    };
    let (Some(a), Some(b)) = (start(), start()) else {
        return;
    };
    let want = {
        let mut v = vec![a.addr.to_string(), b.addr.to_string()];
        v.sort();
        v
    };
    let nodes = [a, b];
    await_each_other(&nodes);
    let (_, info) = api(&nodes[0], "info", &json!({}));
    let mut names: Vec<String> = info["result"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, want, "{info}");
}
