//! Whole-policy tests: text in, snapshot or diagnostics out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::*;

const OPENAI_KEY: &str = "sk-openai-secret-1234567890";
const ANTHROPIC_KEY: &str = "sk-ant-secret-0987654321";
const BASE: &str = "/etc/switchyard";
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

/// Variables and files in memory.
#[derive(Default)]
struct FakeEnv {
    vars: HashMap<String, String>,
    files: HashMap<PathBuf, Vec<u8>>,
}

impl FakeEnv {
    fn standard() -> Self {
        let mut env = FakeEnv::default();
        env.vars.insert("OPENAI_API_KEY".into(), OPENAI_KEY.into());
        env.files.insert(
            Path::new(BASE).join("keys/anthropic"),
            format!("{ANTHROPIC_KEY}\n").into_bytes(),
        );
        env.files
            .insert(Path::new(BASE).join("ca.pem"), PEM.as_bytes().to_vec());
        env
    }
}

impl Env for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

const FULL_JSON: &str = r#"{
    "providers": {
        "openai": {
            "api": "openai", "base_url": "https://api.openai.com/v1/",
            "api_key": {"env": "OPENAI_API_KEY"}, "data_collection": "deny", "zdr": true,
            "intercept_hosts": ["API.OpenAI.com."]
        },
        "anthropic": {
            "api": "anthropic", "base_url": "https://api.anthropic.com",
            "api_key": {"file": "keys/anthropic"}
        },
        "local": {
            "api": "openai", "base_url": "http://127.0.0.1:8080/v1",
            "allow_private_network": true, "ca_file": "ca.pem"
        },
        "azure": {"api": "azure", "base_url": "https://example.openai.azure.com:8443/openai"}
    },
    "models": {
        "gpt-4o": {
            "aliases": ["4o", "gpt4o"], "context_length": 128000,
            "endpoints": [
                {
                    "provider": "openai",
                    "pricing": {"prompt": 2.5, "completion": 10, "request": 0},
                    "max_output_tokens": 16384,
                    "supported_parameters": ["tools", "response_format", "tools", "temperature"],
                    "supports_prefill": false, "timeouts": {"first_token": "30s"}
                },
                {
                    "provider": "azure", "upstream_model": "gpt-4o-2024-08-06",
                    "pricing": {"prompt": 2.5, "completion": 10}, "quantization": "fp16"
                },
                {
                    "provider": "azure", "upstream_model": "gpt-4o-canary",
                    "pricing": {"prompt": 3, "completion": 12}
                }
            ]
        },
        "llama": {
            "endpoints": [{
                "provider": "local", "upstream_model": "meta-llama/Llama-3.1-8B",
                "pricing": {"request": 0.001}, "quantization": "fp8",
                "timeouts": {"connect": "1s", "idle": "2s", "attempt": "1m", "total": "5m"}
            }]
        },
        "claude": {
            "aliases": ["sonnet"],
            "endpoints": [{
                "provider": "anthropic", "upstream_model": "claude-sonnet-4-5",
                "pricing": {"prompt": 3, "completion": 15}, "supports_prefill": true,
                "supported_parameters": ["tools"]
            }]
        }
    },
    "routes": {
        "chat": {
            "match_models": ["4o", "claude"], "models": ["gpt-4o", "sonnet", "gpt4o"],
            "provider": {"sort": "price", "max_price": {"prompt": 5}},
            "timeouts": {"total": "120s"}, "retry": {"max_attempts": 5, "buffer": true},
            "max_tokens": 1200
        },
        "batch": {
            "match_models": ["llama"],
            "provider": {
                "sort": {"by": "throughput", "partition": "none"},
                "preferred_max_latency": {"p90": 3}
            },
            "retry": {
                "same_endpoint_retries": 0, "backoff_max": "4s", "budget_min_per_s": 2.5,
                "max_retry_after_wait": "3s", "continuation": false, "budget_ratio": 0.5
            }
        }
    },
    "defaults": {
        "provider": {"data_collection": "deny", "preferred_min_throughput": 20},
        "timeouts": {"connect": "2s", "idle": "15s", "attempt": "90s"},
        "retry": {"backoff_base": "250ms", "budget_ratio": 0.1},
        "breaker": {"consecutive_failures": 3, "window": "30s", "open_max": "4s"},
        "limits": {"max_request_bytes": 1048576, "header_read_timeout": "5s"}
    },
    "budgets": [
        {"id": "all", "scope": "global", "daily_usd": 50, "monthly_usd": 1000},
        {"id": "chat", "scope": {"route": "chat"}, "daily_usd": 10},
        {"id": "team-a", "scope": {"tag": "team-a"}, "monthly_usd": 200},
        {"id": "sonnet", "scope": {"model": "sonnet"}, "daily_usd": 5.5}
    ]
}"#;

fn full_json() -> Value {
    serde_json::from_str(FULL_JSON).unwrap()
}

/// The full policy compiled from its text, so file order is the text's.
fn full() -> Compiled {
    compile(
        FULL_JSON,
        Format::Json,
        Path::new(BASE),
        &FakeEnv::standard(),
    )
    .unwrap()
}

const FULL_YAML: &str = r#"
# The same policy as full_json(), written the way people write YAML.
providers:
  openai:
    api: openai
    base_url: https://api.openai.com/v1/
    api_key: {env: OPENAI_API_KEY}
    data_collection: deny
    zdr: true
    intercept_hosts: [API.OpenAI.com.]
  anthropic:
    api: anthropic
    base_url: https://api.anthropic.com
    api_key:
      file: keys/anthropic
  local:
    api: openai
    base_url: http://127.0.0.1:8080/v1
    allow_private_network: true
    ca_file: ca.pem
  azure:
    api: azure
    base_url: https://example.openai.azure.com:8443/openai
models:
  gpt-4o:
    aliases: [4o, gpt4o]
    context_length: 128000
    endpoints:
      - provider: openai
        pricing: {prompt: 2.5, completion: 10, request: 0}
        max_output_tokens: 16384
        supported_parameters: [tools, response_format, tools, temperature]
        supports_prefill: false
        timeouts: {first_token: 30s}
      - provider: azure
        upstream_model: gpt-4o-2024-08-06
        pricing: {prompt: 2.5, completion: 10}
        quantization: fp16
      - provider: azure
        upstream_model: gpt-4o-canary
        pricing: {prompt: 3, completion: 12}
  llama:
    endpoints:
      - provider: local
        upstream_model: meta-llama/Llama-3.1-8B
        pricing: {request: 0.001}
        quantization: fp8
        timeouts: {connect: 1s, idle: 2s, attempt: 1m, total: 5m}
  claude:
    aliases: [sonnet]
    endpoints:
      - provider: anthropic
        upstream_model: claude-sonnet-4-5
        pricing: {prompt: 3, completion: 15}
        supports_prefill: true
        supported_parameters: [tools]
