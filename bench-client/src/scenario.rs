//! Scenarios: what load to generate, read from TOML.
//!
//! Any numeric key given as a list expands into a matrix: the cartesian
//! product of all lists, run cell by cell in order (the first list varies
//! slowest). `--set key=value` overrides a key before expansion. Unknown
//! keys and bad values fail with the key's name.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use engine::{EngineConfig, EngineKey};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::pubsub::{ApiPublisher, Pattern, PublishOpts, PublishTo, SubscribeOpts, Via};
use crate::target_url;

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type or an unknown key (toml's message names it).
    #[error("invalid scenario {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What toml said.
        message: String,
    },
    /// A value that parsed but cannot be used.
    #[error("invalid scenario: `{key}` {problem}")]
    Invalid {
        /// Dotted key, e.g. `load.in_flight`.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A `--set` argument that is not `key=value`.
    #[error("invalid --set {arg:?}: {problem}")]
    Set {
        /// The argument as given.
        arg: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: &str, problem: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// One run's parameters (one matrix cell).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name used in reports and the default output directory (defaults to the file stem).
    #[serde(default)]
    pub name: String,
    /// Free text for the report.
    #[serde(default)]
    pub description: String,
    /// What to load.
    pub target: Target,
    /// How to load it.
    pub load: Load,
    /// How the client itself runs.
    #[serde(default)]
    pub client: ClientOpts,
    /// `subscribe` mode: channels and who subscribes where.
    #[serde(default)]
    pub subscribe: SubscribeOpts,
    /// `subscribe` mode: who publishes, how often, how.
    #[serde(default)]
    pub publish: PublishOpts,
    /// `session` mode: virtual users and their stages.
    #[serde(default)]
    pub session: SessionOpts,
    /// Pass/fail criteria; any failing one makes the exit status 1.
    #[serde(default)]
    pub thresholds: Thresholds,
}

/// `[target]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `ws://` URLs; connections are spread over them round-robin.
    pub urls: Vec<String>,
    /// Replaces the path of every URL (e.g. to point one scenario at `/echo`).
    #[serde(default)]
    pub path: Option<String>,
    /// The server's Prometheus endpoint; `process_cpu_seconds_total` and
    /// `process_resident_memory_bytes` are sampled before and after.
    #[serde(default)]
    pub metrics_url: Option<String>,
    /// The server's PID (same machine); CPU and RSS are read from /proc.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// What each connection does once open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Ramp up, hold, report handshake latency and how many stayed up.
    ConnectOnly,
    /// Closed loop: `in_flight` messages outstanding per connection, RTT per message.
    Echo,
    /// Open loop at `rate` messages per second per connection; latency from
    /// the scheduled send time (coordinated-omission corrected) and raw.
    Rate,
    /// Heartbeat pings every `ping_interval_ms`; pong RTT and ratio.
    Ping,
    /// Centrifugo-protocol subscribers (`[subscribe]`) and a publisher
    /// (`[publish]`); delivery latency, deliveries/s, missing, duplicate
    /// and out-of-order deliveries.
    Subscribe,
    /// k6-style virtual users in stages (`[session]`): connect, send every
    /// 1–3 s, leave, close, start again (seed 004's chat hub).
    Session,
    /// Seed 000's transaction at `rate` per connection (`[load.ack]`): a
    /// JSON message with an id, the server's ack with that id, the
    /// client's ack back; TPS, timeouts, error answers and close codes.
    Ack,
}

impl Mode {
    /// The name used in scenario files and reports.
    pub fn label(self) -> &'static str {
        match self {
            Mode::ConnectOnly => "connect-only",
            Mode::Echo => "echo",
            Mode::Rate => "rate",
            Mode::Ping => "ping",
            Mode::Subscribe => "subscribe",
            Mode::Session => "session",
            Mode::Ack => "ack",
        }
    }

    /// `[load]` keys this mode never reads, so varying one would repeat the same run.
    pub fn ignored_keys(self) -> &'static [&'static str] {
        match self {
            Mode::ConnectOnly => &[
                "message_size",
                "message_kind",
                "in_flight",
                "rate",
                "ping_interval_ms",
                "message_timeout_ms",
                "churn_per_sec",
            ],
            Mode::Echo => &["rate", "ping_interval_ms", "churn_per_sec"],
            Mode::Rate => &["in_flight", "ping_interval_ms", "churn_per_sec"],
            // A ping carries its send time as payload.
            Mode::Ping => &[
                "message_size",
                "message_kind",
                "in_flight",
                "rate",
                "churn_per_sec",
            ],
            // Publications are JSON text; their rate is `publish.rate`.
            // `message_timeout_ms` bounds what churn counts as in flight.
            Mode::Subscribe => &["message_kind", "in_flight", "rate", "ping_interval_ms"],
            // VUs follow `session.stages`, not a fixed connection count.
            Mode::Session => &[
                "connections",
                "connect_rate",
                "ramp_secs",
                "duration_secs",
                "message_kind",
                "in_flight",
                "rate",
                "ping_interval_ms",
                "message_timeout_ms",
                "churn_per_sec",
            ],
            // Messages are JSON text; the bound is `ack.max_outstanding`.
            // `message_timeout_ms` is the default of `ack.timeout_ms`.
            Mode::Ack => &[
                "message_kind",
                "in_flight",
                "ping_interval_ms",
                "churn_per_sec",
            ],
        }
    }
}

/// Text or binary messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Opcode 1; the payload is ASCII.
    Text,
    /// Opcode 2.
    Binary,
}

