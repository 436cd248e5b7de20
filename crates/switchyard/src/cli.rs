//! Command line: `run`, `check`, `demo` (DESIGN.md §3).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchyard_budget::{Budgets, SystemClock};
use switchyard_core::{BudgetEvents, Ledger};
use switchyard_ledger::{EmbeddedLedger, LedgerOptions, RedisLedger, RedisOptions};
use switchyard_policy::Severity;
use switchyard_policy_watch::PolicyStore;
use switchyard_stack::Registries;

use crate::observe::Observability;
use crate::{demo, server};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Sidecar proxy for outbound LLM traffic"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve with a policy file.
    Run(RunArgs),
    /// Validate a policy file; print every error with its field path.
    Check {
        /// The policy file (JSON or YAML).
        file: PathBuf,
    },
    /// Print the routing plan for a request: candidates in order, exclusions with reasons.
    Explain {
        /// The policy file (JSON or YAML).
        #[arg(long, env = "SWITCHYARD_POLICY")]
        policy: PathBuf,
        /// A request body as the application would send it (JSON).
        request: PathBuf,
        /// The API path the request is for.
        #[arg(long, default_value = "/v1/chat/completions")]
        path: String,
    },
    /// Start simulated providers and the proxy with an example policy (no API key needed).
    Demo(demo::DemoArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The policy file (JSON or YAML).
    #[arg(long, env = "SWITCHYARD_POLICY")]
    policy: PathBuf,
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    ledger: LedgerArgs,
}

/// Where budget spend is kept (process settings: a restart is needed to change them).
#[derive(Debug, Args, Clone)]
pub struct LedgerArgs {
    /// The embedded durable spend ledger (an append-only log, plus `.snap` and `.lock` files
    /// beside it). Ignored with --redis.
    #[arg(long, env = "SWITCHYARD_LEDGER", default_value = "switchyard.ledger")]
    pub ledger: PathBuf,
    /// Keep spend in Redis instead, shared by every replica (e.g. redis://127.0.0.1:6379/0).
    #[arg(long, env = "SWITCHYARD_REDIS_URL")]
    pub redis: Option<String>,
    /// When the ledger cannot be reached, serve without enforcing budgets instead of
    /// refusing requests with 503.
    #[arg(long, env = "SWITCHYARD_BUDGETS_FAIL_OPEN")]
    pub budgets_fail_open: bool,
}

impl LedgerArgs {
    /// Opens the ledger; must run inside the runtime (the Redis client needs it).
    pub fn open(&self, events: Arc<dyn BudgetEvents>) -> Result<Arc<Budgets>, String> {
        let ledger: Arc<dyn Ledger> = match &self.redis {
            Some(url) => Arc::new(
                RedisLedger::new(url, RedisOptions::default())
                    .map_err(|e| format!("--redis {url}: {e}"))?,
            ),
            None => Arc::new(
                EmbeddedLedger::open(&self.ledger, LedgerOptions::default())
                    .map_err(|e| format!("--ledger {}: {e}", self.ledger.display()))?,
            ),
        };
        Ok(Arc::new(
            Budgets::new(ledger, Arc::new(SystemClock), self.budgets_fail_open).with_events(events),
        ))
    }
}

/// Listener settings shared by `run` and `demo`.
#[derive(Debug, Args, Clone)]
pub struct ListenArgs {
    /// Proxy listener address.
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:4000")]
    pub listen: SocketAddr,
    /// Admin listener address (health, readiness, policy status). Keep it on loopback.
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = "127.0.0.1:4001")]
    pub admin: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM, e.g. "30s".
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
}

