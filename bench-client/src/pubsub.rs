//! The `subscribe` mode's pieces: which channels each connection
//! subscribes to (one shared channel, N channels, or Centrifugo's benchmark
//! shape of a personal plus a group channel), the Centrifugo protocol
//! commands a subscriber sends and the lines it reads, the payload a
//! publication carries (send time, sequence, channel, a "measured" mark)
//! and the HTTP publisher that posts to the server API.
//!
//! Publication time is `CLOCK_MONOTONIC`, common to every process of the
//! run on one machine, so a publisher in one process and subscribers in
//! others measure delivery latency on the same clock.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use wsproto::http::{self, BodyKind, Head, HeadLimits};

/// How subscribers spread over channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Every connection on one channel (a broadcast).
    Shared,
    /// `subscribe.channels` channels, connection i on channel i mod N.
    Channels,
    /// Connection i on its personal channel `p{i}` and on group channel
    /// `g{i / group_size}` (Centrifugo's million-connection benchmark shape).
    PersonalGroup,
}

/// Which channels the publisher targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublishTo {
    /// Every channel, round-robin.
    All,
    /// Group channels only (personal-group pattern).
    Group,
    /// Personal channels only (personal-group pattern).
    Personal,
}

/// How publications are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// `POST` to the server API (`publish.api_url`).
    Api,
    /// Centrifugo `publish` commands from dedicated connections.
    Client,
    /// Nobody publishes (connect and subscribe only).
    None,
}

/// `[subscribe]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscribeOpts {
    /// How subscribers spread over channels.
    pub pattern: Pattern,
    /// Channels of the `channels` pattern.
    pub channels: u64,
    /// Group size of the `personal-group` pattern.
    pub group_size: u64,
    /// Prefix of every channel name (`{prefix}{n}`, `{prefix}p{i}`,
    /// `{prefix}g{j}`); with a `:` it names a namespace.
    pub channel_prefix: String,
    /// HS256 secret: connect with a token (`sub` = `u{i}`) signed with it;
    /// empty: connect anonymously.
    pub token_secret: String,
    /// Put the channels in the token's `channels` claim (server-side
    /// subscriptions) instead of sending `subscribe` commands.
    pub server_side: bool,
}

impl Default for SubscribeOpts {
    fn default() -> Self {
        Self {
            pattern: Pattern::Shared,
            channels: 1,
            group_size: 100,
            channel_prefix: "bench.".into(),
            token_secret: String::new(),
            server_side: false,
        }
    }
}

/// `[publish]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishOpts {
    /// How.
    pub via: Via,
    /// Publications per second, in total, round-robin over the target
    /// channels (per channel with `per_channel`).
    pub rate: f64,
    /// `rate` is per target channel (the total grows with the channels).
    pub per_channel: bool,
    /// Which channels.
    pub to: PublishTo,
    /// `http://host:port/api/publish` of the server API.
    pub api_url: String,
    /// Its key (`X-API-Key`).
    pub api_key: String,
    /// Publishing connections (`via = "client"`), in the first process.
    pub connections: u64,
    /// Which of `target.urls` (0-based) is the publisher's own node: the
    /// node whose API `api_url` names (its admin port differs from its
    /// WebSocket port, so it cannot be inferred). The report then tells
    /// same-node from cross-node delivery latency. Unset: no such split.
    pub same_node_target: Option<usize>,
}

impl Default for PublishOpts {
    fn default() -> Self {
        Self {
            via: Via::Api,
            rate: 10.0,
            per_channel: false,
            to: PublishTo::All,
            api_url: "http://127.0.0.1:9465/api/publish".into(),
            api_key: String::new(),
            connections: 1,
            same_node_target: None,
        }
    }
}

/// The channel layout of a run.
#[derive(Debug, Clone)]
pub struct Layout {
    pattern: Pattern,
    channels: u64,
    group_size: u64,
    connections: u64,
    prefix: String,
}

impl Layout {
    /// The layout for `connections` subscribers in total.
    pub fn new(opts: &SubscribeOpts, connections: u64) -> Self {
        Self {
            pattern: opts.pattern,
            channels: opts.channels.max(1),
            group_size: opts.group_size.max(1),
            connections,
            prefix: opts.channel_prefix.clone(),
        }
    }

    /// Personal channels (personal-group pattern).
    fn personal(&self) -> u64 {
        match self.pattern {
            Pattern::PersonalGroup => self.connections,
            _ => 0,
        }
    }

