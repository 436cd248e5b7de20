//! The routing rules, one test each, over a small policy and live health fed by hand.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use serde_json::{Value, json};
use switchyard_core::{BoxError, Failure, ProxyError, Served};
use switchyard_health::{HealthConfig, HealthRegistry, Outcome, Sample};
use switchyard_policy::{
    DataCollection, Env, ExclusionReason, Plan, Snapshot, SortBy, SortPartition, SortSpec,
};
use switchyard_wire::{Operation, ParsedRequest};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::*;

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

fn provider(data_collection: &str, zdr: bool) -> Value {
    json!({
        "api": "openai", "base_url": "https://p.example.com/v1", "api_key": {"env": "K"},
        "data_collection": data_collection, "zdr": zdr
    })
}

/// `m1` lists its endpoints out of price order on purpose: mid (4), cheap (2), pricey (6).
fn policy() -> Value {
    json!({
        "providers": {
            "cheap": provider("allow", false),
            "mid": provider("deny", true),
            "pricey": provider("deny", false),
            "other": provider("deny", true)
        },
        "models": {
            "m1": { "aliases": ["one", "gpt-4o"], "context_length": 8000, "endpoints": [
                { "provider": "mid", "upstream_model": "mid-m1",
                  "pricing": {"prompt": 2, "completion": 2}, "quantization": "bf16",
                  "supported_parameters": ["max_tokens", "temperature", "tools", "response_format"] },
                { "provider": "cheap", "upstream_model": "cheap-m1",
                  "pricing": {"prompt": 1, "completion": 1}, "max_output_tokens": 4096,
                  "quantization": "fp8" },
                { "provider": "pricey", "upstream_model": "pricey-m1",
                  "pricing": {"prompt": 3, "completion": 3, "request": 0.01},
                  "quantization": "fp16", "supported_parameters": ["temperature"] }
            ] },
            "m2": { "endpoints": [
                { "provider": "other", "pricing": {"prompt": 0.5, "completion": 0.5} },
                { "provider": "mid", "pricing": {"prompt": 1, "completion": 1} }
            ] },
            "m3": { "endpoints": [
                { "provider": "pricey", "pricing": {"prompt": 9, "completion": 9} }
            ] },
            "tie": { "endpoints": [
                { "provider": "pricey", "pricing": {"prompt": 1, "completion": 1} },
                { "provider": "cheap", "pricing": {"prompt": 1, "completion": 1} },
                { "provider": "mid", "pricing": {"prompt": 0, "completion": 1} }
            ] }
        },
        "routes": {
            "by-match": { "match_models": ["m3"], "models": ["m2", "m1"],
                          "provider": {"sort": "price"} },
            "preset": { "models": ["m2"], "provider": {"only": ["other"]} },
            "empty": { "provider": {"ignore": ["cheap"]} }
        }
    })
}

fn compile(policy: &Value) -> Snapshot {
    switchyard_policy::compile(
        &policy.to_string(),
        switchyard_policy::Format::Json,
        Path::new("."),
        &NoEnv,
    )
    .unwrap()
    .snapshot
}

fn snapshot() -> Snapshot {
    compile(&policy())
}

fn health() -> Arc<HealthRegistry> {
    // Summaries refreshed on every sample, so a test sees what it just recorded.
    Arc::new(HealthRegistry::new(HealthConfig {
        refresh: Duration::ZERO,
        ..HealthConfig::default()
    }))
}

fn selector() -> Selector {
    Selector::new(health()).with_seed(42)
}

fn body(mut extra: Value) -> ParsedRequest {
    let obj = extra.as_object_mut().unwrap();
    obj.entry("messages")
        .or_insert(json!([{"role": "user", "content": "hi"}]));
    ParsedRequest::parse(Operation::ChatCompletions, Bytes::from(extra.to_string())).unwrap()
}

fn try_plan(sel: &Selector, snap: &Snapshot, req: Value) -> Result<Plan, BoxError> {
    sel.plan(snap, &body(req), &HeaderMap::new(), Instant::now())
}

fn plan(sel: &Selector, snap: &Snapshot, req: Value) -> Plan {
    try_plan(sel, snap, req).unwrap()
}

fn ids(plan: &Plan) -> Vec<&str> {
    plan.candidates.iter().map(|c| &*c.endpoint.id).collect()
}

fn whys(plan: &Plan) -> Vec<&str> {
    plan.candidates.iter().map(|c| c.why).collect()
}

fn excluded(plan: &Plan) -> Vec<(&str, ExclusionReason)> {
    plan.excluded
        .iter()
        .map(|e| (&*e.endpoint, e.reason))
        .collect()
}

fn failure(err: &BoxError) -> &dyn ProxyError {
    Failure::find(&**err).expect("a Failure").get()
}

