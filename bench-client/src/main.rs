//! `bench-client --scenario FILE` runs a load scenario (every matrix cell in
//! order); `bench-client validate FILE` checks one and prints its matrix.
//! Exit status: 0 all thresholds passed, 1 a threshold failed, 2 the
//! scenario or the run itself failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bench_client::report::{self, CellReport};
use bench_client::{runner, scenario};
use clap::{Parser, Subcommand};

/// io_uring WebSocket load generator.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Scenario file (TOML); see config/scenarios/.
    #[arg(long, short)]
    scenario: Option<PathBuf>,
    /// Override a scenario key, e.g. --set load.connections=500 or --set 'load.message_size=[100,1000]'.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Target URL (repeat for several; connections are spread over them):
    /// shorthand for --set 'target.urls=["URL", ...]'.
    #[arg(long = "target", value_name = "URL")]
    targets: Vec<String>,
    /// Where to write summary.json, results.csv, report.md and plots
    /// (default results/<date>-<scenario>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print no live line, only the summaries.
    #[arg(long, short)]
    quiet: bool,
    /// Log level for the client's own diagnostics.
    #[arg(long, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a scenario and print its expanded matrix.
    Validate {
        /// The scenario file.
        file: PathBuf,
        /// Overrides, as for a run.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Internal: one process of a run spread over several.
    #[command(name = "__child", hide = true)]
    Child,
}

fn main() -> ExitCode {
    // A CLI piped into `head` should end quietly, not panic on EPIPE. The
    // engine's socket sends use MSG_NOSIGNAL, so this does not affect them.
    // SAFETY: installing the default disposition for SIGPIPE at start-up.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    engine::logger::init(engine::logger::parse_level(&cli.log).unwrap_or(log::LevelFilter::Warn));
    engine::raise_open_files_limit();
    let abort = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, abort.clone());
    }
    match &cli.command {
        Some(Command::Validate { file, sets }) => validate(file, sets),
        Some(Command::Child) => match runner::child_main(abort) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        None => match &cli.scenario {
            Some(file) => run(&cli, file, abort),
            None => {
                eprintln!("error: --scenario FILE is required (try config/scenarios/quick.toml)");
                ExitCode::from(2)
            }
        },
    }
}

fn validate(file: &Path, sets: &[String]) -> ExitCode {
    match scenario::load(file, sets) {
        Ok(m) => {
            println!(
                "# {}: valid; {} cell(s), varying {:?}",
                file.display(),
                m.cells.len(),
                m.varied
            );
            for c in &m.cells {
                let l = &c.scenario.load;
                let params: Vec<String> =
                    c.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let ignored = l.mode.ignored_keys();
                let traffic: String = [
                    ("message_size", l.message_size.to_string()),
                    ("in_flight", l.in_flight.to_string()),
                    ("rate", l.rate.to_string()),
                    ("ping_interval_ms", l.ping_interval_ms.to_string()),
                ]
                .into_iter()
                .filter(|(k, _)| !ignored.contains(k))
                .map(|(k, v)| format!(" {k}={v}"))
                .collect();
                println!(
                    "cell {:>3}: {:<40} mode={} connections={}{traffic} duration_secs={}",
                    c.index,
                    params.join(" "),
                    l.mode.label(),
                    l.connections,
                    l.duration_secs
                );
            }
            if let Some(c) = m.cells.first() {
                println!(
                    "\n# effective scenario of cell 0:\n{}",
                    toml::to_string(&c.scenario).expect("serializes")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--target` URLs as a `target.urls` override, ahead of the `--set`s.
fn overrides(cli: &Cli) -> Vec<String> {
    let mut sets = Vec::with_capacity(cli.sets.len() + 1);
    if !cli.targets.is_empty() {
        let urls: Vec<String> = cli.targets.iter().map(|u| format!("{u:?}")).collect();
        sets.push(format!("target.urls=[{}]", urls.join(",")));
    }
    sets.extend(cli.sets.iter().cloned());
    sets
}

fn run(cli: &Cli, file: &Path, abort: Arc<AtomicBool>) -> ExitCode {
    let matrix = match scenario::load(file, &overrides(cli)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let command = std::iter::once("bench-client".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let mut reports = Vec::new();
    for cell in &matrix.cells {
        if abort.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        if matrix.cells.len() > 1 && !cli.quiet {
            let params: Vec<String> = cell
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            eprintln!(
                "--- cell {}/{}: {}",
                cell.index + 1,
                matrix.cells.len(),
                params.join(" ")
            );
        }
        match runner::run_cell(&cell.scenario, abort.clone(), cli.quiet) {
            Ok(outcome) => {
                let r = CellReport::new(cell, &outcome);
                println!("{}", report::summary_text(&r));
                reports.push(r);
            }
            Err(e) => {
                eprintln!("error: cell {}: {e}", cell.index);
                return ExitCode::from(2);
            }
        }
    }
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("results/{}-{}", today(), matrix.name)));
    match report::write_outputs(&out, &matrix, &reports, &command) {
        Ok(files) => println!("wrote {} to {}", files.join(", "), out.display()),
        Err(e) => {
            eprintln!("error: cannot write results to {}: {e}", out.display());
            return ExitCode::from(2);
        }
    }
    if reports.iter().all(CellReport::passed) {
        ExitCode::SUCCESS
    } else {
        eprintln!("thresholds failed");
        ExitCode::from(1)
    }
}

/// Today's UTC date as YYYY-MM-DD (days-from-civil, inverted).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
