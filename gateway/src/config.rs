//! Gateway configuration, loaded from TOML.
//!
//! Every section denies unknown keys so a typo fails loudly at start-up instead
//! of silently running with a default. [`Config::validate`] checks the
//! relations between keys and names the offending key in its error.

use std::net::SocketAddr;
use std::path::Path;

use engine::{EngineConfig, EngineKey};
use serde::{Deserialize, Serialize};

pub mod broker;
pub mod upstream;
pub use broker::{BrokerConfig, BrokerKind, Placement, Sharded};
pub use upstream::{BackendConfig, OnError, ProxyConfig, UpstreamRoute};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was read.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TOML did not parse or a key has the wrong type or is unknown.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file that was parsed.
        path: String,
        /// toml's message, which names the key and the line.
        message: String,
    },
    /// A key parsed but its value is not usable.
    #[error("invalid config: `{key}` {problem}")]
    Invalid {
        /// Dotted key path, e.g. `io.recv_buffers`.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening socket and worker threads.
    pub server: ServerConfig,
    /// io_uring and buffer sizing.
    pub io: IoConfig,
    /// WebSocket routes and handshake policy.
    pub websocket: WebSocketConfig,
    /// `[[routes]]`: which application serves which path.
    pub routes: Vec<RouteConfig>,
    /// Size limits.
    pub limits: LimitsConfig,
    /// Timeouts, all in milliseconds.
    pub timeouts: TimeoutsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Admin listener and metrics.
    pub admin: AdminConfig,
    /// The `pubsub` app: Centrifugo client protocol, channels, fan-out.
    pub pubsub: PubSubConfig,
    /// The server HTTP API (publish, broadcast, subscribe, ...).
    pub api: ApiConfig,
    /// `[[backends]]`: HTTP backends of `upstream` routes and proxies.
    pub backends: Vec<BackendConfig>,
    /// `[broker]`: several gateways as one (Redis or NATS).
    pub broker: BrokerConfig,
}

/// `[server]`: where to listen and how many workers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (printed at start-up).
    pub listen: SocketAddr,
    /// Worker threads, each with its own ring and `SO_REUSEPORT` listener; 0 = one per online core.
    pub workers: usize,
    /// Pin worker `i` to the `i`-th CPU the process may run on (so `taskset` still decides the set).
    pub pin_workers: bool,
    /// `listen(2)` backlog per worker listener.
    pub backlog: u32,
    /// Open WebSocket and HTTP connections allowed across all workers; beyond it new ones get 503.
    pub max_connections: usize,
    /// Let another process listen on the same address too (`SO_REUSEPORT` spreads connections
    /// over both): for a deliberate hand-over, where a new gateway starts before the old one
    /// drains. Off, start-up fails if the address is already listened on, instead of silently
    /// sharing the port with a forgotten gateway.
    pub share_port: bool,
    /// `SO_SNDBUF` of every client connection in bytes (the kernel doubles it
    /// for its own overhead); 0 = kernel autotuning, up to `net.ipv4.tcp_wmem`'s
    /// maximum (4 MiB by default) per connection. Setting it caps the kernel
    /// memory a peer that stops reading can pin, on top of
    /// `io.max_send_queue_bytes`, and turns autotuning off for that socket.
    pub socket_send_buffer: u32,
    /// `SO_RCVBUF` of every client connection in bytes; 0 = kernel autotuning.
    pub socket_recv_buffer: u32,
    /// Direct descriptors kept free per worker to answer new connections
    /// with a fast 503 when the worker's file table (`io.file_table`) is
    /// otherwise full, instead of leaving them in the listen backlog until
    /// they time out. Also the room left for the worker's backend connections.
    pub overload_reserve: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
            workers: 0,
            pin_workers: true,
            backlog: 4096,
            max_connections: 100_000,
            share_port: false,
            socket_send_buffer: 0,
            socket_recv_buffer: 0,
            overload_reserve: 256,
        }
    }
}

