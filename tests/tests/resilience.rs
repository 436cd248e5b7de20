//! DESIGN.md §4 end to end: every row of the fault table against the real binary, with
//! simulated providers that fail on cue. Each test asserts what the client saw (status, the
//! streamed content, `[DONE]` or an explicit error event, the `x-switchyard-*` headers), how
//! many calls each upstream received and when, and that the proxy is still healthy afterwards.
//!
//! Timeouts, backoffs and breaker periods are shrunk in the policy (first token 400 ms, idle
//! 300 ms, backoff 20–80 ms, breaker open 500 ms–1 s) so the whole file runs in seconds; the
//! retry budget's floor is raised so that it never decides a test it is not about.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_sim::{
    Behavior, Call, Outcome, Sim, SimConfig, continuation_text, expected_text, prompt_tokens,
};
use switchyard_tests::{
    Answer, Proxy, merge, post_json, provider_endpoint as ep, send, sim_providers, sse_data,
    start_sim as sim,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The answer every healthy sim gives in the continuation tests: the same words whatever the
/// provider, so an answer spliced from two providers can be compared with one text.
const TEXT: &str = "the quick brown fox jumps over the lazy dog again ";
/// Words (= content chunks = completion tokens) in [`TEXT`].
const WORDS: u64 = 10;
/// [`TEXT`]'s first three chunks: what the client holds when a stream breaks after three.
const FIRST3: &str = "the quick brown ";

const CHAT: &str = "/v1/chat/completions";

fn text_behavior() -> Behavior {
    Behavior::ok().text(TEXT)
}

/// The same, declaring assistant-prefill support.
fn ep_prefill(provider: &str, model: &str, prompt: f64, completion: f64) -> Value {
    let mut e = ep(provider, model, prompt, completion);
    e["supports_prefill"] = json!(true);
    e
}

/// A policy over `sims` (provider ids in the order given, which is also the default provider
/// order, so every test knows which endpoint is tried first) with small timeouts; `overrides`
/// is merged over it key by key.
fn policy(sims: &[(&str, &Sim)], models: Value, overrides: Value) -> Value {
    let (providers, order) = sim_providers(sims);
    let mut p = json!({
        "providers": providers,
        "models": models,
        "defaults": {
            "provider": { "order": order },
            "timeouts": { "connect": "1s", "first_token": "400ms", "idle": "300ms", "total": "8s" },
            "retry": {
                "max_attempts": 3, "same_endpoint_retries": 1,
                "backoff_base": "20ms", "backoff_max": "80ms",
                "budget_min_per_s": 100, "max_retry_after_wait": "3s"
            },
            "breaker": { "consecutive_failures": 5, "open_base": "500ms", "open_max": "1s" }
        }
    });
    merge(&mut p, overrides);
    p
}

fn chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Tell me about switchyards, briefly."}],
    })
}

fn with(mut body: Value, extra: Value) -> Value {
    merge(&mut body, extra);
    body
}

/// Sends a chat request; returns the whole answer and how long it took.
async fn ask(proxy: &Proxy, body: &Value) -> (Answer, Duration) {
    let started = Instant::now();
    let r = post_json(&proxy.url(CHAT), body).await;
    (r, started.elapsed())
}

fn body_text(r: &Answer) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn assert_status(r: &Answer, status: u16) {
    assert_eq!(r.status, status, "{}", body_text(r));
}

/// What a streaming client made of the body.
#[derive(Debug)]
struct Streamed {
    text: String,
    done: bool,
    errors: Vec<Value>,
    usage: Option<Value>,
    models: Vec<String>,
    /// Chunks that announce the assistant's role, and chunks that say why the answer
    /// stopped: one each in a well-formed answer, however many upstream calls made it.
    roles: usize,
    finishes: usize,
}

/// Reads an SSE body the way a client does; every event must be JSON or `[DONE]`, and
/// `[DONE]` may only come last.
fn streamed(r: &Answer) -> Streamed {
    assert_eq!(
        r.header("content-type"),
        Some("text/event-stream"),
        "{}",
        body_text(r)
    );
    let events = sse_data(&r.body);
    let mut s = Streamed {
        text: String::new(),
        done: false,
        errors: Vec::new(),
        usage: None,
        models: Vec::new(),
        roles: 0,
        finishes: 0,
    };
    for (i, data) in events.iter().enumerate() {
        if data == "[DONE]" {
            assert_eq!(
                i,
                events.len() - 1,
                "[DONE] is not the last event: {events:?}"
            );
            s.done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data)
            .unwrap_or_else(|e| panic!("the client got a non-JSON event ({e}): {data}"));
        if v.get("error").is_some() {
            s.errors.push(v);
            continue;
        }
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            s.text.push_str(t);
        }
        s.roles += usize::from(v["choices"][0]["delta"]["role"].is_string());
        s.finishes += usize::from(v["choices"][0]["finish_reason"].is_string());
        if v["usage"].is_object() {
            assert!(s.usage.is_none(), "two usage chunks: {events:?}");
            s.usage = Some(v["usage"].clone());
        }
        if let Some(m) = v["model"].as_str() {
            s.models.push(m.to_string());
        }
    }
    s
}

/// A complete answer: all of `text`, one role chunk, one finish chunk, `[DONE]`, no error.
fn assert_complete(s: &Streamed, text: &str) {
    assert_eq!(s.text, text, "not one complete answer: {s:?}");
    assert!(s.done, "no [DONE]: {s:?}");
    assert!(s.errors.is_empty(), "{s:?}");
    assert_eq!((s.roles, s.finishes), (1, 1), "{s:?}");
}

/// The content of a non-streaming chat answer.
fn message_text(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

/// The last message of the request an upstream received.
fn last_message(call: &Call) -> &Value {
    call.body["messages"].as_array().unwrap().last().unwrap()
}

fn gap_ms(calls: &[Call], i: usize, j: usize) -> u64 {
    calls[j].at_ms - calls[i].at_ms
}

/// The admin view of one endpoint's breaker.
async fn breaker(proxy: &Proxy, endpoint: &str) -> Value {
    let v = send("GET", &proxy.admin_url("/admin/providers"), &[], Vec::new())
        .await
        .json();
    v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == endpoint)
        .unwrap_or_else(|| panic!("{endpoint} not in /admin/providers: {v}"))["breaker"]
        .clone()
}

