//! RFC 6455 frame codec and message assembly, for both roles.
//!
//! The decoder is a push parser: [`Codec::feed`] takes whatever bytes the
//! socket produced and reports complete messages and control frames through a
//! callback. It is written for a gateway that holds very many mostly idle
//! connections, so the per-connection state is kept tiny:
//!
//! * A partial frame header (at most 14 bytes) is kept inline in the codec.
//! * A frame that arrives whole inside one `feed` call is unmasked in place and
//!   handed out as a slice of the caller's buffer — no copy, no allocation.
//! * Only a message that straddles `feed` calls (or is fragmented) is streamed
//!   into a single reassembly `Vec`, which is *released* (not cleared) as soon
//!   as the message is delivered, so an idle connection owns no heap memory.
//!
//! We reuse tungstenite's frame header parser/formatter and its opcode and
//! close-code tables, but not its `WebSocketContext`, which costs a few
//! hundred bytes inline plus a read buffer per connection.

use std::num::NonZeroU16;

use bytes::Bytes;
use tungstenite::protocol::frame::{
    coding::{CloseCode, Control, Data, OpCode},
    FrameHeader,
};

/// Which end of the connection this codec is.
///
/// RFC 6455 §5.1: a client masks every frame it sends and a server never
/// masks; each side must fail the connection if the other breaks that rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Incoming frames must be masked; outgoing frames are not.
    Server,
    /// Incoming frames must not be masked; outgoing frames are.
    Client,
}

/// Size limits enforced while decoding.
///
/// Both are checked as soon as a frame header is parsed, so an oversized
/// frame or message is refused before any of its payload is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted payload of a single frame.
    pub max_frame_bytes: usize,
    /// Largest accepted message (sum of the payloads of all its fragments).
    pub max_message_bytes: usize,
}

/// Type of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Opcode 0x1; the payload is valid UTF-8.
    Text,
    /// Opcode 0x2; arbitrary bytes.
    Binary,
}

/// Something the peer sent, as reported by [`Codec::feed`].
///
/// Slices borrow either the caller's input buffer (zero copy) or the codec's
/// reassembly buffer; they are only valid for the duration of the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete, possibly reassembled, message. `Text` payloads are
    /// already validated UTF-8.
    Message(MessageKind, &'a [u8]),
    /// A ping; the caller should answer with a pong carrying the same bytes.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame, already validated. `code` is `None` when the payload
    /// was empty (RFC 6455 §7.1.5: "no status code received").
    Close {
        /// The close status code, if any.
        code: Option<u16>,
        /// The close reason (may be empty).
        reason: &'a str,
    },
}

/// The kind of a frame, as counted by [`FrameCounts`]: the opcode, with the
/// two data opcodes told apart from continuation frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameClass {
    /// Opcode 0x1: the first (or only) frame of a text message.
    Text = 0,
    /// Opcode 0x2: the first (or only) frame of a binary message.
    Binary = 1,
    /// Opcode 0x0: a later fragment of a message.
    Continuation = 2,
    /// Opcode 0x9.
    Ping = 3,
    /// Opcode 0xA.
    Pong = 4,
    /// Opcode 0x8.
    Close = 5,
}

impl FrameClass {
    /// Every class, in index order.
    pub const ALL: [FrameClass; 6] = [
        FrameClass::Text,
        FrameClass::Binary,
        FrameClass::Continuation,
        FrameClass::Ping,
        FrameClass::Pong,
        FrameClass::Close,
    ];

    /// Lower-case name, used as a metric label value.
    pub fn label(self) -> &'static str {
        match self {
            FrameClass::Text => "text",
            FrameClass::Binary => "binary",
            FrameClass::Continuation => "continuation",
            FrameClass::Ping => "ping",
            FrameClass::Pong => "pong",
            FrameClass::Close => "close",
        }
    }
}

/// Frames counted by class (index = `FrameClass as usize`): plain integers
/// the caller owns, so counting costs one add per frame and nothing per
/// connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameCounts(pub [u64; 6]);

impl FrameCounts {
    /// Counts one frame.
    pub fn add(&mut self, class: FrameClass) {
        self.0[class as usize] += 1;
    }

    /// Frames of `class` counted.
    pub fn get(&self, class: FrameClass) -> u64 {
        self.0[class as usize]
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &FrameCounts) {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a += b);
    }
}

/// Why decoding failed. Every variant maps onto the close code the endpoint
/// must send before dropping the connection ([`ProtoError::close_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The peer broke a framing rule of RFC 6455 (close code 1002).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A text message or close reason was not valid UTF-8 (close code 1007).
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// A frame header announced more payload than allowed (close code 1009).
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooBig {
        /// Payload length announced by the frame header.
        size: u64,
        /// The configured `max_frame_bytes`.
        limit: usize,
    },
    /// A message would grow beyond the limit (close code 1009).
    #[error("message of at least {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooBig {
        /// Message length known so far, including the frame just announced.
        size: u64,
        /// The configured `max_message_bytes`.
        limit: usize,
    },
    /// `feed` was called again after an earlier error. The codec does not
    /// keep the original error (it would cost bytes on every connection),
    /// only its close code.
    #[error("codec already failed (close code {code})")]
    Failed {
        /// Close code of the original error.
        code: u16,
    },
}

impl ProtoError {
    /// The close code (RFC 6455 §7.4.1) to send for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtoError::Protocol(_) => 1002,
            ProtoError::InvalidUtf8(_) => 1007,
            ProtoError::FrameTooBig { .. } | ProtoError::MessageTooBig { .. } => 1009,
            ProtoError::Failed { code } => *code,
        }
    }
}

/// Longest possible frame header: 2 bytes + 8 length bytes + 4 mask bytes.
const MAX_HEADER: usize = 14;

