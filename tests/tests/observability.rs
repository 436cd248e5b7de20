//! Observability end to end, black-box: the real binary exporting to a real OTLP receiver
//! (gRPC and HTTP), `/metrics` read by `promtool` and by the official Python client's parser,
//! the generation lookup, the access log, a secret canary hunted through every output, and
//! the Grafana dashboard checked against the metric names a live proxy exposes.
//!
//! The fleet is two simulated providers: `flaky` answers 503 to everything, `steady` answers.
//! Model `fb` is tried on flaky first (one retry of the same endpoint, then a fallback to
//! steady: three attempts), `ok` lives on steady alone and `down` on flaky alone (a 502 after
//! two attempts). Breakers are set out of the way unless a test is about them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_sim::{Behavior, Call, Sim, SimConfig, fingerprint};
use switchyard_tests::{
    Answer, OtlpReceiver, Proxy, endpoint, merge, post_json, promtool_check, scrape, send,
    sim_provider, sse_data, workspace_root,
};

const CHAT: &str = "/v1/chat/completions";
/// USD per million tokens on every endpoint of the fleet.
const PROMPT_PRICE: f64 = 1.0;
const COMPLETION_PRICE: f64 = 2.0;

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// Random lowercase letters drawn from an alphabet without hex digits, so a fragment of
/// them cannot be mistaken for a trace id, request id or hash in a haystack.
fn random_letters(n: usize) -> String {
    const ALPHABET: &[u8] = b"ghjkmnpqrstvwxyz";
    let mut out = String::with_capacity(n);
    let mut bits = 0u64;
    for i in 0..n {
        if i % 16 == 0 {
            bits = random_u64();
        }
        out.push(char::from(ALPHABET[(bits & 0xf) as usize]));
        bits >>= 4;
    }
    out
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// `n` random lowercase hex digits, never all zero (an invalid W3C id).
fn random_hex(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str(&format!("{:016x}", random_u64() | 1));
    }
    s.truncate(n);
    s
}

struct Fleet {
    flaky: Sim,
    steady: Sim,
}

impl Fleet {
    async fn start() -> Fleet {
        Self::start_with_key(None).await
    }

    /// Both sims demand `Authorization: Bearer <key>` when a key is given.
    async fn start_with_key(key: Option<&str>) -> Fleet {
        let sim = |name: &str, default: Behavior| {
            Sim::start(SimConfig {
                name: name.into(),
                api_key: key.map(str::to_string),
                default,
                ..SimConfig::default()
            })
        };
        Fleet {
            flaky: sim("flaky", Behavior::ok().status(503)).await.unwrap(),
            steady: sim("steady", Behavior::ok().chunks(4)).await.unwrap(),
        }
    }

    /// The policy described in the module doc; the providers read their key from env
    /// `key_env` when given. `overrides` is merged over it key by key.
    fn policy(&self, key_env: Option<&str>, overrides: Value) -> Value {
        let ep = |provider: &str, model: &str| {
            endpoint(
                provider,
                &format!("{provider}-{model}"),
                PROMPT_PRICE,
                COMPLETION_PRICE,
            )
        };
        let mut p = json!({
            "providers": {
                "flaky": sim_provider(&self.flaky, key_env),
                "steady": sim_provider(&self.steady, key_env),
            },
            "models": {
                "fb": { "endpoints": [ep("flaky", "fb"), ep("steady", "fb")] },
                "ok": { "endpoints": [ep("steady", "ok")] },
                "down": { "endpoints": [ep("flaky", "down")] },
            },
            "defaults": {
                "provider": { "order": ["flaky", "steady"] },
                "timeouts": { "connect": "1s", "first_token": "2s", "idle": "2s", "total": "10s" },
                "retry": {
                    "max_attempts": 3, "same_endpoint_retries": 1,
                    "backoff_base": "10ms", "backoff_max": "20ms", "budget_min_per_s": 100
                },
                "breaker": { "consecutive_failures": 1000, "min_requests": 1000 }
            }
        });
        merge(&mut p, overrides);
        p
    }
}