/// `[io]`: ring and buffer sizing per worker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IoConfig {
    /// Submission queue entries per ring (the completion queue is sized larger, see DESIGN.md).
    pub ring_entries: u32,
    /// Size of one provided receive buffer in bytes.
    pub recv_buffer_size: u32,
    /// Provided receive buffers per worker (power of two, at most 32768).
    pub recv_buffers: u32,
    /// Bytes queued for sending to one connection before it is closed as a slow consumer (1008).
    pub max_send_queue_bytes: usize,
    /// Connections use direct descriptors: entries of each worker ring's
    /// registered file table instead of the process's descriptor table.
    /// The kernel caps each ring's table at the open-files limit, so a
    /// process holds that many connections *per worker*.
    pub direct_descriptors: bool,
    /// Entries of each worker's file table (direct descriptors); 0 = the
    /// open-files hard limit (`ulimit -Hn`, at most 1048576), the most the kernel allows.
    pub file_table: u32,
    /// The kernel fills receive buffers incrementally (`IOU_PBUF_RING_INC`,
    /// Linux 6.12; older kernels fall back with a warning): small reads of
    /// many connections share one buffer, so few buffers absorb a burst and
    /// idle connections touch no receive memory of their own.
    pub incremental_recv: bool,
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            ring_entries: 4096,
            recv_buffer_size: 64 * 1024,
            recv_buffers: 4,
            max_send_queue_bytes: 4 * 1024 * 1024,
            direct_descriptors: true,
            file_table: 0,
            incremental_recv: true,
        }
    }
}

/// An application a route can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// Every message is sent back (text stays text).
    Echo,
    /// Channels and fan-out, speaking the Centrifugo client protocol v2
    /// (JSON); see `[pubsub]`.
    Pubsub,
    /// Every event goes to an HTTP backend (`$connect`, messages,
    /// `$disconnect`), whose answers go back to the client; see
    /// `[routes.upstream]`.
    Upstream,
}

/// `[[routes]]`: one WebSocket path and the application behind it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Request path, matched exactly (the query string is ignored).
    pub path: String,
    /// The application: `echo`, `pubsub` or `upstream`.
    pub app: AppKind,
    /// The webhooks of an `upstream` route (required there, refused elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamRoute>,
}

/// `[websocket]`: handshake policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Shorthand for one echo route, `[[routes]] path = .. app = "echo"`,
    /// used when no `[[routes]]` are given (default `/echo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_path: Option<String>,
    /// Path answering `GET` with `200 ok` (no upgrade).
    pub health_path: String,
    /// Subprotocols the server speaks, in preference order.
    pub subprotocols: Vec<String>,
    /// Allowed `Origin` values; empty allows any (and a missing `Origin`).
    pub allowed_origins: Vec<String>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            echo_path: None,
            health_path: "/healthz".into(),
            subprotocols: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

/// `[limits]`: sizes the parser enforces.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message (all fragments together); larger ones are closed with 1009.
    pub max_message_bytes: usize,
    /// Largest single frame payload; larger ones are closed with 1009.
    pub max_frame_bytes: usize,
    /// Largest HTTP request head; larger ones get 431.
    pub max_handshake_bytes: usize,
    /// Most request headers; more get 431.
    pub max_headers: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024 * 1024,
            max_frame_bytes: 16 * 1024 * 1024,
            max_handshake_bytes: 8 * 1024,
            max_headers: 32,
        }
    }
}

/// `[timeouts]`, in milliseconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// From accept to a complete upgrade request.
    pub handshake_ms: u64,
    /// Nothing received for this long closes the connection (1001).
    pub idle_ms: u64,
    /// Send a ping after this long without receiving; 0 disables server pings.
    pub ping_interval_ms: u64,
    /// After our close frame, how long to wait for the peer's before dropping the TCP connection.
    pub close_ms: u64,
    /// On SIGTERM/SIGINT, how long to wait for connections to close before exiting.
    pub drain_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            handshake_ms: 10_000,
            idle_ms: 120_000,
            ping_interval_ms: 30_000,
            close_ms: 5_000,
            drain_ms: 10_000,
        }
    }
}

