//! The whole proxy stack (`switchyard_stack::proxy_with`) in-process, over a canned upstream
//! that does the real upstream's work minus the network, each measured against the direct
//! call (parse, first endpoint, the same upstream, body read) in the same run.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::StatusCode;
use http_body_util::Full;
use switchyard_benches::{
    CannedUpstream, FixtureError, MODEL, STREAM_EVENTS, chat_request, collect_body, direct_request,
    or_exit, policy_store, proxy_request,
};
use switchyard_core::BoxError;
use switchyard_policy::Snapshot;
use switchyard_stack::{ProxyService, Registries, proxy_with};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// One request through the whole stack; the response body read to its end.
async fn via_proxy(svc: ProxyService<Full<Bytes>>, body: Bytes) -> Result<Bytes, BoxError> {
    let resp = svc.oneshot(proxy_request(body)).await?;
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let body = collect_body(resp).await?;
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)).into());
    }
    collect_body(resp).await
}

/// The same request without any layer.
async fn direct(
    upstream: CannedUpstream,
    snapshot: Arc<Snapshot>,
    body: Bytes,
) -> Result<Bytes, BoxError> {
    let req = direct_request(&snapshot, body)?;
    collect_body(upstream.oneshot(req).await?).await
}

/// Runs one request both ways before timing anything: a benchmark of an error path would
/// look fast and mean nothing.
fn check(rt: &Runtime, svc: &ProxyService<Full<Bytes>>, snapshot: &Arc<Snapshot>, stream: bool) {
    let what = if stream { "stream" } else { "completion" };
    let proxied = or_exit(
        &format!("{what} through the stack"),
        rt.block_on(via_proxy(svc.clone(), chat_request(stream))),
    );
    let direct = or_exit(
        &format!("{what} by direct call"),
        rt.block_on(direct(
            CannedUpstream::new(),
            snapshot.clone(),
            chat_request(stream),
        )),
    );
    let text = String::from_utf8_lossy(&proxied);
    let served_model = text.contains(&format!("\"model\":\"{MODEL}\""));
    // The caller did not ask for stream usage, so the usage chunk is metered but not sent.
    let events_ok = !stream || text.matches("data: ").count() == STREAM_EVENTS - 1;
    if proxied != direct || !served_model || !events_ok {
        or_exit::<(), _>(
            &format!("check the {what} answer"),
            Err(FixtureError::Unexpected(format!(
                "proxy and direct answers differ or are malformed: {} vs {} bytes",
                proxied.len(),
                direct.len()
            ))),
        );
    }
}

fn stack(c: &mut Criterion) {
    let rt = or_exit(
        "build a tokio runtime",
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    );
    let store = or_exit("compile the bench policy", policy_store());
    let snapshot = store.load();
    let upstream = CannedUpstream::new();
    let svc: ProxyService<Full<Bytes>> = proxy_with(store, &Registries::new(), upstream.clone());

    for (group, stream) in [("stack_completion", false), ("stack_stream", true)] {
        check(&rt, &svc, &snapshot, stream);
        let body = chat_request(stream);
        let mut g = c.benchmark_group(group);
        if stream {
            g.throughput(Throughput::Elements(STREAM_EVENTS as u64));
        }
        g.bench_function("direct", |b| {
            b.to_async(&rt)
                .iter(|| direct(upstream.clone(), snapshot.clone(), body.clone()))
        });
        // hyper-util's service adapter clones the service for every request, so the
        // clone is part of the measured cost.
        g.bench_function("proxy", |b| {
            b.to_async(&rt)
                .iter(|| via_proxy(svc.clone(), body.clone()))
        });
        g.finish();
    }
}

criterion_group!(benches, stack);
criterion_main!(benches);
