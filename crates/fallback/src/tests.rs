#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use switchyard_core::{
    AttemptObserver, AttemptReport, BoxError, Class, Event, EventKind, EventSource, Failure,
    ProxyBody, ProxyError, Served,
};
use switchyard_policy::{Candidate, Endpoint, Env, Plan, Snapshot};
use switchyard_wire::{BodyEdits, Operation, ParsedRequest};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

use crate::{FallbackLayer, RetryBudget};

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, p: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            p.display().to_string(),
        ))
    }
}

/// Model `m` on a, b (b supports prefill); model `big` (larger window) on c.
fn snapshot(extra_defaults: Value) -> Arc<Snapshot> {
    let ep = |p: &str, prefill: bool| {
        json!({"provider": p, "upstream_model": format!("{p}-up"), "pricing": {"prompt": 1, "completion": 1},
               "supports_prefill": prefill})
    };
    let mut policy = json!({
        "providers": {
            "a": {"api": "openai", "base_url": "https://a.example.com/v1"},
            "b": {"api": "openai", "base_url": "https://b.example.com/v1"},
            "c": {"api": "openai", "base_url": "https://c.example.com/v1"}
        },
        "models": {
            "m": {"context_length": 1000, "endpoints": [ep("a", true), ep("b", true)]},
            "big": {"context_length": 100000, "endpoints": [ep("c", false)]}
        },
        "defaults": {"retry": {"backoff_base": "100ms", "backoff_max": "1s"}}
    });
    if let Some(obj) = extra_defaults.as_object() {
        for (k, v) in obj {
            policy["defaults"][k] = v.clone();
        }
    }
    let c = switchyard_policy::compile(
        &policy.to_string(),
        switchyard_policy::Format::Json,
        Path::new("."),
        &NoEnv,
    )
    .unwrap();
    Arc::new(c.snapshot)
}

fn plan(s: &Snapshot, ids: &[&str]) -> Arc<Plan> {
    Arc::new(Plan {
        candidates: ids
            .iter()
            .map(|id| Candidate {
                endpoint: s.endpoint(id).unwrap().clone(),
                why: "test",
                score: None,
            })
            .collect(),
        ..Plan::default()
    })
}

/// What the fake upstream does for one attempt.
enum Step {
    Json(u16, Value, Option<&'static str>),
    Stream(Vec<Result<Event, BoxError>>),
    Err(Class),
    Refuse(Duration),
}

/// One call the fake upstream received: endpoint, body sent, edits, when.
type Call = (String, Value, Option<BodyEdits>, Instant);

#[derive(Default)]
struct Script {
    steps: Mutex<HashMap<String, VecDeque<Step>>>,
    calls: Mutex<Vec<Call>>,
}

impl Script {
    fn on(&self, endpoint: &str, step: Step) {
        self.steps
            .lock()
            .unwrap()
            .entry(endpoint.into())
            .or_default()
            .push_back(step);
    }
    fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("scripted {0:?}")]
struct Scripted(Class);
impl ProxyError for Scripted {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_GATEWAY
    }
    fn error_type(&self) -> &'static str {
        "upstream_error"
    }
    fn code(&self) -> &'static str {
        "scripted"
    }
    fn class(&self) -> Option<Class> {
        Some(self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("breaker open")]
struct Refused(Duration);
impl ProxyError for Refused {
    fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }
    fn error_type(&self) -> &'static str {
        "service_unavailable"
    }
    fn code(&self) -> &'static str {
        "breaker_open"
    }
    fn retry_after(&self) -> Option<Duration> {
        Some(self.0)
    }
    fn skipped(&self) -> bool {
        true
    }
}