/// `[load]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Load {
    /// What connections do.
    pub mode: Mode,
    /// Connections to open.
    pub connections: u64,
    /// New connections per second; 0 = as fast as the machine goes.
    pub connect_rate: f64,
    /// Alternative to `connect_rate`: open all connections evenly over this many seconds.
    pub ramp_secs: f64,
    /// After the ramp, seconds of traffic that are not measured.
    pub warmup_secs: f64,
    /// Seconds measured (connect-only: seconds the connections are held).
    pub duration_secs: f64,
    /// After the measured window, seconds to wait for outstanding replies.
    pub cooldown_secs: f64,
    /// Payload bytes per message.
    pub message_size: u64,
    /// Text or binary.
    pub message_kind: MessageKind,
    /// Echo mode: messages outstanding per connection.
    pub in_flight: u64,
    /// Rate and ack modes: messages per second per connection.
    pub rate: f64,
    /// Ping mode: milliseconds between pings per connection.
    pub ping_interval_ms: f64,
    /// A reply not received within this many milliseconds counts as timed out.
    pub message_timeout_ms: u64,
    /// TCP connect plus HTTP upgrade must finish within this many milliseconds.
    pub handshake_timeout_ms: u64,
    /// Subscribe mode: connections closed and reopened per second (all
    /// processes together) during the warm-up and the window, oldest
    /// first, so spread over the targets as the connections are. A
    /// reopened connection has the closed one's number, so the same target
    /// and channels, and subscribes again. The report counts reconnects,
    /// their connect and resubscribe latency, and the publications in
    /// flight to a connection when it was closed (missed during churn, not
    /// missing); a reopened subscription expects the publications sent
    /// after its subscribe reply. 0 = no churn.
    pub churn_per_sec: f64,
    /// Subscribe mode: failover. A subscriber whose connection the server
    /// closed or reset (a node killed, say), or whose reconnect attempt
    /// failed (refused, reset, timed out, bad answer), connects again after
    /// `reconnect_delay_ms` to the next URL of `target.urls` (round robin
    /// from its own) and subscribes again, as Centrifugo's SDKs do. The
    /// report counts drops, attempts, their outcome, the latency from the
    /// drop to the last subscribe reply, when every dropped subscriber was
    /// back, and the publications sent while a subscriber was away (missed
    /// during reconnect, not missing). Attempts stop with the window.
    /// Likewise, a subscription the server ends with an unsubscribe of code
    /// 2500-2999 (a node whose broker came back) is subscribed again on the
    /// same connection, and retried after that delay on a temporary error.
    pub reconnect: bool,
    /// `[min, max]` milliseconds: each reconnect attempt waits a uniformly
    /// random delay in this range (jitter, so a dropped node's subscribers
    /// do not all come back at once).
    pub reconnect_delay_ms: Vec<u64>,
    /// Ack mode: `[load.ack]`, the transaction's messages.
    pub ack: AckOpts,
}

/// `[load.ack]`: ack mode's envelopes and bookkeeping. In the envelopes
/// `{id}` is the message id (per connection: 1, 2, 3, ...) and `{payload}`
/// filler (`a`..`z`) sized so the whole message is `load.message_size`
/// bytes; every other character is literal.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AckOpts {
    /// The message: `{id}` once and `{payload}` once. Its text without
    /// them plus 10 id digits must fit in `load.message_size`.
    pub send: String,
    /// The client's ack, sent when the server's ack arrives in time: `{id}`
    /// once, no `{payload}`. Empty: no client ack (the transaction ends
    /// at the server's ack).
    pub ack: String,
    /// The JSON field holding the id in the server's answers (scanned as
    /// `"<id_field>":<digits>`; the gateway's `{"error":{..,"id":N}}` too).
    pub id_field: String,
    /// The field an answer's type is read from.
    pub type_field: String,
    /// An answer is an ack only when `type_field` holds this string
    /// (so pushes carrying an id are not taken for acks); "" = any answer
    /// with a numeric `id_field` is an ack.
    pub reply_type: String,
    /// An ack later than this many milliseconds after its message is a
    /// timeout (failed). Default: `load.message_timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// Messages awaiting their ack per connection at most; a send due
    /// while this many wait is skipped and counted (offered load the
    /// system did not take).
    pub max_outstanding: u64,
}

impl Default for AckOpts {
    fn default() -> Self {
        Self {
            send: crate::ack::DEFAULT_SEND.into(),
            ack: crate::ack::DEFAULT_ACK.into(),
            id_field: "id".into(),
            type_field: "type".into(),
            reply_type: "ack".into(),
            timeout_ms: None,
            max_outstanding: 64,
        }
    }
}

impl Default for Load {
    fn default() -> Self {
        Self {
            mode: Mode::Echo,
            connections: 100,
            connect_rate: 0.0,
            ramp_secs: 0.0,
            warmup_secs: 1.0,
            duration_secs: 10.0,
            cooldown_secs: 1.0,
            message_size: 100,
            message_kind: MessageKind::Binary,
            in_flight: 1,
            rate: 1.0,
            ping_interval_ms: 1000.0,
            message_timeout_ms: 5000,
            handshake_timeout_ms: 5000,
            churn_per_sec: 0.0,
            reconnect: false,
            reconnect_delay_ms: vec![0, 1000],
            ack: AckOpts::default(),
        }
    }
}

