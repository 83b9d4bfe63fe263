//! HTTP/1.1 response heads (`http::with_response`) under varying limits,
//! then body framing (flags bit 6: the answer to a HEAD request); a chunked
//! body is decoded whole and in pieces.
//!
//! Input: `[flags, n, cuts.., response..]`; flags bits 0-1: `max_bytes`,
//! bits 2-3: `max_headers`, bits 4-5: chunked body limit, bit 6: HEAD.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsproto::http::{self, BodyKind, Head};
use wsproto_fuzz::{
    body_limit, check_chunked, check_framing, head_limits, prefix_ends, split, HeadSummary,
};

fuzz_target!(|data: &[u8]| {
    let Some(input) = split(data) else { return };
    let limits = head_limits(input.flags);
    let max_body = body_limit(input.flags);
    let head_request = input.flags & 0x40 != 0;
    let buf = input.body;
    let summary = |b: &[u8]| {
        http::with_response(b, limits, |h| {
            HeadSummary::of(&h, |r| (r.head_len, r.headers.len()))
        })
    };
    let whole = summary(buf);
    let mut first = HeadSummary::Incomplete;
    for end in prefix_ends(buf, input.cuts) {
        first = summary(&buf[..end]);
        if first != HeadSummary::Incomplete {
            break;
        }
    }
    assert_eq!(first, whole, "piecewise vs whole, pieces {:?}", input.cuts);

    http::with_response(buf, limits, |head| match head {
        Head::Incomplete => assert!(buf.len() <= limits.max_bytes),
        Head::Invalid(r) => assert!(matches!(r.status, 400 | 431), "{r:?}"),
        Head::Complete(resp) => {
            assert!(resp.head_len > 0 && resp.head_len <= buf.len().min(limits.max_bytes));
            assert!(resp.headers.len() <= limits.max_headers);
            assert!(resp.minor_version <= 1 && resp.status <= 999);
            let _ = resp.keep_alive();
            let rest = &buf[resp.head_len..];
            let bodiless = head_request
                || (100..200).contains(&resp.status)
                || matches!(resp.status, 204 | 304);
            match resp.body(head_request) {
                Ok(kind) if bodiless => assert_eq!(kind, BodyKind::Length(0)),
                Err(r) => {
                    assert!(!bodiless);
                    assert!(matches!(r.status, 400 | 501), "{r:?}");
                }
                Ok(BodyKind::Chunked) => {
                    check_framing(&resp, BodyKind::Chunked);
                    check_chunked(rest, max_body, input.cuts);
                }
                Ok(kind) => check_framing(&resp, kind),
            }
            // Our own writer's responses parse back with the right framing.
            for keep_alive in [false, true] {
                let status = resp.status.clamp(200, 599);
                let written = http::response(status, &[], Some("text/plain"), rest, keep_alive);
                let big = http::HeadLimits {
                    max_bytes: written.len(),
                    max_headers: 4,
                };
                http::with_response(&written, big, |h| {
                    let Head::Complete(w) = h else {
                        panic!("written response does not parse: {h:?}")
                    };
                    assert_eq!(w.status, status);
                    assert_eq!(w.keep_alive(), keep_alive);
                    if !matches!(status, 204 | 304) {
                        assert_eq!(w.body(false), Ok(BodyKind::Length(rest.len())));
                    }
                    assert_eq!(&written[w.head_len..], rest);
                });
            }
        }
    });
});
