//! Budgets end to end: the real binary, simulated providers that record every call, and the
//! spend it reports on `GET /admin/budgets`.
//!
//! Each test sizes its caps from the worst case the proxy reserves — the prompt estimate
//! (bytes of `messages` over four) plus `max_tokens`, at the endpoint's prices — and checks
//! what the client saw, what the upstream received, and what the ledger holds: caps that
//! hold under concurrency (embedded ledger, and Redis shared by two processes), nothing lost
//! to a `kill -9`, settlement to the reported cost, estimates for cut streams, no charge for
//! an empty completion, per-request caps with and without `fit_to_budget`, tag scopes, and an
//! unreachable Redis.
//!
//! Not here: the window rollover at midnight (and month end, in a budget's time zone), which
//! `crates/budget` tests with a controllable clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_sim::{Behavior, Call, Sim, SimConfig, expected_text, prompt_tokens};
use switchyard_tests::{
    Answer, Proxy, RedisServer, free_port, merge, post_json, provider_endpoint as ep, send,
    sim_providers, sse_data, start_sim as sim,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CHAT: &str = "/v1/chat/completions";

/// Prices of the main endpoint, USD per million tokens: high, so that one request costs cents
/// (far above the ledger's nano-dollar rounding), and different, so that a prompt/completion
/// mix-up shows.
const PROMPT: f64 = 1000.0;
const COMPLETION: f64 = 3000.0;

/// The ledger keeps integer nano-dollars: each reservation or settlement rounds by at most
/// half of one.
const NANO: f64 = 1e-9;

/// Model `m` on provider `a` at the main prices.
fn model_m() -> Value {
    json!({ "m": { "endpoints": [ ep("a", "m", PROMPT, COMPLETION) ] } })
}

/// A policy over `sims` (tried in the order given) with `budgets`, timeouts loose enough for
/// slow sims, and `overrides` merged over it key by key.
fn policy(sims: &[(&str, &Sim)], models: Value, budgets: Value, overrides: Value) -> Value {
    let (providers, order) = sim_providers(sims);
    let mut p = json!({
        "providers": providers,
        "models": models,
        "budgets": budgets,
        "defaults": {
            "provider": { "order": order },
            "timeouts": { "connect": "1s", "first_token": "5s", "idle": "5s", "total": "20s" },
            "retry": {
                "backoff_base": "20ms", "backoff_max": "80ms", "budget_min_per_s": 100
            }
        }
    });
    merge(&mut p, overrides);
    p
}

fn chat(model: &str, stream: bool, max_tokens: u64) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Tell me about switchyards, briefly."}],
    })
}

fn with(mut body: Value, extra: Value) -> Value {
    merge(&mut body, extra);
    body
}

/// A streamed chat request whose client asked for the usage chunk.
fn chat_stream(model: &str, max_tokens: u64) -> Value {
    with(
        chat(model, true, max_tokens),
        json!({"stream_options": {"include_usage": true}}),
    )
}

/// The proxy's prompt estimate: bytes of the `messages` JSON as sent (compact, as
/// `post_json` sends it) over four, rounded up.
fn prompt_estimate(body: &Value) -> u64 {
    serde_json::to_vec(&body["messages"])
        .unwrap()
        .len()
        .div_ceil(4) as u64
}

/// USD for these token counts at these prices (per million tokens; `request` per request).
fn cost(prompt_tokens: u64, completion_tokens: u64, prices: (f64, f64, f64)) -> f64 {
    (prompt_tokens as f64 * prices.0 + completion_tokens as f64 * prices.1) / 1e6 + prices.2
}

/// What the proxy reserves for `body` on an endpoint with these prices.
fn worst_case(body: &Value, prices: (f64, f64, f64)) -> f64 {
    cost(
        prompt_estimate(body),
        body["max_tokens"].as_u64().unwrap(),
        prices,
    )
}

/// What the sim's answer of `completion_tokens` to `call` costs at these prices.
fn call_cost(call: &Call, completion_tokens: u64, prices: (f64, f64, f64)) -> f64 {
    cost(prompt_tokens(&call.body), completion_tokens, prices)
}

const MAIN: (f64, f64, f64) = (PROMPT, COMPLETION, 0.0);

fn body_text(r: &Answer) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn assert_status(r: &Answer, status: u16) {
    assert_eq!(r.status, status, "{}", body_text(r));
}