/// `/healthz` answers, and one more ordinary (non-streaming) request is served.
async fn assert_still_healthy(proxy: &Proxy, body: &Value) -> Value {
    let r = send("GET", &proxy.admin_url("/healthz"), &[], Vec::new()).await;
    assert_eq!(r.status, 200);
    let (r, _) = ask(proxy, body).await;
    assert_status(&r, 200);
    r.json()
}

/// The trail of a 502: the attempts that were really made.
fn tried(v: &Value) -> Vec<Value> {
    v["error"]["metadata"]["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempt trail: {v}"))
        .iter()
        .filter(|a| a["attempt"].as_u64().unwrap_or(0) > 0)
        .cloned()
        .collect()
}

/// Waits until `sim` has received `n` calls (at most 3 s).
async fn wait_calls(sim: &Sim, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while sim.call_count() < n {
        assert!(
            Instant::now() < deadline,
            "the upstream got {} calls, expected {n}",
            sim.call_count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends a chat request over a raw connection and returns it unread, so that the test can
/// hang up whenever it wants, as a client that goes away does.
async fn send_and_hold(proxy: &Proxy, body: &Value) -> TcpStream {
    let body = serde_json::to_vec(body).unwrap();
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        proxy.addr,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    tcp.flush().await.unwrap();
    tcp
}

// 1. 429 with Retry-After on the only endpoint of the model.
#[tokio::test(flavor = "multi_thread")]
async fn retry_after_on_the_only_endpoint_is_waited_out_then_the_same_endpoint_serves() {
    let answer = Behavior::ok().chunks(4);
    let a = sim(
        "a",
        answer.clone(),
        vec![Behavior::ok().status(429).retry_after("2")],
    )
    .await;
    let b = sim("b", Behavior::ok(), vec![]).await;
    let models = json!({
        "m1": { "endpoints": [ ep("a", "m1", 1.0, 1.0) ] },
        "m2": { "endpoints": [ ep("b", "m2", 1.0, 1.0) ] },
    });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));

    let body = with(chat("m1", false), json!({"models": ["m1", "m2"]}));
    let (r, took) = ask(&proxy, &body).await;
    assert_status(&r, 200);
    let v = r.json();
    assert_eq!(r.header("x-switchyard-provider"), Some("a"));
    assert_eq!(r.header("x-switchyard-model"), Some("m1"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(v["model"], "m1");
    assert_eq!(message_text(&v), expected_text("a", &answer));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3500),
        "Retry-After: 2 not waited out: {took:?}"
    );

    let calls = a.calls();
    assert_eq!(calls.len(), 2, "the same endpoint was not retried");
    assert_eq!(calls[0].outcome, Some(Outcome::Error { status: 429 }));
    assert_eq!(calls[1].outcome, Some(Outcome::Completed { chunks: 4 }));
    let gap = gap_ms(&calls, 0, 1);
    assert!((1900..3000).contains(&gap), "retried after {gap} ms");
    assert_eq!(
        b.call_count(),
        0,
        "moved to the next model instead of waiting"
    );

    let v = assert_still_healthy(&proxy, &body).await;
    assert_eq!(v["provider"], "a");
    assert_eq!(a.call_count(), 3);
}

// 2. Persistent 429 without Retry-After.
#[tokio::test(flavor = "multi_thread")]
async fn persistent_429_is_bounded_cools_down_and_moves_to_the_next_model() {
    let limited = Behavior::ok().status(429);
    let a = sim("a", limited.clone(), vec![]).await;
    let b = sim("b", limited, vec![]).await;
    let c = sim("c", Behavior::ok().chunks(3), vec![]).await;
    let models = json!({
        "m1": { "endpoints": [ ep("a", "m1", 1.0, 1.0), ep("b", "m1", 1.0, 1.0) ] },
        "m2": { "endpoints": [ ep("c", "m2", 1.0, 1.0) ] },
    });
    let proxy = Proxy::start(&policy(
        &[("a", &a), ("b", &b), ("c", &c)],
        models,
        json!({}),
    ));

    // Only m1: each endpoint once (another provider of the same model first), then a 502.
    let (r, _) = ask(&proxy, &chat("m1", false)).await;
    assert_status(&r, 502);
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    let v = r.json();
    assert_eq!(v["error"]["code"], "providers_exhausted");
    let trail = tried(&v);
    assert_eq!(trail.len(), 2, "{v}");
    for (t, endpoint) in trail.iter().zip(["a/m1", "b/m1"]) {
        assert_eq!(t["endpoint"], endpoint);
        assert_eq!(t["outcome"], "rate_limited");
        assert_eq!(t["status"], 429);
    }
    assert_eq!((a.call_count(), b.call_count(), c.call_count()), (1, 1, 0));

    // While both cool down, a burst goes straight to the next model: no hammering.
    let body = with(chat("m1", false), json!({"models": ["m1", "m2"]}));
    for _ in 0..5 {
        let (r, _) = ask(&proxy, &body).await;
        assert_status(&r, 200);
        assert_eq!(r.header("x-switchyard-provider"), Some("c"));
        assert_eq!(r.header("x-switchyard-model"), Some("m2"));
        assert_eq!(r.header("x-switchyard-attempts"), Some("1"));
    }
    assert_eq!(
        (a.call_count(), b.call_count(), c.call_count()),
        (1, 1, 5),
        "rate-limited endpoints were sent to during their cooldown"
    );
    let cool = breaker(&proxy, "a/m1").await;
    assert!(cool["rate_limited_for_ms"].as_u64().is_some(), "{cool}");
    assert_eq!(cool["state"], "closed", "a 429 opened the breaker: {cool}");

    // After the cooldown (1 s without Retry-After) each is tried once more, then m2 serves.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (r, _) = ask(&proxy, &body).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("c"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("3"));
    assert_eq!((a.call_count(), b.call_count(), c.call_count()), (2, 2, 6));

    let v = assert_still_healthy(&proxy, &chat("m2", false)).await;
    assert_eq!(v["provider"], "c");
}

// 3. 500 once, then healthy.
#[tokio::test(flavor = "multi_thread")]
async fn a_500_once_is_retried_once_on_the_same_endpoint() {
    let answer = Behavior::ok().chunks(5);
    let a = sim("a", answer.clone(), vec![Behavior::ok().status(500)]).await;
    let b = sim("b", Behavior::ok(), vec![]).await;
    let models =
        json!({ "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));

    let (r, _) = ask(&proxy, &chat("m", true)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("a"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    let s = streamed(&r);
    assert_complete(&s, &expected_text("a", &answer));
    assert!(s.models.iter().all(|m| m == "m"), "{s:?}");

    let calls = a.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].outcome, Some(Outcome::Error { status: 500 }));
    assert_eq!(calls[1].outcome, Some(Outcome::Completed { chunks: 5 }));
    // Full-jitter backoff of at most 80 ms, not the 500 ms default.
    let gap = gap_ms(&calls, 0, 1);
    assert!(gap < 500, "retried after {gap} ms");
    assert_eq!(b.call_count(), 0);

    assert_still_healthy(&proxy, &chat("m", false)).await;
    assert_eq!((a.call_count(), b.call_count()), (3, 0));
}

// 4. Persistent 503.
#[tokio::test(flavor = "multi_thread")]
async fn persistent_503_falls_over_to_the_second_endpoint_within_the_attempt_cap() {
    let a = sim("a", Behavior::ok().status(503), vec![]).await;
    let b = sim("b", Behavior::ok().chunks(3), vec![]).await;
    let models =
        json!({ "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] } });
    let overrides =
        json!({ "routes": { "tight": { "models": ["m"], "retry": { "max_attempts": 2 } } } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, overrides));

    let (r, _) = ask(&proxy, &chat("m", false)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("3"));
    assert_eq!(
        message_text(&r.json()),
        expected_text("b", &Behavior::ok().chunks(3))
    );
    assert_eq!((a.call_count(), b.call_count()), (2, 1));

    // With a cap of 2 attempts per model, both go to a and b is never reached.
    let (r, _) = ask(&proxy, &chat("@preset/tight", false)).await;
    assert_status(&r, 502);
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    let v = r.json();
    assert_eq!(v["error"]["code"], "providers_exhausted");
    let trail = tried(&v);
    assert_eq!(trail.len(), 2, "{v}");
    assert!(
        trail.iter().all(|t| t["endpoint"] == "a/m"
            && t["outcome"] == "server_error"
            && t["status"] == 503),
        "{v}"
    );
    assert_eq!((a.call_count(), b.call_count()), (4, 1));

    let v = assert_still_healthy(&proxy, &chat("m", false)).await;
    assert_eq!(v["provider"], "b");
}

// 5. TCP reset after the request was written.
#[tokio::test(flavor = "multi_thread")]
async fn a_reset_moves_to_the_next_endpoint_and_never_back() {
    let a = sim("a", Behavior::ok().reset(), vec![]).await;
    let b = sim("b", Behavior::ok().chunks(3), vec![]).await;
    let models =
        json!({ "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));

    for round in 1..=2 {
        let (r, _) = ask(&proxy, &chat("m", round == 2)).await;
        assert_status(&r, 200);
        assert_eq!(r.header("x-switchyard-provider"), Some("b"));
        assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
        // One call to a per request: a request that may have been billed is not sent again.
        assert_eq!((a.call_count(), b.call_count()), (round, round));
    }
    assert!(a.calls().iter().all(|c| c.outcome == Some(Outcome::Reset)));
    let state = breaker(&proxy, "a/m").await;
    assert_eq!(state["consecutive_failures"], 2, "{state}");

    assert_still_healthy(&proxy, &chat("m", false)).await;
}

// 6. An upstream that never answers.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_never_answers_is_left_at_the_first_token_timeout() {
    let a = sim("a", Behavior::ok().never_answer(), vec![]).await;
    let b = sim("b", Behavior::ok().chunks(3), vec![]).await;
    let models =
        json!({ "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));

    let (r, took) = ask(&proxy, &chat("m", true)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    let s = streamed(&r);
    assert_complete(&s, &expected_text("b", &Behavior::ok().chunks(3)));
    // First token is 400 ms, total is 8 s.
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_millis(2000),
        "fell back after {took:?}"
    );
    // Abandoned, not retried, and its connection closed.
    assert_eq!((a.call_count(), b.call_count()), (1, 1));
    let outcome = a
        .wait_outcome(a.calls()[0].seq, Duration::from_secs(1))
        .await;
    assert!(
        matches!(outcome, Some(Outcome::ClientGone { chunks: 0, .. })),
        "{outcome:?}"
    );

    assert_still_healthy(&proxy, &chat("m", false)).await;
}

// 7. A first token slower than the limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_first_token_falls_back_unless_the_endpoint_allows_it() {
    let slow = Behavior::ok()
        .chunks(3)
        .first_token_delay(Duration::from_millis(900));
    let a = sim("a", slow.clone(), vec![]).await;
    let b = sim("b", Behavior::ok().chunks(3), vec![]).await;
    let mut patient = ep("a", "reasoner", 1.0, 1.0);
    patient["timeouts"] = json!({ "first_token": "3s" });
    let models = json!({
        "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] },
        "reasoner": { "endpoints": [ patient ] },
    });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));

    let (r, took) = ask(&proxy, &chat("m", true)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    let s = streamed(&r);
    assert_complete(&s, &expected_text("b", &Behavior::ok().chunks(3)));
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_millis(850),
        "fell back after {took:?}"
    );
    assert_eq!((a.call_count(), b.call_count()), (1, 1));
    let outcome = a
        .wait_outcome(a.calls()[0].seq, Duration::from_secs(1))
        .await;
    assert!(
        matches!(outcome, Some(Outcome::ClientGone { chunks: 0, .. })),
        "{outcome:?}"
    );

    // The endpoint's own first-token limit wins over the default.
    let (r, took) = ask(&proxy, &chat("reasoner", true)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("a"));
    let s = streamed(&r);
    assert_complete(&s, &expected_text("a", &slow));
    assert!(took >= Duration::from_millis(880), "{took:?}");
    assert_eq!((a.call_count(), b.call_count()), (2, 1));

    assert_still_healthy(&proxy, &chat("m", false)).await;
}

// 8. A stream cut after its commit point, continuation possible.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_stream_is_continued_and_the_client_gets_one_complete_answer() {
    let answer = text_behavior();
    let a = sim("a", answer.clone(), vec![answer.clone().cut_after(3)]).await;
    let b = sim("b", answer.clone(), vec![]).await;
    let models = json!({ "m": { "endpoints": [
        ep_prefill("a", "m", 1.0, 1.0), ep_prefill("b", "m", 1.0, 1.0)
    ] } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));
    assert_eq!(expected_text("a", &answer), TEXT);
    assert_eq!(
        format!("{FIRST3}{}", continuation_text("a", &answer, FIRST3)),
        TEXT
    );

    // Continued on the same endpoint first.
    let body = with(
        chat("m", true),
        json!({"stream_options": {"include_usage": true}}),
    );
    let (r, _) = ask(&proxy, &body).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("a"));
    let s = streamed(&r);
    assert_complete(&s, TEXT);
    let calls = a.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].outcome, Some(Outcome::Cut { chunks: 3 }));
    // The usage shown covers the whole answer: the cut attempt (estimated, at least a token
    // per chunk it sent) and the continuation (as reported), prompts included.
    let usage = s.usage.expect("usage asked for but not reported");
    let continued = WORDS - 3;
    assert!(
        usage["completion_tokens"].as_u64().unwrap() >= 3 + continued,
        "{usage}"
    );
    let continuation_prompt = prompt_tokens(&calls[1].body);
    assert!(
        usage["prompt_tokens"].as_u64().unwrap() > continuation_prompt,
        "{usage}"
    );
    let continuation_cost = (continuation_prompt + continued) as f64 / 1e6;
    assert!(
        usage["cost"].as_f64().unwrap() > continuation_cost + 1e-12,
        "{usage}"
    );
    assert_eq!(
        *last_message(&calls[1]),
        json!({"role": "assistant", "content": FIRST3})
    );
    assert_eq!(
        calls[1].body["messages"].as_array().unwrap().len(),
        2,
        "the continuation is the original conversation plus the partial answer"
    );
    assert_eq!(b.call_count(), 0);

    // Cut again, and the same endpoint refuses the continuation: another prefill endpoint
    // continues it.
    a.push_sequence(answer.clone().cut_after(3));
    a.push_sequence(Behavior::ok().status(503));
    let (r, _) = ask(&proxy, &chat("m", true)).await;
    assert_status(&r, 200);
    let s = streamed(&r);
    assert_complete(&s, TEXT);
    let calls = a.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[2].outcome, Some(Outcome::Cut { chunks: 3 }));
    assert_eq!(calls[3].outcome, Some(Outcome::Error { status: 503 }));
    let bc = b.calls();
    assert_eq!(bc.len(), 1);
    assert_eq!(
        *last_message(&bc[0]),
        json!({"role": "assistant", "content": FIRST3})
    );

    assert_still_healthy(&proxy, &chat("m", false)).await;
}