/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What kind of frame's payload is being read. Data frames only need to know
/// whether they end the message; the message type lives in `Codec::message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Data { fin: bool },
    Close,
    Ping,
    Pong,
}

/// Decoder position. The two variants never need their data at the same
/// time, which lets a partial header and the payload bookkeeping share the
/// same 16 bytes.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Between frames; the first `len` bytes of a header are in `bytes`.
    Header { bytes: [u8; MAX_HEADER], len: u8 },
    /// Inside a frame's payload.
    Payload {
        /// Payload bytes still to come.
        remaining: u64,
        /// The frame mask, rotated so that `mask[0]` applies to the next byte.
        mask: Option<[u8; 4]>,
        kind: FrameKind,
        /// Total payload length of a control frame (always <= 125), used to
        /// find where its payload starts in the staging buffer.
        control_len: u8,
    },
}

impl State {
    const START: State = State::Header {
        bytes: [0; MAX_HEADER],
        len: 0,
    };
}

/// Incremental RFC 6455 decoder for one connection.
///
/// Kept deliberately small (48 bytes on 64-bit targets: the limits are
/// passed to each `feed`, not stored per connection) and allocation-free
/// while idle; see the module documentation.
///
/// After a `Close` event the codec keeps decoding whatever follows. RFC 6455
/// forbids a peer from sending anything after its close frame, so the caller
/// is expected to stop feeding; the codec does not police that itself.
#[derive(Debug)]
pub struct Codec {
    /// Reassembly buffer for messages that are fragmented or straddle `feed`
    /// calls. A straddling control frame interleaved inside a message is
    /// staged at its tail and truncated away once handled. Released
    /// (capacity 0) whenever no message is in progress.
    buf: Vec<u8>,
    state: State,
    role: Role,
    /// Type of the data message in progress, if any.
    message: Option<MessageKind>,
    /// Bytes at the end of `buf` forming an incomplete UTF-8 sequence (0..=3)
    /// that the next fragment must complete. Everything before them is
    /// already validated.
    utf8_pending: u8,
    /// Close code of the error that failed this codec.
    failed: Option<NonZeroU16>,
}

impl Codec {
    /// Creates an idle codec. Allocates nothing.
    pub fn new(role: Role) -> Self {
        Codec {
            buf: Vec::new(),
            state: State::START,
            role,
            message: None,
            utf8_pending: 0,
            failed: None,
        }
    }