/// Successful streamed samples giving the endpoint `ttft_ms` to first token and `tps` tokens
/// per second over one second of generation.
fn feed(sel: &Selector, id: &str, ttft_ms: u64, tps: u64, at: Instant) {
    let h = sel.health().endpoint(id);
    for _ in 0..5 {
        h.record(Sample {
            at,
            outcome: Outcome::Success,
            ttft: Some(Duration::from_millis(ttft_ms)),
            latency: Duration::from_millis(ttft_ms + 1000),
            output_tokens: Some(tps),
        });
    }
}

fn outage(sel: &Selector, id: &str, at: Instant) {
    let h = sel.health().endpoint(id);
    for _ in 0..3 {
        h.record(Sample {
            at,
            outcome: Outcome::Failure,
            ttft: None,
            latency: Duration::from_millis(10),
            output_tokens: None,
        });
    }
}

// ---- candidate set ------------------------------------------------------------------------

#[test]
fn models_fallback_order_is_kept() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m2", "models": ["m3", "m1"], "provider": {"sort": "price"}}),
    );
    assert_eq!(
        p.models,
        vec!["m2".into(), "m3".into(), "m1".into()] as Vec<Arc<str>>
    );
    assert_eq!(
        ids(&p),
        [
            "other/m2",
            "mid/m2",
            "pricey/m3",
            "cheap/m1",
            "mid/m1",
            "pricey/m1"
        ]
    );
    // `models` alone works too, and duplicates collapse.
    let p = plan(&sel, &snap, json!({"models": ["m1", "one", "m2"]}));
    assert_eq!(p.models, vec!["m1".into(), "m2".into()] as Vec<Arc<str>>);
}

#[test]
fn comma_form_lists_fallbacks() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m2, m1", "provider": {"sort": "price"}}),
    );
    assert_eq!(p.models, vec!["m2".into(), "m1".into()] as Vec<Arc<str>>);
    assert_eq!(ids(&p)[..2], ["other/m2", "mid/m2"]);
    assert_eq!(p.candidates.len(), 5);
}

#[test]
fn aliases_resolve_to_the_model() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(&sel, &snap, json!({"model": "one"}));
    assert_eq!(p.models, vec![Arc::<str>::from("m1")]);
    assert_eq!(p.candidates.len(), 3);
    assert!(p.route.is_none());
}

#[test]
fn unknown_and_missing_models_are_refused() {
    let (sel, snap) = (selector(), snapshot());
    let e = try_plan(&sel, &snap, json!({"model": "nope"})).unwrap_err();
    let f = failure(&e);
    assert_eq!(
        (f.status(), f.code(), f.param()),
        (StatusCode::NOT_FOUND, "model_not_found", Some("model"))
    );
    assert!(e.to_string().contains("'nope'"), "{e}");
    // A fallback that does not exist is as much an error as the primary.
    let e = try_plan(&sel, &snap, json!({"model": "m1", "models": ["m9"]})).unwrap_err();
    assert!(e.to_string().contains("'m9'"), "{e}");
    // A preset whose route serves no models, with no model named: nothing to serve.
    let e = try_plan(&sel, &snap, json!({"model": "@preset/empty"})).unwrap_err();
    assert_eq!(failure(&e).code(), "missing_parameter");
}

#[test]
fn preset_names_a_route() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(&sel, &snap, json!({"model": "@preset/preset"}));
    assert_eq!(p.route.as_ref().map(|r| &*r.id), Some("preset"));
    assert_eq!(p.models, vec![Arc::<str>::from("m2")]);
    assert_eq!(ids(&p), ["other/m2"]);
    assert_eq!(excluded(&p), [("mid/m2", ExclusionReason::Only)]);

    // `model@preset/id`: the route's preferences, the named model.
    let p = plan(&sel, &snap, json!({"model": "m1@preset/empty"}));
    assert_eq!(p.route.as_ref().map(|r| &*r.id), Some("empty"));
    assert_eq!(p.models, vec![Arc::<str>::from("m1")]);
    assert_eq!(excluded(&p), [("cheap/m1", ExclusionReason::Ignore)]);

    let e = try_plan(&sel, &snap, json!({"model": "@preset/ghost"})).unwrap_err();
    let f = failure(&e);
    assert_eq!(
        (f.status(), f.code(), f.param()),
        (StatusCode::NOT_FOUND, "route_not_found", Some("model"))
    );
    assert!(e.to_string().contains("'ghost'"), "{e}");
}

#[test]
fn header_names_a_route_and_wins_over_preset() {
    let (sel, snap) = (selector(), snapshot());
    let mut headers = HeaderMap::new();
    headers.insert(ROUTE_HEADER, HeaderValue::from_static("preset"));
    let req = body(json!({"model": "m1"}));
    let p = sel.plan(&snap, &req, &headers, Instant::now()).unwrap();
    assert_eq!(p.route.as_ref().map(|r| &*r.id), Some("preset"));
    // The app said m1, but the route serves m2: the route's models win over a single name.
    assert_eq!(p.models, vec![Arc::<str>::from("m2")]);

    let req = body(json!({"model": "@preset/empty"}));
    let p = sel.plan(&snap, &req, &headers, Instant::now()).unwrap();
    assert_eq!(p.route.as_ref().map(|r| &*r.id), Some("preset"));

    headers.insert(ROUTE_HEADER, HeaderValue::from_static("ghost"));
    let e = sel
        .plan(
            &snap,
            &body(json!({"model": "m1"})),
            &headers,
            Instant::now(),
        )
        .unwrap_err();
    let f = failure(&e);
    assert_eq!((f.code(), f.param()), ("route_not_found", None));
    assert!(e.to_string().contains("x-switchyard-route"), "{e}");
}

