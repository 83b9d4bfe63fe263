//! A network partition, not a broker crash: node A runs in its own network
//! namespace, joined to the root namespace (where `redis-server` and node B
//! run) by a veth pair. `ip link set <root end> down` cuts A off without a
//! FIN or an RST on any socket, so only the broker keepalive
//! (`ping_interval_ms`) can notice: A must say it is degraded within three
//! intervals, refuse publishes (error 100) while B carries on, then, once
//! the link is back, reconnect, tell its subscribers they missed
//! publications (2500) and deliver again.
//!
//! Needs root (network namespaces, veth), iproute2's `ip` and
//! `redis-server`; without them the test prints `SKIP: ...` and passes.
//! The namespace, the veth pair and every process are removed on drop,
//! panics included.
//!
//! Node A is started from a thread that has entered the namespace
//! (`setns`), so the gateway binary inherits it, and node A's own
//! subscriber and health/API/metrics requests are made from sockets
//! created in the namespace (over its loopback), which the cut does not
//! touch. A second subscriber of A connects from the root namespace through
//! the veth, across the cut.

mod common;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// `ping_interval_ms` of both nodes: a silent broker connection is dropped
/// after three of these.
const PING_MS: u64 = 200;

/// How long node A may take to notice the cut: 3 × 200 ms of silence, at
/// most one ping interval since it last heard the broker, the 10 ms tick,
/// plus slack for a loaded CI machine.
const DEGRADE_WITHIN: Duration = Duration::from_millis(1_500);

/// How long the link stays down: several failed reconnect attempts.
const HOLD_CUT: Duration = Duration::from_millis(3_000);

/// A binary on `PATH` or at one of the usual places.
fn find(name: &str, usual: &[&str]) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .or_else(|| usual.iter().map(PathBuf::from).find(|p| p.is_file()))
}

