//! Decoding what a client sends: one WebSocket text frame holds one or more
//! JSON commands separated by `\n`. A command names its method by key
//! (`{"id":1,"connect":{...}}`, protocol v2); the server takes the first
//! non-null method in the protocol's order, and ignores keys it does not
//! know (the SDKs send `name`, `flag`, `headers`, ...). A command without an
//! id and without a method is a pong (`{}`).
//!
//! Strings and JSON payloads borrow from the frame where they can (no
//! escapes), so decoding a publish copies nothing.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Why a command could not be decoded. The server answers with disconnect
/// 3501 "bad request" ([`crate::codes::BAD_REQUEST_DISCONNECT`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a JSON object of the expected shape.
    #[error("malformed command: {0}")]
    Json(String),
    /// A command with an id but no method this protocol knows.
    #[error("command {0} has no known method")]
    UnknownMethod(u32),
    /// A method that needs an id (a reply) came without one.
    #[error("command without id")]
    MissingId,
}

/// `connect`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConnectRequest<'a> {
    /// A connection JWT; empty or absent: anonymous.
    #[serde(borrow)]
    pub token: Option<Cow<'a, str>>,
    /// SDK name ("js", "python"), informational.
    #[serde(borrow)]
    pub name: Option<Cow<'a, str>>,
    /// SDK version, informational (passed to a connect proxy).
    #[serde(borrow)]
    pub version: Option<Cow<'a, str>>,
    /// Custom connect data, verbatim (passed to a connect proxy).
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

/// `subscribe`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest<'a> {
    /// The channel (required).
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// A subscription JWT, for channels the namespace does not open to
    /// clients.
    #[serde(borrow)]
    pub token: Option<Cow<'a, str>>,
    /// Asks for recovery of missed publications (not available yet:
    /// answered as a plain subscribe with `recovered` absent).
    pub recover: bool,
    /// Custom subscribe data, verbatim (passed to a subscribe proxy).
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

/// `unsubscribe`, and other commands that only name a channel.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChannelRequest<'a> {
    /// The channel (required).
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
}

/// `publish`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PublishRequest<'a> {
    /// The channel (required).
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// The publication's data: any JSON value, kept verbatim.
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

/// `send`: an asynchronous message to the server, no reply.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SendRequest<'a> {
    /// The message, verbatim.
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

/// `rpc`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RpcRequest<'a> {
    /// The method name.
    #[serde(borrow)]
    pub method: Cow<'a, str>,
    /// The request data, verbatim.
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

