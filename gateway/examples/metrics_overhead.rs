//! The per-message CPU cost of metrics on the gateway's hot path, measured
//! in-process so that neither the network nor other load on the machine
//! blurs it (results/metrics-cost.md puts it next to end-to-end figures).
//!
//! It replays what `session.rs` does with one receive of `B` client frames
//! (64-byte binary, masked): decode them, count, encode each echo reply, and
//! then the send completion of those replies. Three variants:
//!
//! * `before` — the code path before metrics existed: `Codec::feed`, the
//!   plain counters, reply encoding.
//! * `off` — with `[admin] metrics = false`: also frame counting
//!   (`feed_counted`, frames out), which is kept regardless.
//! * `on` — also the latency tracker (once per receive) and the local
//!   histogram (once per completed group). The arrival stamps cost nothing
//!   here: the engine reads its clock once per loop iteration whether
//!   metrics are on or not (`Io::now_us`).
//!
//! Usage: `metrics_overhead [BATCH] [MESSAGES]` (default 16, 20 000 000);
//! prints ns per message for each variant (best of 5 trials).

use std::hint::black_box;
use std::time::Instant;

use gateway::counters::Counters;
use gateway::telemetry::histogram::LocalHistogram;
use gateway::telemetry::latency::{SendTracker, NONE};
use gateway::telemetry::MESSAGE_LATENCY_BUCKETS_US;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use wsproto::codec::{
    encode_frame, encode_message, Codec, Event, FrameClass, FrameCounts, Limits, Role,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Before,
    Off,
    On,
}

/// Nanoseconds per message for `messages` messages in receives of `batch`.
fn run(variant: Variant, wire: &[u8], batch: usize, messages: usize) -> f64 {
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_message_bytes: 1 << 20,
    };
    let mut codec = Codec::new(Role::Server);
    let mut counters = Counters::default();
    let mut tracker = SendTracker::default();
    let mut hist = LocalHistogram::new(&MESSAGE_LATENCY_BUCKETS_US);
    let mut track = NONE;
    let mut buf = wire.to_vec();
    let mut replies = Vec::with_capacity(batch);
    let receives = messages / batch;
    let start = Instant::now();
    for i in 0..receives {
        // The codec unmasks in place: every receive starts from the wire bytes
        // (a memcpy the real gateway does not do; it is in every variant).
        buf.copy_from_slice(wire);
        let arrival = i as u32;
        let mut queued = 0usize;
        let mut count = 0u32;
        let mut frames = FrameCounts::default();
        let mut on_event = |event: Event<'_>| {
            if let Event::Message(kind, payload) = event {
                counters.messages_in += 1;
                counters.bytes_in += payload.len() as u64;
                let reply = encode_message(kind, payload, None);
                queued += reply.len();
                replies.push(reply);
                counters.messages_out += 1;
                counters.bytes_out += payload.len() as u64;
                if variant != Variant::Before {
                    counters.frames_out.add(FrameClass::Binary);
                }
                count += 1;
            }
        };
        let result = if variant == Variant::Before {
            codec.feed(&mut buf, &limits, &mut on_event)
        } else {
            codec.feed_counted(&mut buf, &limits, &mut frames, &mut on_event)
        };
        result.expect("valid frames");
        counters.frames_in.merge(&frames);
        if variant == Variant::On {
            tracker.queued(&mut track, arrival, count, queued);
        }
        // The send of this batch completes (one completion, all bytes).
        if variant == Variant::On {
            tracker.sent(&mut track, queued, arrival.wrapping_add(37), &mut hist);
        }
        black_box(&replies);
        replies.clear();
    }
    let ns = start.elapsed().as_nanos() as f64 / (receives * batch) as f64;
    black_box((&counters, &hist));
    assert_eq!(counters.messages_in as usize, receives * batch);
    if variant == Variant::On {
        assert_eq!(hist.count() as usize, receives * batch);
    }
    ns
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let batch: usize = args.get(1).map_or(16, |a| a.parse().expect("BATCH"));
    let messages: usize = args
        .get(2)
        .map_or(20_000_000, |a| a.parse().expect("MESSAGES"));
    let payload = [0x5a_u8; 64];
    let mut wire = Vec::new();
    for i in 0..batch {
        let mask = (i as u32).wrapping_mul(0x9e37_79b9).to_be_bytes();
        let frame = encode_frame(OpCode::Data(Data::Binary), true, &payload, Some(mask));
        wire.extend_from_slice(&frame);
    }
    println!("batch {batch} x 64-byte masked binary frames per receive, {messages} messages per trial, best of 5");
    let mut best = [f64::MAX; 3];
    for _ in 0..5 {
        for (i, v) in [Variant::Before, Variant::Off, Variant::On]
            .into_iter()
            .enumerate()
        {
            best[i] = best[i].min(run(v, &wire, batch, messages));
        }
    }
    let [before, off, on] = best;
    println!("before metrics:   {before:.2} ns/msg");
    println!(
        "metrics = false:  {off:.2} ns/msg  ({:+.2} ns: frame counting)",
        off - before
    );
    println!(
        "metrics = true:   {on:.2} ns/msg  ({:+.2} ns: latency tracker + histogram)",
        on - off
    );
    println!(
        "added per message, metrics on vs before: {:.2} ns",
        on - before
    );
}
