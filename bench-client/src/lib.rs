//! `bench-client`: an io_uring WebSocket load generator built on the
//! gateway's engine (connect role) and sans-IO protocol (client role).

pub mod ack;
pub mod client;
pub mod cost;
pub mod pubsub;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod target_url;
