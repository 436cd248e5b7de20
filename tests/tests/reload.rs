//! Hot reload end to end: the real binary, simulated providers, and a policy file that the
//! tests rewrite the ways operators and Kubernetes do (in place, temp file + rename, a
//! ConfigMap `..data` symlink swap), break (bad JSON, an unknown reference, a wrong type,
//! truncated, empty, deleted, a directory in its place) and reload on demand (SIGHUP,
//! `POST /admin/reload`).
//!
//! Every policy here sends model `m` to one sim first (`provider.order`), so the sim that
//! served a request says which policy was in force when it started. The assertions are the
//! ones an operator relies on: no request fails while the policy changes under load, a new
//! policy routes within 2 s, a refused one never routes anything, and what the proxy learned
//! about an endpoint (its breaker, its statistics, sticky sessions) survives a reload that
//! keeps the endpoint, as does budget spend, while a new budget cap applies at once.
//!
//! The binary's watcher debounces directory events by 200 ms and also polls every 5 s; the
//! 2 s bound can only be met through the events, so a watcher that went deaf fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard_sim::{Behavior, Sim, SimConfig, expected_text};
use switchyard_tests::{HttpClient, Proxy, client, endpoint, send, sim_provider, sse_data};

const CHAT: &str = "/v1/chat/completions";

/// How long a rewritten policy may take before it routes requests.
const RELOAD_WITHIN: Duration = Duration::from_secs(2);

/// What the healthy sims answer: five chunks, 20 ms apart when streamed, so streams in flight
/// straddle reloads.
fn behavior() -> Behavior {
    Behavior::ok()
        .chunks(5)
        .chunk_delay(Duration::from_millis(20))
}

async fn sim(name: &str, default: Behavior) -> Sim {
    // Upstream model `<name>-p` (model `p`, for probes) answers at once.
    Sim::start(
        SimConfig::named(name)
            .default_behavior(default)
            .model(format!("{name}-p"), Behavior::ok()),
    )
    .await
    .unwrap()
}

/// What a healthy sim answers for a request of policy model `model`.
fn answer_of(model: &str) -> Behavior {
    if model == "p" {
        Behavior::ok()
    } else {
        behavior()
    }
}

fn other(first: &str) -> &'static str {
    if first == "a" { "b" } else { "a" }
}

/// Models `m` and `p` (instant answers, for probes) on sims a and b, tried in the order
/// `first`, then the other. Model `side` (never requested) has a price that depends on `rev`,
/// so every revision is new content.
fn policy(a: &Sim, b: &Sim, first: &str, rev: u32) -> Value {
    json!({
        "providers": { "a": sim_provider(a, None), "b": sim_provider(b, None) },
        "models": {
            "m": { "endpoints": [ endpoint("a", "a-m", 1.0, 1.0), endpoint("b", "b-m", 1.0, 1.0) ] },
            "p": { "endpoints": [ endpoint("a", "a-p", 1.0, 1.0), endpoint("b", "b-p", 1.0, 1.0) ] },
            "side": { "endpoints": [ endpoint("a", "a-side", 1.0 + f64::from(rev) / 1000.0, 1.0) ] }
        },
        "defaults": {
            "provider": { "order": [first, other(first)] },
            "timeouts": { "connect": "1s", "first_token": "3s", "idle": "3s", "total": "15s" },
            "retry": { "backoff_base": "20ms", "backoff_max": "80ms", "budget_min_per_s": 100 }
        }
    })
}

fn pretty(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The watcher takes its baseline fingerprint just after the listeners are up, and nothing
/// says when: a write before that would become the baseline and never be reported.
async fn settle_watcher() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

// ---------------------------------------------------------------------------------------
// Requests and what a complete answer is.

/// One chat request for `model` on `client`. Ok(the provider that served it) when the answer is
/// 200 and complete: exactly the text that provider's sim generates, and for a stream one
/// finish chunk, no error event and `[DONE]` last. Err(what was wrong) otherwise.
async fn chat_once(
    client: &HttpClient,
    url: &str,
    model: &str,
    stream: bool,
) -> Result<String, String> {
    let body = json!({
        "model": model,
        "stream": stream,
        "messages": [{ "role": "user", "content": "hello" }],
    });
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        let provider = resp
            .headers()
            .get("x-switchyard-provider")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let raw = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{status} body broken: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, provider, raw))
    };
    let (status, provider, raw) = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no complete answer within 10 s".to_string())??;
    let text = String::from_utf8_lossy(&raw);
    if status != 200 {
        return Err(format!("{status}: {text}"));
    }
    let provider = provider.ok_or_else(|| format!("no x-switchyard-provider: {text}"))?;
    let got = if stream {
        streamed_text(&raw)?
    } else {
        let v: Value =
            serde_json::from_slice(&raw).map_err(|e| format!("not JSON ({e}): {text}"))?;
        if v["provider"] != provider.as_str() {
            return Err(format!(
                "header says {provider}, body says {}",
                v["provider"]
            ));
        }
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let want = expected_text(&provider, &answer_of(model));
    if got != want {
        return Err(format!(
            "incomplete answer from {provider}: {got:?}, want {want:?}"
        ));
    }
    Ok(provider)
}

