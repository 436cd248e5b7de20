//! The official OpenAI Python SDK as the client: it must parse every response Switchyard sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use switchyard_sim::{Behavior, Sim, SimConfig, expected_text, fingerprint};
use switchyard_tests::{Proxy, endpoint, run_python, sim_provider};

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk_end_to_end() {
    let behavior = Behavior::ok().chunks(7);
    let sim = Sim::start(SimConfig {
        name: "alpha".into(),
        api_key: Some("sk-up-42".into()),
        default: behavior.clone(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let policy = json!({
        "providers": { "alpha": sim_provider(&sim, Some("ALPHA_KEY")) },
        "models": { "chat-x": { "aliases": ["x"], "endpoints": [ endpoint("alpha", "alpha-x-1", 2.0, 6.0) ] } }
    });
    let proxy = Proxy::start_with_env(&policy, &[("ALPHA_KEY", "sk-up-42")]);
    let base = proxy.url("/v1");
    // The SDK call runs in a subprocess; keep the runtime free for the in-process sim.
    let out = tokio::task::spawn_blocking(move || run_python("openai_sdk.py", &[&base, "x"], &[]))
        .await
        .unwrap();

    let text = expected_text("alpha", &behavior);
    let ns = &out["non_stream"];
    assert_eq!(ns["model"], "chat-x");
    assert_eq!(ns["provider"], "alpha");
    assert_eq!(ns["content"], text.as_str());
    assert_eq!(ns["finish_reason"], "stop");
    assert_eq!(ns["completion_tokens"], 7);
    let prompt = ns["prompt_tokens"].as_u64().unwrap();
    let want = (prompt as f64 * 2.0 + 7.0 * 6.0) / 1e6;
    assert!((ns["cost"].as_f64().unwrap() - want).abs() < 1e-12, "{ns}");
    assert_eq!(ns["headers"]["x-switchyard-provider"], "alpha");
    assert_eq!(ns["headers"]["x-switchyard-model"], "chat-x");

    let st = &out["stream"];
    assert_eq!(st["content"], text.as_str());
    assert_eq!(st["models"], json!(["chat-x"]));
    assert_eq!(st["finish_reason"], "stop");
    assert_eq!(st["usage"]["completion_tokens"], 7);
    assert!(st["usage"]["cost"].as_f64().unwrap() > 0.0);
    assert_eq!(out["stream_plain"]["content"], text.as_str());

    assert_eq!(out["models"], json!(["chat-x", "x"]));
    assert_eq!(out["not_found"]["status"], 404);
    assert_eq!(out["not_found"]["code"], "model_not_found");
    assert_eq!(out["embeddings"]["count"], 2);

    // Four upstream calls (the model list and the 404 never left the proxy), every one with the provider's key.
    let calls = sim.calls();
    assert_eq!(
        calls.len(),
        4,
        "{:?}",
        calls.iter().map(|c| &c.path).collect::<Vec<_>>()
    );
    for c in &calls {
        assert_eq!(
            c.header("authorization"),
            Some(fingerprint("Bearer sk-up-42").as_str())
        );
        assert!(c.body.get("provider").is_none() && c.body.get("models").is_none());
    }
}
