//! Helpers shared by the wsproto fuzz targets (`fuzz_targets/*.rs`).
//!
//! Most targets read their input as `[flags, n, cut_1 .. cut_n, body ..]`:
//! one byte of target-specific options, then up to 15 "cut" bytes saying how
//! the body is split into the pieces a socket might deliver, then the body
//! itself. The same body is then processed once whole and once in those
//! pieces, and the two runs must agree.

use wsproto::codec::{
    Codec, Event, FrameClass, FrameCounts, Limits, MessageKind, ProtoError, Role,
};
use wsproto::handshake::HandshakePolicy;
use wsproto::http::{BodyKind, ChunkedDecoder, ChunkedError, Head, HeadLimits, Headers, Reject};

/// A fuzz input split into its option byte, piece sizes and body.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Target-specific options.
    pub flags: u8,
    /// Piece sizes, one byte each (see [`pieces`]).
    pub cuts: &'a [u8],
    /// The bytes under test.
    pub body: &'a [u8],
}

/// Splits `data` as `[flags, n, cut_1 .. cut_(n % 16), body ..]`.
pub fn split(data: &[u8]) -> Option<Input<'_>> {
    let (&flags, rest) = data.split_first()?;
    let (&n, rest) = rest.split_first()?;
    let n = usize::from(n % 16).min(rest.len());
    let (cuts, body) = rest.split_at(n);
    Some(Input { flags, cuts, body })
}

/// Size of a piece from its cut byte: 0..=127 as is (0: an empty read),
/// 128..=255 as a multiple of 32 (0..=4064), so large bodies split too.
pub fn cut_len(c: u8) -> usize {
    if c < 128 {
        usize::from(c)
    } else {
        usize::from(c - 128) * 32
    }
}

/// `body` as consecutive pieces sized by `cuts` (clamped to what is left),
/// the remainder as the last piece. Concatenated, they are `body`.
pub fn pieces<'a>(body: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut rest = body;
    for &c in cuts {
        let (a, b) = rest.split_at(cut_len(c).min(rest.len()));
        out.push(a);
        rest = b;
    }
    out.push(rest);
    debug_assert_eq!(out.concat(), body);
    out
}

/// The end offsets of `pieces(body, cuts)`: the prefixes a reader sees.
pub fn prefix_ends(body: &[u8], cuts: &[u8]) -> Vec<usize> {
    let mut end = 0;
    pieces(body, cuts)
        .iter()
        .map(|p| {
            end += p.len();
            end
        })
        .collect()
}

/// An owned [`Event`], to compare runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    /// A message.
    Message(MessageKind, Vec<u8>),
    /// A ping.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame.
    Close(Option<u16>, String),
}

impl Ev {
    /// Copies `event`, checking the invariants every event must meet.
    pub fn check(event: Event<'_>, limits: &Limits) -> Ev {
        match event {
            Event::Message(kind, payload) => {
                assert!(
                    payload.len() <= limits.max_message_bytes,
                    "message of {} bytes over the {} limit",
                    payload.len(),
                    limits.max_message_bytes
                );
                if kind == MessageKind::Text {
                    assert!(std::str::from_utf8(payload).is_ok(), "text not UTF-8");
                }
                Ev::Message(kind, payload.to_vec())
            }
            Event::Ping(p) => {
                assert!(p.len() <= 125 && p.len() <= limits.max_frame_bytes);
                Ev::Ping(p.to_vec())
            }
            Event::Pong(p) => {
                assert!(p.len() <= 125 && p.len() <= limits.max_frame_bytes);
                Ev::Pong(p.to_vec())
            }
            Event::Close { code, reason } => {
                assert!(reason.len() <= 123);
                assert!(code.is_some() || reason.is_empty());
                if let Some(c) = code {
                    let allowed = matches!(c, 1000..=1003 | 1007..=1013 | 3000..=4999);
                    assert!(allowed, "close code {c} reported");
                }
                Ev::Close(code, reason.to_owned())
            }
        }
    }
}

/// Everything observable about one codec run.
#[derive(Debug, PartialEq, Eq)]
pub struct CodecRun {
    /// Events, in order.
    pub events: Vec<Ev>,
    /// The first error, if any (no more input is fed after it).
    pub result: Result<(), ProtoError>,
    /// Frames counted.
    pub counts: FrameCounts,
    /// `Codec::is_idle` at the end.
    pub idle: bool,
    /// `Codec::buffered_bytes` at the end.
    pub buffered: usize,
}