// 9. The same cut where continuation is impossible.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_that_cannot_be_continued_ends_with_an_error_naming_the_original_failure() {
    let answer = text_behavior();
    let a = sim("a", answer.clone().cut_after(3), vec![]).await;
    let b = sim("b", answer.clone(), vec![]).await;
    // b/m has no prefill support; b/m2 claims it, but the provider refuses prefills.
    let models = json!({
        "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] },
        "m2": { "endpoints": [ ep("a", "m2", 1.0, 1.0), ep_prefill("b", "m2", 1.0, 1.0) ] },
    });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));

    let check = |r: &Answer| -> String {
        assert_status(r, 200);
        assert_eq!(r.header("x-switchyard-provider"), Some("a"));
        let s = streamed(r);
        assert_eq!(s.text, FIRST3, "the partial answer was not kept intact");
        assert!(!s.done, "a broken answer ended with [DONE]: {s:?}");
        assert_eq!((s.roles, s.finishes), (1, 0), "{s:?}");
        assert_eq!(s.errors.len(), 1, "{s:?}");
        let e = &s.errors[0]["error"];
        assert_eq!(e["code"], "stream_interrupted", "{e}");
        let message = e["message"].as_str().unwrap().to_string();
        assert!(
            message.starts_with("the answer was interrupted"),
            "{message}"
        );
        message
    };

    let (r, _) = ask(&proxy, &chat("m", true)).await;
    let original = check(&r);
    assert_eq!((a.call_count(), b.call_count()), (1, 0));

    b.set_config(SimConfig {
        name: "b".into(),
        default: answer.clone().reject_prefill(),
        ..SimConfig::default()
    });
    let (r, _) = ask(&proxy, &chat("m2", true)).await;
    let message = check(&r);
    let bc = b.calls();
    assert_eq!((a.call_count(), bc.len()), (2, 1));
    assert_eq!(
        *last_message(&bc[0]),
        json!({"role": "assistant", "content": FIRST3})
    );
    assert_eq!(bc[0].outcome, Some(Outcome::Error { status: 400 }));
    // The cut is reported, not the refused continuation.
    assert!(
        !message.contains("prefill") && !message.contains("400"),
        "{message}"
    );
    assert_eq!(message, original);

    a.set_config(SimConfig {
        name: "a".into(),
        default: answer,
        ..SimConfig::default()
    });
    let v = assert_still_healthy(&proxy, &chat("m", false)).await;
    assert_eq!(message_text(&v), TEXT);
}

