//! One run of the harness: start the upstreams and both proxies, measure every point, stop
//! everything. Points of the three targets are interleaved (a, b, c at one rate, then the
//! next rate) so that drift in the machine's load hits all three alike.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use switchyard_sim::{Behavior, SimConfig};

use super::child::{ChildProc, parse_addrs, this_exe};
use super::loadgen::{self, Bounds, HttpClient, Target};
use super::policy::{self, CHAT_MODELS, STREAM_MODEL, TAG, Upstreams};
use super::procfs;
use super::profile::{self, Digest};
use super::report::{
    IdleRow, MaxRow, MemRow, Mode, OpenRow, ProfileRow, Report, STALL, StreamRow, fmt_dur,
};
use super::ticker::{Shape, Ticker};

/// What to measure and how long.
#[derive(Clone, Debug)]
pub struct Options {
    /// Smoke run: short points, small stream counts.
    pub quick: bool,
    /// Length of each load point.
    pub duration: Duration,
    /// Open-loop rates, requests per second.
    pub rates: Vec<f64>,
    /// Connections of the closed loop.
    pub conns: usize,
    /// Streams per second of the streaming point.
    pub stream_rate: f64,
    /// What every streamed answer looks like.
    pub shape: Shape,
    /// Numbers of idle streams to hold open for the memory point.
    pub idle_counts: Vec<usize>,
    /// Requests in flight at most in an open loop.
    pub max_in_flight: usize,
    /// The `switchyard` binary.
    pub switchyard: PathBuf,
    /// Requests per callgrind profile; 0 skips the profile.
    pub profile_requests: u64,
    /// Where policies, logs, ledgers and profiles go (kept); a temporary directory when
    /// unset.
    pub work_dir: Option<PathBuf>,
}

const KEY: &str = "sk-switchyard-bench";
const PATH: &str = "/v1/chat/completions";
const SIMS: usize = 5;
const TICKERS: usize = 2;
/// Open files a process needs beyond its streams (listeners, epoll, logs, the ledger).
const FD_RESERVE: u64 = 256;

fn free_addr() -> Result<SocketAddr, String> {
    let l = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

async fn send(
    client: &HttpClient,
    method: http::Method,
    uri: String,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes))
}

/// Gives every simulated provider `behavior` as its default.
async fn configure_sims(
    client: &HttpClient,
    sims: &[SocketAddr],
    behavior: &Behavior,
) -> Result<(), String> {
    for (i, addr) in sims.iter().enumerate() {
        let config = SimConfig::named(format!("s{i}"))
            .api_key(KEY)
            .default_behavior(behavior.clone());
        let body = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
        let (status, text) = send(
            client,
            http::Method::POST,
            format!("http://{addr}/_sim/config"),
            body.into(),
        )
        .await?;
        if status != StatusCode::OK {
            return Err(format!(
                "sim config: {status}: {}",
                String::from_utf8_lossy(&text)
            ));
        }
    }
    Ok(())
}

/// Forgets the sims' recorded calls, so their memory stays flat over the run.
async fn reset_sims(client: &HttpClient, sims: &[SocketAddr]) {
    for addr in sims {
        let _ = send(
            client,
            http::Method::POST,
            format!("http://{addr}/_sim/reset"),
            Bytes::new(),
        )
        .await;
    }
}