/// The `/admin/budgets` row of one budget's window.
async fn window(proxy: &Proxy, budget: &str, window: &str) -> Value {
    let v = send("GET", &proxy.admin_url("/admin/budgets"), &[], Vec::new())
        .await
        .json();
    v["budgets"]
        .as_array()
        .unwrap_or_else(|| panic!("no budgets in {v}"))
        .iter()
        .find(|b| b["budget"] == budget && b["window"] == window)
        .unwrap_or_else(|| panic!("no {budget}/{window} row in {v}"))
        .clone()
}

/// The daily row of `budget` once nothing is reserved any more (a stream settles when it
/// ends, which may be just after the client read its last byte).
async fn settled(proxy: &Proxy, budget: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let row = window(proxy, budget, "daily").await;
        if usd(&row, "reserved_usd") == 0.0 {
            return row;
        }
        assert!(Instant::now() < deadline, "still reserved: {row}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn usd(row: &Value, field: &str) -> f64 {
    row[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} in {row}"))
}

fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} != {expected} (± {tolerance})"
    );
}

/// A 402 `budget_exceeded` in the OpenAI error shape that names `budget` and `window`;
/// returns the error object.
fn assert_budget_exceeded(r: &Answer, budget: &str, window: &str) -> Value {
    assert_status(r, 402);
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let v = r.json();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["error"],
        "{v}"
    );
    let e = v["error"].clone();
    assert_eq!(e["type"], "budget_exceeded", "{v}");
    assert_eq!(e["code"], "budget_exceeded", "{v}");
    assert_eq!(e["metadata"]["budget"], budget, "{v}");
    assert_eq!(e["metadata"]["window"], window, "{v}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains(budget) && message.contains(window),
        "{message}"
    );
    e
}

/// A window's 402 also says when to come back: at the window's reset, within a day.
fn assert_retry_after_reset(r: &Answer) {
    let secs: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers))
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&secs), "Retry-After: {secs}");
}

/// What a streaming client made of an SSE body.
#[derive(Debug, Default)]
struct Streamed {
    text: String,
    done: bool,
    errors: Vec<Value>,
    usage: Option<Value>,
}

fn streamed(r: &Answer) -> Streamed {
    assert_eq!(
        r.header("content-type"),
        Some("text/event-stream"),
        "{}",
        body_text(r)
    );
    let mut s = Streamed::default();
    for data in sse_data(&r.body) {
        if data == "[DONE]" {
            s.done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("a non-JSON event ({e}): {data}"));
        if v.get("error").is_some() {
            s.errors.push(v);
            continue;
        }
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            s.text.push_str(t);
        }
        if v["usage"].is_object() {
            s.usage = Some(v["usage"].clone());
        }
    }
    s
}

