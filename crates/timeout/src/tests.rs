#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::future::poll_fn;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use switchyard_core::{
    BoxError, Class, Event, EventKind, EventSource, Failure, ProxyBody, ProxyError,
};
use switchyard_policy::{Endpoint, Env, Plan, Snapshot, Timeouts};
use switchyard_wire::{Operation, ParsedRequest};
use tokio::time::{Instant, Sleep, sleep};
use tower::util::BoxService;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

use crate::error::{AttemptTimeout, DeadlineExceeded, FirstTokenTimeout, IdleTimeout};
use crate::{AttemptTimeoutLayer, DeadlineLayer, effective_timeouts};

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const OPENAI_EVENT: &str = "data: {\"error\":{\"message\":\"the request did not complete within its deadline\",\"type\":\"timeout\",\"code\":\"deadline_exceeded\"}}\n\n";

// ---------------------------------------------------------------------------------------
// Fixtures

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

/// A policy whose defaults carry `timeouts`; route `r` overrides first_token (20 s) and idle
/// (7 s); endpoint 1 overrides first_token again (40 s), endpoint 0 nothing.
fn snapshot(timeouts: Value) -> Arc<Snapshot> {
    let policy = json!({
        "providers": { "p": { "api": "openai", "base_url": "https://p.example.com/v1" } },
        "models": { "m": { "endpoints": [
            { "provider": "p", "upstream_model": "plain" },
            { "provider": "p", "upstream_model": "slow", "timeouts": { "first_token": "40s" } }
        ] } },
        "routes": { "r": { "match_models": ["m"],
                           "timeouts": { "first_token": "20s", "idle": "7s" } } },
        "defaults": { "timeouts": timeouts }
    });
    let compiled = switchyard_policy::compile(
        &policy.to_string(),
        switchyard_policy::Format::Json,
        Path::new("."),
        &NoEnv,
    )
    .unwrap();
    Arc::new(compiled.snapshot)
}

/// Defaults used by most tests: first token 10 s, idle 5 s, total 120 s, no attempt cap.
fn standard() -> Arc<Snapshot> {
    snapshot(json!({ "first_token": "10s", "idle": "5s", "total": "120s" }))
}

fn parsed() -> Arc<ParsedRequest> {
    let body = json!({ "model": "m", "messages": [], "stream": true });
    Arc::new(
        ParsedRequest::parse(Operation::ChatCompletions, Bytes::from(body.to_string())).unwrap(),
    )
}

/// An attempt request as Fallback builds it.
fn attempt_req(
    snap: &Arc<Snapshot>,
    endpoint: usize,
    with_route: bool,
    deadline: Option<Instant>,
) -> Request<Arc<ParsedRequest>> {
    let mut req = Request::new(parsed());
    *req.uri_mut() = "/v1/chat/completions".parse().unwrap();
    let plan = Plan {
        route: if with_route {
            snap.route("r").cloned()
        } else {
            None
        },
        ..Plan::default()
    };
    let ep: Arc<Endpoint> = snap.endpoints()[endpoint].clone();
    let ext = req.extensions_mut();
    ext.insert(snap.clone());
    ext.insert(Arc::new(plan));
    ext.insert(ep);
    if let Some(d) = deadline {
        ext.insert(switchyard_core::Deadline(d));
    }
    req
}

fn ev(kind: EventKind, text: &'static str) -> Event {
    Event {
        bytes: Bytes::from_static(text.as_bytes()),
        kind,
        usage: None,
    }
}

fn out() -> Event {
    ev(
        EventKind::Output,
        "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
    )
}

fn pre() -> Event {
    ev(
        EventKind::Preamble,
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
    )
}

fn done() -> Event {
    ev(EventKind::Done, "data: [DONE]\n\n")
}

/// Sets its flag when dropped: proves that cancelling a wrapper cancels what it wraps.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A scripted upstream stream: each item comes `delay` after the previous one was taken;
/// when the script runs out it either ends or hangs for ever.
struct Script {
    steps: VecDeque<(Duration, Result<Event, BoxError>)>,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    hang: bool,
    _flag: DropFlag,
}