/// `[client]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientOpts {
    /// Worker threads per process, each with its own ring.
    pub workers: u64,
    /// CPUs to pin workers to (worker i → cpus[i % len]); empty = no pinning.
    pub cpus: Vec<usize>,
    /// Source addresses to bind, round-robin (each has its own ~28k ephemeral ports).
    pub source_addrs: Vec<IpAddr>,
    /// Or a CIDR inside 127.0.0.0/8 whose addresses are used round-robin.
    pub source_cidr: Option<String>,
    /// Connections per process; larger runs are spread over child processes
    /// (the open-files limit is per process) and their histograms merged.
    pub max_conns_per_process: u64,
    /// io_uring submission queue entries per worker.
    pub ring_entries: u32,
    /// Provided receive buffers per worker (power of two). Few on purpose:
    /// replies are read as soon as they arrive, and a small pool stays in
    /// cache (4,096 x 16 KiB cost the client ~8 % more CPU per message than
    /// 256, see results/client-efficiency.md); a burst beyond it only
    /// re-arms the receive (ENOBUFS), it loses nothing.
    pub recv_buffers: u32,
    /// Bytes per receive buffer.
    pub recv_buffer_size: u32,
    /// Rate and ping modes: sends due within this many µs of a wake-up go
    /// out in it, early, instead of each waking the client (latency is then
    /// measured from the actual send). Wake-ups are most of rate mode's CPU:
    /// 1000 cut the client's CPU per message 40-57 % at 5k-20k msg/s, but the
    /// offered load gets burstier by as much (results/client-efficiency.md).
    /// 0 = every send on its own schedule.
    pub send_batch_us: u64,
    /// At the end of the run each open connection sends a close frame and
    /// waits this long for the server's close and FIN (k6's `gracefulStop`);
    /// then it is aborted, and counted apart. Closing takes both ends' CPU:
    /// a million connections on this 2-core box close at ~36,000/s
    /// (results/million-connections.md), so large runs need more than the
    /// default.
    pub close_timeout_ms: u64,
    /// Largest message (and frame) accepted from the server; a larger one
    /// fails the connection with 1009, counted as a protocol error.
    pub max_message_bytes: usize,
    /// Sockets are direct descriptors (`IORING_OP_SOCKET` into each
    /// worker ring's file table), so one process holds up to the
    /// open-files limit *per worker* instead of per process.
    pub direct_descriptors: bool,
    /// Receive buffers are filled incrementally (`IOU_PBUF_RING_INC`):
    /// many small replies share one buffer.
    pub incremental_recv: bool,
}

impl ClientOpts {
    /// The engine sizing of each client worker.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            ring_entries: self.ring_entries,
            recv_buffers: self.recv_buffers,
            recv_buffer_size: self.recv_buffer_size,
            // Each connection's own close deadline fires first and is
            // counted; the worker's drain is the backstop.
            drain_ms: self.close_timeout_ms + 1_000,
            file_table: if self.direct_descriptors {
                engine::default_file_table()
            } else {
                0
            },
            incremental_recv: self.incremental_recv,
        }
    }
}

impl Default for ClientOpts {
    fn default() -> Self {
        Self {
            workers: 1,
            cpus: Vec::new(),
            source_addrs: Vec::new(),
            source_cidr: None,
            max_conns_per_process: 15_000,
            ring_entries: 4096,
            recv_buffers: 256,
            recv_buffer_size: 16 * 1024,
            send_batch_us: 50,
            close_timeout_ms: 10_000,
            max_message_bytes: 16 << 20,
            direct_descriptors: true,
            incremental_recv: true,
        }
    }
}

/// `[thresholds]`: all optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Highest acceptable p99 latency (echo/rate: corrected message latency;
    /// ack: transaction latency, send to server ack; ping: pong RTT;
    /// connect-only: handshake latency), milliseconds.
    pub p99_ms: Option<f64>,
    /// Lowest acceptable success rate, 0..=1 (messages answered / sent; ack:
    /// transactions completed / messages sent; connect-only: connections up / attempted).
    pub min_success_rate: Option<f64>,
    /// Lowest acceptable throughput, transactions (answered messages) per second.
    pub min_tps: Option<f64>,
}

/// Keys whose list values are lists, not matrix dimensions.
const LIST_KEYS: &[&str] = &[
    "target.urls",
    "load.reconnect_delay_ms",
    "client.cpus",
    "client.source_addrs",
    "session.stages",
];

/// What a virtual user speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionProtocol {
    /// Plain text messages (seed 004's `SET_NAME`, `SAY`, `LEAVE` JSON),
    /// e.g. against `/echo`.
    Raw,
    /// The Centrifugo protocol: connect, subscribe to the hub channel
    /// (`{subscribe.channel_prefix}0`) and a personal one, `SAY` as a
    /// publication to the personal channel; the hub is broadcast to by
    /// `[publish]`.
    Centrifuge,
}

/// One k6-style stage: move linearly to `target` VUs over `duration_secs`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Length of the stage.
    pub duration_secs: f64,
    /// VUs at its end.
    pub target: u64,
}

/// `[session]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionOpts {
    /// The stages, in order; the measured window is all of them.
    pub stages: Vec<Stage>,
    /// A session sends `LEAVE` this long after it connected.
    pub session_secs: f64,
    /// And closes this long after `LEAVE`.
    pub close_after_leave_secs: f64,
    /// A VU sends every uniform(min, max) milliseconds.
    pub send_min_ms: u64,
    /// See `send_min_ms`.
    pub send_max_ms: u64,
    /// What VUs speak.
    pub protocol: SessionProtocol,
}