/// Sends `body` from `n` clients at once, spread over `urls` in turn; each answer with the
/// moment it was complete.
async fn burst(urls: &[String], n: usize, body: &Value) -> Vec<(Answer, Instant)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            let body = body.clone();
            tokio::spawn(async move {
                let r = post_json(&url, &body).await;
                (r, Instant::now())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Exactly one answer of a burst was admitted, every other one is a 402 of `budget`'s daily
/// window that came back while the admitted one was still in flight; returns the admitted
/// one.
fn assert_exactly_one_admitted(results: Vec<(Answer, Instant)>, budget: &str) -> Answer {
    let statuses: Vec<u16> = results.iter().map(|(r, _)| r.status).collect();
    let (ok, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(|(r, _)| r.status == 200);
    assert_eq!(ok.len(), 1, "admitted: {statuses:?}");
    assert_eq!(refused.len(), statuses.len() - 1, "{statuses:?}");
    let (admitted, admitted_at) = ok.into_iter().next().unwrap();
    for (r, at) in &refused {
        assert_budget_exceeded(r, budget, "daily");
        assert_retry_after_reset(r);
        // Refused on the open reservation, not on spend settled afterwards.
        assert!(
            at < &admitted_at,
            "a refusal came after the admitted request had finished"
        );
    }
    admitted
}

/// Sends a chat request over a raw connection and returns it unread: a client whose
/// stream is still in flight for as long as the test holds it.
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

/// Polls `check` every 20 ms for up to 5 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cap between one and two worst cases of `body`, so that one request fits and a second
/// does not — not even after the first has settled (its real cost is over half its worst
/// case), whatever the timing.
fn room_for_one(body: &Value, answer_tokens: u64) -> f64 {
    let w = worst_case(body, MAIN);
    let cap = 1.5 * w;
    let real = cost(prompt_tokens(body), answer_tokens, MAIN);
    assert!(cap - real < w, "the cap would fit a second request");
    cap
}

// 1a. Concurrency, embedded ledger.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_requests_with_room_for_one_admit_exactly_one() {
    // Slow headers: all 50 reserve while the first is in flight.
    let answer = Behavior::ok()
        .chunks(8)
        .headers_delay(Duration::from_secs(2));
    let a = sim("a", answer, vec![]).await;
    let body = chat("m", false, 8);
    let cap = room_for_one(&body, 8);
    let budgets = json!([{ "id": "all-traffic", "scope": "global", "daily_usd": cap }]);
    let proxy = Proxy::start(&policy(&[("a", &a)], model_m(), budgets, json!({})));

    let results = burst(&[proxy.url(CHAT)], 50, &body).await;
    let admitted = assert_exactly_one_admitted(results, "all-traffic");
    assert_eq!(a.call_count(), 1, "the upstream saw more than one call");

    let expected = call_cost(&a.calls()[0], 8, MAIN);
    let charged = admitted.json()["usage"]["cost"].as_f64().unwrap();
    assert_close(charged, expected, 1e-12, "usage.cost");
    let row = settled(&proxy, "all-traffic").await;
    assert_close(usd(&row, "spent_usd"), expected, NANO, "spent");
    assert_close(usd(&row, "cap_usd"), cap, 1e-12, "cap");
    assert_close(
        usd(&row, "remaining_usd"),
        cap - expected,
        NANO,
        "remaining",
    );
    assert!(row["resets_at"].is_string(), "{row}");
}

// 1b. Concurrency across replicas sharing one Redis.
#[tokio::test(flavor = "multi_thread")]
async fn two_processes_sharing_redis_admit_exactly_one_of_fifty() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let answer = Behavior::ok()
        .chunks(8)
        .headers_delay(Duration::from_secs(2));
    let a = sim("a", answer, vec![]).await;
    let body = chat("m", false, 8);
    let cap = room_for_one(&body, 8);
    let budgets = json!([{ "id": "all-traffic", "scope": "global", "daily_usd": cap }]);
    let p = policy(&[("a", &a)], model_m(), budgets, json!({}));
    let url = redis.url();
    let one = Proxy::start_with_args(&p, &[], &["--redis", &url]);
    let two = Proxy::start_with_args(&p, &[], &["--redis", &url]);

    let results = burst(&[one.url(CHAT), two.url(CHAT)], 50, &body).await;
    assert_exactly_one_admitted(results, "all-traffic");
    assert_eq!(a.call_count(), 1, "the upstream saw more than one call");

    // Both replicas read the same windows.
    let expected = call_cost(&a.calls()[0], 8, MAIN);
    for proxy in [&one, &two] {
        let row = settled(proxy, "all-traffic").await;
        assert_close(usd(&row, "spent_usd"), expected, NANO, "spent");
    }
}

// 2. kill -9 with streams in flight, then a restart on the same ledger.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_loses_no_spend_and_counts_open_reservations_as_spent() {
    let quick = Behavior::ok().chunks(4);
    let slow = Behavior::ok()
        .chunks(40)
        .chunk_delay(Duration::from_millis(100));
    let a = sim("a", slow, vec![quick.clone(); 3]).await;
    let body = chat_stream("m", 64);
    let w = worst_case(&body, MAIN);
    let cap = 40.0 * w;
    let budgets = json!([{ "id": "crash", "scope": "global", "daily_usd": cap }]);
    let mut proxy = Proxy::start(&policy(&[("a", &a)], model_m(), budgets, json!({})));

    // Three streams complete and are settled.
    let mut settled_cost = 0.0;
    for _ in 0..3 {
        let r = post_json(&proxy.url(CHAT), &body).await;
        assert_status(&r, 200);
        let s = streamed(&r);
        assert!(s.done && s.errors.is_empty(), "{s:?}");
        settled_cost += s.usage.expect("usage")["cost"].as_f64().unwrap();
    }
    let expected: f64 = a.calls().iter().map(|c| call_cost(c, 4, MAIN)).sum();
    assert_close(settled_cost, expected, 1e-12, "the settled streams' cost");
    let row = settled(&proxy, "crash").await;
    assert_close(usd(&row, "spent_usd"), settled_cost, 3.0 * NANO, "spent");

    // Twenty more in flight: each holds its worst case.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(send_and_hold(&proxy, &body).await);
    }
    eventually("20 upstream calls in flight", async || a.call_count() == 23).await;
    eventually("20 open reservations", async || {
        let row = window(&proxy, "crash", "daily").await;
        (usd(&row, "reserved_usd") - 20.0 * w).abs() <= 20.0 * NANO
    })
    .await;
    let row = window(&proxy, "crash", "daily").await;
    assert_close(usd(&row, "spent_usd"), settled_cost, 3.0 * NANO, "spent");
    assert!(
        a.calls()[3..].iter().all(|c| c.outcome.is_none()),
        "a slow stream ended before the kill"
    );

    proxy.signal("KILL");
    assert!(proxy.wait_exit(Duration::from_secs(5)).is_some());
    drop(held);
    proxy.restart();

    // Nothing settled was lost, and every open reservation now counts as spent.
    let row = window(&proxy, "crash", "daily").await;
    let spent = usd(&row, "spent_usd");
    let floor = settled_cost + 20.0 * w;
    assert!(
        spent >= floor - 23.0 * NANO,
        "spent {spent} < {floor}: {row}"
    );
    assert!(
        spent <= floor + 23.0 * NANO,
        "spent {spent} > {floor}: {row}"
    );
    assert_eq!(usd(&row, "reserved_usd"), 0.0, "{row}");

    // The cap still holds: a request that would fit had the crash lost the open
    // reservations, but does not fit what really remains, is refused without an upstream call.
    a.set_config(SimConfig {
        name: "a".into(),
        default: quick,
        ..SimConfig::default()
    });
    let remaining = cap - floor;
    let target = remaining + 10.0 * w;
    let prompt_part = cost(prompt_estimate(&body), 0, MAIN);
    let big_tokens = ((target - prompt_part) * 1e6 / COMPLETION).round() as u64;
    let big = chat("m", false, big_tokens);
    let big_worst = worst_case(&big, MAIN);
    assert!(big_worst > remaining + w && big_worst < cap - settled_cost - w);
    let calls = a.call_count();
    let r = post_json(&proxy.url(CHAT), &big).await;
    assert_budget_exceeded(&r, "crash", "daily");
    assert_retry_after_reset(&r);
    assert_eq!(a.call_count(), calls);

    // What does fit is still served.
    let r = post_json(&proxy.url(CHAT), &chat("m", false, 64)).await;
    assert_status(&r, 200);
    assert_eq!(a.call_count(), calls + 1);
}

