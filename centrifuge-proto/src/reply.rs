//! Encoding what the server sends: replies (carrying the command's id) and
//! pushes (no id), one JSON object per line. [`Lines`] collects the lines
//! of one outgoing frame; the SDKs split frames on `\n` and never see a
//! blank line from it.
//!
//! Fields follow the protocol's JSON encoding: zero values are omitted, a
//! result key is always present (the SDKs read `reply.subscribe` even when
//! empty), `data` and `info` are raw JSON.

use std::fmt::Write as _;

use serde_json::value::RawValue;

use crate::codes::ErrorCode;

/// Writes `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Who published (`ClientInfo`): `user` and `client` are always written.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// User id ("" for anonymous).
    pub user: &'a str,
    /// Client id.
    pub client: &'a str,
}

impl ClientInfo<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"user\":");
        json_str(out, self.user);
        out.extend_from_slice(b",\"client\":");
        json_str(out, self.client);
        out.push(b'}');
    }
}

/// The fields of a connect result this server sets.
#[derive(Debug, Clone, Copy)]
pub struct ConnectResult<'a> {
    /// The connection's client id.
    pub client: &'a str,
    /// Server version.
    pub version: &'a str,
    /// Server ping interval in seconds (0: no pings).
    pub ping: u32,
    /// The client must answer pings with `{}`.
    pub pong: bool,
    /// Server-side subscriptions made at connect (from the token).
    pub subs: &'a [&'a str],
    /// Data for the client from a connect proxy, verbatim.
    pub data: Option<&'a RawValue>,
}

/// The lines of one outgoing frame.
#[derive(Debug, Default, Clone)]
pub struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// An empty frame.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The frame's payload (lines joined by `\n`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the payload, leaving the frame empty.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    fn line(&mut self) -> &mut Vec<u8> {
        if !self.buf.is_empty() {
            self.buf.push(b'\n');
        }
        &mut self.buf
    }

    fn reply_head(&mut self, id: u32, key: &str) -> &mut Vec<u8> {
        let out = self.line();
        let _ = write!(Fmt(out), "{{\"id\":{id},\"{key}\":");
        out
    }

    /// `{"id":N,"<key>":{}}`: an empty result (subscribe, unsubscribe,
    /// publish, ping).
    pub fn empty_result(&mut self, id: u32, key: &str) {
        self.reply_head(id, key).extend_from_slice(b"{}}");
    }

    /// `{"id":N,"error":{"code":C,"message":M}}`.
    pub fn error(&mut self, id: u32, e: ErrorCode) {
        self.error_with(id, e.code, e.message, e.temporary);
    }

    /// An error with a code and message decided at run time (a proxy's).
    pub fn error_with(&mut self, id: u32, code: u32, message: &str, temporary: bool) {
        let out = self.reply_head(id, "error");
        let _ = write!(Fmt(out), "{{\"code\":{code},\"message\":");
        json_str(out, message);
        if temporary {
            out.extend_from_slice(b",\"temporary\":true");
        }
        out.extend_from_slice(b"}}");
    }

    /// `{"id":N,"<key>":{"data":D}}`, or an empty result without data (an
    /// RPC answer, a proxied subscribe).
    pub fn data_result(&mut self, id: u32, key: &str, data: Option<&RawValue>) {
        let out = self.reply_head(id, key);
        match data {
            Some(d) => {
                out.extend_from_slice(b"{\"data\":");
                out.extend(d.get().bytes().filter(|&b| b != b'\n'));
                out.extend_from_slice(b"}}");
            }
            None => out.extend_from_slice(b"{}}"),
        }
    }

    /// The connect reply.
    pub fn connect(&mut self, id: u32, r: &ConnectResult<'_>) {
        let out = self.reply_head(id, "connect");
        out.extend_from_slice(b"{\"client\":");
        json_str(out, r.client);
        out.extend_from_slice(b",\"version\":");
        json_str(out, r.version);
        if !r.subs.is_empty() {
            out.extend_from_slice(b",\"subs\":{");
            for (i, ch) in r.subs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, ch);
                out.extend_from_slice(b":{}");
            }
            out.push(b'}');
        }
        if r.ping > 0 {
            let _ = write!(Fmt(out), ",\"ping\":{}", r.ping);
        }
        if r.pong {
            out.extend_from_slice(b",\"pong\":true");
        }
        if let Some(d) = r.data {
            out.extend_from_slice(b",\"data\":");
            out.extend(d.get().bytes().filter(|&b| b != b'\n'));
        }
        out.extend_from_slice(b"}}");
    }

    /// `{"push":{"channel":C,"unsubscribe":{"code":..,"reason":..}}}`.
    pub fn unsubscribe_push(&mut self, channel: &str, code: u32, reason: &str) {
        let out = self.line();
        out.extend_from_slice(b"{\"push\":{\"channel\":");
        json_str(out, channel);
        let _ = write!(Fmt(out), ",\"unsubscribe\":{{\"code\":{code},\"reason\":");
        json_str(out, reason);
        out.extend_from_slice(b"}}}");
    }

    /// `{"push":{"channel":C,"subscribe":{}}}`: a server-side subscription
    /// made while connected.
    pub fn subscribe_push(&mut self, channel: &str) {
        let out = self.line();
        out.extend_from_slice(b"{\"push\":{\"channel\":");
        json_str(out, channel);
        out.extend_from_slice(b",\"subscribe\":{}}}");
    }
}