#[test]
fn match_models_routes_an_unchanged_app() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(&sel, &snap, json!({"model": "m3"}));
    assert_eq!(p.route.as_ref().map(|r| &*r.id), Some("by-match"));
    assert_eq!(p.models, vec![Arc::<str>::from("m2"), Arc::from("m1")]);
    // The route's sort applies.
    assert_eq!(p.prefs.sort, Some(SortSpec::By(SortBy::Price)));
    assert_eq!(
        ids(&p),
        ["other/m2", "mid/m2", "cheap/m1", "mid/m1", "pricey/m1"]
    );
    // An explicit list still picks the route, but serves what it names.
    let p = plan(&sel, &snap, json!({"model": "m3", "models": ["m1"]}));
    assert_eq!(p.route.as_ref().map(|r| &*r.id), Some("by-match"));
    assert_eq!(p.models, vec![Arc::<str>::from("m3"), Arc::from("m1")]);
}

#[test]
fn prefs_merge_defaults_then_route_then_request() {
    let mut pol = policy();
    pol["defaults"] = json!({"provider": {
        "sort": "latency", "zdr": false, "only": ["mid", "cheap", "other"], "data_collection": "allow"
    }});
    pol["routes"]["by-match"]["provider"] =
        json!({"sort": "price", "ignore": ["other"], "zdr": true});
    let snap = compile(&pol);
    let sel = selector();
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m3", "provider": {"zdr": false, "order": ["cheap"]}}),
    );
    let prefs = &p.prefs;
    assert_eq!(
        prefs.sort,
        Some(SortSpec::By(SortBy::Price)),
        "route over defaults"
    );
    assert_eq!(prefs.zdr, Some(false), "request over route");
    assert_eq!(prefs.ignore.as_deref(), Some(&["other".to_owned()][..]));
    assert_eq!(prefs.only.as_ref().map(Vec::len), Some(3), "defaults kept");
    assert_eq!(prefs.data_collection, Some(DataCollection::Allow));
    assert_eq!(prefs.order.as_deref(), Some(&["cheap".to_owned()][..]));
    // And they took effect: other/m2 ignored, pricey not in `only`, cheap first for m1.
    assert_eq!(ids(&p), ["mid/m2", "cheap/m1", "mid/m1"]);
    assert_eq!(
        excluded(&p),
        [
            ("other/m2", ExclusionReason::Ignore),
            ("pricey/m1", ExclusionReason::Only)
        ]
    );
}

#[test]
fn bad_provider_object_is_a_400_naming_the_field() {
    let (sel, snap) = (selector(), snapshot());
    let e = try_plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"orderr": ["a"]}}),
    )
    .unwrap_err();
    let f = failure(&e);
    assert_eq!(
        (f.status(), f.code(), f.param(), f.error_type()),
        (
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            Some("provider"),
            "invalid_request_error"
        )
    );
    let msg = e.to_string();
    assert!(msg.contains("unknown field `orderr`"), "{msg}");

    let e = try_plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"sort": {"by": "price", "order": "asc"}}}),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("provider.sort.order"), "{msg}");
    assert!(msg.contains("unknown field `order`"), "{msg}");

    let e = try_plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"max_price": {"prompt": "cheap"}}}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("provider.max_price.prompt"), "{e}");
}

// ---- hard filters -------------------------------------------------------------------------

#[test]
fn only_and_ignore() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"only": ["pricey", "mid"]}}),
    );
    let mut got = ids(&p);
    got.sort_unstable();
    assert_eq!(got, ["mid/m1", "pricey/m1"]);
    assert_eq!(excluded(&p), [("cheap/m1", ExclusionReason::Only)]);
    assert!(p.excluded[0].detail.contains("provider.only"));

    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"ignore": ["mid"]}}),
    );
    assert_eq!(p.candidates.len(), 2);
    assert_eq!(excluded(&p), [("mid/m1", ExclusionReason::Ignore)]);

    // An endpoint id works where a provider id does.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"only": ["cheap/m1"]}}),
    );
    assert_eq!(ids(&p), ["cheap/m1"]);
}

