#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use switchyard_core::{BoxError, Failure, ProxyBody, ProxyError, Served, Usage};
use tower::{Layer, ServiceExt, service_fn};

use crate::{NotFound, RespondLayer, WrongMethod, headers};

#[derive(Debug, thiserror::Error)]
#[error("budget 'team-a' daily cap reached")]
struct Budget;
impl ProxyError for Budget {
    fn status(&self) -> StatusCode {
        StatusCode::PAYMENT_REQUIRED
    }
    fn error_type(&self) -> &'static str {
        "budget_exceeded"
    }
    fn code(&self) -> &'static str {
        "budget_exceeded"
    }
    fn param(&self) -> Option<&str> {
        Some("max_tokens")
    }
    fn metadata(&self) -> Option<Value> {
        Some(serde_json::json!({"budget": "team-a", "window": "daily"}))
    }
    fn retry_after(&self) -> Option<Duration> {
        Some(Duration::from_millis(1500))
    }
}

async fn run(
    path: &str,
    result: fn() -> Result<Response<ProxyBody>, BoxError>,
) -> (Response<()>, Value) {
    let svc =
        RespondLayer::new().layer(service_fn(move |_req: Request<()>| async move { result() }));
    let req = Request::builder()
        .uri(path)
        .header(headers::REQUEST_ID, "gen-abc")
        .body(())
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (Response::from_parts(parts, ()), json)
}

#[tokio::test]
async fn openai_shape_with_every_field() {
    let (resp, body) = run("/v1/chat/completions", || Err(Failure::boxed(Budget))).await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(resp.headers()[headers::SHOULD_RETRY], "false");
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let e = &body["error"];
    assert_eq!(e["message"], "budget 'team-a' daily cap reached");
    assert_eq!(e["type"], "budget_exceeded");
    assert_eq!(e["code"], "budget_exceeded");
    assert_eq!(e["param"], "max_tokens");
    assert_eq!(e["metadata"]["budget"], "team-a");
    assert_eq!(e["metadata"]["request_id"], "gen-abc");
}

#[tokio::test]
async fn anthropic_shape_by_path() {
    let (resp, body) = run("/v1/messages", || {
        Err(Failure::boxed(NotFound {
            method: Method::POST,
            path: "/v1/messages".into(),
        }))
    })
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");
    assert_eq!(body["error"]["code"], "unknown_url");
    assert_eq!(body["request_id"], "gen-abc");
}

#[tokio::test]
async fn method_not_allowed_carries_allow() {
    let (resp, body) = run("/v1/models", || {
        Err(Failure::boxed(WrongMethod {
            method: Method::DELETE,
            path: "/v1/models".into(),
            allowed: "GET",
        }))
    })
    .await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET");
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn unclassified_errors_become_opaque_500s() {
    let (resp, body) = run(
        "/v1/chat/completions",
        || Err("secret detail sk-123".into()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["type"], "internal_error");
    assert!(!body.to_string().contains("sk-123"));
}

#[tokio::test]
async fn served_responses_get_switchyard_headers() {
    let (resp, _) = run("/v1/chat/completions", || {
        let mut r = Response::new(ProxyBody::full("{}"));
        r.extensions_mut().insert(Served {
            endpoint: Arc::from("openai/gpt-4o"),
            provider: Arc::from("openai"),
            model: Arc::from("gpt-4o"),
            upstream_model: Arc::from("gpt-4o-2024-08-06"),
            attempts: 2,
            usage: Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 20,
                cost: 0.000_012_5,
                estimated: false,
            }),
        });
        Ok(r)
    })
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[headers::PROVIDER], "openai");
    assert_eq!(resp.headers()[headers::MODEL], "gpt-4o");
    assert_eq!(resp.headers()[headers::ATTEMPTS], "2");
    assert_eq!(resp.headers()[headers::COST], "0.0000125");
    assert!(resp.headers().get(headers::SHOULD_RETRY).is_none());
}

#[test]
fn cost_formatting() {
    assert_eq!(crate::render::format_cost(0.0), "0");
    assert_eq!(crate::render::format_cost(1.5), "1.5");
    assert_eq!(crate::render::format_cost(0.000_000_1), "0.0000001");
}