impl Script {
    fn new(steps: Vec<(u64, Event)>, hang: bool) -> (Self, Arc<AtomicBool>) {
        Self::with_results(
            steps
                .into_iter()
                .map(|(ms, e)| (Duration::from_millis(ms), Ok(e)))
                .collect(),
            hang,
        )
    }

    fn with_results(
        steps: Vec<(Duration, Result<Event, BoxError>)>,
        hang: bool,
    ) -> (Self, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        let script = Self {
            steps: steps.into(),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
            hang,
            _flag: DropFlag(flag.clone()),
        };
        (script, flag)
    }
}

impl EventSource for Script {
    fn poll_event(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, BoxError>>> {
        let this = &mut *self;
        let Some((delay, _)) = this.steps.front() else {
            return if this.hang {
                Poll::Pending
            } else {
                Poll::Ready(None)
            };
        };
        if !this.armed {
            let at = Instant::now() + *delay;
            this.sleep.as_mut().reset(at);
            this.armed = true;
        }
        ready!(this.sleep.as_mut().poll(cx));
        this.armed = false;
        Poll::Ready(this.steps.pop_front().map(|(_, item)| item))
    }
}

type Item = (Duration, Result<Event, BoxError>);

type TestService<B> = BoxService<Request<B>, Response<ProxyBody>, BoxError>;

/// The deadline an inner service saw in its request.
type Recorded = Arc<std::sync::Mutex<Option<Instant>>>;

/// Reads a streamed body to its end, noting when (since `start`) each item came.
async fn drain(body: ProxyBody, start: Instant) -> Vec<Item> {
    let mut src = body.into_events().expect("a streamed body");
    let mut items = Vec::new();
    while let Some(item) = poll_fn(|cx| src.as_mut().poll_event(cx)).await {
        items.push((start.elapsed(), item));
    }
    items
}

/// An upstream that answers after `delay` with `body`, and sets the returned flag if its
/// response future is dropped (whether finished or cancelled).
fn upstream<B: Send + 'static>(
    delay: Duration,
    body: ProxyBody,
) -> (TestService<B>, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let mut body = Some(body);
    let svc = service_fn(move |_req: Request<B>| {
        let guard = DropFlag(f.clone());
        let body = body.take().unwrap_or_default();
        async move {
            sleep(delay).await;
            drop(guard);
            Ok::<_, BoxError>(Response::new(body))
        }
    });
    (BoxService::new(svc), flag)
}

fn code_of(err: &BoxError) -> &'static str {
    Failure::find(&**err).expect("a Failure").get().code()
}

fn class_of(err: &BoxError) -> Option<Class> {
    Failure::find(&**err).expect("a Failure").get().class()
}