#[test]
fn require_parameters_with_tools_skips_a_first_in_order_endpoint() {
    let (sel, snap) = (selector(), snapshot());
    let req = json!({
        "model": "m1", "temperature": 0.2,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "provider": {"order": ["pricey", "cheap", "mid"], "require_parameters": true}
    });
    let p = plan(&sel, &snap, req);
    assert_eq!(ids(&p), ["mid/m1"]);
    assert_eq!(whys(&p), ["order"]);
    let ex = excluded(&p);
    assert!(
        ex.contains(&("pricey/m1", ExclusionReason::RequireParameters)),
        "{ex:?}"
    );
    assert!(
        ex.contains(&("cheap/m1", ExclusionReason::RequireParameters)),
        "{ex:?}"
    );
    let detail = |id: &str| {
        p.excluded
            .iter()
            .find(|e| &*e.endpoint == id)
            .map(|e| e.detail.clone())
            .unwrap()
    };
    assert!(
        detail("pricey/m1").contains("'tools'"),
        "{}",
        detail("pricey/m1")
    );
    assert!(detail("cheap/m1").contains("declares no supported_parameters"));
}

#[test]
fn tools_without_require_parameters() {
    let (sel, snap) = (selector(), snapshot());
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let p = plan(&sel, &snap, json!({"model": "m1", "tools": tools}));
    // pricey declares a list without tools; cheap declares none and is assumed capable.
    assert_eq!(excluded(&p), [("pricey/m1", ExclusionReason::Tools)]);
    assert_eq!(p.candidates.len(), 2);
    // An empty tools array asks for nothing.
    let p = plan(&sel, &snap, json!({"model": "m1", "tools": []}));
    assert!(p.excluded.is_empty());
}

#[test]
fn response_format_needs_support_when_declared() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "response_format": {"type": "json_object"}}),
    );
    assert_eq!(
        excluded(&p),
        [("pricey/m1", ExclusionReason::ResponseFormat)]
    );
    assert_eq!(p.candidates.len(), 2);
}

#[test]
fn quantizations_filter() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(
        &sel,
        &snap,
        json!({"models": ["m1", "m2"], "provider": {"quantizations": ["fp8", "BF16"]}}),
    );
    let mut got = ids(&p);
    got.sort_unstable();
    assert_eq!(got, ["cheap/m1", "mid/m1"]);
    // m2's endpoints declare no quantization: excluded as unknown.
    let ex = excluded(&p);
    assert_eq!(
        ex,
        [
            ("pricey/m1", ExclusionReason::Quantization),
            ("other/m2", ExclusionReason::Quantization),
            ("mid/m2", ExclusionReason::Quantization)
        ]
    );
    assert!(p.excluded[0].detail.contains("'fp16'"));
    assert!(p.excluded[1].detail.contains("declares no quantization"));
}

#[test]
fn data_collection_and_zdr() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"data_collection": "deny"}}),
    );
    assert_eq!(
        excluded(&p),
        [("cheap/m1", ExclusionReason::DataCollection)]
    );
    assert_eq!(p.candidates.len(), 2);

    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"zdr": true}}),
    );
    let ex = excluded(&p);
    assert_eq!(
        ex,
        [
            ("cheap/m1", ExclusionReason::Zdr),
            ("pricey/m1", ExclusionReason::Zdr)
        ]
    );
    assert_eq!(ids(&p), ["mid/m1"]);

    // Both: the first failing filter is the one recorded.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"zdr": true, "data_collection": "deny"}}),
    );
    assert_eq!(p.excluded[0].reason, ExclusionReason::DataCollection);
}

#[test]
fn max_tokens_and_context_window() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(&sel, &snap, json!({"model": "m1", "max_tokens": 5000}));
    assert_eq!(excluded(&p), [("cheap/m1", ExclusionReason::MaxTokens)]);
    assert!(p.excluded[0].detail.contains("4096"));
    // max_completion_tokens counts the same.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "max_completion_tokens": 4097}),
    );
    assert_eq!(excluded(&p), [("cheap/m1", ExclusionReason::MaxTokens)]);

    // ~7,000 prompt tokens (28 kB of messages) + 2,000 > the 8,000-token window; m2 declares
    // none and is not limited.
    let long = "x".repeat(28_000);
    let p = plan(
        &sel,
        &snap,
        json!({"models": ["m1", "m2"], "max_tokens": 2000,
               "messages": [{"role": "user", "content": long}]}),
    );
    let ex = excluded(&p);
    assert_eq!(ex.len(), 3, "{ex:?}");
    assert!(
        ex.iter().all(|(_, r)| *r == ExclusionReason::ContextLength),
        "{ex:?}"
    );
    assert!(ids(&p).iter().all(|id| id.ends_with("/m2")));
    // Without max_tokens the prompt alone fits.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "messages": [{"role": "user", "content": "x".repeat(28_000)}]}),
    );
    assert!(p.excluded.is_empty());
}

#[test]
fn route_max_tokens_caps_the_filtered_value() {
    let mut pol = policy();
    pol["routes"]["by-match"]["max_tokens"] = json!(1000);
    let (sel, snap) = (selector(), compile(&pol));
    let p = plan(&sel, &snap, json!({"model": "m3", "max_tokens": 5000}));
    assert!(p.excluded.is_empty(), "{:?}", p.excluded);
}