/// What clients of a channel namespace may do (Centrifugo's option names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelOptions {
    /// Clients with a user (from a token) may subscribe without a
    /// subscription token.
    pub allow_subscribe_for_client: bool,
    /// Anonymous clients may too (with `allow_subscribe_for_client`).
    pub allow_subscribe_for_anonymous: bool,
    /// Clients with a user may publish.
    pub allow_publish_for_client: bool,
    /// Anonymous clients may too (with `allow_publish_for_client`).
    pub allow_publish_for_anonymous: bool,
    /// Clients subscribed to the channel may publish to it.
    pub allow_publish_for_subscriber: bool,
}

/// `[[pubsub.namespaces]]`: channels named `name:...`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// The part of a channel name before the first `:`.
    pub name: String,
    /// Clients with a user may subscribe without a subscription token.
    #[serde(default)]
    pub allow_subscribe_for_client: bool,
    /// Anonymous clients may too (with `allow_subscribe_for_client`).
    #[serde(default)]
    pub allow_subscribe_for_anonymous: bool,
    /// Clients with a user may publish.
    #[serde(default)]
    pub allow_publish_for_client: bool,
    /// Anonymous clients may too (with `allow_publish_for_client`).
    #[serde(default)]
    pub allow_publish_for_anonymous: bool,
    /// Clients subscribed to the channel may publish to it.
    #[serde(default)]
    pub allow_publish_for_subscriber: bool,
}

impl Namespace {
    /// Its options.
    pub fn options(&self) -> ChannelOptions {
        ChannelOptions {
            allow_subscribe_for_client: self.allow_subscribe_for_client,
            allow_subscribe_for_anonymous: self.allow_subscribe_for_anonymous,
            allow_publish_for_client: self.allow_publish_for_client,
            allow_publish_for_anonymous: self.allow_publish_for_anonymous,
            allow_publish_for_subscriber: self.allow_publish_for_subscriber,
        }
    }
}

/// What happens to a subscriber whose send queue is over
/// `pubsub.client_queue_max_bytes` when a publication arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowPolicy {
    /// Skip this publication for that subscriber (counted).
    Drop,
    /// Disconnect it with 3008 "slow" (counted); the SDK reconnects.
    Disconnect,
}

/// `[pubsub]`: the Centrifugo-protocol app's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PubSubConfig {
    /// Connect without a token (user "").
    pub allow_anonymous: bool,
    /// HMAC key of HS256 connection and subscription tokens; empty: tokens
    /// are refused (3500 "invalid token").
    pub token_hmac_secret: String,
    /// App-level ping (`{}`) interval, sent whatever the traffic.
    pub ping_interval_ms: u64,
    /// The client's pong (anything) must arrive within this after a ping,
    /// else disconnect 3012 "no pong".
    pub pong_timeout_ms: u64,
    /// A connection that has not sent `connect` within this (checked at its
    /// ping ticks) is closed with 3502 "stale".
    pub stale_ms: u64,
    /// Channels one connection may subscribe to (error 106 beyond).
    pub channel_limit: usize,
    /// Longest channel name (error 107 beyond).
    pub channel_max_length: usize,
    /// Largest publication data from a client or the API (error 106 / 413).
    pub max_publication_bytes: usize,
    /// Unsent bytes on a subscriber before it counts as slow.
    pub client_queue_max_bytes: usize,
    /// What a slow subscriber gets.
    pub slow_subscriber: SlowPolicy,
    /// Publications waiting per worker for its share of a fan-out; full:
    /// dropped for that worker and counted.
    pub mailbox_capacity: usize,
    /// Options of channels without a namespace.
    pub without_namespace: ChannelOptions,
    /// Named namespaces; any other `ns:` prefix is unknown (error 102).
    pub namespaces: Vec<Namespace>,
    /// Connect, RPC, publish and subscribe proxies to a backend.
    pub proxy: ProxyConfig,
}