    /// How many channels there are.
    pub fn len(&self) -> u64 {
        match self.pattern {
            Pattern::Shared => 1,
            Pattern::Channels => self.channels,
            Pattern::PersonalGroup => self.personal() + self.connections.div_ceil(self.group_size),
        }
    }

    /// True when there is no channel (never: at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of channel `k`.
    pub fn name(&self, k: u64) -> String {
        match self.pattern {
            Pattern::Shared | Pattern::Channels => format!("{}{k}", self.prefix),
            Pattern::PersonalGroup if k < self.personal() => format!("{}p{k}", self.prefix),
            Pattern::PersonalGroup => format!("{}g{}", self.prefix, k - self.personal()),
        }
    }

    /// The channels subscriber `i` (global connection number) joins.
    pub fn of(&self, i: u64) -> Vec<u64> {
        match self.pattern {
            Pattern::Shared => vec![0],
            Pattern::Channels => vec![i % self.channels],
            Pattern::PersonalGroup => vec![i, self.personal() + i / self.group_size],
        }
    }

    /// The channels a publisher targets, in round-robin order.
    pub fn targets(&self, to: PublishTo) -> std::ops::Range<u64> {
        match (self.pattern, to) {
            (Pattern::PersonalGroup, PublishTo::Personal) => 0..self.personal(),
            (Pattern::PersonalGroup, PublishTo::Group) => self.personal()..self.len(),
            _ => 0..self.len(),
        }
    }
}

/// `CLOCK_MONOTONIC` in µs: the clock every process of a run shares.
pub fn mono_us() -> u64 {
    // SAFETY: clock_gettime writes a timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// The `data` of a bench publication: `{"t":..,"s":..,"k":..,"m":..,"p":".."}`
/// padded with `p` to about `size` bytes.
pub fn publication_data(t: u64, seq: u64, channel: u64, measured: bool, size: usize) -> String {
    let mut s = format!(
        "{{\"t\":{t},\"s\":{seq},\"k\":{channel},\"m\":{},\"p\":\"",
        u8::from(measured)
    );
    while s.len() + 2 < size {
        s.push('x');
    }
    s.push_str("\"}");
    s
}

/// A VU's chat message as publication data: stamped like a bench
/// publication (so subscribers parse it alike) but on no bench channel
/// (`k` = `u64::MAX`) and never measured.
pub fn chat_data(t: u64, seq: u64, text: &str) -> String {
    format!(
        "{{\"t\":{t},\"s\":{seq},\"k\":{},\"m\":0,\"p\":{}}}",
        u64::MAX,
        json_str(text)
    )
}

/// What a subscriber reads from one publication.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Stamp {
    /// Send time (`CLOCK_MONOTONIC` µs).
    pub t: u64,
    /// Sequence number on its channel.
    pub s: u64,
    /// Channel index.
    pub k: u64,
    /// Sent inside the publisher's measured window.
    pub m: u8,
}

#[derive(Deserialize)]
struct Pub {
    data: Stamp,
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(rename = "pub")]
    publication: Option<Pub>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    unsubscribe: Option<UnsubscribeBody>,
}

#[derive(Deserialize)]
struct UnsubscribeBody {
    #[serde(default)]
    code: u32,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: u32,
    #[serde(default)]
    temporary: bool,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default)]
    id: u32,
    #[serde(borrow)]
    push: Option<Push<'a>>,
    error: Option<ErrorBody>,
    connect: Option<IgnoredAny>,
}

/// One line from the server, as a bench subscriber cares about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `{}`: answer with a pong.
    Ping,
    /// The connect reply.
    Connected,
    /// A successful reply to command `id` (subscribe, publish).
    Ok(u32),
    /// An error reply to command `id`: its code, and whether the server
    /// marked it temporary (worth retrying).
    Error(u32, u32, bool),
    /// A bench publication.
    Publication(u64, u64, u64, bool),
    /// The server unsubscribed us from a channel, with this code.
    Unsubscribed(String, u32),
    /// Something else (another push, an unknown shape).
    Other,
}