#[test]
fn max_price_below_every_endpoint_is_no_endpoints_with_every_reason() {
    let (sel, snap) = (selector(), snapshot());
    let e = try_plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"max_price": {"prompt": 0.5}}}),
    )
    .unwrap_err();
    let f = failure(&e);
    assert_eq!(f.status(), StatusCode::NOT_FOUND);
    assert_eq!((f.error_type(), f.code()), ("no_endpoints", "no_endpoints"));
    let meta = f.metadata().unwrap();
    let list = meta["excluded_by"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for item in list {
        assert_eq!(item["reason"], "max_price");
        assert_eq!(item["model"], "m1");
        assert!(
            item["detail"]
                .as_str()
                .unwrap()
                .contains("max_price.prompt")
        );
        assert!(item["provider"].is_string() && item["endpoint"].is_string());
    }
    let msg = e.to_string();
    for id in ["mid/m1", "cheap/m1", "pricey/m1"] {
        assert!(
            msg.contains(&format!("{id} excluded by max_price")),
            "{msg}"
        );
    }

    // Completion and per-request ceilings are checked too.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"max_price": {"completion": 2.5, "request": 0.001}}}),
    );
    assert_eq!(ids(&p).len(), 2);
    assert_eq!(excluded(&p), [("pricey/m1", ExclusionReason::MaxPrice)]);
    assert!(p.excluded[0].detail.contains("completion"));
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"max_price": {"request": 0.001}}}),
    );
    assert!(p.excluded[0].detail.contains("max_price.request"));
}

// ---- ordering -----------------------------------------------------------------------------

#[test]
fn order_is_honoured_then_the_rest_by_price() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"order": ["pricey", "nobody", "mid"]}}),
    );
    assert_eq!(ids(&p), ["pricey/m1", "mid/m1", "cheap/m1"]);
    assert_eq!(whys(&p), ["order", "order", "price"]);
    // With a sort, the rest follow it.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "tie", "provider": {"order": ["cheap"], "sort": "price"}}),
    );
    assert_eq!(ids(&p), ["cheap/tie", "mid/tie", "pricey/tie"]);
}

#[test]
fn sort_by_price_is_deterministic_and_ties_keep_policy_order() {
    let (sel, snap) = (selector(), snapshot());
    for _ in 0..20 {
        let p = plan(
            &sel,
            &snap,
            json!({"model": "m1", "provider": {"sort": "price"}}),
        );
        assert_eq!(ids(&p), ["cheap/m1", "mid/m1", "pricey/m1"]);
        assert_eq!(whys(&p), ["price"; 3]);
        let scores: Vec<_> = p.candidates.iter().map(|c| c.score).collect();
        assert_eq!(scores, [Some(2.0), Some(4.0), Some(6.0)]);
        let p = plan(
            &sel,
            &snap,
            json!({"model": "tie", "provider": {"sort": "price"}}),
        );
        // mid is cheapest; pricey and cheap tie at 2 and keep file order.
        assert_eq!(ids(&p), ["mid/tie", "pricey/tie", "cheap/tie"]);
    }
}

#[test]
fn sort_by_latency_and_throughput_follow_recorded_health() {
    let (sel, snap) = (selector(), snapshot());
    let now = Instant::now();
    feed(&sel, "mid/m1", 900, 40, now);
    feed(&sel, "cheap/m1", 200, 20, now);
    feed(&sel, "pricey/m1", 500, 120, now);

    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"sort": "latency"}}),
    );
    assert_eq!(ids(&p), ["cheap/m1", "pricey/m1", "mid/m1"]);
    assert_eq!(whys(&p), ["latency"; 3]);
    let first = p.candidates[0].score.unwrap();
    assert!((first - 0.2).abs() < 1e-9, "{first}");

    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"sort": "throughput"}}),
    );
    assert_eq!(ids(&p), ["pricey/m1", "mid/m1", "cheap/m1"]);
    let first = p.candidates[0].score.unwrap();
    assert!((first - 120.0).abs() < 1e-6, "{first}");

    // The object form means the same.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"sort": {"by": "throughput"}}}),
    );
    assert_eq!(ids(&p), ["pricey/m1", "mid/m1", "cheap/m1"]);
}

#[test]
fn unmeasured_endpoints_get_the_median_as_a_neutral_prior() {
    let (sel, snap) = (selector(), snapshot());
    let now = Instant::now();
    feed(&sel, "cheap/m1", 100, 10, now);
    feed(&sel, "pricey/m1", 100, 90, now);
    // mid/m1 has no data: prior = median(10, 90) = 50, between the two.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"sort": "throughput"}}),
    );
    assert_eq!(ids(&p), ["pricey/m1", "mid/m1", "cheap/m1"]);
    assert_eq!(p.candidates[1].score, Some(50.0));
}