routes:
  chat:
    match_models: [4o, claude]
    models: [gpt-4o, sonnet, gpt4o]
    provider:
      sort: price
      max_price: {prompt: 5}
    timeouts: {total: 120s}
    retry: {max_attempts: 5, buffer: true}
    max_tokens: 1200
  batch:
    match_models: [llama]
    provider:
      sort: {by: throughput, partition: none}
      preferred_max_latency: {p90: 3}
    retry:
      same_endpoint_retries: 0
      backoff_max: 4s
      budget_min_per_s: 2.5
      max_retry_after_wait: 3s
      continuation: false
      budget_ratio: 0.5
defaults:
  provider:
    data_collection: deny
    preferred_min_throughput: 20
  timeouts: {connect: 2s, idle: 15s, attempt: 90s}
  retry: {backoff_base: 250ms, budget_ratio: 0.1}
  breaker: {consecutive_failures: 3, window: 30s, open_max: 4s}
  limits: {max_request_bytes: 1048576, header_read_timeout: 5s}
budgets:
  - {id: all, scope: global, daily_usd: 50, monthly_usd: 1000}
  - id: chat
    scope: {route: chat}
    daily_usd: 10
  - {id: team-a, scope: {tag: team-a}, monthly_usd: 200}
  - {id: sonnet, scope: {model: sonnet}, daily_usd: 5.5}
"#;

fn compile_json(v: &Value) -> Result<Compiled, Vec<Diagnostic>> {
    compile(
        &serde_json::to_string_pretty(v).unwrap(),
        Format::Json,
        Path::new(BASE),
        &FakeEnv::standard(),
    )
}

fn ok(v: &Value) -> Compiled {
    match compile_json(v) {
        Ok(c) => c,
        Err(d) => panic!("expected success, got {d:#?}"),
    }
}

/// The errors only, as (path, message).
fn errors(v: &Value) -> Vec<(String, String)> {
    match compile_json(v) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d
            .into_iter()
            .filter(Diagnostic::is_error)
            .map(|d| (d.path, d.message))
            .collect(),
    }
}

/// Asserts exactly one error, at `path`, whose message contains `needle`.
fn assert_one_error(v: &Value, path: &str, needle: &str) {
    let errs = errors(v);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].0, path, "{errs:#?}");
    assert!(errs[0].1.contains(needle), "{errs:#?}");
}

/// A small valid policy to break one field at a time.
fn minimal() -> Value {
    json!({
        "providers": {"p": {"api": "openai", "base_url": "https://api.example.com/v1"}},
        "models": {"m": {"aliases": ["em"], "endpoints": [{"provider": "p"}]}}
    })
}

fn set(v: &mut Value, pointer: &str, x: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() {
        &mut *v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    match parent {
        Value::Object(m) => {
            m.insert(key.to_owned(), x);
        }
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = x,
        _ => panic!("not a container at {pointer}"),
    }
}

fn with(pointer: &str, x: Value) -> Value {
    let mut v = minimal();
    set(&mut v, pointer, x);
    v
}

// ---- full policy ----

#[test]
fn json_and_yaml_compile_to_equal_snapshots() {
    let env = FakeEnv::standard();
    let j = full();
    let y = compile(FULL_YAML, Format::Yaml, Path::new(BASE), &env).unwrap();
    let (j, y) = (&j.snapshot, &y.snapshot);
    assert_eq!(j.providers(), y.providers());
    assert_eq!(j.models(), y.models());
    assert_eq!(j.endpoints(), y.endpoints());
    assert_eq!(j.routes(), y.routes());
    assert_eq!(j.defaults(), y.defaults());
    assert_eq!(j.budgets(), y.budgets());
    assert_ne!(j.sha256(), y.sha256());
    assert_eq!(j.providers().len(), 4);
    assert_eq!(j.endpoints().len(), 5);
}

#[test]
fn full_policy_compiles_without_warnings() {
    let c = full();
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
}

#[test]
fn sections_keep_file_order() {
    let c = full();
    let s = &c.snapshot;
    let ids = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        s.providers()
            .iter()
            .map(|p| p.id.to_string())
            .collect::<Vec<_>>(),
        ids(vec!["openai", "anthropic", "local", "azure"])
    );
    assert_eq!(
        s.models()
            .iter()
            .map(|m| m.id.to_string())
            .collect::<Vec<_>>(),
        ids(vec!["gpt-4o", "llama", "claude"])
    );
    assert_eq!(
        s.routes()
            .iter()
            .map(|r| r.id.to_string())
            .collect::<Vec<_>>(),
        ids(vec!["chat", "batch"])
    );
    assert_eq!(
        s.endpoints()
            .iter()
            .map(|e| e.id.to_string())
            .collect::<Vec<_>>(),
        ids(vec![
            "openai/gpt-4o",
            "azure/gpt-4o",
            "azure/gpt-4o#gpt-4o-canary",
            "local/llama",
            "anthropic/claude",
        ])
    );
    assert_eq!(
        s.budgets()
            .iter()
            .map(|b| b.id.to_string())
            .collect::<Vec<_>>(),
        ids(vec!["all", "chat", "team-a", "sonnet"])
    );
}

#[test]
fn providers_are_resolved() {
    let c = full();
    let s = &c.snapshot;

    let p = s.provider("openai").unwrap();
    assert_eq!(p.api, Api::OpenAi);
    assert_eq!(p.base_url, "https://api.openai.com/v1");
    assert!(p.https);
    assert_eq!(p.authority.as_str(), "api.openai.com");
    assert_eq!(p.host, "api.openai.com");
    assert_eq!(p.port, 443);
    assert_eq!(p.base_path, "/v1");
    assert_eq!(p.api_key.as_ref().unwrap().expose(), OPENAI_KEY);
    assert_eq!(p.data_collection, DataCollection::Deny);
    assert!(p.zdr);
    assert_eq!(p.intercept_hosts, ["api.openai.com"]);
    assert!(!p.allow_private_network);
    assert!(p.ca_pem.is_none());

    let p = s.provider("anthropic").unwrap();
    assert_eq!(p.api, Api::Anthropic);
    assert_eq!(p.base_path, "");
    // The trailing newline of the key file is not part of the key.
    assert_eq!(p.api_key.as_ref().unwrap().expose(), ANTHROPIC_KEY);
    assert_eq!(p.data_collection, DataCollection::Allow);
    assert!(!p.zdr);

    let p = s.provider("local").unwrap();
    assert!(!p.https);
    assert_eq!(p.authority.as_str(), "127.0.0.1:8080");
    assert_eq!(p.host, "127.0.0.1");
    assert_eq!(p.port, 8080);
    assert!(p.allow_private_network);
    assert_eq!(p.ca_pem.as_deref(), Some(PEM.as_bytes()));
    assert!(p.api_key.is_none());

    let p = s.provider("azure").unwrap();
    assert_eq!(p.api, Api::Azure);
    assert_eq!(p.port, 8443);
    assert_eq!(p.host, "example.openai.azure.com");
    assert_eq!(p.base_path, "/openai");

    assert!(s.provider("nope").is_none());
    assert_eq!(
        s.provider_for_intercept_host("API.openai.com")
            .unwrap()
            .id
            .as_ref(),
        "openai"
    );
    assert_eq!(
        s.provider_for_intercept_host("api.openai.com.")
            .unwrap()
            .id
            .as_ref(),
        "openai"
    );
    assert!(s.provider_for_intercept_host("api.anthropic.com").is_none());
}