/// Runs `ip args…`; the error text when it fails.
fn ip(ip_bin: &PathBuf, args: &[&str]) -> Result<(), String> {
    let out = Command::new(ip_bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to the root namespace by a veth pair
/// (`root_ip`/30 on the root end, `ns_ip`/30 on the namespace end, the
/// namespace's loopback up). Removed on drop.
struct Netns {
    ip: PathBuf,
    name: String,
    /// The root namespace's end of the veth pair (the one cut).
    veth_root: String,
    veth_ns: String,
    root_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    /// `/var/run/netns/NAME`, for `setns`.
    handle: Option<File>,
    /// `ip netns add` succeeded (so drop deletes it).
    created: bool,
}

impl Netns {
    /// Creates it; `None` (after printing why) when this machine cannot.
    fn create(ip_bin: PathBuf) -> Option<Netns> {
        let pid = std::process::id();
        // A /30 of 10.200.0.0/16 per process, so concurrent runs differ.
        let n = pid % 16_384;
        let base = u32::from(Ipv4Addr::new(10, 200, 0, 0)) + n * 4;
        let mut ns = Netns {
            ip: ip_bin,
            name: format!("gw-partition-{pid}"),
            veth_root: format!("gwp{pid}r"),
            veth_ns: format!("gwp{pid}n"),
            root_ip: Ipv4Addr::from(base + 1),
            ns_ip: Ipv4Addr::from(base + 2),
            handle: None,
            created: false,
        };
        if let Err(e) = ip(&ns.ip, &["netns", "add", &ns.name]) {
            eprintln!("SKIP: cannot create a network namespace: {e}");
            return None;
        }
        ns.created = true;
        // From here on a failure is a test failure (drop cleans up).
        let (name, vr, vn) = (ns.name.clone(), ns.veth_root.clone(), ns.veth_ns.clone());
        let root_cidr = format!("{}/30", ns.root_ip);
        let ns_cidr = format!("{}/30", ns.ns_ip);
        let steps: [&[&str]; 6] = [
            &[
                "link", "add", &vr, "type", "veth", "peer", "name", &vn, "netns", &name,
            ],
            &["addr", "add", &root_cidr, "dev", &vr],
            &["link", "set", "dev", &vr, "up"],
            &["-n", &name, "addr", "add", &ns_cidr, "dev", &vn],
            &["-n", &name, "link", "set", "dev", &vn, "up"],
            &["-n", &name, "link", "set", "dev", "lo", "up"],
        ];
        for step in steps {
            ip(&ns.ip, step).unwrap_or_else(|e| panic!("setting up the namespace: {e}"));
        }
        ns.handle = Some(
            File::open(format!("/var/run/netns/{name}"))
                .unwrap_or_else(|e| panic!("open /var/run/netns/{name}: {e}")),
        );
        Some(ns)
    }

    /// Sets the root end of the veth pair down (the cut) or up.
    fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&self.ip, &["link", "set", "dev", &self.veth_root, state])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs `f` on a thread inside the namespace: the sockets it creates
    /// and the processes it spawns belong to the namespace (and keep it
    /// whatever thread uses them later).
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let fd = self.handle.as_ref().expect("namespace open").as_raw_fd();
        std::thread::scope(|s| {
            let thread = s.spawn(move || {
                // SAFETY: setns(2) on a namespace file descriptor we hold
                // open; it only changes this (fresh, scoped) thread's
                // network namespace.
                let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.handle = None;
        // Deleting the root end deletes its peer; a namespace's own
        // cleanup is asynchronous, so do not leave the pair to it.
        let _ = ip(&self.ip, &["link", "del", "dev", &self.veth_root]);
        if self.created {
            if let Err(e) = ip(&self.ip, &["netns", "del", &self.name]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// `redis-server` in the root namespace on both the veth address (for
/// node A) and loopback (for node B). Killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(bin: &PathBuf, veth_ip: Ipv4Addr) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string()])
            .args(["--bind", &format!("{veth_ip} 127.0.0.1")])
            // Not loopback-only, no password: protected mode would refuse A.
            .args(["--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let redis = Redis { child, port };
        retry(Duration::from_secs(5), || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        })
        .expect("redis-server accepts connections");
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster node's configuration, with `broker` as its Redis.
fn node_config(name: &str, broker: SocketAddrV4, admin_listen: &str) -> String {
    format!(
        r#"{CLUSTER_NODE}
[admin]
listen = "{admin_listen}"
publish_ms = 20

[broker]
kind = "redis"
addresses = ["{broker}"]
node = "{name}"
ping_interval_ms = {PING_MS}
reconnect_min_ms = 50
reconnect_max_ms = 400
info_interval_ms = 100
"#
    )
}

/// `POST /api/{endpoint}` on an admin listener.
fn api(admin: SocketAddr, endpoint: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let request = format!(
        "POST /api/{endpoint} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-API-Key: k\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = http_exchange(admin, request.as_bytes());
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// The status of `GET /healthz` on a client listener.
fn health(addr: SocketAddr) -> u16 {
    http_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .status
}

/// `GET /metrics` on an admin listener.
fn metrics(admin: SocketAddr) -> Metrics {
    let r = http_exchange(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    Metrics::parse(&r.body_text())
}

/// How many nodes `/api/info` lists.
fn nodes_listed(admin: SocketAddr) -> usize {
    let (_, v) = api(admin, "info", &json!({}));
    v["result"]["nodes"].as_array().map_or(0, Vec::len)
}

/// The names `/api/info` lists.
fn node_names(admin: SocketAddr) -> Vec<String> {
    let (_, v) = api(admin, "info", &json!({}));
    v["result"]["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A Centrifugo-protocol client whose waits are bounded by the caller.
struct Client {
    ws: Ws,
    next: u32,
    inbox: Vec<Value>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let url = format!("ws://{addr}/connection/websocket");
        let (ws, _) = try_ws_connect(addr, url.as_str(), None)
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        // Short reads, so a wait ends on time; tungstenite resumes a frame
        // cut by a timeout on the next read.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut c = Client {
            ws,
            next: 1,
            inbox: Vec::new(),
        };
        let r = c.call("connect", json!({}));
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
        self.wait(&format!("reply {id}"), Duration::from_secs(5), |v| {
            v["id"] == id
        })
    }

    /// The first message `pick` accepts (removed from the inbox), reading
    /// for at most `timeout`.
    fn poll(&mut self, timeout: Duration, pick: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.inbox.iter().position(&pick) {
                return Some(self.inbox.remove(i));
            }
            if Instant::now() >= deadline {
                return None;
            }
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
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading ({:?} so far): {e}", self.inbox),
            }
        }
    }

    #[track_caller]
    fn wait(&mut self, what: &str, timeout: Duration, pick: impl Fn(&Value) -> bool) -> Value {
        match self.poll(timeout, pick) {
            Some(v) => v,
            None => panic!("no {what} within {timeout:?}; got {:?}", self.inbox),
        }
    }

    fn subscribe(&mut self, channel: &str) {
        let r = self.call("subscribe", json!({ "channel": channel }));
        assert!(r["subscribe"].is_object(), "{r}");
    }

    /// A publication on `channel` whose data has this `tag`.
    fn tagged(&mut self, channel: &str, tag: &str, timeout: Duration) -> Option<Value> {
        self.poll(timeout, |v| {
            v["push"]["channel"] == channel && v["push"]["pub"]["data"]["tag"] == tag
        })
    }

    /// The "insufficient state" (or any) unsubscribe push for `channel`.
    fn unsubscribed(&mut self, channel: &str, timeout: Duration) -> Option<Value> {
        self.poll(timeout, |v| {
            v["push"]["channel"] == channel && v["push"]["unsubscribe"].is_object()
        })
    }

    /// Everything that arrived up to a ping round trip from now.
    fn drain(&mut self) -> Vec<Value> {
        let r = self.call("ping", json!({}));
        assert!(r.get("error").is_none(), "{r}");
        std::mem::take(&mut self.inbox)
    }
}

/// Publishes `{"tag": tag, "k": k}` on `channel` through `admin`'s API
/// (k = 0, 1, …) until `client` receives one: a new subscription reaches
/// the broker asynchronously, after the subscribe reply.
#[track_caller]
fn deliver(admin: SocketAddr, client: &mut Client, channel: &str, tag: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for k in 0.. {
        let (status, v) = api(
            admin,
            "publish",
            &json!({"channel": channel, "data": {"tag": tag, "k": k}}),
        );
        assert_eq!((status, &v["result"]), (200, &json!({})), "{v}");
        if client
            .tagged(channel, tag, Duration::from_millis(250))
            .is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{tag:?} on {channel:?} never delivered; got {:?}",
            client.inbox
        );
    }
}

#[test]
fn a_node_cut_off_by_the_network_degrades_then_recovers() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: network namespaces need root");
        return;
    }
    let Some(ip_bin) = find(
        "ip",
        &["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"],
    ) else {
        eprintln!("SKIP: iproute2's ip is not installed");
        return;
    };
    let Some(redis_bin) = find("redis-server", &["/usr/bin/redis-server"]) else {
        eprintln!("SKIP: redis-server is not installed");
        return;
    };
    // Dropped in reverse: the nodes, then the broker, then the namespace.
    let Some(ns) = Netns::create(ip_bin) else {
        return;
    };
    let redis = Redis::start(&redis_bin, ns.root_ip);
    let t_start = Instant::now();

    // Node A, inside the namespace, on every address there (loopback for
    // requests from inside, the veth address from the root namespace);
    // its broker is the root end of the veth.
    let a_config = node_config("a", SocketAddrV4::new(ns.root_ip, redis.port), "0.0.0.0:0");
    let Some(mut a) = ns.enter(|| Gateway::start_on("0.0.0.0:0", &a_config)) else {
        return;
    };
    let a_port = a.addr.port();
    let a_admin_port = a.admin.expect("admin listener").port();
    // From inside the namespace.
    let a_local = SocketAddr::from(([127, 0, 0, 1], a_port));
    let a_admin = SocketAddr::from(([127, 0, 0, 1], a_admin_port));
    // From the root namespace, across the veth.
    let a_remote = SocketAddr::from((ns.ns_ip, a_port));
    a.addr = a_local;
    a.admin = Some(a_admin);

    // Node B in the root namespace, on loopback.
    let Some(b) = Gateway::start(&node_config(
        "b",
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, redis.port),
        "127.0.0.1:0",
    )) else {
        return;
    };
    let b_admin = b.admin.expect("admin listener");

    // Both up, each aware of the other through the broker.
    retry(Duration::from_secs(5), || {
        (ns.enter(|| nodes_listed(a_admin)) == 2 && nodes_listed(b_admin) == 2).then_some(())
    })
    .expect("both nodes list each other in /api/info");
    assert_eq!(ns.enter(|| health(a_local)), 200);
    assert_eq!(health(a_remote), 200, "node A reachable across the veth");
    assert_eq!(health(b.addr), 200);

    // Subscribers of "p": on A from inside the namespace (untouched by the
    // cut), on A from the root namespace (across it), on B.
    let mut sub_a = ns.enter(|| Client::connect(a_local));
    let mut sub_a_remote = Client::connect(a_remote);
    let mut sub_b = Client::connect(b.addr);
    for c in [&mut sub_a, &mut sub_a_remote, &mut sub_b] {
        c.subscribe("p");
    }
    // A publication on B reaches A's subscribers through the broker.
    deliver(b_admin, &mut sub_a, "p", "before");
    for c in [&mut sub_a_remote, &mut sub_b] {
        c.tagged("p", "before", Duration::from_secs(5))
            .expect("the first publication reaches every subscriber");
    }

    // The cut: no FIN, no RST, just silence.
    ns.set_link(false);
    let t_cut = Instant::now();
    let degraded = retry(Duration::from_secs(5), || {
        (ns.enter(|| health(a_local)) == 503).then(|| t_cut.elapsed())
    });
    let degraded = degraded.expect("node A never said it is degraded (5 s after the cut)");
    eprintln!("node A degraded {degraded:?} after the cut");
    assert!(
        degraded <= DEGRADE_WITHIN,
        "node A took {degraded:?} to notice the cut (3 × {PING_MS} ms pings)"
    );
    assert!(
        a.log().contains("silent for"),
        "the keepalive is what noticed:\n{}",
        a.log()
    );
    let (a_metrics, a_publish) = ns.enter(|| {
        let m = metrics(a_admin);
        let p = api(
            a_admin,
            "publish",
            &json!({"channel": "p", "data": {"tag": "refused"}}),
        );
        (m, p)
    });
    assert_eq!(a_metrics.get("gateway_broker_up", &[]), 0.0);
    assert_eq!(
        a_publish.1["error"]["code"], 100,
        "a publish on a cut-off node is refused: {:?}",
        a_publish
    );
    // Node B carries on.
    assert_eq!(health(b.addr), 200, "node B is not degraded");
    assert_eq!(metrics(b_admin).get("gateway_broker_up", &[]), 1.0);
    let (status, v) = api(
        b_admin,
        "publish",
        &json!({"channel": "p", "data": {"tag": "during"}}),
    );
    assert_eq!((status, &v["result"]), (200, &json!({})), "{v}");
    sub_b
        .tagged("p", "during", Duration::from_secs(3))
        .expect("node B delivers during the partition");
    // Each node stops hearing the other's info beacon (kept for three
    // info intervals).
    assert_eq!(node_names(b_admin), ["b"], "node B's /api/info");
    // Node A lists only itself, degraded.
    let (_, info) = ns.enter(|| api(a_admin, "info", &json!({})));
    let listed: Vec<(&Value, &Value)> = info["result"]["nodes"]
        .as_array()
        .map(|nodes| nodes.iter().map(|n| (&n["name"], &n["broker"])).collect())
        .unwrap_or_default();
    assert_eq!(
        listed,
        [(&json!("a"), &json!("degraded"))],
        "node A's /api/info: {info}"
    );

    // A partition longer than a reconnect attempt (connect timeout 1 s,
    // backoff up to 400 ms): A keeps trying and stays degraded throughout.
    while t_cut.elapsed() < HOLD_CUT {
        assert_eq!(
            ns.enter(|| health(a_local)),
            503,
            "node A said it was healthy {:?} into the partition",
            t_cut.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The link comes back.
    let cut_for = t_cut.elapsed();
    ns.set_link(true);
    let t_up = Instant::now();
    let recovered = retry(Duration::from_secs(10), || {
        (ns.enter(|| health(a_local)) == 200).then(|| t_up.elapsed())
    });
    let recovered = recovered.expect("node A never recovered (10 s after the link came back)");
    eprintln!("link down for {cut_for:?}; node A healthy again {recovered:?} after it came back");
    // Its subscribers are told they may have missed publications: the one
    // on the namespace's loopback, and the one whose TCP connection sat
    // through the cut.
    let unsub = sub_a
        .unsubscribed("p", Duration::from_secs(5))
        .expect("node A's subscriber gets an unsubscribe push after the reconnect");
    assert_eq!(unsub["push"]["unsubscribe"]["code"], 2500, "{unsub}");
    let unsub = sub_a_remote
        .unsubscribed("p", Duration::from_secs(10))
        .expect("the subscriber across the cut gets it too");
    assert_eq!(unsub["push"]["unsubscribe"]["code"], 2500, "{unsub}");
    // It did miss one: B's publication during the cut never reached A.
    let seen = sub_a.drain();
    assert!(
        !seen
            .iter()
            .any(|v| v["push"]["pub"]["data"]["tag"] == "during"),
        "a publication from the partition was delivered late: {seen:?}"
    );
    // B never lost its broker: no resync for its subscriber.
    let seen = sub_b.drain();
    assert!(
        !seen.iter().any(|v| v["push"]["unsubscribe"].is_object()),
        "node B's subscriber was unsubscribed: {seen:?}"
    );
    // Subscribing again works, and publications from B arrive again.
    sub_a.subscribe("p");
    sub_a_remote.subscribe("p");
    deliver(b_admin, &mut sub_a, "p", "after");
    sub_a_remote
        .tagged("p", "after", Duration::from_secs(5))
        .expect("delivered across the restored link");
    sub_b
        .tagged("p", "after", Duration::from_secs(5))
        .expect("node B's subscriber still receives");
    // And A publishes again.
    let (status, v) = ns.enter(|| {
        api(
            a_admin,
            "publish",
            &json!({"channel": "p", "data": {"tag": "from a"}}),
        )
    });
    assert_eq!((status, &v["result"]), (200, &json!({})), "{v}");
    sub_b
        .tagged("p", "from a", Duration::from_secs(5))
        .expect("node A's publication reaches node B");

    let m = ns.enter(|| metrics(a_admin));
    assert_eq!(m.get("gateway_broker_up", &[]), 1.0);
    assert!(
        m.get("gateway_broker_reconnects_total", &[]) >= 1.0,
        "{}",
        m.text
    );
    assert!(
        m.get("gateway_broker_resynced_total", &[]) >= 1.0,
        "{}",
        m.text
    );
    let m = metrics(b_admin);
    assert_eq!(
        m.get("gateway_broker_reconnects_total", &[]),
        0.0,
        "node B's broker connection survived"
    );
    eprintln!("partition test body took {:?}", t_start.elapsed());
}