fn kinds(items: &[Item]) -> Vec<Result<EventKind, &'static str>> {
    items
        .iter()
        .map(|(_, r)| match r {
            Ok(e) => Ok(e.kind),
            Err(e) => Err(code_of(e)),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Errors

#[test]
fn errors_are_504_timeouts_with_stable_codes_and_verdicts() {
    let d = secs(3);
    let cases: [(&dyn ProxyError, &str, Option<Class>); 4] = [
        (&DeadlineExceeded, "deadline_exceeded", None),
        (
            &FirstTokenTimeout { after: d },
            "first_token_timeout",
            Some(Class::FirstTokenTimeout),
        ),
        (
            &IdleTimeout { after: d },
            "idle_timeout",
            Some(Class::IdleTimeout),
        ),
        (
            &AttemptTimeout { after: d },
            "attempt_timeout",
            Some(Class::AttemptTimeout),
        ),
    ];
    for (err, code, class) in cases {
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT, "{code}");
        assert_eq!(err.error_type(), "timeout", "{code}");
        assert_eq!(err.code(), code);
        assert_eq!(err.class(), class, "{code}");
        assert_eq!(err.retry_after(), None, "{code}");
    }
    assert_eq!(
        FirstTokenTimeout { after: secs(10) }.to_string(),
        "the upstream produced no output within the first-token timeout of 10s"
    );
    assert!(IdleTimeout { after: secs(5) }.to_string().contains("5s"));
    assert!(
        AttemptTimeout {
            after: Duration::from_millis(1500)
        }
        .to_string()
        .contains("1.5s")
    );
}

// ---------------------------------------------------------------------------------------
// Effective timeouts

#[test]
fn endpoint_overrides_beat_route_overrides_beat_defaults() {
    let snap = snapshot(json!({ "first_token": "10s", "idle": "5s", "attempt": "90s" }));
    let defaults = snap.defaults().timeouts;
    let route = snap.route("r").unwrap();
    let plain = &snap.endpoints()[0];
    let slow = &snap.endpoints()[1];

    assert_eq!(effective_timeouts(&defaults, None, None), defaults);
    let t = effective_timeouts(&defaults, Some(route), Some(plain));
    assert_eq!(t.first_token, secs(20));
    assert_eq!(t.idle, secs(7));
    assert_eq!(t.attempt, Some(secs(90)));
    assert_eq!(t.connect, defaults.connect);

    let t = effective_timeouts(&defaults, Some(route), Some(slow));
    assert_eq!(t.first_token, secs(40));
    assert_eq!(
        t.idle,
        secs(7),
        "the endpoint sets no idle: the route's holds"
    );

    let t = effective_timeouts(&defaults, None, Some(slow));
    assert_eq!(t.first_token, secs(40));
    assert_eq!(t.idle, secs(5));
    assert_eq!(
        effective_timeouts(&Timeouts::default(), None, None),
        Timeouts::default()
    );
}

// ---------------------------------------------------------------------------------------
// AttemptTimeout: headers

#[tokio::test(start_paused = true)]
async fn late_headers_fail_with_first_token_timeout_and_cancel_the_upstream() {
    let snap = standard();
    let (svc, cancelled) = upstream(secs(12), ProxyBody::full("late"));
    let start = Instant::now();
    let err = AttemptTimeoutLayer::new()
        .layer(svc)
        .oneshot(attempt_req(&snap, 0, false, None))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), secs(10));
    assert_eq!(code_of(&err), "first_token_timeout");
    assert_eq!(class_of(&err), Some(Class::FirstTokenTimeout));
    assert!(err.to_string().contains("10s"), "{err}");
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the upstream call is dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn headers_in_time_pass_a_buffered_body_through_untouched() {
    let snap = standard();
    let (svc, _) = upstream(secs(9), ProxyBody::full("{\"ok\":true}"));
    let start = Instant::now();
    let resp = AttemptTimeoutLayer::new()
        .layer(svc)
        .oneshot(attempt_req(&snap, 0, false, None))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), secs(9));
    assert_eq!(resp.body().as_full(), Some(&b"{\"ok\":true}"[..]));
}

#[tokio::test(start_paused = true)]
async fn attempt_cap_shorter_than_first_token_fails_headers_with_attempt_timeout() {
    let snap = snapshot(json!({ "first_token": "10s", "attempt": "3s" }));
    let (svc, _) = upstream(secs(5), ProxyBody::full("late"));
    let start = Instant::now();
    let err = AttemptTimeoutLayer::new()
        .layer(svc)
        .oneshot(attempt_req(&snap, 0, false, None))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), secs(3));
    assert_eq!(code_of(&err), "attempt_timeout");
    assert_eq!(class_of(&err), Some(Class::AttemptTimeout));
}

#[tokio::test(start_paused = true)]
async fn route_override_applies_to_headers() {
    let snap = standard();
    let (svc, _) = upstream(secs(25), ProxyBody::full("late"));
    let start = Instant::now();
    let err = AttemptTimeoutLayer::new()
        .layer(svc)
        .oneshot(attempt_req(&snap, 0, true, None))
        .await
        .unwrap_err();
    assert_eq!(
        start.elapsed(),
        secs(20),
        "the route's first_token, not 10 s"
    );
    assert_eq!(code_of(&err), "first_token_timeout");
    let found = Failure::find(&*err).unwrap().get().to_string();
    assert!(found.contains("20s"), "{found}");
}

#[tokio::test(start_paused = true)]
async fn endpoint_override_beats_the_route_for_headers() {
    let snap = standard();
    // Endpoint 1 allows 40 s; the route alone would have cut this at 20 s.
    let (svc, _) = upstream(secs(35), ProxyBody::full("slow but fine"));
    let start = Instant::now();
    let resp = AttemptTimeoutLayer::new()
        .layer(svc)
        .oneshot(attempt_req(&snap, 1, true, None))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), secs(35));
    assert_eq!(resp.body().as_full(), Some(&b"slow but fine"[..]));
}