#[test]
fn models_and_endpoints_are_resolved() {
    let c = full();
    let s = &c.snapshot;

    let m = s.model("gpt-4o").unwrap();
    assert_eq!(
        m.aliases.iter().map(|a| &**a).collect::<Vec<_>>(),
        ["4o", "gpt4o"]
    );
    assert_eq!(m.context_length, Some(128_000));
    assert_eq!(m.endpoints.len(), 3);

    let e = &m.endpoints[0];
    assert_eq!(&*e.id, "openai/gpt-4o");
    assert_eq!(&*e.model, "gpt-4o");
    assert_eq!(&*e.provider.id, "openai");
    assert_eq!(&*e.upstream_model, "gpt-4o");
    assert_eq!(e.pricing.prompt, 2.5);
    assert_eq!(e.pricing.completion, 10.0);
    assert_eq!(e.pricing.request, 0.0);
    assert_eq!(e.max_output_tokens, Some(16_384));
    assert_eq!(e.quantization, None);
    assert_eq!(
        e.supported_parameters
            .iter()
            .map(|p| &**p)
            .collect::<Vec<_>>(),
        ["response_format", "temperature", "tools"]
    );
    assert!(e.supports("tools"));
    assert!(e.supports("response_format"));
    assert!(!e.supports("logprobs"));
    assert!(!e.supports_prefill);
    assert_eq!(e.timeouts.first_token, Some(Duration::from_secs(30)));
    assert_eq!(e.timeouts.connect, None);
    // The endpoint shares the provider's Arc rather than a copy.
    assert!(std::sync::Arc::ptr_eq(
        &e.provider,
        s.provider("openai").unwrap()
    ));

    let e = &m.endpoints[1];
    assert_eq!(&*e.id, "azure/gpt-4o");
    assert_eq!(&*e.upstream_model, "gpt-4o-2024-08-06");
    assert_eq!(e.quantization.as_deref(), Some("fp16"));
    assert_eq!(e.pricing.request, 0.0);
    let e = &m.endpoints[2];
    assert_eq!(&*e.id, "azure/gpt-4o#gpt-4o-canary");
    assert_eq!(e.pricing.completion, 12.0);

    let e = s.endpoint("local/llama").unwrap();
    assert_eq!(&*e.upstream_model, "meta-llama/Llama-3.1-8B");
    assert_eq!(e.pricing.prompt, 0.0);
    assert_eq!(e.pricing.request, 0.001);
    assert_eq!(
        e.timeouts,
        TimeoutOverrides {
            connect: Some(Duration::from_secs(1)),
            first_token: None,
            idle: Some(Duration::from_secs(2)),
            attempt: Some(Duration::from_secs(60)),
            total: Some(Duration::from_secs(300)),
        }
    );
    assert!(s.endpoint("anthropic/claude").unwrap().supports_prefill);
    assert!(s.endpoint("openai/llama").is_none());
    // The model's endpoints and the flat list hold the same Arcs.
    assert!(std::sync::Arc::ptr_eq(
        &s.model("llama").unwrap().endpoints[0],
        s.endpoint("local/llama").unwrap()
    ));
}

#[test]
fn alias_lookup() {
    let c = full();
    let s = &c.snapshot;
    for name in ["gpt-4o", "4o", "gpt4o"] {
        assert_eq!(&*s.model(name).unwrap().id, "gpt-4o", "{name}");
    }
    assert_eq!(&*s.model("sonnet").unwrap().id, "claude");
    assert!(s.model("GPT-4o").is_none());
    assert!(s.model("gpt-4o-mini").is_none());
    assert!(s.model("").is_none());
}

#[test]
fn routes_are_resolved() {
    let c = full();
    let s = &c.snapshot;

    let r = s.route("chat").unwrap();
    assert_eq!(
        r.match_models.iter().map(|m| &**m).collect::<Vec<_>>(),
        ["gpt-4o", "claude"]
    );
    // Aliases resolve to ids and a repeated model is kept once.
    assert_eq!(
        r.models.iter().map(|m| &**m).collect::<Vec<_>>(),
        ["gpt-4o", "claude"]
    );
    let prefs = r.provider.as_ref().unwrap();
    assert_eq!(prefs.sort, Some(SortSpec::By(SortBy::Price)));
    assert_eq!(prefs.max_price.unwrap().prompt, Some(5.0));
    assert_eq!(r.timeouts.total, Some(Duration::from_secs(120)));
    assert_eq!(r.retry.max_attempts, Some(5));
    assert_eq!(r.retry.buffer, Some(true));
    assert_eq!(r.retry.continuation, None);
    assert_eq!(r.max_tokens, Some(1200));

    let r = s.route("batch").unwrap();
    assert!(r.models.is_empty());
    assert_eq!(
        r.provider.as_ref().unwrap().sort.unwrap().partition(),
        SortPartition::None
    );
    assert_eq!(
        r.retry,
        RetryOverrides {
            max_attempts: None,
            same_endpoint_retries: Some(0),
            backoff_base: None,
            backoff_max: Some(Duration::from_secs(4)),
            budget_ratio: Some(0.5),
            budget_min_per_s: Some(2.5),
            max_retry_after_wait: Some(Duration::from_secs(3)),
            continuation: Some(false),
            buffer: None,
        }
    );
    assert!(s.route("nope").is_none());
}