impl Default for PubSubConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: false,
            token_hmac_secret: String::new(),
            ping_interval_ms: 25_000,
            pong_timeout_ms: 8_000,
            stale_ms: 10_000,
            channel_limit: 128,
            channel_max_length: 255,
            max_publication_bytes: 65_536,
            client_queue_max_bytes: 1 << 20,
            slow_subscriber: SlowPolicy::Disconnect,
            mailbox_capacity: 65_536,
            without_namespace: ChannelOptions::default(),
            namespaces: Vec::new(),
            proxy: ProxyConfig::default(),
        }
    }
}

/// `[api]`: the server HTTP API, Centrifugo-shaped (`POST /api/publish`, ...).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The key, in `X-API-Key` or `Authorization: apikey KEY`; empty: the
    /// API is off (404).
    pub key: String,
    /// Its own listener (served by worker 0's ring); absent: the admin
    /// listener serves it.
    pub listen: Option<SocketAddr>,
    /// Largest request body (413 beyond).
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            key: String::new(),
            listen: None,
            max_body_bytes: 1 << 20,
        }
    }
}

/// `[admin]`: the admin HTTP listener (`GET /metrics`) and metrics collection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener, served by worker 0's ring; absent = none.
    /// Keep it off the public interface: it is unauthenticated.
    pub listen: Option<SocketAddr>,
    /// Collect metrics. `false` (or no `listen`) skips all metric work: no
    /// recorder, no publishing, no per-message latency bookkeeping; the admin
    /// listener then answers `/metrics` with 404. For measuring the cost of
    /// metrics, and for setups that do not scrape.
    pub metrics: bool,
    /// How often each worker copies its counters into the recorder (ms).
    /// A scrape sees values at most this old (worker 0's are always fresh).
    pub publish_ms: u64,
    /// Message latency is recorded for one receive in this many (1 = all).
    /// Tracking every reply to its send completion measurably slowed
    /// one-message-per-receive loads (results/metrics-cost.md); a sample
    /// chosen without regard to latency keeps the quantiles unbiased.
    pub latency_sample_every: u32,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: None,
            metrics: true,
            publish_ms: 1000,
            latency_sample_every: 16,
        }
    }
}