impl Default for SessionOpts {
    fn default() -> Self {
        Self {
            stages: vec![Stage {
                duration_secs: 30.0,
                target: 100,
            }],
            session_secs: 10.0,
            close_after_leave_secs: 3.0,
            send_min_ms: 1000,
            send_max_ms: 3000,
            protocol: SessionProtocol::Raw,
        }
    }
}

impl SessionOpts {
    /// The stages' total length, seconds.
    pub fn total_secs(&self) -> f64 {
        self.stages.iter().map(|s| s.duration_secs).sum()
    }

    /// VUs wanted `t` seconds into the stages (k6: linear from the previous
    /// stage's target, starting from 0).
    pub fn target_at(&self, t: f64) -> f64 {
        let (mut start, mut from) = (0.0, 0.0);
        for s in &self.stages {
            if t < start + s.duration_secs {
                let f = (t - start) / s.duration_secs;
                return from + (s.target as f64 - from) * f;
            }
            start += s.duration_secs;
            from = s.target as f64;
        }
        0.0
    }

    /// Most VUs any stage asks for.
    pub fn peak(&self) -> u64 {
        self.stages.iter().map(|s| s.target).max().unwrap_or(0)
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Position in run order, from 0.
    pub index: usize,
    /// The values of the varied keys for this cell, as `(dotted key, value)`.
    pub params: Vec<(String, String)>,
    /// The scenario with every list replaced by this cell's value.
    pub scenario: Scenario,
}

/// A scenario file after overrides, with its matrix expanded.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// Scenario name.
    pub name: String,
    /// The varied keys, in expansion order.
    pub varied: Vec<String>,
    /// The cells, in run order.
    pub cells: Vec<Cell>,
}

/// Reads a scenario file, applies `--set` overrides and expands the matrix.
pub fn load(path: &Path, sets: &[String]) -> Result<Matrix, ScenarioError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: origin.clone(),
        source,
    })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("scenario");
    parse(&text, &origin, stem, sets)
}

/// Parses scenario text; `origin` names it in errors and `default_name` is
/// used when the file has no `name`.
pub fn parse(
    text: &str,
    origin: &str,
    default_name: &str,
    sets: &[String],
) -> Result<Matrix, ScenarioError> {
    let mut table: Table = toml::from_str(text).map_err(|e| ScenarioError::Parse {
        path: origin.to_string(),
        message: e.to_string(),
    })?;
    for arg in sets {
        apply_set(&mut table, arg)?;
    }
    let mut dims = Vec::new();
    find_dimensions(&table, "", &mut dims)?;
    let mut cells = Vec::new();
    let total: usize = dims
        .iter()
        .map(|(_, v): &(String, Vec<Value>)| v.len())
        .product();
    for index in 0..total {
        let mut cell_table = table.clone();
        let mut params = Vec::new();
        let mut rem = index;
        // The first dimension varies slowest.
        let mut picks = vec![0; dims.len()];
        for (d, (_, values)) in dims.iter().enumerate().rev() {
            picks[d] = rem % values.len();
            rem /= values.len();
        }
        for (d, (key, values)) in dims.iter().enumerate() {
            let v = values[picks[d]].clone();
            params.push((key.clone(), v.to_string()));
            set_path(&mut cell_table, key, v);
        }
        let mut scenario: Scenario =
            Value::Table(cell_table)
                .try_into()
                .map_err(|e: toml::de::Error| ScenarioError::Parse {
                    path: origin.to_string(),
                    message: e.to_string(),
                })?;
        if scenario.name.is_empty() {
            scenario.name = default_name.to_string();
        }
        validate(&scenario)?;
        let mode = scenario.load.mode;
        if let Some((key, _)) = dims.iter().find(|(k, _)| {
            k.strip_prefix("load.").is_some_and(|k| {
                mode.ignored_keys().contains(&k) || (mode != Mode::Ack && k.starts_with("ack."))
            })
        }) {
            return Err(invalid(
                key,
                format!(
                    "is varied, but {} mode does not use it: every cell would be the same run",
                    mode.label()
                ),
            ));
        }
        cells.push(Cell {
            index,
            params,
            scenario,
        });
    }
    let name = cells
        .first()
        .map_or_else(|| default_name.to_string(), |c| c.scenario.name.clone());
    Ok(Matrix {
        name,
        varied: dims.into_iter().map(|(k, _)| k).collect(),
        cells,
    })
}

fn apply_set(table: &mut Table, arg: &str) -> Result<(), ScenarioError> {
    let set_err = |problem: &str| ScenarioError::Set {
        arg: arg.to_string(),
        problem: problem.to_string(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| set_err("expected key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(set_err("expected a dotted key such as load.connections"));
    }
    // A TOML value if it parses as one (numbers, lists, booleans, quoted
    // strings), otherwise the raw text as a string (URLs, modes).
    let value = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()));
    set_path(table, key, value);
    Ok(())
}

fn set_path(table: &mut Table, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        t = entry.as_table_mut().expect("just made a table");
    }
    t.insert(last.to_string(), value);
}