    /// Feeds received bytes.
    ///
    /// `data` is mutable so masked payloads are unmasked in place and a
    /// message wholly contained in `data` is handed out as a borrowed slice of
    /// it (zero copy) — the common case. Bytes of an incomplete header or
    /// frame are retained internally, so `data` may be reused afterwards.
    ///
    /// Calls `on_event` once per event, in order. Stops at and returns the
    /// first protocol error; events before it have been delivered. After an
    /// error the codec stays failed and releases its buffer: every further
    /// call returns [`ProtoError::Failed`] with the same close code.
    pub fn feed(
        &mut self,
        data: &mut [u8],
        limits: &Limits,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtoError> {
        self.feed_counted(data, limits, &mut FrameCounts::default(), on_event)
    }

    /// [`Codec::feed`], also counting into `counts` every frame whose header
    /// was accepted (by class; a frame is counted once, when its header is
    /// complete, however its payload is split).
    pub fn feed_counted(
        &mut self,
        data: &mut [u8],
        limits: &Limits,
        counts: &mut FrameCounts,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtoError> {
        if let Some(code) = self.failed {
            return Err(ProtoError::Failed { code: code.get() });
        }
        let result = self.run(data, limits, counts, on_event);
        if let Err(err) = &result {
            self.failed = NonZeroU16::new(err.close_code());
            self.buf = Vec::new();
            self.state = State::START;
            self.message = None;
            self.utf8_pending = 0;
        }
        result
    }

    /// True when no partial header, frame or message is buffered or in
    /// progress: the connection costs no heap memory now, and the next byte
    /// fed starts a new frame.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Header { len: 0, .. }) && self.message.is_none()
    }

    /// Bytes currently buffered (partial header and reassembly), for metrics
    /// and memory accounting.
    pub fn buffered_bytes(&self) -> usize {
        let header = match self.state {
            State::Header { len, .. } => usize::from(len),
            State::Payload { .. } => 0,
        };
        self.buf.len() + header
    }

    fn run(
        &mut self,
        mut data: &mut [u8],
        limits: &Limits,
        counts: &mut FrameCounts,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtoError> {
        loop {
            let used = match self.state {
                State::Header { .. } if data.is_empty() => return Ok(()),
                State::Header { .. } => {
                    // A data frame that starts while a message is in progress
                    // is a continuation (start_frame has checked the opcode).
                    let continuing = self.message.is_some();
                    let used = self.read_header(data, limits)?;
                    if let State::Payload { kind, .. } = self.state {
                        counts.add(match (kind, self.message) {
                            (FrameKind::Data { .. }, _) if continuing => FrameClass::Continuation,
                            (FrameKind::Data { .. }, Some(MessageKind::Binary)) => {
                                FrameClass::Binary
                            }
                            (FrameKind::Data { .. }, _) => FrameClass::Text,
                            (FrameKind::Close, _) => FrameClass::Close,
                            (FrameKind::Ping, _) => FrameClass::Ping,
                            (FrameKind::Pong, _) => FrameClass::Pong,
                        });
                    }
                    used
                }
                // A frame with an empty (remainder of its) payload completes
                // without input, so only stop when bytes are really needed.
                State::Payload { remaining, .. } if remaining > 0 && data.is_empty() => {
                    return Ok(())
                }
                State::Payload { .. } => self.read_payload(data, on_event)?,
            };
            data = &mut std::mem::take(&mut data)[used..];
        }
    }

    /// Consumes header bytes from `data`; returns how many. Switches to the
    /// payload state once a whole header has been seen.
    fn read_header(&mut self, data: &[u8], limits: &Limits) -> Result<usize, ProtoError> {
        let State::Header { bytes, len } = &mut self.state else {
            unreachable!("read_header called outside the header state");
        };
        // Fast path: the whole header is in `data`, parse it from there.
        if *len == 0 && data.len() >= 2 {
            let need = header_len(data[1]);
            if data.len() >= need {
                let (header, length) = parse_header(&data[..need])?;
                self.start_frame(header, length, limits)?;
                return Ok(need);
            }
        }
        // Slow path: accumulate the header inline. The total size is only
        // known after the second byte, and we must not take any payload
        // bytes, so copy in two steps.
        let mut used = 0;
        loop {
            let have = usize::from(*len);
            let need = if have >= 2 { header_len(bytes[1]) } else { 2 };
            if have == need && have >= 2 {
                break;
            }
            let n = (need - have).min(data.len() - used);
            if n == 0 {
                return Ok(used);
            }
            bytes[have..have + n].copy_from_slice(&data[used..used + n]);
            *len += n as u8;
            used += n;
        }
        let (header, length) = parse_header(&bytes[..usize::from(*len)])?;
        self.start_frame(header, length, limits)?;
        Ok(used)
    }

    /// Validates a freshly parsed header against RFC 6455 and the limits,
    /// then enters the payload state.
    fn start_frame(
        &mut self,
        header: FrameHeader,
        length: u64,
        limits: &Limits,
    ) -> Result<(), ProtoError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(ProtoError::Protocol(
                "reserved bits set without a negotiated extension",
            ));
        }
        if length > i64::MAX as u64 {
            return Err(ProtoError::Protocol(
                "most significant bit of 64-bit length set",
            ));
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => {
                return Err(ProtoError::Protocol("unmasked frame from client"))
            }
            (Role::Client, true) => return Err(ProtoError::Protocol("masked frame from server")),
            _ => {}
        }
        let kind = match header.opcode {
            OpCode::Control(control) => {
                if !header.is_final {
                    return Err(ProtoError::Protocol("fragmented control frame"));
                }
                if length > MAX_CONTROL_PAYLOAD {
                    return Err(ProtoError::Protocol("control frame payload over 125 bytes"));
                }
                match control {
                    Control::Close if length == 1 => {
                        return Err(ProtoError::Protocol("close frame with 1-byte payload"))
                    }
                    Control::Close => FrameKind::Close,
                    Control::Ping => FrameKind::Ping,
                    Control::Pong => FrameKind::Pong,
                    Control::Reserved(_) => return Err(ProtoError::Protocol("reserved opcode")),
                }
            }
            OpCode::Data(data) => {
                match (data, self.message) {
                    (Data::Continue, None) => {
                        return Err(ProtoError::Protocol(
                            "continuation frame without a message in progress",
                        ))
                    }
                    (Data::Text | Data::Binary, Some(_)) => {
                        return Err(ProtoError::Protocol(
                            "new data frame while a fragmented message is in progress",
                        ))
                    }
                    (Data::Reserved(_), _) => return Err(ProtoError::Protocol("reserved opcode")),
                    _ => {}
                }
                FrameKind::Data {
                    fin: header.is_final,
                }
            }
        };
        if length > limits.max_frame_bytes as u64 {
            return Err(ProtoError::FrameTooBig {
                size: length,
                limit: limits.max_frame_bytes,
            });
        }
        if let FrameKind::Data { .. } = kind {
            // `buf` holds exactly the message so far: a straddling control
            // frame is only staged there while its own payload is read.
            let size = self.buf.len() as u64 + length;
            if size > limits.max_message_bytes as u64 {
                return Err(ProtoError::MessageTooBig {
                    size,
                    limit: limits.max_message_bytes,
                });
            }
            match header.opcode {
                OpCode::Data(Data::Text) => self.message = Some(MessageKind::Text),
                OpCode::Data(Data::Binary) => self.message = Some(MessageKind::Binary),
                _ => {}
            }
        }
        self.state = State::Payload {
            remaining: length,
            mask: header.mask,
            kind,
            // Bounded by MAX_CONTROL_PAYLOAD for control frames; unused for data.
            control_len: length.min(MAX_CONTROL_PAYLOAD) as u8,
        };
        Ok(())
    }

