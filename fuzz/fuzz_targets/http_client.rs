//! The upstream client's response reader (`wsproto::http_client`): fed
//! whole and in pieces it must reach the same outcome (response or error),
//! never return a body over its limit, and accept nothing after it is done
//! or has failed. The stream may end (EOF) after the last piece.
//!
//! Input: `[flags, n, cuts.., response..]`; flags bits 0-1: head limit,
//! bits 2-3: header count, bits 4-5: body limit, bit 6: HEAD request,
//! bit 7: EOF after the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsproto::http_client::{ClientResponse, Progress, ResponseError, ResponseReader};
use wsproto_fuzz::{body_limit, head_limits, pieces, split};

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Done(ClientResponse),
    Failed(ResponseError),
}

fn run(parts: &[&[u8]], flags: u8) -> Outcome {
    let limits = head_limits(flags);
    let max_body = body_limit(flags);
    let mut r = ResponseReader::new(limits, max_body, flags & 0x40 != 0);
    for (i, p) in parts.iter().enumerate() {
        match r.feed(p) {
            Ok(Progress::Incomplete) => {}
            Ok(Progress::Done(resp)) => {
                assert!(resp.body.len() <= max_body, "body over the limit");
                // Done means done: what follows (in later reads) is an
                // error, never a second answer.
                return match parts[i + 1..].iter().find(|p| !p.is_empty()) {
                    Some(more) => {
                        let e = r.feed(more).expect_err("bytes after the response");
                        assert!(matches!(e, ResponseError::Trailing(_)), "{e:?}");
                        Outcome::Failed(e)
                    }
                    None => Outcome::Done(resp),
                };
            }
            Err(e) => {
                assert!(r.feed(b"x").is_err(), "a failed reader accepts nothing");
                return Outcome::Failed(e);
            }
        }
    }
    if flags & 0x80 != 0 {
        return match r.eof() {
            Ok(resp) => {
                assert!(resp.body.len() <= max_body);
                assert!(!resp.keep_alive, "a body to EOF ends the connection");
                Outcome::Done(resp)
            }
            Err(e) => Outcome::Failed(e),
        };
    }
    Outcome::Pending
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = split(data) else { return };
    let whole = run(&[input.body], input.flags);
    let split = run(&pieces(input.body, input.cuts), input.flags);
    // The same error either way; only a Trailing count may differ (the
    // bytes left in the piece where the response ended).
    match (&whole, &split) {
        (Outcome::Failed(a), Outcome::Failed(b)) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "{a:?} vs {b:?}, pieces {:?}",
            input.cuts
        ),
        _ => assert_eq!(whole, split, "whole vs pieces {:?}", input.cuts),
    }
});
