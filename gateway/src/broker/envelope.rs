//! What nodes send each other through the broker, and the names they
//! send it on.
//!
//! - A publication goes on the channel's own broker channel: one broker
//!   subscription per channel with local subscribers, so a node receives
//!   only what it delivers. Payload: a tag byte, the publisher's user and
//!   client (length-prefixed), then the data JSON verbatim.
//! - Cluster-wide API operations (subscribe, unsubscribe, disconnect a user
//!   or a client) go on the control channel, every node's share of
//!   `/api/info` on the info channel, and a push to a connection of one node
//!   (and its answer) on that node's own channel; all JSON.
//!
//! Names: Redis channels are binary-safe, so `{prefix}:c:{channel}`; NATS
//! subjects are dot-separated tokens without spaces or wildcards, so the
//! channel is one hex token: `{prefix}.c.{hex}`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::app::pubsub::hub::Publication;

/// A publication's payload tag.
const PUBLICATION: u8 = b'P';

/// Encodes `p` (without its channel: that is the broker channel's name).
pub fn encode_publication(p: &Publication) -> Vec<u8> {
    let (user, client) = p.info.as_ref().map_or(("", ""), |(u, c)| (&**u, &**c));
    let mut out = Vec::with_capacity(5 + user.len() + client.len() + p.data.get().len());
    out.push(PUBLICATION);
    out.push(u8::from(p.info.is_some()));
    for s in [user, client] {
        // Users and client ids are far below 64 KiB (tokens and uuids).
        let len = s.len().min(u16::MAX as usize);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&s.as_bytes()[..len]);
    }
    out.extend_from_slice(p.data.get().as_bytes());
    out
}

/// Why a payload from the broker was not understood (counted, dropped: it
/// came from something that is not a gateway of this version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Wrong tag or truncated.
    #[error("malformed publication envelope")]
    Malformed,
    /// The data is not JSON.
    #[error("publication data is not JSON")]
    NotJson,
}

/// Decodes a publication received on `channel`.
pub fn decode_publication(channel: &str, payload: &[u8]) -> Result<Publication, EnvelopeError> {
    let rest = payload
        .strip_prefix(&[PUBLICATION])
        .ok_or(EnvelopeError::Malformed)?;
    let (&has_info, mut rest) = rest.split_first().ok_or(EnvelopeError::Malformed)?;
    let mut take = || -> Result<&str, EnvelopeError> {
        let len = rest.get(..2).ok_or(EnvelopeError::Malformed)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let s = rest.get(2..2 + len).ok_or(EnvelopeError::Malformed)?;
        rest = &rest[2 + len..];
        std::str::from_utf8(s).map_err(|_| EnvelopeError::Malformed)
    };
    let (user, client) = (take()?.to_owned(), take()?.to_owned());
    let data = std::str::from_utf8(rest).map_err(|_| EnvelopeError::NotJson)?;
    let data = RawValue::from_string(data.to_owned()).map_err(|_| EnvelopeError::NotJson)?;
    Ok(Publication {
        channel: channel.into(),
        data,
        info: (has_info == 1).then(|| (user.into(), client.into())),
    })
}

/// A message on the control, info or node channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// Server-side subscribe of a user's or a client's connections.
    Subscribe {
        /// `user` or `client`.
        target: TargetRef,
        /// The channel.
        channel: String,
    },
    /// Server-side unsubscribe.
    Unsubscribe {
        /// `user` or `client`.
        target: TargetRef,
        /// The channel.
        channel: String,
    },
    /// Disconnect with a code and reason.
    Disconnect {
        /// `user` or `client`.
        target: TargetRef,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// A node's figures (every `info_interval_ms`).
    Info {
        /// The node's `/api/info` entry.
        node: serde_json::Value,
    },
    /// A push API operation on a connection of the receiving node.
    Push {
        /// The asking node (where the answer goes).
        from: String,
        /// Its request number.
        request: u64,
        /// The connection id without the node part.
        conn: String,
        /// `POST`, `DELETE` or `GET`.
        method: String,
        /// Close code for `DELETE`.
        #[serde(default)]
        code: u16,
        /// Close reason for `DELETE`.
        #[serde(default)]
        reason: String,
        /// `text` or `binary` for `POST`.
        #[serde(default)]
        kind: String,
        /// The message for `POST`: its text, or lowercase hex of binary.
        #[serde(default)]
        body: String,
    },
    /// The answer to a [`Control::Push`].
    PushAnswer {
        /// The request number.
        request: u64,
        /// HTTP status.
        status: u16,
        /// JSON body (empty for 204).
        body: String,
    },
}

/// Whom a control operation targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetRef {
    /// Every connection of a user.
    User(String),
    /// One client id.
    Client(String),
}

/// Lowercase hex of `bytes` (NATS subject tokens, binary push bodies).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Inverse of [`hex`].
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publications_round_trip() {
        for info in [None, Some(("alice".into(), "c-1".into()))] {
            let p = Publication {
                channel: "news".into(),
                data: RawValue::from_string(r#"{"x": [1, "é"]}"#.into()).unwrap(),
                info,
            };
            let wire = encode_publication(&p);
            let back = decode_publication("news", &wire).unwrap();
            assert_eq!(back.data.get(), p.data.get());
            assert_eq!(back.info, p.info);
            assert_eq!(&*back.channel, "news");
        }
        let err = |payload: &[u8]| decode_publication("c", payload).err();
        assert_eq!(err(b""), Some(EnvelopeError::Malformed));
        assert_eq!(err(b"P\x01\x00\x05ab"), Some(EnvelopeError::Malformed));
        assert_eq!(
            err(b"P\x00\x00\x00\x00\x00not json"),
            Some(EnvelopeError::NotJson)
        );
    }

    #[test]
    fn control_messages_are_tagged_json() {
        let c = Control::Disconnect {
            target: TargetRef::User("42".into()),
            code: 4000,
            reason: "bye".into(),
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(
            text,
            r#"{"op":"disconnect","target":{"user":"42"},"code":4000,"reason":"bye"}"#
        );
        assert_eq!(serde_json::from_str::<Control>(&text).unwrap(), c);
        assert_eq!(unhex(&hex(b"a b.*>")).unwrap(), b"a b.*>");
        assert_eq!(unhex("zz"), None);
    }
}