// 3. Settlement to the provider's reported usage.
#[tokio::test(flavor = "multi_thread")]
async fn spend_is_settled_to_exactly_the_reported_cost() {
    let a = sim("a", Behavior::ok().chunks(6), vec![]).await;
    let prices = (PROMPT, COMPLETION, 0.0002);
    let models = json!({ "m": { "endpoints": [ {
        "provider": "a", "upstream_model": "a-m",
        "pricing": { "prompt": prices.0, "completion": prices.1, "request": prices.2 },
        "supported_parameters": ["max_tokens", "stream_options"]
    } ] } });
    let cap = 50.0;
    let budgets = json!([{ "id": "exact", "scope": "global", "daily_usd": cap }]);
    let proxy = Proxy::start(&policy(&[("a", &a)], models, budgets, json!({})));

    let r = post_json(&proxy.url(CHAT), &chat("m", false, 64)).await;
    assert_status(&r, 200);
    let v = r.json();
    let first = v["usage"]["cost"].as_f64().unwrap();
    let header: f64 = r.header("x-switchyard-cost").unwrap().parse().unwrap();
    assert_close(header, first, 1e-9, "x-switchyard-cost");

    let r = post_json(&proxy.url(CHAT), &chat_stream("m", 64)).await;
    assert_status(&r, 200);
    let s = streamed(&r);
    assert!(s.done && s.errors.is_empty(), "{s:?}");
    let usage = s.usage.expect("the client asked for usage");
    let second = usage["cost"].as_f64().unwrap();

    let calls = a.calls();
    assert_eq!(calls.len(), 2);
    for (call, usage) in calls.iter().zip([&v["usage"], &usage]) {
        assert_eq!(usage["prompt_tokens"], prompt_tokens(&call.body), "{usage}");
        assert_eq!(usage["completion_tokens"], 6, "{usage}");
    }
    assert_close(first, call_cost(&calls[0], 6, prices), 1e-12, "first cost");
    assert_close(
        second,
        call_cost(&calls[1], 6, prices),
        1e-12,
        "second cost",
    );

    let row = settled(&proxy, "exact").await;
    assert_close(usd(&row, "spent_usd"), first + second, NANO, "spent");
    assert_eq!(usd(&row, "reserved_usd"), 0.0);
    assert_close(
        usd(&row, "remaining_usd"),
        cap - first - second,
        NANO,
        "remaining",
    );
}