/// `{"push":{"channel":C,"pub":{"data":D[,"info":I]}}}`: a publication, as
/// the payload of its own frame (fan-out encodes it once per worker).
pub fn publication_push(channel: &str, data: &RawValue, info: Option<ClientInfo<'_>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + channel.len() + data.get().len());
    out.extend_from_slice(b"{\"push\":{\"channel\":");
    json_str(&mut out, channel);
    out.extend_from_slice(b",\"pub\":{\"data\":");
    // Raw newlines can only be JSON whitespace (inside strings they are
    // escaped); the SDKs split frames at them, so they go (as Centrifugo's
    // own encoder does).
    out.extend(data.get().bytes().filter(|&b| b != b'\n'));
    if let Some(info) = info {
        out.extend_from_slice(b",\"info\":");
        info.write(&mut out);
    }
    out.extend_from_slice(b"}}}");
    out
}

/// `fmt::Write` onto a byte vector (numbers through `write!`).
struct Fmt<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes;

    #[test]
    fn replies_as_the_sdks_read_them() {
        let mut l = Lines::new();
        l.connect(
            1,
            &ConnectResult {
                client: "c1",
                version: "0.1.0",
                ping: 25,
                pong: true,
                subs: &["news", "user:\"42\""],
                data: None,
            },
        );
        l.empty_result(2, "subscribe");
        l.error(3, codes::PERMISSION_DENIED);
        l.error(4, codes::INTERNAL);
        l.unsubscribe_push("news", 2000, "server unsubscribe");
        l.subscribe_push("chat:1");
        let text = String::from_utf8(l.take()).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(
            lines,
            [
                "{\"id\":1,\"connect\":{\"client\":\"c1\",\"version\":\"0.1.0\",\
                 \"subs\":{\"news\":{},\"user:\\\"42\\\"\":{}},\"ping\":25,\"pong\":true}}",
                "{\"id\":2,\"subscribe\":{}}",
                "{\"id\":3,\"error\":{\"code\":103,\"message\":\"permission denied\"}}",
                "{\"id\":4,\"error\":{\"code\":100,\"message\":\"internal server error\",\"temporary\":true}}",
                "{\"push\":{\"channel\":\"news\",\"unsubscribe\":{\"code\":2000,\"reason\":\"server unsubscribe\"}}}",
                "{\"push\":{\"channel\":\"chat:1\",\"subscribe\":{}}}",
            ]
        );
        for line in lines {
            serde_json::from_str::<serde_json::Value>(line).expect("valid JSON");
        }
        assert!(l.is_empty());
    }

    #[test]
    fn publication_carries_raw_data_and_info() {
        let data: Box<RawValue> = serde_json::from_str("{\"x\": [1, 2]}").unwrap();
        let p = publication_push(
            "news",
            &data,
            Some(ClientInfo {
                user: "",
                client: "c",
            }),
        );
        assert_eq!(
            std::str::from_utf8(&p).unwrap(),
            "{\"push\":{\"channel\":\"news\",\"pub\":{\"data\":{\"x\": [1, 2]},\
             \"info\":{\"user\":\"\",\"client\":\"c\"}}}}"
        );
    }

    #[test]
    fn raw_newlines_never_split_a_line() {
        // Pretty-printed JSON from the API or a proxy: its newlines are
        // whitespace, and the SDKs would split the frame at them.
        let data: Box<RawValue> = serde_json::from_str("{\n  \"a\": \"x\\ny\"\n}").unwrap();
        let p = publication_push("nl", &data, None);
        let mut l = Lines::new();
        l.data_result(7, "rpc", Some(&data));
        l.connect(
            1,
            &ConnectResult {
                client: "c",
                version: "v",
                ping: 0,
                pong: false,
                subs: &[],
                data: Some(&data),
            },
        );
        l.error_with(8, 4001, "custom\nreason", false);
        for out in [p, l.take()] {
            let text = String::from_utf8(out).unwrap();
            for line in text.split('\n') {
                let v: serde_json::Value = serde_json::from_str(line).expect(line);
                assert!(!v.is_null());
            }
            assert!(
                text.contains(r#""a": "x\ny""#),
                "escaped newlines stay: {text}"
            );
        }
    }
}
