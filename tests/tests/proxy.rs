//! The proxy end to end over raw HTTP: the real binary, simulated providers on random ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchyard_sim::{Behavior, Sim, SimConfig, expected_text, fingerprint, prompt_tokens};
use switchyard_tests::{Proxy, endpoint, post_json, send, sim_provider, sse_data};

const UPSTREAM_KEY: &str = "sk-upstream-secret-1";
const CLIENT_KEY: &str = "sk-client-should-never-leave";

async fn one_sim(name: &str, behavior: Behavior) -> Sim {
    Sim::start(SimConfig {
        name: name.into(),
        api_key: Some(UPSTREAM_KEY.into()),
        default: behavior,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn policy(sim: &Sim) -> Value {
    json!({
        "providers": { "alpha": sim_provider(sim, Some("ALPHA_KEY")) },
        "models": {
            "chat-small": {
                "aliases": ["small"],
                "context_length": 32000,
                "endpoints": [ endpoint("alpha", "alpha-small-v3", 0.5, 1.5) ]
            }
        },
        "defaults": { "limits": { "max_request_bytes": 4096 } }
    })
}

fn start(sim: &Sim) -> Proxy {
    Proxy::start_with_env(&policy(sim), &[("ALPHA_KEY", UPSTREAM_KEY)])
}

fn chat(stream: bool) -> Value {
    json!({
        "model": "small",
        "messages": [{"role": "user", "content": "Tell me about switchyards."}],
        "stream": stream,
        "temperature": 0.2,
        "provider": {"sort": "price"},
        "models": ["chat-small"],
        "session_id": "s-1",
    })
}

fn expected_cost(prompt: u64, completion: u64) -> f64 {
    (prompt as f64 * 0.5 + completion as f64 * 1.5) / 1e6
}

#[tokio::test(flavor = "multi_thread")]
async fn non_streaming_completion_is_rewritten_priced_and_keyed() {
    let sim = one_sim("alpha", Behavior::ok().chunks(6)).await;
    let proxy = start(&sim);
    let req = chat(false);
    let resp = send(
        "POST",
        &proxy.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {CLIENT_KEY}")),
        ],
        serde_json::to_vec(&req).unwrap(),
    )
    .await;
    assert_eq!(
        resp.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&resp.body)
    );
    let v = resp.json();

    // The served model is the policy's id, the upstream's own name is in metadata.
    assert_eq!(v["model"], "chat-small");
    assert_eq!(v["provider"], "alpha");
    assert_eq!(v["metadata"]["upstream_model"], "alpha-small-v3");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        expected_text("alpha", &Behavior::ok().chunks(6))
    );
    assert_eq!(resp.header("x-switchyard-provider"), Some("alpha"));
    assert_eq!(resp.header("x-switchyard-model"), Some("chat-small"));
    assert_eq!(resp.header("x-switchyard-attempts"), Some("1"));
    assert!(
        resp.header("x-switchyard-request-id")
            .unwrap()
            .starts_with("gen-")
    );

    // Usage is the upstream's, cost is priced from the endpoint.
    let calls = sim.calls();
    assert_eq!(calls.len(), 1);
    let prompt = prompt_tokens(&calls[0].body);
    assert_eq!(v["usage"]["prompt_tokens"], prompt);
    assert_eq!(v["usage"]["completion_tokens"], 6);
    let cost = v["usage"]["cost"].as_f64().unwrap();
    assert!((cost - expected_cost(prompt, 6)).abs() < 1e-12, "{cost}");
    let header_cost: f64 = resp.header("x-switchyard-cost").unwrap().parse().unwrap();
    assert!((header_cost - cost).abs() < 1e-9);

    // What the upstream saw: its own key, never the client's; its model name; no routing fields.
    let call = &calls[0];
    assert_eq!(call.path, "/v1/chat/completions");
    assert_eq!(
        call.header("authorization"),
        Some(fingerprint(&format!("Bearer {UPSTREAM_KEY}")).as_str())
    );
    let seen: String = call
        .headers
        .iter()
        .map(|(k, v)| format!("{k}:{v}\n"))
        .collect();
    assert!(!seen.contains(CLIENT_KEY));
    assert!(!seen.contains(&fingerprint(&format!("Bearer {CLIENT_KEY}"))));
    assert_eq!(call.body["model"], "alpha-small-v3");
    assert_eq!(call.body["temperature"], 0.2);
    for stripped in ["provider", "models", "session_id"] {
        assert!(
            call.body.get(stripped).is_none(),
            "{stripped} went upstream"
        );
    }
    assert_eq!(call.body["messages"], req["messages"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_content_is_passed_through_identically_with_usage_and_cost() {
    let behavior = Behavior::ok().chunks(12);
    let sim = one_sim("alpha", behavior.clone()).await;
    let proxy = start(&sim);

    let mut req = chat(true);
    req["stream_options"] = json!({"include_usage": true});
    let resp = post_json(&proxy.url("/v1/chat/completions"), &req).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let events = sse_data(&resp.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let mut text = String::new();
    for c in &chunks {
        assert_eq!(c["model"], "chat-small");
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(s) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(s);
        }
    }
    assert_eq!(text, expected_text("alpha", &behavior));

    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    let calls = sim.calls();
    let prompt = prompt_tokens(&calls[0].body);
    assert_eq!(usage["usage"]["prompt_tokens"], prompt);
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    let cost = usage["usage"]["cost"].as_f64().unwrap();
    assert!((cost - expected_cost(prompt, 12)).abs() < 1e-12);
    assert_eq!(calls[0].body["stream_options"]["include_usage"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_is_requested_upstream_but_hidden_when_the_client_did_not_ask() {
    let sim = one_sim("alpha", Behavior::ok().chunks(4)).await;
    let proxy = start(&sim);
    let resp = post_json(&proxy.url("/v1/chat/completions"), &chat(true)).await;
    assert_eq!(resp.status, 200);
    let events = sse_data(&resp.body);
    assert!(
        events.iter().all(|d| !d.contains("\"prompt_tokens\"")),
        "{events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // The proxy still asked for usage, so it can meter the call.
    assert_eq!(sim.calls()[0].body["stream_options"]["include_usage"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_and_embeddings_are_proxied() {
    let sim = one_sim("alpha", Behavior::ok().chunks(3)).await;
    let proxy = start(&sim);

    let resp = post_json(
        &proxy.url("/v1/completions"),
        &json!({"model": "chat-small", "prompt": "Once upon a time"}),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let v = resp.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "chat-small");
    assert!(v["usage"]["cost"].as_f64().unwrap() > 0.0);

    let resp = post_json(
        &proxy.url("/v1/embeddings"),
        &json!({"model": "chat-small", "input": ["a", "bb"]}),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let v = resp.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["model"], "chat-small");
    let calls = sim.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].path, "/v1/completions");
    assert_eq!(calls[1].path, "/v1/embeddings");
}

#[tokio::test(flavor = "multi_thread")]
async fn models_list_shows_models_and_aliases() {
    let sim = one_sim("alpha", Behavior::ok()).await;
    let proxy = start(&sim);
    let resp = send("GET", &proxy.url("/v1/models"), &[], Vec::new()).await;
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat-small", "small"]);
    assert_eq!(v["data"][1]["alias_of"], "chat-small");
    assert_eq!(sim.call_count(), 0);
}

fn assert_openai_error(resp: &switchyard_tests::Answer, status: u16, code: &str) -> Value {
    assert_eq!(
        resp.status,
        status,
        "{}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(resp.header("x-should-retry"), Some("false"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert!(resp.header("x-switchyard-request-id").is_some());
    let v = resp.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(v["error"]["type"].is_string());
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_in_openai_shape_and_nothing_goes_upstream() {
    let sim = one_sim("alpha", Behavior::ok()).await;
    let proxy = start(&sim);
    let url = proxy.url("/v1/chat/completions");
    let json_ct = [("content-type", "application/json")];

    let r = send(
        "POST",
        &url,
        &json_ct,
        "{\"model\": \"small\", \"messages\": [",
    )
    .await;
    assert_openai_error(&r, 400, "invalid_json");

    let r = send("POST", &url, &json_ct, "[1, 2]").await;
    assert_openai_error(&r, 400, "invalid_body");

    let r = post_json(
        &url,
        &json!({"model": "small", "messages": [], "stream": "yes"}),
    )
    .await;
    let v = assert_openai_error(&r, 400, "invalid_parameter");
    assert_eq!(v["error"]["param"], "stream");

    let r = post_json(
        &url,
        &json!({"model": "gpt-9-ultra", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let v = assert_openai_error(&r, 404, "model_not_found");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-9-ultra")
    );

    // Over the policy's 4 KiB cap: declared by Content-Length, and streamed without one.
    let big =
        json!({"model": "small", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let r = post_json(&url, &big).await;
    assert_openai_error(&r, 413, "request_too_large");

    let r = send("GET", &url, &[], Vec::new()).await;
    assert_openai_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));

    let r = send("POST", &proxy.url("/v1/models"), &[], Vec::new()).await;
    assert_openai_error(&r, 405, "method_not_allowed");

    let r = send("POST", &proxy.url("/v2/anything"), &json_ct, "{}").await;
    assert_openai_error(&r, 404, "unknown_url");

    assert_eq!(
        sim.call_count(),
        0,
        "a refused request reached the upstream"
    );

    // And the proxy still serves afterwards.
    let r = post_json(&url, &chat(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.call_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_body_over_the_cap_is_refused() {
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    let sim = one_sim("alpha", Behavior::ok()).await;
    let proxy = start(&sim);
    // No Content-Length: the cap must hold while reading.
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..10)
        .map(|_| Ok(Frame::data(Bytes::from(vec![b' '; 1000]))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<StreamBody<_>>();
    let req = http::Request::post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(sim.call_count(), 0);
}