#[tokio::test(start_paused = true)]
async fn without_a_snapshot_the_built_in_defaults_apply() {
    let (svc, _) = upstream(secs(30), ProxyBody::full("late"));
    let start = Instant::now();
    let err = AttemptTimeoutLayer::new()
        .layer(svc)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Timeouts::default().first_token);
    assert_eq!(code_of(&err), "first_token_timeout");
}

#[tokio::test(start_paused = true)]
async fn deadline_caps_the_wait_for_headers() {
    let snap = standard();
    let (svc, cancelled) = upstream(secs(9), ProxyBody::full("late"));
    let start = Instant::now();
    let deadline = start + secs(4);
    let err = AttemptTimeoutLayer::new()
        .layer(svc)
        .oneshot(attempt_req(&snap, 0, false, Some(deadline)))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), secs(4));
    assert_eq!(code_of(&err), "deadline_exceeded");
    assert_eq!(
        class_of(&err),
        None,
        "the request's limit, not the endpoint's"
    );
    assert!(cancelled.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn on_a_tie_with_the_deadline_the_endpoints_own_limit_is_reported() {
    let snap = standard();
    let (svc, _) = upstream(secs(15), ProxyBody::full("late"));
    let start = Instant::now();
    let err = AttemptTimeoutLayer::new()
        .layer(svc)
        .oneshot(attempt_req(&snap, 0, false, Some(start + secs(10))))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), secs(10));
    assert_eq!(code_of(&err), "first_token_timeout");
}

// ---------------------------------------------------------------------------------------
// AttemptTimeout: streams

/// Sends the attempt and drains its streamed body; returns the items and whether the
/// upstream stream was dropped by the time the body ended.
async fn run_stream(
    snap: &Arc<Snapshot>,
    endpoint: usize,
    with_route: bool,
    deadline: Option<Instant>,
    headers_after: Duration,
    script: Script,
) -> (Vec<Item>, Instant) {
    let start = Instant::now();
    let (svc, _) = upstream(headers_after, ProxyBody::events(script));
    let resp = AttemptTimeoutLayer::new()
        .layer(svc)
        .oneshot(attempt_req(snap, endpoint, with_route, deadline))
        .await
        .unwrap();
    (drain(resp.into_body(), start).await, start)
}

#[tokio::test(start_paused = true)]
async fn preamble_without_output_fails_at_exactly_first_token_from_the_attempt_start() {
    let snap = standard();
    // Headers at 2 s, then role chunks and keep-alives at 3, 6 and 9 s, then nothing.
    let (script, dropped) = Script::new(
        vec![
            (1_000, pre()),
            (3_000, pre()),
            (3_000, ev(EventKind::Preamble, ": keep-alive\n\n")),
        ],
        true,
    );
    let (items, _) = run_stream(&snap, 0, false, None, secs(2), script).await;
    assert_eq!(
        kinds(&items),
        vec![
            Ok(EventKind::Preamble),
            Ok(EventKind::Preamble),
            Ok(EventKind::Preamble),
            Err("first_token_timeout"),
        ]
    );
    assert_eq!(items[2].0, secs(9));
    assert_eq!(
        items[3].0,
        secs(10),
        "from the attempt's start, not the headers"
    );
    let (_, Err(err)) = &items[3] else {
        panic!("an error")
    };
    assert_eq!(class_of(err), Some(Class::FirstTokenTimeout));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the upstream stream is closed"
    );
}