#[test]
fn partition_model_keeps_fallback_models_behind_partition_none_mixes_them() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(
        &sel,
        &snap,
        json!({"models": ["m1", "m2"], "provider": {"sort": {"by": "price", "partition": "model"}}}),
    );
    assert_eq!(
        ids(&p),
        ["cheap/m1", "mid/m1", "pricey/m1", "other/m2", "mid/m2"]
    );
    let p = plan(
        &sel,
        &snap,
        json!({"models": ["m1", "m2"], "provider": {"sort": {"by": "price", "partition": "none"}}}),
    );
    assert_eq!(
        p.prefs.sort.map(|s| s.partition()),
        Some(SortPartition::None)
    );
    // other/m2 (1) first; cheap/m1 and mid/m2 tie at 2 and keep fallback order.
    assert_eq!(
        ids(&p),
        ["other/m2", "cheap/m1", "mid/m2", "mid/m1", "pricey/m1"]
    );
}

#[test]
fn floor_and_nitro_suffixes_set_the_sort() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(&sel, &snap, json!({"model": "m1:floor"}));
    assert_eq!(p.prefs.sort, Some(SortSpec::By(SortBy::Price)));
    assert_eq!(ids(&p), ["cheap/m1", "mid/m1", "pricey/m1"]);
    assert_eq!(p.models, vec![Arc::<str>::from("m1")]);

    let now = Instant::now();
    feed(&sel, "mid/m1", 100, 300, now);
    feed(&sel, "cheap/m1", 100, 30, now);
    feed(&sel, "pricey/m1", 100, 3, now);
    let p = plan(&sel, &snap, json!({"model": "one:nitro"}));
    assert_eq!(p.prefs.sort, Some(SortSpec::By(SortBy::Throughput)));
    assert_eq!(ids(&p), ["mid/m1", "cheap/m1", "pricey/m1"]);

    // On a fallback name, keeping a partition the request asked for.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m2", "models": ["m1:floor"], "provider": {"sort": {"partition": "none"}}}),
    );
    let sort = p.prefs.sort.unwrap();
    assert_eq!(
        (sort.by(), sort.partition()),
        (Some(SortBy::Price), SortPartition::None)
    );
    assert_eq!(ids(&p)[0], "other/m2");
}

#[test]
fn preferred_thresholds_push_down_but_never_remove() {
    let (sel, snap) = (selector(), snapshot());
    let now = Instant::now();
    feed(&sel, "cheap/m1", 300, 10, now);
    feed(&sel, "mid/m1", 300, 100, now);
    // pricey/m1 has no data: never pushed down.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"sort": "price", "preferred_min_throughput": 50}}),
    );
    assert_eq!(ids(&p), ["mid/m1", "pricey/m1", "cheap/m1"]);
    assert_eq!(whys(&p), ["price", "price", "below_preferred"]);
    assert!(p.excluded.is_empty());

    // Percentile form: every given cutoff must hold. cheap's TTFT is 0.3 s everywhere.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"sort": "price",
               "preferred_max_latency": {"p50": 1.0, "p90": 0.25}}}),
    );
    assert_eq!(ids(&p), ["pricey/m1", "cheap/m1", "mid/m1"]);
    assert_eq!(whys(&p), ["price", "below_preferred", "below_preferred"]);

    // Below-preferred endpoints fall behind a fallback model that meets the threshold.
    let p = plan(
        &sel,
        &snap,
        json!({"models": ["m1", "m2"], "provider": {"sort": "price", "preferred_max_latency": 0.1}}),
    );
    assert_eq!(
        ids(&p),
        ["pricey/m1", "other/m2", "mid/m2", "cheap/m1", "mid/m1"]
    );
}

#[test]
fn default_balancing_distributes_by_inverse_square_price() {
    let (sel, snap) = (selector(), snapshot());
    let trials = 2000;
    let mut firsts: HashMap<String, usize> = HashMap::new();
    for _ in 0..trials {
        let p = plan(&sel, &snap, json!({"model": "m1"}));
        assert_eq!(whys(&p), ["weighted", "price", "price"]);
        // The rest follow cheapest first.
        let rest: Vec<f64> = p.candidates[1..]
            .iter()
            .map(|c| c.endpoint.pricing.prompt)
            .collect();
        assert!(rest.windows(2).all(|w| w[0] <= w[1]), "{rest:?}");
        *firsts
            .entry(p.candidates[0].endpoint.id.to_string())
            .or_default() += 1;
    }
    // Prices 2, 4, 6 -> weights 1/4, 1/16, 1/36.
    let w = [1.0 / 4.0, 1.0 / 16.0, 1.0 / 36.0];
    let total: f64 = w.iter().sum();
    // Tolerance: each share within 3 percentage points of its expectation (about 3 standard
    // deviations of the largest share over 2,000 draws).
    for (id, weight) in ["cheap/m1", "mid/m1", "pricey/m1"].iter().zip(w) {
        let share = *firsts.get(*id).unwrap_or(&0) as f64 / trials as f64;
        let expected = weight / total;
        assert!(
            (share - expected).abs() <= 0.03,
            "{id}: share {share:.3}, expected {expected:.3}"
        );
    }
}

