//! Policy hot reload: what one reload of a 250-endpoint policy (50 models x 5 endpoints)
//! costs — `switchyard_policy::compile`, then `PolicyStore::install` and
//! `Registries::reconcile`, as `Shared::reload` does after reading the file — and what a
//! storm of reloads does to requests through the whole in-process stack
//! (`switchyard_stack::proxy_with` over the canned upstream), each beside the direct call
//! in the same run.
//!
//! The storm is a thread that compiles and installs the two alternating policies in a loop,
//! as fast as it can: far more often than any real deployment reloads, so the difference to
//! the quiet run bounds what reloads can cost a request. Most of that difference is the CPU
//! the storm takes from the machine's two cores, so a control storm compiles the same
//! policies without installing them: the swap's own cost is the reload storm's difference to
//! the control. File reading and the watcher's debounce are not measured here.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::StatusCode;
use http_body_util::Full;
use serde_json::{Map, Value, json};
use switchyard_benches::{
    BenchEnv, CannedUpstream, MODEL, chat_request, collect_body, direct_request, or_exit,
    proxy_request,
};
use switchyard_core::BoxError;
use switchyard_policy::{Compiled, Format, Snapshot};
use switchyard_policy_watch::PolicyStore;
use switchyard_stack::{ProxyService, Registries, proxy_with};
use tokio::runtime::Runtime;
use tower::ServiceExt;

const MODELS: usize = 50;
const PROVIDERS: [&str; 5] = ["acme", "backup", "corvid", "delta", "ember"];

/// 50 models x 5 endpoints. The first two are the bench request's `fast-chat` and
/// `smart-chat` (acme is the only provider that denies data collection, which the request
/// asks for, so acme serves it); `rev` nudges every price, so two revisions are different
/// policies and installing one over the other is a real swap.
fn big_policy(rev: u32) -> String {
    let providers: Map<String, Value> = PROVIDERS
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut p = json!({
                "api": "openai",
                "base_url": format!("http://127.0.0.1:9/{id}/v1"),
                "api_key": { "env": format!("{}_API_KEY", id.to_uppercase()) },
                "allow_private_network": true,
            });
            if i == 0 {
                p["data_collection"] = json!("deny");
            }
            ((*id).to_string(), p)
        })
        .collect();
    let models: Map<String, Value> = (0..MODELS)
        .map(|m| {
            let name = match m {
                0 => MODEL.to_string(),
                1 => "smart-chat".to_string(),
                _ => format!("model-{m:02}"),
            };
            let endpoints: Vec<Value> = PROVIDERS
                .iter()
                .enumerate()
                .map(|(p, provider)| {
                    let prompt = 0.15 * (p + 1) as f64 + f64::from(rev) * 1e-4;
                    json!({
                        "provider": provider,
                        "upstream_model": format!("{name}-{provider}"),
                        "pricing": { "prompt": prompt, "completion": prompt * 4.0 },
                        "max_output_tokens": 16384,
                        "supported_parameters": ["tools", "tool_choice", "temperature", "max_tokens"],
                    })
                })
                .collect();
            let model = json!({
                "aliases": [format!("alias-{m:02}")],
                "context_length": 128000,
                "endpoints": endpoints,
            });
            (name, model)
        })
        .collect();
    let policy = json!({
        "providers": providers,
        "models": models,
        "routes": {
            "cheap": { "match_models": ["model-02"], "models": ["model-02", "model-03"],
                       "provider": { "sort": "price" } }
        },
        "defaults": {
            "timeouts": { "connect": "5s", "first_token": "10s", "idle": "10s", "total": "600s" },
            "breaker": { "consecutive_failures": 5, "open_base": "1s", "open_max": "8s" }
        }
    });
    or_exit(
        "serialise the reload bench policy",
        serde_json::to_string_pretty(&policy),
    )
}

fn compile(text: &str) -> Result<Compiled, String> {
    switchyard_policy::compile(text, Format::Json, Path::new("."), &BenchEnv).map_err(|diags| {
        diags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// What `Shared::reload` does once the file is read: compile, swap, reconcile.
fn reload(store: &PolicyStore, registries: &Registries, text: &str) -> Result<u64, String> {
    let generation = store.install(compile(text)?);
    registries.reconcile(&store.load());
    Ok(generation)
}

/// A thread reloading the alternating policies until stopped; or, as the control, only
/// compiling them (the same CPU taken from the requests, no swap).
struct Storm {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Result<u64, String>>,
    started: Instant,
}

impl Storm {
    fn start(
        store: Arc<PolicyStore>,
        registries: Registries,
        texts: Arc<[String; 2]>,
        swap: bool,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // Start from the revision that is not in force, so that every reload is a swap.
        let in_force = store.status().sha256.clone();
        let offset = usize::from(compile(&texts[0]).is_ok_and(|c| c.snapshot.sha256() == in_force));
        let thread = thread::spawn(move || {
            let mut reloads = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let text = &texts[(reloads as usize + offset) % 2];
                if swap {
                    reload(&store, &registries, text)?;
                } else {
                    std::hint::black_box(compile(text)?);
                }
                reloads += 1;
            }
            Ok(reloads)
        });
        Self {
            stop,
            thread,
            started: Instant::now(),
        }
    }

    /// Stops the storm; returns how many reloads it made and in how long.
    fn finish(self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        let reloads = match self.thread.join() {
            Ok(result) => or_exit("reload during the storm", result),
            Err(_) => or_exit::<u64, _>("join the storm thread", Err("it panicked")),
        };
        (reloads, elapsed)
    }
}

async fn via_proxy(svc: ProxyService<Full<Bytes>>, body: Bytes) -> Result<Bytes, BoxError> {
    let resp = svc.oneshot(proxy_request(body)).await?;
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let body = collect_body(resp).await?;
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)).into());
    }
    collect_body(resp).await
}