#[tokio::test(start_paused = true)]
async fn output_then_silence_fails_with_idle_timeout() {
    let snap = standard();
    let (script, dropped) = Script::new(vec![(1_000, pre()), (1_000, out()), (2_000, out())], true);
    let (items, _) = run_stream(&snap, 0, false, None, secs(1), script).await;
    assert_eq!(
        kinds(&items),
        vec![
            Ok(EventKind::Preamble),
            Ok(EventKind::Output),
            Ok(EventKind::Output),
            Err("idle_timeout"),
        ]
    );
    assert_eq!(items[2].0, secs(5));
    assert_eq!(
        items[3].0,
        secs(10),
        "idle (5 s) after the last event at 5 s"
    );
    let (_, Err(err)) = &items[3] else {
        panic!("an error")
    };
    assert_eq!(class_of(err), Some(Class::IdleTimeout));
    let found = Failure::find(&**err).unwrap().get().to_string();
    assert!(found.contains("5s"), "{found}");
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn steady_events_keep_a_long_stream_alive() {
    let snap = standard();
    // 15 outputs 4 s apart (60 s in all, far past first_token and idle), then [DONE].
    let mut steps: Vec<(u64, Event)> = (0..15).map(|_| (4_000, out())).collect();
    steps.push((1_000, done()));
    let (script, _) = Script::new(steps, false);
    let (items, _) = run_stream(&snap, 0, false, None, secs(1), script).await;
    assert_eq!(items.len(), 16);
    assert!(items.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(items[14].0, secs(61));
    assert_eq!(items[15].0, secs(62));
    assert_eq!(kinds(&items)[15], Ok(EventKind::Done));
}

#[tokio::test(start_paused = true)]
async fn after_output_every_event_kind_restarts_the_idle_limit() {
    let snap = standard();
    let (script, _) = Script::new(
        vec![
            (1_000, out()),
            (4_000, pre()),
            (4_000, ev(EventKind::Preamble, ": keep-alive\n\n")),
            (4_000, ev(EventKind::Usage, "")),
            (4_000, pre()),
        ],
        true,
    );
    let (items, _) = run_stream(&snap, 0, false, None, Duration::ZERO, script).await;
    assert_eq!(items.len(), 6);
    assert_eq!(items[4].0, secs(17));
    assert_eq!(kinds(&items)[5], Err("idle_timeout"));
    assert_eq!(items[5].0, secs(22));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_idle_limit_takes_over_at_the_first_output() {
    let snap = snapshot(json!({ "first_token": "30s", "idle": "5s" }));
    let (script, _) = Script::new(vec![(1_000, out())], true);
    let (items, _) = run_stream(&snap, 0, false, None, Duration::ZERO, script).await;
    assert_eq!(
        kinds(&items),
        vec![Ok(EventKind::Output), Err("idle_timeout")]
    );
    assert_eq!(
        items[1].0,
        secs(6),
        "idle from the output, not first_token from the start"
    );
}

#[tokio::test(start_paused = true)]
async fn the_attempt_cap_ends_even_a_steady_stream() {
    let snap = snapshot(json!({ "first_token": "10s", "idle": "5s", "attempt": "20s" }));
    let steps: Vec<(u64, Event)> = (0..20).map(|_| (3_000, out())).collect();
    let (script, dropped) = Script::new(steps, false);
    let (items, _) = run_stream(&snap, 0, false, None, secs(1), script).await;
    // Outputs at 4, 7, ..., 19 s, then the cap at 20 s.
    assert_eq!(items.len(), 7);
    assert_eq!(items[5].0, secs(19));
    let k = kinds(&items);
    assert_eq!(k[6], Err("attempt_timeout"));
    assert_eq!(items[6].0, secs(20));
    let (_, Err(err)) = &items[6] else {
        panic!("an error")
    };
    assert_eq!(class_of(err), Some(Class::AttemptTimeout));
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn stream_limits_follow_endpoint_then_route_then_defaults() {
    let snap = standard();
    // Route idle is 7 s (defaults 5 s): a 6 s gap passes, then silence fails at +7 s.
    let (script, _) = Script::new(vec![(1_000, out()), (6_000, out())], true);
    let (items, _) = run_stream(&snap, 0, true, None, Duration::ZERO, script).await;
    assert_eq!(
        kinds(&items),
        vec![
            Ok(EventKind::Output),
            Ok(EventKind::Output),
            Err("idle_timeout")
        ]
    );
    assert_eq!(items[2].0, secs(14));

    // Endpoint 1's first_token (40 s) beats the route's (20 s) for the first output too.
    let (script, _) = Script::new(vec![(30_000, pre()), (5_000, out())], false);
    let (items, _) = run_stream(&snap, 1, true, None, secs(1), script).await;
    assert_eq!(
        kinds(&items),
        vec![Ok(EventKind::Preamble), Ok(EventKind::Output)]
    );
    assert_eq!(items[1].0, secs(36));

    // The same stream on endpoint 0 under the route fails at the route's 20 s.
    let (script, _) = Script::new(vec![(30_000, pre()), (5_000, out())], false);
    let (items, _) = run_stream(&snap, 0, true, None, secs(1), script).await;
    assert_eq!(kinds(&items), vec![Err("first_token_timeout")]);
    assert_eq!(items[0].0, secs(20));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_caps_the_stream() {
    let snap = standard();
    let start = Instant::now();
    let steps: Vec<(u64, Event)> = (0..10).map(|_| (1_000, out())).collect();
    let (script, dropped) = Script::new(steps, false);
    let (items, _) = run_stream(
        &snap,
        0,
        false,
        Some(start + Duration::from_millis(4_500)),
        Duration::ZERO,
        script,
    )
    .await;
    assert_eq!(items.len(), 5);
    assert_eq!(kinds(&items)[4], Err("deadline_exceeded"));
    assert_eq!(items[4].0, Duration::from_millis(4_500));
    let (_, Err(err)) = &items[4] else {
        panic!("an error")
    };
    assert_eq!(class_of(err), None);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn after_the_terminator_a_stalled_close_ends_quietly() {
    let snap = standard();
    let (script, dropped) = Script::new(vec![(1_000, out()), (1_000, done())], true);
    let (items, _) = run_stream(&snap, 0, false, None, Duration::ZERO, script).await;
    assert_eq!(
        kinds(&items),
        vec![Ok(EventKind::Output), Ok(EventKind::Done)]
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the stalled upstream is still closed"
    );
}

#[tokio::test(start_paused = true)]
async fn an_upstream_error_ends_the_stream_without_a_second_error() {
    let snap = standard();
    let (script, dropped) = Script::with_results(
        vec![
            (secs(1), Ok(out())),
            (secs(1), Err(Failure::boxed(IdleTimeout { after: secs(1) }))),
        ],
        true,
    );
    let (items, _) = run_stream(&snap, 0, false, None, Duration::ZERO, script).await;
    assert_eq!(
        kinds(&items),
        vec![Ok(EventKind::Output), Err("idle_timeout")]
    );
    assert_eq!(
        items[1].0,
        secs(2),
        "the upstream's own error, passed on at once"
    );
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_wrapped_body_drops_the_upstream_stream() {
    let snap = standard();
    let (script, dropped) = Script::new(vec![(1_000, out())], true);
    let (svc, _) = upstream(Duration::ZERO, ProxyBody::events(script));
    let resp = AttemptTimeoutLayer::new()
        .layer(svc)
        .oneshot(attempt_req(&snap, 0, false, None))
        .await
        .unwrap();
    let mut src = resp.into_body().into_events().unwrap();
    let first = poll_fn(|cx| src.as_mut().poll_event(cx)).await;
    assert!(matches!(first, Some(Ok(ref e)) if e.kind == EventKind::Output));
    assert!(!dropped.load(Ordering::SeqCst));
    drop(src);
    assert!(dropped.load(Ordering::SeqCst));
}

// ---------------------------------------------------------------------------------------
// Deadline

/// An inner service that records the request's deadline and answers with `body` after
/// `delay`.
fn recording(delay: Duration, body: ProxyBody) -> (TestService<()>, Recorded, Arc<AtomicBool>) {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let (inner, dropped) = upstream::<()>(delay, body);
    let s = seen.clone();
    let svc = ServiceBuilder::new()
        .map_request(move |req: Request<()>| {
            *s.lock().unwrap() = req
                .extensions()
                .get::<switchyard_core::Deadline>()
                .map(|d| d.0);
            req
        })
        .service(inner);
    (BoxService::new(svc), seen, dropped)
}

fn client_req(path: &str, snap: Option<&Arc<Snapshot>>, outer: Option<Instant>) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = path.parse().unwrap();
    if let Some(s) = snap {
        req.extensions_mut().insert(s.clone());
    }
    if let Some(d) = outer {
        req.extensions_mut().insert(switchyard_core::Deadline(d));
    }
    req
}

#[tokio::test(start_paused = true)]
async fn deadline_is_now_plus_the_default_total() {
    let snap = standard();
    let (svc, seen, _) = recording(Duration::ZERO, ProxyBody::full("ok"));
    let start = Instant::now();
    DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req("/v1/chat/completions", Some(&snap), None))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(start + secs(120)));

    let (svc, seen, _) = recording(Duration::ZERO, ProxyBody::full("ok"));
    DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req("/v1/chat/completions", None, None))
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        Some(start + Timeouts::default().total),
        "without a snapshot the built-in total still applies"
    );
}

#[tokio::test(start_paused = true)]
async fn an_earlier_existing_deadline_is_kept_and_a_later_one_tightened() {
    let snap = standard();
    let start = Instant::now();
    let (svc, seen, _) = recording(Duration::ZERO, ProxyBody::full("ok"));
    DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req(
            "/v1/chat/completions",
            Some(&snap),
            Some(start + secs(30)),
        ))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(start + secs(30)));

    let (svc, seen, _) = recording(Duration::ZERO, ProxyBody::full("ok"));
    DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req(
            "/v1/chat/completions",
            Some(&snap),
            Some(start + secs(900)),
        ))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(start + secs(120)));
}