#[test]
fn route_for_model_by_id_and_alias() {
    let c = full();
    let s = &c.snapshot;
    assert_eq!(&*s.route_for_model("gpt-4o").unwrap().id, "chat");
    assert_eq!(&*s.route_for_model("4o").unwrap().id, "chat");
    assert_eq!(&*s.route_for_model("gpt4o").unwrap().id, "chat");
    assert_eq!(&*s.route_for_model("sonnet").unwrap().id, "chat");
    assert_eq!(&*s.route_for_model("llama").unwrap().id, "batch");
    assert!(s.route_for_model("unknown").is_none());

    // A model no route matches.
    let c = ok(&json!({
        "providers": {"p": {"api": "openai", "base_url": "https://a.example.com"}},
        "models": {"a": {"endpoints": [{"provider": "p"}]},
                   "b": {"endpoints": [{"provider": "p"}]}},
        "routes": {"r": {"match_models": ["a"]}}
    }));
    assert!(c.snapshot.route_for_model("b").is_none());
    assert!(c.snapshot.route_for_model("a").is_some());
}

#[test]
fn defaults_overlay_the_built_in_values() {
    let c = full();
    let d = c.snapshot.defaults();
    assert_eq!(d.provider.data_collection, Some(DataCollection::Deny));
    assert_eq!(
        d.provider.preferred_min_throughput,
        Some(Threshold::Value(20.0))
    );
    assert_eq!(
        d.timeouts,
        Timeouts {
            connect: Duration::from_secs(2),
            first_token: Duration::from_secs(10),
            idle: Duration::from_secs(15),
            attempt: Some(Duration::from_secs(90)),
            total: Duration::from_secs(600),
        }
    );
    assert_eq!(
        d.retry,
        Retry {
            backoff_base: Duration::from_millis(250),
            budget_ratio: 0.1,
            ..Retry::default()
        }
    );
    assert_eq!(
        d.breaker,
        Breaker {
            consecutive_failures: 3,
            window: Duration::from_secs(30),
            open_max: Duration::from_secs(4),
            ..Breaker::default()
        }
    );
    assert_eq!(
        d.limits,
        Limits {
            max_request_bytes: 1_048_576,
            header_read_timeout: Duration::from_secs(5),
            ..Limits::default()
        }
    );
}

#[test]
fn defaults_applied_when_absent() {
    let c = ok(&minimal());
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    let s = &c.snapshot;
    assert_eq!(s.defaults(), &Defaults::default());
    assert_eq!(s.defaults().provider, ProviderPrefs::default());
    let p = s.provider("p").unwrap();
    assert_eq!(p.data_collection, DataCollection::Allow);
    assert!(!p.zdr);
    assert!(p.api_key.is_none());
    assert!(!p.allow_private_network);
    assert!(p.intercept_hosts.is_empty());
    assert!(p.ca_pem.is_none());
    let e = s.endpoint("p/m").unwrap();
    assert_eq!(&*e.upstream_model, "m");
    assert_eq!(e.pricing, switchyard_core::Pricing::default());
    assert!(e.supported_parameters.is_empty());
    assert!(!e.supports_prefill);
    assert_eq!(e.max_output_tokens, None);
    assert_eq!(e.timeouts, TimeoutOverrides::default());
    assert_eq!(s.model("m").unwrap().context_length, None);
    assert!(s.routes().is_empty());
    assert!(s.budgets().is_empty());
}

#[test]
fn budgets_are_resolved() {
    let c = full();
    let b = c.snapshot.budgets();
    assert_eq!(b[0].scope, BudgetScope::Global);
    assert_eq!(b[0].daily_usd, Some(50.0));
    assert_eq!(b[0].monthly_usd, Some(1000.0));
    assert_eq!(b[1].scope, BudgetScope::Route("chat".into()));
    assert_eq!(b[1].monthly_usd, None);
    assert_eq!(b[2].scope, BudgetScope::Tag("team-a".into()));
    // An alias in the file becomes the model id.
    assert_eq!(b[3].scope, BudgetScope::Model("claude".into()));
    assert_eq!(b[3].daily_usd, Some(5.5));
}

#[test]
fn sha256_is_of_the_source_text() {
    use sha2::Digest;
    let text = serde_json::to_string(&minimal()).unwrap();
    let c = compile(&text, Format::Json, Path::new(BASE), &FakeEnv::default()).unwrap();
    assert_eq!(
        c.snapshot.sha256(),
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    );
    assert_eq!(c.snapshot.sha256().len(), 64);
}

#[test]
fn compile_is_deterministic() {
    let a = full();
    let b = full();
    assert_eq!(a.snapshot.providers(), b.snapshot.providers());
    assert_eq!(a.snapshot.endpoints(), b.snapshot.endpoints());
    assert_eq!(a.snapshot.sha256(), b.snapshot.sha256());
    let mut bad = full_json();
    set(&mut bad, "/models/llama/endpoints/0/provider", json!("x"));
    set(&mut bad, "/budgets/1/scope", json!({"route": "y"}));
    set(&mut bad, "/providers/azure/base_url", json!("ftp://z"));
    assert_eq!(
        compile_json(&bad).unwrap_err(),
        compile_json(&bad).unwrap_err()
    );
}

// ---- structural errors ----

#[test]
fn unknown_field_reported_with_path() {
    let mut v = minimal();
    set(&mut v, "/models/m/endpoints/0/pricng", json!({}));
    let errs = errors(&v);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].0, "models.m.endpoints[0].pricng");
    assert!(errs[0].1.starts_with("unknown field `pricng`"), "{errs:#?}");

    assert_one_error(
        &with("/budget", json!([])),
        "budget",
        "unknown field `budget`",
    );
    assert_one_error(
        &with("/providers/p/apikey", json!({"env": "X"})),
        "providers.p.apikey",
        "unknown field",
    );
    assert_one_error(
        &with("/defaults", json!({"retry": {"attempts": 2}})),
        "defaults.retry.attempts",
        "unknown field",
    );
}

#[test]
fn unknown_key_inside_provider_prefs_is_rejected() {
    let v = with(
        "/routes",
        json!({"r": {"match_models": ["m"], "provider": {"sort": "price", "fastest": true}}}),
    );
    assert_one_error(&v, "routes.r.provider.fastest", "unknown field `fastest`");
    let v = with(
        "/defaults",
        json!({"provider": {"max_price": {"tokens": 1}}}),
    );
    assert_one_error(&v, "defaults.provider.max_price.tokens", "unknown field");
}

