//! `gateway --config FILE` runs the gateway; `gateway check-config FILE`
//! validates a configuration and prints the effective values.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use engine::logger;
use gateway::config::{log_level, Config};
use gateway::server;

/// io_uring WebSocket gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); see config/prod.toml for every key.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override `server.listen`, e.g. 127.0.0.1:0.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Override `server.workers` (0 = one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Override `admin.listen` (the `/metrics` address), e.g. 127.0.0.1:0.
    #[arg(long)]
    admin_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init(log::LevelFilter::Info);
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return match Config::load(file) {
            Ok(config) => {
                println!(
                    "# {}: valid; effective configuration (workers = {} resolved)",
                    file.display(),
                    config.effective_workers()
                );
                print!("{}", toml::to_string(&config).expect("config serializes"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let Some(path) = &cli.config else {
        eprintln!("error: --config FILE is required (try config/dev.toml)");
        return ExitCode::from(2);
    };
    let mut config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    if let Some(workers) = cli.workers {
        config.server.workers = workers;
    }
    if let Some(admin) = cli.admin_listen {
        config.admin.listen = Some(admin);
    }
    // The overrides bypassed validation (e.g. admin.listen == server.listen).
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    logger::init(log_level(&config.log.level).unwrap_or(log::LevelFilter::Info));
    run(&config)
}

fn run(config: &Config) -> ExitCode {
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, shutdown.clone()) {
            eprintln!("error: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let running = match server::start(config, shutdown) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts wait for this line (it carries the resolved port).
    println!(
        "gateway listening on {} with {} workers",
        running.local_addr,
        config.effective_workers()
    );
    // A second line, after the one scripts wait for; tests read it too.
    if let Some(admin) = running.admin_addr {
        println!("admin listening on {admin}");
        log::info!(
            "metrics at http://{admin}{}{}",
            gateway::conn::http::METRICS_PATH,
            if config.admin.metrics_enabled() {
                ""
            } else {
                " (disabled: admin.metrics = false)"
            }
        );
    }
    // A third line when the API has its own listener.
    if let Some(api) = running.api_addr {
        println!("api listening on {api}");
    }
    if !config.api.key.is_empty() {
        if let Some(at) = running.api_addr.or(running.admin_addr) {
            log::info!("server API at http://{at}/api/ (key in X-API-Key)");
        }
    }
    for route in config.effective_routes() {
        log::info!(
            "{:?} at ws://{}{}",
            route.app,
            running.local_addr,
            route.path
        );
    }
    log::info!(
        "health at http://{}{}",
        running.local_addr,
        config.websocket.health_path
    );
    match running.join() {
        Ok(summary) => {
            log::info!("stopped: {}", summary.counters.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
