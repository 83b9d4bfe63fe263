//! Sans-IO WebSocket protocol: the HTTP/1.1 upgrade and RFC 6455 framing.
//!
//! Nothing in here touches a socket, a ring or a clock: callers pass bytes in
//! and get events and bytes to send back. Both the gateway (server role) and
//! the bench client (client role) drive this same code.

pub mod codec;
pub mod handshake;
pub mod http;
pub mod http_client;
pub mod session;
