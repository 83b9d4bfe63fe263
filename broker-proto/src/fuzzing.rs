//! Bodies of the fuzz targets, kept here (not in `fuzz/`) so they build
//! and are tested with the crate; `fuzz/fuzz_targets/*.rs` only call them.
//!
//! Input layout, as for the wsproto targets: `[flags, n, cut_1 .. cut_n,
//! body ..]`: bits 0-1 of `flags` pick the limits, bit 2 adds a
//! byte-at-a-time run; up to 15 cut bytes split the body into the pieces a
//! socket might deliver (0..=127 as is, 128..=255 as multiples of 32). The
//! body is decoded whole and in pieces, and the runs must agree exactly
//! (values and error). Every value must respect the limits, re-encode to
//! bytes that decode to the same value, and an error must stay final.

use crate::{nats, resp};

struct Input<'a> {
    flags: u8,
    cuts: &'a [u8],
    body: &'a [u8],
}

fn split(data: &[u8]) -> Option<Input<'_>> {
    let (&flags, rest) = data.split_first()?;
    let (&n, rest) = rest.split_first()?;
    let n = usize::from(n % 16).min(rest.len());
    let (cuts, body) = rest.split_at(n);
    Some(Input { flags, cuts, body })
}

fn pieces<'a>(body: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut rest = body;
    for &c in cuts {
        let len = if c < 128 {
            usize::from(c)
        } else {
            usize::from(c - 128) * 32
        };
        let (a, b) = rest.split_at(len.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out.push(rest);
    out
}

/// Bodies longer than this skip the byte-at-a-time run.
const BYTEWISE_MAX: usize = 1 << 16;

/// Runs `decode` whole, in the input's pieces and (if asked) byte by byte,
/// asserting that all agree; returns the whole run's result.
fn runs<T: PartialEq + std::fmt::Debug>(input: &Input<'_>, decode: impl Fn(&[&[u8]]) -> T) -> T {
    let whole = decode(&[input.body]);
    let split = decode(&pieces(input.body, input.cuts));
    assert_eq!(whole, split, "whole and split runs differ");
    if input.flags & 4 != 0 && input.body.len() <= BYTEWISE_MAX {
        let bytes: Vec<&[u8]> = input.body.chunks(1).collect();
        assert_eq!(whole, decode(&bytes), "whole and bytewise runs differ");
    }
    whole
}

fn resp_limits(flags: u8) -> resp::Limits {
    let (max_bulk_bytes, max_elements, max_depth) = match flags & 3 {
        0 => (16, 8, 3),
        1 => (256, 64, 8),
        2 => (4096, 1024, 16),
        _ => (0, 0, 1),
    };
    resp::Limits {
        max_bulk_bytes,
        max_elements,
        max_depth,
    }
}

fn resp_decode(
    pieces: &[&[u8]],
    limits: resp::Limits,
) -> (Vec<resp::Value>, Option<resp::RespError>) {
    let mut d = resp::Decoder::new(limits);
    let mut values = Vec::new();
    for p in pieces {
        d.feed(p);
        loop {
            match d.next() {
                Ok(Some(v)) => values.push(v),
                Ok(None) => break,
                Err(e) => {
                    // Final: the same error again, whatever follows.
                    d.feed(b"+OK\r\n");
                    assert_eq!(d.next(), Err(e.clone()));
                    assert!(d.is_failed());
                    return (values, Some(e));
                }
            }
        }
    }
    (values, None)
}

/// Checks `v` against `limits`; returns the elements it holds (over all
/// levels, map pairs counting two).
fn resp_check(v: &resp::Value, limits: &resp::Limits, depth: usize) -> usize {
    use resp::Value as V;
    let string_len = match v {
        V::Simple(s) | V::Error(s) | V::Bulk(s) | V::BulkError(s) => s.len(),
        V::BigNumber(s) => s.len(),
        V::Verbatim { text, .. } => text.len() + 4,
        _ => 0,
    };
    assert!(string_len <= limits.max_bulk_bytes, "string over the limit");
    let items: Vec<&V> = match v {
        V::Array(items) | V::Set(items) | V::Push(items) => items.iter().collect(),
        V::Map(pairs) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return 0,
    };
    assert!(depth < limits.max_depth, "nested over the limit");
    items.len()
        + items
            .iter()
            .map(|i| resp_check(i, limits, depth + 1))
            .sum::<usize>()
}

/// RESP decoder target: never panics, respects limits, agrees with
/// itself across splits, and what it decodes re-encodes losslessly.
pub fn fuzz_resp(data: &[u8]) {
    let Some(input) = split(data) else {
        return;
    };
    let limits = resp_limits(input.flags);
    let (values, _) = runs(&input, |p| resp_decode(p, limits));
    for v in &values {
        let elements = resp_check(v, &limits, 0);
        assert!(elements <= limits.max_elements, "elements over the limit");
        let mut wire = Vec::new();
        v.encode(&mut wire);
        assert_eq!(
            resp_decode(&[&wire], limits),
            (vec![v.clone()], None),
            "re-encoded value decodes differently"
        );
        // Classifying never panics and loses nothing it does not consume.
        let _ = resp::classify(v.clone());
    }
}

fn nats_limits(flags: u8) -> nats::Limits {
    let (max_payload, max_control_line) = match flags & 3 {
        0 => (16, 32),
        1 => (256, 128),
        2 => (4096, 4096),
        _ => (0, 0),
    };
    nats::Limits {
        max_payload,
        max_control_line,
    }
}

fn nats_decode(
    pieces: &[&[u8]],
    limits: nats::Limits,
) -> (Vec<nats::ServerOp>, Option<nats::NatsError>) {
    let mut d = nats::Decoder::new(limits);
    let mut ops = Vec::new();
    for p in pieces {
        d.feed(p);
        loop {
            match d.next() {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => break,
                Err(e) => {
                    d.feed(b"PING\r\n");
                    assert_eq!(d.next(), Err(e.clone()));
                    assert!(d.is_failed());
                    return (ops, Some(e));
                }
            }
        }
    }
    (ops, None)
}

/// NATS decoder target: never panics, respects limits, agrees with itself
/// across splits, and what it decodes re-encodes losslessly. Also drives
/// the subject check and the channel-token mapping with the body as text.
pub fn fuzz_nats(data: &[u8]) {
    let Some(input) = split(data) else {
        return;
    };
    let limits = nats_limits(input.flags);
    let (ops, _) = runs(&input, |p| nats_decode(p, limits));
    // Re-encoding normalises blanks and quotes `-ERR` text (lossy UTF-8
    // may also grow it), so the control line may get longer.
    let relaxed = nats::Limits {
        max_payload: limits.max_payload,
        max_control_line: limits.max_control_line.max(8) * 3 + 16,
    };
    for op in &ops {
        match op {
            nats::ServerOp::Msg { payload, .. } => {
                assert!(
                    payload.len() <= limits.max_payload,
                    "payload over the limit"
                )
            }
            nats::ServerOp::HMsg {
                headers, payload, ..
            } => assert!(
                headers.len() + payload.len() <= limits.max_payload,
                "payload over the limit"
            ),
            _ => {}
        }
        let mut wire = Vec::new();
        op.encode(&mut wire);
        assert_eq!(
            nats_decode(&[&wire], relaxed),
            (vec![op.clone()], None),
            "re-encoded operation decodes differently"
        );
    }
    if let Ok(text) = std::str::from_utf8(input.body) {
        let token = nats::channel_token(text);
        assert_eq!(nats::validate_subject(&token, false), Ok(()));
        assert_eq!(nats::channel_from_token(&token).as_deref(), Ok(text));
        // Whatever the check accepts cannot break the framing.
        let mut out = Vec::new();
        if nats::publish(&mut out, text, b"x").is_ok() {
            let line = &out[..out.len() - 3];
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        }
        let _ = nats::channel_from_token(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds of the kind the fuzzer starts from, under every limit set and
    /// with the bytewise run.
    #[test]
    fn targets_accept_seeds() {
        let resp_bodies: &[&[u8]] = &[
            b"*3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$2\r\nhi\r\n",
            b">3\r\n$8\r\nsmessage\r\n$1\r\nc\r\n$0\r\n\r\n+PONG\r\n",
            b"%1\r\n|1\r\n+a\r\n:1\r\n,1.5\r\n~2\r\n#t\r\n_\r\n(12\r\n=5\r\ntxt:x\r\n!1\r\nE\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
            b"$99999\r\n",
            b",nan\r\n,-inf\r\n,1e300\r\n:-9223372036854775808\r\n$-1\r\n*-1\r\n",
            b"garbage",
            b"",
        ];
        let nats_bodies: &[&[u8]] = &[
            b"INFO {\"max_payload\":1048576} \r\n+OK\r\nPING\r\n",
            b"MSG a.b 1 r 2\r\nhi\r\nHMSG a 2 12 14\r\nNATS/1.0\r\n\r\nxy\r\n",
            b"-ERR 'Unknown Protocol Operation'\r\n-ERR \xff\r\n",
            b"msg  a\t1   0\r\n\r\npong\r\n",
            b"MSG a 1 999999\r\n",
            b"a b.c *.>",
            b"",
        ];
        for flags in 0..8u8 {
            for body in resp_bodies {
                for cuts in [&[][..], &[1, 3, 200], &[0, 0, 7]] {
                    let mut data = vec![flags, cuts.len() as u8];
                    data.extend_from_slice(cuts);
                    data.extend_from_slice(body);
                    fuzz_resp(&data);
                }
            }
            for body in nats_bodies {
                for cuts in [&[][..], &[2, 5, 129]] {
                    let mut data = vec![flags, cuts.len() as u8];
                    data.extend_from_slice(cuts);
                    data.extend_from_slice(body);
                    fuzz_nats(&data);
                }
            }
        }
        fuzz_resp(&[]);
        fuzz_nats(&[1]);
    }

    /// A cheap deterministic stand-in for the fuzzer: random bytes biased
    /// towards protocol characters.
    #[test]
    fn targets_survive_random_inputs() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"*$+-:_#,(!=%~|>\r\n0123456789-1tfnaiMSGHPINOKERRFpong .\t'";
        for _ in 0..4000 {
            let len = (rnd() % 96) as usize;
            let data: Vec<u8> = (0..len)
                .map(|i| {
                    let r = rnd();
                    if i < 2 || r % 8 == 0 {
                        r as u8 >> 1
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            fuzz_resp(&data);
            fuzz_nats(&data);
        }
    }
}
