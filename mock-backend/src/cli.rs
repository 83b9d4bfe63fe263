//! The command line: clap-derived flags, value parsers whose errors clap
//! reports against the flag (`invalid value 'x' for '--latency <DIST>'`),
//! and the checks between flags, whose errors name the flags too.
//!
//! Why a module: `main` then only wires the parts together, and the
//! parsing is unit-tested without starting anything.

use std::net::SocketAddr;

use clap::Parser;

use crate::app::Settings;
use crate::latency::Latency;
use crate::push::{ApiUrl, PushOptions};
use crate::server::ServerOptions;

/// Mock backend for the gateway's upstream webhooks and Centrifugo proxies.
///
/// Endpoints: POST /ws/connect, /ws/message, /ws/disconnect,
/// /centrifugo/{connect,rpc,publish,subscribe}; GET /stats.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Address to listen on; port 0 picks a free one (printed as
    /// `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// io_uring worker threads (0 = one per CPU this process may use).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Pin worker i to the i-th of these CPUs, e.g. `2,3` or `0-3`.
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
    /// Latency of every answer: fixed:D, uniform:A..B, exp:MEAN or
    /// normal:MEAN,SD; durations in us, ms (default unit) or s.
    #[arg(long, default_value = "fixed:0", value_name = "DIST")]
    pub latency: Latency,
    /// Probability of answering 500 instead.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability, value_name = "P")]
    pub failure_rate: f64,
    /// Name of the id field of a JSON client message.
    #[arg(long, default_value = "id", value_name = "NAME")]
    pub id_field: String,
    /// Name of the type field of a JSON client message.
    #[arg(long, default_value = "type", value_name = "NAME")]
    pub type_field: String,
    /// Type value marking the client's own ack (answered 204).
    #[arg(long, default_value = "ack", value_name = "VALUE")]
    pub ack_value: String,
    /// Echo messages that are not id-carrying JSON (instead of 204).
    #[arg(long)]
    pub echo: bool,
    /// Pushes per second through the gateway's API (0 = none); needs
    /// --gateway-api.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, value_name = "N")]
    pub push_rate: f64,
    /// The gateway's API base, e.g. http://127.0.0.1:9091.
    #[arg(long, value_name = "URL")]
    pub gateway_api: Option<ApiUrl>,
    /// API key sent as X-API-Key with every push.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Print the counters every this many milliseconds (0 = only at exit).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub stats_interval_ms: u64,
    /// Seed of the latency and failure draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Largest request body accepted (413 above).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_body_bytes: usize,
}

/// `--cpus`: CPU indexes in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Why a flag's value, or a combination of flags, was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CliError {
    /// `--cpus` item that is not a CPU index or range.
    #[error("bad CPU {0:?}: use indexes and ranges, e.g. 0,2-3")]
    Cpu(String),
    /// `--failure-rate` outside 0..=1.
    #[error("{0:?} is not a probability from 0 to 1")]
    Probability(String),
    /// `--push-rate` negative or not a number.
    #[error("{0:?} is not a rate (a number >= 0)")]
    Rate(String),
    /// `--push-rate` without `--gateway-api`.
    #[error("--push-rate {0} needs --gateway-api URL")]
    PushWithoutApi(f64),
    /// `--gateway-api` or `--api-key` without `--push-rate`.
    #[error("{0} is only used with --push-rate N > 0")]
    PushFlagWithoutRate(&'static str),
    /// `--id-field` or `--type-field` empty, or both the same.
    #[error("--id-field and --type-field must be two different non-empty names")]
    Fields,
    /// `--api-key` with a character a header value cannot carry.
    #[error("--api-key must be visible ASCII")]
    ApiKey,
    /// `--workers` beyond the sane.
    #[error("--workers {0} is more than 256")]
    Workers(usize),
    /// `--max-body-bytes 0`.
    #[error("--max-body-bytes must be at least 1")]
    MaxBody,
}

fn parse_cpus(s: &str) -> Result<CpuList, CliError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let bad = || CliError::Cpu(part.to_string());
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b || b >= 4096 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    Ok(CpuList(out))
}

fn parse_probability(s: &str) -> Result<f64, CliError> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(CliError::Probability(s.to_string())),
    }
}

fn parse_rate(s: &str) -> Result<f64, CliError> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(CliError::Rate(s.to_string())),
    }
}

