//! What budgets and observability add to one request through the whole stack, each measured
//! against the same stack without them in the same run: budgets off vs on (the embedded
//! durable ledger with its 50 ms group commit, the realistic default), and the outer
//! observability wrapper (request span, metrics, generation record, access line) with no
//! tracing subscriber, and with the OTLP pipeline installed and exporting over HTTP.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use switchyard::observe::{Observability, Observe};
use switchyard_benches::{
    BenchEnv, CannedUpstream, POLICY_JSON, chat_request, collect_body, or_exit, policy_store,
    proxy_request,
};
use switchyard_budget::{Budgets, SystemClock};
use switchyard_core::{BoxError, ProxyBody};
use switchyard_ledger::{EmbeddedLedger, LedgerOptions};
use switchyard_policy_watch::PolicyStore;
use switchyard_stack::{ProxyService, Registries, proxy_with};
use switchyard_telemetry::{GenerationStore, Metrics, TelemetryConfig};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower::util::BoxCloneService;

type Svc = BoxCloneService<Request<Full<Bytes>>, Response<ProxyBody>, Infallible>;

async fn once(svc: Svc, body: Bytes) -> Result<Bytes, BoxError> {
    let resp = svc.oneshot(proxy_request(body)).await?;
    let status = resp.status();
    let bytes = collect_body(resp).await?;
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)).into());
    }
    Ok(bytes)
}

fn check(rt: &Runtime, what: &str, svc: &Svc) {
    or_exit(what, rt.block_on(once(svc.clone(), chat_request(false))));
}

/// The bench policy with two budgets that apply to every request and never bind.
fn budget_store() -> Arc<PolicyStore> {
    let mut v: serde_json::Value = or_exit("bench policy JSON", serde_json::from_str(POLICY_JSON));
    v["budgets"] = serde_json::json!([
        {"id": "all", "scope": "global", "daily_usd": 1.0e6, "monthly_usd": 1.0e7},
        {"id": "per-model", "scope": {"model": switchyard_benches::MODEL}, "daily_usd": 1.0e6}
    ]);
    let compiled = or_exit(
        "compile the budget policy",
        switchyard_policy::compile(
            &v.to_string(),
            switchyard_policy::Format::Json,
            Path::new("."),
            &BenchEnv,
        )
        .map_err(|d| format!("{d:?}")),
    );
    PolicyStore::fixed(compiled, "benches")
}

fn overhead(c: &mut Criterion) {
    let rt = or_exit(
        "build a tokio runtime",
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    );
    let body = chat_request(false);

    // Budgets off vs on.
    let plain: ProxyService<Full<Bytes>> = proxy_with(
        or_exit("compile the bench policy", policy_store()),
        &Registries::new(),
        CannedUpstream::new(),
    );
    let dir = or_exit("temp dir", tempfile::tempdir());
    let ledger = or_exit(
        "open the embedded ledger",
        EmbeddedLedger::open(dir.path().join("spend.ledger"), LedgerOptions::default()),
    );
    let budgets = Arc::new(Budgets::new(Arc::new(ledger), Arc::new(SystemClock), false));
    let with_budgets: ProxyService<Full<Bytes>> = proxy_with(
        budget_store(),
        &Registries::with_budgets(budgets),
        CannedUpstream::new(),
    );
    check(&rt, "request without budgets", &plain);
    check(&rt, "request with budgets", &with_budgets);
    let mut g = c.benchmark_group("budgets");
    g.bench_function("off", |b| {
        b.to_async(&rt).iter(|| once(plain.clone(), body.clone()))
    });
    g.bench_function("on_embedded_ledger", |b| {
        b.to_async(&rt)
            .iter(|| once(with_budgets.clone(), body.clone()))
    });
    g.finish();

    // Observability: the wrapper the binary puts around the stack.
    let metrics = Arc::new(Metrics::new());
    let generations = Arc::new(GenerationStore::default());
    let registries = Registries::new()
        .with_observer(metrics.clone())
        .with_observer(generations.clone());
    let inner: ProxyService<Full<Bytes>> = proxy_with(
        or_exit("compile the bench policy", policy_store()),
        &registries,
        CannedUpstream::new(),
    );
    let observed: Svc = BoxCloneService::new(Observe::new(
        inner,
        Observability {
            metrics,
            generations,
        },
    ));
    check(&rt, "observed request", &observed);
    let mut g = c.benchmark_group("observability");
    g.bench_function("stack", |b| {
        b.to_async(&rt).iter(|| once(plain.clone(), body.clone()))
    });
    g.bench_function("observed_no_exporter", |b| {
        b.to_async(&rt)
            .iter(|| once(observed.clone(), body.clone()))
    });
    // With the tracing subscriber and the OTLP pipeline installed (exporting to a port where
    // nothing listens: span building, batching and the export attempts are all paid).
    let telemetry = rt.block_on(async {
        let cfg = TelemetryConfig::from_lookup(|k| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:9".into()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".into()),
            "SWITCHYARD_LOG" => Some("error".into()),
            _ => None,
        });
        cfg.and_then(switchyard_telemetry::init)
    });
    match telemetry {
        Ok(_t) => {
            g.bench_function("observed_otlp_exporter", |b| {
                b.to_async(&rt)
                    .iter(|| once(observed.clone(), body.clone()))
            });
        }
        Err(e) => eprintln!("telemetry init failed, skipping the exporter case: {e}"),
    }
    g.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
