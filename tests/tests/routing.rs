//! OpenRouter-style routing end to end: the real binary, one simulated provider per endpoint,
//! and for every rule the assertion that matters — which upstream received the request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_sim::{Behavior, Sim, SimConfig};
use switchyard_tests::{Proxy, post_json, send, sim_provider};

struct Fleet {
    a: Sim,
    b: Sim,
    c: Sim,
}

impl Fleet {
    async fn start() -> Fleet {
        let sim = |name: &str| {
            Sim::start(SimConfig {
                name: name.into(),
                default: Behavior::ok().chunks(3),
                ..SimConfig::default()
            })
        };
        Fleet {
            a: sim("a").await.unwrap(),
            b: sim("b").await.unwrap(),
            c: sim("c").await.unwrap(),
        }
    }

    fn counts(&self) -> [usize; 3] {
        [
            self.a.call_count(),
            self.b.call_count(),
            self.c.call_count(),
        ]
    }

    fn clear(&self) {
        self.a.clear_calls();
        self.b.clear_calls();
        self.c.clear_calls();
    }

    /// Model `m` on a (cheap-ish, no tools), b (dear, tools, data-collection deny provider),
    /// c (cheapest, tools, fp8); model `m2` on c only with a larger window.
    fn policy(&self) -> Value {
        let mut b = sim_provider(&self.b, None);
        b["data_collection"] = json!("deny");
        b["zdr"] = json!(true);
        json!({
            "providers": {
                "a": sim_provider(&self.a, None),
                "b": b,
                "c": sim_provider(&self.c, None),
            },
            "models": {
                "m": {
                    "context_length": 8000,
                    "endpoints": [
                        { "provider": "a", "upstream_model": "a-m", "pricing": {"prompt": 1.0, "completion": 1.0},
                          "max_output_tokens": 1000, "supported_parameters": ["temperature", "max_tokens"] },
                        { "provider": "b", "upstream_model": "b-m", "pricing": {"prompt": 4.0, "completion": 4.0},
                          "max_output_tokens": 1000, "supported_parameters": ["temperature", "max_tokens", "tools", "tool_choice"] },
                        { "provider": "c", "upstream_model": "c-m", "pricing": {"prompt": 0.5, "completion": 0.5},
                          "max_output_tokens": 1000, "quantization": "fp8",
                          "supported_parameters": ["temperature", "max_tokens", "tools", "tool_choice"] }
                    ]
                },
                "eq": {
                    "endpoints": [
                        { "provider": "a", "upstream_model": "a-eq", "pricing": {"prompt": 1.0, "completion": 1.0} },
                        { "provider": "c", "upstream_model": "c-eq", "pricing": {"prompt": 1.0, "completion": 1.0} }
                    ]
                },
                "m3": {
                    "aliases": ["gpt-legacy"],
                    "endpoints": [
                        { "provider": "a", "upstream_model": "a-m3", "pricing": {"prompt": 1.0, "completion": 1.0} }
                    ]
                },
                "m2": {
                    "aliases": ["big"],
                    "context_length": 200000,
                    "endpoints": [
                        { "provider": "c", "upstream_model": "c-m2", "pricing": {"prompt": 2.0, "completion": 2.0},
                          "max_output_tokens": 8000 }
                    ]
                }
            },
            "routes": {
                "fast": { "models": ["m2"], "provider": { "sort": "price" } },
                "legacy": { "match_models": ["gpt-legacy"], "models": ["m"], "provider": { "order": ["b"] } }
            }
        })
    }
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn ask(proxy: &Proxy, body: &Value) -> switchyard_tests::Answer {
    post_json(&proxy.url("/v1/chat/completions"), body).await
}

async fn ask_ok(proxy: &Proxy, body: &Value) -> Value {
    let r = ask(proxy, body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn order_only_and_ignore_decide_the_upstream() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy());

    for _ in 0..3 {
        let v = ask_ok(&proxy, &chat(json!({"provider": {"order": ["c", "a"]}}))).await;
        assert_eq!(v["provider"], "c");
    }
    assert_eq!(f.counts(), [0, 0, 3]);

    f.clear();
    ask_ok(&proxy, &chat(json!({"provider": {"only": ["b"]}}))).await;
    ask_ok(&proxy, &chat(json!({"provider": {"ignore": ["a", "c"]}}))).await;
    assert_eq!(f.counts(), [0, 2, 0]);

    // data_collection: deny and zdr: true leave only b.
    f.clear();
    ask_ok(
        &proxy,
        &chat(json!({"provider": {"data_collection": "deny"}})),
    )
    .await;
    ask_ok(&proxy, &chat(json!({"provider": {"zdr": true}}))).await;
    // quantizations: only c declares fp8.
    ask_ok(
        &proxy,
        &chat(json!({"provider": {"quantizations": ["fp8"]}})),
    )
    .await;
    assert_eq!(f.counts(), [0, 2, 1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_skip_an_endpoint_without_tool_support() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy());
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);

    // a is first in order but lacks tools: with require_parameters...
    let v = ask_ok(
        &proxy,
        &chat(
            json!({"tools": tools, "provider": {"order": ["a", "b"], "require_parameters": true}}),
        ),
    )
    .await;
    assert_eq!(v["provider"], "b");
    // ...and without it (tool use alone requires support).
    let v = ask_ok(
        &proxy,
        &chat(json!({"tools": tools, "provider": {"order": ["a", "b"]}})),
    )
    .await;
    assert_eq!(v["provider"], "b");
    assert_eq!(f.counts(), [0, 2, 0]);
    assert!(f.b.calls()[0].body["tools"].is_array());

    // require_parameters with a parameter nobody declares: nothing left.
    let r = ask(
        &proxy,
        &chat(json!({"logit_bias": {"1": 1}, "provider": {"require_parameters": true}})),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "no_endpoints");
    // Without require_parameters the undeclared parameter is dropped for the endpoint instead.
    f.clear();
    ask_ok(
        &proxy,
        &chat(json!({"logit_bias": {"1": 1}, "provider": {"order": ["a"]}})),
    )
    .await;
    assert_eq!(f.counts(), [1, 0, 0]);
    assert!(
        f.a.calls()[0].body.get("logit_bias").is_none(),
        "undeclared parameter sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_price_below_every_endpoint_is_a_404_listing_each_exclusion() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy());
    let r = ask(
        &proxy,
        &chat(json!({"provider": {"max_price": {"prompt": 0.1, "completion": 0.1}}})),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let v = r.json();
    assert_eq!(v["error"]["type"], "no_endpoints");
    let message = v["error"]["message"].as_str().unwrap();
    for ep in ["a/m", "b/m", "c/m"] {
        assert!(message.contains(ep), "{message}");
    }
    let excluded = v["error"]["metadata"]["excluded_by"].as_array().unwrap();
    assert_eq!(excluded.len(), 3);
    assert!(
        excluded.iter().all(|e| e["reason"] == "max_price"),
        "{excluded:?}"
    );
    assert_eq!(f.counts(), [0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sort_price_and_floor_are_deterministic() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy());
    for _ in 0..10 {
        ask_ok(&proxy, &chat(json!({"provider": {"sort": "price"}}))).await;
    }
    for _ in 0..5 {
        ask_ok(&proxy, &chat(json!({"model": "m:floor"}))).await;
    }
    assert_eq!(f.counts(), [0, 0, 15]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sort_latency_follows_the_measured_latency() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy());
    // Measurements for a and c (b stays out of it: the sorted requests ignore it).
    let body = |order: &str| chat(json!({"provider": {"order": [order]}}));
    for _ in 0..3 {
        ask_ok(&proxy, &body("a")).await;
        ask_ok(&proxy, &body("c")).await;
    }
    // c becomes slow; its next answers are measured.
    f.c.set_config(SimConfig {
        name: "c".into(),
        default: Behavior::ok()
            .chunks(3)
            .headers_delay(Duration::from_millis(400)),
        ..SimConfig::default()
    });
    for _ in 0..4 {
        ask_ok(&proxy, &body("c")).await;
    }
    // Summaries refresh at most every 250 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.clear();
    for _ in 0..5 {
        let v = ask_ok(
            &proxy,
            &chat(json!({"provider": {"sort": "latency", "ignore": ["b"]}})),
        )
        .await;
        assert_eq!(v["provider"], "a");
    }
    assert_eq!(f.counts(), [5, 0, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_in_an_outage_gets_no_first_attempts() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy());
    // c (the cheapest, so the likeliest first pick) fails three times in a row.
    f.c.set_config(SimConfig {
        name: "c".into(),
        default: Behavior::ok().status(503),
        ..SimConfig::default()
    });
    for _ in 0..3 {
        let r = ask(
            &proxy,
            &chat(json!({"provider": {"order": ["c"], "allow_fallbacks": false}})),
        )
        .await;
        // The endpoint failed (and its same-endpoint retry too): nothing else was allowed.
        assert_eq!(r.status, 502);
    }
    f.clear();
    for _ in 0..20 {
        ask_ok(&proxy, &chat(json!({"provider": {"ignore": ["b"]}}))).await;
    }
    assert_eq!(
        f.counts(),
        [20, 0, 0],
        "default balancing sent first attempts to an endpoint in an outage"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn model_fallbacks_aliases_routes_and_presets() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy());

    // Every endpoint of m is excluded by max_tokens; the request moves to m2.
    let v = ask_ok(
        &proxy,
        &chat(json!({"models": ["m", "big"], "max_tokens": 4000})),
    )
    .await;
    assert_eq!(v["model"], "m2");
    assert_eq!(f.c.calls()[0].body["model"], "c-m2");

    // A preset names a route, whose models and preferences apply.
    let v = ask_ok(&proxy, &chat(json!({"model": "@preset/fast"}))).await;
    assert_eq!(v["model"], "m2");
    // A route matched by model name: the app says "gpt-legacy" (an alias of m3) and gets
    // route "legacy", which serves it with m from provider b.
    let v = ask_ok(&proxy, &chat(json!({"model": "gpt-legacy"}))).await;
    assert_eq!(v["model"], "m");
    assert_eq!(v["provider"], "b");
    // The route header.
    let r = send(
        "POST",
        &proxy.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("x-switchyard-route", "fast"),
        ],
        serde_json::to_vec(&chat(json!({}))).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "m2");
    // An unknown preset is a clear 404.
    let r = ask(&proxy, &chat(json!({"model": "@preset/nope"}))).await;
    assert_eq!(r.status, 404);
    // A malformed provider object is the caller's error, naming the field.
    let r = ask(&proxy, &chat(json!({"provider": {"sort": "cheapest"}}))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "provider");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sticky_session_stays_then_moves_when_its_endpoint_fails() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy());
    // Two endpoints at the same price: without stickiness, eight answers from the same one
    // would be a 1-in-128 coincidence.
    let session = |id: &str| chat(json!({"model": "eq", "session_id": id}));

    let first = ask_ok(&proxy, &session("s-1")).await["provider"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..8 {
        let v = ask_ok(&proxy, &session("s-1")).await;
        assert_eq!(
            v["provider"],
            first.as_str(),
            "session left a healthy endpoint"
        );
    }

    // The session's endpoint goes down (three failures: an outage).
    let (down, other) = if first == "a" {
        (&f.a, "c")
    } else {
        (&f.c, "a")
    };
    down.set_config(SimConfig {
        name: first.clone(),
        default: Behavior::ok().status(500),
        ..SimConfig::default()
    });
    for _ in 0..3 {
        let r = ask(
            &proxy,
            &chat(json!({"model": "eq", "provider": {"order": [first.as_str()], "allow_fallbacks": false}})),
        )
        .await;
        assert_eq!(r.status, 502);
    }
    // The admin view agrees: the session's endpoint is in an outage.
    let providers = send("GET", &proxy.admin_url("/admin/providers"), &[], Vec::new())
        .await
        .json();
    let down_id = format!("{first}/eq");
    let entry = providers["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == down_id.as_str())
        .unwrap();
    assert_eq!(entry["recent_outage"], true, "{entry}");
    for _ in 0..5 {
        let v = ask_ok(&proxy, &session("s-1")).await;
        assert_eq!(
            v["provider"], other,
            "session stayed on an endpoint in an outage"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_candidates_and_exclusions() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy());
    let body = chat(json!({"provider": {"order": ["b", "a"], "quantizations": ["fp8", "bf16"]}}));

    // The admin endpoint, with live state.
    let r = post_json(&proxy.admin_url("/admin/explain"), &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let excluded = v["excluded"].as_array().unwrap();
    let reasons: Vec<(&str, &str)> = excluded
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [("a/m", "quantizations"), ("b/m", "quantizations")]
    );
    assert_eq!(v["candidates"][0]["endpoint"], "c/m");

    // The CLI, from files.
    let req_file = proxy.dir.path().join("req.json");
    std::fs::write(&req_file, serde_json::to_vec(&body).unwrap()).unwrap();
    let out = std::process::Command::new(switchyard_tests::binary())
        .arg("explain")
        .arg("--policy")
        .arg(&proxy.policy_path)
        .arg(&req_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["candidates"][0]["endpoint"], "c/m");
    assert_eq!(v["excluded"].as_array().unwrap().len(), 2);
    // Explaining sends nothing upstream.
    assert_eq!(f.counts(), [0, 0, 0]);
}
