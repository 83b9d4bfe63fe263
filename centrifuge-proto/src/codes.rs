//! The protocol's numbers: reply error codes, disconnect codes (sent as the
//! WebSocket close code, with the reason as the close reason) and
//! unsubscribe codes, as centrifuge defines them (`errors.go`,
//! `disconnect.go`, `unsubscribe.go`).

/// A reply error: `{"id":N,"error":{"code":C,"message":M}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    /// The code.
    pub code: u32,
    /// The message the SDKs show.
    pub message: &'static str,
    /// The client may retry (SDKs resubscribe/reconnect with backoff).
    pub temporary: bool,
}

const fn e(code: u32, message: &'static str, temporary: bool) -> ErrorCode {
    ErrorCode {
        code,
        message,
        temporary,
    }
}

/// 100: something failed on the server; temporary.
pub const INTERNAL: ErrorCode = e(100, "internal server error", true);
/// 101.
pub const UNAUTHORIZED: ErrorCode = e(101, "unauthorized", false);
/// 102: the channel's namespace does not exist.
pub const UNKNOWN_CHANNEL: ErrorCode = e(102, "unknown channel", false);
/// 103.
pub const PERMISSION_DENIED: ErrorCode = e(103, "permission denied", false);
/// 104.
pub const METHOD_NOT_FOUND: ErrorCode = e(104, "method not found", false);
/// 105.
pub const ALREADY_SUBSCRIBED: ErrorCode = e(105, "already subscribed", false);
/// 106: a per-connection or size limit.
pub const LIMIT_EXCEEDED: ErrorCode = e(106, "limit exceeded", false);
/// 107.
pub const BAD_REQUEST: ErrorCode = e(107, "bad request", false);
/// 108: a command this server does not implement.
pub const NOT_AVAILABLE: ErrorCode = e(108, "not available", false);
/// 109: the token's `exp` has passed (the SDK fetches a new one).
pub const TOKEN_EXPIRED: ErrorCode = e(109, "token expired", false);
/// 111.
pub const TOO_MANY_REQUESTS: ErrorCode = e(111, "too many requests", true);

/// A disconnect: the close code and its (non-empty) reason. Codes 3000–3499
/// tell the SDKs to reconnect, 3500–3999 not to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason (the SDKs reconnect forever on an empty one).
    pub reason: &'static str,
}

const fn d(code: u16, reason: &'static str) -> Disconnect {
    Disconnect { code, reason }
}

/// 3001: the server is shutting down (reconnect elsewhere).
pub const SHUTDOWN: Disconnect = d(3001, "shutdown");
/// 3004.
pub const SERVER_ERROR: Disconnect = d(3004, "internal server error");
/// 3008: the client does not read fast enough.
pub const SLOW: Disconnect = d(3008, "slow");
/// 3012: no pong within the timeout after a ping.
pub const NO_PONG: Disconnect = d(3012, "no pong");
/// 3500: the connection token is malformed or its signature is wrong.
pub const INVALID_TOKEN: Disconnect = d(3500, "invalid token");
/// 3501: a malformed or out-of-order command.
pub const BAD_REQUEST_DISCONNECT: Disconnect = d(3501, "bad request");
/// 3502: no connect command in time.
pub const STALE: Disconnect = d(3502, "stale");
/// 3503: disconnected through the server API.
pub const FORCE_DISCONNECT: Disconnect = d(3503, "force disconnect");
/// 3504.
pub const CONNECTION_LIMIT: Disconnect = d(3504, "connection limit");
/// 3505: server-side subscriptions over the per-connection limit.
pub const CHANNEL_LIMIT: Disconnect = d(3505, "channel limit");
/// 3506: e.g. a binary frame to a JSON connection.
pub const INAPPROPRIATE_PROTOCOL: Disconnect = d(3506, "inappropriate protocol");
/// 3507.
pub const PERMISSION_DENIED_DISCONNECT: Disconnect = d(3507, "permission denied");

/// `unsubscribe` push code for a server-side unsubscribe (terminal for the
/// subscription: the SDK does not resubscribe).
pub const UNSUBSCRIBE_SERVER: (u32, &str) = (2000, "server unsubscribe");
/// The server may have missed publications of the channel: codes from
/// 2500 make the SDKs subscribe again.
pub const UNSUBSCRIBE_INSUFFICIENT_STATE: (u32, &str) = (2500, "insufficient state");