/// The content of a streamed answer that ended well; Err if it did not.
fn streamed_text(raw: &[u8]) -> Result<String, String> {
    let events = sse_data(raw);
    let Some((last, rest)) = events.split_last() else {
        return Err("empty stream".into());
    };
    if last != "[DONE]" {
        return Err(format!("stream did not end with [DONE]: {events:?}"));
    }
    let mut text = String::new();
    let mut finishes = 0;
    for data in rest {
        let v: Value =
            serde_json::from_str(data).map_err(|e| format!("non-JSON event ({e}): {data}"))?;
        if v.get("error").is_some() {
            return Err(format!("error event: {data}"));
        }
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        finishes += usize::from(v["choices"][0]["finish_reason"].is_string());
    }
    if finishes != 1 {
        return Err(format!("{finishes} finish chunks: {events:?}"));
    }
    Ok(text)
}

/// The provider that served one complete request; panics on anything else.
async fn served(proxy: &Proxy, stream: bool) -> String {
    chat_once(&client(), &proxy.url(CHAT), "m", stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------
// The admin view.

async fn policy_status(proxy: &Proxy) -> Value {
    let r = send("GET", &proxy.admin_url("/admin/policy"), &[], Vec::new()).await;
    assert_eq!(r.status, 200);
    r.json()
}

/// Polls `/admin/policy` until `done` holds; panics with the last status after `within`.
async fn wait_status(
    proxy: &Proxy,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let st = policy_status(proxy).await;
        if done(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {within:?}: {st:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn generation(st: &Value) -> u64 {
    st["generation"].as_u64().unwrap()
}

fn reloads(st: &Value) -> u64 {
    st["reloads_total"].as_u64().unwrap()
}

fn failures(st: &Value) -> u64 {
    st["reload_failures_total"].as_u64().unwrap()
}

/// The messages of `last_error`, one per line; empty when there is none.
fn last_error(st: &Value) -> String {
    st["last_error"]["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|l| l.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// One endpoint's entry in `/admin/providers`, if the policy in force has it.
async fn endpoint_view(proxy: &Proxy, id: &str) -> Option<Value> {
    let v = send("GET", &proxy.admin_url("/admin/providers"), &[], Vec::new())
        .await
        .json();
    v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == id)
        .cloned()
}

async fn endpoint_entry(proxy: &Proxy, id: &str) -> Value {
    endpoint_view(proxy, id)
        .await
        .unwrap_or_else(|| panic!("{id} not in /admin/providers"))
}

/// Samples (attempts measured) in an endpoint's statistics; 0 when it has none.
fn samples(entry: &Value) -> u64 {
    entry["stats"]["samples"].as_u64().unwrap_or(0)
}

/// The entry of endpoint `id` once its statistics count `n` samples. The summary behind them
/// is refreshed at most every 250 ms, so a recent attempt may not be counted yet.
async fn wait_samples(proxy: &Proxy, id: &str, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let entry = endpoint_entry(proxy, id).await;
        let seen = samples(&entry);
        assert!(seen <= n, "{id}: {seen} samples, want {n}: {entry:#}");
        if seen == n {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: {seen} samples, want {n}: {entry:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Writing the policy file.

/// The policy file and the directory around it, changed the ways real deployments change it.
///
/// It starts laid out as the kubelet mounts a ConfigMap: `..<timestamp>/policy.json` with
/// the content, `..data -> ..<timestamp>`, and `policy.json -> ..data/policy.json`.
struct PolicyDir {
    root: PathBuf,
    versions: u32,
}

impl PolicyDir {
    fn configmap(root: &Path, content: &[u8]) -> Self {
        let mut dir = Self {
            root: root.to_path_buf(),
            versions: 0,
        };
        let version = dir.new_version(content);
        symlink(&version, root.join("..data")).unwrap();
        symlink("..data/policy.json", dir.path()).unwrap();
        dir
    }

    /// The path the proxy is started with.
    fn path(&self) -> PathBuf {
        self.root.join("policy.json")
    }

    fn is_symlink(&self) -> bool {
        fs::symlink_metadata(self.path())
            .unwrap()
            .file_type()
            .is_symlink()
    }

    /// A new `..<timestamp>` directory holding `content`; returns its name.
    fn new_version(&mut self, content: &[u8]) -> String {
        self.versions += 1;
        let name = format!("..2026_11_21_10_00_00.{:09}", self.versions);
        fs::create_dir(self.root.join(&name)).unwrap();
        fs::write(self.root.join(&name).join("policy.json"), content).unwrap();
        name
    }

    /// Open, truncate, write, close: the same inode, as `cat > policy.json` does.
    fn write_in_place(&self, content: &[u8]) {
        // Through the symlink the write would land in a version directory, where no
        // directory watch on the policy's directory can see it.
        assert!(!self.is_symlink(), "in-place write into a ConfigMap layout");
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path())
            .unwrap();
        f.write_all(content).unwrap();
    }

    /// A temp file beside it renamed over it, as editors and config tools do. Replaces the
    /// ConfigMap symlink with a plain file when there is one.
    fn write_rename(&self, content: &[u8]) {
        let tmp = self.root.join("policy.json.tmp");
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, self.path()).unwrap();
    }

    /// The kubelet's atomic update: a new version directory, a `..data_tmp` symlink to it
    /// renamed over `..data`, the old version removed. `policy.json` itself is untouched.
    fn swap_data(&mut self, content: &[u8]) {
        assert!(
            self.is_symlink(),
            "a ..data swap is invisible through a plain file"
        );
        self.flip_data(content);
    }

    /// From a plain file back to the ConfigMap layout: a new `..data` version, then a
    /// `policy.json -> ..data/policy.json` symlink renamed over the file.
    fn relink(&mut self, content: &[u8]) {
        assert!(!self.is_symlink());
        self.flip_data(content);
        let tmp = self.root.join("policy.json.link");
        symlink("..data/policy.json", &tmp).unwrap();
        fs::rename(&tmp, self.path()).unwrap();
    }

    fn flip_data(&mut self, content: &[u8]) {
        let data = self.root.join("..data");
        let old = fs::read_link(&data).unwrap();
        let version = self.new_version(content);
        let tmp = self.root.join("..data_tmp");
        symlink(&version, &tmp).unwrap();
        fs::rename(&tmp, &data).unwrap();
        fs::remove_dir_all(self.root.join(old)).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// 1. A hundred rewrites under load.

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    completions: AtomicUsize,
    streams: AtomicUsize,
    by_a: AtomicUsize,
    by_b: AtomicUsize,
    failed: AtomicUsize,
    /// The first few failures, for the assertion message.
    failures: Mutex<Vec<String>>,
}

/// Requests one after another on one keep-alive client until `stop`, at most `limit` of them.
async fn load(url: String, stream: bool, stop: Arc<AtomicBool>, tally: Arc<Tally>, limit: usize) {
    let client = client();
    let started = Instant::now();
    for _ in 0..limit {
        if stop.load(Ordering::Acquire) {
            break;
        }
        match chat_once(&client, &url, "m", stream).await {
            Ok(provider) => {
                let by = if provider == "a" {
                    &tally.by_a
                } else {
                    &tally.by_b
                };
                by.fetch_add(1, Ordering::Relaxed);
                let kind = if stream {
                    &tally.streams
                } else {
                    &tally.completions
                };
                kind.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                let mut failures = tally.failures.lock().unwrap();
                if failures.len() < 10 {
                    failures.push(format!(
                        "at {:?} (stream: {stream}): {e}",
                        started.elapsed()
                    ));
                }
            }
        }
        if !stream {
            // A steady load, not a flood: two shared cores also run the proxy and the sims.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_rewrites_under_load_fail_no_request_and_each_routes_within_2s() {
    let a = sim("a", behavior()).await;
    let b = sim("b", behavior()).await;
    let tmp = tempfile::tempdir().unwrap();
    let content = |first: &str, rev: u32| pretty(&policy(&a, &b, first, rev));
    let mut dir = PolicyDir::configmap(tmp.path(), &content("a", 0));
    let proxy = Proxy::start_at(&dir.path(), &[]);
    settle_watcher().await;
    let g0 = generation(&policy_status(&proxy).await);
    assert_eq!(served(&proxy, false).await, "a");

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(load(
                proxy.url(CHAT),
                i % 2 == 0,
                stop.clone(),
                tally.clone(),
                5_000,
            ))
        })
        .collect();

    let url = proxy.url(CHAT);
    let probe = client();
    let storm = Instant::now();
    let mut took = Vec::new();
    for i in 0..100u32 {
        let first = if i % 2 == 0 { "b" } else { "a" };
        let text = content(first, i + 1);
        // The cycle starts and ends in the ConfigMap layout: swap, then a plain file by
        // rename, rewritten in place, then symlinked back.
        let how = match i % 4 {
            0 => "..data swap",
            1 => "rename",
            2 => "in place",
            _ => "relink",
        };
        let written = Instant::now();
        match i % 4 {
            0 => dir.swap_data(&text),
            1 => dir.write_rename(&text),
            2 => dir.write_in_place(&text),
            _ => dir.relink(&text),
        }
        // Poll which sim serves until the new one does.
        loop {
            let by = chat_once(&probe, &url, "p", false)
                .await
                .unwrap_or_else(|e| panic!("probe after rewrite {i} ({how}): {e}"));
            if by == first {
                break;
            }
            assert!(
                written.elapsed() < RELOAD_WITHIN,
                "rewrite {i} ({how}) not in force after {:?}: still served by {by}",
                written.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        took.push(written.elapsed());
        let want = g0 + u64::from(i) + 1;
        let st = wait_status(&proxy, Duration::from_secs(1), "generation", |st| {
            generation(st) >= want
        })
        .await;
        assert_eq!(generation(&st), want, "rewrite {i} ({how}): {st:#}");
        assert_eq!(st["sha256"], sha_hex(&text), "rewrite {i} ({how})");
        // From now on every request follows the new policy, streamed or not.
        for stream in [true, false] {
            let by = chat_once(&probe, &url, "p", stream).await.unwrap();
            assert_eq!(by, first, "rewrite {i} ({how}), stream: {stream}");
        }
    }
    let storm = storm.elapsed();
    stop.store(true, Ordering::Release);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("a load task did not stop")
            .unwrap();
    }

    let failed = tally.failed.load(Ordering::Relaxed);
    let completions = tally.completions.load(Ordering::Relaxed);
    let streams = tally.streams.load(Ordering::Relaxed);
    let (by_a, by_b) = (
        tally.by_a.load(Ordering::Relaxed),
        tally.by_b.load(Ordering::Relaxed),
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the reload storm: {:#?}",
        failed + completions + streams,
        tally.failures.lock().unwrap()
    );
    // The load really ran through the storm, and both policies served it.
    assert!(
        completions >= 200 && streams >= 200,
        "{completions} completions, {streams} streams"
    );
    assert!(by_a >= 50 && by_b >= 50, "a served {by_a}, b served {by_b}");

    let st = policy_status(&proxy).await;
    assert_eq!(generation(&st), g0 + 100, "{st:#}");
    assert!(st["last_error"].is_null(), "{st:#}");
    assert!(reloads(&st) >= 100, "{st:#}");
    took.sort();
    eprintln!(
        "reload storm: 100 rewrites in {storm:?}; write to new routing p50 {:?}, p90 {:?}, max {:?}; \
         load: {completions} completions + {streams} streams, none failed; reload failures {}",
        took[49],
        took[89],
        took[99],
        failures(&st)
    );
}

// ---------------------------------------------------------------------------------------
// 2. Broken files are refused; the last good policy keeps routing.

/// How a test breaks the policy file.
enum Breakage {
    Write(Vec<u8>),
    Delete,
    /// A directory where the file was: unreadable even for root.
    Directory,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_policy_file_is_refused_and_the_last_good_policy_keeps_routing() {
    let a = sim("a", behavior()).await;
    let b = sim("b", behavior()).await;
    let proxy = Proxy::start(&policy(&a, &b, "a", 0));
    settle_watcher().await;
    let path = proxy.policy_path.clone();
    let sims = |id: &str| if id == "a" { &a } else { &b };

    let valid = pretty(&policy(&a, &b, "b", 1));
    let mut unknown = policy(&a, &b, "b", 1);
    unknown["models"]["m"]["endpoints"][1]["provider"] = json!("nope");
    let mut wrong_type = policy(&a, &b, "b", 1);
    wrong_type["defaults"]["retry"]["max_attempts"] = json!("three");
    let cases = [
        (
            "invalid JSON",
            Breakage::Write(br#"{"providers": {"a": }"#.to_vec()),
            "invalid JSON: expected value at line 1 column 21",
        ),
        (
            "unknown provider",
            Breakage::Write(pretty(&unknown)),
            "models.m.endpoints[1].provider: unknown provider \"nope\"",
        ),
        (
            "wrong type",
            Breakage::Write(pretty(&wrong_type)),
            "defaults.retry.max_attempts: invalid type: string \"three\"",
        ),
        (
            "truncated",
            Breakage::Write(valid[..valid.len() / 2].to_vec()),
            "invalid JSON: EOF while parsing",
        ),
        (
            "empty",
            Breakage::Write(Vec::new()),
            "invalid JSON: EOF while parsing a value at line 1 column 0",
        ),
        ("deleted", Breakage::Delete, "No such file or directory"),
        ("a directory", Breakage::Directory, "Is a directory"),
    ];

    let mut first = "a";
    let mut rev = 0;
    for (name, breakage, expected) in cases {
        let before = policy_status(&proxy).await;
        assert!(before["last_error"].is_null(), "{before:#}");
        match &breakage {
            Breakage::Write(bytes) => fs::write(&path, bytes).unwrap(),
            Breakage::Delete => fs::remove_file(&path).unwrap(),
            Breakage::Directory => {
                fs::remove_file(&path).unwrap();
                fs::create_dir(&path).unwrap();
            }
        }
        let st = wait_status(&proxy, RELOAD_WITHIN, name, |st| {
            failures(st) > failures(&before)
        })
        .await;
        assert_eq!(failures(&st), failures(&before) + 1, "{name}: {st:#}");
        assert_eq!(generation(&st), generation(&before), "{name}: {st:#}");
        assert_eq!(st["sha256"], before["sha256"], "{name}");
        let error = last_error(&st);
        assert!(error.contains(expected), "{name}: last_error {error:?}");
        assert!(st["last_error"]["at"].is_string(), "{name}: {st:#}");

        // The last good policy keeps routing: the sim it does not prefer gets nothing.
        let idle = sims(other(first));
        let idle_calls = idle.call_count();
        for stream in [false, true, false] {
            assert_eq!(served(&proxy, stream).await, first, "{name}");
        }
        assert_eq!(idle.call_count(), idle_calls, "{name}");

        // The next valid write is picked up and clears the error.
        if matches!(breakage, Breakage::Directory) {
            fs::remove_dir(&path).unwrap();
        }
        first = other(first);
        rev += 1;
        let text = pretty(&policy(&a, &b, first, rev));
        fs::write(&path, &text).unwrap();
        let st = wait_status(&proxy, RELOAD_WITHIN, name, |st| {
            generation(st) > generation(&before)
        })
        .await;
        assert_eq!(generation(&st), generation(&before) + 1, "{name}: {st:#}");
        assert_eq!(st["sha256"], sha_hex(&text), "{name}");
        assert!(st["last_error"].is_null(), "{name}: {st:#}");
        assert_eq!(served(&proxy, false).await, first, "{name}");
        assert_eq!(served(&proxy, true).await, first, "{name}");
    }
    let st = policy_status(&proxy).await;
    assert_eq!(failures(&st), 7, "{st:#}");
    assert_eq!(generation(&st), 8, "{st:#}");
}

// ---------------------------------------------------------------------------------------
// 3. SIGHUP and POST /admin/reload.

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_admin_reload_reload_on_demand() {
    let a = sim("a", behavior()).await;
    let b = sim("b", behavior()).await;
    // The policy path is a symlink into another directory: the watch on the policy's
    // directory sees no event when the target is rewritten, and the 5 s poll is too slow for
    // the bounds below, so only an on-demand reload can explain a prompt change.
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("etc");
    let store = tmp.path().join("store");
    fs::create_dir(&watched).unwrap();
    fs::create_dir(&store).unwrap();
    let real = store.join("policy.json");
    fs::write(&real, pretty(&policy(&a, &b, "a", 0))).unwrap();
    symlink(&real, watched.join("policy.json")).unwrap();
    let proxy = Proxy::start_at(&watched.join("policy.json"), &[]);
    settle_watcher().await;

    // The file is read once more right after the watcher starts (so no write between the
    // first load and the watch is missed): that re-read is the first reload counted.
    let st = policy_status(&proxy).await;
    assert_eq!((generation(&st), reloads(&st), failures(&st)), (1, 1, 0));
    assert_eq!(
        st["source"],
        watched.join("policy.json").display().to_string()
    );

    // An unchanged file: the watcher has nothing to report, so the count moves only because
    // SIGHUP reloaded; identical content is not a new generation.
    proxy.signal("HUP");
    let st = wait_status(&proxy, RELOAD_WITHIN, "SIGHUP reload", |st| {
        reloads(st) == 2
    })
    .await;
    assert_eq!((generation(&st), failures(&st)), (1, 0), "{st:#}");
    let r = send("POST", &proxy.admin_url("/admin/reload"), &[], Vec::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        (generation(&v), reloads(&v), failures(&v)),
        (1, 3, 0),
        "{v:#}"
    );

    // New content, then SIGHUP: in force well before the poll could have noticed.
    let text = pretty(&policy(&a, &b, "b", 1));
    fs::write(&real, &text).unwrap();
    proxy.signal("HUP");
    let st = wait_status(&proxy, Duration::from_secs(1), "SIGHUP generation", |st| {
        generation(st) == 2
    })
    .await;
    assert_eq!(st["sha256"], sha_hex(&text));
    assert_eq!(served(&proxy, false).await, "b");

    // A bad file, then SIGHUP: refused, with the field path; b keeps serving.
    let mut bad = policy(&a, &b, "a", 2);
    bad["models"]["m"]["endpoints"][0]["provider"] = json!("nope");
    fs::write(&real, pretty(&bad)).unwrap();
    proxy.signal("HUP");
    let st = wait_status(&proxy, Duration::from_secs(1), "SIGHUP refusal", |st| {
        failures(st) >= 1
    })
    .await;
    assert_eq!(generation(&st), 2, "{st:#}");
    let path = "models.m.endpoints[0].provider: unknown provider \"nope\"";
    assert!(last_error(&st).contains(path), "{st:#}");
    assert_eq!(served(&proxy, true).await, "b");

    // The same file through the admin endpoint: 422 with the errors, nothing swapped.
    let r = send("POST", &proxy.admin_url("/admin/reload"), &[], Vec::new()).await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(last_error(&v).contains(path), "{v:#}");
    assert!(failures(&v) >= 2, "{v:#}");
    assert_eq!(generation(&v), 2, "{v:#}");
    assert_eq!(served(&proxy, false).await, "b");

    // A good file through the admin endpoint: in force when the answer comes, so the very
    // next request follows it.
    let text = pretty(&policy(&a, &b, "a", 3));
    fs::write(&real, &text).unwrap();
    let r = send("POST", &proxy.admin_url("/admin/reload"), &[], Vec::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(generation(&v), 3, "{v:#}");
    assert_eq!(v["sha256"], sha_hex(&text));
    assert!(v["last_error"].is_null(), "{v:#}");
    let a_calls = a.call_count();
    assert_eq!(served(&proxy, false).await, "a");
    assert_eq!(served(&proxy, true).await, "a");
    assert_eq!(a.call_count(), a_calls + 2);

    // Reload is a POST.
    let r = send("GET", &proxy.admin_url("/admin/reload"), &[], Vec::new()).await;
    assert_eq!(r.status, 405, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(generation(&policy_status(&proxy).await), 3);
}

// ---------------------------------------------------------------------------------------
// 4. Long-lived state survives a reload that keeps its endpoint.

/// Model `m` on a then b (a route orders them), model `s` on b and c at one price (balanced,
/// for sticky sessions), model `side` on c with a `rev`-dependent price. Without `with_a`,
/// `m` has no endpoint on a.
fn breaker_policy(a: &Sim, b: &Sim, c: &Sim, rev: u32, with_a: bool) -> Value {
    let mut m = vec![endpoint("b", "b-m", 1.0, 1.0)];
    if with_a {
        m.insert(0, endpoint("a", "a-m", 1.0, 1.0));
    }
    json!({
        "providers": {
            "a": sim_provider(a, None), "b": sim_provider(b, None), "c": sim_provider(c, None)
        },
        "models": {
            "m": { "endpoints": m },
            "s": { "endpoints": [ endpoint("b", "b-s", 1.0, 1.0), endpoint("c", "c-s", 1.0, 1.0) ] },
            "side": { "endpoints": [ endpoint("c", "c-side", 2.0 + f64::from(rev) / 100.0, 2.0) ] }
        },
        "routes": {
            "primary": { "match_models": ["m"], "models": ["m"], "provider": { "order": ["a", "b"] } }
        },
        "defaults": {
            "timeouts": { "connect": "1s", "first_token": "3s", "idle": "3s", "total": "15s" },
            "retry": {
                "same_endpoint_retries": 0, "backoff_base": "20ms", "backoff_max": "80ms",
                "budget_min_per_s": 100
            },
            // Long enough that the breaker cannot close by itself while the test looks.
            "breaker": { "consecutive_failures": 3, "open_base": "60s", "open_max": "60s" }
        }
    })
}

async fn ask_m(proxy: &Proxy) -> (String, String) {
    let r = switchyard_tests::post_json(
        &proxy.url(CHAT),
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    (
        r.header("x-switchyard-provider").unwrap().to_string(),
        r.header("x-switchyard-attempts").unwrap().to_string(),
    )
}

async fn ask_session(proxy: &Proxy, session: &str) -> String {
    let r = switchyard_tests::post_json(
        &proxy.url(CHAT),
        &json!({"model": "s", "session_id": session, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.header("x-switchyard-provider").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_breaker_health_and_sessions_survive_a_reload_that_keeps_their_endpoint() {
    let a = sim("a", Behavior::ok().status(500)).await;
    let b = sim("b", behavior()).await;
    let c = sim("c", behavior()).await;
    let proxy = Proxy::start(&breaker_policy(&a, &b, &c, 0, true));
    settle_watcher().await;
    let path = proxy.policy_path.clone();

    // Three failures on a open its breaker; b serves each request.
    for _ in 0..3 {
        assert_eq!(ask_m(&proxy).await, ("b".into(), "2".into()));
    }
    assert_eq!(a.call_count(), 3);
    wait_samples(&proxy, "a/m", 3).await;
    // Taken before the request, so that the time measured later covers the server's.
    let read_at = Instant::now();
    let a_before = endpoint_entry(&proxy, "a/m").await;
    let b_before = wait_samples(&proxy, "b/m", 3).await;
    assert_eq!(a_before["stats"]["failures"], 3, "{a_before:#}");
    assert_eq!(a_before["breaker"]["state"], "open", "{a_before:#}");
    let open_for = a_before["breaker"]["open_for_ms"].as_u64().unwrap();
    // The first open period is jittered within [open_base / 2, open_base].
    assert!(open_for > 25_000, "{a_before:#}");
    // A sticky session on model s (b and c at one price: one of them by chance).
    let sticky = ask_session(&proxy, "s-1").await;
    for _ in 0..3 {
        assert_eq!(ask_session(&proxy, "s-1").await, sticky);
    }

    // A reload that changes only another model's price.
    let g = generation(&policy_status(&proxy).await);
    fs::write(&path, pretty(&breaker_policy(&a, &b, &c, 1, true))).unwrap();
    wait_status(&proxy, RELOAD_WITHIN, "price change", |st| {
        generation(st) == g + 1
    })
    .await;

    // Right after: the breaker is still open, on the same timer, and the statistics are
    // the same ones.
    let a_after = endpoint_entry(&proxy, "a/m").await;
    assert_eq!(a_after["breaker"]["state"], "open", "{a_after:#}");
    // Neither restarted nor reset: what is left is what was left, less the time that passed.
    let still = a_after["breaker"]["open_for_ms"].as_u64().unwrap();
    let passed = u64::try_from(read_at.elapsed().as_millis()).unwrap();
    assert!(
        still <= open_for && open_for - still <= passed + 2,
        "{open_for} ms left, {passed} ms later {still} ms: {a_after:#}"
    );
    assert_eq!(
        a_after["breaker"]["consecutive_failures"],
        a_before["breaker"]["consecutive_failures"]
    );
    assert_eq!(a_after["stats"], a_before["stats"]);
    assert_eq!(
        endpoint_entry(&proxy, "b/m").await["stats"],
        b_before["stats"]
    );

    // Requests still avoid a, and b's statistics grow from where they were.
    for _ in 0..5 {
        assert_eq!(ask_m(&proxy).await, ("b".into(), "1".into()));
    }
    assert_eq!(
        a.call_count(),
        3,
        "a request reached the endpoint whose breaker is open"
    );
    wait_samples(&proxy, "b/m", 3 + 5).await;
    // Without stickiness eight answers from the same endpoint would be a 1-in-256 chance.
    for _ in 0..8 {
        assert_eq!(
            ask_session(&proxy, "s-1").await,
            sticky,
            "session moved after a reload"
        );
    }

    // The control: a reload that drops a/m drops its state, so one that brings it back
    // starts it fresh — what survived above survived because the id was kept.
    fs::write(&path, pretty(&breaker_policy(&a, &b, &c, 2, false))).unwrap();
    wait_status(&proxy, RELOAD_WITHIN, "a/m removed", |st| {
        generation(st) == g + 2
    })
    .await;
    assert!(endpoint_view(&proxy, "a/m").await.is_none());
    fs::write(&path, pretty(&breaker_policy(&a, &b, &c, 3, true))).unwrap();
    wait_status(&proxy, RELOAD_WITHIN, "a/m back", |st| {
        generation(st) == g + 3
    })
    .await;
    let fresh = endpoint_entry(&proxy, "a/m").await;
    assert_eq!(fresh["breaker"]["state"], "closed", "{fresh:#}");
    assert_eq!(samples(&fresh), 0, "{fresh:#}");
    assert_eq!(ask_m(&proxy).await, ("b".into(), "2".into()));
    assert_eq!(a.call_count(), 4);
}

// ---------------------------------------------------------------------------------------
// 5. Spend survives a reload; a new cap applies at once.

/// [`policy`] with `m` on a first at prices where one request costs cents (far above the
/// ledger's nano-dollar rounding), under a global daily budget `team` of `daily_usd`.
fn budget_policy(a: &Sim, b: &Sim, rev: u32, daily_usd: f64) -> Value {
    let mut p = policy(a, b, "a", rev);
    p["models"]["m"]["endpoints"][0]["pricing"] = json!({ "prompt": 1000.0, "completion": 3000.0 });
    p["budgets"] = json!([{ "id": "team", "scope": "global", "daily_usd": daily_usd }]);
    p
}

/// The daily row of budget `team` once nothing is reserved any more.
async fn team_spend(proxy: &Proxy) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = send("GET", &proxy.admin_url("/admin/budgets"), &[], Vec::new())
            .await
            .json();
        let row = v["budgets"]
            .as_array()
            .unwrap_or_else(|| panic!("no budgets in {v}"))
            .iter()
            .find(|r| r["budget"] == "team" && r["window"] == "daily")
            .unwrap_or_else(|| panic!("no team/daily row in {v}"))
            .clone();
        if row["reserved_usd"].as_f64() == Some(0.0) {
            return row;
        }
        assert!(Instant::now() < deadline, "still reserved: {row}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spent(row: &Value) -> f64 {
    row["spent_usd"]
        .as_f64()
        .unwrap_or_else(|| panic!("no spent_usd in {row}"))
}

async fn ask_m_capped(proxy: &Proxy) -> switchyard_tests::Answer {
    switchyard_tests::post_json(
        &proxy.url(CHAT),
        &json!({"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn budget_spend_survives_a_reload_and_a_lowered_cap_applies_at_once() {
    let a = sim("a", behavior()).await;
    let b = sim("b", behavior()).await;
    let proxy = Proxy::start(&budget_policy(&a, &b, 0, 10.0));
    settle_watcher().await;
    let path = proxy.policy_path.clone();
    let reload_to = |policy: Value, want: u64| {
        fs::write(&path, pretty(&policy)).unwrap();
        wait_status(&proxy, RELOAD_WITHIN, "budget policy", move |st| {
            generation(st) == want
        })
    };

    for _ in 0..3 {
        let r = ask_m_capped(&proxy).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let before = team_spend(&proxy).await;
    let three = spent(&before);
    assert!(three > 0.01, "{before}");

    // A reload that leaves the budget alone keeps what was spent, to the nano-dollar.
    reload_to(budget_policy(&a, &b, 1, 10.0), 2).await;
    let row = team_spend(&proxy).await;
    assert_eq!(row["spent_usd"], before["spent_usd"], "{row}");
    assert_eq!(row["cap_usd"], 10.0, "{row}");
    // And goes on counting from there: one more identical request costs a third of three.
    let r = ask_m_capped(&proxy).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let four = spent(&team_spend(&proxy).await);
    assert!(
        (four - three * 4.0 / 3.0).abs() < 1e-6,
        "{three} then {four}"
    );

    // A reload that lowers the cap to what is spent: the same spend, and nothing more admitted.
    let calls = a.call_count() + b.call_count();
    reload_to(budget_policy(&a, &b, 2, four), 3).await;
    let row = team_spend(&proxy).await;
    assert_eq!(spent(&row), four, "{row}");
    assert_eq!(row["cap_usd"], four, "{row}");
    let r = ask_m_capped(&proxy).await;
    assert_eq!(r.status, 402, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["error"]["type"], "budget_exceeded", "{v}");
    assert_eq!(v["error"]["metadata"]["budget"], "team", "{v}");
    assert_eq!(
        a.call_count() + b.call_count(),
        calls,
        "a request over the cap was sent"
    );

    // Raised again: admitted again, the spend still the one from before the reloads.
    reload_to(budget_policy(&a, &b, 3, 10.0), 4).await;
    let r = ask_m_capped(&proxy).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let five = spent(&team_spend(&proxy).await);
    assert!(
        (five - three * 5.0 / 3.0).abs() < 1e-6,
        "{three} then {five}"
    );
}