/// Parses one line.
pub fn parse_line(line: &str) -> Result<Incoming, serde_json::Error> {
    let l: Line<'_> = serde_json::from_str(line)?;
    Ok(match (l.id, l.push, l.error, l.connect) {
        (id, _, Some(e), _) if id > 0 => Incoming::Error(id, e.code, e.temporary),
        (id, _, _, Some(_)) if id > 0 => Incoming::Connected,
        (id, _, _, _) if id > 0 => Incoming::Ok(id),
        (_, Some(p), _, _) => match (p.publication, p.unsubscribe) {
            (Some(Pub { data: d }), _) => Incoming::Publication(d.t, d.s, d.k, d.m == 1),
            (None, Some(u)) => {
                Incoming::Unsubscribed(p.channel.unwrap_or_default().into_owned(), u.code)
            }
            _ => Incoming::Other,
        },
        _ if line.trim() == "{}" => Incoming::Ping,
        _ => Incoming::Other,
    })
}

/// Unsubscribe codes 2500-2999 tell the client to subscribe again (the
/// Centrifugo protocol's "insufficient state" range; the gateway sends 2500
/// after its broker connection came back), as the SDKs do by themselves.
pub fn resubscribe_advised(code: u32) -> bool {
    (2500..3000).contains(&code)
}

/// The subscribe command for `channel` with command id `id` (channel `i`
/// of a connection's list has id `i + 2`).
pub fn subscribe_command(id: usize, channel: &str) -> String {
    format!(
        "{{\"id\":{id},\"subscribe\":{{\"channel\":{}}}}}",
        json_str(channel)
    )
}

/// The connect command (id 1) and, unless the channels come with the
/// token, one subscribe per channel (ids 2..): one text frame.
pub fn hello(token: Option<&str>, channels: &[String], server_side: bool) -> String {
    let mut out = match token {
        Some(t) => format!("{{\"id\":1,\"connect\":{{\"token\":{}}}}}", json_str(t)),
        None => "{\"id\":1,\"connect\":{}}".to_string(),
    };
    if !server_side {
        for (i, ch) in channels.iter().enumerate() {
            out.push('\n');
            out.push_str(&subscribe_command(i + 2, ch));
        }
    }
    out
}

/// A connection token for user `user` (with `channels` as server-side
/// subscriptions when asked).
pub fn token(secret: &str, user: &str, channels: &[String], server_side: bool) -> String {
    let channels = if server_side {
        format!(
            ",\"channels\":{}",
            serde_json::to_string(channels).unwrap_or_default()
        )
    } else {
        String::new()
    };
    centrifuge_proto::token::sign(
        &format!("{{\"sub\":{}{channels}}}", json_str(user)),
        secret.as_bytes(),
    )
}

/// A `publish` command.
pub fn publish_command(id: u32, channel: &str, data: &str) -> String {
    format!(
        "{{\"id\":{id},\"publish\":{{\"channel\":{},\"data\":{data}}}}}",
        json_str(channel)
    )
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The API publisher's HTTP/1.1 connection: pipelined `POST`s, responses
/// read in order.
#[derive(Debug)]
pub struct ApiPublisher {
    /// `host:port` (the `Host` header).
    pub host: String,
    /// Request path.
    pub path: String,
    key: String,
    buf: Vec<u8>,
    /// Requests sent and not yet answered.
    pub outstanding: u64,
}

/// A response's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiOutcome {
    /// `200` with `{"result":...}`.
    Ok,
    /// Anything else: status (200 with an error body: 200).
    Failed(u16),
}