// 10. A stall after the first tokens.
#[tokio::test(flavor = "multi_thread")]
async fn a_stall_after_the_first_tokens_is_continued_or_reported_at_the_idle_timeout() {
    let answer = text_behavior();
    let a = sim("a", answer.clone(), vec![answer.clone().stall_after(3)]).await;
    let b = sim("b", answer.clone(), vec![]).await;
    let models = json!({ "m": { "endpoints": [
        ep_prefill("a", "m", 1.0, 1.0), ep_prefill("b", "m", 1.0, 1.0)
    ] } });
    let overrides =
        json!({ "routes": { "strict": { "models": ["m"], "retry": { "continuation": false } } } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, overrides));

    let (r, took) = ask(&proxy, &chat("m", true)).await;
    assert_status(&r, 200);
    let s = streamed(&r);
    assert_complete(&s, TEXT);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    let calls = a.calls();
    assert_eq!(calls.len(), 2);
    let stalled = a.wait_outcome(calls[0].seq, Duration::from_secs(1)).await;
    assert!(
        matches!(stalled, Some(Outcome::ClientGone { chunks: 3, .. })),
        "the stalled upstream was not closed: {stalled:?}"
    );
    assert_eq!(
        *last_message(&calls[1]),
        json!({"role": "assistant", "content": FIRST3})
    );
    assert_eq!(b.call_count(), 0);

    // Without continuation: an explicit error at the idle timeout.
    a.push_sequence(answer.clone().stall_after(3));
    let (r, took) = ask(&proxy, &chat("@preset/strict", true)).await;
    assert_status(&r, 200);
    let s = streamed(&r);
    assert_eq!(s.text, FIRST3);
    assert!(!s.done, "{s:?}");
    assert_eq!((s.roles, s.finishes), (1, 0), "{s:?}");
    assert_eq!(s.errors.len(), 1, "{s:?}");
    let e = &s.errors[0]["error"];
    assert_eq!(e["code"], "stream_interrupted");
    assert!(e["message"].as_str().unwrap().contains("idle"), "{e}");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    assert_eq!((a.call_count(), b.call_count()), (3, 0));
    let stalled = a
        .wait_outcome(a.calls()[2].seq, Duration::from_secs(1))
        .await;
    assert!(
        matches!(stalled, Some(Outcome::ClientGone { chunks: 3, .. })),
        "{stalled:?}"
    );

    assert_still_healthy(&proxy, &chat("m", false)).await;
}