// 4. A stream cut before its usage arrived.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_before_usage_is_charged_an_estimate() {
    let a = sim("a", Behavior::ok().chunks(10).cut_after(3), vec![]).await;
    let budgets = json!([{ "id": "cut", "scope": "global", "daily_usd": 50.0 }]);
    let overrides = json!({ "defaults": { "retry": { "continuation": false } } });
    let proxy = Proxy::start(&policy(&[("a", &a)], model_m(), budgets, overrides));

    let body = chat_stream("m", 64);
    let r = post_json(&proxy.url(CHAT), &body).await;
    assert_status(&r, 200);
    let s = streamed(&r);
    assert_eq!(
        s.text,
        expected_text("a", &Behavior::ok().chunks(3)),
        "{s:?}"
    );
    assert!(!s.done, "a cut stream ended with [DONE]: {s:?}");
    assert_eq!(s.errors.len(), 1, "{s:?}");
    assert_eq!(a.call_count(), 1);

    // The prompt estimate plus the output the client received, at most the worst case.
    let row = settled(&proxy, "cut").await;
    let spent = usd(&row, "spent_usd");
    let at_least = cost(prompt_estimate(&body), 3, MAIN);
    assert!(spent > 0.0, "{row}");
    assert!(spent >= at_least - NANO, "spent {spent} < {at_least}");
    assert!(spent <= worst_case(&body, MAIN) + NANO, "{row}");
    assert_eq!(usd(&row, "reserved_usd"), 0.0);
}

// 5. An empty completion that fell back.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_completion_that_fell_back_charges_only_the_serving_endpoint() {
    let a = sim("a", Behavior::ok().empty(), vec![]).await;
    let b = sim("b", Behavior::ok().chunks(5), vec![]).await;
    let b_prices = (2000.0, 5000.0, 0.0);
    let models = json!({ "m": { "endpoints": [
        ep("a", "m", PROMPT, COMPLETION),
        ep("b", "m", b_prices.0, b_prices.1)
    ] } });
    let budgets = json!([{ "id": "fallback", "scope": "global", "daily_usd": 50.0 }]);
    let proxy = Proxy::start(&policy(&[("a", &a), ("b", &b)], models, budgets, json!({})));

    let r = post_json(&proxy.url(CHAT), &chat("m", false, 64)).await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("b"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    assert_eq!((a.call_count(), b.call_count()), (1, 1));
    let expected = call_cost(&b.calls()[0], 5, b_prices);
    let charged = r.json()["usage"]["cost"].as_f64().unwrap();
    assert_close(charged, expected, 1e-12, "usage.cost");

    let row = settled(&proxy, "fallback").await;
    assert_close(usd(&row, "spent_usd"), expected, NANO, "spent");
}

// 6. Per-request caps: refused without an upstream call, or fitted.
#[tokio::test(flavor = "multi_thread")]
async fn a_per_request_cap_refuses_or_with_fit_to_budget_lowers_max_tokens() {
    let a = sim("a", Behavior::ok().chunks(4), vec![]).await;
    let models = json!({
        "m": { "endpoints": [ ep("a", "m", PROMPT, COMPLETION) ] },
        "f": { "endpoints": [ ep("a", "f", PROMPT, COMPLETION) ] },
    });
    let asked = chat("m", false, 100);
    // Room for 28.5 output tokens: 28 when fitted, well away from a rounding edge.
    let max_cost = cost(prompt_estimate(&asked), 0, MAIN) + 28.5 * COMPLETION / 1e6;
    assert!(worst_case(&asked, MAIN) > max_cost);
    let budgets = json!([{ "id": "per-request", "scope": "global", "max_cost_usd": max_cost }]);
    let overrides = json!({ "routes": { "fit": {
        "match_models": ["f"], "models": ["f"], "fit_to_budget": true
    } } });
    let proxy = Proxy::start(&policy(&[("a", &a)], models, budgets, overrides));

    // Over the cap, no fitting: 402 before any upstream byte.
    let r = post_json(&proxy.url(CHAT), &asked).await;
    let e = assert_budget_exceeded(&r, "per-request", "request");
    assert_close(
        e["metadata"]["cap_usd"].as_f64().unwrap(),
        max_cost,
        1e-12,
        "cap",
    );
    assert_eq!(a.call_count(), 0, "a refused request reached the upstream");

    // Within the cap: sent as asked.
    let r = post_json(&proxy.url(CHAT), &chat("m", false, 16)).await;
    assert_status(&r, 200);
    assert_eq!(a.calls()[0].body["max_tokens"], 16);

    // Over the cap on a route that fits: served with max_tokens lowered to what fits.
    let r = post_json(
        &proxy.url(CHAT),
        &with(asked.clone(), json!({"model": "f"})),
    )
    .await;
    assert_status(&r, 200);
    let calls = a.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].model.as_deref(), Some("a-f"));
    assert_eq!(calls[1].body["max_tokens"], 28, "{}", calls[1].body);
    let charged = r.json()["usage"]["cost"].as_f64().unwrap();
    assert!(charged <= max_cost, "{charged} > {max_cost}");
}

