//! The `pubsub` app: channels and fan-out behind the Centrifugo client
//! protocol v2 (JSON), so Centrifugo's own SDKs (centrifuge-js,
//! centrifuge-python) work against the gateway.
//!
//! What is implemented: `connect` (anonymous when allowed, or an HS256
//! connection token: `sub`, `exp`, `channels` for server-side
//! subscriptions), `subscribe` (namespace options, or an HS256
//! subscription token), `unsubscribe`, `publish` (namespace options),
//! app-level pings (`{}`) with pongs, the legacy `ping` command, `send`
//! (accepted, no reply), publication / subscribe / unsubscribe pushes, and
//! disconnects as close frames with the protocol's codes. Not implemented,
//! answered with error 108 "not available": `history`, `presence`,
//! `presence_stats`, `rpc`, `refresh`, `sub_refresh` (so recovery, presence
//! and connection expiry are not offered: a token's `exp` is checked at
//! connect only). Binary frames (the protobuf format) get 3506. With
//! `[pubsub.proxy]`, a backend decides connects without a token, `rpc`,
//! client publications and subscriptions without a token ([`proxy`]); `rpc`
//! without an RPC proxy gets 108.
//!
//! The per-worker channel index and delivery are in [`hub`]; the server API
//! that publishes into it is in [`api`].

pub mod api;
pub mod hub;
pub mod proxy;

use std::collections::HashMap;
use std::sync::Arc;

use engine::ConnId;
use serde_json::value::RawValue;
use wsproto::http_client::ClientResponse;

use centrifuge_proto::codes::{self, Disconnect, ErrorCode};
use centrifuge_proto::command::{self, Command, ConnectRequest, PublishRequest, SubscribeRequest};
use centrifuge_proto::reply::{ConnectResult, Lines};
use centrifuge_proto::token::{self, TokenError};
use wsproto::codec::MessageKind;
use wsproto::http::Reject;
use wsproto::session::{Ending, Flow, Opening, Refused, UpgradeRequest};

use super::{AfterCall, App, Ctx};
use crate::upstream::{Caller, Failure, ProxyKind, Purpose};
use hub::{OnFail, Publication, Settings};
use proxy::{Proxies, Verdict};

/// The version the connect reply reports.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A pub/sub route's app on one worker (the channels themselves are the
/// worker's [`hub::Hub`], shared by all pub/sub routes).
#[derive(Debug)]
pub struct PubSub {
    settings: Arc<Settings>,
    /// The proxies, when `[pubsub.proxy]` names a backend.
    proxies: Option<Proxies>,
    /// This route's index (for backend calls).
    route: u8,
    /// Proxied publish and subscribe commands waiting for the backend.
    calls: HashMap<(ConnId, u32), Waiting>,
    /// Connections whose connect is with the connect proxy: the lines they
    /// sent meanwhile (centrifuge-js sends its subscribes right behind
    /// connect), replayed once it is decided.
    held: HashMap<ConnId, Vec<String>>,
}

/// A proxied command's own data, for when the answer comes.
#[derive(Debug)]
struct Waiting {
    channel: Box<str>,
    data: Option<Box<RawValue>>,
}

/// How a command ended a frame early: a disconnect.
type Stop = Disconnect;

/// Lines a client may send while its connect is with the proxy (a client
/// flooding before it is accepted is cut off).
const HELD_LINES: usize = 256;