#[tokio::test(start_paused = true)]
async fn the_earlier_existing_deadline_is_also_the_one_enforced() {
    let snap = standard();
    let start = Instant::now();
    let (svc, _, dropped) = recording(secs(60), ProxyBody::full("late"));
    let err = DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req(
            "/v1/chat/completions",
            Some(&snap),
            Some(start + secs(30)),
        ))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), secs(30));
    assert_eq!(code_of(&err), "deadline_exceeded");
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_response_not_ready_by_the_deadline_is_a_504_and_cancels_everything_under_it() {
    let snap = standard();
    let (svc, _, dropped) = recording(secs(200), ProxyBody::full("late"));
    let start = Instant::now();
    let err = DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req("/v1/chat/completions", Some(&snap), None))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), secs(120));
    let f = Failure::find(&*err).unwrap().get();
    assert_eq!(f.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(f.error_type(), "timeout");
    assert_eq!(f.code(), "deadline_exceeded");
    assert_eq!(f.class(), None);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the inner future is dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_is_cut_at_the_deadline_with_one_error_event_and_no_done() {
    let snap = snapshot(json!({ "total": "30s" }));
    let mut steps: Vec<(u64, Event)> = (0..10).map(|_| (7_000, out())).collect();
    steps.push((0, done()));
    let (script, upstream_dropped) = Script::new(steps, false);
    let (svc, _, _) = recording(secs(1), ProxyBody::events(script));
    let start = Instant::now();
    let resp = DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req("/v1/chat/completions", Some(&snap), None))
        .await
        .unwrap();
    let items = drain(resp.into_body(), start).await;
    // Outputs at 8, 15, 22, 29 s; the cut at 30 s.
    assert_eq!(items.len(), 5);
    assert!(
        items[..4]
            .iter()
            .all(|(_, r)| matches!(r, Ok(e) if e.kind == EventKind::Output))
    );
    let (at, Ok(cut)) = &items[4] else {
        panic!("an in-band event, not an Err")
    };
    assert_eq!(*at, secs(30));
    assert_eq!(cut.kind, EventKind::Error);
    assert!(cut.usage.is_none());
    assert_eq!(&cut.bytes[..], OPENAI_EVENT.as_bytes());
    let errors = items
        .iter()
        .filter(|(_, r)| matches!(r, Ok(e) if e.kind == EventKind::Error))
        .count();
    assert_eq!(errors, 1);
    assert!(
        items
            .iter()
            .all(|(_, r)| !matches!(r, Ok(e) if e.kind == EventKind::Done
                || e.bytes.windows(6).any(|w| w == b"[DONE]")))
    );
    assert!(
        upstream_dropped.load(Ordering::SeqCst),
        "cut at once, not at drop"
    );
}