/// Feeds `pieces` to a fresh codec, one `feed_counted` call each, stopping
/// at the first error; checks the codec's own invariants on the way.
pub fn run_codec(role: Role, limits: &Limits, pieces: &[&[u8]]) -> CodecRun {
    let mut codec = Codec::new(role);
    let mut events = Vec::new();
    let mut counts = FrameCounts::default();
    let mut result = Ok(());
    // Partial header (<= 14) or message so far plus a staged control frame.
    let bound = limits.max_message_bytes.max(limits.max_frame_bytes) + 125 + 14;
    for piece in pieces {
        let mut buf = piece.to_vec();
        result = codec.feed_counted(&mut buf, limits, &mut counts, &mut |e| {
            events.push(Ev::check(e, limits));
        });
        if let Err(err) = &result {
            assert!(!matches!(err, ProtoError::Failed { .. }));
            // Sticky: the same close code, no events, nothing buffered.
            let again = codec.feed(&mut [0x81, 0x80, 0, 0, 0, 0], limits, &mut |e| {
                panic!("event after an error: {e:?}")
            });
            assert_eq!(
                again,
                Err(ProtoError::Failed {
                    code: err.close_code()
                })
            );
            assert!(codec.is_idle());
            assert_eq!(codec.buffered_bytes(), 0);
            break;
        }
        assert!(
            codec.buffered_bytes() <= bound,
            "{} bytes buffered",
            codec.buffered_bytes()
        );
    }
    // Every event came from a counted frame.
    let n = |f: fn(&Ev) -> bool| events.iter().filter(|e| f(e)).count() as u64;
    assert!(n(|e| matches!(e, Ev::Ping(_))) <= counts.get(FrameClass::Ping));
    assert!(n(|e| matches!(e, Ev::Pong(_))) <= counts.get(FrameClass::Pong));
    assert!(n(|e| matches!(e, Ev::Close(..))) <= counts.get(FrameClass::Close));
    assert!(
        n(|e| matches!(e, Ev::Message(..)))
            <= counts.get(FrameClass::Text) + counts.get(FrameClass::Binary)
    );
    CodecRun {
        events,
        result,
        counts,
        idle: codec.is_idle(),
        buffered: codec.buffered_bytes(),
    }
}

/// Small limits, so the frame and message limit paths are reached.
pub const CODEC_LIMITS: [Limits; 4] = [
    Limits {
        max_frame_bytes: 1024,
        max_message_bytes: 4096,
    },
    Limits {
        max_frame_bytes: 125,
        max_message_bytes: 300,
    },
    Limits {
        max_frame_bytes: 16,
        max_message_bytes: 16,
    },
    Limits {
        max_frame_bytes: 4096,
        max_message_bytes: 1024,
    },
];

/// The codec targets: the body fed whole, in the input's pieces and (when
/// asked and short) one byte at a time must give the same events, error,
/// frame counts and final state.
pub fn codec_target(role: Role, data: &[u8]) {
    let Some(input) = split(data) else { return };
    let limits = CODEC_LIMITS[usize::from(input.flags & 3)];
    let whole = run_codec(role, &limits, &[input.body]);
    let chunked = run_codec(role, &limits, &pieces(input.body, input.cuts));
    assert_eq!(whole, chunked, "whole vs pieces {:?}", input.cuts);
    if input.flags & 4 != 0 && input.body.len() <= 512 {
        let bytes: Vec<&[u8]> = input.body.chunks(1).collect();
        let bytewise = run_codec(role, &limits, &bytes);
        assert_eq!(whole, bytewise, "whole vs byte at a time");
    }
}

/// The RFC 6455 §1.3 example key and its accept value.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Routes served by [`policy`].
pub const ROUTES: [&str; 2] = ["/ws", "/chat"];

/// Subprotocols supported by [`policy`].
pub const SUBPROTOCOLS: [&str; 2] = ["v2.gateway", "v1.gateway"];

/// A server policy: two routes, a health path, two subprotocols and, when
/// `origins`, an origin allow-list.
pub fn policy(origins: bool) -> HandshakePolicy {
    HandshakePolicy {
        max_request_bytes: 1024,
        max_headers: 16,
        routes: ROUTES.iter().map(|s| s.to_string()).collect(),
        health_path: Some("/healthz".into()),
        subprotocols: SUBPROTOCOLS.iter().map(|s| s.to_string()).collect(),
        allowed_origins: if origins {
            vec![
                "https://good.example".into(),
                "http://localhost:8080".into(),
            ]
        } else {
            Vec::new()
        },
    }
}

