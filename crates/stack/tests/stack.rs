//! The whole stack in-process over a fake upstream: no sockets, every layer real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use switchyard_core::{BoxError, ProxyBody, Served};
use switchyard_policy::{Endpoint, Env, Snapshot};
use switchyard_policy_watch::PolicyStore;
use switchyard_stack::{ProxyService, Registries, proxy_with};
use switchyard_wire::ParsedRequest;
use tower::{ServiceExt, service_fn};

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _name: &str) -> Option<String> {
        Some("sk-test".into())
    }
    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            path.display().to_string(),
        ))
    }
}

fn store(limit: u64) -> Arc<PolicyStore> {
    let policy = json!({
        "providers": {
            "a": { "api": "openai", "base_url": "https://a.example.com/v1", "api_key": {"env": "A"} },
            "b": { "api": "openai", "base_url": "https://b.example.com/v1", "api_key": {"env": "B"} }
        },
        "models": {
            "m1": { "aliases": ["one"], "endpoints": [
                { "provider": "b", "upstream_model": "b-m1", "pricing": {"prompt": 1, "completion": 2} },
                { "provider": "a", "upstream_model": "a-m1", "pricing": {"prompt": 1, "completion": 2} }
            ] },
            "m2": { "endpoints": [
                { "provider": "a", "upstream_model": "a-m2", "pricing": {"prompt": 3, "completion": 4} }
            ] }
        },
        "defaults": { "limits": { "max_request_bytes": limit } }
    });
    let compiled = switchyard_policy::compile(
        &policy.to_string(),
        switchyard_policy::Format::Json,
        Path::new("."),
        &NoEnv,
    )
    .unwrap();
    PolicyStore::fixed(compiled, "test")
}

/// What the fake upstream was asked to do.
#[derive(Debug, Clone)]
struct Seen {
    endpoint: String,
    upstream_body: Value,
    pinned_generation_sha: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn stack(limit: u64) -> (ProxyService<Full<Bytes>>, Log) {
    let log: Log = Arc::default();
    let rec = log.clone();
    let upstream = service_fn(move |req: Request<Arc<ParsedRequest>>| {
        let rec = rec.clone();
        async move {
            let endpoint = req.extensions().get::<Arc<Endpoint>>().cloned().unwrap();
            let snapshot = req.extensions().get::<Arc<Snapshot>>().cloned().unwrap();
            let body = req.body().upstream_body(&endpoint.upstream_model);
            rec.lock().unwrap().push(Seen {
                endpoint: endpoint.id.to_string(),
                upstream_body: serde_json::from_slice(&body).unwrap(),
                pinned_generation_sha: snapshot.sha256().to_string(),
            });
            let mut resp = Response::new(ProxyBody::full(r#"{"ok":true}"#));
            resp.extensions_mut().insert(Served {
                endpoint: endpoint.id.clone(),
                provider: endpoint.provider.id.clone(),
                model: endpoint.model.clone(),
                upstream_model: endpoint.upstream_model.clone(),
                attempts: 1,
                usage: None,
            });
            Ok::<_, BoxError>(resp)
        }
    });
    (proxy_with(store(limit), &Registries::new(), upstream), log)
}

async fn call(
    svc: &ProxyService<Full<Bytes>>,
    method: &str,
    path: &str,
    body: &str,
) -> (StatusCode, http::HeaderMap, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, v)
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

#[tokio::test]
async fn the_planned_endpoint_serves_with_headers() {
    let (svc, log) = stack(1 << 20);
    let body = json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}], "provider": {"order": ["b"]}});
    let (status, headers, v) = call(&svc, "POST", "/v1/chat/completions", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"ok": true}));
    assert_eq!(headers["x-switchyard-provider"], "b");
    assert_eq!(headers["x-switchyard-model"], "m1");
    assert_eq!(headers["x-switchyard-attempts"], "1");
    assert!(
        headers["x-switchyard-request-id"]
            .to_str()
            .unwrap()
            .starts_with("gen-")
    );
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].endpoint, "b/m1");
    assert_eq!(seen[0].upstream_body["model"], "b-m1");
    assert_eq!(seen[0].pinned_generation_sha.len(), 64);
}