#[test]
fn free_endpoints_do_not_divide_by_zero() {
    let mut pol = policy();
    pol["models"]["tie"]["endpoints"][2]["pricing"] = json!({"prompt": 0, "completion": 0});
    let (sel, snap) = (selector(), compile(&pol));
    for _ in 0..50 {
        let p = plan(&sel, &snap, json!({"model": "tie"}));
        assert_eq!(ids(&p)[0], "mid/tie");
        let share = p.candidates[0].score.unwrap();
        assert!(share.is_finite() && share > 0.99, "{share}");
    }
}

#[test]
fn an_endpoint_with_a_recent_outage_never_comes_first() {
    let (sel, snap) = (selector(), snapshot());
    let now = Instant::now();
    outage(&sel, "cheap/m1", now);
    for _ in 0..300 {
        let p = plan(&sel, &snap, json!({"model": "m1"}));
        assert_eq!(ids(&p)[2], "cheap/m1");
        assert_eq!(p.candidates[2].why, "outage");
    }
    // Every endpoint out: all still tried, cheapest first.
    outage(&sel, "mid/m1", now);
    outage(&sel, "pricey/m1", now);
    let p = plan(&sel, &snap, json!({"model": "m1"}));
    assert_eq!(ids(&p), ["cheap/m1", "mid/m1", "pricey/m1"]);
    assert_eq!(whys(&p), ["outage"; 3]);
}

#[test]
fn allow_fallbacks_false_keeps_only_the_first() {
    let (sel, snap) = (selector(), snapshot());
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"allow_fallbacks": false, "sort": "price"}}),
    );
    assert_eq!(ids(&p), ["cheap/m1"]);
    assert_eq!(
        excluded(&p),
        [
            ("mid/m1", ExclusionReason::AllowFallbacks),
            ("pricey/m1", ExclusionReason::AllowFallbacks)
        ]
    );
    // With `order`, the listed providers are the "custom" ones that stay.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"allow_fallbacks": false, "order": ["pricey", "mid"]}}),
    );
    assert_eq!(ids(&p), ["pricey/m1", "mid/m1"]);
    assert_eq!(
        excluded(&p),
        [("cheap/m1", ExclusionReason::AllowFallbacks)]
    );
    assert!(p.excluded[0].detail.contains("provider.order"));
    // Model fallbacks are a separate mechanism: each model keeps its first endpoint.
    let p = plan(
        &sel,
        &snap,
        json!({"models": ["m1", "m2"], "provider": {"allow_fallbacks": false, "sort": "price"}}),
    );
    assert_eq!(ids(&p), ["cheap/m1", "other/m2"]);
    // `order` naming only filtered-out providers leaves nothing.
    let e = try_plan(
        &sel,
        &snap,
        json!({"model": "m1", "provider": {"allow_fallbacks": false, "order": ["cheap"],
               "ignore": ["cheap"]}}),
    )
    .unwrap_err();
    assert_eq!(failure(&e).code(), "no_endpoints");
}

// ---- sticky sessions ----------------------------------------------------------------------

#[test]
fn sticky_session_stays_then_moves_on_outage() {
    let (sel, snap) = (selector(), snapshot());
    let now = Instant::now();
    sel.sessions()
        .record("m1".into(), "s-1".into(), "pricey/m1".into(), now);
    for _ in 0..50 {
        let p = plan(&sel, &snap, json!({"model": "m1", "session_id": "s-1"}));
        assert_eq!(ids(&p)[0], "pricey/m1");
        assert_eq!(p.candidates[0].why, "sticky");
        assert_eq!(p.candidates.len(), 3);
        assert_eq!(p.session.as_deref(), Some("s-1"));
    }
    // The header names a session as well.
    let mut headers = HeaderMap::new();
    headers.insert(SESSION_HEADER, HeaderValue::from_static("s-1"));
    let p = sel
        .plan(&snap, &body(json!({"model": "m1"})), &headers, now)
        .unwrap();
    assert_eq!(ids(&p)[0], "pricey/m1");
    // Another session, or the same one on another first model, is not sticky.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "session_id": "s-2", "provider": {"sort": "price"}}),
    );
    assert_eq!(ids(&p)[0], "cheap/m1");
    // Not when the endpoint is no longer a candidate.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "session_id": "s-1", "provider": {"ignore": ["pricey"]}}),
    );
    assert!(!ids(&p).contains(&"pricey/m1"));

    outage(&sel, "pricey/m1", now);
    let p = sel
        .plan(
            &snap,
            &body(json!({"model": "m1", "session_id": "s-1"})),
            &HeaderMap::new(),
            now,
        )
        .unwrap();
    assert_ne!(ids(&p)[0], "pricey/m1");
    assert!(!whys(&p).contains(&"sticky"));
    // Also under a price sort, which otherwise reads no live health.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "session_id": "s-1", "provider": {"sort": "price"}}),
    );
    assert_eq!(ids(&p), ["cheap/m1", "mid/m1", "pricey/m1"]);
    assert!(!whys(&p).contains(&"sticky"));
}