impl AdminConfig {
    /// Whether metrics are collected: an admin listener exists to serve them
    /// and `metrics` is on.
    pub fn metrics_enabled(&self) -> bool {
        self.listen.is_some() && self.metrics
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// One of error, warn, info, debug, trace.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values and the relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, problem: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                problem: problem.into(),
            })
        }
        let io = &self.io;
        if let Err((key, problem)) = self.engine().check() {
            let key = match key {
                EngineKey::RingEntries => "io.ring_entries",
                EngineKey::RecvBuffers => "io.recv_buffers",
                EngineKey::RecvBufferSize => "io.recv_buffer_size",
                EngineKey::FileTable => "io.file_table",
            };
            return bad(key, problem);
        }
        if io.file_table != 0 && !io.direct_descriptors {
            return bad(
                "io.file_table",
                "is for direct descriptors (io.direct_descriptors = true)",
            );
        }
        let table = self.engine().file_table;
        if table != 0 && self.server.overload_reserve >= table {
            return bad(
                "server.overload_reserve",
                format!(
                    "({}) must be less than the file table ({table} entries per worker)",
                    self.server.overload_reserve
                ),
            );
        }
        if io.max_send_queue_bytes < 1024 {
            return bad("io.max_send_queue_bytes", "must be at least 1024");
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections", "must be at least 1");
        }
        if self.server.backlog == 0 {
            return bad("server.backlog", "must be at least 1");
        }
        for (key, v) in [
            ("server.socket_send_buffer", self.server.socket_send_buffer),
            ("server.socket_recv_buffer", self.server.socket_recv_buffer),
        ] {
            if v != 0 && !(2048..=(1 << 30)).contains(&v) {
                return bad(
                    key,
                    "must be 0 (kernel autotuning) or from 2048 to 1073741824",
                );
            }
        }
        let l = &self.limits;
        if l.max_frame_bytes == 0 {
            return bad("limits.max_frame_bytes", "must be at least 1");
        }
        if l.max_message_bytes < l.max_frame_bytes {
            return bad(
                "limits.max_message_bytes",
                format!(
                    "({}) must be at least limits.max_frame_bytes ({})",
                    l.max_message_bytes, l.max_frame_bytes
                ),
            );
        }
        if l.max_handshake_bytes < 256 {
            return bad("limits.max_handshake_bytes", "must be at least 256");
        }
        if !(4..=256).contains(&l.max_headers) {
            return bad("limits.max_headers", "must be from 4 to 256");
        }
        let ws = &self.websocket;
        if let (Some(p), false) = (&ws.echo_path, self.routes.is_empty()) {
            return bad(
                "websocket.echo_path",
                format!(
                    "cannot be combined with [[routes]]; add `path = {p:?}, app = \"echo\"` \
                     there instead"
                ),
            );
        }
        let routes = self.effective_routes();
        let mut paths: Vec<(&'static str, &str)> = vec![("websocket.health_path", &ws.health_path)];
        let route_key = if self.routes.is_empty() {
            "websocket.echo_path"
        } else {
            "routes.path"
        };
        paths.extend(routes.iter().map(|r| (route_key, r.path.as_str())));
        for (i, (key, path)) in paths.iter().enumerate() {
            if !path.starts_with('/') {
                return bad(key, format!("must start with '/', got {path:?}"));
            }
            if path.contains('?') {
                return bad(key, format!("must not contain a query, got {path:?}"));
            }
            if paths[..i].iter().any(|(_, p)| p == path) {
                return bad(
                    key,
                    format!("{path:?} is used twice (routes and health_path must differ)"),
                );
            }
        }
        if routes.len() > 255 {
            return bad("routes", "at most 255 routes");
        }
        for p in &ws.subprotocols {
            if p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b",;\"".contains(&b))
            {
                return bad(
                    "websocket.subprotocols",
                    format!("{p:?} is not an HTTP token"),
                );
            }
        }
        let t = &self.timeouts;
        for (key, v) in [
            ("timeouts.handshake_ms", t.handshake_ms),
            ("timeouts.idle_ms", t.idle_ms),
            ("timeouts.close_ms", t.close_ms),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if t.ping_interval_ms != 0 && t.ping_interval_ms >= t.idle_ms {
            return bad(
                "timeouts.ping_interval_ms",
                format!(
                    "({}) must be below timeouts.idle_ms ({}) or 0",
                    t.ping_interval_ms, t.idle_ms
                ),
            );
        }
        let ps = &self.pubsub;
        for (key, v) in [
            ("pubsub.ping_interval_ms", ps.ping_interval_ms),
            ("pubsub.pong_timeout_ms", ps.pong_timeout_ms),
            ("pubsub.stale_ms", ps.stale_ms),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if ps.pong_timeout_ms >= ps.ping_interval_ms {
            return bad(
                "pubsub.pong_timeout_ms",
                format!(
                    "({}) must be below pubsub.ping_interval_ms ({})",
                    ps.pong_timeout_ms, ps.ping_interval_ms
                ),
            );
        }
        for (key, v) in [
            ("pubsub.channel_limit", ps.channel_limit),
            ("pubsub.channel_max_length", ps.channel_max_length),
            ("pubsub.max_publication_bytes", ps.max_publication_bytes),
            ("pubsub.client_queue_max_bytes", ps.client_queue_max_bytes),
            ("pubsub.mailbox_capacity", ps.mailbox_capacity),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        for (i, ns) in ps.namespaces.iter().enumerate() {
            if ns.name.is_empty() || ns.name.contains(':') {
                return bad(
                    "pubsub.namespaces.name",
                    format!("{:?} must be non-empty and contain no ':'", ns.name),
                );
            }
            if ps.namespaces[..i].iter().any(|n| n.name == ns.name) {
                return bad(
                    "pubsub.namespaces.name",
                    format!("{:?} is declared twice", ns.name),
                );
            }
        }
        if self.api.max_body_bytes == 0 {
            return bad("api.max_body_bytes", "must be at least 1");
        }
        if self.api.listen.is_some() && self.api.key.is_empty() {
            return bad(
                "api.key",
                "must be set when api.listen is (an API without a key)",
            );
        }
        if !self.api.key.is_empty() && self.api.listen.is_none() && self.admin.listen.is_none() {
            return bad(
                "api.listen",
                "or admin.listen must be set: api.key enables the API but nothing would serve it",
            );
        }
        self.validate_backends()?;
        broker::check(&self.broker)
            .map_err(|(key, problem)| ConfigError::Invalid { key, problem })?;
        let max = crate::broker::MAX_HOLDERS;
        if self.broker.kind != BrokerKind::Memory
            && self.broker.placement == Placement::Thread
            && self.effective_workers() > max
        {
            return Err(ConfigError::Invalid {
                key: "server.workers",
                problem: format!(
                    "is {} here; the broker thread serves at most {max} workers \
                     (set server.workers, or broker.placement = \"workers\")",
                    self.effective_workers()
                ),
            });
        }
        let admin = &self.admin;
        if !(10..=60_000).contains(&admin.publish_ms) {
            return bad("admin.publish_ms", "must be from 10 to 60000");
        }
        if !(1..=1_000_000).contains(&admin.latency_sample_every) {
            return bad("admin.latency_sample_every", "must be from 1 to 1000000");
        }
        if let Some(addr) = admin.listen {
            let server = self.server.listen;
            if addr.port() != 0
                && addr.port() == server.port()
                && (addr.ip() == server.ip()
                    || addr.ip().is_unspecified()
                    || server.ip().is_unspecified())
            {
                return bad(
                    "admin.listen",
                    format!("({addr}) must differ from server.listen ({server})"),
                );
            }
        }
        if log_level(&self.log.level).is_none() {
            return bad(
                "log.level",
                format!(
                    "{:?} is not one of error, warn, info, debug, trace",
                    self.log.level
                ),
            );
        }
        Ok(())
    }

    /// Checks `[[backends]]`, the `upstream` routes and `[pubsub.proxy]`.
    fn validate_backends(&self) -> Result<(), ConfigError> {
        let bad = |(key, problem): (&'static str, String)| ConfigError::Invalid { key, problem };
        for (i, b) in self.backends.iter().enumerate() {
            upstream::check_backend(b).map_err(bad)?;
            if self.backends[..i].iter().any(|o| o.name == b.name) {
                return Err(bad((
                    "backends.name",
                    format!("{:?} is declared twice", b.name),
                )));
            }
        }
        let known = |key: &'static str, name: &str| {
            if self.backends.iter().any(|b| b.name == name) {
                Ok(())
            } else {
                Err(bad((
                    key,
                    format!("{name:?} is not the name of a [[backends]] entry"),
                )))
            }
        };
        for r in &self.routes {
            match (&r.upstream, r.app) {
                (Some(u), AppKind::Upstream) => {
                    known("routes.upstream.backend", &u.backend)?;
                    for (key, path) in [
                        ("routes.upstream.connect_path", &u.connect_path),
                        ("routes.upstream.disconnect_path", &u.disconnect_path),
                    ] {
                        upstream::check_path(key, path).map_err(bad)?;
                    }
                    if u.message_path.is_empty() {
                        return Err(bad(("routes.upstream.message_path", "must be set".into())));
                    }
                    upstream::check_path("routes.upstream.message_path", &u.message_path)
                        .map_err(bad)?;
                    if u.max_pending == 0 || u.max_pending > 65_536 {
                        return Err(bad((
                            "routes.upstream.max_pending",
                            "must be from 1 to 65536".into(),
                        )));
                    }
                }
                (None, AppKind::Upstream) => {
                    return Err(bad((
                        "routes.upstream",
                        format!(
                            "is required for the upstream route {:?} (at least `backend`)",
                            r.path
                        ),
                    )))
                }
                (Some(_), _) => {
                    return Err(bad((
                        "routes.upstream",
                        format!("is only for app = \"upstream\" (route {:?})", r.path),
                    )))
                }
                (None, _) => {}
            }
        }
        let proxy = &self.pubsub.proxy;
        for (key, path) in [
            ("pubsub.proxy.connect_path", &proxy.connect_path),
            ("pubsub.proxy.rpc_path", &proxy.rpc_path),
            ("pubsub.proxy.publish_path", &proxy.publish_path),
            ("pubsub.proxy.subscribe_path", &proxy.subscribe_path),
        ] {
            upstream::check_path(key, path).map_err(bad)?;
        }
        if proxy.any() {
            known("pubsub.proxy.backend", &proxy.backend)?;
        }
        Ok(())
    }

    /// The routes in force: `[[routes]]`, or the `websocket.echo_path`
    /// shorthand (default `/echo`) when there are none.
    pub fn effective_routes(&self) -> Vec<RouteConfig> {
        if self.routes.is_empty() {
            vec![RouteConfig {
                path: self
                    .websocket
                    .echo_path
                    .clone()
                    .unwrap_or_else(|| "/echo".into()),
                app: AppKind::Echo,
                upstream: None,
            }]
        } else {
            self.routes.clone()
        }
    }

    /// This node's name: `broker.node`, else the listen address.
    pub fn node_name(&self) -> String {
        if self.broker.node.is_empty() {
            self.server.listen.to_string()
        } else {
            self.broker.node.clone()
        }
    }

    /// The engine sizing of each worker.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            ring_entries: self.io.ring_entries,
            recv_buffers: self.io.recv_buffers,
            recv_buffer_size: self.io.recv_buffer_size,
            drain_ms: self.timeouts.drain_ms,
            file_table: match (self.io.direct_descriptors, self.io.file_table) {
                (false, _) => 0,
                (true, 0) => engine::default_file_table(),
                (true, n) => n,
            },
            incremental_recv: self.io.incremental_recv,
        }
    }

    /// Worker count with 0 resolved to the online CPUs this process may use.
    pub fn effective_workers(&self) -> usize {
        if self.server.workers > 0 {
            self.server.workers
        } else {
            engine::affinity::allowed_cpus().len().max(1)
        }
    }
}