impl ListenArgs {
    pub fn server_config(&self) -> server::ServerConfig {
        server::ServerConfig {
            listen: self.listen,
            admin: self.admin,
            drain_timeout: self.drain_timeout,
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { file } => check(&file),
        Cmd::Explain {
            policy,
            request,
            path,
        } => crate::explain::run(&policy, &request, &path),
        Cmd::Run(args) => run(args),
        Cmd::Demo(args) => match runtime() {
            Ok(rt) => rt.block_on(with_telemetry_from(demo::log_env, |obs| {
                demo::run(args, obs)
            })),
            Err(code) => code,
        },
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("switchyard: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn check(file: &Path) -> ExitCode {
    match switchyard_policy::load_file(file) {
        Ok(compiled) => {
            for w in &compiled.warnings {
                eprintln!("{w}");
            }
            let s = &compiled.snapshot;
            println!(
                "{}: OK ({} providers, {} models, {} endpoints, {} routes, {} budgets)",
                file.display(),
                s.providers().len(),
                s.models().len(),
                s.endpoints().len(),
                s.routes().len(),
                s.budgets().len()
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            print_invalid(file, &diags);
            ExitCode::FAILURE
        }
    }
}

fn print_invalid(file: &Path, diags: &[switchyard_policy::Diagnostic]) {
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    eprintln!("{}: invalid policy ({errors} errors)", file.display());
    for d in diags {
        eprintln!("  {d}");
    }
}

fn run(args: RunArgs) -> ExitCode {
    // Validate everything before binding a socket: a bad policy must never half-start.
    let compiled = match switchyard_policy::load_file(&args.policy) {
        Ok(c) => c,
        Err(diags) => {
            print_invalid(&args.policy, &diags);
            return ExitCode::from(2);
        }
    };
    for w in &compiled.warnings {
        tracing::warn!(warning = %w, "policy warning");
    }
    let store = PolicyStore::from_file(compiled, &args.policy);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(with_telemetry(|obs| async move {
        let budgets = match args.ledger.open(obs.metrics.clone()) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("switchyard: cannot open the spend ledger: {e}");
                return ExitCode::from(2);
            }
        };
        serve_until_signal(
            store,
            Registries::with_budgets(budgets),
            obs,
            args.listen.server_config(),
        )
        .await
    }))
}

/// Logs, traces and metrics for the life of `body`: tracing with JSON or human logs, and an
/// OTLP exporter when the standard `OTEL_*` variables configure one; flushed at the end.
async fn with_telemetry<F, Fut>(body: F) -> ExitCode
where
    F: FnOnce(Observability) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    with_telemetry_from(|name| std::env::var(name).ok(), body).await
}

/// [`with_telemetry`], configured from the variables `var` looks up.
async fn with_telemetry_from<F, Fut>(var: impl Fn(&str) -> Option<String>, body: F) -> ExitCode
where
    F: FnOnce(Observability) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let telemetry = match switchyard_telemetry::TelemetryConfig::from_lookup(var)
        .and_then(switchyard_telemetry::init)
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchyard: telemetry: {e}");
            return ExitCode::from(2);
        }
    };
    let obs = Observability {
        metrics: telemetry.metrics().clone(),
        generations: Arc::new(switchyard_telemetry::GenerationStore::default()),
    };
    let code = body(obs).await;
    if let Err(e) = telemetry.shutdown().await {
        eprintln!("switchyard: telemetry flush: {e}");
    }
    code
}

/// Serves until SIGTERM or SIGINT, then drains. SIGHUP re-reads the policy file.
pub async fn serve_until_signal(
    store: Arc<PolicyStore>,
    registries: Registries,
    obs: Observability,
    cfg: server::ServerConfig,
) -> ExitCode {
    let running = match server::start(store.clone(), registries, obs, &cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: cannot start listeners: {e}");
            return ExitCode::from(2);
        }
    };
    // Kept alive until the process exits: dropping it stops the watch.
    let _watch = watch_policy(&running.shared);
    if let Err(e) = wait_for_shutdown_signal(&running.shared).await {
        eprintln!("switchyard: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!("shutdown signal received; draining");
    if running.shutdown().await {
        tracing::info!("drained; exiting");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Watches the policy file (its directory, so ConfigMap `..data` swaps are seen) and
/// reloads on change; a policy without a file has nothing to watch.
pub(crate) fn watch_policy(
    shared: &Arc<server::Shared>,
) -> Option<switchyard_policy_watch::WatchHandle> {
    let path = shared.store.path()?.to_path_buf();
    let target = shared.clone();
    let handle = switchyard_policy_watch::spawn_watcher(
        path,
        Arc::new(move || {
            // Errors are recorded in the store (and shown by /admin/policy).
            let _ = target.reload();
        }),
        switchyard_policy_watch::WatchOptions::default(),
    )
    .map_err(|e| tracing::warn!(error = %e, "policy watcher not started; SIGHUP still reloads"))
    .ok();
    // A write between the first load and the watcher's baseline would otherwise go unseen:
    // read the file once more now (identical content is not a new generation).
    let _ = shared.reload();
    handle
}

#[cfg(unix)]
pub(crate) async fn wait_for_shutdown_signal(shared: &server::Shared) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                match shared.reload() {
                    Ok(generation) => tracing::info!(generation, "SIGHUP: policy in force"),
                    Err(_) => tracing::warn!("SIGHUP: reload refused; last good policy kept"),
                }
            }
        }
    }
}

#[cfg(not(unix))]
pub(crate) async fn wait_for_shutdown_signal(_shared: &server::Shared) -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
