//! An io_uring WebSocket gateway: thread-per-core workers that own accept,
//! receive and send through their own ring, with the WebSocket protocol kept
//! sans-IO on top of tungstenite's wire-format pieces.
//!
//! The [`engine`] and [`proto`] modules are shared with the bench client.

pub mod config;
pub mod counters;
pub mod server;
pub mod session;
pub mod telemetry;