#[test]
fn bad_duration_reports_its_path() {
    let v = with(
        "/defaults",
        json!({"timeouts": {"first_token": "10 parsecs"}}),
    );
    assert_one_error(
        &v,
        "defaults.timeouts.first_token",
        "invalid duration \"10 parsecs\"",
    );
    let mut v = minimal();
    set(&mut v, "/models/m/endpoints/0/timeouts", json!({"idle": 5}));
    assert_one_error(&v, "models.m.endpoints[0].timeouts.idle", "duration string");
    let v = with("/defaults", json!({"breaker": {"window": "soon"}}));
    assert_one_error(&v, "defaults.breaker.window", "invalid duration");
}

#[test]
fn type_error_reports_its_path() {
    let mut v = minimal();
    set(
        &mut v,
        "/models/m/endpoints/0/pricing",
        json!({"prompt": "cheap"}),
    );
    assert_one_error(&v, "models.m.endpoints[0].pricing.prompt", "invalid type");
    assert_one_error(
        &with("/defaults", json!({"retry": {"max_attempts": -1}})),
        "defaults.retry.max_attempts",
        "invalid value",
    );
    assert_one_error(
        &with("/providers/p/api", json!("gemini")),
        "providers.p.api",
        "unknown variant",
    );
    assert_one_error(
        &with("/budgets", json!([{"id": "b", "daily_usd": 1}])),
        "budgets[0]",
        "missing field `scope`",
    );
    assert_one_error(
        &with(
            "/budgets",
            json!([{"id": "b", "scope": "everything", "daily_usd": 1}]),
        ),
        "budgets[0].scope",
        "unknown variant",
    );
}

#[test]
fn syntax_errors_have_no_path() {
    let env = FakeEnv::default();
    let d = compile("{\"models\": ", Format::Json, Path::new(BASE), &env).unwrap_err();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].path, "");
    assert!(d[0].message.starts_with("invalid JSON"), "{d:?}");

    let d = compile("models: [unclosed", Format::Yaml, Path::new(BASE), &env).unwrap_err();
    assert_eq!(d.len(), 1);
    assert!(d[0].message.starts_with("invalid YAML"), "{d:?}");

    for (text, format) in [
        ("", Format::Yaml),
        ("null", Format::Json),
        ("# nothing\n", Format::Yaml),
    ] {
        let d = compile(text, format, Path::new(BASE), &env).unwrap_err();
        assert_eq!(d.len(), 1, "{text:?}: {d:?}");
        assert!(
            d[0].message.contains("empty") || d[0].message.starts_with("invalid"),
            "{text:?}: {d:?}"
        );
    }

    let d = compile("[1, 2]", Format::Json, Path::new(BASE), &env).unwrap_err();
    assert_eq!(d[0].path, "");
    assert!(d[0].message.contains("top level"), "{d:?}");
}

#[test]
fn duplicate_json_keys_are_errors() {
    let text = r#"{
        "providers": {"p": {"api": "openai", "base_url": "https://a.example.com"}},
        "models": {
            "m": {"endpoints": [{"provider": "p"}]},
            "m": {"endpoints": [{"provider": "p", "upstream_model": "x"}]}
        }
    }"#;
    let d = compile(text, Format::Json, Path::new(BASE), &FakeEnv::default()).unwrap_err();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].path, "models.m");
    assert!(d[0].message.contains("duplicate key"));

    let yaml = "models:\n  m: {}\n  m: {}\n";
    let d = compile(yaml, Format::Yaml, Path::new(BASE), &FakeEnv::default()).unwrap_err();
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.contains("uplicate"), "{d:?}");
}

// ---- semantic errors, one at a time ----

#[test]
fn unknown_provider() {
    let mut v = minimal();
    set(
        &mut v,
        "/models/m/endpoints",
        json!([{"provider": "p"}, {"provider": "foo"}]),
    );
    let errs = errors(&v);
    assert_eq!(
        errs,
        [(
            "models.m.endpoints[1].provider".to_owned(),
            "unknown provider \"foo\"".to_owned()
        )]
    );
    let d = compile_json(&v).unwrap_err();
    assert_eq!(
        d[0].to_string(),
        "error: models.m.endpoints[1].provider: unknown provider \"foo\""
    );
}

#[test]
fn negative_or_non_finite_prices() {
    let mut v = minimal();
    set(
        &mut v,
        "/models/m/endpoints/0/pricing",
        json!({"prompt": 1, "completion": -0.5, "request": -1}),
    );
    let errs = errors(&v);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[0].0, "models.m.endpoints[0].pricing.completion");
    assert_eq!(errs[1].0, "models.m.endpoints[0].pricing.request");
    assert!(errs[0].1.contains(">= 0"));

    // Ceilings can arrive as strings, which is how a non-finite number gets in.
    let v = with(
        "/routes",
        json!({"r": {"provider": {"max_price": {"prompt": "inf", "completion": "NaN", "request": -1}}}}),
    );
    let errs = errors(&v);
    let paths: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes.r.provider.max_price.prompt",
            "routes.r.provider.max_price.completion",
            "routes.r.provider.max_price.request"
        ]
    );
    let v = with(
        "/defaults",
        json!({"provider": {"preferred_max_latency": {"p50": -2}}}),
    );
    assert_one_error(&v, "defaults.provider.preferred_max_latency", ">= 0");
}

#[test]
fn duplicate_aliases() {
    let two = |a: Value, b: Value| {
        json!({
            "providers": {"p": {"api": "openai", "base_url": "https://a.example.com"}},
            "models": {"a": {"aliases": a, "endpoints": [{"provider": "p"}]},
                       "b": {"aliases": b, "endpoints": [{"provider": "p"}]}}
        })
    };
    assert_one_error(
        &two(json!(["x"]), json!(["x"])),
        "models.b.aliases[0]",
        "already an alias of model \"a\"",
    );
    assert_one_error(
        &two(json!([]), json!(["z", "a"])),
        "models.b.aliases[1]",
        "already the id of model \"a\"",
    );
    // An alias may not take the id of a model that comes later in the file either.
    assert_one_error(
        &two(json!(["b"]), json!([])),
        "models.a.aliases[0]",
        "already the id of model \"b\"",
    );
    assert_one_error(
        &two(json!(["x", "y", "x"]), json!([])),
        "models.a.aliases[2]",
        "is repeated",
    );
    assert_one_error(
        &two(json!(["a"]), json!([])),
        "models.a.aliases[0]",
        "own id",
    );
    assert_one_error(
        &two(json!(["x,y"]), json!([])),
        "models.a.aliases[0]",
        "','",
    );
}

#[test]
fn model_without_endpoints() {
    assert_one_error(
        &with("/models/m/endpoints", json!([])),
        "models.m.endpoints",
        "no endpoints",
    );
    let mut v = minimal();
    set(&mut v, "/models/n", json!({"aliases": ["n2"]}));
    assert_one_error(&v, "models.n.endpoints", "no endpoints");
}