async fn wait_ready(
    client: &HttpClient,
    admin: SocketAddr,
    proc: &mut ChildProc,
    log: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((StatusCode::OK, _)) = send(
            client,
            http::Method::GET,
            format!("http://{admin}/readyz"),
            Bytes::new(),
        )
        .await
        {
            return Ok(());
        }
        if !proc.running() || Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            return Err(format!(
                "{} did not become ready; last log lines:\n{}",
                proc.name(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A started `switchyard run`, optionally under a wrapper (valgrind).
struct Proxy {
    proc: ChildProc,
    listen: SocketAddr,
    admin: SocketAddr,
}

async fn start_switchyard(
    client: &HttpClient,
    bin: &Path,
    dir: &Path,
    policy_file: &Path,
    wrapper: &[String],
    name: &str,
    ready_within: Duration,
) -> Result<Proxy, String> {
    let listen = free_addr()?;
    let admin = free_addr()?;
    // A new ledger every start: a kept work directory must not carry spend over.
    let ledger_dir = dir.join(format!("{name}.ledger.d"));
    let _ = std::fs::remove_dir_all(&ledger_dir);
    std::fs::create_dir_all(&ledger_dir).map_err(|e| e.to_string())?;
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("run")
        .arg("--policy")
        .arg(policy_file)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--admin")
        .arg(admin.to_string())
        .arg("--ledger")
        .arg(ledger_dir.join("spend.ledger"))
        .arg("--drain-timeout")
        .arg("1s");
    let log = dir.join(format!("{name}.log"));
    let mut proc =
        ChildProc::spawn_quiet(name, cmd, &log).map_err(|e| format!("{}: {e}", bin.display()))?;
    wait_ready(client, admin, &mut proc, &log, ready_within).await?;
    Ok(Proxy {
        proc,
        listen,
        admin,
    })
}

fn start_floor(
    upstreams: &[SocketAddr],
    wrapper: &[String],
    log: &Path,
    wait: Duration,
) -> Result<(ChildProc, Vec<SocketAddr>), String> {
    let exe = this_exe().map_err(|e| e.to_string())?;
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.arg("floor");
    for u in upstreams {
        cmd.arg("--upstream").arg(u.to_string());
    }
    let (proc, line) =
        ChildProc::spawn("floor", cmd, Some(log), wait).map_err(|e| e.to_string())?;
    Ok((proc, parse_addrs(&line)?))
}

/// Where each mode sends its requests, and whose CPU and memory count.
struct Way {
    mode: Mode,
    plain: Target,
    stream: Target,
    pid: Option<u32>,
}

fn cpu(pid: Option<u32>) -> Option<Duration> {
    procfs::cpu(pid?).ok()
}

fn delta(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    Some(after?.saturating_sub(before?))
}

fn progress(what: &str) {
    eprintln!("load: {what}");
}

/// Runs every point and returns the report.
pub async fn run(opts: &Options) -> Result<Report, String> {
    let started = SystemTime::now();
    let mut report = Report {
        machine: procfs::machine(),
        date: super::report::utc(started),
        quick: opts.quick,
        duration: opts.duration,
        nofile: procfs::nofile_limit(),
        stream_shape: Some(opts.shape),
        ..Report::default()
    };
    let (temp, kept);
    let dir: &Path = match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            // Absolute: the policy names its key file, and a relative path there would
            // resolve against the policy's own directory.
            kept = std::fs::canonicalize(d).map_err(|e| format!("{}: {e}", d.display()))?;
            &kept
        }
        None => {
            temp = tempfile::tempdir().map_err(|e| e.to_string())?;
            temp.path()
        }
    };
    let client = loadgen::client();
    let exe = this_exe().map_err(|e| e.to_string())?;

    progress("starting the simulated providers, the ticker, the floor and switchyard");
    let mut sim_cmd = Command::new(&exe);
    sim_cmd.args(["sim", "--count", &SIMS.to_string(), "--key", KEY]);
    let (sims_proc, line) = ChildProc::spawn(
        "sim",
        sim_cmd,
        Some(&dir.join("sim.log")),
        Duration::from_secs(20),
    )
    .map_err(|e| e.to_string())?;
    let sims = parse_addrs(&line)?;
    let ticker = Ticker::start(TICKERS, opts.shape).map_err(|e| e.to_string())?;
    let upstreams = Upstreams {
        sims: sims.clone(),
        tickers: ticker.addrs().to_vec(),
    };
    let (floor_proc, floor_addrs) = start_floor(
        &[sims[0], ticker.addrs()[0]],
        &[],
        &dir.join("floor.log"),
        Duration::from_secs(20),
    )?;

    let key_file = dir.join("provider.key");
    std::fs::write(&key_file, format!("{KEY}\n")).map_err(|e| e.to_string())?;
    // Room for every idle stream on one model's endpoints, so that the per-endpoint cap
    // does not shed the memory measurement.
    let max_idle = opts.idle_counts.iter().copied().max().unwrap_or(0);
    let in_flight_cap = u32::try_from(max_idle.max(256)).unwrap_or(u32::MAX);
    let policy = policy::policy(&upstreams, &key_file.display().to_string(), in_flight_cap);
    // The policy in a directory of its own, as a ConfigMap mount is: switchyard watches the
    // policy's directory, and the logs written next to it would wake the watcher on every
    // line (CPU that a real deployment does not spend).
    let policy_dir = dir.join("policy");
    std::fs::create_dir_all(&policy_dir).map_err(|e| e.to_string())?;
    let policy_file = policy_dir.join("policy.json");
    std::fs::write(
        &policy_file,
        serde_json::to_vec_pretty(&policy).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let proxy = start_switchyard(
        &client,
        &opts.switchyard,
        dir,
        &policy_file,
        &[],
        "switchyard",
        Duration::from_secs(30),
    )
    .await?;
    let floor_pid = floor_proc.pid();
    let proxy_pid = proxy.proc.pid();
    let mut fresh = HashMap::new();
    for (mode, pid) in [(Mode::Floor, floor_pid), (Mode::Switchyard, proxy_pid)] {
        fresh.insert(mode, procfs::mem(pid).map_err(|e| e.to_string())?);
    }
    report.metrics_endpoint = match send(
        &client,
        http::Method::GET,
        format!("http://{}/metrics", proxy.admin),
        Bytes::new(),
    )
    .await
    {
        Ok((status, _)) => Some(status == StatusCode::OK),
        Err(_) => None,
    };
    if in_flight_cap > 256 {
        report.notes.push(format!(
            "policy `limits.max_in_flight_per_endpoint` raised to {in_flight_cap} (default 256) so the idle-stream point is not shed"
        ));
    }

    let target = |addr: SocketAddr| Target::new(addr, PATH, KEY, TAG);
    let ways = [
        Way {
            mode: Mode::Direct,
            plain: target(sims[0])?,
            stream: target(ticker.addrs()[0])?,
            pid: None,
        },
        Way {
            mode: Mode::Floor,
            plain: target(floor_addrs[0])?,
            stream: target(floor_addrs[1])?,
            pid: Some(floor_pid),
        },
        Way {
            mode: Mode::Switchyard,
            plain: target(proxy.listen)?,
            stream: target(proxy.listen)?,
            pid: Some(proxy_pid),
        },
    ];
    let bodies: Vec<Bytes> = CHAT_MODELS
        .iter()
        .map(|m| policy::chat_body(m, false))
        .collect();
    let stream_body = policy::chat_body(STREAM_MODEL, true);
    let bounds = Bounds {
        duration: opts.duration,
        max_in_flight: opts.max_in_flight,
        timeout: Duration::from_secs(5),
    };
    let sim_pid = sims_proc.pid();
    let me = std::process::id();
    // Before every point, the same load unmeasured: pools grown, connections open, nothing
    // left in flight (each loop drains before it returns).
    let prewarm = Bounds {
        duration: if opts.quick {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(500)
        },
        ..bounds
    };

    // Warm-up: connections, pools, health statistics, allocator arenas.
    let warm = Bounds {
        duration: if opts.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(1)
        },
        ..bounds
    };
    for way in &ways {
        let p = loadgen::closed_loop(&client, &way.plain, &bodies, 8, warm).await;
        if p.ok == 0 {
            return Err(format!(
                "{}: warm-up failed: {}",
                way.mode.label(),
                p.first_error.unwrap_or_default()
            ));
        }
        let s = loadgen::streams(&client, &way.stream, stream_body.clone(), 20.0, warm).await;
        if s.ok == 0 {
            return Err(format!(
                "{}: streaming warm-up failed: {}",
                way.mode.label(),
                s.first_error.unwrap_or_default()
            ));
        }
    }
    reset_sims(&client, &sims).await;
    let mut idle = HashMap::new();
    for (mode, pid) in [(Mode::Floor, floor_pid), (Mode::Switchyard, proxy_pid)] {
        idle.insert(mode, procfs::mem(pid).map_err(|e| e.to_string())?);
    }

    for &rate in &opts.rates {
        for way in &ways {
            loadgen::open_loop(&client, &way.plain, &bodies, rate, prewarm).await;
            let before = cpu(way.pid);
            let mut p = loadgen::open_loop(&client, &way.plain, &bodies, rate, bounds).await;
            let proxy_cpu = delta(before, cpu(way.pid));
            let proxy_mem = way.pid.and_then(|pid| procfs::mem(pid).ok());
            reset_sims(&client, &sims).await;
            let row = OpenRow {
                mode: way.mode,
                rate,
                latency: p.latency.summary(),
                ok: p.ok,
                errors: p.errors,
                not_sent: p.not_sent,
                proxy_cpu,
                proxy_mem,
                elapsed: p.elapsed,
                first_error: p.first_error.take(),
            };
            progress(&format!(
                "{} {rate:.0}/s: ok {} errors {} p50 {} p99 {}",
                way.mode.label(),
                row.ok,
                row.errors + row.not_sent,
                row.latency.map_or("-".into(), |s| fmt_dur(s.p50)),
                row.latency.map_or("-".into(), |s| fmt_dur(s.p99)),
            ));
            report.open.push(row);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    for way in &ways {
        loadgen::closed_loop(&client, &way.plain, &bodies, opts.conns, prewarm).await;
        let (p0, s0, h0) = (cpu(way.pid), cpu(Some(sim_pid)), cpu(Some(me)));
        let mut p = loadgen::closed_loop(&client, &way.plain, &bodies, opts.conns, bounds).await;
        let (p1, s1, h1) = (cpu(way.pid), cpu(Some(sim_pid)), cpu(Some(me)));
        reset_sims(&client, &sims).await;
        let row = MaxRow {
            mode: way.mode,
            conns: opts.conns,
            throughput: p.throughput(),
            ok: p.ok,
            errors: p.errors,
            latency: p.latency.summary(),
            elapsed: p.elapsed,
            proxy_cpu: delta(p0, p1),
            sim_cpu: delta(s0, s1),
            harness_cpu: delta(h0, h1),
            first_error: p.first_error.take(),
        };
        progress(&format!(
            "{} max: {:.0} req/s, errors {}",
            way.mode.label(),
            row.throughput,
            row.errors
        ));
        report.max.push(row);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for way in &ways {
        let rate = opts.stream_rate;
        loadgen::streams(&client, &way.stream, stream_body.clone(), rate, prewarm).await;
        let mut s = loadgen::streams(
            &client,
            &way.stream,
            stream_body.clone(),
            opts.stream_rate,
            bounds,
        )
        .await;
        let row = StreamRow {
            mode: way.mode,
            rate: opts.stream_rate,
            ok: s.ok,
            errors: s.errors,
            not_sent: s.not_sent,
            ttft: s.ttft.summary(),
            chunk: s.chunk_latency.summary(),
            client_gap: s.client_gap.summary(),
            source_gap: s.source_gap.summary(),
            stalls: s.client_gap.count_above(STALL),
            source_stalls: s.source_gap.count_above(STALL),
            first_error: s.first_error.take(),
        };
        progress(&format!(
            "{} streams: ok {} errors {} TTFT p99 {} chunk p50 {}",
            way.mode.label(),
            row.ok,
            row.errors + row.not_sent,
            row.ttft.map_or("-".into(), |s| fmt_dur(s.p99)),
            row.chunk.map_or("-".into(), |s| fmt_dur(s.p50)),
        ));
        report.stream.push(row);
    }

    let mut mem_rows = Vec::new();
    for way in ways.iter().filter(|w| w.pid.is_some()) {
        let pid = way.pid.unwrap_or_default();
        let peak = procfs::mem(pid).map_err(|e| e.to_string())?;
        mem_rows.push(MemRow {
            proxy: way.mode,
            fresh_kib: fresh.get(&way.mode).map_or(0, |m| m.rss_kib),
            idle_kib: idle.get(&way.mode).map_or(0, |m| m.rss_kib),
            peak_kib: peak.hwm_kib,
            idle_streams: Vec::new(),
        });
    }
    // The measured proxies go: the idle streams get fresh ones, whose allocator holds no
    // memory freed after the load (it would absorb the streams and hide their cost), and
    // the profiles run alone.
    drop(proxy);
    drop(floor_proc);

    if !opts.idle_counts.is_empty() {
        let idle = IdleCtx {
            client: &client,
            opts,
            dir,
            sims: &sims,
            policy_file: &policy_file,
        };
        idle.run(&mut report, &mut mem_rows).await?;
    }
    report.mem = mem_rows;

    if opts.profile_requests > 0 {
        match valgrind_version() {
            Some(version) => {
                // The sims answer both kinds with the same 8 chunks; a streaming request is
                // passed on chunk by chunk, a non-streaming one aggregated.
                let streamed_bodies: Vec<Bytes> = CHAT_MODELS
                    .iter()
                    .map(|m| policy::chat_body(m, true))
                    .collect();
                for (streamed, mode) in [
                    (false, Mode::Floor),
                    (false, Mode::Switchyard),
                    (true, Mode::Floor),
                    (true, Mode::Switchyard),
                ] {
                    let ctx = ProfileCtx {
                        client: &client,
                        dir,
                        bodies: if streamed { &streamed_bodies } else { &bodies },
                        requests: opts.profile_requests,
                        kind: if streamed {
                            "streaming"
                        } else {
                            "non-streaming"
                        },
                    };
                    let kind = ctx.kind;
                    progress(&format!("{}: callgrind profile, {kind}", mode.label()));
                    let digest = match mode {
                        Mode::Floor => ctx.floor(sims[0]).await,
                        _ => ctx.switchyard(&opts.switchyard, &policy_file).await,
                    };
                    match digest {
                        Ok(digest) => report.profile.push(ProfileRow {
                            proxy: mode,
                            streamed,
                            digest,
                        }),
                        Err(e) => report
                            .notes
                            .push(format!("{} profile failed: {e}", mode.label())),
                    }
                }
                report.notes.push(format!(
                    "profile: {version} `--tool=callgrind`, instrumentation switched on (`callgrind_control -i on`) after a warm-up and off after exactly {} requests over 4 connections, once with non-streaming and once with streaming requests (dumps `target/bench/work/callgrind.<proxy>.<kind>.out.1`); `perf stat -e instructions` is not supported in this VM",
                    opts.profile_requests
                ));
            }
            None => report
                .notes
                .push("profile skipped: valgrind is not installed".into()),
        }
    }
    drop(sims_proc);
    drop(ticker);
    Ok(report)
}

/// The idle-stream memory point.
struct IdleCtx<'a> {
    client: &'a HttpClient,
    opts: &'a Options,
    dir: &'a Path,
    sims: &'a [SocketAddr],
    policy_file: &'a Path,
}

impl IdleCtx<'_> {
    async fn run(&self, report: &mut Report, rows: &mut [MemRow]) -> Result<(), String> {
        let opts = self.opts;
        // Each proxied stream holds two descriptors in the proxy (and the sim keeps a
        // duplicate of each socket, two more there): the open-file limit caps the count.
        let cap = report.nofile.map_or(usize::MAX, |n| {
            usize::try_from(n.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX)
        });
        let counts: Vec<usize> = opts.idle_counts.iter().map(|&c| c.min(cap)).collect();
        if counts != opts.idle_counts {
            report.notes.push(format!(
                "idle streams capped at {cap}: the open-file limit here is {} per process (`ulimit -n`; the hard limit, not raisable in this container) and a proxied stream takes 2 descriptors in the proxy and 2 in the sim",
                or_unknown(report.nofile)
            ));
        }
        let idle_body = policy::chat_body(CHAT_MODELS[0], true);
        let bodies = [policy::chat_body(CHAT_MODELS[0], false)];
        let open_rate = if opts.quick { 1000.0 } else { 2000.0 };
        for row in rows.iter_mut() {
            // A fresh proxy, warmed with a few requests while the sims answer at once.
            let (_proc, pid, target) = match row.proxy {
                Mode::Floor => {
                    let (proc, addrs) = start_floor(
                        &self.sims[..1],
                        &[],
                        &self.dir.join("floor-idle.log"),
                        Duration::from_secs(20),
                    )?;
                    let pid = proc.pid();
                    (proc, pid, Target::new(addrs[0], PATH, KEY, TAG)?)
                }
                _ => {
                    let proxy = start_switchyard(
                        self.client,
                        &opts.switchyard,
                        self.dir,
                        self.policy_file,
                        &[],
                        "switchyard-idle",
                        Duration::from_secs(30),
                    )
                    .await?;
                    let pid = proxy.proc.pid();
                    (proxy.proc, pid, Target::new(proxy.listen, PATH, KEY, TAG)?)
                }
            };
            let warm = loadgen::count_loop(
                self.client,
                &target,
                &bodies,
                4,
                200,
                Duration::from_secs(5),
            )
            .await;
            if warm.ok == 0 {
                return Err(format!(
                    "{}: idle-stream warm-up failed: {}",
                    row.proxy.label(),
                    warm.first_error.unwrap_or_default()
                ));
            }
            // First content at once, then one chunk every 8 s: idle, but within the
            // policy's 10 s idle timeout.
            let slow = Behavior::ok()
                .chunks(40)
                .chunk_delay(Duration::from_secs(8));
            configure_sims(self.client, self.sims, &slow).await?;
            for &count in &counts {
                let idle_client = loadgen::client();
                let before = procfs::mem(pid).map_err(|e| e.to_string())?;
                let held = loadgen::hold_streams(
                    &idle_client,
                    &target,
                    idle_body.clone(),
                    count,
                    open_rate,
                    Duration::from_secs(30),
                )
                .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let with = procfs::mem(pid).map_err(|e| e.to_string())?;
                progress(&format!(
                    "{} {} idle streams: opened {} failed {}, RSS {} -> {} KiB",
                    row.proxy.label(),
                    count,
                    held.opened,
                    held.failed,
                    before.rss_kib,
                    with.rss_kib
                ));
                row.idle_streams.push(IdleRow {
                    requested: count,
                    opened: held.opened,
                    failed: held.failed,
                    before_kib: before.rss_kib,
                    with_kib: with.rss_kib,
                    first_error: held.first_error.clone(),
                });
                drop(held);
                drop(idle_client);
                // Let both ends close before the next measurement.
                tokio::time::sleep(Duration::from_secs(if opts.quick { 1 } else { 3 })).await;
            }
            configure_sims(self.client, self.sims, &Behavior::ok()).await?;
            reset_sims(self.client, self.sims).await;
        }
        Ok(())
    }
}

fn or_unknown(n: Option<u64>) -> String {
    n.map_or_else(|| "unknown".into(), |n| n.to_string())
}

fn valgrind_version() -> Option<String> {
    let out = Command::new("valgrind").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn callgrind_wrapper(out: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
        "--instr-atstart=no".into(),
        "--dump-instr=no".into(),
    ]
}

async fn callgrind_control(pid: u32, arg: &'static str) -> Result<(), String> {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("callgrind_control")
            .arg(arg)
            .arg(pid.to_string())
            .output()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("callgrind_control: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "callgrind_control {arg}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

struct ProfileCtx<'a> {
    client: &'a HttpClient,
    dir: &'a Path,
    bodies: &'a [Bytes],
    requests: u64,
    /// `streaming` or `non-streaming`, in the dump's file name.
    kind: &'static str,
}

impl ProfileCtx<'_> {
    async fn floor(&self, sim: SocketAddr) -> Result<Digest, String> {
        let out = self.dir.join(format!("callgrind.floor.{}.out", self.kind));
        let (proc, addrs) = start_floor(
            &[sim],
            &callgrind_wrapper(&out),
            &self.dir.join("floor.valgrind.log"),
            Duration::from_secs(120),
        )?;
        let target = Target::new(addrs[0], PATH, KEY, TAG)?;
        self.measure(proc, &target, &out).await
    }

    async fn switchyard(&self, bin: &Path, policy: &Path) -> Result<Digest, String> {
        let out = self
            .dir
            .join(format!("callgrind.switchyard.{}.out", self.kind));
        let proxy = start_switchyard(
            self.client,
            bin,
            self.dir,
            policy,
            &callgrind_wrapper(&out),
            "switchyard.valgrind",
            Duration::from_secs(120),
        )
        .await?;
        let target = Target::new(proxy.listen, PATH, KEY, TAG)?;
        self.measure(proxy.proc, &target, &out).await
    }

    async fn measure(
        &self,
        proc: ChildProc,
        target: &Target,
        out: &Path,
    ) -> Result<Digest, String> {
        let timeout = Duration::from_secs(30);
        let client = loadgen::client();
        let warm = loadgen::count_loop(&client, target, self.bodies, 4, 100, timeout).await;
        if warm.ok == 0 {
            return Err(format!(
                "warm-up failed: {}",
                warm.first_error.unwrap_or_default()
            ));
        }
        let pid = proc.pid();
        callgrind_control(pid, "--instr=on").await?;
        let p = loadgen::count_loop(&client, target, self.bodies, 4, self.requests, timeout).await;
        callgrind_control(pid, "--instr=off").await?;
        callgrind_control(pid, "--dump").await?;
        if p.errors > 0 {
            return Err(format!(
                "{} of {} profiled requests failed: {}",
                p.errors,
                self.requests,
                p.first_error.unwrap_or_default()
            ));
        }
        let dump = PathBuf::from(format!("{}.1", out.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let text = loop {
            match std::fs::read_to_string(&dump) {
                Ok(t) if t.contains("totals:") => break t,
                _ if Instant::now() > deadline => {
                    return Err(format!("no callgrind dump at {}", dump.display()));
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        drop(proc);
        Ok(profile::digest(&profile::parse(&text), p.ok, 15))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn cpu_deltas_need_both_ends() {
        let s = Duration::from_secs;
        assert_eq!(delta(Some(s(1)), Some(s(3))), Some(s(2)));
        assert_eq!(delta(None, Some(s(3))), None);
        assert_eq!(delta(Some(s(3)), Some(s(1))), Some(Duration::ZERO));
        assert!(cpu(Some(std::process::id())).is_some());
        assert!(cpu(None).is_none());
    }

    #[test]
    fn wrapper_names_the_output_and_starts_uninstrumented() {
        let w = callgrind_wrapper(Path::new("/tmp/x.out"));
        assert_eq!(w[0], "valgrind");
        assert!(w.contains(&"--callgrind-out-file=/tmp/x.out".to_owned()));
        assert!(w.contains(&"--instr-atstart=no".to_owned()));
        assert_ne!(free_addr().unwrap().port(), 0);
    }
}
