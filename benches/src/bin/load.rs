//! `load`: the load harness that regenerates BENCHMARKS.md (run by `scripts/bench`).
//!
//! `load run` measures Switchyard against a direct call and a bare hyper passthrough on
//! loopback and prints (and optionally writes) the markdown tables; `load criterion` turns
//! criterion's saved estimates into a table. `load sim` and `load floor` are the child
//! processes `run` starts. Nothing here is part of the proxy; no address but 127.0.0.1 is
//! ever contacted.

#[path = "../load/mod.rs"]
mod load;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use load::run::Options;
use load::ticker::Shape;

#[derive(Debug, Parser)]
#[command(name = "load", about = "Switchyard's load harness (see BENCHMARKS.md)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Measure direct, floor and switchyard; print the markdown report.
    Run(RunArgs),
    /// Print criterion's saved estimates as a markdown table.
    Criterion {
        /// criterion's output directory.
        #[arg(long, default_value = "target/criterion")]
        dir: PathBuf,
        /// Leave out results written before this UNIX time (seconds).
        #[arg(long)]
        since: Option<u64>,
    },
    /// (child) Simulated providers until stdin closes.
    #[command(hide = true)]
    Sim {
        #[arg(long, default_value_t = 5)]
        count: usize,
        #[arg(long)]
        key: String,
    },
    /// (child) The floor passthrough proxy until stdin closes.
    #[command(hide = true)]
    Floor {
        #[arg(long, required = true)]
        upstream: Vec<SocketAddr>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Smoke run: short points and small stream counts (about a minute).
    #[arg(long)]
    quick: bool,
    /// Length of each load point (default 10s, 1500ms with --quick).
    #[arg(long, value_parser = humantime_duration)]
    duration: Option<Duration>,
    /// Open-loop rates in requests per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<f64>,
    /// Connections of the maximum-throughput closed loop.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Streams per second of the streaming point.
    #[arg(long, default_value_t = 200.0)]
    stream_rate: f64,
    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// Gap between streamed chunks.
    #[arg(long, default_value = "5ms", value_parser = humantime_duration)]
    chunk_gap: Duration,
    /// Idle streams to hold open for the memory point (default 1000,10000; 100,500 with
    /// --quick; capped by the open-file limit).
    #[arg(long, value_delimiter = ',')]
    idle_streams: Option<Vec<usize>>,
    /// Requests in flight at most in an open loop.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// The switchyard binary (default: beside this one).
    #[arg(long)]
    switchyard: Option<PathBuf>,
    /// Requests per callgrind profile (default 2000, 300 with --quick); 0 skips it.
    #[arg(long)]
    profile_requests: Option<u64>,
    /// Also write the markdown report here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Keep policies, logs, ledgers and callgrind dumps here (default: a temporary
    /// directory, removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn options(args: RunArgs) -> Result<Options, String> {
    let switchyard = match args.switchyard {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("switchyard"),
    };
    if !switchyard.is_file() {
        return Err(format!(
            "{} not found: build it first (cargo build --release -p switchyard) or pass --switchyard",
            switchyard.display()
        ));
    }
    let quick = args.quick;
    Ok(Options {
        quick,
        duration: args.duration.unwrap_or(if quick {
            Duration::from_millis(1500)
        } else {
            Duration::from_secs(10)
        }),
        rates: args.rates,
        conns: args.conns.max(1),
        stream_rate: args.stream_rate,
        shape: Shape {
            chunks: args.chunks,
            first_token: Duration::ZERO,
            gap: args.chunk_gap,
        },
        idle_counts: args
            .idle_streams
            .unwrap_or_else(|| {
                if quick {
                    vec![100, 500]
                } else {
                    vec![1000, 10_000]
                }
            })
            .into_iter()
            .filter(|&n| n > 0)
            .collect(),
        max_in_flight: args.max_in_flight.max(1),
        switchyard,
        profile_requests: args
            .profile_requests
            .unwrap_or(if quick { 300 } else { 2000 }),
        work_dir: args.work_dir,
    })
}

fn run(args: RunArgs) -> ExitCode {
    let markdown = args.markdown.clone();
    let opts = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match rt.block_on(load::run::run(&opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Children and tasks are gone; do not wait for idle pooled connections.
    rt.shutdown_background();
    let md = report.markdown();
    println!("{md}");
    if let Some(path) = markdown
        && let Err(e) = std::fs::write(&path, &md)
    {
        eprintln!("load: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Run(args) => run(args),
        Cmd::Criterion { dir, since } => {
            let since = since.map(|s| UNIX_EPOCH + Duration::from_secs(s));
            match load::criterion::collect(&dir, since) {
                Ok(rows) if rows.is_empty() => {
                    eprintln!("load: no criterion results under {}", dir.display());
                    ExitCode::FAILURE
                }
                Ok(rows) => {
                    print!("{}", load::criterion::markdown(&rows));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("load: {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Sim { count, key } => load::children::sim_main(count, &key),
        Cmd::Floor { upstream } => load::children::floor_main(&upstream),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(
            humantime_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(humantime_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(humantime_duration("soon").is_err());
    }

    #[test]
    fn cli_defaults_and_quick() {
        let cli = Cli::try_parse_from(["load", "run", "--quick", "--rates", "100,200"]).unwrap();
        let Cmd::Run(args) = cli.cmd else {
            panic!("not run")
        };
        assert!(args.quick);
        assert_eq!(args.rates, [100.0, 200.0]);
        assert_eq!(args.chunk_gap, Duration::from_millis(5));
        let err = options(RunArgs {
            switchyard: Some(PathBuf::from("/nonexistent/switchyard")),
            ..args
        })
        .unwrap_err();
        assert!(err.contains("not found"), "{err}");
        assert!(Cli::try_parse_from(["load", "floor"]).is_err());
        assert!(Cli::try_parse_from(["load", "floor", "--upstream", "127.0.0.1:1"]).is_ok());
    }
}
