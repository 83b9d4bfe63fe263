//! The io_uring engine shared by the gateway (accept role) and the bench
//! client (connect role): one ring per pinned worker thread, accept (into
//! direct descriptors by default) and multishot receive from a provided-buffer ring, queued sends with partial-send
//! resume, a timing wheel, and a close path that never frees a slot or buffer
//! the kernel still references.

pub mod affinity;
mod bufring;
mod io;
pub mod listener;
pub mod logger;
pub mod mailbox;
mod ring;
pub mod spawn;
mod stats;
mod timer;
mod token;
mod worker;

pub use io::{CloseCause, CloseMode, ConnId, Io, SendError};
pub use stats::EngineStats;
pub use worker::{
    default_file_table, open_files_limit, raise_open_files_limit, Conns, EngineConfig, EngineKey,
    Handler, Origin, Worker,
};
