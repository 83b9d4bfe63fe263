//! NATS core decoding of the cluster broker client (`broker_proto::nats`);
//! the checks are `broker_proto::fuzzing::fuzz_nats`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker_proto::fuzzing::fuzz_nats(data));
