//! The Centrifugo client protocol's command decoder
//! (`centrifuge_proto::command`): any text frame decodes line by line into
//! commands or errors without panicking, and decoding is a pure function of
//! the line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first: Vec<String> = centrifuge_proto::command::decode_frame(text)
        .map(|c| format!("{c:?}"))
        .collect();
    let again: Vec<String> = text
        .split('\n')
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{:?}", centrifuge_proto::command::decode(l)))
        .collect();
    assert_eq!(first, again);
});
