//! Framing of pipelined HTTP/1.1 requests over a byte slice: the head by
//! `wsproto::http::with_request`, the body by `Content-Length` or chunked
//! (`wsproto::http::ChunkedDecoder`).
//!
//! Why here and not a copy of the gateway's `conn::http`: that one owns its
//! buffer and copies every request (head and body) into owned strings and
//! vectors. The mock answers inside the parse instead, straight from the
//! receive buffer, so the common case (a whole request in one read) costs
//! no copy and no allocation; only a chunked body is decoded into a
//! scratch vector. The same thing would fit in wsproto as a reusable
//! request framer (see the crate's report).

use wsproto::http::{self, BodyKind, ChunkedDecoder, Head, HeadLimits, Headers, Reject, Request};

/// What the bytes at the start of the buffer amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<R> {
    /// Not a whole request yet. `expects_continue`: the head is complete,
    /// the body is not, and the client sent `Expect: 100-continue`.
    Incomplete {
        /// See above.
        expects_continue: bool,
    },
    /// Malformed or over a limit: answer this and close.
    Reject(Reject),
    /// A whole request, `used` bytes long, answered with `out`.
    Done {
        /// Bytes of the buffer the request took (head and body).
        used: usize,
        /// What the callback returned.
        out: R,
    },
}

/// Bounds on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Head size and field count.
    pub head: HeadLimits,
    /// Largest body (decoded, for chunked).
    pub max_body: usize,
}

/// Frames the request at the start of `buf` and, once it is complete, calls
/// `answer` with its head and body (borrowing `buf`, or `scratch` for a
/// chunked body).
pub fn frame<R>(
    buf: &[u8],
    limits: Limits,
    scratch: &mut Vec<u8>,
    answer: impl FnOnce(&Request<'_, '_>, &[u8]) -> R,
) -> Frame<R> {
    http::with_request(buf, limits.head, |head| {
        let req = match head {
            Head::Incomplete => {
                return Frame::Incomplete {
                    expects_continue: false,
                }
            }
            Head::Invalid(r) => return Frame::Reject(r),
            Head::Complete(req) => req,
        };
        if !req.target.starts_with('/') {
            return Frame::Reject(Reject::new(400, "request target must be a path"));
        }
        if req.minor_version > 1 {
            return Frame::Reject(Reject::new(505, "HTTP version not supported"));
        }
        let rest = &buf[req.head_len..];
        let incomplete = || Frame::Incomplete {
            expects_continue: req.has_token("Expect", b"100-continue", true),
        };
        match req.body() {
            Err(r) => Frame::Reject(r),
            Ok(BodyKind::Length(n)) if n > limits.max_body => {
                Frame::Reject(Reject::new(413, "request body too large"))
            }
            Ok(BodyKind::Length(n)) if rest.len() < n => incomplete(),
            Ok(BodyKind::Length(n)) => Frame::Done {
                used: req.head_len + n,
                out: answer(&req, &rest[..n]),
            },
            Ok(BodyKind::Chunked) => {
                // Decoded from the start each time more arrives: chunked
                // requests are rare here (the gateway sends lengths).
                scratch.clear();
                let mut decoder = ChunkedDecoder::new(limits.max_body);
                match decoder.decode(rest, scratch) {
                    Err(http::ChunkedError::TooLarge(_)) => {
                        Frame::Reject(Reject::new(413, "request body too large"))
                    }
                    Err(http::ChunkedError::Malformed) => {
                        Frame::Reject(Reject::new(400, "malformed chunked body"))
                    }
                    Ok(_) if !decoder.is_done() => incomplete(),
                    Ok(n) => Frame::Done {
                        used: req.head_len + n,
                        out: answer(&req, scratch),
                    },
                }
            }
            Ok(BodyKind::ToEof) => unreachable!("Request::body never answers ToEof"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        head: HeadLimits {
            max_bytes: 1024,
            max_headers: 16,
        },
        max_body: 100,
    };

    /// Frames everything in `wire`, fed in two pieces split at `split`, as a
    /// connection would (leftover kept between reads).
    fn run(wire: &[u8], split: usize) -> (Vec<(String, Vec<u8>)>, Option<u16>) {
        let mut pending = Vec::new();
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        for piece in [&wire[..split], &wire[split..]] {
            pending.extend_from_slice(piece);
            loop {
                match frame(&pending, LIMITS, &mut scratch, |r, b| {
                    (r.path().to_string(), b.to_vec())
                }) {
                    Frame::Incomplete { .. } => break,
                    Frame::Reject(r) => return (got, Some(r.status)),
                    Frame::Done { used, out } => {
                        got.push(out);
                        pending.drain(..used);
                    }
                }
            }
        }
        assert!(pending.is_empty());
        (got, None)
    }

    #[test]
    fn pipelined_requests_in_any_pieces() {
        let wire = b"POST /ws/message HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
                     GET /stats HTTP/1.1\r\n\r\n\
                     POST /ws/connect HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                     2\r\n{}\r\n0\r\n\r\n";
        for split in 0..=wire.len() {
            let (got, rejected) = run(wire, split);
            assert_eq!(rejected, None, "split {split}");
            assert_eq!(
                got,
                vec![
                    ("/ws/message".into(), b"hello".to_vec()),
                    ("/stats".into(), vec![]),
                    ("/ws/connect".into(), b"{}".to_vec()),
                ],
                "split {split}"
            );
        }
    }

    #[test]
    fn refusals_are_precise() {
        for (wire, status) in [
            (&b"\x16\x03\x01garbage\r\n\r\n"[..], 400),
            (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n",
                413,
            ),
        ] {
            assert_eq!(run(wire, 0).1, Some(status), "{:?}", wire.escape_ascii());
        }
    }

    #[test]
    fn expect_continue_is_reported_while_the_body_is_missing() {
        let head = b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        let mut scratch = Vec::new();
        assert_eq!(
            frame(head, LIMITS, &mut scratch, |_, _| ()),
            Frame::Incomplete {
                expects_continue: true
            }
        );
        assert_eq!(
            frame(&head[..10], LIMITS, &mut scratch, |_, _| ()),
            Frame::Incomplete {
                expects_continue: false
            }
        );
    }
}
