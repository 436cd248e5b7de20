//! `switchyard demo`: four simulated providers (steady, flaky, slow, pricey), the proxy in
//! front of them with an example policy, and a short guided tour of requests — no API key,
//! no network beyond loopback.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use switchyard_policy_watch::PolicyStore;
use switchyard_sim::{Behavior, Sim, SimConfig};

use crate::cli::ListenArgs;
use crate::server;

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    listen: ListenArgs,
    /// Run the guided tour and exit instead of serving until Ctrl-C.
    #[arg(long)]
    exit_after_tour: bool,
}

/// The key the simulated providers demand; the proxy reads it from a file, as it would a
/// mounted Kubernetes secret, and the client never needs it.
const DEMO_KEY: &str = "sk-demo-not-a-real-key";

struct Sims {
    steady: Sim,
    flaky: Sim,
    slow: Sim,
    pricey: Sim,
}

async fn start_sims() -> std::io::Result<Sims> {
    let cfg = |name: &str, default: Behavior| SimConfig {
        name: name.into(),
        api_key: Some(DEMO_KEY.into()),
        default,
        ..SimConfig::default()
    };
    let steady = Behavior {
        chunk_delay: Duration::from_millis(30),
        ..Behavior::ok()
    };
    // Flaky: every third call fails, and the tour's first two calls do, so that the tour
    // shows a same-endpoint retry and then a fallback.
    let flaky = Behavior {
        status: Some(503),
        fail_every: Some(3),
        ..Behavior::ok()
    };
    let down = Behavior::ok().status(503);
    let slow = Behavior {
        first_token_delay: Duration::from_millis(3000),
        chunk_delay: Duration::from_millis(100),
        ..Behavior::ok()
    };
    let mut flaky_cfg = cfg("flaky", flaky);
    flaky_cfg.sequence = vec![down.clone(), down];
    Ok(Sims {
        steady: Sim::start(cfg("steady", steady)).await?,
        flaky: Sim::start(flaky_cfg).await?,
        slow: Sim::start(cfg("slow", slow)).await?,
        pricey: Sim::start(cfg("pricey", Behavior::ok())).await?,
    })
}

/// The example policy, pointing at the simulated providers.
fn demo_policy(s: &Sims, key_file: &str) -> Value {
    let provider = |sim: &Sim| {
        json!({
            "api": "openai",
            "base_url": sim.base_url(),
            "api_key": { "file": key_file },
            "allow_private_network": true,
        })
    };
    let endpoint = |p: &str, upstream: &str, prompt: f64, completion: f64| {
        json!({
            "provider": p,
            "upstream_model": upstream,
            "pricing": { "prompt": prompt, "completion": completion },
            "max_output_tokens": 4096,
            "supported_parameters": ["temperature", "top_p", "max_tokens", "stop", "tools", "tool_choice", "response_format"],
            "supports_prefill": true,
        })
    };
    json!({
        "defaults": {
            "timeouts": { "first_token": "1s", "idle": "5s", "total": "60s" },
            "retry": { "backoff_base": "50ms", "backoff_max": "400ms" }
        },
        "providers": {
            "steady": provider(&s.steady),
            "flaky": provider(&s.flaky),
            "slow": provider(&s.slow),
            "pricey": provider(&s.pricey),
        },
        "models": {
            "demo-chat": {
                "aliases": ["chat"],
                "context_length": 128000,
                "endpoints": [
                    endpoint("steady", "steady-chat-v1", 0.5, 1.5),
                    endpoint("flaky", "flaky-chat-v1", 0.4, 1.2),
                    endpoint("pricey", "pricey-chat-v1", 5.0, 15.0),
                ],
            },
            "demo-reasoner": {
                "aliases": ["reasoner"],
                "context_length": 200000,
                "endpoints": [
                    endpoint("slow", "slow-reasoner-v2", 1.0, 4.0),
                    endpoint("pricey", "pricey-reasoner-v2", 8.0, 24.0),
                ],
            },
        },
    })
}