    /// Consumes payload bytes from `data`; returns how many. Delivers the
    /// event when the frame (and, for data, the message) is complete.
    fn read_payload(
        &mut self,
        data: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, ProtoError> {
        let State::Payload {
            remaining,
            mask,
            kind,
            control_len,
        } = &mut self.state
        else {
            unreachable!("read_payload called outside the payload state");
        };
        let at_frame_start = match kind {
            // A data frame's earlier bytes would be in `buf`.
            FrameKind::Data { .. } => self.buf.is_empty(),
            _ => *remaining == u64::from(*control_len),
        };
        let n = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
        let chunk = &mut data[..n];
        if let Some(mask) = mask {
            apply_mask(chunk, *mask);
            mask.rotate_left(n % 4);
        }
        *remaining -= n as u64;
        let done = *remaining == 0;
        let kind = *kind;
        let control_len = usize::from(*control_len);
        if done {
            self.state = State::START;
        }

        match kind {
            FrameKind::Data { fin } => {
                let message = self
                    .message
                    .expect("a data frame always has a message in progress");
                if done && fin && at_frame_start {
                    // Zero copy: the whole message is this one frame, in `data`.
                    if message == MessageKind::Text && std::str::from_utf8(chunk).is_err() {
                        return Err(ProtoError::InvalidUtf8("text message"));
                    }
                    self.message = None;
                    on_event(Event::Message(message, chunk));
                    return Ok(n);
                }
                let start = self.buf.len() - usize::from(self.utf8_pending);
                self.buf.extend_from_slice(chunk);
                if message == MessageKind::Text {
                    // Fail fast: validate what arrived now, carrying a split
                    // code point over to the next chunk.
                    self.utf8_pending = utf8_incomplete_tail(&self.buf[start..])?;
                }
                if done && fin {
                    if self.utf8_pending != 0 {
                        return Err(ProtoError::InvalidUtf8("text message"));
                    }
                    let buf = std::mem::take(&mut self.buf);
                    self.message = None;
                    on_event(Event::Message(message, &buf));
                }
            }
            FrameKind::Close | FrameKind::Ping | FrameKind::Pong => {
                if done && at_frame_start {
                    control_event(kind, chunk, on_event)?;
                } else {
                    self.buf.extend_from_slice(chunk);
                    if done {
                        let start = self.buf.len() - control_len;
                        control_event(kind, &self.buf[start..], on_event)?;
                        self.buf.truncate(start);
                        if self.buf.is_empty() {
                            self.buf = Vec::new();
                        }
                    }
                }
            }
        }
        Ok(n)
    }
}

/// Length of a header whose second byte (mask bit + length byte) is `b1`.
fn header_len(b1: u8) -> usize {
    let extended = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// Parses a complete header with tungstenite's parser.
fn parse_header(bytes: &[u8]) -> Result<(FrameHeader, u64), ProtoError> {
    match FrameHeader::parse(&mut std::io::Cursor::new(bytes)) {
        Ok(Some(parsed)) => Ok(parsed),
        // Cannot happen: `bytes` is exactly `header_len` long.
        Ok(None) => Err(ProtoError::Protocol("truncated frame header")),
        // The only error tungstenite reports for an in-memory header.
        Err(_) => Err(ProtoError::Protocol("reserved opcode")),
    }
}

/// Validates `bytes` as UTF-8 that may end in the middle of a code point.
/// Returns the length of that incomplete tail (0..=3).
fn utf8_incomplete_tail(bytes: &[u8]) -> Result<u8, ProtoError> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(0),
        // `error_len() == None`: the input merely ends inside a sequence.
        Err(e) if e.error_len().is_none() => Ok((bytes.len() - e.valid_up_to()) as u8),
        Err(_) => Err(ProtoError::InvalidUtf8("text message")),
    }
}

/// Validates a complete control frame payload and reports it.
fn control_event(
    kind: FrameKind,
    payload: &[u8],
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(), ProtoError> {
    let event = match kind {
        FrameKind::Ping => Event::Ping(payload),
        FrameKind::Pong => Event::Pong(payload),
        FrameKind::Close => match payload {
            [] => Event::Close {
                code: None,
                reason: "",
            },
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !CloseCode::from(code).is_allowed() {
                    return Err(ProtoError::Protocol("close code not allowed on the wire"));
                }
                let reason = std::str::from_utf8(reason)
                    .map_err(|_| ProtoError::InvalidUtf8("close reason"))?;
                Event::Close {
                    code: Some(code),
                    reason,
                }
            }
            // Rejected when the header was parsed.
            [_] => return Err(ProtoError::Protocol("close frame with 1-byte payload")),
        },
        FrameKind::Data { .. } => unreachable!("not a control frame"),
    };
    on_event(event);
    Ok(())
}

/// XORs `buf` with `mask`, starting at mask offset 0.
///
/// tungstenite's `apply_mask` is not public, so this is our own, in safe
/// code the compiler vectorises: from 256 bytes on, byte-wise up to a
/// 32-byte boundary of the buffer's address; then 32-byte blocks (two SSE2
/// `pxor` each on plain x86-64), 8-byte words and a byte-wise tail.
/// Payloads sit at any offset of a receive buffer; aligned blocks keep
/// loads and stores from straddling cache lines (a 4 KiB payload at an odd
/// offset, microbenchmark on this box: ~170 ns aligned against ~250 ns for
/// the former unaligned 8-byte loop).
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    // Short payloads (most messages) skip the byte-wise head: it would be
    // a good part of their work, and their few words cross few lines.
    let head = if buf.len() < 256 {
        0
    } else {
        buf.as_ptr().align_offset(32).min(buf.len())
    };
    let (head, body) = buf.split_at_mut(head);
    for (i, byte) in head.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
    let mut mask = mask;
    mask.rotate_left(head.len() % 4);
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut blocks = body.chunks_exact_mut(32);
    for block in &mut blocks {
        let mut words = [0u64; 4];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u64::from_ne_bytes(block[i * 8..i * 8 + 8].try_into().expect("8 bytes")) ^ wide;
        }
        for (i, w) in words.iter().enumerate() {
            block[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
    }
    // Blocks and words are multiples of 4 bytes: the mask offset stays put.
    let mut words = blocks.into_remainder().chunks_exact_mut(8);
    for word in &mut words {
        let value = u64::from_ne_bytes((&*word).try_into().expect("chunk of 8")) ^ wide;
        word.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Appends `payload` XORed with `mask` to `out` in one pass.
fn extend_masked(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut words = payload.chunks_exact(8);
    for word in &mut words {
        let value = u64::from_ne_bytes(word.try_into().expect("chunk of 8")) ^ wide;
        out.extend_from_slice(&value.to_ne_bytes());
    }
    out.extend(
        words
            .remainder()
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i & 3]),
    );
}

