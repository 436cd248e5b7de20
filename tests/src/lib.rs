//! Helpers for the black-box tests: the real `switchyard` binary started on `127.0.0.1:0`
//! with a policy file in a temp dir, simulated providers on random ports, an HTTP client, and
//! the official Python SDKs run as subprocesses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The workspace root (for fixtures and the Python venv).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `switchyard` binary cargo built next to this test executable.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-exe> -> target/<profile>/switchyard
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("switchyard");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds the binary) or set SWITCHYARD_BIN",
        bin.display()
    );
    bin
}

/// A running `switchyard run` process.
#[derive(Debug)]
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub policy_path: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    /// What the process was started with, for [`Proxy::restart`].
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl Proxy {
    /// Writes `policy` to a temp dir and starts the binary with it.
    pub fn start(policy: &Value) -> Proxy {
        Self::start_with_env(policy, &[])
    }

    pub fn start_with_env(policy: &Value, env: &[(&str, &str)]) -> Proxy {
        Self::start_with_files(policy, env, &[])
    }

    /// Like [`Proxy::start_with_env`], but first writes `files` (name, contents) beside the
    /// policy, so the policy can name them by relative path (a provider's `ca_file`, an
    /// `api_key` file): the binary validates them before it binds.
    pub fn start_with_files(
        policy: &Value,
        env: &[(&str, &str)],
        files: &[(&str, &[u8])],
    ) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let policy_path = dir.path().join("policy.json");
        std::fs::write(&policy_path, serde_json::to_vec_pretty(policy).unwrap()).unwrap();
        Self::spawn(policy_path, dir, env)
    }

    /// Starts the binary with a policy the caller has already laid out at `policy_path`, e.g.
    /// a Kubernetes ConfigMap-style symlink that the test goes on swapping. The proxy's `dir` is
    /// then a fresh scratch directory of its own, not the policy's.
    pub fn start_at(policy_path: &Path, env: &[(&str, &str)]) -> Proxy {
        Self::spawn(policy_path.to_path_buf(), tempfile::tempdir().unwrap(), env)
    }

    fn spawn(policy_path: PathBuf, dir: tempfile::TempDir, env: &[(&str, &str)]) -> Proxy {
        Self::spawn_with_args(policy_path, dir, env, &[])
    }

    /// Like [`Proxy::start_with_env`], with extra command-line arguments (`--redis URL`,
    /// `--budgets-fail-open`, ...), which [`Proxy::restart`] passes again.
    pub fn start_with_args(policy: &Value, env: &[(&str, &str)], args: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("policy.json");
        std::fs::write(&policy_path, serde_json::to_vec_pretty(policy).unwrap()).unwrap();
        Self::spawn_with_args(policy_path, dir, env, args)
    }

    fn spawn_with_args(
        policy_path: PathBuf,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Proxy {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
        let (child, addr, admin, logs) = Self::launch(&policy_path, dir.path(), &env, &args);
        Proxy {
            child,
            addr,
            admin,
            dir,
            policy_path,
            logs,
            env,
            args,
        }
    }

    /// Starts the binary again with the same policy, spend ledger (`dir/spend.ledger`), env
    /// and arguments, as a supervisor restarts a crashed process; a process still running is
    /// killed first. The new process listens on new ports.
    pub fn restart(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let (child, addr, admin, logs) =
            Self::launch(&self.policy_path, self.dir.path(), &self.env, &self.args);
        self.child = child;
        self.addr = addr;
        self.admin = admin;
        self.logs = logs;
    }

    /// Starts `switchyard run` and waits for its listening line: the process, its proxy and
    /// admin addresses, and its stderr lines as they come.
    fn launch(
        policy_path: &Path,
        dir: &Path,
        env: &[(String, String)],
        args: &[String],
    ) -> (Child, SocketAddr, SocketAddr, Arc<Mutex<Vec<String>>>) {
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .arg("--policy")
            .arg(policy_path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin")
            .arg("127.0.0.1:0")
            .arg("--drain-timeout")
            .arg("20s")
            // Each proxy keeps its spend in its own scratch directory.
            .arg("--ledger")
            .arg(dir.join("spend.ledger"))
            .args(args)
            .env("SWITCHYARD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("switchyard listening")
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("proxy did not start; logs: {:?}", logs.lock().unwrap()));
        let v: Value = serde_json::from_str(&line).expect("JSON log line");
        let addr = v["proxy_addr"].as_str().unwrap().parse().unwrap();
        let admin = v["admin_addr"].as_str().unwrap().parse().unwrap();
        (child, addr, admin, logs)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Sends a signal by name (`TERM`, `HUP`, `KILL`) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; None if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A provider entry for a sim on loopback.
pub fn sim_provider(sim: &switchyard_sim::Sim, key_env: Option<&str>) -> Value {
    let mut p = serde_json::json!({
        "api": "openai",
        "base_url": sim.base_url(),
        "allow_private_network": true,
    });
    if let Some(env) = key_env {
        p["api_key"] = serde_json::json!({ "env": env });
    }
    p
}

/// Merges `from` into `into` key by key (objects recursively; anything else replaces).
pub fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The `providers` object for `sims` (each keyed by its id, no key required) and their ids
/// in the order given, for a default provider `order`.
pub fn sim_providers<'a>(
    sims: &[(&'a str, &switchyard_sim::Sim)],
) -> (serde_json::Map<String, Value>, Vec<&'a str>) {
    let providers = sims
        .iter()
        .map(|(id, s)| ((*id).to_string(), sim_provider(s, None)))
        .collect();
    (providers, sims.iter().map(|(id, _)| *id).collect())
}

/// A sim named `name` answering with `sequence` first, then `default`.
pub async fn start_sim(
    name: &str,
    default: switchyard_sim::Behavior,
    sequence: Vec<switchyard_sim::Behavior>,
) -> switchyard_sim::Sim {
    switchyard_sim::Sim::start(switchyard_sim::SimConfig {
        name: name.into(),
        default,
        sequence,
        ..switchyard_sim::SimConfig::default()
    })
    .await
    .unwrap()
}

/// An endpoint of `model` on `provider` with upstream model `<provider>-<model>`.
pub fn provider_endpoint(provider: &str, model: &str, prompt: f64, completion: f64) -> Value {
    endpoint(provider, &format!("{provider}-{model}"), prompt, completion)
}

/// An endpoint entry with the given prices (USD per million tokens).
pub fn endpoint(provider: &str, upstream_model: &str, prompt: f64, completion: f64) -> Value {
    serde_json::json!({
        "provider": provider,
        "upstream_model": upstream_model,
        "pricing": { "prompt": prompt, "completion": completion },
        "supported_parameters": ["temperature", "max_tokens", "stream_options", "tools", "tool_choice"],
    })
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A whole response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client()
        .request(b.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn post_json(url: &str, body: &Value) -> Answer {
    send(
        "POST",
        url,
        &[("content-type", "application/json")],
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("data:")
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                })
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The Python interpreter of the test venv (with the official SDKs installed).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python venv with the SDKs at {}: run scripts/test (it creates it) or set SWITCHYARD_TEST_PYTHON",
        venv.display()
    );
    venv
}

/// Runs a script from `tests/py/` with args; returns its stdout parsed as JSON.
pub fn run_python(script: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let path = workspace_root().join("tests/py").join(script);
    let mut cmd = Command::new(python());
    cmd.arg(&path).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A loopback port that nothing listens on right now (the OS picked it, then it was closed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `redis-server` on a free loopback port, without persistence, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts one and waits until it answers `PING`. `None` only when `redis-server` is not
    /// installed and `SWITCHYARD_SKIP_REDIS=1`; a missing server is otherwise a test failure.
    pub fn start() -> Option<RedisServer> {
        // Another process may take the port between the probe and the bind: try a few.
        for _ in 0..5 {
            let port = free_port();
            let spawned = Command::new("redis-server")
                .arg("--port")
                .arg(port.to_string())
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--save")
                .arg("")
                .arg("--appendonly")
                .arg("no")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if std::env::var("SWITCHYARD_SKIP_REDIS").as_deref() == Ok("1") {
                        eprintln!(
                            "redis-server is not installed: skipped (SWITCHYARD_SKIP_REDIS=1)"
                        );
                        return None;
                    }
                    panic!(
                        "redis-server is not installed (apt-get install redis-server); \
                         set SWITCHYARD_SKIP_REDIS=1 to skip the tests that need it"
                    );
                }
                Err(e) => panic!("cannot start redis-server: {e}"),
            };
            let mut server = RedisServer { child, port };
            if server.wait_ready(Duration::from_secs(10)) {
                return Some(server);
            }
        }
        panic!("redis-server did not start on a free port in 5 tries");
    }

    /// `redis://127.0.0.1:PORT/0`, as `--redis` takes it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Whether the server answers `PING` before `timeout`; false as soon as it exits.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        use std::io::{Read, Write};
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
                let mut reply = [0u8; 7];
                if tcp.write_all(b"PING\r\n").is_ok()
                    && tcp.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real OTLP receiver (`tests/py/otlp_receiver.py`, run with [`python`]) on free
/// loopback ports: gRPC and HTTP. Every span and metric it receives becomes one JSON line
/// in its output file. Stopped (stdin closed, then killed) on drop.
#[derive(Debug)]
pub struct OtlpReceiver {
    child: Child,
    pub grpc: u16,
    pub http: u16,
    out: tempfile::NamedTempFile,
}

impl OtlpReceiver {
    /// Starts one and waits until both servers listen.
    pub fn start() -> OtlpReceiver {
        let out = tempfile::NamedTempFile::new().unwrap();
        let script = workspace_root().join("tests/py/otlp_receiver.py");
        let mut child = Command::new(python())
            .arg(&script)
            .arg(out.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the OTLP receiver said {line:?}: {e}"));
        let port = |k: &str| u16::try_from(ports[k].as_u64().unwrap()).unwrap();
        OtlpReceiver {
            grpc: port("grpc"),
            http: port("http"),
            child,
            out,
        }
    }

    /// The proxy's environment to export to this receiver over `protocol` (`grpc` or
    /// `http/protobuf`), with metrics pushed every `metrics_interval_ms`.
    pub fn env(&self, protocol: &str, metrics_interval_ms: u64) -> Vec<(String, String)> {
        let port = if protocol == "grpc" {
            self.grpc
        } else {
            self.http
        };
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
            (
                "OTEL_METRIC_EXPORT_INTERVAL".into(),
                metrics_interval_ms.to_string(),
            ),
        ]
    }

    /// The raw output file: every record received so far, one JSON line each.
    pub fn raw(&self) -> String {
        std::fs::read_to_string(self.out.path()).unwrap()
    }

    /// Every record received so far.
    pub fn records(&self) -> Vec<Value> {
        self.raw()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until `done` holds for the records received, and returns them; panics after
    /// `timeout` with what did arrive.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.records();
            if done(&records) {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "the OTLP receiver got only {records:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        // Closing stdin asks it to stop; the kill covers a receiver that does not.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series of a scrape as `prometheus_client`'s parser read it.
#[derive(Clone, Debug, PartialEq)]
pub struct PromSample {
    /// The sample's own name (`..._total`, `..._bucket`, ...).
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// A `/metrics` text parsed by the official Python client (`tests/py/prom_parse.py`): the
/// test fails if that parser rejects it.
#[derive(Clone, Debug)]
pub struct PromScrape {
    pub text: String,
    /// Family name (as the parser names it: counters without `_total`) and type.
    pub families: Vec<(String, String)>,
    pub samples: Vec<PromSample>,
}

impl PromScrape {
    pub fn parse(text: &str) -> PromScrape {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let v = run_python("prom_parse.py", &[file.path().to_str().unwrap()], &[]);
        let mut families = Vec::new();
        let mut samples = Vec::new();
        for f in v["families"].as_array().unwrap() {
            families.push((
                f["name"].as_str().unwrap().to_string(),
                f["type"].as_str().unwrap().to_string(),
            ));
            for s in f["samples"].as_array().unwrap() {
                let value = match &s["value"] {
                    Value::String(x) => x.parse().unwrap(),
                    x => x.as_f64().unwrap(),
                };
                samples.push(PromSample {
                    name: s["name"].as_str().unwrap().to_string(),
                    labels: s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect(),
                    value,
                });
            }
        }
        PromScrape {
            text: text.to_string(),
            families,
            samples,
        }
    }

    /// The value of the series `name` whose labels are exactly `labels`; 0 when there is no
    /// such series yet (counters start at zero).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: std::collections::BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let found: Vec<&PromSample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} appears twice");
        found.first().map_or(0.0, |s| s.value)
    }

    /// The sum of every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Whether a family or a sample of this name is exposed (histogram and counter names
    /// are accepted with or without their `_bucket`/`_sum`/`_count`/`_total` suffix).
    pub fn has(&self, name: &str) -> bool {
        self.families.iter().any(|(f, _)| f == name) || self.samples.iter().any(|s| s.name == name)
    }
}

/// Scrapes the proxy's admin `/metrics` and parses it with [`PromScrape::parse`].
pub async fn scrape(proxy: &Proxy) -> PromScrape {
    let r = send("GET", &proxy.admin_url("/metrics"), &[], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    PromScrape::parse(std::str::from_utf8(&r.body).unwrap())
}

/// Runs `promtool check metrics` (the Prometheus project's own linter) on `text`. A missing
/// `promtool` is a failure that says how to install it.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: `apt-get install prometheus` provides it (.ci/run does)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}