// 11. Malformed chunks, before and after the commit point.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_chunk_falls_back_before_output_and_is_a_cut_after_it() {
    let answer = text_behavior();
    let a = sim("a", answer.clone(), vec![answer.clone().malformed_at(1)]).await;
    let b = sim("b", answer.clone(), vec![]).await;
    let models = json!({ "m": { "endpoints": [
        ep_prefill("a", "m", 1.0, 1.0), ep_prefill("b", "m", 1.0, 1.0)
    ] } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));

    // Before any output: the next endpoint serves, invisibly.
    let (r, _) = ask(&proxy, &chat("m", true)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    let s = streamed(&r);
    assert_complete(&s, TEXT);
    assert_eq!((a.call_count(), b.call_count()), (1, 1));

    // After three words: a cut, continued on the same endpoint; the broken chunk never
    // reaches the client (`streamed` checks every event is JSON).
    a.push_sequence(answer.clone().malformed_at(4));
    let (r, _) = ask(&proxy, &chat("m", true)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("a"));
    let s = streamed(&r);
    assert_complete(&s, TEXT);
    let calls = a.calls();
    assert_eq!((calls.len(), b.call_count()), (3, 1));
    assert_eq!(
        *last_message(&calls[2]),
        json!({"role": "assistant", "content": FIRST3})
    );

    assert_still_healthy(&proxy, &chat("m", false)).await;
}

