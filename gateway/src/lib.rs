//! An io_uring WebSocket gateway: thread-per-core workers that own accept,
//! receive and send through their own ring, with the WebSocket protocol kept
//! sans-IO on top of tungstenite's wire-format pieces.
//!
//! The data path, crate by crate: `engine` (io_uring runtime: accept,
//! receive, send), `wsproto` (sans-IO handshake, frames and the WebSocket
//! session), then [`conn`] (connection kinds driving the session) and
//! [`app`] (what each route does with messages). The bench client shares
//! `engine` and `wsproto`, not this crate.

pub mod app;
pub mod broker;
pub mod config;
pub mod conn;
pub mod counters;
pub mod server;
pub mod telemetry;
pub mod upstream;
