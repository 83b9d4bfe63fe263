//! Sans-IO codecs for the brokers a gateway cluster shares publications
//! through: Redis pub/sub ([`resp`], RESP2 and RESP3, sharded
//! `SSUBSCRIBE`/`SPUBLISH` included) and NATS core subjects ([`nats`]).
//!
//! The broker client runs on the gateway's io_uring rings, so this crate
//! owns no sockets and reads no clocks: received bytes go in, decoded
//! values come out, and the bytes to send are appended to a `Vec<u8>` the
//! caller submits. That keeps the protocol logic testable byte by byte
//! (every split of the input must decode alike) and fuzzable, and lets the
//! same code run against real servers in the integration tests over plain
//! `std::net` sockets.
//!
//! Every length a server announces is checked against explicit limits
//! before memory is reserved for it, and every decoding error is final:
//! the stream has lost its framing and the connection must be dropped.

pub mod nats;
pub mod resp;

/// Appends received bytes to a decoder's input, `buf[pos..]` being what is
/// not parsed yet: an empty input starts over (and gives back the memory of
/// one huge reply), and the parsed prefix is dropped once it is at least
/// half, which moves at most as many bytes as were consumed since the last
/// move, so linear overall.
fn append_input(buf: &mut Vec<u8>, pos: &mut usize, data: &[u8]) {
    if *pos == buf.len() {
        buf.clear();
        *pos = 0;
        if buf.capacity() > 1 << 20 && data.len() < 64 << 10 {
            buf.shrink_to(64 << 10);
        }
    } else if *pos > 0 && *pos >= buf.len() / 2 {
        buf.drain(..*pos);
        *pos = 0;
    }
    buf.extend_from_slice(data);
}

#[doc(hidden)]
pub mod fuzzing;