impl PubSub {
    /// The app for route `route`, with the proxies of the pubsub routes.
    pub fn new(settings: Arc<Settings>, proxies: Option<Proxies>, route: u8) -> Self {
        Self {
            settings,
            proxies,
            route,
            calls: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// The path of `kind`'s proxy, if it is on.
    fn proxied(&self, kind: ProxyKind) -> bool {
        self.proxies.as_ref().and_then(|p| p.path(kind)).is_some()
    }

    /// Calls `kind`'s proxy for command `id` with `fields` beyond the common ones.
    fn call_proxy(
        &self,
        ctx: &mut Ctx<'_>,
        kind: ProxyKind,
        id: u32,
        fields: serde_json::Map<String, serde_json::Value>,
    ) {
        let Some(p) = &self.proxies else { return };
        let Some(path) = p.path(kind) else { return };
        let (client, user) = ctx
            .hub
            .client(ctx.id)
            .map(|c| (c.client_id.to_string(), c.user.to_string()))
            .unwrap_or_default();
        let mut body = proxy::base(&client);
        if kind != ProxyKind::Connect {
            body.insert("user".into(), user.into());
        }
        body.extend(fields);
        let request = proxy::request(ctx.upstream.host(p.backend), path, &body);
        let caller = Caller {
            conn: ctx.id,
            route: self.route,
            purpose: Purpose::Proxy(kind, id),
        };
        ctx.upstream.call(ctx.io, p.backend, caller, request);
    }

    fn disconnect(ctx: &mut Ctx<'_>, d: Disconnect) -> Flow {
        ctx.hub.counters.disconnect(d.code);
        let ending = if d == codes::SLOW {
            Ending::SlowConsumer
        } else {
            Ending::Normal
        };
        Flow::Close {
            code: d.code,
            reason: d.reason,
            ending,
        }
    }

    fn error(ctx: &mut Ctx<'_>, lines: &mut Lines, id: u32, e: ErrorCode) {
        ctx.hub.counters.error(e);
        lines.error(id, e);
    }

    /// One command; replies go to `lines`.
    fn command(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: Command<'_>,
        lines: &mut Lines,
    ) -> Result<(), Stop> {
        let connected = ctx.hub.client(ctx.id).is_some_and(|c| c.connected);
        match cmd {
            Command::Connect(id, req) if !connected => self.connect(ctx, id, req, lines),
            // A second connect, or anything but a pong before the first.
            Command::Connect(..) => Err(codes::BAD_REQUEST_DISCONNECT),
            Command::Pong => Ok(()),
            _ if !connected => Err(codes::BAD_REQUEST_DISCONNECT),
            Command::Subscribe(id, req) => self.subscribe(ctx, id, req, lines),
            Command::Unsubscribe(id, req) => {
                if req.channel.is_empty() {
                    return Err(codes::BAD_REQUEST_DISCONNECT);
                }
                ctx.hub.unsubscribe(ctx.io, ctx.id, &req.channel);
                lines.empty_result(id, "unsubscribe");
                Ok(())
            }
            Command::Publish(id, req) => self.publish(ctx, id, req, lines),
            Command::Ping(id) => {
                lines.empty_result(id, "ping");
                Ok(())
            }
            Command::Rpc(id, req) if self.proxied(ProxyKind::Rpc) => {
                let mut f = serde_json::Map::new();
                f.insert("method".into(), req.method.as_ref().into());
                if let Some(data) = req.data {
                    f.insert("data".into(), proxy::raw(data));
                }
                self.call_proxy(ctx, ProxyKind::Rpc, id, f);
                Ok(())
            }
            Command::Rpc(id, _) | Command::NotAvailable(id, _) => {
                Self::error(ctx, lines, id, codes::NOT_AVAILABLE);
                Ok(())
            }
            Command::Send(_) => Ok(()),
        }
    }

    fn connect(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: u32,
        req: ConnectRequest<'_>,
        lines: &mut Lines,
    ) -> Result<(), Stop> {
        let cfg = &self.settings.config;
        let (user, channels) = match req.token.as_deref().filter(|t| !t.is_empty()) {
            None if self.proxied(ProxyKind::Connect) => {
                let mut f = serde_json::Map::new();
                if let Some(name) = &req.name {
                    f.insert("name".into(), name.as_ref().into());
                }
                if let Some(version) = &req.version {
                    f.insert("version".into(), version.as_ref().into());
                }
                if let Some(data) = req.data {
                    f.insert("data".into(), proxy::raw(data));
                }
                self.held.insert(ctx.id, Vec::new());
                self.call_proxy(ctx, ProxyKind::Connect, id, f);
                return Ok(());
            }
            None if cfg.allow_anonymous => (String::new(), Vec::new()),
            // No credentials and anonymous connections not allowed:
            // centrifuge answers "bad request".
            None => return Err(codes::BAD_REQUEST_DISCONNECT),
            Some(_) if cfg.token_hmac_secret.is_empty() => return Err(codes::INVALID_TOKEN),
            Some(t) => match token::verify(t, cfg.token_hmac_secret.as_bytes(), unix_now()) {
                Ok(claims) => (claims.sub, claims.channels),
                Err(TokenError::Expired) => {
                    Self::error(ctx, lines, id, codes::TOKEN_EXPIRED);
                    return Ok(());
                }
                Err(TokenError::Invalid(why)) => {
                    log::debug!("connect token refused: {why}");
                    return Err(codes::INVALID_TOKEN);
                }
            },
        };
        self.connected(ctx, id, &user, &channels, None, lines)
    }

    /// Completes a connect for `user` with server-side subscriptions to
    /// `channels` (and `data` for the client, from a connect proxy).
    fn connected(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: u32,
        user: &str,
        channels: &[String],
        data: Option<&RawValue>,
        lines: &mut Lines,
    ) -> Result<(), Stop> {
        let cfg = &self.settings.config;
        // Server-side subscriptions: every namespace must exist and the
        // whole set fit the per-connection limit.
        if channels
            .iter()
            .any(|c| self.settings.options(c).is_none() || c.is_empty())
        {
            Self::error(ctx, lines, id, codes::UNKNOWN_CHANNEL);
            return Ok(());
        }
        if channels.len() > cfg.channel_limit {
            return Err(codes::CHANNEL_LIMIT);
        }
        ctx.hub.connected(ctx.id, user);
        let mut subs: Vec<&str> = Vec::with_capacity(channels.len());
        let mut waits: Vec<Arc<str>> = Vec::new();
        for c in channels {
            if ctx.hub.subscribe(ctx.id, c, false, true).is_ok() {
                subs.push(c);
                if ctx.hub.awaits(c) {
                    waits.push(c.as_str().into());
                }
            }
        }
        let client_id = ctx
            .hub
            .client(ctx.id)
            .map(|c| c.client_id.clone())
            .unwrap_or_default();
        let result = ConnectResult {
            client: &client_id,
            version: VERSION,
            ping: cfg.ping_interval_ms.div_ceil(1000) as u32,
            pong: true,
            subs: &subs,
            data,
        };
        if waits.is_empty() {
            lines.connect(id, &result);
        } else {
            // The reply names subscriptions: it waits until they are in
            // effect in the cluster, and later replies wait behind it.
            let mut reply = Lines::new();
            reply.connect(id, &result);
            self.send_lines(ctx, lines, None);
            let conn = ctx.id;
            ctx.hub
                .hold(ctx.io, conn, reply.take(), waits, OnFail::Disconnect);
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: u32,
        req: SubscribeRequest<'_>,
        lines: &mut Lines,
    ) -> Result<(), Stop> {
        if req.channel.is_empty() {
            return Err(codes::BAD_REQUEST_DISCONNECT);
        }
        let cfg = &self.settings.config;
        let mut with_token = false;
        if let Some(t) = req.token.as_deref().filter(|t| !t.is_empty()) {
            let claims = if cfg.token_hmac_secret.is_empty() {
                Err(TokenError::Invalid("no token secret configured"))
            } else {
                token::verify(t, cfg.token_hmac_secret.as_bytes(), unix_now())
            };
            match claims {
                Err(TokenError::Expired) => {
                    Self::error(ctx, lines, id, codes::TOKEN_EXPIRED);
                    return Ok(());
                }
                Err(TokenError::Invalid(_)) => {
                    Self::error(ctx, lines, id, codes::PERMISSION_DENIED);
                    return Ok(());
                }
                Ok(claims) => {
                    let user = ctx.hub.client(ctx.id).map(|c| &*c.user).unwrap_or("");
                    if claims.channel.as_deref() != Some(&*req.channel) || claims.sub != user {
                        return Err(codes::INVALID_TOKEN);
                    }
                    with_token = true;
                }
            }
        }
        if !with_token && self.proxied(ProxyKind::Subscribe) {
            if self.settings.options(&req.channel).is_none() {
                Self::error(ctx, lines, id, codes::UNKNOWN_CHANNEL);
                return Ok(());
            }
            let mut f = serde_json::Map::new();
            f.insert("channel".into(), req.channel.as_ref().into());
            if let Some(data) = req.data {
                f.insert("data".into(), proxy::raw(data));
            }
            self.calls.insert(
                (ctx.id, id),
                Waiting {
                    channel: req.channel.as_ref().into(),
                    data: None,
                },
            );
            self.call_proxy(ctx, ProxyKind::Subscribe, id, f);
            return Ok(());
        }
        match ctx.hub.subscribe(ctx.id, &req.channel, with_token, false) {
            Ok(()) => self.subscribed(ctx, lines, id, &req.channel, None),
            Err(e) => Self::error(ctx, lines, id, e),
        }
        Ok(())
    }

    /// Replies to subscribe command `id` (made), or holds the reply until
    /// the cluster's broker confirms the channel (see `hub`'s `Hub::hold`).
    fn subscribed(
        &mut self,
        ctx: &mut Ctx<'_>,
        lines: &mut Lines,
        id: u32,
        channel: &str,
        data: Option<&RawValue>,
    ) {
        if !ctx.hub.awaits(channel) {
            return lines.data_result(id, "subscribe", data);
        }
        // What this frame answered before goes first.
        self.send_lines(ctx, lines, None);
        let mut reply = Lines::new();
        reply.data_result(id, "subscribe", data);
        let conn = ctx.id;
        ctx.hub
            .reply_subscribed(ctx.io, conn, channel, reply.take(), OnFail::Error(id));
    }

    fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: u32,
        req: PublishRequest<'_>,
        lines: &mut Lines,
    ) -> Result<(), Stop> {
        if req.channel.is_empty() {
            return Err(codes::BAD_REQUEST_DISCONNECT);
        }
        let Some(data) = req.data else {
            Self::error(ctx, lines, id, codes::BAD_REQUEST);
            return Ok(());
        };
        let cfg = &self.settings.config;
        if req.channel.len() > cfg.channel_max_length {
            Self::error(ctx, lines, id, codes::BAD_REQUEST);
            return Ok(());
        }
        if data.get().len() > cfg.max_publication_bytes {
            Self::error(ctx, lines, id, codes::LIMIT_EXCEEDED);
            return Ok(());
        }
        let Some(opts) = self.settings.options(&req.channel) else {
            Self::error(ctx, lines, id, codes::UNKNOWN_CHANNEL);
            return Ok(());
        };
        let Some(client) = ctx.hub.client(ctx.id) else {
            return Err(codes::SERVER_ERROR);
        };
        if self.proxied(ProxyKind::Publish) {
            let mut f = serde_json::Map::new();
            f.insert("channel".into(), req.channel.as_ref().into());
            f.insert("data".into(), proxy::raw(data));
            self.calls.insert(
                (ctx.id, id),
                Waiting {
                    channel: req.channel.as_ref().into(),
                    data: Some(data.to_owned()),
                },
            );
            self.call_proxy(ctx, ProxyKind::Publish, id, f);
            return Ok(());
        }
        let allowed = (opts.allow_publish_for_client
            && (!client.user.is_empty() || opts.allow_publish_for_anonymous))
            || (opts.allow_publish_for_subscriber && client.subscribed(&req.channel));
        if !allowed {
            Self::error(ctx, lines, id, codes::PERMISSION_DENIED);
            return Ok(());
        }
        match Self::publish_now(ctx, &req.channel, data.to_owned()) {
            Ok(()) => lines.empty_result(id, "publish"),
            Err(e) => Self::error(ctx, lines, id, e),
        }
        Ok(())
    }

    /// Publishes a client's publication (checks done); error 100 when the
    /// cluster's broker cannot take it.
    fn publish_now(ctx: &mut Ctx<'_>, channel: &str, data: Box<RawValue>) -> Result<(), ErrorCode> {
        let info = ctx
            .hub
            .client(ctx.id)
            .map(|c| (c.user.clone(), c.client_id.clone()));
        let p = Publication {
            channel: channel.into(),
            data,
            info,
        };
        ctx.hub.publish(ctx.io, ctx.counters, p)?;
        ctx.hub.counters.published_client += 1;
        Ok(())
    }

    /// A proxy's answer to command `id`.
    fn proxied_answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        kind: ProxyKind,
        id: u32,
        result: Result<ClientResponse, Failure>,
    ) -> Flow {
        let waiting = self.calls.remove(&(ctx.id, id));
        let held = match kind {
            ProxyKind::Connect => self.held.remove(&ctx.id),
            _ => None,
        };
        let mut lines = Lines::new();
        let mut stop = None;
        match proxy::verdict(result) {
            Verdict::Disconnect { code, reason } => {
                ctx.hub.pending_closes.push((ctx.id, code, reason.into()));
                return Flow::Continue;
            }
            Verdict::Error {
                code,
                message,
                temporary,
            } => {
                if (100..=111).contains(&code) {
                    ctx.hub.counters.errors[(code - 100) as usize] += 1;
                }
                lines.error_with(id, code, &message, temporary);
            }
            Verdict::Result(r) => match kind {
                ProxyKind::Connect => {
                    let data = r.data.as_deref();
                    if let Err(d) = self.connected(ctx, id, &r.user, &r.channels, data, &mut lines)
                    {
                        stop = Some(d);
                    }
                }
                ProxyKind::Rpc => lines.data_result(id, "rpc", r.data.as_deref()),
                ProxyKind::Publish => {
                    if let Some(w) = waiting {
                        let data = r.data.or(w.data).unwrap_or_default();
                        match Self::publish_now(ctx, &w.channel, data) {
                            Ok(()) => lines.empty_result(id, "publish"),
                            Err(e) => Self::error(ctx, &mut lines, id, e),
                        }
                    }
                }
                ProxyKind::Subscribe => {
                    if let Some(w) = waiting {
                        match ctx.hub.subscribe(ctx.id, &w.channel, true, false) {
                            Ok(()) => {
                                let data = r.data.as_deref();
                                self.subscribed(ctx, &mut lines, id, &w.channel, data);
                            }
                            Err(e) => Self::error(ctx, &mut lines, id, e),
                        }
                    }
                }
            },
        }
        let flow = self.send_lines(ctx, &mut lines, stop);
        // What the client sent while its connect was decided.
        match held.filter(|h| !h.is_empty() && flow == Flow::Continue) {
            Some(h) => self.message(ctx, MessageKind::Text, h.join("\n").as_bytes()),
            None => flow,
        }
    }

    /// Sends the replies collected in `lines` (behind any held output),
    /// then ends with `stop` if set.
    fn send_lines(&mut self, ctx: &mut Ctx<'_>, lines: &mut Lines, mut stop: Option<Stop>) -> Flow {
        if !lines.is_empty() && ctx.hub.is_held(ctx.id) {
            let conn = ctx.id;
            ctx.hub.emit(ctx.io, conn, lines.take());
        } else if !lines.is_empty() {
            let payload = lines.take();
            if ctx.send_message(MessageKind::Text, &payload) == Err(Refused::Slow) {
                stop = stop.or(Some(codes::SLOW));
            }
        }
        match stop {
            Some(d) => Self::disconnect(ctx, d),
            None => Flow::Continue,
        }
    }
}

impl App for PubSub {
    fn open(
        &mut self,
        ctx: &mut Ctx<'_>,
        _request: &UpgradeRequest<'_, '_, '_>,
    ) -> Result<Opening, Reject> {
        let now = ctx.now_ms();
        ctx.hub.open(ctx.id, now);
        Ok(Opening::Accept)
    }