impl ApiPublisher {
    /// A publisher for `url` (`http://host:port/path`) with `key`.
    pub fn new(url: &str, key: &str) -> Result<(Self, std::net::SocketAddr), String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, "api/publish"));
        let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
            .map_err(|e| format!("{host:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host:?} resolves to nothing"))?;
        Ok((
            Self {
                host: host.to_string(),
                path: format!("/{path}"),
                key: key.to_string(),
                buf: Vec::new(),
                outstanding: 0,
            },
            addr,
        ))
    }

    /// The request publishing `data` on `channel`.
    pub fn request(&mut self, channel: &str, data: &str) -> Vec<u8> {
        self.outstanding += 1;
        let body = format!("{{\"channel\":{},\"data\":{data}}}", json_str(channel));
        http::request(
            "POST",
            &self.path,
            &self.host,
            &[
                ("X-API-Key", &self.key),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    /// Adds received bytes; returns the outcomes of the responses completed.
    pub fn input(&mut self, data: &[u8]) -> Vec<ApiOutcome> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let limits = HeadLimits {
            max_bytes: 8192,
            max_headers: 32,
        };
        loop {
            let head = http::with_response(&self.buf, limits, |h| match h {
                Head::Complete(r) => Some((r.status, r.head_len, r.body(false))),
                _ => None,
            });
            let Some((status, head_len, Ok(BodyKind::Length(n)))) = head else {
                break;
            };
            if self.buf.len() < head_len + n {
                break;
            }
            let body = &self.buf[head_len..head_len + n];
            out.push(if status == 200 && body.starts_with(b"{\"result\"") {
                ApiOutcome::Ok
            } else {
                ApiOutcome::Failed(status)
            });
            self.buf.drain(..head_len + n);
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        out
    }
}

/// Checks that `data` is valid JSON (what the server will require).
pub fn is_json(data: &str) -> bool {
    serde_json::from_str::<&RawValue>(data).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_name_and_assign_channels() {
        let opts = SubscribeOpts {
            pattern: Pattern::PersonalGroup,
            group_size: 3,
            channel_prefix: "b:".into(),
            ..SubscribeOpts::default()
        };
        let l = Layout::new(&opts, 7);
        assert_eq!(l.len(), 7 + 3);
        assert_eq!(l.of(4), [4, 7 + 1]);
        assert_eq!(l.name(4), "b:p4");
        assert_eq!(l.name(8), "b:g1");
        assert_eq!(l.targets(PublishTo::Group), 7..10);
        let shared = Layout::new(&SubscribeOpts::default(), 100);
        assert_eq!(
            (shared.len(), shared.of(55), shared.name(0)),
            (1, vec![0], "bench.0".into())
        );
    }

    #[test]
    fn payload_round_trips_through_a_push() {
        let data = publication_data(123, 7, 2, true, 100);
        assert!(is_json(&data));
        assert!((99..=101).contains(&data.len()), "{}", data.len());
        let line = format!("{{\"push\":{{\"channel\":\"c\",\"pub\":{{\"data\":{data}}}}}}}");
        assert_eq!(
            parse_line(&line).unwrap(),
            Incoming::Publication(123, 7, 2, true)
        );
        assert_eq!(parse_line("{}").unwrap(), Incoming::Ping);
        assert_eq!(
            parse_line("{\"id\":1,\"connect\":{\"client\":\"x\"}}").unwrap(),
            Incoming::Connected
        );
        assert_eq!(
            parse_line("{\"id\":2,\"subscribe\":{}}").unwrap(),
            Incoming::Ok(2)
        );
        assert_eq!(
            parse_line("{\"id\":3,\"error\":{\"code\":103,\"message\":\"x\"}}").unwrap(),
            Incoming::Error(3, 103, false)
        );
        assert_eq!(
            parse_line("{\"id\":4,\"error\":{\"code\":100,\"message\":\"x\",\"temporary\":true}}")
                .unwrap(),
            Incoming::Error(4, 100, true)
        );
        let unsub =
            "{\"push\":{\"channel\":\"c\",\"unsubscribe\":{\"code\":2500,\"reason\":\"r\"}}}";
        assert_eq!(
            parse_line(unsub).unwrap(),
            Incoming::Unsubscribed("c".into(), 2500)
        );
        assert_eq!(
            parse_line("{\"push\":{\"channel\":\"c\",\"unsubscribe\":{}}}").unwrap(),
            Incoming::Unsubscribed("c".into(), 0)
        );
        assert!(resubscribe_advised(2500) && resubscribe_advised(2999));
        assert!(!resubscribe_advised(2000) && !resubscribe_advised(3000));
    }

    #[test]
    fn hello_frames_and_tokens() {
        let h = hello(None, &["a".into(), "b\"".into()], false);
        let lines: Vec<&str> = h.split('\n').collect();
        assert_eq!(lines.len(), 3);
        for l in &lines {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        let t = token("s", "u1", &["a".into()], true);
        let c = centrifuge_proto::token::verify(&t, b"s", 0).unwrap();
        assert_eq!((c.sub.as_str(), c.channels), ("u1", vec!["a".to_string()]));
    }

    #[test]
    fn pipelined_api_responses() {
        let (mut p, _) = ApiPublisher::new("http://127.0.0.1:9/api/publish", "k").unwrap();
        p.request("c", "1");
        p.request("c", "2");
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"result\":{HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n{\"error\":{\"code\":102,\"message\":\"unknown\"}}";
        let mut got = p.input(&wire[..30]);
        got.extend(p.input(&wire[30..]));
        assert_eq!(got, [ApiOutcome::Ok, ApiOutcome::Failed(200)]);
        assert_eq!(p.outstanding, 0);
    }
}