#[test]
fn the_in_band_event_is_openai_json_with_the_errors_own_message() {
    let body = OPENAI_EVENT
        .strip_prefix("data: ")
        .and_then(|s| s.strip_suffix("\n\n"))
        .unwrap();
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["type"], "timeout");
    assert_eq!(v["error"]["code"], "deadline_exceeded");
    assert_eq!(v["error"]["message"], DeadlineExceeded.to_string());
    assert_eq!(
        &crate::events::deadline_event(switchyard_core::InboundApi::OpenAi).bytes[..],
        OPENAI_EVENT.as_bytes()
    );
}

#[tokio::test(start_paused = true)]
async fn anthropic_callers_get_an_anthropic_error_event() {
    let snap = snapshot(json!({ "total": "5s" }));
    let (script, _) = Script::new(vec![(1_000, out())], true);
    let (svc, _, _) = recording(Duration::ZERO, ProxyBody::events(script));
    let start = Instant::now();
    let resp = DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req("/v1/messages", Some(&snap), None))
        .await
        .unwrap();
    let items = drain(resp.into_body(), start).await;
    assert_eq!(items.len(), 2);
    let (at, Ok(cut)) = &items[1] else {
        panic!("an in-band event")
    };
    assert_eq!(*at, secs(5));
    assert_eq!(cut.kind, EventKind::Error);
    let text = std::str::from_utf8(&cut.bytes).unwrap();
    let data = text
        .strip_prefix("event: error\ndata: ")
        .and_then(|s| s.strip_suffix("\n\n"))
        .unwrap();
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "timeout_error");
    assert_eq!(v["error"]["message"], DeadlineExceeded.to_string());
}