struct Events(VecDeque<Result<Event, BoxError>>);
impl EventSource for Events {
    fn poll_event(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, BoxError>>> {
        Poll::Ready(self.0.pop_front())
    }
}

fn ev(kind: EventKind, data: Value) -> Result<Event, BoxError> {
    Ok(Event {
        bytes: Bytes::from(format!("data: {data}\n\n")),
        kind,
        usage: None,
    })
}

fn role() -> Result<Event, BoxError> {
    ev(
        EventKind::Preamble,
        json!({"object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
    )
}

fn text(t: &str) -> Result<Event, BoxError> {
    ev(
        EventKind::Output,
        json!({"object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]}),
    )
}

fn stop() -> Result<Event, BoxError> {
    ev(
        EventKind::Output,
        json!({"object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    )
}

fn done() -> Result<Event, BoxError> {
    Ok(Event {
        bytes: Bytes::from_static(b"data: [DONE]\n\n"),
        kind: EventKind::Done,
        usage: None,
    })
}

fn error_event(msg: &str) -> Result<Event, BoxError> {
    ev(
        EventKind::Error,
        json!({"error": {"message": msg, "type": "server_error"}}),
    )
}

fn cut() -> Result<Event, BoxError> {
    Err("connection reset by peer".into())
}

#[derive(Default)]
struct Reports(Mutex<Vec<(String, Class)>>);
impl AttemptObserver for Reports {
    fn observe(&self, r: &AttemptReport) {
        self.0
            .lock()
            .unwrap()
            .push((r.endpoint.to_string(), r.class));
    }
}

struct Harness {
    script: Arc<Script>,
    reports: Arc<Reports>,
    snapshot: Arc<Snapshot>,
    guard: Option<Arc<Guard>>,
}

/// Records reservations and settlements; refuses endpoints named in `refuse`.
#[derive(Default)]
struct Guard {
    refuse: Vec<String>,
    log: Mutex<Vec<String>>,
    settled: Mutex<Vec<(u32, f64, bool)>>,
}

#[derive(Debug, thiserror::Error)]
#[error("budget exceeded for {0}")]
struct OverBudget(String);
impl ProxyError for OverBudget {
    fn status(&self) -> StatusCode {
        StatusCode::PAYMENT_REQUIRED
    }
    fn error_type(&self) -> &'static str {
        "budget_exceeded"
    }
    fn code(&self) -> &'static str {
        "budget_exceeded"
    }
    fn skipped(&self) -> bool {
        true
    }
}

impl switchyard_core::SpendGuard for Guard {
    fn reserve(
        &self,
        attempt: u32,
        price: &switchyard_core::AttemptPrice,
    ) -> switchyard_core::BoxFuture<'static, Result<Option<u64>, BoxError>> {
        self.log
            .lock()
            .unwrap()
            .push(format!("reserve {attempt} {}", price.endpoint));
        let refused = self.refuse.iter().any(|r| **r == *price.endpoint);
        let ep = price.endpoint.to_string();
        Box::pin(async move {
            if refused {
                Err(Failure::boxed(OverBudget(ep)))
            } else {
                Ok(None)
            }
        })
    }
    fn settle(
        &self,
        attempt: u32,
        cost: f64,
        estimated: bool,
    ) -> switchyard_core::BoxFuture<'static, ()> {
        self.settled
            .lock()
            .unwrap()
            .push((attempt, cost, estimated));
        Box::pin(async {})
    }
}

impl Harness {
    fn new() -> Self {
        Self::with(json!({}))
    }
    fn with(defaults: Value) -> Self {
        Self {
            script: Arc::default(),
            reports: Arc::default(),
            snapshot: snapshot(defaults),
            guard: None,
        }
    }

    async fn send(
        &self,
        body: Value,
        candidates: &[&str],
    ) -> Result<Response<ProxyBody>, BoxError> {
        let script = self.script.clone();
        let inner = service_fn(move |req: Request<Arc<ParsedRequest>>| {
            let script = script.clone();
            async move {
                let ep = req.extensions().get::<Arc<Endpoint>>().unwrap().clone();
                let edits = req.extensions().get::<BodyEdits>().cloned();
                let body: Value = serde_json::from_slice(
                    &req.body()
                        .upstream_body_with(&ep.upstream_model, &edits.clone().unwrap_or_default()),
                )
                .unwrap();
                script
                    .calls
                    .lock()
                    .unwrap()
                    .push((ep.id.to_string(), body, edits, Instant::now()));
                let step = script
                    .steps
                    .lock()
                    .unwrap()
                    .get_mut(&*ep.id)
                    .and_then(VecDeque::pop_front);
                let served = Served {
                    endpoint: ep.id.clone(),
                    provider: ep.provider.id.clone(),
                    model: ep.model.clone(),
                    upstream_model: ep.upstream_model.clone(),
                    attempts: 1,
                    usage: None,
                };
                let mut resp = match step {
                    Some(Step::Json(status, v, retry_after)) => {
                        let mut r = Response::new(ProxyBody::full(v.to_string()));
                        *r.status_mut() = StatusCode::from_u16(status).unwrap();
                        if let Some(ra) = retry_after {
                            r.headers_mut().insert("retry-after", ra.parse().unwrap());
                        }
                        r
                    }
                    Some(Step::Stream(events)) => {
                        Response::new(ProxyBody::events(Events(events.into())))
                    }
                    Some(Step::Err(class)) => return Err(Failure::boxed(Scripted(class))),
                    Some(Step::Refuse(d)) => return Err(Failure::boxed(Refused(d))),
                    None => panic!("no step scripted for {}", ep.id),
                };
                resp.extensions_mut().insert(served);
                Ok::<_, BoxError>(resp)
            }
        });
        let observers: Vec<Arc<dyn AttemptObserver>> = vec![self.reports.clone()];
        let svc = FallbackLayer::new(observers, Arc::new(RetryBudget::new())).layer(inner);
        let parsed =
            ParsedRequest::parse(Operation::ChatCompletions, Bytes::from(body.to_string()))
                .unwrap();
        let mut req = Request::new(Arc::new(parsed));
        req.extensions_mut().insert(self.snapshot.clone());
        req.extensions_mut()
            .insert(plan(&self.snapshot, candidates));
        if let Some(g) = &self.guard {
            let g: Arc<dyn switchyard_core::SpendGuard> = g.clone();
            req.extensions_mut().insert(g);
        }
        svc.oneshot(req).await
    }

    fn classes(&self) -> Vec<(String, Class)> {
        self.reports.0.lock().unwrap().clone()
    }
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn good_stream(words: &[&str]) -> Step {
    let mut v = vec![role()];
    v.extend(words.iter().map(|w| text(w)));
    v.push(stop());
    v.push(done());
    Step::Stream(v)
}

async fn body_text(resp: Response<ProxyBody>) -> String {
    use http_body_util::BodyExt;
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

fn streamed_content(raw: &str) -> String {
    raw.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_500_is_retried_once_on_the_same_endpoint() {
    let h = Harness::new();
    h.script.on(
        "a/m",
        Step::Json(500, json!({"error": {"message": "boom"}}), None),
    );
    h.script.on("a/m", good_stream(&["hi"]));
    let resp = h.send(chat(true), &["a/m", "b/m"]).await.unwrap();
    assert_eq!(resp.extensions().get::<Served>().unwrap().attempts, 2);
    assert_eq!(streamed_content(&body_text(resp).await), "hi");
    assert_eq!(h.script.calls(), ["a/m", "a/m"]);
    assert_eq!(
        h.classes(),
        [
            ("a/m".into(), Class::ServerError),
            ("a/m".into(), Class::Success)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn persistent_503_falls_over_after_one_same_endpoint_retry() {
    let h = Harness::new();
    for _ in 0..2 {
        h.script.on(
            "a/m",
            Step::Json(503, json!({"error": {"message": "overloaded"}}), None),
        );
    }
    h.script.on("b/m", good_stream(&["ok"]));
    let resp = h.send(chat(true), &["a/m", "b/m"]).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.script.calls(), ["a/m", "a/m", "b/m"]);
}

#[tokio::test(start_paused = true)]
async fn a_reset_after_the_request_was_written_is_never_resent_there() {
    let h = Harness::new();
    h.script.on("a/m", Step::Err(Class::ResetAfterWrite));
    h.script.on("b/m", good_stream(&["ok"]));
    h.send(chat(true), &["a/m", "b/m"]).await.unwrap();
    assert_eq!(h.script.calls(), ["a/m", "b/m"]);
    // A connect failure, by contrast, is tried once more.
    let h = Harness::new();
    h.script.on("a/m", Step::Err(Class::ConnectFailed));
    h.script.on("a/m", good_stream(&["ok"]));
    h.send(chat(true), &["a/m", "b/m"]).await.unwrap();
    assert_eq!(h.script.calls(), ["a/m", "a/m"]);
}

#[tokio::test(start_paused = true)]
async fn a_429_moves_to_another_provider_of_the_same_model_first() {
    let h = Harness::new();
    h.script.on(
        "a/m",
        Step::Json(
            429,
            json!({"error": {"message": "slow down", "code": "rate_limit_exceeded"}}),
            Some("2"),
        ),
    );
    h.script.on("b/m", good_stream(&["ok"]));
    let t0 = Instant::now();
    h.send(chat(true), &["a/m", "c/big", "b/m"]).await.unwrap();
    assert_eq!(
        h.script.calls(),
        ["a/m", "b/m"],
        "the other model was tried before the same model's other provider"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "waited although another provider was ready"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_waits_then_retries_the_same_endpoint_before_another_model() {
    let h = Harness::new();
    h.script.on(
        "a/m",
        Step::Json(429, json!({"error": {"message": "slow down"}}), Some("2")),
    );
    h.script.on("a/m", good_stream(&["ok"]));
    let t0 = Instant::now();
    let resp = h.send(chat(true), &["a/m", "c/big"]).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.script.calls(), ["a/m", "a/m"]);
    let calls = h.script.calls.lock().unwrap();
    let gap = calls[1].3 - calls[0].3;
    assert!(
        gap >= Duration::from_secs(2) && gap < Duration::from_secs(3),
        "{gap:?}"
    );
    drop(calls);
    assert!(t0.elapsed() >= Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_cap_goes_to_the_next_model_at_once() {
    let h = Harness::new();
    h.script.on(
        "a/m",
        Step::Json(429, json!({"error": {"message": "slow down"}}), Some("60")),
    );
    h.script.on("c/big", good_stream(&["ok"]));
    let t0 = Instant::now();
    h.send(chat(true), &["a/m", "c/big"]).await.unwrap();
    assert_eq!(h.script.calls(), ["a/m", "c/big"]);
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn credential_failures_move_on_and_are_reported() {
    let h = Harness::new();
    h.script.on(
        "a/m",
        Step::Json(
            401,
            json!({"error": {"message": "bad key", "code": "invalid_api_key"}}),
            None,
        ),
    );
    h.script.on("b/m", good_stream(&["ok"]));
    h.send(chat(true), &["a/m", "b/m"]).await.unwrap();
    assert_eq!(h.script.calls(), ["a/m", "b/m"]);
    assert_eq!(h.classes()[0], ("a/m".into(), Class::Credential));
}

#[tokio::test(start_paused = true)]
async fn context_length_goes_only_to_a_larger_window() {
    let h = Harness::new();
    let too_long = json!({"error": {"message": "This model's maximum context length is 1000 tokens", "code": "context_length_exceeded"}});
    h.script.on("a/m", Step::Json(400, too_long.clone(), None));
    h.script.on("c/big", good_stream(&["ok"]));
    h.send(chat(true), &["a/m", "b/m", "c/big"]).await.unwrap();
    assert_eq!(h.script.calls(), ["a/m", "c/big"], "b has the same window");

    // No larger window left: the original 400, unchanged.
    let h = Harness::new();
    h.script.on("a/m", Step::Json(400, too_long.clone(), None));
    let resp = h.send(chat(true), &["a/m", "b/m"]).await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v, too_long);
    assert_eq!(h.script.calls(), ["a/m"]);
}

#[tokio::test(start_paused = true)]
async fn other_client_errors_and_refusals_are_returned_unchanged() {
    let h = Harness::new();
    let bad =
        json!({"error": {"message": "temperature must be <= 2", "type": "invalid_request_error"}});
    h.script.on("a/m", Step::Json(400, bad.clone(), None));
    let resp = h.send(chat(false), &["a/m", "b/m"]).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body_text(resp).await).unwrap(),
        bad
    );
    assert_eq!(h.script.calls(), ["a/m"]);
}

#[tokio::test(start_paused = true)]
async fn faults_before_the_commit_point_fall_back_invisibly() {
    let h = Harness::new();
    h.script
        .on("a/m", Step::Stream(vec![role(), error_event("overloaded")]));
    h.script
        .on("b/m", Step::Stream(vec![role(), stop(), done()]));
    h.script.on("c/big", Step::Stream(vec![role(), cut()]));
    h.script.on(
        "a/m",
        Step::Stream(vec![role(), text("fine"), stop(), done()]),
    );
    let resp = h.send(chat(true), &["a/m", "b/m", "c/big"]).await;
    // a: error event (same-endpoint retry allowed for server errors) -> a again succeeds.
    let raw = body_text(resp.unwrap()).await;
    assert_eq!(streamed_content(&raw), "fine");
    assert!(raw.ends_with("data: [DONE]\n\n"));
    assert_eq!(h.script.calls(), ["a/m", "a/m"]);

    let h = Harness::new();
    h.script
        .on("a/m", Step::Stream(vec![role(), stop(), done()]));
    h.script.on("b/m", Step::Stream(vec![role(), cut()]));
    h.script.on("c/big", good_stream(&["last"]));
    let raw = body_text(h.send(chat(true), &["a/m", "b/m", "c/big"]).await.unwrap()).await;
    assert_eq!(streamed_content(&raw), "last");
    assert_eq!(
        raw.matches("\"role\"").count(),
        1,
        "preambles of failed attempts leaked: {raw}"
    );
    let classes: Vec<Class> = h.classes().into_iter().map(|c| c.1).collect();
    assert_eq!(
        classes,
        [
            Class::EmptyCompletion,
            Class::ResetAfterWrite,
            Class::Success
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cut_after_commit_is_continued_with_a_prefill_and_spliced() {
    let h = Harness::new();
    h.script.on(
        "a/m",
        Step::Stream(vec![role(), text("Hello "), text("wor"), cut()]),
    );
    // The continuation (on a, which supports prefill) sends only the rest.
    h.script.on(
        "a/m",
        Step::Stream(vec![role(), text("ld"), text("!"), stop(), done()]),
    );
    let raw = body_text(h.send(chat(true), &["a/m", "b/m"]).await.unwrap()).await;
    assert_eq!(streamed_content(&raw), "Hello world!");
    assert!(raw.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        raw.matches("\"role\"").count(),
        1,
        "the continuation's preamble was shown: {raw}"
    );
    let calls = h.script.calls.lock().unwrap();
    assert_eq!(calls.len(), 2);
    let msgs = calls[1].1["messages"].as_array().unwrap();
    assert_eq!(
        msgs.last().unwrap(),
        &json!({"role": "assistant", "content": "Hello wor"})
    );
    drop(calls);
    let classes: Vec<Class> = h.classes().into_iter().map(|c| c.1).collect();
    assert_eq!(classes, [Class::CutAfterCommit, Class::Success]);
}

#[tokio::test(start_paused = true)]
async fn without_prefill_support_a_cut_ends_with_an_explicit_error_naming_it() {
    let h = Harness::new();
    h.script
        .on("c/big", Step::Stream(vec![role(), text("Hello "), cut()]));
    let raw = body_text(h.send(chat(true), &["c/big"]).await.unwrap()).await;
    assert_eq!(streamed_content(&raw), "Hello ");
    assert!(!raw.contains("[DONE]"), "{raw}");
    let last = raw.trim_end().rsplit("\n\n").next().unwrap();
    assert!(
        last.contains("\"error\"") && last.contains("connection reset by peer"),
        "{last}"
    );
    assert_eq!(h.script.calls(), ["c/big"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_continuation_reports_the_original_failure() {
    let h = Harness::new();
    h.script
        .on("a/m", Step::Stream(vec![role(), text("Hello "), cut()]));
    h.script.on(
        "a/m",
        Step::Json(
            400,
            json!({"error": {"message": "assistant prefill is not supported"}}),
            None,
        ),
    );
    h.script.on(
        "b/m",
        Step::Json(500, json!({"error": {"message": "later failure"}}), None),
    );
    let raw = body_text(h.send(chat(true), &["a/m", "b/m"]).await.unwrap()).await;
    assert!(!raw.contains("[DONE]"));
    assert!(raw.contains("connection reset by peer"), "{raw}");
    assert!(
        !raw.contains("later failure") && !raw.contains("prefill is not supported"),
        "{raw}"
    );
}

#[tokio::test(start_paused = true)]
async fn non_streaming_clients_are_served_from_an_aggregated_upstream_stream() {
    let h = Harness::new();
    h.script.on("a/m", good_stream(&["Hel", "lo"]));
    let resp = h.send(chat(false), &["a/m"]).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let calls = h.script.calls.lock().unwrap();
    assert_eq!(
        calls[0].1["stream"], true,
        "the upstream was not asked to stream"
    );
    assert_eq!(calls[0].1["stream_options"]["include_usage"], true);
}

#[tokio::test(start_paused = true)]
async fn an_empty_aggregated_answer_falls_back() {
    let h = Harness::new();
    h.script
        .on("a/m", Step::Stream(vec![role(), stop(), done()]));
    h.script.on("b/m", good_stream(&["there"]));
    let resp = h.send(chat(false), &["a/m", "b/m"]).await.unwrap();
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "there");
    assert_eq!(h.classes()[0].1, Class::EmptyCompletion);
}

#[tokio::test(start_paused = true)]
async fn every_candidate_refused_is_a_503_with_the_soonest_retry() {
    let h = Harness::new();
    h.script.on("a/m", Step::Refuse(Duration::from_secs(4)));
    h.script
        .on("b/m", Step::Refuse(Duration::from_millis(1500)));
    let err = h.send(chat(true), &["a/m", "b/m"]).await.unwrap_err();
    let f = Failure::find(&*err).unwrap().get();
    assert_eq!(f.status(), 503);
    assert_eq!(f.code(), "no_healthy_endpoint");
    assert_eq!(f.retry_after(), Some(Duration::from_millis(1500)));
    assert!(h.classes().is_empty(), "skips are not attempts");
}

#[tokio::test(start_paused = true)]
async fn exhausted_candidates_give_a_502_with_the_trail() {
    let h = Harness::new();
    h.script.on("a/m", Step::Err(Class::FirstTokenTimeout));
    h.script.on("b/m", Step::Err(Class::Malformed));
    let err = h.send(chat(true), &["a/m", "b/m"]).await.unwrap_err();
    let f = Failure::find(&*err).unwrap().get();
    assert_eq!(f.status(), 502);
    assert_eq!(f.code(), "providers_exhausted");
    let trail = f.metadata().unwrap()["attempts"].clone();
    assert_eq!(trail.as_array().unwrap().len(), 2);
    assert_eq!(trail[0]["outcome"], "first_token_timeout");
    assert_eq!(trail[1]["outcome"], "malformed");
}

#[tokio::test(start_paused = true)]
async fn attempts_per_model_are_capped() {
    let h = Harness::with(json!({"retry": {"max_attempts": 1}}));
    h.script.on(
        "a/m",
        Step::Json(500, json!({"error": {"message": "x"}}), None),
    );
    h.script.on("c/big", good_stream(&["ok"]));
    h.send(chat(true), &["a/m", "b/m", "c/big"]).await.unwrap();
    assert_eq!(h.script.calls(), ["a/m", "c/big"]);
}

#[tokio::test(start_paused = true)]
async fn buffer_mode_holds_the_answer_until_it_is_complete() {
    let h = Harness::with(json!({"retry": {"buffer": true, "continuation": false}}));
    h.script
        .on("a/m", Step::Stream(vec![role(), text("partial "), cut()]));
    h.script.on("b/m", good_stream(&["whole"]));
    let raw = body_text(h.send(chat(true), &["a/m", "b/m"]).await.unwrap()).await;
    assert_eq!(
        streamed_content(&raw),
        "whole",
        "a failed attempt's output reached the client"
    );
    assert!(raw.ends_with("data: [DONE]\n\n"));
}

fn with_guard(refuse: &[&str]) -> (Harness, Arc<Guard>) {
    let g = Arc::new(Guard {
        refuse: refuse.iter().map(|s| s.to_string()).collect(),
        ..Guard::default()
    });
    let mut h = Harness::new();
    h.guard = Some(g.clone());
    (h, g)
}

fn usage_chunk(prompt: u64, completion: u64, cost: f64) -> Result<Event, BoxError> {
    Ok(Event {
        bytes: Bytes::from(format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "model": "m", "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "cost": cost}})
        )),
        kind: EventKind::Usage,
        usage: Some(switchyard_core::Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost,
            estimated: false,
        }),
    })
}

#[tokio::test(start_paused = true)]
async fn a_budget_refusal_skips_to_a_cheaper_candidate_and_settles_the_actual_cost() {
    let (h, g) = with_guard(&["a/m"]);
    h.script.on(
        "b/m",
        Step::Stream(vec![
            role(),
            text("ok"),
            stop(),
            usage_chunk(10, 1, 0.25),
            done(),
        ]),
    );
    let raw = body_text(h.send(chat(true), &["a/m", "b/m"]).await.unwrap()).await;
    assert_eq!(streamed_content(&raw), "ok");
    assert_eq!(
        h.script.calls(),
        ["b/m"],
        "the refused endpoint was sent the request"
    );
    assert_eq!(*g.log.lock().unwrap(), ["reserve 1 a/m", "reserve 2 b/m"]);
    assert_eq!(*g.settled.lock().unwrap(), [(2, 0.25, false)]);
}

#[tokio::test(start_paused = true)]
async fn when_no_candidate_fits_a_budget_the_caller_gets_402() {
    let (h, _g) = with_guard(&["a/m", "b/m"]);
    let err = h.send(chat(true), &["a/m", "b/m"]).await.unwrap_err();
    let f = Failure::find(&*err).unwrap().get();
    assert_eq!(f.status(), 402);
    assert!(h.script.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failed_and_empty_attempts_are_not_charged_but_the_serving_one_is() {
    let (h, g) = with_guard(&[]);
    h.script
        .on("a/m", Step::Stream(vec![role(), stop(), done()]));
    h.script.on(
        "b/m",
        Step::Json(503, json!({"error": {"message": "x"}}), None),
    );
    h.script.on(
        "b/m",
        Step::Json(503, json!({"error": {"message": "x"}}), None),
    );
    h.script.on(
        "c/big",
        Step::Stream(vec![
            role(),
            text("fine"),
            stop(),
            usage_chunk(5, 1, 0.5),
            done(),
        ]),
    );
    body_text(h.send(chat(true), &["a/m", "b/m", "c/big"]).await.unwrap()).await;
    let settled = g.settled.lock().unwrap().clone();
    assert_eq!(settled.len(), 4);
    assert_eq!(
        &settled[..3],
        &[(1, 0.0, false), (2, 0.0, false), (3, 0.0, false)]
    );
    assert_eq!(settled[3], (4, 0.5, false));
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_before_its_usage_settles_an_estimate_above_zero() {
    let (h, g) = with_guard(&[]);
    h.script.on(
        "c/big",
        Step::Stream(vec![role(), text("Hello there, "), cut()]),
    );
    let raw = body_text(h.send(chat(true), &["c/big"]).await.unwrap()).await;
    assert!(!raw.contains("[DONE]"));
    let settled = g.settled.lock().unwrap().clone();
    assert_eq!(settled.len(), 1);
    let (_, cost, estimated) = settled[0];
    assert!(estimated && cost > 0.0, "{settled:?}");
}

#[tokio::test(start_paused = true)]
async fn each_continuation_is_charged_only_for_its_own_output() {
    let (h, g) = with_guard(&[]);
    // 2 output events, 9 bytes: estimated at 3 tokens.
    h.script.on(
        "a/m",
        Step::Stream(vec![role(), text("Hello "), text("wor"), cut()]),
    );
    // The first continuation sends 1 event of 2 bytes (1 token), then is cut as well.
    h.script
        .on("a/m", Step::Stream(vec![role(), text("ld"), cut()]));
    // The second reports its usage.
    h.script.on(
        "b/m",
        Step::Stream(vec![
            role(),
            text("!"),
            stop(),
            usage_chunk(20, 1, 0.5),
            done(),
        ]),
    );
    let raw = body_text(h.send(chat(true), &["a/m", "b/m"]).await.unwrap()).await;
    assert_eq!(streamed_content(&raw), "Hello world!");
    assert_eq!(h.script.calls(), ["a/m", "a/m", "b/m"]);
    let settled = g.settled.lock().unwrap().clone();
    assert_eq!(settled.len(), 3, "{settled:?}");
    let per_output_token = h.snapshot.endpoint("a/m").unwrap().pricing.cost(0, 1);
    let (first, second) = (settled[0], settled[1]);
    assert!(
        first.2 && second.2,
        "both cut attempts are estimates: {settled:?}"
    );
    assert!(
        (first.1 - second.1 - 2.0 * per_output_token).abs() < 1e-15,
        "the first continuation was charged for more than its own token: {settled:?}"
    );
    assert_eq!(settled[2], (3, 0.5, false));

    // The client is shown what the whole answer cost, not only its last part.
    let usage: Vec<Value> = raw
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v.get("usage").cloned())
        .collect();
    assert_eq!(usage.len(), 1, "{raw}");
    let charged: f64 = settled.iter().map(|s| s.1).sum();
    assert!(
        (usage[0]["cost"].as_f64().unwrap() - charged).abs() < 1e-12,
        "the client saw {} but {charged} was charged",
        usage[0]["cost"]
    );
    assert_eq!(usage[0]["completion_tokens"], 3 + 1 + 1);
    let prompt = usage[0]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(usage[0]["total_tokens"].as_u64().unwrap(), prompt + 5);
    assert!(
        prompt > 20,
        "the earlier attempts' prompts are missing: {prompt}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_mid_stream_is_charged_what_it_received() {
    use http_body_util::BodyExt;
    let (h, g) = with_guard(&[]);
    h.script.on(
        "a/m",
        Step::Stream(vec![
            role(),
            text("partial answer"),
            text(" more"),
            stop(),
            done(),
        ]),
    );
    let resp = h.send(chat(true), &["a/m"]).await.unwrap();
    let mut body = resp.into_body();
    let _first = body.frame().await.unwrap().unwrap();
    drop(body);
    tokio::task::yield_now().await;
    let settled = g.settled.lock().unwrap().clone();
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert!(settled[0].1 > 0.0 && settled[0].2);
    assert_eq!(h.classes().last().unwrap().1, Class::Cancelled);
}
