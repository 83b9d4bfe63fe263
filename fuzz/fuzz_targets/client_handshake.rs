//! The client's view of an opening handshake: arbitrary bytes as the
//! server's answer to `ClientHandshake::answer` (the RFC 6455 example key;
//! flags bit 0: no subprotocol offered, else "chat" and "superchat").
//!
//! Input: `[flags, n, cuts.., response..]`. As for the server: parsed whole,
//! piecewise (stopping at the first decision) and at its prefixes (all of
//! a short answer, ~128 of a long one, and the 8 before an accepted head's
//! end), which must be `Incomplete` or the whole buffer's decision. An
//! acceptance lies in the buffer, carries the right accept key and an
//! offered subprotocol.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsproto::handshake::{ClientHandshake, ServerAnswer};
use wsproto::http::{self, Head, Headers};
use wsproto_fuzz::{prefix_ends, split, KEY};

const ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MAX_HEAD: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some(input) = split(data) else { return };
    let offered: &[&str] = if input.flags & 1 != 0 {
        &[]
    } else {
        &["chat", "superchat"]
    };
    let hs = ClientHandshake::new(KEY.into());
    let buf = input.body;
    let whole = hs.answer(buf, offered);
    match &whole {
        ServerAnswer::Incomplete => assert!(buf.len() <= MAX_HEAD),
        ServerAnswer::Accepted {
            consumed,
            subprotocol,
        } => {
            assert!(*consumed > 0 && *consumed <= buf.len().min(MAX_HEAD));
            assert!(subprotocol.as_deref().is_none_or(|p| offered.contains(&p)));
            let limits = http::HeadLimits {
                max_bytes: MAX_HEAD,
                max_headers: 64,
            };
            http::with_response(&buf[..*consumed], limits, |h| {
                let Head::Complete(resp) = h else {
                    panic!("accepted head does not re-parse: {h:?}")
                };
                assert_eq!(resp.head_len, *consumed);
                assert_eq!(resp.status, 101);
                let accept = resp.header("Sec-WebSocket-Accept").map(<[u8]>::trim_ascii);
                assert_eq!(accept, Some(ACCEPT));
            });
        }
        ServerAnswer::Refused { status } => assert!(*status != 101 && *status <= 999),
        ServerAnswer::Invalid(_) => {}
    }

    let mut first = ServerAnswer::Incomplete;
    for end in prefix_ends(buf, input.cuts) {
        first = hs.answer(&buf[..end], offered);
        if first != ServerAnswer::Incomplete {
            break;
        }
    }
    assert_eq!(first, whole, "piecewise vs whole, pieces {:?}", input.cuts);

    // Every prefix of a short answer; ~128 of a long one (a prefix parse
    // costs up to 16 KiB here), plus those just before an accepted head's end.
    let step = if buf.len() <= 256 {
        1
    } else {
        buf.len().div_ceil(128)
    };
    let near_end = match whole {
        ServerAnswer::Accepted { consumed, .. } => consumed.saturating_sub(8)..consumed,
        _ => 0..0,
    };
    for end in (0..buf.len()).step_by(step).chain(near_end) {
        let d = hs.answer(&buf[..end], offered);
        assert!(
            d == ServerAnswer::Incomplete || d == whole,
            "prefix of {end} bytes: {d:?}, whole: {whole:?}"
        );
    }
});
