//! `user_data` encoding: which operation completed, for which slot.
//!
//! Layout: `op` in the top 8 bits, a 24-bit slot generation, a 32-bit slot
//! index. The generation makes a completion for a slot that has since been
//! reused detectable (it should never happen, because a slot is only freed
//! once nothing is in flight for it, and a debug assertion checks that).

/// The kind of operation a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// An accept on one of the worker's listeners (index: the listener, generation field: its accept buffer).
    Accept = 1,
    /// Multishot receive on a connection.
    Recv = 2,
    /// A send or sendmsg on a connection.
    Send = 3,
    /// An async cancel request; its completion carries no state.
    Cancel = 4,
    /// A connect on an outgoing connection.
    Connect = 5,
    /// A timing-wheel key (never submitted to the ring).
    Timer = 6,
    /// A mailbox wake-up arrived: by `MSG_RING` from another ring, or the
    /// eventfd poll fired (the index tells which).
    Wake = 7,
    /// Our own `MSG_RING` to another worker completed (index: its slot in
    /// the in-flight table).
    WakeSent = 8,
    /// A direct socket for an outgoing connection was created (its
    /// result is the fixed-file index); the connect follows.
    Socket = 9,
    /// A set-up step linked before a connect (socket option, bind);
    /// completes only on failure (`CQE_SKIP_SUCCESS`).
    Setup = 10,
    /// The close of a released slot's direct descriptor.
    Close = 11,
    /// `shutdown(SHUT_WR)` of a graceful close.
    Shutdown = 12,
}

/// Packs an operation, a slot index and its generation.
pub fn encode(op: Op, index: u32, generation: u32) -> u64 {
    (op as u64) << 56 | u64::from(generation & 0xff_ffff) << 32 | u64::from(index)
}

/// Unpacks a `user_data`; `None` for a value this engine never produced.
pub fn decode(user_data: u64) -> Option<(Op, u32, u32)> {
    let op = match (user_data >> 56) as u8 {
        1 => Op::Accept,
        2 => Op::Recv,
        3 => Op::Send,
        4 => Op::Cancel,
        5 => Op::Connect,
        6 => Op::Timer,
        7 => Op::Wake,
        8 => Op::WakeSent,
        9 => Op::Socket,
        10 => Op::Setup,
        11 => Op::Close,
        12 => Op::Shutdown,
        _ => return None,
    };
    Some((op, user_data as u32, (user_data >> 32) as u32 & 0xff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for op in [
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Cancel,
            Op::Connect,
            Op::Timer,
            Op::Wake,
            Op::WakeSent,
            Op::Socket,
            Op::Setup,
            Op::Close,
            Op::Shutdown,
        ] {
            for (idx, gen) in [(0, 0), (u32::MAX, 0xff_ffff), (12345, 77)] {
                assert_eq!(decode(encode(op, idx, gen)), Some((op, idx, gen)));
            }
        }
        assert_eq!(decode(0), None);
        // Generations wrap at 24 bits instead of spilling into the op byte.
        assert_eq!(
            decode(encode(Op::Send, 1, 0x100_0001)),
            Some((Op::Send, 1, 1))
        );
    }
}