fn find_dimensions(
    table: &Table,
    prefix: &str,
    dims: &mut Vec<(String, Vec<Value>)>,
) -> Result<(), ScenarioError> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(t) => find_dimensions(t, &key, dims)?,
            Value::Array(items) if !LIST_KEYS.contains(&key.as_str()) => {
                if items.is_empty() {
                    return Err(invalid(
                        &key,
                        "is an empty list (a list expands into a matrix; give at least one value)",
                    ));
                }
                if !items.iter().all(|i| i.is_integer() || i.is_float()) {
                    return Err(invalid(
                        &key,
                        "only numeric keys may be given as a list (matrix)",
                    ));
                }
                dims.push((key, items.clone()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks values and their relations; the error names the key.
pub fn validate(s: &Scenario) -> Result<(), ScenarioError> {
    if s.target.urls.is_empty() {
        return Err(invalid("target.urls", "needs at least one ws:// URL"));
    }
    for u in &s.target.urls {
        target_url::parse(u).map_err(|e| invalid("target.urls", format!("{u:?}: {e}")))?;
    }
    if let Some(p) = &s.target.path {
        if !p.starts_with('/') {
            return Err(invalid("target.path", "must start with '/'"));
        }
    }
    if let Some(m) = &s.target.metrics_url {
        if !m.starts_with("http://") {
            return Err(invalid("target.metrics_url", "must be an http:// URL"));
        }
    }
    let l = &s.load;
    let positive = |key: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(invalid(key, format!("must be > 0, got {v}")))
        }
    };
    let non_negative = |key: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(invalid(key, format!("must be >= 0, got {v}")))
        }
    };
    if l.connections == 0 {
        return Err(invalid("load.connections", "must be at least 1"));
    }
    non_negative("load.connect_rate", l.connect_rate)?;
    non_negative("load.ramp_secs", l.ramp_secs)?;
    if l.connect_rate > 0.0 && l.ramp_secs > 0.0 {
        return Err(invalid(
            "load.ramp_secs",
            "set either load.connect_rate or load.ramp_secs, not both",
        ));
    }
    non_negative("load.warmup_secs", l.warmup_secs)?;
    positive("load.duration_secs", l.duration_secs)?;
    non_negative("load.cooldown_secs", l.cooldown_secs)?;
    if l.message_size > 64 << 20 {
        return Err(invalid("load.message_size", "must be at most 64 MiB"));
    }
    if l.in_flight == 0 || l.in_flight > 1024 {
        return Err(invalid("load.in_flight", "must be from 1 to 1024"));
    }
    match l.mode {
        Mode::Rate => positive("load.rate", l.rate)?,
        Mode::Ack => {
            positive("load.rate", l.rate)?;
            crate::ack::AckProtocol::new(&l.ack, l.message_size, l.message_timeout_ms)
                .map_err(|(key, problem)| invalid(key, problem))?;
        }
        Mode::Ping => positive("load.ping_interval_ms", l.ping_interval_ms)?,
        Mode::ConnectOnly | Mode::Echo => {}
        Mode::Session => {
            let ss = &s.session;
            if ss.stages.is_empty() {
                return Err(invalid("session.stages", "needs at least one stage"));
            }
            for st in &ss.stages {
                positive("session.stages.duration_secs", st.duration_secs)?;
            }
            positive("session.session_secs", ss.session_secs)?;
            non_negative("session.close_after_leave_secs", ss.close_after_leave_secs)?;
            if ss.send_min_ms == 0 || ss.send_max_ms < ss.send_min_ms {
                return Err(invalid(
                    "session.send_max_ms",
                    "must be at least session.send_min_ms, which must be at least 1",
                ));
            }
            if ss.protocol == SessionProtocol::Centrifuge && s.publish.via == Via::Client {
                return Err(invalid(
                    "publish.via",
                    "session mode broadcasts through the API (\"api\") or not at all (\"none\")",
                ));
            }
            if s.publish.via == Via::Api {
                positive("publish.rate", s.publish.rate)?;
                ApiPublisher::new(&s.publish.api_url, &s.publish.api_key)
                    .map_err(|e| invalid("publish.api_url", e))?;
            }
        }
        Mode::Subscribe => {
            let (sub, publ) = (&s.subscribe, &s.publish);
            if sub.pattern == Pattern::Channels && sub.channels == 0 {
                return Err(invalid("subscribe.channels", "must be at least 1"));
            }
            if sub.pattern == Pattern::PersonalGroup && sub.group_size == 0 {
                return Err(invalid("subscribe.group_size", "must be at least 1"));
            }
            if sub.server_side && sub.token_secret.is_empty() {
                return Err(invalid(
                    "subscribe.server_side",
                    "needs subscribe.token_secret (the channels travel in the token)",
                ));
            }
            if publ.via != Via::None {
                positive("publish.rate", publ.rate)?;
            }
            if publ.via == Via::Api {
                ApiPublisher::new(&publ.api_url, &publ.api_key)
                    .map_err(|e| invalid("publish.api_url", e))?;
            }
            if publ.via == Via::Client && publ.connections == 0 {
                return Err(invalid("publish.connections", "must be at least 1"));
            }
            if let Some(i) = publ.same_node_target {
                if i >= s.target.urls.len() {
                    return Err(invalid(
                        "publish.same_node_target",
                        format!(
                            "is {i}, but target.urls has {} URL(s) (0-based index)",
                            s.target.urls.len()
                        ),
                    ));
                }
            }
            if publ.to != PublishTo::All && sub.pattern != Pattern::PersonalGroup {
                return Err(invalid(
                    "publish.to",
                    "group and personal need subscribe.pattern = \"personal-group\"",
                ));
            }
        }
    }
    non_negative("load.churn_per_sec", l.churn_per_sec)?;
    if l.churn_per_sec > 0.0 && l.mode != Mode::Subscribe {
        return Err(invalid(
            "load.churn_per_sec",
            "only subscribe mode churns connections",
        ));
    }
    if l.reconnect && l.mode != Mode::Subscribe {
        return Err(invalid(
            "load.reconnect",
            "only subscribe mode reconnects dropped connections",
        ));
    }
    match l.reconnect_delay_ms[..] {
        [min, max] if min <= max && max <= 600_000 => {}
        _ => {
            return Err(invalid(
                "load.reconnect_delay_ms",
                format!(
                    "must be [min, max] milliseconds with min <= max <= 600000, got {:?}",
                    l.reconnect_delay_ms
                ),
            ))
        }
    }
    if l.message_timeout_ms == 0 {
        return Err(invalid("load.message_timeout_ms", "must be at least 1"));
    }
    if l.handshake_timeout_ms == 0 {
        return Err(invalid("load.handshake_timeout_ms", "must be at least 1"));
    }
    let c = &s.client;
    if c.workers == 0 || c.workers > 256 {
        return Err(invalid("client.workers", "must be from 1 to 256"));
    }
    if c.max_conns_per_process == 0 {
        return Err(invalid(
            "client.max_conns_per_process",
            "must be at least 1",
        ));
    }
    // Each worker's share, plus slack for the publisher's API connection.
    let per_ring = u64::from(engine::default_file_table()).saturating_sub(16);
    let per_process = if c.direct_descriptors {
        per_ring.saturating_mul(c.workers)
    } else {
        per_ring
    };
    if c.max_conns_per_process > per_process {
        return Err(invalid(
            "client.max_conns_per_process",
            format!(
                "({}) exceeds what one process can hold: {per_process} (the open-files \
                 limit{}; use more processes)",
                c.max_conns_per_process,
                if c.direct_descriptors {
                    " per worker with direct descriptors"
                } else {
                    " per process without direct descriptors"
                }
            ),
        ));
    }
    if c.send_batch_us > 100_000 {
        return Err(invalid(
            "client.send_batch_us",
            "must be at most 100000 (0.1 s)",
        ));
    }
    if !(1..=3_600_000).contains(&c.close_timeout_ms) {
        return Err(invalid(
            "client.close_timeout_ms",
            "must be from 1 to 3600000 (an hour)",
        ));
    }
    if !(1..=(1 << 30)).contains(&c.max_message_bytes) {
        return Err(invalid(
            "client.max_message_bytes",
            "must be from 1 to 1073741824",
        ));
    }
    if let Err((key, problem)) = c.engine().check() {
        let key = match key {
            EngineKey::RingEntries => "client.ring_entries",
            EngineKey::RecvBuffers => "client.recv_buffers",
            EngineKey::RecvBufferSize => "client.recv_buffer_size",
            EngineKey::FileTable => "client.direct_descriptors",
        };
        return Err(invalid(key, problem));
    }
    if let Some(cidr) = &c.source_cidr {
        if !c.source_addrs.is_empty() {
            return Err(invalid(
                "client.source_cidr",
                "set either client.source_addrs or client.source_cidr, not both",
            ));
        }
        expand_cidr(cidr).map_err(|e| invalid("client.source_cidr", e))?;
    }
    let t = &s.thresholds;
    if let Some(p) = t.p99_ms {
        positive("thresholds.p99_ms", p)?;
    }
    if let Some(r) = t.min_success_rate {
        if !(0.0..=1.0).contains(&r) {
            return Err(invalid(
                "thresholds.min_success_rate",
                "must be between 0 and 1",
            ));
        }
    }
    if let Some(tps) = t.min_tps {
        non_negative("thresholds.min_tps", tps)?;
    }
    Ok(())
}

