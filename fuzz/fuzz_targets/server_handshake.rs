//! The server's view of an opening handshake: arbitrary bytes as a request
//! head under a policy with two routes, a health path, two subprotocols and
//! (flags bit 0) an origin allow-list.
//!
//! Input: `[flags, n, cuts.., request..]`. The request is parsed whole, then
//! the way a server reads it (everything so far, re-parsed after each piece,
//! stopping at the first decision), then at every prefix (every 7th past 256
//! bytes). A head's decision is final: a prefix is either `Incomplete` or
//! decides exactly as the whole buffer does, and `Incomplete` never exceeds
//! the head limit. Every decision is checked: an upgrade's `consumed` lies
//! in the buffer and its 101 is accepted by a `ClientHandshake` with the
//! request's own key; a rejection's response is a well-formed HTTP answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsproto::handshake::{parse_request, ClientHandshake, HandshakePolicy, Parsed, ServerAnswer};
use wsproto::http::{self, BodyKind, Head, Headers};
use wsproto_fuzz::{policy, prefix_ends, split, ROUTES, SUBPROTOCOLS};

fuzz_target!(|data: &[u8]| {
    let Some(input) = split(data) else { return };
    let policy = policy(input.flags & 1 != 0);
    let buf = input.body;
    let whole = parse_request(buf, &policy);
    check_decision(&whole, buf, &policy);

    // As a server reads: re-parse everything so far after each piece.
    let mut first = Parsed::Incomplete;
    for end in prefix_ends(buf, input.cuts) {
        first = parse_request(&buf[..end], &policy);
        if first != Parsed::Incomplete {
            break;
        }
    }
    assert_eq!(first, whole, "piecewise vs whole, pieces {:?}", input.cuts);

    // Every prefix is undecided or decides the same.
    let step = if buf.len() <= 256 { 1 } else { 7 };
    for end in (0..buf.len()).step_by(step) {
        let d = parse_request(&buf[..end], &policy);
        assert!(
            d == Parsed::Incomplete || d == whole,
            "prefix of {end} bytes: {d:?}, whole: {whole:?}"
        );
    }
});

fn check_decision(d: &Parsed, buf: &[u8], policy: &HandshakePolicy) {
    let limits = policy.limits();
    match d {
        Parsed::Incomplete => assert!(buf.len() <= policy.max_request_bytes),
        Parsed::Health { consumed } => {
            assert!(*consumed > 0 && *consumed <= buf.len().min(policy.max_request_bytes));
            let path = http::with_request(&buf[..*consumed], limits, |h| match h {
                Head::Complete(req) => req.path().to_owned(),
                other => panic!("health head does not re-parse: {other:?}"),
            });
            assert_eq!(Some(path), policy.health_path);
        }
        Parsed::Upgrade(up) => {
            assert!(up.consumed > 0 && up.consumed <= buf.len().min(policy.max_request_bytes));
            assert!(up.route < ROUTES.len());
            assert!(up.subprotocol.is_none_or(|i| i < SUBPROTOCOLS.len()));
            // The head alone re-parses to the same request.
            let (key, path, origin) = http::with_request(&buf[..up.consumed], limits, |h| {
                let Head::Complete(req) = h else {
                    panic!("upgrade head does not re-parse: {h:?}")
                };
                assert_eq!(req.head_len, up.consumed);
                assert_eq!(req.method, "GET");
                assert_eq!(req.minor_version, 1);
                assert_eq!(req.values("Host").count(), 1);
                let key = req.header("Sec-WebSocket-Key").expect("key").trim_ascii();
                let key = std::str::from_utf8(key).expect("valid keys are ASCII");
                let origin = req
                    .header("Origin")
                    .map(|o| o.trim_ascii().to_ascii_lowercase());
                (key.to_owned(), req.path().to_owned(), origin)
            });
            assert_eq!(path, ROUTES[up.route]);
            if !policy.allowed_origins.is_empty() {
                let origin = String::from_utf8(origin.expect("origin")).expect("ASCII");
                assert!(policy.allowed_origins.contains(&origin));
            }
            // Our 101 satisfies a client that sent this key and offered our
            // subprotocols.
            let response = up.response(policy);
            let answer = ClientHandshake::new(key).answer(&response, &SUBPROTOCOLS);
            assert_eq!(
                answer,
                ServerAnswer::Accepted {
                    consumed: response.len(),
                    subprotocol: up.subprotocol.map(|i| SUBPROTOCOLS[i].to_owned()),
                }
            );
        }
        Parsed::Reject(r) => {
            assert!(
                matches!(r.status, 400 | 403 | 404 | 426 | 431),
                "unexpected status {r:?}"
            );
            check_reject_response(&r.response(), r.status, r.reason);
        }
    }
}

/// A rejection is a complete `Connection: close` response whose body is the
/// reason and a newline.
fn check_reject_response(response: &[u8], status: u16, reason: &str) {
    let limits = http::HeadLimits {
        max_bytes: 4096,
        max_headers: 16,
    };
    http::with_response(response, limits, |h| {
        let Head::Complete(resp) = h else {
            panic!("rejection is not a response: {h:?}")
        };
        assert_eq!(resp.status, status);
        assert!(!resp.keep_alive());
        assert_eq!(resp.body(false), Ok(BodyKind::Length(reason.len() + 1)));
        assert_eq!(&response[resp.head_len..], format!("{reason}\n").as_bytes());
    });
}