// 12. A stream without [DONE].
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_without_done_is_finalised_promptly_with_usage_and_done() {
    let answer = text_behavior().omit_done();
    let a = sim("a", answer.clone(), vec![]).await;
    let models = json!({ "m": { "endpoints": [ ep("a", "m", 2.0, 4.0) ] } });
    // Long idle and first-token limits: only the end of the body may finish the answer.
    let overrides = json!({ "defaults": { "timeouts": { "first_token": "5s", "idle": "5s" } } });
    let proxy = Proxy::start(&policy(&[("a", &a)], models, overrides));

    let body = with(
        chat("m", true),
        json!({"stream_options": {"include_usage": true}}),
    );
    let (r, took) = ask(&proxy, &body).await;
    assert_status(&r, 200);
    assert!(took < Duration::from_secs(1), "hung for {took:?}");
    assert_eq!(r.header("x-switchyard-attempts"), Some("1"));
    let s = streamed(&r);
    assert_complete(&s, TEXT);
    let usage = s.usage.expect("usage asked for but not reported");
    let prompt = prompt_tokens(&a.calls()[0].body);
    assert_eq!(usage["prompt_tokens"], prompt);
    assert_eq!(usage["completion_tokens"], WORDS);
    let cost = usage["cost"].as_f64().unwrap();
    let expected = (prompt as f64 * 2.0 + WORDS as f64 * 4.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
    assert_eq!(
        a.calls()[0].outcome,
        Some(Outcome::Completed {
            chunks: WORDS as usize
        })
    );

    // A non-streaming client, served from the same kind of stream.
    let (r, took) = ask(&proxy, &chat("m", false)).await;
    assert_status(&r, 200);
    assert!(took < Duration::from_secs(1), "hung for {took:?}");
    let v = r.json();
    assert_eq!(message_text(&v), TEXT);
    assert_eq!(v["usage"]["completion_tokens"], WORDS);
    assert_eq!(a.call_count(), 2);

    assert_still_healthy(&proxy, &chat("m", false)).await;
}

// 13. Context length exceeded.
#[tokio::test(flavor = "multi_thread")]
async fn context_length_400_moves_only_to_a_model_whose_window_fits() {
    let message = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.";
    let too_long = Behavior::ok()
        .status(400)
        .error_code("context_length_exceeded")
        .error_message(message);
    let a = sim("a", too_long, vec![]).await;
    let b = sim("b", Behavior::ok(), vec![]).await;
    let c = sim("c", Behavior::ok().chunks(3), vec![]).await;
    let models = json!({
        "m": { "context_length": 8000, "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] },
        "tiny": { "context_length": 4000, "endpoints": [ ep("b", "tiny", 1.0, 1.0) ] },
        "big": { "context_length": 200000, "endpoints": [ ep("c", "big", 1.0, 1.0) ] },
    });
    let proxy = Proxy::start(&policy(
        &[("a", &a), ("b", &b), ("c", &c)],
        models,
        json!({}),
    ));

    let body = with(chat("m", false), json!({"models": ["m", "tiny", "big"]}));
    let (r, _) = ask(&proxy, &body).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("c"));
    assert_eq!(r.header("x-switchyard-model"), Some("big"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(r.json()["model"], "big");
    // No retry on a, no other endpoint of m, no model with a window that is not larger.
    assert_eq!((a.call_count(), b.call_count(), c.call_count()), (1, 0, 1));

    // With nothing larger to go to, the upstream's own 400 comes back.
    let (r, _) = ask(&proxy, &chat("m", false)).await;
    assert_status(&r, 400);
    let v = r.json();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["message"], message);
    assert_eq!((a.call_count(), b.call_count(), c.call_count()), (2, 0, 1));

    let v = assert_still_healthy(&proxy, &chat("big", false)).await;
    assert_eq!(v["provider"], "c");
}

// 14. A content-filter refusal.
#[tokio::test(flavor = "multi_thread")]
async fn a_content_filter_400_is_returned_unchanged_without_retry() {
    let message =
        "The response was filtered due to the prompt triggering content management policy.";
    let refused = Behavior::ok()
        .status(400)
        .error_code("content_filter")
        .error_type("invalid_request_error")
        .error_message(message);
    let a = sim("a", refused, vec![]).await;
    let b = sim("b", Behavior::ok(), vec![]).await;
    let c = sim("c", Behavior::ok(), vec![]).await;
    let models = json!({
        "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] },
        "m2": { "endpoints": [ ep("c", "m2", 1.0, 1.0) ] },
    });
    let proxy = Proxy::start(&policy(
        &[("a", &a), ("b", &b), ("c", &c)],
        models,
        json!({}),
    ));

    for stream in [false, true] {
        let body = with(chat("m", stream), json!({"models": ["m", "m2"]}));
        let (r, _) = ask(&proxy, &body).await;
        assert_status(&r, 400);
        let v = r.json();
        assert_eq!(
            v["error"],
            json!({"message": message, "type": "invalid_request_error", "param": null, "code": "content_filter"}),
            "the upstream's error was changed"
        );
    }
    assert_eq!((a.call_count(), b.call_count(), c.call_count()), (2, 0, 0));

    let v = assert_still_healthy(&proxy, &chat("m2", false)).await;
    assert_eq!(v["provider"], "c");
}

// 15. An empty completion.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_completion_moves_on_and_only_the_serving_endpoint_is_charged() {
    let a = sim("a", Behavior::ok().empty(), vec![]).await;
    let b = sim("b", text_behavior(), vec![]).await;
    let models =
        json!({ "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 3.0, 5.0) ] } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));
    let b_cost = |call: &Call| (prompt_tokens(&call.body) as f64 * 3.0 + WORDS as f64 * 5.0) / 1e6;

    let body = with(
        chat("m", true),
        json!({"stream_options": {"include_usage": true}}),
    );
    let (r, _) = ask(&proxy, &body).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    let s = streamed(&r);
    assert_complete(&s, TEXT);
    let usage = s.usage.expect("usage");
    let bc = b.calls();
    assert_eq!(usage["prompt_tokens"], prompt_tokens(&bc[0].body));
    assert_eq!(usage["completion_tokens"], WORDS);
    let cost = usage["cost"].as_f64().unwrap();
    assert!((cost - b_cost(&bc[0])).abs() < 1e-12, "{cost}");
    assert_eq!((a.call_count(), b.call_count()), (1, 1));

    let (r, _) = ask(&proxy, &chat("m", false)).await;
    assert_status(&r, 200);
    let v = r.json();
    assert_eq!(v["provider"], "b");
    assert_eq!(message_text(&v), TEXT);
    let bc = b.calls();
    let cost = v["usage"]["cost"].as_f64().unwrap();
    assert!((cost - b_cost(&bc[1])).abs() < 1e-12, "{cost}");
    let header: f64 = r.header("x-switchyard-cost").unwrap().parse().unwrap();
    assert!((header - cost).abs() < 1e-9, "{header} != {cost}");
    assert_eq!((a.call_count(), b.call_count()), (2, 2));

    assert_still_healthy(&proxy, &chat("m", false)).await;
}

// 16. A non-streaming client, protected by the stream timeouts.
#[tokio::test(flavor = "multi_thread")]
async fn a_non_streaming_client_is_protected_by_first_token_and_idle_timeouts() {
    let answer = text_behavior();
    let a = sim(
        "a",
        answer.clone(),
        vec![
            answer.clone().stall_after(3),
            answer
                .clone()
                .first_token_delay(Duration::from_millis(1500)),
        ],
    )
    .await;
    let b = sim("b", answer.clone(), vec![]).await;
    let models =
        json!({ "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));

    // Stalls mid-answer: the idle timeout, then b; one complete JSON answer.
    let (r, took) = ask(&proxy, &chat("m", false)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(message_text(&v), TEXT);
    assert_eq!(v["choices"].as_array().unwrap().len(), 1);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    let calls = a.calls();
    assert_eq!((calls.len(), b.call_count()), (1, 1));
    assert!(
        calls[0].stream,
        "the proxy did not stream from the upstream"
    );
    let stalled = a.wait_outcome(calls[0].seq, Duration::from_secs(1)).await;
    assert!(
        matches!(stalled, Some(Outcome::ClientGone { chunks: 3, .. })),
        "{stalled:?}"
    );

    // A first token that does not come: the first-token timeout, then b.
    let (r, took) = ask(&proxy, &chat("m", false)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(message_text(&r.json()), TEXT);
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_millis(1400),
        "{took:?}"
    );
    assert_eq!((a.call_count(), b.call_count()), (2, 2));

    let v = assert_still_healthy(&proxy, &chat("m", false)).await;
    assert_eq!(v["provider"], "a");
}

// 17. A primary down for a while, then healthy.
#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_opens_during_an_outage_probes_and_traffic_returns_to_the_primary() {
    let a = sim("a", Behavior::ok().status(503), vec![]).await;
    let b = sim("b", Behavior::ok().chunks(3), vec![]).await;
    let models =
        json!({ "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] } });
    let overrides = json!({ "defaults": {
        "retry": { "same_endpoint_retries": 0 },
        "breaker": { "consecutive_failures": 3, "open_base": "500ms", "open_max": "1s" }
    } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, overrides));

    let mut served = Vec::new();
    let mut up_at = None;
    let mut opened = false;
    for i in 0..20 {
        if i == 8 {
            a.set_config(SimConfig {
                name: "a".into(),
                default: Behavior::ok().chunks(3),
                ..SimConfig::default()
            });
            up_at = Some((Instant::now(), a.call_count()));
        }
        let (r, _) = ask(&proxy, &chat("m", false)).await;
        assert_status(&r, 200);
        let provider = r.header("x-switchyard-provider").unwrap().to_string();
        served.push((Instant::now(), provider));
        if i == 2 {
            // Three failures in a row.
            let state = breaker(&proxy, "a/m").await;
            assert_eq!(state["state"], "open", "{state}");
            assert!(state["open_for_ms"].as_u64().unwrap() <= 500, "{state}");
            opened = true;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(opened);
    let (up_at, a_calls_in_outage) = up_at.unwrap();

    // During the outage b served everything, and a got its three failures plus probes only.
    for (at, provider) in &served[..8] {
        assert!(*at < up_at);
        assert_eq!(provider, "b", "{served:?}");
    }
    assert!(
        (4..=6).contains(&a_calls_in_outage),
        "a was sent {a_calls_in_outage} requests during the outage"
    );
    let calls = a.calls();
    assert!(
        calls[..a_calls_in_outage]
            .iter()
            .all(|c| c.outcome == Some(Outcome::Error { status: 503 }))
    );
    // The first probe waited for the open period (its first is jittered into [250, 500] ms).
    let wait = gap_ms(&calls, 2, 3);
    assert!(wait >= 240, "probed after {wait} ms");

    // Back on the primary within seconds of its recovery, and staying there.
    let back = served
        .iter()
        .position(|(at, p)| *at > up_at && p == "a")
        .unwrap_or_else(|| panic!("traffic never returned to a: {served:?}"));
    assert!(served[back].0 - up_at < Duration::from_secs(10));
    assert!(served[back..].iter().all(|(_, p)| p == "a"), "{served:?}");
    let state = breaker(&proxy, "a/m").await;
    assert_eq!(state["state"], "closed", "{state}");

    let v = assert_still_healthy(&proxy, &chat("m", false)).await;
    assert_eq!(v["provider"], "a");
}

// 18. Every candidate's breaker open.
#[tokio::test(flavor = "multi_thread")]
async fn with_every_breaker_open_the_proxy_fails_fast_with_503() {
    let a = sim("a", Behavior::ok().status(500), vec![]).await;
    let b = sim("b", Behavior::ok().status(500), vec![]).await;
    let c = sim("c", Behavior::ok(), vec![]).await;
    let models = json!({
        "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] },
        "m2": { "endpoints": [ ep("c", "m2", 1.0, 1.0) ] },
    });
    let overrides = json!({ "defaults": {
        "retry": { "max_attempts": 4 },
        "breaker": { "consecutive_failures": 2, "open_base": "5s", "open_max": "5s" }
    } });
    let proxy = Proxy::start(&policy(
        &[("a", &a), ("b", &b), ("c", &c)],
        models,
        overrides,
    ));

    let (r, _) = ask(&proxy, &chat("m", false)).await;
    assert_status(&r, 502);
    assert_eq!(r.header("x-switchyard-attempts"), Some("4"));
    assert_eq!((a.call_count(), b.call_count()), (2, 2));
    for ep in ["a/m", "b/m"] {
        assert_eq!(breaker(&proxy, ep).await["state"], "open");
    }

    for stream in [false, true] {
        let (r, took) = ask(&proxy, &chat("m", stream)).await;
        assert_status(&r, 503);
        assert!(took < Duration::from_millis(300), "not fast: {took:?}");
        assert_eq!(r.header("x-should-retry"), Some("false"));
        assert_eq!(r.header("x-switchyard-attempts"), Some("0"));
        let retry_after: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=5).contains(&retry_after), "{retry_after}");
        let v = r.json();
        assert_eq!(v["error"]["code"], "no_healthy_endpoint", "{v}");
        let skipped = v["error"]["metadata"]["attempts"].as_array().unwrap();
        let endpoints: Vec<&str> = skipped
            .iter()
            .map(|s| s["endpoint"].as_str().unwrap())
            .collect();
        assert_eq!(endpoints, ["a/m", "b/m"], "{v}");
    }
    assert_eq!(
        (a.call_count(), b.call_count()),
        (2, 2),
        "an open breaker let a request through"
    );

    let v = assert_still_healthy(&proxy, &chat("m2", false)).await;
    assert_eq!(v["provider"], "c");
}

// 19. Accounting after a fallback.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_fallback_headers_and_cost_are_the_serving_endpoints() {
    let a = sim("a", Behavior::ok().status(503), vec![]).await;
    let b = sim("b", text_behavior(), vec![]).await;
    let models = json!({
        "m1": { "endpoints": [ ep("a", "m1", 1.0, 1.0) ] },
        "m2": { "endpoints": [ {
            "provider": "b", "upstream_model": "b-m2",
            "pricing": { "prompt": 2.5, "completion": 7.5, "request": 0.0001 },
            "supported_parameters": ["temperature", "max_tokens", "stream_options"]
        } ] },
    });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, json!({})));
    let cost_of =
        |call: &Call| (prompt_tokens(&call.body) as f64 * 2.5 + WORDS as f64 * 7.5) / 1e6 + 0.0001;

    let body = with(chat("m1", false), json!({"models": ["m1", "m2"]}));
    let (r, _) = ask(&proxy, &body).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-model"), Some("m2"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("3"));
    let v = r.json();
    assert_eq!(v["provider"], "b");
    assert_eq!(v["model"], "m2");
    assert_eq!(v["metadata"]["upstream_model"], "b-m2");
    let bc = b.calls();
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens(&bc[0].body));
    assert_eq!(v["usage"]["completion_tokens"], WORDS);
    let cost = v["usage"]["cost"].as_f64().unwrap();
    assert!((cost - cost_of(&bc[0])).abs() < 1e-12, "{cost}");
    let header: f64 = r.header("x-switchyard-cost").unwrap().parse().unwrap();
    assert!((header - cost).abs() < 1e-9);
    assert_eq!((a.call_count(), b.call_count()), (2, 1));

    let body = with(
        chat("m1", true),
        json!({"models": ["m1", "m2"], "stream_options": {"include_usage": true}}),
    );
    let (r, _) = ask(&proxy, &body).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-model"), Some("m2"));
    let s = streamed(&r);
    assert_complete(&s, TEXT);
    assert!(s.models.iter().all(|m| m == "m2"), "{s:?}");
    let usage = s.usage.expect("usage");
    let bc = b.calls();
    let cost = usage["cost"].as_f64().unwrap();
    assert!((cost - cost_of(&bc[1])).abs() < 1e-12, "{cost}");
    assert_eq!((a.call_count(), b.call_count()), (4, 2));

    assert_still_healthy(&proxy, &chat("m2", false)).await;
}

// 20. The client goes away while the proxy waits.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_cancels_the_upstream_call_and_any_retry() {
    let a = sim("a", Behavior::ok().never_answer(), vec![]).await;
    let b = sim("b", Behavior::ok(), vec![]).await;
    let r429 = sim(
        "r",
        Behavior::ok(),
        vec![Behavior::ok().status(429).retry_after("3")],
    )
    .await;
    let j = sim("j", Behavior::ok(), vec![Behavior::ok().status(500)]).await;
    let models = json!({
        "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] },
        "limited": { "endpoints": [ ep("r", "limited", 1.0, 1.0) ] },
        "flaky": { "endpoints": [ ep("j", "flaky", 1.0, 1.0) ] },
    });
    // A long first-token limit, and a backoff that is long whatever the jitter draws
    // (except rarely, which the test notices).
    let overrides = json!({ "defaults": {
        "timeouts": { "first_token": "1500ms" },
        "retry": { "backoff_base": "2s", "backoff_max": "2s" }
    } });
    let proxy = Proxy::start(&policy(
        &[("a", &a), ("b", &b), ("r", &r429), ("j", &j)],
        models,
        overrides,
    ));

    // Waiting for a first token that never comes.
    let started = Instant::now();
    let tcp = send_and_hold(&proxy, &chat("m", true)).await;
    wait_calls(&a, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(tcp);
    let left = Instant::now();
    let outcome = a
        .wait_outcome(a.calls()[0].seq, Duration::from_secs(1))
        .await;
    assert!(
        matches!(outcome, Some(Outcome::ClientGone { .. })),
        "upstream still open 1 s after the client left: {outcome:?}"
    );
    while a.open_connections() > 0 {
        assert!(
            left.elapsed() < Duration::from_secs(1),
            "connection left open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the first-token limit: no fallback was made for a client that is gone.
    tokio::time::sleep(Duration::from_millis(1800).saturating_sub(started.elapsed())).await;
    assert_eq!((a.call_count(), b.call_count()), (1, 0));

    // Waiting out a Retry-After (3 s, so that a slow test thread still leaves well before it).
    let tcp = send_and_hold(&proxy, &chat("limited", false)).await;
    wait_calls(&r429, 1).await;
    let seen = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tcp);
    let left_after = seen.elapsed();
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let calls: Vec<u64> = r429.calls().iter().map(|c| c.at_ms).collect();
    assert_eq!(
        calls.len(),
        1,
        "retried for a client that is gone: calls at {calls:?} ms (sim clock), the client \
         left {left_after:?} after the first was seen"
    );

    // In a jittered backoff after a 500.
    let tcp = send_and_hold(&proxy, &chat("flaky", false)).await;
    wait_calls(&j, 1).await;
    let seen = j.call_count();
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(j.call_count(), seen, "retried for a client that is gone");

    let v = assert_still_healthy(&proxy, &chat("limited", false)).await;
    assert_eq!(v["provider"], "r");
}

// 21. An endpoint with `limits.max_in_flight_per_endpoint` attempts out sheds the next one:
// the request moves on to another endpoint at once, or gets a 503 when none is left.
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_at_its_in_flight_limit_sheds_to_the_next_and_recovers_when_one_ends() {
    let a = sim("a", Behavior::ok().never_answer(), vec![]).await;
    let b = sim("b", Behavior::ok(), vec![]).await;
    let models =
        json!({ "m": { "endpoints": [ ep("a", "m", 1.0, 1.0), ep("b", "m", 1.0, 1.0) ] } });
    let overrides = json!({ "defaults": {
        "timeouts": { "first_token": "20s", "total": "30s" },
        "limits": { "max_in_flight_per_endpoint": 2 }
    } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, overrides));
    let only_a = with(chat("m", false), json!({"provider": {"only": ["a"]}}));
    let in_flight = |endpoint: &'static str| {
        let proxy = &proxy;
        async move {
            let v = send("GET", &proxy.admin_url("/admin/providers"), &[], Vec::new())
                .await
                .json();
            let e = v["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["endpoint"] == endpoint)
                .cloned()
                .unwrap_or_else(|| panic!("{endpoint} not in /admin/providers: {v}"));
            e["in_flight"].as_u64().unwrap()
        }
    };

    // Two requests wait on a, which never answers: a is full.
    let first = send_and_hold(&proxy, &only_a).await;
    let _second = send_and_hold(&proxy, &only_a).await;
    wait_calls(&a, 2).await;
    assert_eq!(in_flight("a/m").await, 2);

    // A third that may only use a is shed at once, without reaching it.
    let (r, took) = ask(&proxy, &only_a).await;
    assert_status(&r, 503);
    assert!(took < Duration::from_secs(2), "shedding waited {took:?}");
    assert!(r.header("retry-after").is_some(), "{}", body_text(&r));
    assert!(body_text(&r).contains("in flight"), "{}", body_text(&r));
    assert_eq!(a.call_count(), 2);
    // Its generation record says which endpoint was skipped and why.
    let id = r.header("x-switchyard-request-id").unwrap().to_string();
    let g = send(
        "GET",
        &proxy.url(&format!("/api/v1/generation?id={id}")),
        &[],
        Vec::new(),
    )
    .await
    .json();
    assert_eq!(
        g["data"]["skipped"],
        json!([{"endpoint": "a/m", "reason": "endpoint_saturated"}]),
        "{g}"
    );
    assert_eq!(g["data"]["num_attempts"], 0, "{g}");

    // One that may fall back is served by b, still without a call to a.
    let (r, _) = ask(&proxy, &chat("m", false)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!((a.call_count(), b.call_count()), (2, 1));

    // When one of the waiting clients leaves, its place is free again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(3);
    while in_flight("a/m").await != 1 {
        assert!(Instant::now() < deadline, "the place was not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _third = send_and_hold(&proxy, &only_a).await;
    wait_calls(&a, 3).await;
    assert_eq!(in_flight("a/m").await, 2);

    // Both sheds are counted for the operator.
    let metrics = send("GET", &proxy.admin_url("/metrics"), &[], Vec::new()).await;
    let text = body_text(&metrics);
    let shed: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_attempts_skipped_total{")
                && l.contains(r#"provider="a""#)
                && l.contains(r#"reason="endpoint_saturated""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(shed, 2.0, "{text}");
}

// 22. A cut stream gives back its endpoint's in-flight place before the continuation is
// tried, so an endpoint at its limit can still continue its own answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_stream_frees_its_in_flight_place_for_its_own_continuation() {
    let answer = text_behavior();
    let a = sim("a", answer.clone(), vec![answer.clone().cut_after(3)]).await;
    let b = sim("b", answer.clone(), vec![]).await;
    let models = json!({ "m": { "endpoints": [
        ep_prefill("a", "m", 1.0, 1.0), ep_prefill("b", "m", 1.0, 1.0)
    ] } });
    let overrides = json!({ "defaults": { "limits": { "max_in_flight_per_endpoint": 1 } } });
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, overrides));

    let (r, _) = ask(&proxy, &chat("m", true)).await;
    assert_status(&r, 200);
    assert_complete(&streamed(&r), TEXT);
    assert_eq!(
        (a.call_count(), b.call_count()),
        (2, 0),
        "the continuation did not run on the endpoint that was cut"
    );
    assert_eq!(
        *last_message(&a.calls()[1]),
        json!({"role": "assistant", "content": FIRST3})
    );
}
