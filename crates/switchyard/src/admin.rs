//! The admin listener: health, readiness and policy status. Loopback by default; it serves
//! operators and probes, never application traffic.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use switchyard_core::{InboundApi, ProxyBody};
use switchyard_respond::{NotFound, WrongMethod, error_response};
use tower::util::BoxCloneService;

use crate::server::Shared;

pub type AdminService = BoxCloneService<Request<Incoming>, Response<ProxyBody>, Infallible>;

pub fn service(shared: Arc<Shared>) -> AdminService {
    BoxCloneService::new(tower::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    }))
}

/// Paths and the one method each accepts.
const ROUTES: &[(&str, Method)] = &[
    ("/healthz", Method::GET),
    ("/readyz", Method::GET),
    ("/admin/policy", Method::GET),
    ("/admin/providers", Method::GET),
    ("/admin/budgets", Method::GET),
    ("/admin/explain", Method::POST),
    ("/admin/reload", Method::POST),
    ("/metrics", Method::GET),
];

/// Bodies of admin requests are small JSON documents; anything larger is a mistake.
const MAX_ADMIN_BODY: usize = 4 << 20;

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let Some((_, allowed)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return error_response(
            InboundApi::OpenAi,
            &NotFound {
                method: method.clone(),
                path: path.to_string(),
            },
            None,
        );
    };
    if method != allowed {
        return error_response(
            InboundApi::OpenAi,
            &WrongMethod {
                method: method.clone(),
                path: path.to_string(),
                allowed: allowed.as_str(),
            },
            None,
        );
    }
    match path.as_str() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if shared.draining.load(Ordering::SeqCst) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        "/admin/providers" => json(&providers_json(shared)),
        "/admin/budgets" => {
            let snapshot = shared.store.load();
            json(&shared.registries.budgets.status_json(&snapshot).await)
        }
        "/admin/explain" => explain(shared, req).await,
        "/admin/reload" => reload(shared),
        "/metrics" => metrics(shared),
        _ => json(&shared.store.status_json()),
    }
}

/// Per endpoint of the policy in force: its live statistics and whether it is in an outage.
fn providers_json(shared: &Shared) -> Value {
    let snapshot = shared.store.load();
    let now = tokio::time::Instant::now();
    let health = &shared.registries.health;
    let endpoints: Vec<Value> = snapshot
        .endpoints()
        .iter()
        .map(|ep| {
            let h = health.get(&ep.id);
            let b = shared.registries.breakers.state(&ep.id, now);
            let until = |t: Option<tokio::time::Instant>| {
                t.map(|t| t.saturating_duration_since(now).as_millis() as u64)
            };
            json!({
                "endpoint": &*ep.id,
                "provider": &*ep.provider.id,
                "model": &*ep.model,
                "breaker": {
                    "state": b.phase.as_str(),
                    "consecutive_failures": b.consecutive_failures,
                    "failure_rate": b.failure_rate,
                    "requests": b.requests,
                    "open_for_ms": until(b.open_until),
                    "rate_limited_for_ms": until(b.rate_limited_until),
                    "credential_cooldown_for_ms": until(b.credential_until),
                },
                "in_flight": b.in_flight,
                "recent_outage": h.as_ref().is_some_and(|h| h.recent_outage(now)),
                "stats": h.map(|h| switchyard_select::summary_json(&h.summary())),
            })
        })
        .collect();
    json!({ "endpoints": endpoints })
}

/// `GET /metrics`: Prometheus text. Breaker states are read at scrape time.
fn metrics(shared: &Shared) -> Response<ProxyBody> {
    let now = tokio::time::Instant::now();
    let snapshot = shared.store.load();
    for ep in snapshot.endpoints() {
        let phase = shared.registries.breakers.state(&ep.id, now).phase;
        let state = match phase.as_str() {
            "open" => switchyard_telemetry::BreakerState::Open,
            "half_open" => switchyard_telemetry::BreakerState::HalfOpen,
            _ => switchyard_telemetry::BreakerState::Closed,
        };
        shared
            .obs
            .metrics
            .breaker_state(&ep.provider.id, &ep.model, state);
    }
    let mut r = Response::new(ProxyBody::full(shared.obs.metrics.encode()));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(switchyard_telemetry::CONTENT_TYPE),
    );
    r
}

/// `POST /admin/reload`: re-read the policy file now. 200 with the status when the policy in
/// force is the file's; 422 with the field-path errors when the file was refused (the last
/// good policy stays in force).
fn reload(shared: &Shared) -> Response<ProxyBody> {
    let result = shared.reload();
    let mut resp = json(&shared.store.status_json());
    if result.is_err() {
        *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    resp
}

/// `POST /admin/explain`: the body is an LLM request as an application would send it (the
/// operation from `?path=`, default chat completions); the answer is the routing plan the
/// proxy would make for it right now, with live statistics.
async fn explain(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let op_path = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("path=")))
        .unwrap_or("/v1/chat/completions")
        .to_string();
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, MAX_ADMIN_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return error_response(
                InboundApi::OpenAi,
                &switchyard_stack::UnreadableBody {
                    detail: e.to_string(),
                },
                None,
            );
        }
    };
    let snapshot = shared.store.load();
    match crate::explain::plan_json(
        &snapshot,
        &shared.registries,
        &op_path,
        bytes,
        &parts.headers,
    ) {
        Ok(v) => json(&v),
        Err(e) => match switchyard_core::Failure::find(&*e) {
            Some(f) => error_response(InboundApi::OpenAi, f.get(), None),
            None => error_response(InboundApi::OpenAi, &switchyard_respond::Internal, None),
        },
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(value: &serde_json::Value) -> Response<ProxyBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut r = Response::new(ProxyBody::full(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