fn chat(model: &str, prompt: &str, stream: bool) -> Value {
    let mut body = json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

async fn ask(proxy: &Proxy, body: &Value, headers: &[(&str, &str)]) -> Answer {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    send(
        "POST",
        &proxy.url(CHAT),
        &h,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

fn text(r: &Answer) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn assert_status(r: &Answer, status: u16) {
    assert_eq!(r.status, status, "{}", text(r));
}

fn request_id(r: &Answer) -> String {
    r.header("x-switchyard-request-id")
        .unwrap_or_else(|| panic!("no request id on {} {}", r.status, text(r)))
        .to_string()
}

/// What an answer used, as the client saw it: prompt tokens, completion tokens, USD.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Used {
    prompt: u64,
    completion: u64,
    cost: f64,
}

impl Used {
    fn of(usage: &Value) -> Used {
        let u = Used {
            prompt: usage["prompt_tokens"].as_u64().unwrap(),
            completion: usage["completion_tokens"].as_u64().unwrap(),
            cost: usage["cost"].as_f64().unwrap(),
        };
        assert!(u.prompt > 0 && u.completion > 0, "{usage}");
        // The sims report tokens; the cost is the policy's prices applied to them.
        assert_close(
            u.cost,
            (u.prompt as f64 * PROMPT_PRICE + u.completion as f64 * COMPLETION_PRICE) / 1e6,
        );
        u
    }

    /// The usage of a whole answer, streamed (from its usage chunk) or not.
    fn answer(r: &Answer) -> Used {
        assert_status(r, 200);
        if r.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
        {
            let usage = sse_data(&r.body)
                .iter()
                .filter(|d| *d != "[DONE]")
                .map(|d| serde_json::from_str::<Value>(d).unwrap())
                .rfind(|v| v["usage"].is_object())
                .unwrap_or_else(|| panic!("no usage chunk in {}", text(r)))["usage"]
                .clone();
            Used::of(&usage)
        } else {
            Used::of(&r.json()["usage"])
        }
    }
}

fn assert_close(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-12 + want.abs() * 1e-9,
        "got {got}, want {want}"
    );
}

async fn shutdown(proxy: &mut Proxy) {
    proxy.signal("TERM");
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(30)))
        .expect("the proxy did not exit within 30 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

// ---------------------------------------------------------------------------------------
// 1. Traces over OTLP
// ---------------------------------------------------------------------------------------

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn int_attr(span: &Value, key: &str) -> i64 {
    attr(span, key)
        .as_i64()
        .unwrap_or_else(|| panic!("{key} is not an integer on {span:#}"))
}

fn str_attr<'a>(span: &'a Value, key: &str) -> &'a str {
    attr(span, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string on {span:#}"))
}

/// The `traceparent` a sim call carried: (trace id, parent span id, flags).
fn upstream_traceparent(call: &Call) -> (String, String, String) {
    let tp = call
        .header("traceparent")
        .unwrap_or_else(|| panic!("upstream call without traceparent: {:?}", call.headers));
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// A request that falls back once (after one retry of the failing endpoint), carrying an
/// incoming `traceparent`, exported over `protocol`: one server span continuing the
/// caller's trace, one client span per attempt under it, and each upstream call carrying
/// the trace with its own attempt span as parent.
async fn fallback_trace_exported_over(protocol: &str) {
    let receiver = OtlpReceiver::start();
    let f = Fleet::start().await;
    let env = receiver.env(protocol, 60_000);
    let mut proxy = Proxy::start_with_env(&f.policy(None, json!({})), &env_refs(&env));

    let trace = random_hex(32);
    let caller_span = random_hex(16);
    let traceparent = format!("00-{trace}-{caller_span}-01");
    let r = ask(
        &proxy,
        &chat("fb", "Which track does the freight take?", false),
        &[("traceparent", &traceparent)],
    )
    .await;
    let used = Used::answer(&r);
    assert_eq!(r.header("x-switchyard-provider"), Some("steady"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("3"));
    let rid = request_id(&r);
    let flaky_calls = f.flaky.calls();
    let steady_calls = f.steady.calls();
    assert_eq!((flaky_calls.len(), steady_calls.len()), (2, 1));

    // Shutdown flushes the batch exporter.
    shutdown(&mut proxy).await;
    let in_trace = |records: &[Value]| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["signal"] == "span" && r["trace_id"] == trace.as_str())
            .cloned()
            .collect()
    };
    let records = tokio::task::block_in_place(|| {
        receiver.wait_for(Duration::from_secs(10), |recs| in_trace(recs).len() >= 4)
    });
    let spans = in_trace(&records);
    for s in &spans {
        let transport = if protocol == "grpc" { "grpc" } else { "http" };
        assert_eq!(s["transport"], transport, "{s:#}");
        assert_eq!(s["service_name"], "switchyard", "{s:#}");
    }

    // Exactly one request span and one span per attempt: nothing else in the trace.
    let requests: Vec<&Value> = spans
        .iter()
        .filter(|s| s["kind"] == "SPAN_KIND_SERVER")
        .collect();
    let mut attempts: Vec<&Value> = spans
        .iter()
        .filter(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .collect();
    assert_eq!(requests.len(), 1, "{spans:#?}");
    assert_eq!(attempts.len(), 3, "{spans:#?}");
    assert_eq!(spans.len(), 4, "unexpected spans in the trace: {spans:#?}");

    let req = requests[0];
    assert_eq!(req["parent_span_id"], caller_span.as_str(), "{req:#}");
    assert_eq!(req["status"], "STATUS_CODE_OK", "{req:#}");
    assert_eq!(str_attr(req, "gen_ai.operation.name"), "chat");
    assert_eq!(str_attr(req, "gen_ai.request.model"), "fb");
    assert_eq!(str_attr(req, "gen_ai.provider.name"), "steady");
    assert_eq!(str_attr(req, "gen_ai.response.model"), "steady-fb");
    assert_eq!(str_attr(req, "switchyard.request_id"), rid);
    assert_eq!(int_attr(req, "switchyard.attempts"), 3);
    assert_eq!(int_attr(req, "http.response.status_code"), 200);
    assert_eq!(
        int_attr(req, "gen_ai.usage.input_tokens"),
        used.prompt as i64
    );
    assert_eq!(
        int_attr(req, "gen_ai.usage.output_tokens"),
        used.completion as i64
    );
    assert_close(
        attr(req, "switchyard.cost_usd").as_f64().unwrap(),
        used.cost,
    );

    attempts.sort_by_key(|s| int_attr(s, "switchyard.attempt"));
    let expect = [
        ("flaky", "flaky-fb", "server_error", 503),
        ("flaky", "flaky-fb", "server_error", 503),
        ("steady", "steady-fb", "success", 200),
    ];
    for (i, (a, (provider, upstream_model, outcome, status))) in
        attempts.iter().zip(expect).enumerate()
    {
        assert_eq!(a["parent_span_id"], req["span_id"], "{a:#}");
        assert_eq!(int_attr(a, "switchyard.attempt"), i as i64 + 1, "{a:#}");
        assert_eq!(a["name"], format!("chat {upstream_model}"), "{a:#}");
        assert_eq!(str_attr(a, "gen_ai.operation.name"), "chat");
        assert_eq!(str_attr(a, "gen_ai.provider.name"), provider);
        assert_eq!(str_attr(a, "gen_ai.request.model"), upstream_model);
        assert_eq!(
            str_attr(a, "switchyard.endpoint"),
            format!("{provider}/fb"),
            "{a:#}"
        );
        assert_eq!(str_attr(a, "switchyard.outcome"), outcome, "{a:#}");
        assert_eq!(int_attr(a, "http.response.status_code"), status, "{a:#}");
        if i == 0 {
            assert!(attr(a, "switchyard.fallback_reason").is_null(), "{a:#}");
        } else {
            assert_eq!(str_attr(a, "switchyard.fallback_reason"), "server_error");
        }
        if outcome == "success" {
            assert_eq!(a["status"], "STATUS_CODE_OK", "{a:#}");
            assert_eq!(int_attr(a, "gen_ai.usage.input_tokens"), used.prompt as i64);
            assert_eq!(
                int_attr(a, "gen_ai.usage.output_tokens"),
                used.completion as i64
            );
            assert_close(attr(a, "switchyard.cost_usd").as_f64().unwrap(), used.cost);
            assert_eq!(str_attr(a, "gen_ai.response.model"), upstream_model);
        } else {
            assert_eq!(a["status"], "STATUS_CODE_ERROR", "{a:#}");
            assert_eq!(str_attr(a, "error.type"), outcome);
            assert!(attr(a, "gen_ai.usage.input_tokens").is_null(), "{a:#}");
        }
    }

    // The providers saw our trace, each call parented on its own attempt span (never the
    // caller's span id passed through).
    for (call, a) in flaky_calls.iter().chain(&steady_calls).zip(&attempts) {
        let (t, parent, flags) = upstream_traceparent(call);
        assert_eq!(t, trace);
        assert_eq!(parent, a["span_id"].as_str().unwrap());
        assert_ne!(parent, caller_span);
        assert_eq!(flags, "01");
    }

    // The GenAI client metrics of the semantic conventions went out on the same transport
    // (flushed at shutdown), with the served provider and model.
    let metric_points = |name: &str| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["signal"] == "metric" && r["name"] == name)
            .flat_map(|r| r["points"].as_array().unwrap().clone())
            .collect()
    };
    let duration = metric_points("gen_ai.client.operation.duration");
    assert!(
        duration
            .iter()
            .any(|p| p["attributes"]["gen_ai.provider.name"] == "steady"
                && p["attributes"]["gen_ai.request.model"] == "fb"
                && p["attributes"]["gen_ai.operation.name"] == "chat"
                && p["count"] == 1),
        "{duration:#?}"
    );
    let tokens = metric_points("gen_ai.client.token.usage");
    for (kind, n) in [("input", used.prompt), ("output", used.completion)] {
        assert!(
            tokens
                .iter()
                .any(|p| p["attributes"]["gen_ai.token.type"] == kind
                    && p["attributes"]["gen_ai.provider.name"] == "steady"
                    && p["count"] == 1
                    && p["sum"].as_f64() == Some(n as f64)),
            "{kind} {n}: {tokens:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_trace_exported_over_grpc() {
    fallback_trace_exported_over("grpc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_trace_exported_over_http_protobuf() {
    fallback_trace_exported_over("http/protobuf").await;
}

/// Without an incoming `traceparent` the request span starts a trace of its own (no parent)
/// and the providers still get one.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_traceparent_starts_a_trace() {
    let receiver = OtlpReceiver::start();
    let f = Fleet::start().await;
    let env = receiver.env("grpc", 60_000);
    let mut proxy = Proxy::start_with_env(&f.policy(None, json!({})), &env_refs(&env));
    let r = ask(&proxy, &chat("ok", "hello", true), &[]).await;
    Used::answer(&r);
    let rid = request_id(&r);
    shutdown(&mut proxy).await;
    let records = tokio::task::block_in_place(|| {
        receiver.wait_for(Duration::from_secs(10), |recs| {
            recs.iter().any(|r| {
                r["signal"] == "span" && r["attributes"]["switchyard.request_id"] == rid.as_str()
            })
        })
    });
    let req = records
        .iter()
        .find(|r| r["signal"] == "span" && r["attributes"]["switchyard.request_id"] == rid.as_str())
        .unwrap();
    assert!(req["parent_span_id"].is_null(), "{req:#}");
    let attempts: Vec<&Value> = records
        .iter()
        .filter(|r| r["signal"] == "span" && r["parent_span_id"] == req["span_id"])
        .collect();
    assert_eq!(attempts.len(), 1, "{records:#?}");
    assert_eq!(str_attr(attempts[0], "switchyard.outcome"), "success");
    let (t, parent, _) = upstream_traceparent(&f.steady.calls()[0]);
    assert_eq!(t, req["trace_id"].as_str().unwrap());
    assert_eq!(parent, attempts[0]["span_id"].as_str().unwrap());
}

/// Runs `requests` through a proxy exporting to a receiver, shuts it down, and returns the
/// request spans by request id, the spans exported, and the proxy's log lines.
async fn exported(
    f: &Fleet,
    requests: &[Value],
) -> (HashMap<String, Value>, Vec<Value>, Vec<String>) {
    let receiver = OtlpReceiver::start();
    let env = receiver.env("grpc", 60_000);
    let mut proxy = Proxy::start_with_env(&f.policy(None, json!({})), &env_refs(&env));
    let mut ids = Vec::new();
    for body in requests {
        ids.push(request_id(&ask(&proxy, body, &[]).await));
    }
    shutdown(&mut proxy).await;
    let request_span = |r: &Value, id: &str| {
        r["signal"] == "span" && r["attributes"]["switchyard.request_id"] == id
    };
    let records = tokio::task::block_in_place(|| {
        receiver.wait_for(Duration::from_secs(10), |recs| {
            ids.iter()
                .all(|id| recs.iter().any(|r| request_span(r, id)))
        })
    });
    let by_id = ids
        .iter()
        .map(|id| {
            let span = records.iter().find(|r| request_span(r, id)).unwrap();
            (id.clone(), span.clone())
        })
        .collect();
    (by_id, records, proxy.logs())
}

/// The request span's name is `"{operation} {model}"` once the model is known, as the
/// attempt spans' are.
#[tokio::test(flavor = "multi_thread")]
async fn the_request_span_is_named_after_its_model() {
    let f = Fleet::start().await;
    let (spans, _, _) = exported(&f, &[chat("ok", "hi", false)]).await;
    for span in spans.values() {
        assert_eq!(span["name"], "chat ok", "{span:#}");
    }
}

/// A request whose every attempt failed still says how many attempts it made: on its span
/// and in its access-log line, as the generation lookup does.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_request_reports_its_attempts() {
    let f = Fleet::start().await;
    let (spans, _, logs) = exported(&f, &[chat("down", "hi", false)]).await;
    assert_eq!(f.flaky.call_count(), 2);
    for (id, span) in &spans {
        assert_eq!(int_attr(span, "switchyard.attempts"), 2, "{span:#}");
        let line = access_lines(&logs)
            .into_iter()
            .find(|l| l["request_id"] == id.as_str())
            .unwrap();
        assert_eq!(line["attempts"], 2, "{line:#}");
    }
}

// ---------------------------------------------------------------------------------------
// 2. /metrics
// ---------------------------------------------------------------------------------------

/// Policy overrides: a global budget with room to spare, and a budget on model `capped`
/// (on steady) too small for any request.
fn capped_budgets() -> Value {
    json!({
        "models": { "capped": { "endpoints": [
            endpoint("steady", "steady-capped", PROMPT_PRICE, COMPLETION_PRICE)
        ] } },
        "budgets": [
            { "id": "everything", "scope": "global", "daily_usd": 100 },
            { "id": "tiny", "scope": {"model": "capped"}, "daily_usd": 0.000001 },
        ],
    })
}

/// A request the `tiny` budget refuses.
fn capped() -> Value {
    let mut body = chat("capped", "over budget", false);
    body["max_tokens"] = json!(100);
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_parse_and_move_exactly() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy(None, capped_budgets()));
    let before = scrape(&proxy).await;
    promtool_check(&before.text);

    let mut ok_used = Vec::new();
    for i in 0..2 {
        ok_used.push(Used::answer(
            &ask(&proxy, &chat("ok", &format!("question {i}"), false), &[]).await,
        ));
    }
    ok_used.push(Used::answer(
        &ask(&proxy, &chat("ok", "a streamed question", true), &[]).await,
    ));
    let fb = ask(&proxy, &chat("fb", "falls back", false), &[]).await;
    let fb_used = Used::answer(&fb);
    assert_eq!(fb.header("x-switchyard-attempts"), Some("3"));
    assert_status(&ask(&proxy, &chat("down", "fails", false), &[]).await, 502);
    let unknown = "no-such-model-zqxv";
    assert_status(&ask(&proxy, &chat(unknown, "hm", false), &[]).await, 404);
    let mut priced_out = chat("fb", "too dear", false);
    priced_out["provider"] = json!({"max_price": {"prompt": 0.01, "completion": 0.01}});
    assert_status(&ask(&proxy, &priced_out, &[]).await, 404);
    let bad = send(
        "POST",
        &proxy.url(CHAT),
        &[("content-type", "application/json")],
        "{\"model\": \"ok\", \"messages\": [",
    )
    .await;
    assert_status(&bad, 400);
    assert_status(&ask(&proxy, &capped(), &[]).await, 402);

    let r = send("GET", &proxy.admin_url("/metrics"), &[], Vec::new()).await;
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let after = scrape(&proxy).await;
    promtool_check(&after.text);

    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let req = |class: &str, outcome: &str| {
        delta(
            "switchyard_requests_total",
            &[
                ("route", "none"),
                ("operation", "chat"),
                ("status_class", class),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(req("2xx", "ok"), 4.0);
    assert_eq!(req("4xx", "not_found"), 2.0);
    assert_eq!(req("4xx", "bad_request"), 1.0);
    assert_eq!(req("5xx", "upstream_error"), 1.0);
    assert_eq!(req("4xx", "budget_exceeded"), 1.0);
    assert_eq!(
        after.sum("switchyard_requests_total", &[]) - before.sum("switchyard_requests_total", &[]),
        9.0
    );
    assert_eq!(after.value("switchyard_requests_in_flight", &[]), 0.0);
    let route = [("route", "none"), ("operation", "chat")];
    assert_eq!(
        delta("switchyard_request_duration_seconds_count", &route),
        9.0
    );
    // Only answers have a time to first token.
    assert_eq!(delta("switchyard_request_ttft_seconds_count", &route), 4.0);

    let attempts = |provider: &str, model: &str, class: &str| {
        delta(
            "switchyard_attempts_total",
            &[("provider", provider), ("model", model), ("class", class)],
        )
    };
    assert_eq!(attempts("steady", "ok", "success"), 3.0);
    assert_eq!(attempts("flaky", "fb", "server_error"), 2.0);
    assert_eq!(attempts("steady", "fb", "success"), 1.0);
    assert_eq!(attempts("flaky", "down", "server_error"), 2.0);
    assert_eq!(
        after.sum("switchyard_attempts_total", &[]) - before.sum("switchyard_attempts_total", &[]),
        8.0,
        "refused requests make no attempt"
    );
    assert_eq!(
        f.flaky.call_count() + f.steady.call_count(),
        8,
        "attempts counted = calls made"
    );
    for (p, m, n) in [
        ("steady", "ok", 3.0),
        ("flaky", "fb", 2.0),
        ("steady", "fb", 1.0),
        ("flaky", "down", 2.0),
    ] {
        assert_eq!(
            delta(
                "switchyard_attempt_duration_seconds_count",
                &[("provider", p), ("model", m)]
            ),
            n,
            "{p}/{m}"
        );
    }
    assert_eq!(
        delta(
            "switchyard_fallbacks_total",
            &[("reason", "server_error"), ("kind", "provider")]
        ),
        1.0
    );
    assert_eq!(
        after.sum("switchyard_fallbacks_total", &[])
            - before.sum("switchyard_fallbacks_total", &[]),
        1.0
    );
    for m in ["fb", "down"] {
        assert_eq!(
            delta(
                "switchyard_retries_total",
                &[("provider", "flaky"), ("model", m)]
            ),
            1.0,
            "{m}"
        );
    }
    assert_eq!(delta("switchyard_retry_budget_refusals_total", &[]), 0.0);

    let tokens = |p: &str, m: &str, dir: &str| {
        delta(
            "switchyard_tokens_total",
            &[("provider", p), ("model", m), ("direction", dir)],
        )
    };
    let sum = |f: fn(&Used) -> u64| ok_used.iter().map(f).sum::<u64>() as f64;
    assert_eq!(tokens("steady", "ok", "input"), sum(|u| u.prompt));
    assert_eq!(tokens("steady", "ok", "output"), sum(|u| u.completion));
    assert_eq!(tokens("steady", "fb", "input"), fb_used.prompt as f64);
    assert_eq!(tokens("steady", "fb", "output"), fb_used.completion as f64);
    assert_eq!(
        after.sum("switchyard_tokens_total", &[("provider", "flaky")]),
        0.0,
        "failed attempts used no tokens"
    );
    assert_close(
        delta(
            "switchyard_cost_usd_total",
            &[("provider", "steady"), ("model", "ok")],
        ),
        ok_used.iter().map(|u| u.cost).sum(),
    );
    assert_close(
        delta(
            "switchyard_cost_usd_total",
            &[("provider", "steady"), ("model", "fb")],
        ),
        fb_used.cost,
    );
    // Budgets: what was settled (the answers' cost; failed attempts are not charged) and
    // the one refusal.
    assert_close(
        delta(
            "switchyard_budget_spend_usd_total",
            &[("budget", "everything")],
        ),
        ok_used.iter().map(|u| u.cost).sum::<f64>() + fb_used.cost,
    );
    assert_eq!(
        delta("switchyard_budget_rejections_total", &[("budget", "tiny")]),
        1.0
    );
    assert_eq!(
        after.sum("switchyard_budget_rejections_total", &[])
            - before.sum("switchyard_budget_rejections_total", &[]),
        1.0
    );
    assert_eq!(
        delta("switchyard_budget_spend_usd_total", &[("budget", "tiny")]),
        0.0
    );
    for (p, m) in [
        ("flaky", "fb"),
        ("steady", "fb"),
        ("steady", "ok"),
        ("flaky", "down"),
    ] {
        assert_eq!(
            after.value("switchyard_breaker_state", &[("provider", p), ("model", m)]),
            0.0,
            "{p}/{m}"
        );
    }

    // Labels are policy ids and fixed codes: a model name a client made up never becomes a
    // series.
    assert!(!after.text.contains(unknown), "{}", after.text);
    // Every family has HELP and TYPE, and the types are what a dashboard expects.
    let types: HashMap<&str, &str> = after
        .families
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    for (name, kind) in [
        ("switchyard_requests", "counter"),
        ("switchyard_requests_in_flight", "gauge"),
        ("switchyard_request_duration_seconds", "histogram"),
        ("switchyard_request_ttft_seconds", "histogram"),
        ("switchyard_attempts", "counter"),
        ("switchyard_attempt_duration_seconds", "histogram"),
        ("switchyard_attempt_ttft_seconds", "histogram"),
        ("switchyard_fallbacks", "counter"),
        ("switchyard_retries", "counter"),
        ("switchyard_retry_budget_refusals", "counter"),
        ("switchyard_breaker_state", "gauge"),
        ("switchyard_tokens", "counter"),
        ("switchyard_cost_usd", "counter"),
        ("switchyard_budget_spend_usd", "counter"),
        ("switchyard_budget_rejections", "counter"),
        ("switchyard_policy_generation", "gauge"),
    ] {
        assert_eq!(types.get(name), Some(&kind), "{name} in {types:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 3. The secret canary
// ---------------------------------------------------------------------------------------

/// Where `canary`, or any 8-character piece of its random part, is in `haystack`: one
/// line of context per finding, named after `what`.
fn canary_leaks(what: &str, haystack: &str, canary: &str, random: &str) -> Vec<String> {
    let chars: Vec<char> = random.chars().collect();
    let pieces = std::iter::once(canary.to_string())
        .chain(chars.windows(8).map(|w| w.iter().collect::<String>()));
    for piece in pieces {
        if haystack.contains(&piece) {
            return vec![format!(
                "{what} (contains {piece:?}):\n{}",
                context_of(haystack, &piece)
            )];
        }
    }
    Vec::new()
}

fn context_of(haystack: &str, needle: &str) -> String {
    haystack
        .lines()
        .filter(|l| l.contains(needle))
        .take(5)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A provider key that exists only in the proxy's environment: after success, fallback,
/// streaming, every kind of error, every admin endpoint and the generation lookup, all at
/// `SWITCHYARD_LOG=trace` with spans exported, it appears in no log line, span, metric,
/// response (body or header) or admin answer — yet every upstream call carried it. Nor
/// does any prompt appear in the logs or spans, even at trace level.
#[tokio::test(flavor = "multi_thread")]
async fn the_provider_key_never_leaves_the_proxy() {
    hunt_the_canary(false).await;
}

/// The same when a provider puts the key it was given in its error message (OpenAI echoes a
/// masked key; a provider that echoes it whole must not make the proxy repeat it).
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_echoing_the_key_does_not_make_the_proxy_leak_it() {
    hunt_the_canary(true).await;
}

async fn hunt_the_canary(echoing_provider: bool) {
    let random = random_letters(32);
    let canary = format!("sk-canary-{random}");
    let prompt_mark = random_letters(16);
    let prompt = |what: &str| format!("{what} {prompt_mark}");
    let receiver = OtlpReceiver::start();
    let f = Fleet::start_with_key(Some(&canary)).await;
    // A provider that refuses the key with a 401, naming it or not.
    let message = if echoing_provider {
        format!("Incorrect API key provided: {canary}.")
    } else {
        "Incorrect API key provided.".to_string()
    };
    let echo = Sim::start(SimConfig {
        name: "echo".into(),
        api_key: Some(canary.clone()),
        default: Behavior::ok()
            .status(401)
            .error_code("invalid_api_key")
            .error_message(message),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut policy = f.policy(
        Some("SIM_KEY"),
        json!({
            "models": {
                "echoed": { "endpoints": [
                    endpoint("echo", "echo-echoed", PROMPT_PRICE, COMPLETION_PRICE),
                    endpoint("steady", "steady-echoed", PROMPT_PRICE, COMPLETION_PRICE),
                ] },
                "echo-only": { "endpoints": [
                    endpoint("echo", "echo-only", PROMPT_PRICE, COMPLETION_PRICE),
                ] },
            },
            "budgets": [ { "id": "global", "scope": "global", "daily_usd": 100 } ],
        }),
    );
    policy["providers"]["echo"] = sim_provider(&echo, Some("SIM_KEY"));
    policy["defaults"]["provider"]["order"] = json!(["flaky", "echo", "steady"]);
    let mut env = receiver.env("grpc", 200);
    env.push(("SIM_KEY".into(), canary.clone()));
    env.push(("SWITCHYARD_LOG".into(), "trace".into()));
    let mut proxy = Proxy::start_with_env(&policy, &env_refs(&env));

    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut ids = Vec::new();
    let mut keep = |what: &str, r: &Answer, ids: &mut Vec<String>| {
        let headers: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        outputs.push((
            what.to_string(),
            format!("{} {}\n{}", r.status, headers.join("\n"), text(r)),
        ));
        if let Some(id) = r.header("x-switchyard-request-id") {
            ids.push(id.to_string());
        }
    };

    let r = ask(&proxy, &chat("ok", &prompt("plain"), false), &[]).await;
    Used::answer(&r);
    keep("success", &r, &mut ids);
    let r = ask(&proxy, &chat("ok", &prompt("streamed"), true), &[]).await;
    Used::answer(&r);
    keep("stream", &r, &mut ids);
    let r = ask(&proxy, &chat("fb", &prompt("fallback"), false), &[]).await;
    Used::answer(&r);
    keep("fallback", &r, &mut ids);
    let r = ask(&proxy, &chat("fb", &prompt("streamed fallback"), true), &[]).await;
    Used::answer(&r);
    keep("streamed fallback", &r, &mut ids);
    let r = ask(
        &proxy,
        &chat("echo-only", &prompt("only the echo"), false),
        &[],
    )
    .await;
    assert_status(&r, 502);
    keep("502 after an echoed 401", &r, &mut ids);
    let r = ask(
        &proxy,
        &chat("echoed", &prompt("the echo is cooling down"), false),
        &[],
    )
    .await;
    Used::answer(&r);
    assert_eq!(r.header("x-switchyard-provider"), Some("steady"));
    keep("skipping the echo", &r, &mut ids);
    let r = ask(&proxy, &chat("down", &prompt("all fail"), false), &[]).await;
    assert_status(&r, 502);
    keep("502", &r, &mut ids);
    let r = ask(
        &proxy,
        &chat("down", &prompt("all fail, streamed"), true),
        &[],
    )
    .await;
    assert_status(&r, 502);
    keep("502 streamed", &r, &mut ids);
    let r = ask(&proxy, &chat("nope", &prompt("unknown model"), false), &[]).await;
    assert_status(&r, 404);
    keep("404", &r, &mut ids);
    let mut priced_out = chat("fb", &prompt("no endpoints"), false);
    priced_out["provider"] = json!({"max_price": {"prompt": 0.01}});
    let r = ask(&proxy, &priced_out, &[]).await;
    assert_status(&r, 404);
    keep("no endpoints", &r, &mut ids);
    let r = send(
        "POST",
        &proxy.url(CHAT),
        &[("content-type", "application/json")],
        "{\"model\":",
    )
    .await;
    assert_status(&r, 400);
    keep("400", &r, &mut ids);
    // The caller's own key is not ours: it must not be answered with ours either.
    let r = ask(
        &proxy,
        &chat("ok", &prompt("with a client key"), false),
        &[("authorization", "Bearer sk-client-side")],
    )
    .await;
    keep("client key", &r, &mut ids);
    let r = post_json(
        &proxy.url("/v1/messages"),
        &json!({"model": "ok", "max_tokens": 50,
                "messages": [{"role": "user", "content": prompt("anthropic")}]}),
    )
    .await;
    keep("anthropic inbound", &r, &mut ids);
    let r = post_json(
        &proxy.url("/v1/embeddings"),
        &json!({"model": "ok", "input": prompt("embed me")}),
    )
    .await;
    keep("embeddings", &r, &mut ids);
    for path in ["/v1/models", "/nope"] {
        let r = send("GET", &proxy.url(path), &[], Vec::new()).await;
        keep(path, &r, &mut ids);
    }

    let mut lookups = ids.clone();
    lookups.push("gen-unknown".to_string());
    for id in &lookups {
        let r = send(
            "GET",
            &proxy.url(&format!("/api/v1/generation?id={id}")),
            &[],
            Vec::new(),
        )
        .await;
        keep("generation", &r, &mut ids);
    }
    for (method, path, body) in [
        ("GET", "/healthz", ""),
        ("GET", "/readyz", ""),
        ("GET", "/admin/policy", ""),
        ("GET", "/admin/providers", ""),
        ("GET", "/admin/budgets", ""),
        ("GET", "/metrics", ""),
        (
            "POST",
            "/admin/explain",
            r#"{"model":"fb","messages":[{"role":"user","content":"x"}]}"#,
        ),
        ("POST", "/admin/explain", "{not json"),
        ("POST", "/admin/reload", ""),
        ("GET", "/admin/unknown", ""),
        ("POST", "/metrics", ""),
    ] {
        let r = send(
            method,
            &proxy.admin_url(path),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
        keep(&format!("admin {method} {path}"), &r, &mut ids);
    }
    let metrics_text = scrape(&proxy).await.text;

    // Every upstream call carried the key: the canary was really in play.
    let bearer = fingerprint(&format!("Bearer {canary}"));
    let calls: Vec<Call> = [&f.flaky, &f.steady, &echo]
        .iter()
        .flat_map(|s| s.calls())
        .collect();
    assert!(calls.len() >= 12, "{} calls", calls.len());
    for c in &calls {
        assert_eq!(c.header("authorization"), Some(bearer.as_str()), "{c:?}");
    }
    assert!(
        echo.call_count() >= 1,
        "the refusing provider was never asked"
    );
    assert!(
        f.steady
            .calls()
            .iter()
            .any(|c| c.body.to_string().contains(&prompt_mark)),
        "the prompts went upstream"
    );

    shutdown(&mut proxy).await;
    let logs = proxy.logs();
    assert!(
        logs.iter().any(|l| l.contains("\"level\":\"TRACE\"")),
        "SWITCHYARD_LOG=trace produced no trace lines"
    );
    let spans = tokio::task::block_in_place(|| {
        receiver.wait_for(Duration::from_secs(10), |recs| {
            recs.iter().filter(|r| r["signal"] == "span").count() >= 10
        })
    });
    let mut leaks = canary_leaks("the logs", &logs.join("\n"), &canary, &random);
    leaks.extend(canary_leaks(
        "the exported telemetry",
        &receiver.raw(),
        &canary,
        &random,
    ));
    assert!(!spans.is_empty());
    leaks.extend(canary_leaks("/metrics", &metrics_text, &canary, &random));
    for (what, out) in &outputs {
        leaks.extend(canary_leaks(what, out, &canary, &random));
    }
    assert!(
        leaks.is_empty(),
        "the provider key leaked into:\n{}",
        leaks.join("\n\n")
    );
    for (what, haystack) in [("the logs", logs.join("\n")), ("the spans", receiver.raw())] {
        assert!(
            !haystack.contains(&prompt_mark),
            "a prompt is in {what}:\n{}",
            context_of(&haystack, &prompt_mark)
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Generation lookup
// ---------------------------------------------------------------------------------------

async fn generation(proxy: &Proxy, id: &str) -> Answer {
    send(
        "GET",
        &proxy.url(&format!("/api/v1/generation?id={id}")),
        &[],
        Vec::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn generation_lookup_tells_attempts_exclusions_and_spend() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy(None, json!({})));

    // A fallback: the attempt trail, then who served and what it used.
    let r = ask(&proxy, &chat("fb", "falls back", false), &[]).await;
    let used = Used::answer(&r);
    let rid = request_id(&r);
    let g = generation(&proxy, &rid).await;
    assert_status(&g, 200);
    assert!(
        g.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    let d = &g.json()["data"];
    assert_eq!(d["id"], rid.as_str());
    assert_eq!(d["state"], "completed");
    assert_eq!(d["status"], 200);
    assert_eq!(d["model"], "fb");
    assert_eq!(d["models"], json!(["fb"]));
    assert_eq!(d["provider_name"], "steady");
    assert_eq!(d["upstream_model"], "steady-fb");
    assert_eq!(d["tokens_prompt"], used.prompt);
    assert_eq!(d["tokens_completion"], used.completion);
    assert_close(d["total_cost"].as_f64().unwrap(), used.cost);
    assert_eq!(d["num_attempts"], 3);
    assert!(d["latency"].as_u64().is_some(), "{d:#}");
    assert!(
        d["created_at"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{d:#}"
    );
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{d:#}");
    let expect = [
        ("flaky", "server_error", 503),
        ("flaky", "server_error", 503),
        ("steady", "success", 200),
    ];
    for (i, (a, (provider, class, status))) in attempts.iter().zip(expect).enumerate() {
        assert_eq!(a["attempt"], i + 1, "{a:#}");
        assert_eq!(a["provider"], provider, "{a:#}");
        assert_eq!(a["model"], "fb", "{a:#}");
        assert_eq!(a["endpoint"], format!("{provider}/fb"), "{a:#}");
        assert_eq!(a["class"], class, "{a:#}");
        assert_eq!(a["status"], status, "{a:#}");
        assert!(a["latency_ms"].as_u64().is_some(), "{a:#}");
    }
    let served = &attempts[2];
    assert_eq!(
        served["tokens"],
        json!({"prompt": used.prompt, "completion": used.completion})
    );
    assert_close(served["cost"].as_f64().unwrap(), used.cost);
    assert!(attempts[0]["tokens"].is_null(), "{:#}", attempts[0]);
    assert_eq!(d["excluded"], json!([]));

    // A streamed answer: its usage is known only at the end of the stream, and recorded.
    let r = ask(&proxy, &chat("ok", "streamed", true), &[]).await;
    let used = Used::answer(&r);
    let d = generation(&proxy, &request_id(&r)).await.json()["data"].clone();
    assert_eq!(d["provider_name"], "steady");
    assert_eq!(d["tokens_completion"], used.completion);
    assert_close(d["total_cost"].as_f64().unwrap(), used.cost);
    assert!(d["ttft_ms"].as_u64().is_some(), "{d:#}");

    // Nothing left after filtering: no attempt, every exclusion with its reason.
    let mut priced_out = chat("fb", "too dear", false);
    priced_out["provider"] = json!({"max_price": {"prompt": 0.01, "completion": 0.01}});
    let r = ask(&proxy, &priced_out, &[]).await;
    assert_status(&r, 404);
    assert_eq!(r.json()["error"]["type"], "no_endpoints");
    let g = generation(&proxy, &request_id(&r)).await;
    assert_status(&g, 200);
    let d = &g.json()["data"];
    assert_eq!(d["status"], 404);
    assert_eq!(d["num_attempts"], 0);
    assert_eq!(d["attempts"], json!([]));
    assert!(d["provider_name"].is_null(), "{d:#}");
    let excluded: BTreeSet<(String, String)> = d["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        excluded,
        BTreeSet::from([
            ("flaky/fb".to_string(), "max_price".to_string()),
            ("steady/fb".to_string(), "max_price".to_string()),
        ]),
        "{d:#}"
    );

    // All attempts failed: the trail, and no one served.
    let r = ask(&proxy, &chat("down", "fails", false), &[]).await;
    assert_status(&r, 502);
    let d = generation(&proxy, &request_id(&r)).await.json()["data"].clone();
    assert_eq!(d["status"], 502);
    assert_eq!(d["num_attempts"], 2);
    assert!(d["provider_name"].is_null(), "{d:#}");
    assert!(
        d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["class"] == "server_error" && a["provider"] == "flaky"),
        "{d:#}"
    );

    // An unknown id: 404 in OpenAI's error shape.
    for query in ["id=gen-does-not-exist", "id=", ""] {
        let g = send(
            "GET",
            &proxy.url(&format!("/api/v1/generation?{query}")),
            &[],
            Vec::new(),
        )
        .await;
        assert_status(&g, 404);
        let e = &g.json()["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        assert!(e["type"].is_string() && e["code"].is_string(), "{e}");
    }
    let g = send(
        "POST",
        &proxy.url("/api/v1/generation?id=x"),
        &[],
        Vec::new(),
    )
    .await;
    assert_status(&g, 405);
    assert!(g.json()["error"]["message"].is_string());
}

// ---------------------------------------------------------------------------------------
// 5. Access log
// ---------------------------------------------------------------------------------------

fn access_lines(logs: &[String]) -> Vec<Value> {
    logs.iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "switchyard::access")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_access_line_per_request_and_no_prompt() {
    let f = Fleet::start().await;
    let proxy = Proxy::start(&f.policy(None, json!({})));
    let prompt = format!("Sentinel prompt {} about boxcars", random_letters(20));

    // (request id, model asked, status, usage when answered, attempts made)
    let mut sent: Vec<(String, Answer, u32)> = Vec::new();
    for (model, stream, attempts) in [
        ("ok", false, 1),
        ("ok", true, 1),
        ("fb", false, 3),
        ("fb", true, 3),
        ("down", false, 2),
        ("nope", false, 0),
    ] {
        let r = ask(&proxy, &chat(model, &prompt, stream), &[]).await;
        sent.push((request_id(&r), r, attempts));
    }
    let mut priced_out = chat("fb", &prompt, false);
    priced_out["provider"] = json!({"max_price": {"prompt": 0.01}});
    let r = ask(&proxy, &priced_out, &[]).await;
    assert_status(&r, 404);
    sent.push((request_id(&r), r, 0));

    // Lines are written when each response ends; give the last one a moment, then make
    // sure no extra line follows.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while access_lines(&proxy.logs()).len() < sent.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:#?}",
            access_lines(&proxy.logs())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = proxy.logs();
    let lines = access_lines(&logs);
    assert_eq!(lines.len(), sent.len(), "{lines:#?}");

    for (rid, r, attempts) in &sent {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| l["request_id"] == rid.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{rid}: {lines:#?}");
        let l = mine[0];
        assert_eq!(l["message"], "request", "{l:#}");
        assert_eq!(l["level"], "INFO", "{l:#}");
        assert_eq!(l["operation"], "chat", "{l:#}");
        assert_eq!(l["status"], r.status, "{l:#}");
        for field in ["route", "provider", "model", "outcome"] {
            assert!(l[field].is_string(), "{field} missing: {l:#}");
        }
        assert!(l["duration_ms"].as_u64().is_some(), "{l:#}");
        if r.status == 200 {
            assert_eq!(l["attempts"], *attempts, "attempts made for {rid}: {l:#}");
            let used = Used::answer(r);
            assert_eq!(l["outcome"], "ok");
            assert_eq!(l["provider"], r.header("x-switchyard-provider").unwrap());
            assert_eq!(l["model"], r.header("x-switchyard-model").unwrap());
            assert_eq!(l["prompt_tokens"], used.prompt, "{l:#}");
            assert_eq!(l["completion_tokens"], used.completion, "{l:#}");
            assert_close(l["cost_usd"].as_f64().unwrap(), used.cost);
            assert!(l["ttft_ms"].as_u64().is_some(), "{l:#}");
            assert!(l["ttft_ms"].as_u64() <= l["duration_ms"].as_u64(), "{l:#}");
        } else {
            let outcome = if r.status == 502 {
                "upstream_error"
            } else {
                "not_found"
            };
            assert_eq!(l["outcome"], outcome, "{l:#}");
            assert_eq!(l["provider"], "", "{l:#}");
            assert!(l["prompt_tokens"].is_null(), "{l:#}");
            assert!(l["ttft_ms"].is_null(), "an error has no first token: {l:#}");
        }
    }
    let by_status: BTreeMap<u64, usize> = lines.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l["status"].as_u64().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(by_status, BTreeMap::from([(200, 4), (404, 2), (502, 1)]));

    // The prompt went upstream but appears in no log line.
    assert!(
        f.steady
            .calls()
            .iter()
            .any(|c| c.body.to_string().contains(&prompt))
    );
    let leaked: Vec<&String> = logs.iter().filter(|l| l.contains(&prompt)).collect();
    assert!(leaked.is_empty(), "the prompt was logged: {leaked:#?}");
    // Nor the completion the clients received.
    let completion = sent[0].1.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(completion.len() > 10, "{completion:?}");
    let leaked: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains(completion.trim()))
        .collect();
    assert!(leaked.is_empty(), "the completion was logged: {leaked:#?}");
}

// ---------------------------------------------------------------------------------------
// Dashboard
// ---------------------------------------------------------------------------------------

fn dashboard() -> Value {
    let path = workspace_root().join("deploy/grafana/switchyard.json");
    let raw = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p.clone());
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter().cloned());
        }
    }
    out
}

/// Every PromQL expression of the dashboard: panel targets and annotation queries, with
/// where each comes from.
fn promql(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("?").to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            out.push((format!("annotation {}", a["name"]), e.to_string()));
        }
    }
    out
}

/// Everything that names a metric: [`promql`] and the query variables (`label_values(..)`,
/// which is Grafana's, not PromQL).
fn exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = promql(d);
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = match &v["query"] {
                Value::String(s) => s.clone(),
                q => q["query"].as_str().unwrap().to_string(),
            };
            out.push((format!("variable {}", v["name"]), q));
        }
    }
    out
}

/// The `switchyard_*` names an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("switchyard_") {
        let start = i + at;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Grafana's variables replaced by values PromQL accepts, for `promtool check rules`.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${job:regex}", ".*")
        .replace("$job", ".*")
        .replace("$provider", ".*")
        .replace("$model", ".*")
        .replace("$route", ".*")
}

#[test]
fn dashboard_is_a_grafana_dashboard() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        d["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds: Vec<&Value> = vars.iter().filter(|v| v["type"] == "datasource").collect();
    assert_eq!(ds.len(), 1, "one datasource variable");
    assert_eq!(ds[0]["query"], "prometheus");
    let ds_name = ds[0]["name"].as_str().unwrap();
    let ds_ref = format!("${{{ds_name}}}");
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], ds_ref.as_str(), "{v:#}");
    }

    let all = panels(&d);
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in &all {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel without id: {p:#}"));
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && w > 0 && g["h"].as_u64().unwrap() > 0,
            "{p:#}"
        );
        assert!(g["y"].as_u64().is_some(), "{p:#}");
        let title = p["title"].as_str().unwrap();
        assert!(!title.is_empty());
        if p["type"] == "row" {
            continue;
        }
        titles.push(title.to_string());
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], ds_ref.as_str(), "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
            let expr = t["expr"].as_str().unwrap();
            assert!(!metric_names(expr).is_empty(), "{title}: {expr}");
            if expr.contains("histogram_quantile") {
                assert!(
                    expr.contains("_bucket") && expr.contains("le"),
                    "{title}: {expr}"
                );
            }
        }
    }

    // What the dashboard must show, by the metric family that carries it.
    let used: BTreeSet<String> = exprs(&d)
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .collect();
    for family in [
        "switchyard_requests_total",
        "switchyard_requests_in_flight",
        "switchyard_request_duration_seconds_bucket",
        "switchyard_request_ttft_seconds_bucket",
        "switchyard_attempts_total",
        "switchyard_attempt_ttft_seconds_bucket",
        "switchyard_attempt_duration_seconds_bucket",
        "switchyard_fallbacks_total",
        "switchyard_attempts_skipped_total",
        "switchyard_breaker_state",
        "switchyard_tokens_total",
        "switchyard_cost_usd_total",
        "switchyard_budget_spend_usd_total",
        "switchyard_budget_rejections_total",
        "switchyard_policy_reloads_total",
    ] {
        assert!(used.contains(family), "no panel reads {family}");
    }
    let quantiles = promql(&d)
        .iter()
        .filter(|(_, e)| e.contains("histogram_quantile"))
        .count();
    assert!(quantiles >= 4, "TTFT and duration quantiles");

    // PromQL syntax, checked by Prometheus itself: every expression as a recording rule.
    let rules: Vec<Value> = promql(&d)
        .iter()
        .enumerate()
        .map(|(i, (_, e))| json!({"record": format!("dashboard:expr_{i}"), "expr": concrete(e)}))
        .collect();
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    // A JSON document is YAML.
    std::fs::write(
        file.path(),
        serde_json::to_vec(&json!({"groups": [{"name": "dashboard", "rules": rules}]})).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is not installed ({e}): `apt-get install prometheus` provides it")
        });
    assert!(
        out.status.success(),
        "promtool rejected a dashboard query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every metric the dashboard queries is exposed by a live proxy that has seen traffic of
/// every kind: fallbacks, a breaker opening, spend against a budget and a refusal by one,
/// and reloads that took and one that did not.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_queries_only_metrics_a_live_proxy_exposes() {
    let f = Fleet::start().await;
    let mut overrides = capped_budgets();
    overrides["defaults"] = json!({ "breaker": { "consecutive_failures": 2 } });
    let policy = f.policy(None, overrides);
    let proxy = Proxy::start(&policy);
    Used::answer(&ask(&proxy, &chat("ok", "hi", true), &[]).await);
    Used::answer(&ask(&proxy, &chat("fb", "hi", false), &[]).await);
    assert_status(&ask(&proxy, &chat("down", "hi", false), &[]).await, 502);
    assert_status(&ask(&proxy, &capped(), &[]).await, 402);
    let reload = send("POST", &proxy.admin_url("/admin/reload"), &[], Vec::new()).await;
    assert_status(&reload, 200);
    std::fs::write(&proxy.policy_path, b"{ not a policy").unwrap();
    let reload = send("POST", &proxy.admin_url("/admin/reload"), &[], Vec::new()).await;
    assert_status(&reload, 422);

    let live = scrape(&proxy).await;
    assert_eq!(
        live.value(
            "switchyard_breaker_state",
            &[("provider", "flaky"), ("model", "down")]
        ),
        2.0,
        "the breaker of flaky/down is open"
    );
    let d = dashboard();
    let mut missing = BTreeMap::new();
    for (title, expr) in exprs(&d) {
        for name in metric_names(&expr) {
            if !live.samples.iter().any(|s| s.name == name) {
                missing.insert(name, title.clone());
            }
        }
    }
    let exposed: BTreeSet<&str> = live.samples.iter().map(|s| s.name.as_str()).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series /metrics does not have: {missing:#?}\nexposed: {exposed:#?}"
    );
    // And the other way round: no family goes unwatched.
    let used: BTreeSet<String> = exprs(&d)
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .collect();
    let unwatched: Vec<&(String, String)> = live
        .families
        .iter()
        .filter(|(fam, _)| {
            !["", "_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| used.contains(&format!("{fam}{suffix}")))
        })
        .collect();
    assert!(unwatched.is_empty(), "no panel shows {unwatched:?}");
}