async fn direct(
    upstream: CannedUpstream,
    snapshot: Arc<Snapshot>,
    body: Bytes,
) -> Result<Bytes, BoxError> {
    let req = direct_request(&snapshot, body)?;
    collect_body(upstream.oneshot(req).await?).await
}

/// Counts the iterations that did not end in a whole answer: a storm that broke requests
/// would otherwise time the error path and call it fast.
fn count_failure(failures: &AtomicU64, result: Result<Bytes, BoxError>) {
    if result.is_err() {
        failures.fetch_add(1, Ordering::Relaxed);
    }
}

fn check_no_failures(what: &str, failures: &AtomicU64) {
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        or_exit::<(), _>(what, Err(format!("{failed} requests failed")));
    }
}

fn reload_cost(c: &mut Criterion) {
    let texts: Arc<[String; 2]> = Arc::new([big_policy(0), big_policy(1)]);
    let first = or_exit("compile the 250-endpoint policy", compile(&texts[0]));
    let endpoints = first.snapshot.endpoints().len();
    if endpoints != MODELS * PROVIDERS.len() {
        or_exit::<(), _>(
            "count the bench policy's endpoints",
            Err(format!("{endpoints}, expected 250")),
        );
    }
    let store = PolicyStore::fixed(first, "reload bench");
    let registries = Registries::new();
    // Alternating revisions: every install is a swap, never the identical-content no-op.
    let rev = Cell::new(1usize);
    let next = || {
        rev.set(rev.get() + 1);
        &texts[rev.get() % 2]
    };

    let mut g = c.benchmark_group("reload_250_endpoints");
    g.bench_function("compile", |b| {
        b.iter(|| or_exit("compile", compile(next())))
    });
    g.bench_function("install_reconcile", |b| {
        b.iter_batched(
            || or_exit("compile", compile(next())),
            |compiled| {
                let generation = store.install(compiled);
                registries.reconcile(&store.load());
                generation
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("compile_install_reconcile", |b| {
        b.iter(|| or_exit("reload", reload(&store, &registries, next())))
    });
    g.finish();
}

fn requests_during_reloads(c: &mut Criterion) {
    let rt = or_exit(
        "build a tokio runtime",
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    );
    let texts: Arc<[String; 2]> = Arc::new([big_policy(0), big_policy(1)]);
    let store = PolicyStore::fixed(
        or_exit("compile the 250-endpoint policy", compile(&texts[0])),
        "reload bench",
    );
    let registries = Registries::new();
    let upstream = CannedUpstream::new();
    let svc: ProxyService<Full<Bytes>> = proxy_with(store.clone(), &registries, upstream.clone());

    for (group, stream) in [
        ("reload_stack_completion", false),
        ("reload_stack_stream", true),
    ] {
        let body = chat_request(stream);
        check(&rt, &svc, &body);
        let failures = AtomicU64::new(0);
        let mut g = c.benchmark_group(group);
        g.bench_function("direct", |b| {
            b.to_async(&rt).iter(|| async {
                let snapshot = store.load();
                count_failure(
                    &failures,
                    direct(upstream.clone(), snapshot, body.clone()).await,
                );
            })
        });
        g.bench_function("proxy", |b| {
            b.to_async(&rt).iter(|| async {
                count_failure(&failures, via_proxy(svc.clone(), body.clone()).await);
            })
        });
        for (name, swap) in [("proxy_compile_storm", false), ("proxy_reload_storm", true)] {
            let generation = store.status().generation;
            let storm = Storm::start(store.clone(), registries.clone(), texts.clone(), swap);
            g.bench_function(name, |b| {
                b.to_async(&rt).iter(|| async {
                    count_failure(&failures, via_proxy(svc.clone(), body.clone()).await);
                })
            });
            let (reloads, took) = storm.finish();
            let swaps = store.status().generation - generation;
            eprintln!(
                "{group}/{name}: {reloads} compiles, {swaps} swaps in {took:.1?} ({:.0} per second)",
                reloads as f64 / took.as_secs_f64().max(1e-9)
            );
        }
        g.finish();
        check_no_failures(group, &failures);
        check(&rt, &svc, &body);
    }
}

/// One request through the stack must be a whole answer from the served model before and
/// after anything is timed.
fn check(rt: &Runtime, svc: &ProxyService<Full<Bytes>>, body: &Bytes) {
    let answer = or_exit(
        "a request through the stack",
        rt.block_on(via_proxy(svc.clone(), body.clone())),
    );
    if !String::from_utf8_lossy(&answer).contains(&format!("\"model\":\"{MODEL}\"")) {
        or_exit::<(), _>(
            "check the answer",
            Err(format!("not served by {MODEL}: {} bytes", answer.len())),
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = reload_cost, requests_during_reloads
}
criterion_main!(benches);