#[test]
fn routes_naming_unknown_models() {
    let v = with(
        "/routes",
        json!({"r": {"match_models": ["m", "ghost"], "models": ["em", "phantom"]}}),
    );
    let errs = errors(&v);
    assert_eq!(
        errs,
        [
            (
                "routes.r.match_models[1]".to_owned(),
                "unknown model \"ghost\"".to_owned()
            ),
            (
                "routes.r.models[1]".to_owned(),
                "unknown model \"phantom\"".to_owned()
            ),
        ]
    );
}

#[test]
fn model_matched_by_two_routes() {
    // The second route names the model by its alias; it is still the same model.
    let v = with(
        "/routes",
        json!({"first": {"match_models": ["m"]}, "second": {"match_models": ["em"]}}),
    );
    assert_one_error(
        &v,
        "routes.second.match_models[0]",
        "already matched by route \"first\"",
    );
    // Naming it twice in one route is harmless.
    let c = ok(&with(
        "/routes",
        json!({"r": {"match_models": ["m", "em"]}}),
    ));
    assert_eq!(c.snapshot.route("r").unwrap().match_models.len(), 1);
}

#[test]
fn budget_errors() {
    let v = with(
        "/budgets",
        json!([
            {"id": "a", "scope": {"route": "nope"}, "daily_usd": 1},
            {"id": "b", "scope": {"model": "ghost"}, "daily_usd": 1},
            {"id": "a", "scope": "global", "monthly_usd": 1},
            {"id": "c", "scope": "global"},
            {"id": "d", "scope": "global", "daily_usd": -1, "monthly_usd": 5},
            {"id": "e", "scope": {"tag": "t"}, "daily_usd": 0},
            {"id": "", "scope": {"tag": ""}, "monthly_usd": 1}
        ]),
    );
    let errs = errors(&v);
    let got: Vec<(&str, &str)> = errs.iter().map(|(p, m)| (p.as_str(), m.as_str())).collect();
    assert_eq!(
        got,
        [
            ("budgets[0].scope.route", "unknown route \"nope\""),
            ("budgets[1].scope.model", "unknown model \"ghost\""),
            ("budgets[2].id", "duplicate budget id \"a\""),
            (
                "budgets[3]",
                "budget sets none of daily_usd, monthly_usd, max_cost_usd, max_tokens"
            ),
            ("budgets[4].daily_usd", "must be a finite number >= 0"),
            ("budgets[6].id", "must not be empty"),
            ("budgets[6].scope.tag", "must not be empty"),
        ]
    );
}

#[test]
fn base_url_errors() {
    let cases = [
        ("api.example.com/v1", "not an absolute URL"),
        ("ftp://api.example.com", "unsupported scheme"),
        ("https://api.example.com/v1?key=1", "query"),
        ("https://api.example.com/v1#x", "fragment"),
        ("https://", "not a valid URL"),
        ("https://u:p@api.example.com", "user info"),
    ];
    for (url, needle) in cases {
        assert_one_error(
            &with("/providers/p/base_url", json!(url)),
            "providers.p.base_url",
            needle,
        );
    }
}

#[test]
fn private_base_url_needs_permission() {
    for url in [
        "http://127.0.0.1:8080/v1",
        "http://localhost:11434",
        "http://10.0.0.5",
        "http://192.168.1.10/v1",
        "http://169.254.169.254",
        "http://[::1]:9000",
        "http://[fe80::1]",
    ] {
        let v = with("/providers/p/base_url", json!(url));
        assert_one_error(&v, "providers.p.base_url", "allow_private_network");
        let mut allowed = v.clone();
        set(
            &mut allowed,
            "/providers/p/allow_private_network",
            json!(true),
        );
        ok(&allowed);
    }
    ok(&with("/providers/p/base_url", json!("http://8.8.8.8")));
}

#[test]
fn retry_breaker_and_limit_ranges() {
    assert_one_error(
        &with("/defaults", json!({"retry": {"max_attempts": 0}})),
        "defaults.retry.max_attempts",
        "at least 1",
    );
    assert_one_error(
        &with("/routes", json!({"r": {"retry": {"max_attempts": 0}}})),
        "routes.r.retry.max_attempts",
        "at least 1",
    );
    assert_one_error(
        &with("/defaults", json!({"breaker": {"failure_rate": 1.5}})),
        "defaults.breaker.failure_rate",
        "between 0 and 1",
    );
    assert_one_error(
        &with("/defaults", json!({"breaker": {"failure_rate": -0.1}})),
        "defaults.breaker.failure_rate",
        "between 0 and 1",
    );
    assert_one_error(
        &with("/defaults", json!({"retry": {"budget_ratio": 1.01}})),
        "defaults.retry.budget_ratio",
        "between 0 and 1",
    );
    assert_one_error(
        &with("/routes", json!({"r": {"retry": {"budget_ratio": -0.5}}})),
        "routes.r.retry.budget_ratio",
        "between 0 and 1",
    );
    // The edges are allowed.
    ok(&with(
        "/defaults",
        json!({"retry": {"budget_ratio": 0, "max_attempts": 1}, "breaker": {"failure_rate": 1}}),
    ));
    for field in [
        "max_request_bytes",
        "max_response_bytes",
        "max_sse_line_bytes",
        "max_in_flight_per_endpoint",
    ] {
        assert_one_error(
            &with("/defaults", json!({"limits": {field: 0}})),
            &format!("defaults.limits.{field}"),
            "greater than zero",
        );
    }
    assert_one_error(
        &with(
            "/defaults",
            json!({"limits": {"header_read_timeout": "0s"}}),
        ),
        "defaults.limits.header_read_timeout",
        "greater than zero",
    );
}

#[test]
fn ordering_and_zero_duration_checks() {
    assert_one_error(
        &with("/defaults", json!({"breaker": {"open_base": "10s"}})),
        "defaults.breaker.open_max",
        "less than open_base",
    );
    assert_one_error(
        &with("/defaults", json!({"retry": {"backoff_base": "9s"}})),
        "defaults.retry.backoff_base",
        "greater than backoff_max",
    );
    // A route's backoff is checked against the defaults it overlays.
    assert_one_error(
        &with("/routes", json!({"r": {"retry": {"backoff_max": "100ms"}}})),
        "routes.r.retry.backoff_max",
        "greater than backoff_max",
    );
    assert_one_error(
        &with("/defaults", json!({"timeouts": {"total": "0s"}})),
        "defaults.timeouts.total",
        "greater than zero",
    );
    assert_one_error(
        &with("/defaults", json!({"breaker": {"consecutive_failures": 0}})),
        "defaults.breaker.consecutive_failures",
        "at least 1",
    );
    assert_one_error(
        &with("/routes", json!({"r": {"max_tokens": 0}})),
        "routes.r.max_tokens",
        "greater than zero",
    );
}