    fn message(&mut self, ctx: &mut Ctx<'_>, kind: MessageKind, payload: &[u8]) -> Flow {
        if kind == MessageKind::Binary {
            return Self::disconnect(ctx, codes::INAPPROPRIATE_PROTOCOL);
        }
        // Text frames are valid UTF-8 (the codec checked).
        let text = std::str::from_utf8(payload).unwrap_or_default();
        let mut lines = Lines::new();
        let mut stop = None;
        for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
            if let Some(held) = self.held.get_mut(&ctx.id) {
                // Its connect is with the proxy: later commands wait.
                if held.len() >= HELD_LINES {
                    stop = Some(codes::BAD_REQUEST_DISCONNECT);
                    break;
                }
                held.push(line.to_owned());
                continue;
            }
            let result = match command::decode(line) {
                Ok(cmd) => self.command(ctx, cmd, &mut lines),
                Err(e) => {
                    log::debug!("bad command: {e}");
                    Err(codes::BAD_REQUEST_DISCONNECT)
                }
            };
            if let Err(d) = result {
                stop = Some(d);
                break;
            }
        }
        // Replies to the commands before a disconnect still go out first.
        self.send_lines(ctx, &mut lines, stop)
    }

    fn upstream_done(
        &mut self,
        ctx: &mut Ctx<'_>,
        purpose: Purpose,
        result: Result<ClientResponse, Failure>,
    ) -> AfterCall {
        match purpose {
            Purpose::Proxy(kind, id) => AfterCall::Flow(self.proxied_answer(ctx, kind, id, result)),
            _ => AfterCall::Flow(Flow::Continue),
        }
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>, now: u64) -> Flow {
        let stale = ctx.hub.client(ctx.id).is_some_and(|c| {
            !c.connected && now.saturating_sub(c.opened_ms) >= self.settings.config.stale_ms
        });
        if stale {
            return Self::disconnect(ctx, codes::STALE);
        }
        Flow::Continue
    }

    fn closed(&mut self, ctx: &mut Ctx<'_>, _code: Option<u16>) {
        ctx.hub.closed(ctx.id);
        self.held.remove(&ctx.id);
        if !self.calls.is_empty() {
            self.calls.retain(|(conn, _), _| *conn != ctx.id);
        }
    }
}

/// Seconds since the Unix epoch, for token `exp`.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