/// The addresses of a CIDR inside 127.0.0.0/8 (network and broadcast
/// addresses excluded for prefixes shorter than /31).
pub fn expand_cidr(cidr: &str) -> Result<Vec<IpAddr>, String> {
    let (addr, bits) = cidr.split_once('/').ok_or("expected a.b.c.d/prefix")?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let bits: u32 = bits
        .parse()
        .map_err(|_| format!("{bits:?} is not a prefix length"))?;
    if !(8..=32).contains(&bits) {
        return Err("prefix must be from /8 to /32".into());
    }
    if addr.octets()[0] != 127 {
        return Err("must lie inside 127.0.0.0/8 (load tests stay on loopback)".into());
    }
    let mask = if bits == 32 {
        u32::MAX
    } else {
        !(u32::MAX >> bits)
    };
    let base = u32::from(addr) & mask;
    let size = 1u64 << (32 - bits);
    let (first, count) = if size > 2 {
        (base + 1, size - 2)
    } else {
        (base, size)
    };
    Ok((0..count.min(1 << 16))
        .map(|i| IpAddr::V4(Ipv4Addr::from(first + i as u32)))
        .collect())
}

impl Scenario {
    /// Source addresses to bind, from `source_addrs` or `source_cidr` (empty = let the kernel pick).
    pub fn source_addrs(&self) -> Vec<IpAddr> {
        match &self.client.source_cidr {
            Some(c) => expand_cidr(c).unwrap_or_default(),
            None => self.client.source_addrs.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[target]\nurls = [\"ws://127.0.0.1:9/echo\"]\n[load]\nmode = \"echo\"\n";

    fn parse_ok(extra: &str, sets: &[&str]) -> Matrix {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        parse(&format!("{BASE}{extra}"), "t.toml", "t", &sets).unwrap()
    }

    fn parse_err(extra: &str, sets: &[&str]) -> String {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        parse(&format!("{BASE}{extra}"), "t.toml", "t", &sets)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn single_cell_without_lists() {
        let m = parse_ok("connections = 7\n", &[]);
        assert_eq!(m.cells.len(), 1);
        assert!(m.varied.is_empty());
        assert_eq!(m.cells[0].scenario.load.connections, 7);
        assert_eq!(m.name, "t");
    }

    #[test]
    fn lists_expand_into_the_cartesian_product_first_key_slowest() {
        let m = parse_ok("connections = [10, 20]\nmessage_size = [1, 2, 3]\n", &[]);
        assert_eq!(m.varied, vec!["load.connections", "load.message_size"]);
        let got: Vec<(u64, u64)> = m
            .cells
            .iter()
            .map(|c| (c.scenario.load.connections, c.scenario.load.message_size))
            .collect();
        assert_eq!(
            got,
            vec![(10, 1), (10, 2), (10, 3), (20, 1), (20, 2), (20, 3)]
        );
        assert_eq!(
            m.cells[4].params,
            vec![
                ("load.connections".into(), "20".into()),
                ("load.message_size".into(), "2".into())
            ]
        );
    }

    #[test]
    fn varying_a_key_the_mode_ignores_is_an_error() {
        for (text, mode, key) in [
            ("in_flight = [1, 4]\n", "rate", "load.in_flight"),
            ("rate = [1, 2]\n", "echo", "load.rate"),
            (
                "message_size = [10, 20]\n",
                "connect-only",
                "load.message_size",
            ),
            ("message_size = [10, 20]\n", "ping", "load.message_size"),
        ] {
            let e = parse_err(text, &[&format!("load.mode={mode}")]);
            assert!(
                e.contains(key) && e.contains("is varied"),
                "{text:?} -> {e}"
            );
        }
        parse_ok("rate = [1, 2]\n", &["load.mode=rate"]);
    }

    #[test]
    fn matrix_order_follows_the_file() {
        let m = parse_ok(
            "rate = [1, 2]\nmessage_size = [10, 20]\n",
            &["load.mode=rate"],
        );
        assert_eq!(m.varied, vec!["load.rate", "load.message_size"]);
    }

    #[test]
    fn url_and_cpu_lists_are_not_dimensions() {
        let m = parse_ok("[client]\ncpus = [1, 0]\n", &[]);
        assert_eq!(m.cells.len(), 1);
        assert_eq!(m.cells[0].scenario.client.cpus, vec![1, 0]);
    }

    #[test]
    fn set_overrides_scalars_lists_and_strings() {
        let m = parse_ok(
            "connections = 5\n",
            &[
                "load.connections=[1,2]",
                "load.mode=rate",
                "thresholds.p99_ms=2.5",
            ],
        );
        assert_eq!(m.cells.len(), 2);
        assert_eq!(m.cells[0].scenario.load.mode, Mode::Rate);
        assert_eq!(m.cells[1].scenario.thresholds.p99_ms, Some(2.5));
    }

    #[test]
    fn errors_name_the_key() {
        for (extra, sets, key) in [
            ("conections = 5\n", vec![], "conections"),
            ("connections = 0\n", vec![], "load.connections"),
            ("in_flight = 0\n", vec![], "load.in_flight"),
            ("rate = 0\n", vec!["load.mode=rate"], "load.rate"),
            (
                "connect_rate = 10\nramp_secs = 5\n",
                vec![],
                "load.ramp_secs",
            ),
            ("duration_secs = [1, \"x\"]\n", vec![], "load.duration_secs"),
            ("connections = []\n", vec![], "load.connections"),
            (
                "[client]\nsource_cidr = \"10.0.0.0/24\"\n",
                vec![],
                "client.source_cidr",
            ),
            (
                "[client]\nsend_batch_us = 200000\n",
                vec![],
                "client.send_batch_us",
            ),
            (
                "[client]\nclose_timeout_ms = 0\n",
                vec![],
                "client.close_timeout_ms",
            ),
            (
                "[client]\nrecv_buffers = 100\n",
                vec![],
                "client.recv_buffers",
            ),
            (
                "[thresholds]\nmin_success_rate = 2\n",
                vec![],
                "thresholds.min_success_rate",
            ),
            ("", vec!["target.urls=[\"wss://x/\"]"], "target.urls"),
            ("", vec!["load.mode=fast"], "mode"),
        ] {
            let e = parse_err(extra, &sets);
            assert!(e.contains(key), "{extra:?} {sets:?} -> {e}");
        }
        assert!(parse_err("", &["noequals"]).contains("key=value"));
    }

    #[test]
    fn ack_mode_reads_its_table_and_names_its_keys() {
        let m = parse_ok(
            "rate = [1, 2]\nmessage_size = [100, 5000]\n[load.ack]\ntimeout_ms = 800\n\
             send = '{\"t\":\"m\",\"seq\":{id},\"p\":\"{payload}\"}'\nid_field = \"seq\"\n",
            &["load.mode=ack"],
        );
        assert_eq!(m.cells.len(), 4);
        let l = &m.cells[3].scenario.load;
        assert_eq!((l.mode, l.rate, l.message_size), (Mode::Ack, 2.0, 5000));
        assert_eq!(l.ack.timeout_ms, Some(800));
        assert_eq!(l.ack.id_field, "seq");
        assert_eq!(l.ack.ack, crate::ack::DEFAULT_ACK, "defaults fill the rest");
        let d = parse_ok("", &["load.mode=ack"]);
        assert_eq!(d.cells[0].scenario.load.ack.max_outstanding, 64);
        for (extra, sets, key) in [
            (
                "[load.ack]\nsend = 'x{payload}'\n",
                vec!["load.mode=ack"],
                "load.ack.send",
            ),
            (
                "[load.ack]\nack = 'no id'\n",
                vec!["load.mode=ack"],
                "load.ack.ack",
            ),
            (
                "[load.ack]\nid_fild = 'x'\n",
                vec!["load.mode=ack"],
                "id_fild",
            ),
            (
                "message_size = 20\n",
                vec!["load.mode=ack"],
                "load.message_size",
            ),
            ("rate = 0\n", vec!["load.mode=ack"], "load.rate"),
            (
                "[load.ack]\ntimeout_ms = 0\n",
                vec!["load.mode=ack"],
                "load.ack.timeout_ms",
            ),
            (
                "[load.ack]\nmax_outstanding = 0\n",
                vec!["load.mode=ack"],
                "load.ack.max_outstanding",
            ),
            (
                "in_flight = [1, 2]\n",
                vec!["load.mode=ack"],
                "load.in_flight",
            ),
            // [load.ack] lists vary nothing outside ack mode.
            (
                "[load.ack]\ntimeout_ms = [1, 2]\n",
                vec![],
                "load.ack.timeout_ms",
            ),
        ] {
            let e = parse_err(extra, &sets);
            assert!(e.contains(key), "{extra:?} {sets:?} -> {e}");
        }
        parse_ok("[load.ack]\ntimeout_ms = [100, 200]\n", &["load.mode=ack"]);
    }

    #[test]
    fn cluster_keys_are_checked() {
        let sub = "[target]\nurls = [\"ws://127.0.0.1:9/a\", \"ws://127.0.0.1:10/a\"]\n\
                   [load]\nmode = \"subscribe\"\n";
        let parse_sub = |extra: &str| parse(&format!("{sub}{extra}"), "t", "t", &[]);
        let m = parse_sub("churn_per_sec = [0, 5]\n[publish]\nsame_node_target = 1\n").unwrap();
        assert_eq!(m.cells.len(), 2);
        assert_eq!(m.cells[1].scenario.load.churn_per_sec, 5.0);
        assert_eq!(m.cells[0].scenario.publish.same_node_target, Some(1));
        for (extra, key) in [
            (
                "[publish]\nsame_node_target = 2\n",
                "publish.same_node_target",
            ),
            ("churn_per_sec = -1\n", "load.churn_per_sec"),
        ] {
            let e = parse_sub(extra).unwrap_err().to_string();
            assert!(e.contains(key), "{extra:?} -> {e}");
        }
        // Other modes do not churn, nor vary the key.
        assert!(parse_err("churn_per_sec = 3\n", &[]).contains("load.churn_per_sec"));
        assert!(parse_err("churn_per_sec = [0, 0]\n", &[]).contains("is varied"));
    }

    #[test]
    fn reconnect_keys_are_checked() {
        let sub = "[target]\nurls = [\"ws://127.0.0.1:9/a\", \"ws://127.0.0.1:10/a\"]\n\
                   [load]\nmode = \"subscribe\"\n";
        let parse_sub = |extra: &str| parse(&format!("{sub}{extra}"), "t", "t", &[]);
        // Off by default; the delay range is one key, not a matrix.
        let d = parse_sub("").unwrap();
        assert!(!d.cells[0].scenario.load.reconnect);
        assert_eq!(d.cells[0].scenario.load.reconnect_delay_ms, [0, 1000]);
        let m = parse_sub("reconnect = true\nreconnect_delay_ms = [0, 2000]\n").unwrap();
        assert_eq!(m.cells.len(), 1, "a [min, max] range expands nothing");
        assert!(m.cells[0].scenario.load.reconnect);
        assert_eq!(m.cells[0].scenario.load.reconnect_delay_ms, [0, 2000]);
        parse_sub("reconnect = true\nreconnect_delay_ms = [5, 5]\n").unwrap();
        for extra in [
            "reconnect_delay_ms = [2000, 1000]\n",
            "reconnect_delay_ms = [1000]\n",
            "reconnect_delay_ms = [1, 2, 3]\n",
            "reconnect_delay_ms = [0, 600001]\n",
        ] {
            let e = parse_sub(extra).unwrap_err().to_string();
            assert!(e.contains("load.reconnect_delay_ms"), "{extra:?} -> {e}");
        }
        // A wrong type or an unknown key fails with the key's name.
        let e = parse_sub("reconnect = 1\n").unwrap_err().to_string();
        assert!(e.contains("reconnect"), "{e}");
        let e = parse_sub("reconnect_delay = [0, 1]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("reconnect_delay"), "{e}");
        // Only subscribe mode reconnects.
        assert!(parse_err("reconnect = true\n", &[]).contains("load.reconnect"));
        // --set takes the range as a TOML list.
        let t = parse(
            sub,
            "t",
            "t",
            &[
                "load.reconnect=true".into(),
                "load.reconnect_delay_ms=[10, 20]".into(),
            ],
        )
        .unwrap();
        assert_eq!(t.cells[0].scenario.load.reconnect_delay_ms, [10, 20]);
    }

    #[test]
    fn cidr_expansion_stays_on_loopback() {
        let a = expand_cidr("127.1.0.0/30").unwrap();
        assert_eq!(
            a,
            vec![
                "127.1.0.1".parse::<IpAddr>().unwrap(),
                "127.1.0.2".parse().unwrap()
            ]
        );
        assert_eq!(expand_cidr("127.0.0.9/32").unwrap().len(), 1);
        assert!(expand_cidr("192.168.0.0/24").is_err());
        assert!(expand_cidr("127.0.0.0/4").is_err());
    }
}
