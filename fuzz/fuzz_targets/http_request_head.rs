//! HTTP/1.1 request heads (`http::with_request`) under varying limits, then
//! body framing; a chunked body is decoded whole and in pieces.
//!
//! Input: `[flags, n, cuts.., request..]`; flags bits 0-1: `max_bytes`
//! (64..65536), bits 2-3: `max_headers` (0..40), bits 4-5: chunked body
//! limit (0..1 MiB). The cuts split both the head (read piecewise, the
//! first decision must be the whole buffer's) and the chunked body.
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
    let buf = input.body;
    let summary = |b: &[u8]| {
        http::with_request(b, limits, |h| {
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

    http::with_request(buf, limits, |head| match head {
        Head::Incomplete => assert!(buf.len() <= limits.max_bytes),
        Head::Invalid(r) => {
            assert!(matches!(r.status, 400 | 431), "{r:?}");
            let response = r.response();
            assert!(response.starts_with(format!("HTTP/1.1 {} ", r.status).as_bytes()));
        }
        Head::Complete(req) => {
            assert!(req.head_len > 0 && req.head_len <= buf.len().min(limits.max_bytes));
            assert!(req.headers.len() <= limits.max_headers);
            assert!(req.minor_version <= 1);
            assert!(!req.method.is_empty() && !req.target.is_empty());
            match req.query() {
                Some(q) => assert_eq!(req.target, format!("{}?{q}", req.path())),
                None => assert_eq!(req.target, req.path()),
            }
            let _ = req.keep_alive();
            let rest = &buf[req.head_len..];
            match req.body() {
                Ok(BodyKind::ToEof) => panic!("a request body never runs to EOF"),
                Ok(kind @ BodyKind::Length(_)) => check_framing(&req, kind),
                Ok(BodyKind::Chunked) => {
                    check_framing(&req, BodyKind::Chunked);
                    check_chunked(rest, max_body, input.cuts);
                }
                Err(r) => assert!(matches!(r.status, 400 | 501), "{r:?}"),
            }
            // Our own writer's requests parse back with the right framing.
            let written = http::request("POST", req.target, "fuzz", &[], rest);
            let big = http::HeadLimits {
                max_bytes: written.len(),
                max_headers: 4,
            };
            http::with_request(&written, big, |h| {
                let Head::Complete(w) = h else {
                    panic!("written request does not parse: {h:?}")
                };
                assert_eq!(w.target, req.target);
                assert_eq!(w.body(), Ok(BodyKind::Length(rest.len())));
                assert_eq!(&written[w.head_len..], rest);
            });
        }
    });
});