/// Encodes one frame: header + payload, masked with `mask` when `Some`
/// (client role; the caller supplies the random mask since this module has
/// no randomness). One allocation of the exact size, one pass over the
/// payload.
pub fn encode_frame(opcode: OpCode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Bytes {
    let mut out = Vec::with_capacity(frame_len(opcode, payload.len(), mask.is_some()));
    encode_frame_into(&mut out, opcode, fin, payload, mask);
    Bytes::from(out)
}

/// The encoded size of a frame with `payload_len` bytes of payload.
fn frame_len(opcode: OpCode, payload_len: usize, masked: bool) -> usize {
    let header = FrameHeader {
        opcode,
        mask: masked.then_some([0; 4]),
        ..FrameHeader::default()
    };
    header.len(payload_len as u64) + payload_len
}

/// [`encode_frame`] appended to `out` (e.g. a buffer the caller reuses).
pub fn encode_frame_into(
    out: &mut Vec<u8>,
    opcode: OpCode,
    fin: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let header = FrameHeader {
        is_final: fin,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask,
    };
    let length = payload.len() as u64;
    out.reserve(header.len(length) + payload.len());
    header
        .format(length, out)
        .expect("writing to a Vec cannot fail");
    match mask {
        Some(mask) => extend_masked(out, payload, mask),
        None => out.extend_from_slice(payload),
    }
}

/// Encodes a complete message as a single final frame.
pub fn encode_message(kind: MessageKind, payload: &[u8], mask: Option<[u8; 4]>) -> Bytes {
    encode_frame(message_opcode(kind), true, payload, mask)
}

/// The encoded size of a message frame with `payload_len` bytes of payload:
/// what [`encode_message_into`] appends.
pub fn message_len(payload_len: usize, masked: bool) -> usize {
    frame_len(message_opcode(MessageKind::Binary), payload_len, masked)
}

/// [`encode_message`] appended to `out`.
pub fn encode_message_into(
    out: &mut Vec<u8>,
    kind: MessageKind,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    encode_frame_into(out, message_opcode(kind), true, payload, mask);
}

fn message_opcode(kind: MessageKind) -> OpCode {
    OpCode::Data(match kind {
        MessageKind::Text => Data::Text,
        MessageKind::Binary => Data::Binary,
    })
}

/// Encodes a close frame. `reason` is truncated on a char boundary so the
/// payload fits the 125-byte control frame limit (2 code bytes + 123).
pub fn encode_close(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD as usize - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD as usize];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(
        OpCode::Control(Control::Close),
        true,
        &payload[..2 + end],
        mask,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A codec with its limits, as the tests use it: feeds pass them along.
    struct Tc {
        codec: Codec,
        limits: Limits,
    }

    impl Tc {
        fn new(role: Role, limits: Limits) -> Self {
            Tc {
                codec: Codec::new(role),
                limits,
            }
        }

        fn feed(
            &mut self,
            data: &mut [u8],
            on_event: &mut dyn FnMut(Event<'_>),
        ) -> Result<(), ProtoError> {
            self.codec.feed(data, &self.limits, on_event)
        }

        fn feed_counted(
            &mut self,
            data: &mut [u8],
            counts: &mut FrameCounts,
            on_event: &mut dyn FnMut(Event<'_>),
        ) -> Result<(), ProtoError> {
            self.codec
                .feed_counted(data, &self.limits, counts, on_event)
        }
    }

    impl std::ops::Deref for Tc {
        type Target = Codec;
        fn deref(&self) -> &Codec {
            &self.codec
        }
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    const LIMITS: Limits = Limits {
        max_frame_bytes: 1 << 20,
        max_message_bytes: 4 << 20,
    };

    /// Owned copy of an event, so tests can collect them.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Msg(MessageKind, Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
    }

    impl From<Event<'_>> for Ev {
        fn from(e: Event<'_>) -> Self {
            match e {
                Event::Message(k, p) => Ev::Msg(k, p.to_vec()),
                Event::Ping(p) => Ev::Ping(p.to_vec()),
                Event::Pong(p) => Ev::Pong(p.to_vec()),
                Event::Close { code, reason } => Ev::Close(code, reason.to_owned()),
            }
        }
    }

    fn text(s: &str) -> Ev {
        Ev::Msg(MessageKind::Text, s.as_bytes().to_vec())
    }

    fn binary(b: &[u8]) -> Ev {
        Ev::Msg(MessageKind::Binary, b.to_vec())
    }

    /// Client-to-server frame (masked).
    fn cf(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        encode_frame(OpCode::from(opcode), fin, payload, Some(MASK)).to_vec()
    }

    /// Feeds `chunks` one by one into `codec`, collecting events.
    fn feed_chunks(codec: &mut Tc, chunks: &[&[u8]]) -> (Vec<Ev>, Result<(), ProtoError>) {
        let mut events = Vec::new();
        for chunk in chunks {
            let mut owned = chunk.to_vec();
            let r = codec.feed(&mut owned, &mut |e| events.push(Ev::from(e)));
            if r.is_err() {
                return (events, r);
            }
        }
        (events, Ok(()))
    }

    fn server_feed(bytes: &[u8]) -> (Vec<Ev>, Result<(), ProtoError>) {
        feed_chunks(&mut Tc::new(Role::Server, LIMITS), &[bytes])
    }

    fn server_err(bytes: &[u8]) -> ProtoError {
        server_feed(bytes).1.expect_err("expected a protocol error")
    }

    fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    #[test]
    fn codec_is_small() {
        assert!(
            std::mem::size_of::<Codec>() <= 48,
            "Codec is {} bytes",
            std::mem::size_of::<Codec>()
        );
    }

    #[test]
    fn single_frames_zero_copy() {
        let mut wire = concat(&[
            cf(1, true, b"hello"),
            cf(2, true, &[0, 1, 2, 255]),
            cf(9, true, b"p"),
            cf(10, true, b""),
            cf(1, true, b""),
        ]);
        let range = wire.as_ptr_range();
        let mut codec = Tc::new(Role::Server, LIMITS);
        let mut events = Vec::new();
        codec
            .feed(&mut wire, &mut |e| {
                if let Event::Message(_, p) = e {
                    // Borrowed from the input, not copied.
                    assert!(p.is_empty() || range.contains(&p.as_ptr()));
                }
                events.push(Ev::from(e));
            })
            .unwrap();
        assert_eq!(
            events,
            vec![
                text("hello"),
                binary(&[0, 1, 2, 255]),
                Ev::Ping(b"p".to_vec()),
                Ev::Pong(vec![]),
                text(""),
            ]
        );
        assert!(codec.is_idle());
        assert_eq!(codec.buf.capacity(), 0);
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            server_feed(&cf(8, true, b"")).0,
            vec![Ev::Close(None, String::new())]
        );
        let wire = encode_close(1000, "bye", Some(MASK));
        assert_eq!(
            server_feed(&wire).0,
            vec![Ev::Close(Some(1000), "bye".into())]
        );
        let wire = encode_close(4000, "", Some(MASK));
        assert_eq!(server_feed(&wire).0, vec![Ev::Close(Some(4000), "".into())]);
    }

    #[test]
    fn encode_close_truncates_on_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let frame = encode_close(1001, &reason, None);
        let mut codec = Tc::new(Role::Client, LIMITS);
        let (events, r) = feed_chunks(&mut codec, &[&frame]);
        r.unwrap();
        // 123 bytes available -> 61 two-byte chars.
        assert_eq!(events, vec![Ev::Close(Some(1001), "é".repeat(61))]);
    }

    #[test]
    fn protocol_violations_are_1002() {
        let mut rsv = cf(1, true, b"x");
        rsv[0] |= 0x40;
        let mut rsv3 = cf(2, true, b"x");
        rsv3[0] |= 0x10;
        let mut big_ping = cf(9, true, &[0; 125]);
        big_ping.extend(cf(9, true, &[0; 126]));
        let mut msb = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1];
        msb.extend(MASK);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("rsv1", rsv),
            ("rsv3", rsv3),
            ("reserved data opcode", cf(3, true, b"")),
            ("reserved control opcode", cf(11, true, b"")),
            ("control > 125", big_ping),
            ("fragmented control", cf(9, false, b"")),
            ("continuation without message", cf(0, true, b"x")),
            (
                "new data frame inside fragmented message",
                concat(&[cf(1, false, b"a"), cf(2, true, b"b")]),
            ),
            (
                "unmasked frame to server",
                encode_frame(OpCode::from(1), true, b"x", None).to_vec(),
            ),
            ("close payload of 1 byte", cf(8, true, b"\x03")),
            (
                "close code 1005",
                encode_close(1005, "", Some(MASK)).to_vec(),
            ),
            ("close code 999", encode_close(999, "", Some(MASK)).to_vec()),
            (
                "close code 1004",
                encode_close(1004, "", Some(MASK)).to_vec(),
            ),
            (
                "close code 5000",
                encode_close(5000, "", Some(MASK)).to_vec(),
            ),
            ("64-bit length msb", msb),
        ];
        for (name, wire) in cases {
            let err = server_err(&wire);
            assert_eq!(err.close_code(), 1002, "{name}: {err}");
            assert!(matches!(err, ProtoError::Protocol(_)), "{name}: {err:?}");
        }
        // Masked frame to a client.
        let mut client = Tc::new(Role::Client, LIMITS);
        let (_, r) = feed_chunks(&mut client, &[&cf(1, true, b"x")]);
        assert_eq!(r.unwrap_err().close_code(), 1002);
    }

    #[test]
    fn invalid_utf8_is_1007() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("single frame", cf(1, true, b"ok\xff")),
            ("truncated at end", cf(1, true, b"\xe2\x82")),
            (
                "fragmented, truncated at end",
                concat(&[cf(1, false, b"a"), cf(0, true, b"\xe2\x82")]),
            ),
            ("close reason", cf(8, true, b"\x03\xe8\xc3\x28")),
        ];
        for (name, wire) in cases {
            let err = server_err(&wire);
            assert_eq!(err.close_code(), 1007, "{name}: {err}");
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut codec = Tc::new(Role::Server, LIMITS);
        let (_, r) = feed_chunks(&mut codec, &[&cf(1, true, b"\xff")]);
        assert_eq!(r.unwrap_err().close_code(), 1007);
        let (events, r) = feed_chunks(&mut codec, &[&cf(1, true, b"fine")]);
        assert!(events.is_empty());
        assert_eq!(r.unwrap_err(), ProtoError::Failed { code: 1007 });
        assert_eq!(codec.buf.capacity(), 0);
    }

    #[test]
    fn events_before_an_error_are_delivered() {
        let wire = concat(&[cf(1, true, b"a"), cf(9, true, b"b"), cf(3, true, b"")]);
        let (events, r) = server_feed(&wire);
        assert_eq!(events, vec![text("a"), Ev::Ping(b"b".to_vec())]);
        assert_eq!(r.unwrap_err().close_code(), 1002);
    }

    #[test]
    fn frame_too_big_refused_at_header_time() {
        let limits = Limits {
            max_frame_bytes: 100,
            max_message_bytes: 1000,
        };
        let wire = cf(2, true, &[0; 101]);
        let mut codec = Tc::new(Role::Server, limits);
        // Only the header (2 + 2 + 4 bytes), no payload at all.
        let (_, r) = feed_chunks(&mut codec, &[&wire[..8]]);
        assert_eq!(
            r.unwrap_err(),
            ProtoError::FrameTooBig {
                size: 101,
                limit: 100
            }
        );
    }

    #[test]
    fn message_too_big_refused_at_header_time() {
        let limits = Limits {
            max_frame_bytes: 100 << 20,
            max_message_bytes: 64 << 20,
        };
        // A 70 MiB frame: only its header is ever fed.
        let mut header = vec![0x82, 0xff];
        header.extend((70u64 << 20).to_be_bytes());
        header.extend(MASK);
        let mut codec = Tc::new(Role::Server, limits);
        let (_, r) = feed_chunks(&mut codec, &[&header]);
        let err = r.unwrap_err();
        assert_eq!(err.close_code(), 1009);
        assert!(matches!(err, ProtoError::MessageTooBig { size, .. } if size == 70 << 20));

        // Fragments: the second fragment's header pushes the total over.
        let limits = Limits {
            max_frame_bytes: 100,
            max_message_bytes: 150,
        };
        let first = cf(2, false, &[1; 100]);
        let second = cf(0, true, &[2; 60]);
        let mut codec = Tc::new(Role::Server, limits);
        let (_, r) = feed_chunks(&mut codec, &[&first, &second[..8]]);
        assert_eq!(
            r.unwrap_err(),
            ProtoError::MessageTooBig {
                size: 160,
                limit: 150
            }
        );
    }

    #[test]
    fn fragmented_messages_and_interleaved_control() {
        let wire = concat(&[
            cf(1, false, "héllo ".as_bytes()),
            cf(9, true, b"ping!"),
            cf(0, false, b""),
            cf(10, true, b"pong"),
            cf(0, true, "wörld".as_bytes()),
            cf(2, false, &[1, 2]),
            cf(8, true, b""),
            cf(0, true, &[3]),
        ]);
        let expected = vec![
            Ev::Ping(b"ping!".to_vec()),
            Ev::Pong(b"pong".to_vec()),
            text("héllo wörld"),
            Ev::Close(None, String::new()),
            binary(&[1, 2, 3]),
        ];
        let mut codec = Tc::new(Role::Server, LIMITS);
        let (events, r) = feed_chunks(&mut codec, &[&wire]);
        r.unwrap();
        assert_eq!(events, expected);
        assert!(codec.is_idle());
        assert_eq!(codec.buf.capacity(), 0, "reassembly buffer released");
        assert_eq!(codec.buffered_bytes(), 0);
    }

    #[test]
    fn every_split_point_yields_same_events() {
        let wire = concat(&[
            cf(1, true, b"first"),
            cf(1, false, "a€".as_bytes()),
            cf(9, true, b"in-between"),
            cf(0, false, "b😀".as_bytes()),
            cf(0, true, "c".as_bytes()),
            cf(2, true, &[7; 300]),
            cf(9, true, b""),
            cf(2, false, &[]),
            cf(0, true, &[9; 70]),
            encode_close(1000, "done", Some(MASK)).to_vec(),
        ]);
        let (expected, r) = server_feed(&wire);
        r.unwrap();
        assert_eq!(expected.len(), 7);
        for split in 0..=wire.len() {
            let mut codec = Tc::new(Role::Server, LIMITS);
            let (events, r) = feed_chunks(&mut codec, &[&wire[..split], &wire[split..]]);
            r.unwrap();
            assert_eq!(events, expected, "split at {split}");
            assert!(codec.is_idle());
            assert_eq!(codec.buf.capacity(), 0);
        }
        // And one byte at a time.
        let mut codec = Tc::new(Role::Server, LIMITS);
        let chunks: Vec<&[u8]> = wire.chunks(1).collect();
        let (events, r) = feed_chunks(&mut codec, &chunks);
        r.unwrap();
        assert_eq!(events, expected);
        // Three-way splits with small pieces around each point.
        for a in 0..wire.len() {
            for b in [a + 1, a + 3, a + 7, a + 15] {
                if b > wire.len() {
                    continue;
                }
                let mut codec = Tc::new(Role::Server, LIMITS);
                let (events, r) = feed_chunks(&mut codec, &[&wire[..a], &wire[a..b], &wire[b..]]);
                r.unwrap();
                assert_eq!(events, expected, "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn partial_state_is_reported() {
        let wire = cf(2, true, &[5; 200]);
        let mut codec = Tc::new(Role::Server, LIMITS);
        let (events, r) = feed_chunks(&mut codec, &[&wire[..3]]);
        r.unwrap();
        assert!(events.is_empty());
        assert!(!codec.is_idle());
        assert_eq!(codec.buffered_bytes(), 3);
        let (_, r) = feed_chunks(&mut codec, &[&wire[3..50]]);
        r.unwrap();
        assert!(!codec.is_idle());
        assert_eq!(codec.buffered_bytes(), 50 - 8);
        let (events, r) = feed_chunks(&mut codec, &[&wire[50..]]);
        r.unwrap();
        assert_eq!(events, vec![binary(&[5; 200])]);
        assert!(codec.is_idle());
        assert_eq!(codec.buffered_bytes(), 0);
        assert_eq!(codec.buf.capacity(), 0);
    }

    #[test]
    fn length_encodings_round_trip_both_roles() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            // Client -> server, masked.
            let masked = encode_frame(OpCode::from(2), true, &payload, Some(MASK));
            let expected_header = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            };
            assert_eq!(masked.len(), expected_header + 4 + len);
            assert_eq!(masked[1] & 0x80, 0x80);
            let (events, r) = server_feed(&masked);
            r.unwrap();
            assert_eq!(events, vec![binary(&payload)], "len {len} masked");
            // Server -> client, unmasked.
            let plain = encode_message(MessageKind::Binary, &payload, None);
            assert_eq!(plain.len(), expected_header + len);
            assert_eq!(&plain[expected_header..], &payload[..]);
            let mut client = Tc::new(Role::Client, LIMITS);
            let (events, r) = feed_chunks(&mut client, &[&plain]);
            r.unwrap();
            assert_eq!(events, vec![binary(&payload)], "len {len} plain");
            // Streamed in odd-sized pieces (mask offset carried across).
            let chunks: Vec<&[u8]> = masked.chunks(13).collect();
            let (events, r) = feed_chunks(&mut Tc::new(Role::Server, LIMITS), &chunks);
            r.unwrap();
            assert_eq!(events, vec![binary(&payload)], "len {len} chunked");
        }
    }

    #[test]
    fn utf8_split_inside_code_point_across_fragments() {
        let s = "€😀";
        let bytes = s.as_bytes();
        for cut in 0..=bytes.len() {
            let wire = concat(&[cf(1, false, &bytes[..cut]), cf(0, true, &bytes[cut..])]);
            let (events, r) = server_feed(&wire);
            r.unwrap();
            assert_eq!(events, vec![text(s)], "cut at {cut}");
        }
    }

    #[test]
    fn invalid_utf8_in_middle_fragment_fails_before_final() {
        let mut codec = Tc::new(Role::Server, LIMITS);
        let (_, r) = feed_chunks(
            &mut codec,
            &[&cf(1, false, b"ok"), &cf(0, false, b"\xc0\xaf")],
        );
        assert_eq!(r.unwrap_err(), ProtoError::InvalidUtf8("text message"));
        // Also within a single frame that is still streaming in.
        let wire = cf(1, true, b"abc\xffdefghijklmnop");
        let mut codec = Tc::new(Role::Server, LIMITS);
        let (_, r) = feed_chunks(&mut codec, &[&wire[..10]]);
        assert_eq!(r.unwrap_err().close_code(), 1007);
    }

    #[test]
    fn straddling_control_inside_fragmented_message_keeps_message() {
        let ping = cf(9, true, &[42; 125]);
        let wire = concat(&[cf(2, false, &[1; 10]), ping.clone(), cf(0, true, &[2; 5])]);
        let first_len = wire.len() - ping.len() - 11;
        let mid = first_len + 50;
        let mut codec = Tc::new(Role::Server, LIMITS);
        let (events, r) = feed_chunks(&mut codec, &[&wire[..mid], &wire[mid..]]);
        r.unwrap();
        let mut msg = vec![1; 10];
        msg.extend([2; 5]);
        assert_eq!(events, vec![Ev::Ping(vec![42; 125]), binary(&msg)]);
        assert_eq!(codec.buf.capacity(), 0);
    }

    #[test]
    fn apply_mask_matches_bytewise() {
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut fast = original.clone();
            apply_mask(&mut fast, MASK);
            let slow: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ MASK[i % 4])
                .collect();
            assert_eq!(fast, slow);
            let mut out = Vec::new();
            extend_masked(&mut out, &original, MASK);
            assert_eq!(out, slow);
        }
    }

    /// `message_len` is what `encode_message_into` writes, at every header
    /// size (a frame that fills its buffer exactly needs no second
    /// allocation as `Bytes`).
    #[test]
    fn message_len_is_the_encoded_length() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = vec![3u8; len];
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = Vec::new();
                encode_message_into(&mut out, MessageKind::Text, &payload, mask);
                assert_eq!(
                    out.len(),
                    message_len(len, mask.is_some()),
                    "{len} {mask:?}"
                );
            }
        }
    }

    /// The aligned block path against a byte-at-a-time reference: every
    /// start offset within two blocks, odd and even lengths across the
    /// head/block/word/tail boundaries, every mask rotation.
    #[test]
    fn apply_mask_matches_bytewise_at_any_offset_and_length() {
        let mut backing = vec![0u8; 512];
        let lengths = (0..100).chain([127, 128, 129, 255, 256, 257, 301, 383, 384, 385]);
        for len in lengths {
            for offset in 0..64 {
                for rot in 0..4 {
                    let mut mask = [0x5a, 0xc3, 0x0f, 0x96];
                    mask.rotate_left(rot);
                    for (i, b) in backing.iter_mut().enumerate() {
                        *b = (i * 7 + len) as u8;
                    }
                    let reference: Vec<u8> = backing[offset..offset + len]
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ mask[i % 4])
                        .collect();
                    let before = backing.clone();
                    apply_mask(&mut backing[offset..offset + len], mask);
                    assert_eq!(
                        &backing[offset..offset + len],
                        &reference[..],
                        "len {len} offset {offset} rot {rot}"
                    );
                    assert_eq!(backing[..offset], before[..offset], "bytes before touched");
                    assert_eq!(
                        backing[offset + len..],
                        before[offset + len..],
                        "bytes after touched"
                    );
                }
            }
        }
    }

    #[test]
    fn frames_are_counted_by_class_once_each() {
        let wire = concat(&[
            cf(1, false, b"he"),
            cf(9, true, b"p"),
            cf(0, false, b"l"),
            cf(0, true, b"lo"),
            cf(2, true, &[7; 300]),
            cf(10, true, b""),
            cf(8, true, &1000u16.to_be_bytes()),
        ]);
        // Byte by byte: headers split across feeds still count once.
        let mut codec = Tc::new(Role::Server, LIMITS);
        let mut counts = FrameCounts::default();
        let mut messages = 0;
        for &b in &wire {
            let mut byte = [b];
            codec
                .feed_counted(&mut byte, &mut counts, &mut |e| {
                    messages += usize::from(matches!(e, Event::Message(..)));
                })
                .unwrap();
        }
        assert_eq!(messages, 2);
        let expect = [
            (FrameClass::Text, 1),
            (FrameClass::Binary, 1),
            (FrameClass::Continuation, 2),
            (FrameClass::Ping, 1),
            (FrameClass::Pong, 1),
            (FrameClass::Close, 1),
        ];
        for (class, n) in expect {
            assert_eq!(counts.get(class), n, "{}", class.label());
        }
        let mut total = FrameCounts::default();
        total.merge(&counts);
        total.merge(&counts);
        assert_eq!(total.get(FrameClass::Continuation), 4);
    }
}
