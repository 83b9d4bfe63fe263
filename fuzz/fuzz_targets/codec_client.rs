//! The frame codec in the client role (incoming frames must not be masked):
//! arbitrary bytes, fed whole, in the input's pieces and byte by byte, under
//! small limits. Input: `[flags, n, cuts.., frames..]`; flags bits 0-1 pick
//! the limits, bit 2 adds the byte-at-a-time run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsproto::codec::Role;

fuzz_target!(|data: &[u8]| wsproto_fuzz::codec_target(Role::Client, data));