pub async fn run(args: DemoArgs, obs: crate::observe::Observability) -> ExitCode {
    match run_inner(args, obs).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inner(
    args: DemoArgs,
    obs: crate::observe::Observability,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let sims = start_sims().await?;
    let dir = demo_dir()?;
    let key_file = dir.join("provider.key");
    std::fs::write(&key_file, format!("{DEMO_KEY}\n"))?;
    let policy_file = dir.join("policy.json");
    let policy = demo_policy(&sims, &key_file.display().to_string());
    std::fs::write(&policy_file, serde_json::to_vec_pretty(&policy)?)?;

    let compiled = switchyard_policy::load_file(&policy_file).map_err(|diags| {
        let mut msg = String::from("embedded demo policy is invalid:");
        for d in diags {
            let _ = write!(msg, "\n  {d}");
        }
        msg
    })?;
    let store = PolicyStore::from_file(compiled, &policy_file);
    let ledger = switchyard_ledger::EmbeddedLedger::open(
        dir.join("spend.ledger"),
        switchyard_ledger::LedgerOptions::default(),
    )?;
    let budgets = Arc::new(
        switchyard_budget::Budgets::new(
            Arc::new(ledger),
            Arc::new(switchyard_budget::SystemClock),
            false,
        )
        .with_events(obs.metrics.clone()),
    );
    let running = server::start(
        store.clone(),
        switchyard_stack::Registries::with_budgets(budgets),
        obs,
        &args.listen.server_config(),
    )
    .await?;
    let base = format!("http://{}", running.proxy_addr);

    println!("Switchyard demo");
    println!("  proxy   {base}/v1   (OpenAI-compatible)");
    println!("  admin   http://{}", running.admin_addr);
    println!("  policy  {}", policy_file.display());
    if access_lines_hidden() {
        println!(
            "  logs    access lines hidden so the tour reads clearly; SWITCHYARD_LOG=info shows one per request"
        );
    }
    println!(
        "  simulated providers: steady {}, flaky {} (every 3rd call 503), slow {} (3 s to first token), pricey {}",
        sims.steady.addr(),
        sims.flaky.addr(),
        sims.slow.addr(),
        sims.pricey.addr()
    );
    println!();

    let tour_ok = tour(&base).await;

    if args.exit_after_tour {
        running.shutdown().await;
        return Ok(if tour_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    println!();
    println!("The proxy keeps running. Try:");
    println!(
        "  curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"chat\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
    );
    println!(
        "  OPENAI_BASE_URL={base}/v1 OPENAI_API_KEY=unused python -c 'import openai; print(openai.OpenAI().chat.completions.create(model=\"chat\", messages=[{{\"role\":\"user\",\"content\":\"hi\"}}]))'"
    );
    println!("Ctrl-C to stop.");
    let _watch = crate::cli::watch_policy(&running.shared);
    if let Err(e) = crate::cli::wait_for_shutdown_signal(&running.shared).await {
        eprintln!("switchyard demo: signal handlers: {e}");
    }
    running.shutdown().await;
    drop(sims);
    Ok(ExitCode::SUCCESS)
}

fn demo_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

type DemoClient = Client<HttpConnector, Full<Bytes>>;

/// A few requests that show what the proxy does; returns false if any did not behave.
async fn tour(base: &str) -> bool {
    let client: DemoClient = Client::builder(TokioExecutor::new()).build_http();
    let chat_url = format!("{base}/v1/chat/completions");
    let mut ok = true;

    println!("1. GET /v1/models — the policy's models and aliases");
    match call(&client, Method::GET, &format!("{base}/v1/models"), None).await {
        Ok((200, _, body)) => {
            let ids: Vec<String> = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["data"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect();
            println!("   {}", ids.join(", "));
        }
        other => ok &= report_unexpected(&other),
    }

    println!(
        "2. model=chat with provider.order [flaky, steady] — flaky answers 503: one retry on it, then fallback"
    );
    let body = json!({"model": "chat", "provider": {"order": ["flaky", "steady"]},
        "messages": [{"role": "user", "content": "Say hello to the demo."}]});
    match call(&client, Method::POST, &chat_url, Some(body)).await {
        Ok((200, headers, body)) => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            println!(
                "   served by provider={} model={} (upstream model {}), attempts={}, cost=${}",
                header(&headers, "x-switchyard-provider"),
                v["model"].as_str().unwrap_or("?"),
                v["metadata"]["upstream_model"].as_str().unwrap_or("?"),
                header(&headers, "x-switchyard-attempts"),
                header(&headers, "x-switchyard-cost"),
            );
            println!(
                "   usage {} -> \"{}\"",
                v["usage"],
                v["choices"][0]["message"]["content"].as_str().unwrap_or("")
            );
        }
        other => ok &= report_unexpected(&other),
    }

    println!(
        "3. model=reasoner — slow's first token takes 3 s, over the 1 s first-token timeout: fallback to pricey"
    );
    let started = Instant::now();
    let body = json!({"model": "reasoner", "provider": {"order": ["slow", "pricey"]},
        "messages": [{"role": "user", "content": "Think hard."}]});
    match call(&client, Method::POST, &chat_url, Some(body)).await {
        Ok((200, headers, _)) => println!(
            "   served by provider={} after {:.1} s, attempts={}",
            header(&headers, "x-switchyard-provider"),
            started.elapsed().as_secs_f64(),
            header(&headers, "x-switchyard-attempts"),
        ),
        other => ok &= report_unexpected(&other),
    }

    println!(
        "4. 20 requests for demo-chat with no preference — price-weighted balancing (1/price²)"
    );
    let mut served: Vec<(String, u32)> = Vec::new();
    for _ in 0..20 {
        let body = json!({"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]});
        match call(&client, Method::POST, &chat_url, Some(body)).await {
            Ok((200, headers, _)) => {
                let p = header(&headers, "x-switchyard-provider").to_string();
                match served.iter_mut().find(|(name, _)| *name == p) {
                    Some((_, n)) => *n += 1,
                    None => served.push((p, 1)),
                }
            }
            other => ok &= report_unexpected(&other),
        }
    }
    served.sort_by_key(|s| std::cmp::Reverse(s.1));
    let summary: Vec<String> = served.iter().map(|(p, n)| format!("{p} {n}")).collect();
    println!("   served: {}", summary.join(", "));

    println!(
        "5. A streamed answer (stream=true, include_usage) — events pass through as they arrive"
    );
    let body = json!({"model": "demo-chat", "stream": true, "stream_options": {"include_usage": true},
        "provider": {"order": ["steady"]}, "messages": [{"role": "user", "content": "Stream something."}]});
    let started = Instant::now();
    match call(&client, Method::POST, &chat_url, Some(body)).await {
        Ok((200, _, body)) => {
            let text = String::from_utf8_lossy(&body);
            let events = text.matches("data: ").count();
            let usage = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find(|v| v["usage"].is_object());
            println!(
                "   {events} events in {:.0} ms, usage chunk: {}",
                started.elapsed().as_secs_f64() * 1000.0,
                usage.map_or("none".into(), |u| u["usage"].to_string())
            );
        }
        other => ok &= report_unexpected(&other),
    }

    println!(
        "6. An unknown model — refused by the proxy in OpenAI's error shape, nothing sent upstream"
    );
    let body = json!({"model": "gpt-nonexistent", "messages": [{"role": "user", "content": "hi"}]});
    match call(&client, Method::POST, &chat_url, Some(body)).await {
        Ok((404, headers, body)) => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            println!(
                "   404 {} (x-should-retry: {})",
                v["error"]["message"].as_str().unwrap_or("?"),
                header(&headers, "x-should-retry")
            );
        }
        other => ok &= report_unexpected(&other),
    }
    ok
}

fn header<'a>(headers: &'a std::collections::HashMap<String, String>, name: &str) -> &'a str {
    headers.get(name).map_or("?", String::as_str)
}

type Answer = (u16, std::collections::HashMap<String, String>, Bytes);

async fn call(
    client: &DemoClient,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<Answer, Box<dyn std::error::Error>> {
    let bytes = body
        .map(|b| serde_json::to_vec(&b))
        .transpose()?
        .unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.to_string(), v.to_string())))
        .collect();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, body))
}

fn report_unexpected(res: &Result<Answer, Box<dyn std::error::Error>>) -> bool {
    match res {
        Ok((status, _, body)) => {
            println!("   unexpected {status}: {}", String::from_utf8_lossy(body));
        }
        Err(e) => println!("   request failed: {e}"),
    }
    false
}

/// The demo's log filter when the user set none: everything but the per-request access lines,
/// which would bury the tour's own output.
const DEMO_LOG_FILTER: &str = "info,switchyard::access=warn";

fn user_log_filter() -> Option<String> {
    ["SWITCHYARD_LOG", "RUST_LOG"]
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

fn access_lines_hidden() -> bool {
    user_log_filter().is_none()
}

/// The environment as the demo's telemetry sees it: [`DEMO_LOG_FILTER`] unless the user chose
/// a log filter.
pub(crate) fn log_env(name: &str) -> Option<String> {
    if name == "SWITCHYARD_LOG" && user_log_filter().is_none() {
        return Some(DEMO_LOG_FILTER.to_string());
    }
    std::env::var(name).ok()
}