/// Parses a log level name (see [`engine::logger::parse_level`]).
pub fn log_level(s: &str) -> Option<log::LevelFilter> {
    engine::logger::parse_level(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(
            c.effective_routes(),
            [RouteConfig {
                path: "/echo".into(),
                app: AppKind::Echo,
                upstream: None,
            }]
        );
        assert_eq!((c.io.recv_buffers, c.io.recv_buffer_size), (4, 65536));
        assert_eq!(c.admin.listen, None, "no admin listener unless configured");
        assert!(!c.admin.metrics_enabled());
    }

    #[test]
    fn admin_section() {
        let c = Config::parse(
            "[admin]\nlisten = \"127.0.0.1:9100\"\npublish_ms = 250\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.admin.listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(c.admin.metrics_enabled());
        assert_eq!(c.admin.publish_ms, 250);
        let off =
            Config::parse("[admin]\nlisten = \"127.0.0.1:0\"\nmetrics = false\n", "t").unwrap();
        assert!(!off.admin.metrics_enabled());
        // check-config prints the admin section back in a form that parses.
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("[admin]"), "{text}");
        Config::parse(&text, "printed").unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\nworkerz = 2\n");
        assert!(e.contains("workerz"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = err("[io]\nrecv_buffers = \"many\"\n");
        assert!(e.contains("recv_buffers"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        for (text, key) in [
            ("[io]\nrecv_buffers = 1000\n", "io.recv_buffers"),
            ("[io]\nring_entries = 3\n", "io.ring_entries"),
            ("[io]\nrecv_buffer_size = 10\n", "io.recv_buffer_size"),
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            (
                "[server]\nsocket_send_buffer = 100\n",
                "server.socket_send_buffer",
            ),
            (
                "[limits]\nmax_frame_bytes = 10\nmax_message_bytes = 5\n",
                "limits.max_message_bytes",
            ),
            ("[limits]\nmax_headers = 1000\n", "limits.max_headers"),
            ("[websocket]\necho_path = \"echo\"\n", "websocket.echo_path"),
            (
                "[websocket]\nsubprotocols = [\"a b\"]\n",
                "websocket.subprotocols",
            ),
            (
                "[timeouts]\nping_interval_ms = 5000\nidle_ms = 1000\n",
                "timeouts.ping_interval_ms",
            ),
            ("[timeouts]\nclose_ms = 0\n", "timeouts.close_ms"),
            ("[log]\nlevel = \"loud\"\n", "log.level"),
            ("[admin]\npublish_ms = 5\n", "admin.publish_ms"),
            (
                "[admin]\nlatency_sample_every = 0\n",
                "admin.latency_sample_every",
            ),
            (
                "[server]\nlisten = \"0.0.0.0:80\"\n[admin]\nlisten = \"127.0.0.1:80\"\n",
                "admin.listen",
            ),
            ("[admin]\nlisten = \"nowhere\"\n", "listen"),
            (
                "[pubsub]\nping_interval_ms = 1000\npong_timeout_ms = 1000\n",
                "pubsub.pong_timeout_ms",
            ),
            (
                "[[pubsub.namespaces]]\nname = \"a:b\"\n",
                "pubsub.namespaces.name",
            ),
            (
                "[[pubsub.namespaces]]\nname = \"chat\"\nallow_subscribe = true\n",
                "allow_subscribe",
            ),
            ("[api]\nlisten = \"127.0.0.1:1\"\n", "api.key"),
            ("[[routes]]\npath = \"/x\"\napp = \"chat\"\n", "app"),
            ("[[backends]]\nname = \"\"\n", "backends.name"),
            (
                "[[backends]]\nname = \"a\"\naddress = \"0.0.0.0:80\"\n",
                "backends.address",
            ),
            (
                "[[backends]]\nname = \"a\"\npool_size = 0\n",
                "backends.pool_size",
            ),
            (
                "[[backends]]\nname = \"a\"\n[[backends]]\nname = \"a\"\n",
                "backends.name",
            ),
            (
                "[[routes]]\npath = \"/u\"\napp = \"upstream\"\n",
                "routes.upstream",
            ),
            (
                "[[routes]]\npath = \"/u\"\napp = \"upstream\"\n[routes.upstream]\nbackend = \"b\"\n",
                "routes.upstream.backend",
            ),
            (
                "[[routes]]\npath = \"/e\"\napp = \"echo\"\n[routes.upstream]\nbackend = \"b\"\n",
                "routes.upstream",
            ),
            (
                "[[backends]]\nname = \"b\"\n[[routes]]\npath = \"/u\"\napp = \"upstream\"\n\
                 [routes.upstream]\nbackend = \"b\"\nmessage_path = \"hook\"\n",
                "routes.upstream.message_path",
            ),
            (
                "[pubsub.proxy]\nconnect_path = \"/c\"\n",
                "pubsub.proxy.backend",
            ),
            ("[broker]\nplacement = \"workers\"\n", "broker.placement"),
            (
                "[server]\nworkers = 129\n[broker]\nkind = \"redis\"\naddresses = [\"127.0.0.1:6379\"]\n",
                "server.workers",
            ),
            ("[broker]\nplacement = \"everywhere\"\n", "placement"),
        ] {
            let e = err(text);
            assert!(e.contains(key), "{text:?} -> {e}");
        }
    }

    #[test]
    fn shipped_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        for name in [
            "prod.toml",
            "dev.toml",
            "cluster-redis.toml",
            "cluster-nats.toml",
        ] {
            Config::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