#[tokio::test(start_paused = true)]
async fn a_stream_finishing_before_the_deadline_is_unchanged() {
    let snap = snapshot(json!({ "total": "30s" }));
    let (script, _) = Script::new(vec![(1_000, pre()), (1_000, out()), (1_000, done())], false);
    let (svc, _, _) = recording(Duration::ZERO, ProxyBody::events(script));
    let start = Instant::now();
    let resp = DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req("/v1/chat/completions", Some(&snap), None))
        .await
        .unwrap();
    let items = drain(resp.into_body(), start).await;
    assert_eq!(
        kinds(&items),
        vec![
            Ok(EventKind::Preamble),
            Ok(EventKind::Output),
            Ok(EventKind::Done)
        ]
    );
    assert_eq!(items[2].0, secs(3));
}

#[tokio::test(start_paused = true)]
async fn after_the_terminator_the_deadline_closes_quietly() {
    let snap = snapshot(json!({ "total": "10s" }));
    let (script, dropped) = Script::new(vec![(1_000, out()), (1_000, done())], true);
    let (svc, _, _) = recording(Duration::ZERO, ProxyBody::events(script));
    let start = Instant::now();
    let resp = DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req("/v1/chat/completions", Some(&snap), None))
        .await
        .unwrap();
    let items = drain(resp.into_body(), start).await;
    assert_eq!(
        kinds(&items),
        vec![Ok(EventKind::Output), Ok(EventKind::Done)]
    );
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_deadline_wrapped_body_drops_the_upstream_stream() {
    let snap = standard();
    let (script, dropped) = Script::new(vec![(1_000, out())], true);
    let (svc, _, _) = recording(Duration::ZERO, ProxyBody::events(script));
    let resp = DeadlineLayer::new()
        .layer(svc)
        .oneshot(client_req("/v1/chat/completions", Some(&snap), None))
        .await
        .unwrap();
    let mut src = resp.into_body().into_events().unwrap();
    let first = poll_fn(|cx| src.as_mut().poll_event(cx)).await;
    assert!(matches!(first, Some(Ok(ref e)) if e.kind == EventKind::Output));
    assert!(!dropped.load(Ordering::SeqCst));
    drop(src);
    assert!(dropped.load(Ordering::SeqCst));
}

// ---------------------------------------------------------------------------------------
// Both layers together

#[tokio::test(start_paused = true)]
async fn the_attempt_layer_sees_the_deadline_the_outer_layer_set() {
    let snap = snapshot(json!({ "first_token": "10s", "total": "8s" }));
    let (inner, _) = upstream::<Arc<ParsedRequest>>(secs(9), ProxyBody::full("late"));
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new())
        .layer(AttemptTimeoutLayer::new())
        .service(inner);
    let start = Instant::now();
    let mut req = attempt_req(&snap, 0, false, None);
    req.extensions_mut().remove::<switchyard_core::Deadline>();
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(8));
    assert_eq!(code_of(&err), "deadline_exceeded");
}
