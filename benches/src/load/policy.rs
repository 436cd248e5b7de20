//! The policy the real proxy runs under load: what a production sidecar would carry, not a
//! minimal one. Three models with model fallbacks, two or three endpoints each with their own
//! prices, budgets (a global daily cap far above anything the run can spend, and a tag
//! budget), breaker and retry defaults, and keys read from a file.

use std::net::SocketAddr;

use serde_json::{Value, json};

/// The non-streaming models, requested in turn.
pub const CHAT_MODELS: [&str; 2] = ["chat", "chat-large"];
/// The streaming model; its endpoints are the tickers.
pub const STREAM_MODEL: &str = "reasoner";
/// The budget tag every request carries (`x-switchyard-tag`).
pub const TAG: &str = "team-a";

/// Where the policy's providers are.
#[derive(Clone, Debug)]
pub struct Upstreams {
    /// Simulated providers: at least 5 (chat: 0, 1, 2; chat-large: 3, 4).
    pub sims: Vec<SocketAddr>,
    /// Stamping stream sources: at least 2 (reasoner).
    pub tickers: Vec<SocketAddr>,
}

const PARAMS: [&str; 8] = [
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "tools",
    "tool_choice",
    "response_format",
    "stream_options",
];

/// The policy, with every provider's key read from `key_file`. `max_in_flight` is the
/// per-endpoint concurrency cap: the default (256) would shed the idle-stream measurement.
pub fn policy(up: &Upstreams, key_file: &str, max_in_flight: u32) -> Value {
    let provider = |addr: &SocketAddr, data: &str| {
        json!({
            "api": "openai",
            "base_url": format!("http://{addr}/v1"),
            "api_key": { "file": key_file },
            "data_collection": data,
            "allow_private_network": true,
        })
    };
    let endpoint = |p: &str, upstream: &str, prompt: f64, completion: f64| {
        json!({
            "provider": p,
            "upstream_model": upstream,
            "pricing": { "prompt": prompt, "completion": completion },
            "max_output_tokens": 4096,
            "supported_parameters": PARAMS,
            "supports_prefill": true,
        })
    };
    let mut providers = serde_json::Map::new();
    for (i, addr) in up.sims.iter().enumerate() {
        let data = if i % 2 == 0 { "deny" } else { "allow" };
        providers.insert(format!("sim{i}"), provider(addr, data));
    }
    for (i, addr) in up.tickers.iter().enumerate() {
        providers.insert(format!("tick{i}"), provider(addr, "deny"));
    }
    json!({
        "providers": providers,
        "models": {
            "chat": {
                "aliases": ["gpt-4o-mini"],
                "context_length": 128000,
                "endpoints": [
                    endpoint("sim0", "chat-mini-2025", 0.15, 0.6),
                    endpoint("sim1", "chat-mini", 0.18, 0.7),
                    endpoint("sim2", "chat-mini-fp8", 0.12, 0.5),
                ],
            },
            "chat-large": {
                "aliases": ["gpt-4o"],
                "context_length": 128000,
                "endpoints": [
                    endpoint("sim3", "chat-large-2025", 2.5, 10.0),
                    endpoint("sim4", "chat-large", 3.0, 12.0),
                ],
            },
            "reasoner": {
                "aliases": ["o-mini"],
                "context_length": 200000,
                "endpoints": [
                    endpoint("tick0", "reasoner-v2", 1.1, 4.4),
                    endpoint("tick1", "reasoner-v2", 1.2, 4.8),
                ],
            },
        },
        "routes": {
            "chat": { "match_models": ["chat"], "models": ["chat", "chat-large"] },
            "large": { "match_models": ["chat-large"], "models": ["chat-large", "chat"] },
            "reasoning": {
                "match_models": ["reasoner"],
                "models": ["reasoner", "chat-large"],
                "timeouts": { "first_token": "30s" },
            },
        },
        "defaults": {
            "timeouts": { "connect": "2s", "first_token": "10s", "idle": "10s", "total": "120s" },
            "limits": { "max_in_flight_per_endpoint": max_in_flight },
        },
        "budgets": [
            { "id": "all", "scope": "global", "daily_usd": 1_000_000.0, "monthly_usd": 10_000_000.0 },
            { "id": "team-a", "scope": { "tag": TAG }, "daily_usd": 100_000.0 },
        ],
    })
}

/// A chat request of the size an application sends: system prompt, a user turn,
/// `max_tokens`, `temperature`. `stream` asks for usage in the stream, as SDKs do.
pub fn chat_body(model: &str, stream: bool) -> bytes::Bytes {
    let mut body = json!({
        "model": model,
        "messages": [
            { "role": "system", "content": "You are a concise assistant for an internal support tool. Answer in one short paragraph." },
            { "role": "user", "content": "Summarise the difference between a circuit breaker and a retry budget in a proxy, for an on-call engineer." },
        ],
        "max_tokens": 256,
        "temperature": 0.2,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({ "include_usage": true });
    }
    bytes::Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use switchyard_policy::{Format, SystemEnv, compile};

    use super::*;

    fn upstreams() -> Upstreams {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Upstreams {
            sims: (1..=5).map(a).collect(),
            tickers: vec![a(6), a(7)],
        }
    }

    #[test]
    fn policy_compiles_and_is_realistic() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("provider.key");
        std::fs::write(&key, "sk-bench\n").unwrap();
        let text = policy(&upstreams(), &key.display().to_string(), 4096).to_string();
        let compiled = compile(&text, Format::Json, Path::new("."), &SystemEnv)
            .map_err(|d| format!("{d:?}"))
            .unwrap();
        let s = &compiled.snapshot;
        assert_eq!(s.providers().len(), 7);
        assert_eq!(s.models().len(), 3);
        assert_eq!(s.endpoints().len(), 7);
        assert_eq!(s.routes().len(), 3);
        assert_eq!(s.budgets().len(), 2);
    }

    #[test]
    fn bodies_are_json_chat_requests() {
        let b: Value = serde_json::from_slice(&chat_body("chat", false)).unwrap();
        assert_eq!(b["model"], "chat");
        assert_eq!(b["stream"], false);
        assert!(b.get("stream_options").is_none());
        let b: Value = serde_json::from_slice(&chat_body(STREAM_MODEL, true)).unwrap();
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
    }
}