#[tokio::test(start_paused = true)]
async fn layer_inserts_the_plan_and_records_successful_sessions() {
    let sel = Arc::new(selector());
    let snap = Arc::new(snapshot());
    let inner = service_fn(|req: Request<Arc<ParsedRequest>>| async move {
        let plan = req.extensions().get::<Arc<Plan>>().cloned().unwrap();
        let ep = Arc::clone(&plan.candidates[0].endpoint);
        let status = if req.body().max_tokens() == Some(1) {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::OK
        };
        let mut resp = Response::builder().status(status).body(()).unwrap();
        resp.extensions_mut().insert(Served {
            endpoint: Arc::clone(&ep.id),
            provider: Arc::clone(&ep.provider.id),
            model: Arc::clone(&ep.model),
            upstream_model: Arc::clone(&ep.upstream_model),
            attempts: 1,
            usage: None,
        });
        Ok::<_, BoxError>(resp)
    });
    let mut svc = SelectLayer::new(Arc::clone(&sel)).layer(inner);
    let call = |body_json: Value| {
        let mut req = Request::new(Arc::new(body(body_json)));
        req.extensions_mut().insert(Arc::clone(&snap));
        req
    };

    // A failed response teaches nothing.
    let resp = svc
        .ready()
        .await
        .unwrap()
        .call(call(
            json!({"model": "m1", "session_id": "s", "max_tokens": 1,
                          "provider": {"sort": "price"}}),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(sel.sessions().is_empty());

    let resp = svc
        .ready()
        .await
        .unwrap()
        .call(call(
            json!({"model": "m1", "session_id": "s", "provider": {"order": ["mid"]}}),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got = sel
        .sessions()
        .get(&"m1".into(), &"s".into(), Instant::now());
    assert_eq!(got.as_deref(), Some("mid/m1"));

    // Now sticky even against a price sort.
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "session_id": "s", "provider": {"sort": "price"}}),
    );
    assert_eq!(ids(&p)[0], "mid/m1");

    // ... until it has been idle for ten minutes.
    tokio::time::advance(Duration::from_secs(600)).await;
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m1", "session_id": "s", "provider": {"sort": "price"}}),
    );
    assert_eq!(ids(&p)[0], "cheap/m1");

    // Refusals come back as errors, and nothing is called.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(call(
            json!({"model": "m1", "provider": {"max_price": {"prompt": 0}}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(failure(&err).code(), "no_endpoints");

    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(Arc::new(body(json!({"model": "m1"})))))
        .await
        .unwrap_err();
    assert_eq!(failure(&err).status(), StatusCode::INTERNAL_SERVER_ERROR);
}

// ---- explain ------------------------------------------------------------------------------

#[test]
fn explain_json_shows_candidates_stats_and_exclusions() {
    let (sel, snap) = (selector(), snapshot());
    feed(&sel, "mid/m1", 250, 80, Instant::now());
    let p = plan(
        &sel,
        &snap,
        json!({"model": "m3", "session_id": "abc", "provider": {"ignore": ["other"]}}),
    );
    let v = explain_json(&p, &snap, sel.health());
    assert_eq!(v["route"], "by-match");
    assert_eq!(v["models"], json!(["m2", "m1"]));
    assert_eq!(v["session"], "abc");
    assert_eq!(v["prefs"], json!({"sort": "price", "ignore": ["other"]}));
    let cands = v["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 4);
    assert_eq!(cands[0]["endpoint"], "mid/m2");
    assert_eq!(cands[0]["position"], 1);
    assert_eq!(cands[0]["why"], "price");
    assert_eq!(cands[0]["score"], 2.0);
    assert_eq!(cands[0]["stats"], Value::Null);
    let mid = cands.iter().find(|c| c["endpoint"] == "mid/m1").unwrap();
    assert_eq!(mid["provider"], "mid");
    assert_eq!(mid["upstream_model"], "mid-m1");
    assert_eq!(
        mid["pricing"],
        json!({"prompt": 2.0, "completion": 2.0, "request": 0.0})
    );
    assert_eq!(mid["context_length"], 8000);
    assert_eq!(mid["quantization"], "bf16");
    assert_eq!(mid["stats"]["samples"], 5);
    assert_eq!(mid["stats"]["ttft_s"]["p50"], 0.25);
    assert_eq!(mid["stats"]["throughput_tps"]["p50"], 80.0);
    let ex = v["excluded"].as_array().unwrap();
    assert_eq!(ex.len(), 1);
    assert_eq!(
        ex[0],
        json!({"endpoint": "other/m2", "provider": "other", "model": "m2",
               "reason": "ignore", "detail": "provider 'other' is listed in provider.ignore"})
    );
}
