//! The routing decision on the hot path: `Selector::plan` over a policy of 50 models x 5
//! endpoints with live health for every endpoint, measured beside the direct call it replaces
//! (look the model up, clone its endpoint list) in the same run. The target is under 10 µs per
//! request for every case.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use serde_json::{Value, json};
use switchyard_benches::{BenchEnv, or_exit};
use switchyard_health::{HealthConfig, HealthRegistry, Outcome, Sample};
use switchyard_policy::{Endpoint, Format, Snapshot};
use switchyard_select::Selector;
use switchyard_wire::{Operation, ParsedRequest};
use tokio::time::Instant;

const MODELS: usize = 50;
const PROVIDERS: usize = 5;

/// Every model on every provider, prices rising with the provider's index; half the providers
/// deny data collection, and one route narrows five models to them.
fn snapshot() -> Snapshot {
    let mut providers = serde_json::Map::new();
    for p in 0..PROVIDERS {
        providers.insert(
            format!("p{p}"),
            json!({"api": "openai", "base_url": format!("https://p{p}.example.com/v1"),
                   "api_key": {"env": "K"}, "data_collection": if p % 2 == 0 { "deny" } else { "allow" },
                   "zdr": p % 2 == 0}),
        );
    }
    let mut models = serde_json::Map::new();
    for m in 0..MODELS {
        let endpoints: Vec<Value> = (0..PROVIDERS)
            .map(|p| {
                json!({"provider": format!("p{p}"), "upstream_model": format!("up-{m}"),
                       "pricing": {"prompt": 0.5 + p as f64, "completion": 1.0 + 2.0 * p as f64},
                       "max_output_tokens": 8192, "quantization": "fp8",
                       "supported_parameters": ["max_tokens", "temperature", "tools", "top_p",
                                                "response_format", "stop", "seed"]})
            })
            .collect();
        models.insert(
            format!("m{m}"),
            json!({"aliases": [format!("alias-{m}")], "context_length": 128000, "endpoints": endpoints}),
        );
    }
    let policy = json!({
        "providers": providers,
        "models": models,
        "routes": {"five": {"match_models": ["m49"], "models": ["m0", "m1", "m2", "m3", "m4"],
                            "provider": {"data_collection": "deny"}}}
    });
    let compiled =
        switchyard_policy::compile(&policy.to_string(), Format::Json, Path::new("."), &BenchEnv)
            .map_err(|diagnostics| {
                diagnostics
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            });
    or_exit("compile the routing policy", compiled).snapshot
}

fn request(extra: Value) -> ParsedRequest {
    let mut body = json!({"messages": [{"role": "user", "content": "Say hello in one word."}],
                          "temperature": 0.2, "max_tokens": 256});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    or_exit(
        "parse a routing request",
        ParsedRequest::parse(Operation::ChatCompletions, Bytes::from(body.to_string())),
    )
}

/// A selector whose registry holds 20 successful attempts for every endpoint, with TTFT
/// spread across endpoints so the throughput and latency sorts have something to order.
fn selector(snapshot: &Snapshot) -> Selector {
    let health = Arc::new(HealthRegistry::new(HealthConfig::default()));
    let now = Instant::now();
    for (i, ep) in snapshot.endpoints().iter().enumerate() {
        let h = health.endpoint(&ep.id);
        for k in 0..20u64 {
            h.record(Sample {
                at: now,
                outcome: Outcome::Success,
                ttft: Some(Duration::from_millis(100 + (i as u64 * 37 + k) % 900)),
                latency: Duration::from_millis(2000 + k),
                output_tokens: Some(100 + (i as u64 * 13) % 200),
            });
        }
    }
    Selector::new(health).with_seed(1)
}

/// The direct call: resolve the model, take its endpoints in file order.
fn direct(snapshot: &Snapshot, req: &ParsedRequest) -> Vec<Arc<Endpoint>> {
    req.model()
        .and_then(|m| snapshot.model(m))
        .map(|m| m.endpoints.clone())
        .unwrap_or_default()
}

fn routing(c: &mut Criterion) {
    let snap = snapshot();
    let sel = selector(&snap);
    let headers = HeaderMap::new();
    let cases = [
        ("default_balancing", request(json!({"model": "m7"}))),
        (
            "sort_throughput_thresholds",
            request(json!({"model": "alias-7",
                           "provider": {"sort": "throughput", "preferred_max_latency": {"p50": 0.5}}})),
        ),
        (
            "route_5_models_filters",
            request(json!({"model": "m49", "tools": [{"type": "function",
                           "function": {"name": "f", "parameters": {}}}],
                           "provider": {"require_parameters": true, "max_price": {"prompt": 3}}})),
        ),
        (
            "sticky_session",
            request(json!({"model": "m7", "session_id": "s-1"})),
        ),
        (
            "route_5_models_plain",
            request(json!({"model": "@preset/five"})),
        ),
    ];
    sel.sessions()
        .record("m7".into(), "s-1".into(), "p3/m7".into(), Instant::now());
    // A case that failed to plan would time the error path and report it as the result.
    for (name, req) in &cases {
        or_exit(name, sel.plan(&snap, req, &headers, Instant::now()));
    }

    let mut g = c.benchmark_group("routing");
    g.bench_function("direct_model_lookup", |b| {
        b.iter(|| direct(black_box(&snap), black_box(&cases[0].1)))
    });
    for (name, req) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| sel.plan(black_box(&snap), black_box(req), &headers, Instant::now()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = routing
}
criterion_main!(benches);