// 7. A tag's budget: its own traffic only.
#[tokio::test(flavor = "multi_thread")]
async fn a_tag_budget_refuses_its_tag_once_exhausted_and_nobody_else() {
    let a = sim("a", Behavior::ok().chunks(8), vec![]).await;
    let body = chat("m", false, 8);
    let cap = room_for_one(&body, 8);
    let budgets = json!([{ "id": "team-a-daily", "scope": { "tag": "team-a" }, "daily_usd": cap }]);
    let proxy = Proxy::start(&policy(&[("a", &a)], model_m(), budgets, json!({})));
    let url = proxy.url(CHAT);
    let raw = serde_json::to_vec(&body).unwrap();
    let tagged = |tag: &'static str| {
        [
            ("content-type", "application/json"),
            ("x-switchyard-tag", tag),
        ]
    };

    let r = send("POST", &url, &tagged("team-a"), raw.clone()).await;
    assert_status(&r, 200);
    let first = call_cost(&a.calls()[0], 8, MAIN);
    let row = settled(&proxy, "team-a-daily").await;
    assert_close(usd(&row, "spent_usd"), first, NANO, "spent");

    // Exhausted for team-a, by header or by the body's `user`.
    let r = send("POST", &url, &tagged("team-a"), raw.clone()).await;
    assert_budget_exceeded(&r, "team-a-daily", "daily");
    assert_retry_after_reset(&r);
    let r = post_json(&url, &with(body.clone(), json!({"user": "team-a"}))).await;
    assert_budget_exceeded(&r, "team-a-daily", "daily");
    assert_eq!(a.call_count(), 1);

    // Not for anyone else: another tag, another user, no tag at all.
    let r = send("POST", &url, &tagged("team-b"), raw.clone()).await;
    assert_status(&r, 200);
    let r = post_json(&url, &with(body.clone(), json!({"user": "team-b"}))).await;
    assert_status(&r, 200);
    let r = post_json(&url, &body).await;
    assert_status(&r, 200);
    assert_eq!(a.call_count(), 4);
    let row = settled(&proxy, "team-a-daily").await;
    assert_close(usd(&row, "spent_usd"), first, NANO, "team-a's spend");
}

// 8. Redis out of reach: fail closed, or open when configured.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_redis_fails_closed_unless_budgets_fail_open() {
    let a = sim("a", Behavior::ok().chunks(4), vec![]).await;
    let budgets = json!([{ "id": "shared", "scope": "global", "daily_usd": 50.0 }]);
    let p = policy(&[("a", &a)], model_m(), budgets, json!({}));
    // Nothing listens there.
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let body = chat("m", false, 64);

    let closed = Proxy::start_with_args(&p, &[], &["--redis", &url]);
    let started = Instant::now();
    let r = post_json(&closed.url(CHAT), &body).await;
    assert_status(&r, 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let v = r.json();
    assert_eq!(v["error"]["code"], "ledger_unavailable", "{v}");
    assert_eq!(a.call_count(), 0, "served without a budget check");
    let status = send("GET", &closed.admin_url("/admin/budgets"), &[], Vec::new())
        .await
        .json();
    assert!(status["ledger_error"].is_string(), "{status}");

    let open = Proxy::start_with_args(&p, &[], &["--redis", &url, "--budgets-fail-open"]);
    let r = post_json(&open.url(CHAT), &body).await;
    assert_status(&r, 200);
    assert_eq!(a.call_count(), 1);
}
