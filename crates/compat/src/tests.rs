#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use switchyard_policy::{Endpoint, Env, Snapshot};
use switchyard_wire::{BodyEdits, Operation, ParsedRequest};
use tower::{Layer, ServiceExt, service_fn};

use crate::{CompatLayer, edits_for};

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, p: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            p.display().to_string(),
        ))
    }
}

fn snapshot() -> Snapshot {
    let policy = json!({
        "providers": { "p": { "api": "openai", "base_url": "https://p.example.com/v1" } },
        "models": { "m": { "endpoints": [
            { "provider": "p", "upstream_model": "legacy",
              "supported_parameters": ["max_tokens", "temperature", "tools"], "max_output_tokens": 1000 },
            { "provider": "p", "upstream_model": "reasoner",
              "supported_parameters": ["max_completion_tokens", "tools", "reasoning"] },
            { "provider": "p", "upstream_model": "open" }
        ] } },
        "routes": { "r": { "match_models": ["m"], "max_tokens": 600 } }
    });
    switchyard_policy::compile(
        &policy.to_string(),
        switchyard_policy::Format::Json,
        Path::new("."),
        &NoEnv,
    )
    .unwrap()
    .snapshot
}

fn req(body: Value) -> ParsedRequest {
    ParsedRequest::parse(Operation::ChatCompletions, Bytes::from(body.to_string())).unwrap()
}

fn ep(s: &Snapshot, i: usize) -> Arc<Endpoint> {
    s.endpoints()[i].clone()
}

#[test]
fn unsupported_parameters_are_dropped_only_where_a_list_is_declared() {
    let s = snapshot();
    let r =
        req(json!({"model": "m", "messages": [], "temperature": 0.2, "logit_bias": {}, "seed": 1}));
    let e = edits_for(&ep(&s, 0), &r, None);
    assert_eq!(e.drop, vec![Box::from("logit_bias"), Box::from("seed")]);
    assert!(e.rename.is_empty());
    // The endpoint that declares nothing gets the request as written.
    assert_eq!(edits_for(&ep(&s, 2), &r, None), BodyEdits::default());
}

#[test]
fn token_limit_is_renamed_to_the_declared_spelling() {
    let s = snapshot();
    let r = req(json!({"model": "m", "messages": [], "max_tokens": 100}));
    let e = edits_for(&ep(&s, 1), &r, None);
    assert_eq!(
        e.rename,
        vec![(Box::from("max_tokens"), "max_completion_tokens")]
    );
    assert!(e.drop.is_empty());
    let r = req(json!({"model": "m", "messages": [], "max_completion_tokens": 100}));
    let e = edits_for(&ep(&s, 0), &r, None);
    assert_eq!(
        e.rename,
        vec![(Box::from("max_completion_tokens"), "max_tokens")]
    );
}

#[test]
fn token_limit_is_capped_by_route_and_endpoint() {
    let s = snapshot();
    let r = req(json!({"model": "m", "messages": [], "max_tokens": 900}));
    assert_eq!(edits_for(&ep(&s, 0), &r, Some(600)).max_tokens, Some(600));
    assert_eq!(
        edits_for(&ep(&s, 0), &r, None).max_tokens,
        None,
        "900 <= 1000 output cap"
    );
    let r = req(json!({"model": "m", "messages": [], "max_tokens": 1200}));
    assert_eq!(edits_for(&ep(&s, 0), &r, None).max_tokens, Some(1000));
    // No limit in the request: none is added.
    let r = req(json!({"model": "m", "messages": []}));
    assert_eq!(edits_for(&ep(&s, 0), &r, Some(600)).max_tokens, None);
}

#[tokio::test]
async fn layer_puts_edits_in_extensions_and_the_body_follows_them() {
    let s = snapshot();
    let svc = CompatLayer::new().layer(service_fn(|req: Request<Arc<ParsedRequest>>| async move {
        let edits = req
            .extensions()
            .get::<BodyEdits>()
            .cloned()
            .unwrap_or_default();
        let body = req.body().upstream_body_with("reasoner", &edits);
        Ok::<_, std::convert::Infallible>(serde_json::from_slice::<Value>(&body).unwrap())
    }));
    let mut request = Request::new(Arc::new(req(
        json!({"model": "m", "messages": [], "max_tokens": 50, "temperature": 1, "tools": []}),
    )));
    request.extensions_mut().insert(ep(&s, 1));
    let sent = svc.oneshot(request).await.unwrap();
    assert_eq!(
        sent,
        json!({"model": "reasoner", "messages": [], "max_completion_tokens": 50, "tools": []})
    );
}