#[tokio::test]
async fn aliases_comma_form_and_models_list_resolve_in_order() {
    let (svc, log) = stack(1 << 20);
    // Sorted by price so the endpoint choice is deterministic (equal prices keep policy order).
    let body = |model: Option<&str>, models: &[&str]| {
        let mut v =
            json!({"provider": {"sort": "price"}, "messages": [{"role": "user", "content": "x"}]});
        if let Some(m) = model {
            v["model"] = json!(m);
        }
        if !models.is_empty() {
            v["models"] = json!(models);
        }
        v.to_string()
    };
    call(
        &svc,
        "POST",
        "/v1/chat/completions",
        &body(Some("one"), &[]),
    )
    .await;
    call(
        &svc,
        "POST",
        "/v1/chat/completions",
        &body(Some("m2,m1"), &[]),
    )
    .await;
    call(
        &svc,
        "POST",
        "/v1/chat/completions",
        &body(None, &["m2", "m1"]),
    )
    .await;
    let endpoints: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.endpoint.clone())
        .collect();
    assert_eq!(endpoints, ["b/m1", "a/m2", "a/m2"]);
}

#[tokio::test]
async fn refusals_never_reach_the_upstream() {
    let (svc, log) = stack(512);
    let cases: [(&str, &str, String, StatusCode, &str); 7] = [
        (
            "POST",
            "/v1/chat/completions",
            "{".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat("nope"),
            StatusCode::NOT_FOUND,
            "model_not_found",
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"messages": []}).to_string(),
            StatusCode::BAD_REQUEST,
            "missing_parameter",
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat(&"x".repeat(600)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
        ),
        (
            "GET",
            "/v1/embeddings",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "DELETE",
            "/v1/models",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "POST",
            "/v1/messages/batches",
            "{}".into(),
            StatusCode::NOT_FOUND,
            "unknown_url",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, headers, v) = call(&svc, method, path, &body).await;
        assert_eq!(got, status, "{method} {path}: {v}");
        assert_eq!(headers["x-should-retry"], "false");
        // Both wire shapes keep the detail under "error".
        let err = &v["error"];
        assert_eq!(err["code"], code, "{method} {path}: {v}");
        assert!(
            err["metadata"]["request_id"]
                .as_str()
                .unwrap()
                .starts_with("gen-")
        );
    }
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn anthropic_paths_get_anthropic_shaped_errors() {
    let (svc, _log) = stack(1 << 20);
    let (status, _, v) = call(&svc, "POST", "/v1/messages/batches", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn models_endpoint_lists_ids_then_aliases() {
    let (svc, log) = stack(1 << 20);
    let (status, _, v) = call(&svc, "GET", "/v1/models", "").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m1", "one", "m2"]);
    assert_eq!(v["data"][0]["providers"], json!(["b", "a"]));
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn every_request_pins_the_snapshot_in_force_when_it_started() {
    let store = store(1 << 20);
    let before = store.load().sha256().to_string();
    let log: Log = Arc::default();
    let rec = log.clone();
    let swap_store = store.clone();
    // The upstream swaps the policy mid-request; the request must still see its own snapshot.
    let upstream = service_fn(move |req: Request<Arc<ParsedRequest>>| {
        let rec = rec.clone();
        let swap_store = swap_store.clone();
        async move {
            let policy = json!({
                "providers": { "a": { "api": "openai", "base_url": "https://a.example.com/v1" } },
                "models": { "m1": { "endpoints": [ { "provider": "a", "pricing": {"prompt": 9, "completion": 9} } ] } }
            });
            let compiled = switchyard_policy::compile(
                &policy.to_string(),
                switchyard_policy::Format::Json,
                Path::new("."),
                &NoEnv,
            )
            .unwrap();
            swap_store.install(compiled);
            let snapshot = req.extensions().get::<Arc<Snapshot>>().cloned().unwrap();
            rec.lock().unwrap().push(Seen {
                endpoint: String::new(),
                upstream_body: Value::Null,
                pinned_generation_sha: snapshot.sha256().to_string(),
            });
            Ok::<_, BoxError>(Response::new(ProxyBody::full("{}")))
        }
    });
    let svc: ProxyService<Full<Bytes>> = proxy_with(store.clone(), &Registries::new(), upstream);
    call(&svc, "POST", "/v1/chat/completions", &chat("m1")).await;
    assert_eq!(log.lock().unwrap()[0].pinned_generation_sha, before);
    assert_ne!(store.load().sha256(), before);
    assert_eq!(store.status().generation, 2);
}