/// Everything `main` needs, checked.
#[derive(Debug)]
pub struct Plan {
    /// Listener and workers.
    pub server: ServerOptions,
    /// Behaviour.
    pub settings: Settings,
    /// Present with `--push-rate N > 0`.
    pub push: Option<PushOptions>,
    /// 0 = only at exit.
    pub stats_interval_ms: u64,
}

impl Cli {
    /// Checks the flags together.
    pub fn plan(self) -> Result<Plan, CliError> {
        if self.id_field.is_empty()
            || self.type_field.is_empty()
            || self.id_field == self.type_field
        {
            return Err(CliError::Fields);
        }
        if self.workers > 256 {
            return Err(CliError::Workers(self.workers));
        }
        if self.max_body_bytes == 0 {
            return Err(CliError::MaxBody);
        }
        if let Some(key) = &self.api_key {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(CliError::ApiKey);
            }
        }
        let push = if self.push_rate > 0.0 {
            let api = self
                .gateway_api
                .ok_or(CliError::PushWithoutApi(self.push_rate))?;
            Some(PushOptions {
                rate: self.push_rate,
                api,
                api_key: self.api_key,
            })
        } else if self.gateway_api.is_some() {
            return Err(CliError::PushFlagWithoutRate("--gateway-api"));
        } else if self.api_key.is_some() {
            return Err(CliError::PushFlagWithoutRate("--api-key"));
        } else {
            None
        };
        let workers = if self.workers == 0 {
            engine::affinity::allowed_cpus().len().max(1)
        } else {
            self.workers
        };
        Ok(Plan {
            server: ServerOptions {
                listen: self.listen,
                workers,
                cpus: self.cpus.map(|c| c.0).unwrap_or_default(),
                max_body: self.max_body_bytes,
            },
            settings: Settings {
                ack_json: serde_json::Value::String(self.ack_value).to_string(),
                id_field: self.id_field,
                type_field: self.type_field,
                echo: self.echo,
                latency: self.latency,
                failure_rate: self.failure_rate,
                seed: self.seed,
            },
            push,
            stats_interval_ms: self.stats_interval_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(std::iter::once("mock-backend").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_full_set() {
        let plan = parse(&[]).unwrap().plan().unwrap();
        assert_eq!(plan.server.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(plan.server.workers, 1);
        assert_eq!(plan.settings.latency, Latency::Fixed(0));
        assert_eq!(plan.settings.ack_json, "\"ack\"");
        assert!(plan.push.is_none());
        let plan = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--cpus",
            "0,2-3",
            "--latency",
            "uniform:1ms..5ms",
            "--failure-rate",
            "0.01",
            "--ack-value",
            "a\"ck",
            "--echo",
            "--push-rate",
            "100",
            "--gateway-api",
            "http://127.0.0.1:9091",
            "--api-key",
            "dev",
            "--stats-interval-ms",
            "1000",
        ])
        .unwrap()
        .plan()
        .unwrap();
        assert_eq!(plan.server.cpus, vec![0, 2, 3]);
        assert_eq!(plan.settings.ack_json, r#""a\"ck""#);
        let push = plan.push.unwrap();
        assert_eq!((push.rate, push.api_key.as_deref()), (100.0, Some("dev")));
    }

    #[test]
    fn errors_name_the_flag() {
        for (args, flag) in [
            (&["--latency", "gauss:1ms"][..], "--latency"),
            (&["--latency", "uniform:5ms..1ms"], "--latency"),
            (&["--failure-rate", "1.5"], "--failure-rate"),
            (&["--push-rate=-1"], "--push-rate"),
            (&["--push-rate", "x"], "--push-rate"),
            (&["--cpus", "3-1"], "--cpus"),
            (&["--gateway-api", "https://x:1"], "--gateway-api"),
            (&["--listen", "nowhere"], "--listen"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        for (args, flag) in [
            (&["--push-rate", "5"][..], "--gateway-api"),
            (&["--api-key", "k"], "--api-key"),
            (&["--gateway-api", "http://a:1"], "--gateway-api"),
            (&["--id-field", "type"], "--id-field"),
            (
                &[
                    "--push-rate",
                    "1",
                    "--gateway-api",
                    "http://a:1",
                    "--api-key",
                    "a b",
                ],
                "--api-key",
            ),
        ] {
            let err = parse(args).unwrap().plan().unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }
}
