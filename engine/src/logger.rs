//! A minimal stderr logger: one line per record with a UTC timestamp and the
//! worker thread's name. Enough for a daemon under systemd or a test.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let thread = std::thread::current();
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}.{:03} {:5} [{}] {}",
            now.as_secs(),
            now.subsec_millis(),
            record.level(),
            thread.name().unwrap_or("main"),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Installs the logger at `level` (a second call only changes the level).
pub fn init(level: log::LevelFilter) {
    static LOGGER: StderrLogger = StderrLogger;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Parses a level name: error, warn, info, debug, trace.
pub fn parse_level(s: &str) -> Option<log::LevelFilter> {
    match s {
        "error" => Some(log::LevelFilter::Error),
        "warn" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    }
}