#[test]
fn api_key_needs_exactly_one_source() {
    assert_one_error(
        &with("/providers/p/api_key", json!({"env": "A", "file": "b"})),
        "providers.p.api_key",
        "exactly one of env or file",
    );
    assert_one_error(
        &with("/providers/p/api_key", json!({})),
        "providers.p.api_key",
        "exactly one of env or file",
    );
}

#[test]
fn endpoint_id_collisions() {
    let mut v = minimal();
    set(
        &mut v,
        "/models/m/endpoints",
        json!([{"provider": "p"}, {"provider": "p", "upstream_model": "m2"},
               {"provider": "p", "upstream_model": "m2"}]),
    );
    assert_one_error(
        &v,
        "models.m.endpoints[2]",
        "duplicate endpoint id \"p/m#m2\"",
    );
}

#[test]
fn id_and_host_checks() {
    let v = json!({
        "providers": {"a/b": {"api": "openai", "base_url": "https://a.example.com"}},
        "models": {"m": {"endpoints": [{"provider": "a/b"}]}}
    });
    assert_one_error(&v, "providers.a/b", "must not contain '/'");
    let mut v = minimal();
    set(
        &mut v,
        "/models/a,b",
        json!({"endpoints": [{"provider": "p"}]}),
    );
    assert_one_error(&v, "models.a,b", "','");

    let mut v = minimal();
    set(
        &mut v,
        "/providers/p/intercept_hosts",
        json!(["api.example.com", "bad host"]),
    );
    assert_one_error(&v, "providers.p.intercept_hosts[1]", "not a host name");
    let mut v = minimal();
    set(
        &mut v,
        "/providers/p/intercept_hosts",
        json!(["api.example.com"]),
    );
    set(
        &mut v,
        "/providers/q",
        json!({"api": "openai", "base_url": "https://b.example.com", "intercept_hosts": ["API.example.com"]}),
    );
    set(&mut v, "/models/m/endpoints/0", json!({"provider": "q"}));
    set(
        &mut v,
        "/models/n",
        json!({"endpoints": [{"provider": "p"}]}),
    );
    assert_one_error(
        &v,
        "providers.q.intercept_hosts[0]",
        "already intercepted for provider \"p\"",
    );
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let mut env = FakeEnv::default();
    env.files
        .insert(Path::new(BASE).join("bad.pem"), b"not a cert".to_vec());
    env.files
        .insert(PathBuf::from("/abs/ca.pem"), PEM.as_bytes().to_vec());
    let run = |v: &Value| compile(&v.to_string(), Format::Json, Path::new(BASE), &env);

    let d = run(&with("/providers/p/ca_file", json!("bad.pem"))).unwrap_err();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].path, "providers.p.ca_file");
    assert!(d[0].message.contains("no PEM certificate"), "{d:?}");

    let d = run(&with("/providers/p/ca_file", json!("missing.pem"))).unwrap_err();
    assert_eq!(d[0].path, "providers.p.ca_file");
    assert!(d[0].message.contains("cannot read CA file"), "{d:?}");

    // Absolute paths are used as they are.
    let c = run(&with("/providers/p/ca_file", json!("/abs/ca.pem"))).unwrap();
    assert!(c.snapshot.provider("p").unwrap().ca_pem.is_some());
}

// ---- several at once ----

#[test]
fn several_errors_reported_together() {
    let v = json!({
        "providers": {
            "p": {"api": "openai", "base_url": "http://127.0.0.1", "api_key": {}},
            "unused": {"api": "openai", "base_url": "https://u.example.com"}
        },
        "models": {
            "m": {"aliases": ["x"], "endpoints": [{"provider": "nope", "pricing": {"prompt": -1}}]},
            "n": {"aliases": ["x"], "endpoints": []}
        },
        "routes": {"r": {"match_models": ["zzz"]}},
        "defaults": {"retry": {"max_attempts": 0}},
        "budgets": [{"id": "b", "scope": "global"}]
    });
    let d = compile_json(&v).unwrap_err();
    let got: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "error: providers.p.base_url: host \"127.0.0.1\" is a loopback, private or link-local address; set allow_private_network to true to allow it",
            "error: providers.p.api_key: give exactly one of env or file",
            "error: models.n.aliases[0]: alias \"x\" is already an alias of model \"m\"",
            "error: models.m.endpoints[0].provider: unknown provider \"nope\"",
            "error: models.m.endpoints[0].pricing.prompt: must be a finite number >= 0",
            "error: models.n.endpoints: model has no endpoints",
            "warning: providers.p: provider \"p\" is not used by any endpoint",
            "warning: providers.unused: provider \"unused\" is not used by any endpoint",
            "error: defaults.retry.max_attempts: must be at least 1",
            "error: routes.r.match_models[0]: unknown model \"zzz\"",
            "error: budgets[0]: budget sets none of daily_usd, monthly_usd, max_cost_usd, max_tokens",
        ]
    );
}

// ---- warnings ----

#[test]
fn missing_env_key_is_a_warning() {
    let v = with("/providers/p/api_key", json!({"env": "NOT_SET_ANYWHERE"}));
    let c = compile(
        &v.to_string(),
        Format::Json,
        Path::new(BASE),
        &FakeEnv::default(),
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.path, "providers.p.api_key.env");
    assert!(w.message.contains("\"NOT_SET_ANYWHERE\" is not set"), "{w}");
    assert!(c.snapshot.provider("p").unwrap().api_key.is_none());

    // Set but empty is no key either.
    let mut env = FakeEnv::default();
    env.vars.insert("EMPTY".into(), String::new());
    let v = with("/providers/p/api_key", json!({"env": "EMPTY"}));
    let c = compile(&v.to_string(), Format::Json, Path::new(BASE), &env).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(c.snapshot.provider("p").unwrap().api_key.is_none());
}

#[test]
fn unreadable_key_file_is_a_warning() {
    let mut env = FakeEnv::default();
    env.files
        .insert(Path::new(BASE).join("empty"), b"\n".to_vec());
    env.files
        .insert(Path::new(BASE).join("binary"), vec![0xff, 0xfe]);
    for (file, needle) in [
        ("missing", "cannot read key file"),
        ("empty", "is empty"),
        ("binary", "not UTF-8"),
    ] {
        let v = with("/providers/p/api_key", json!({"file": file}));
        let c = compile(&v.to_string(), Format::Json, Path::new(BASE), &env).unwrap();
        assert_eq!(c.warnings.len(), 1, "{file}: {:?}", c.warnings);
        assert_eq!(c.warnings[0].path, "providers.p.api_key.file");
        assert!(
            c.warnings[0].message.contains(needle),
            "{file}: {}",
            c.warnings[0]
        );
        assert!(c.snapshot.provider("p").unwrap().api_key.is_none());
    }
}

