//! Redis RESP2/RESP3 decoding of the cluster broker client
//! (`broker_proto::resp`); the checks are `broker_proto::fuzzing::fuzz_resp`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker_proto::fuzzing::fuzz_resp(data));