/// A decoded command.
#[derive(Debug)]
pub enum Command<'a> {
    /// `connect` (must be the first command).
    Connect(u32, ConnectRequest<'a>),
    /// `subscribe`.
    Subscribe(u32, SubscribeRequest<'a>),
    /// `unsubscribe`.
    Unsubscribe(u32, ChannelRequest<'a>),
    /// `publish`.
    Publish(u32, PublishRequest<'a>),
    /// `rpc`.
    Rpc(u32, RpcRequest<'a>),
    /// The legacy `ping` command (replied `{"id":N,"ping":{}}`).
    Ping(u32),
    /// A method of the protocol this server does not implement (`presence`,
    /// `presence_stats`, `history`, `refresh`, `sub_refresh`): its reply key.
    NotAvailable(u32, &'static str),
    /// `send` (no reply).
    Send(SendRequest<'a>),
    /// `{}`: the answer to a server ping.
    Pong,
}

impl Command<'_> {
    /// The command's id (0 for `send` and pongs).
    pub fn id(&self) -> u32 {
        match self {
            Command::Connect(id, _)
            | Command::Subscribe(id, _)
            | Command::Unsubscribe(id, _)
            | Command::Publish(id, _)
            | Command::Rpc(id, _)
            | Command::Ping(id)
            | Command::NotAvailable(id, _) => *id,
            Command::Send(_) | Command::Pong => 0,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw<'a> {
    id: u32,
    #[serde(borrow)]
    connect: Option<ConnectRequest<'a>>,
    #[serde(borrow)]
    subscribe: Option<SubscribeRequest<'a>>,
    #[serde(borrow)]
    unsubscribe: Option<ChannelRequest<'a>>,
    #[serde(borrow)]
    publish: Option<PublishRequest<'a>>,
    presence: Option<IgnoredAny>,
    presence_stats: Option<IgnoredAny>,
    history: Option<IgnoredAny>,
    ping: Option<IgnoredAny>,
    #[serde(borrow)]
    send: Option<SendRequest<'a>>,
    #[serde(borrow)]
    rpc: Option<RpcRequest<'a>>,
    refresh: Option<IgnoredAny>,
    sub_refresh: Option<IgnoredAny>,
}

/// Decodes one command (one line of a frame).
pub fn decode(line: &str) -> Result<Command<'_>, DecodeError> {
    let raw: Raw<'_> = serde_json::from_str(line).map_err(|e| DecodeError::Json(e.to_string()))?;
    let id = raw.id;
    // The protocol's order: the first non-null method wins.
    let command = if let Some(c) = raw.connect {
        Command::Connect(id, c)
    } else if let Some(s) = raw.subscribe {
        Command::Subscribe(id, s)
    } else if let Some(u) = raw.unsubscribe {
        Command::Unsubscribe(id, u)
    } else if let Some(p) = raw.publish {
        Command::Publish(id, p)
    } else if raw.presence.is_some() {
        Command::NotAvailable(id, "presence")
    } else if raw.presence_stats.is_some() {
        Command::NotAvailable(id, "presence_stats")
    } else if raw.history.is_some() {
        Command::NotAvailable(id, "history")
    } else if raw.ping.is_some() {
        Command::Ping(id)
    } else if let Some(s) = raw.send {
        return Ok(Command::Send(s));
    } else if let Some(r) = raw.rpc {
        Command::Rpc(id, r)
    } else if raw.refresh.is_some() {
        Command::NotAvailable(id, "refresh")
    } else if raw.sub_refresh.is_some() {
        Command::NotAvailable(id, "sub_refresh")
    } else if id == 0 {
        return Ok(Command::Pong);
    } else {
        return Err(DecodeError::UnknownMethod(id));
    };
    if id == 0 {
        return Err(DecodeError::MissingId);
    }
    Ok(command)
}

/// The commands of one frame, in order: lines separated by `\n` (blank
/// lines and a trailing newline are tolerated).
pub fn decode_frame(frame: &str) -> impl Iterator<Item = Result<Command<'_>, DecodeError>> {
    frame
        .split('\n')
        .filter(|line| !line.trim().is_empty())
        .map(decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Command<'_> {
        decode(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn what_the_sdks_send() {
        // centrifuge-js 5.8.0: id last, connect and subscribes in one frame.
        let frame = "{\"connect\":{\"name\":\"js\"},\"id\":1}\n\
                     {\"subscribe\":{\"channel\":\"news\",\"flag\":1},\"id\":2}";
        let cmds: Vec<_> = decode_frame(frame).collect::<Result<_, _>>().unwrap();
        assert!(matches!(&cmds[0], Command::Connect(1, c) if c.token.is_none()));
        assert!(matches!(&cmds[1], Command::Subscribe(2, s) if s.channel == "news"));
        // centrifuge-python 0.7.0: spaces after separators.
        assert!(matches!(
            one("{\"id\": 1, \"connect\": {\"token\": \"abc\", \"name\": \"python\"}}"),
            Command::Connect(1, c) if c.token.as_deref() == Some("abc")
        ));
        // A pong.
        assert!(matches!(one("{}"), Command::Pong));
        // Publish data kept verbatim and borrowed.
        let line = "{\"id\":4,\"publish\":{\"channel\":\"chat:1\",\"data\":{\"text\": \"hi\\n\"}}}";
        match one(line) {
            Command::Publish(4, p) => {
                assert_eq!(p.data.unwrap().get(), "{\"text\": \"hi\\n\"}");
                assert!(matches!(p.channel, Cow::Borrowed("chat:1")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unimplemented_methods_are_named_for_their_reply() {
        for (line, key) in [
            ("{\"id\":5,\"history\":{\"channel\":\"a\"}}", "history"),
            ("{\"id\":5,\"presence\":{\"channel\":\"a\"}}", "presence"),
            ("{\"id\":5,\"presence_stats\":{}}", "presence_stats"),
            ("{\"id\":5,\"refresh\":{\"token\":\"t\"}}", "refresh"),
            ("{\"id\":5,\"sub_refresh\":{}}", "sub_refresh"),
        ] {
            assert!(
                matches!(one(line), Command::NotAvailable(5, k) if k == key),
                "{line}"
            );
        }
        assert!(matches!(one("{\"id\":6,\"ping\":{}}"), Command::Ping(6)));
        assert!(matches!(
            one("{\"send\":{\"data\":[1,2]}}"),
            Command::Send(s) if s.data.unwrap().get() == "[1,2]"
        ));
    }

    #[test]
    fn bad_commands_are_errors() {
        for bad in [
            "not json",
            "[1,2]",
            "{\"id\":-1,\"connect\":{}}",
            "{\"id\":1,\"subscribe\":{\"channel\":5}}",
            "{\"id\":1,\"publish\":{\"channel\":\"a\",\"data\":}}",
        ] {
            assert!(matches!(decode(bad), Err(DecodeError::Json(_))), "{bad}");
        }
        assert_eq!(
            decode("{\"id\":7,\"frobnicate\":{}}").unwrap_err(),
            DecodeError::UnknownMethod(7)
        );
        assert_eq!(
            decode("{\"subscribe\":{\"channel\":\"a\"}}").unwrap_err(),
            DecodeError::MissingId
        );
        // Null methods are absent.
        assert!(matches!(one("{\"id\":0,\"connect\":null}"), Command::Pong));
        // Blank lines between commands are tolerated.
        assert_eq!(decode_frame("{}\n\n{}\n").count(), 2);
    }
}