/// Everything observable about one run of a [`ChunkedDecoder`].
#[derive(Debug, PartialEq, Eq)]
pub struct ChunkedRun {
    /// Decoded body bytes (up to the error, if any).
    pub out: Vec<u8>,
    /// Input bytes used (`None` after an error, which has no position).
    pub used: Option<usize>,
    /// `is_done` at the end.
    pub done: bool,
    /// The error, if any.
    pub err: Option<ChunkedError>,
}

/// Decodes `pieces` with one `decode` call each, stopping at an error.
pub fn run_chunked(max_body: usize, pieces: &[&[u8]]) -> ChunkedRun {
    let mut decoder = ChunkedDecoder::new(max_body);
    let mut out = Vec::new();
    let mut used = 0;
    let mut err = None;
    for piece in pieces {
        let before = out.len();
        match decoder.decode(piece, &mut out) {
            Ok(n) => {
                assert!(n <= piece.len());
                // Only the end of the body leaves input unused.
                assert!(n == piece.len() || decoder.is_done());
                assert!(out.len() - before <= n);
                used += n;
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
        assert!(out.len() <= max_body, "{} > {max_body}", out.len());
    }
    assert!(out.len() <= max_body, "{} > {max_body}", out.len());
    if let Some(ChunkedError::TooLarge(limit)) = err {
        assert_eq!(limit, max_body);
    }
    ChunkedRun {
        out,
        used: err.is_none().then_some(used),
        done: decoder.is_done(),
        err,
    }
}

/// A chunked body in `rest` (what follows a head): decoded whole and in the
/// input's pieces, the runs must agree; a finished body ends with the
/// trailer's blank line and decodes the same from exactly its own bytes.
pub fn check_chunked(rest: &[u8], max_body: usize, cuts: &[u8]) {
    let whole = run_chunked(max_body, &[rest]);
    let chunked = run_chunked(max_body, &pieces(rest, cuts));
    assert_eq!(whole, chunked, "whole vs pieces {cuts:?}");
    if whole.done {
        let used = whole.used.expect("done without error");
        assert!(used >= 5 && rest[..used].ends_with(b"\n"));
        let exact = run_chunked(max_body, &[&rest[..used]]);
        assert_eq!(exact, whole);
    } else if whole.err.is_none() {
        assert_eq!(whole.used, Some(rest.len()));
    }
}

/// Head limits chosen by two bits each: `max_bytes` and `max_headers`
/// (above 32 the header slots come from the heap).
pub fn head_limits(flags: u8) -> HeadLimits {
    HeadLimits {
        max_bytes: [64, 512, 4096, 65_536][usize::from(flags & 3)],
        max_headers: [0, 4, 16, 40][usize::from((flags >> 2) & 3)],
    }
}

/// A chunked-body limit chosen by two bits.
pub fn body_limit(flags: u8) -> usize {
    [0, 16, 1024, 1 << 20][usize::from((flags >> 4) & 3)]
}

/// Framing must agree with the headers it came from: a length never comes
/// with `Transfer-Encoding` and matches the first `Content-Length`; chunked
/// never comes with `Content-Length` and names `chunked`.
pub fn check_framing<'b>(h: &impl Headers<'b>, kind: BodyKind) {
    let has_te = h.header("Transfer-Encoding").is_some();
    let first_cl = h.header("Content-Length");
    match kind {
        BodyKind::Length(n) => {
            assert!(!has_te);
            match first_cl {
                Some(cl) => {
                    let first = cl.split(|&b| b == b',').next().unwrap_or(b"").trim_ascii();
                    let parsed: usize = std::str::from_utf8(first).unwrap().parse().unwrap();
                    assert_eq!(parsed, n);
                }
                None => assert_eq!(n, 0),
            }
        }
        BodyKind::Chunked => {
            assert!(first_cl.is_none());
            assert!(h.has_token("Transfer-Encoding", b"chunked", true));
        }
        BodyKind::ToEof => assert!(first_cl.is_none() && !has_te),
    }
}

/// A comparable summary of a head verdict.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadSummary {
    /// Needs more bytes.
    Incomplete,
    /// Complete: head length and number of fields.
    Complete(usize, usize),
    /// Refused.
    Invalid(Reject),
}

impl HeadSummary {
    /// Summarises `head` by `len` (head length) and `fields` (field count).
    pub fn of<T>(head: &Head<T>, len: impl Fn(&T) -> (usize, usize)) -> Self {
        match head {
            Head::Incomplete => HeadSummary::Incomplete,
            Head::Complete(t) => {
                let (a, b) = len(t);
                HeadSummary::Complete(a, b)
            }
            Head::Invalid(r) => HeadSummary::Invalid(*r),
        }
    }
}