#[test]
fn key_file_is_trimmed_and_relative_to_base_dir() {
    let mut env = FakeEnv::default();
    env.files.insert(
        PathBuf::from("/other/dir/k"),
        b"  key with inner space \r\n".to_vec(),
    );
    let v = with("/providers/p/api_key", json!({"file": "k"}));
    let c = compile(&v.to_string(), Format::Json, Path::new("/other/dir"), &env).unwrap();
    // Only the line ending goes; the rest is the operator's business.
    assert_eq!(
        c.snapshot
            .provider("p")
            .unwrap()
            .api_key
            .as_ref()
            .unwrap()
            .expose(),
        "  key with inner space "
    );
}

#[test]
fn unused_provider_and_unknown_pref_provider_are_warnings() {
    let mut v = minimal();
    set(
        &mut v,
        "/providers/spare",
        json!({"api": "anthropic", "base_url": "https://s.example.com"}),
    );
    set(
        &mut v,
        "/defaults",
        json!({"provider": {"order": ["p", "ghost"], "ignore": ["spare"]}}),
    );
    let c = ok(&v);
    let got: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "warning: providers.spare: provider \"spare\" is not used by any endpoint",
            "warning: defaults.provider.order[1]: unknown provider \"ghost\"; it matches no endpoint",
        ]
    );
}

#[test]
fn warnings_accompany_errors() {
    let mut v = with("/providers/p/api_key", json!({"env": "NOPE"}));
    set(&mut v, "/models/m/endpoints/0/provider", json!("ghost"));
    let d = compile(
        &v.to_string(),
        Format::Json,
        Path::new(BASE),
        &FakeEnv::default(),
    )
    .unwrap_err();
    assert!(
        d.iter()
            .any(|d| d.severity == Severity::Warning && d.path == "providers.p.api_key.env")
    );
    assert!(
        d.iter()
            .any(|d| d.is_error() && d.path == "models.m.endpoints[0].provider")
    );
}

#[test]
fn missing_pricing_warns_only_when_budgets_exist() {
    let c = ok(&minimal());
    assert!(c.warnings.is_empty());
    let c = ok(&with(
        "/budgets",
        json!([{"id": "g", "scope": "global", "daily_usd": 1}]),
    ));
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].path, "models.m.endpoints[0]");
}

// ---- secrets ----

#[test]
fn keys_never_appear_in_debug_display_or_errors() {
    let c = full();
    let dump = format!(
        "{c:?} {:?} {:?}",
        c.snapshot.providers(),
        c.snapshot.endpoints()
    );
    assert!(!dump.contains(OPENAI_KEY));
    assert!(!dump.contains(ANTHROPIC_KEY));
    assert!(dump.contains("[redacted]"));

    // A policy that fails still resolves keys; none of its diagnostics may carry them.
    let mut bad = full_json();
    set(
        &mut bad,
        "/models/llama/endpoints/0/provider",
        json!("ghost"),
    );
    set(&mut bad, "/budgets/0/id", json!("chat"));
    let d = compile_json(&bad).unwrap_err();
    let text = format!(
        "{d:?} {}",
        d.iter().map(ToString::to_string).collect::<String>()
    );
    assert!(
        !text.contains(OPENAI_KEY) && !text.contains(ANTHROPIC_KEY),
        "{text}"
    );

    // Nor does the error for a key that cannot be sent.
    let mut env = FakeEnv::default();
    env.vars.insert("BAD".into(), "sk-bad\u{7}key".into());
    let v = with("/providers/p/api_key", json!({"env": "BAD"}));
    let d = compile(&v.to_string(), Format::Json, Path::new(BASE), &env).unwrap_err();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].path, "providers.p.api_key");
    assert!(!format!("{d:?} {}", d[0]).contains("sk-bad"));
}

// ---- YAML specifics and files ----

#[test]
fn yaml_keeps_yes_and_no_as_strings() {
    let yaml = "providers:\n  p: {api: openai, base_url: 'https://a.example.com'}\n\
                models:\n  m:\n    aliases: [no, yes, on]\n    endpoints: [{provider: p}]\n";
    let c = compile(yaml, Format::Yaml, Path::new(BASE), &FakeEnv::default()).unwrap();
    for alias in ["no", "yes", "on"] {
        assert_eq!(&*c.snapshot.model(alias).unwrap().id, "m", "{alias}");
    }
}

#[test]
fn yaml_errors_carry_paths_too() {
    let yaml = "providers:\n  p: {api: openai, base_url: 'https://a.example.com'}\n\
                models:\n  m:\n    endpoints:\n      - provider: p\n        pricing: {prompt: 1, completoin: 2}\n";
    let d = compile(yaml, Format::Yaml, Path::new(BASE), &FakeEnv::default()).unwrap_err();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].path, "models.m.endpoints[0].pricing.completoin");
}

#[test]
fn format_from_path() {
    assert_eq!(Format::from_path(Path::new("a/policy.yaml")), Format::Yaml);
    assert_eq!(Format::from_path(Path::new("policy.YML")), Format::Yaml);
    assert_eq!(Format::from_path(Path::new("policy.json")), Format::Json);
    assert_eq!(Format::from_path(Path::new("policy")), Format::Json);
    assert_eq!(Format::from_path(Path::new("yaml")), Format::Json);
}

#[test]
fn load_file_reads_relative_to_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/p"), "sk-from-file\n").unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "providers:\n  p:\n    api: openai\n    base_url: https://a.example.com/v1\n    \
         api_key: {file: keys/p}\nmodels:\n  m: {endpoints: [{provider: p}]}\n",
    )
    .unwrap();
    let c = load_file(&policy).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let p = c.snapshot.provider("p").unwrap();
    assert_eq!(p.api_key.as_ref().unwrap().expose(), "sk-from-file");

    let d = load_file(&dir.path().join("missing.json")).unwrap_err();
    assert_eq!(d.len(), 1);
    assert!(d[0].message.starts_with("cannot read policy file"), "{d:?}");
}

#[test]
fn snapshot_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Snapshot>();
    assert_send_sync::<ProviderPrefs>();
    assert_send_sync::<Diagnostic>();
}
