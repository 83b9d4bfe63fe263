//! The Centrifugo client protocol v2 in its JSON format, sans-IO: decoding
//! client commands ([`command`]), encoding replies and pushes ([`reply`]),
//! the protocol's error and disconnect codes ([`codes`]), and HS256 tokens
//! ([`token`]). No socket, ring or clock: the gateway's `pubsub` app and the
//! bench client's `subscribe` mode drive it.
//!
//! The source of truth is `client.proto` in centrifugal/protocol; behaviour
//! follows centrifuge's `client.go` where the proto is silent. What this
//! server implements of it is listed in the gateway's README.

pub mod codes;
pub mod command;
pub mod reply;
pub mod token;
