#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use serde_json::json;
use switchyard_core::{
    AttemptObserver, AttemptReport, BoxError, Class, Event, EventSource, Failure, ProxyBody,
};
use switchyard_policy::{Breaker as Settings, Endpoint, Snapshot, SystemEnv};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::{
    Admission, BreakerLayer, BreakerRegistry, Phase, Refusal, RegistryConfig, refusal_error,
};

fn snapshot(breaker: serde_json::Value) -> Arc<Snapshot> {
    snapshot_with(json!({ "breaker": breaker }))
}

fn snapshot_with(defaults: serde_json::Value) -> Arc<Snapshot> {
    let policy = json!({
        "providers": {
            "a": { "api": "openai", "base_url": "https://a.example.com/v1" },
            "b": { "api": "openai", "base_url": "https://b.example.com/v1" }
        },
        "models": {
            "x": { "endpoints": [ { "provider": "a" }, { "provider": "b" } ] },
            "y": { "endpoints": [ { "provider": "a" } ] }
        },
        "defaults": defaults
    });
    let compiled = switchyard_policy::compile(
        &policy.to_string(),
        switchyard_policy::Format::Json,
        Path::new("."),
        &SystemEnv,
    )
    .unwrap();
    Arc::new(compiled.snapshot)
}

fn ep(s: &Snapshot, id: &str) -> Arc<Endpoint> {
    Arc::clone(s.endpoint(id).unwrap())
}

fn report(ep: &Endpoint, class: Class, retry_after: Option<Duration>) -> AttemptReport {
    let now = Instant::now();
    AttemptReport {
        request_id: None,
        endpoint: Arc::clone(&ep.id),
        provider: Arc::clone(&ep.provider.id),
        model: Arc::clone(&ep.model),
        attempt: 1,
        class,
        status: None,
        sent_at: now,
        ttft: None,
        ended_at: now,
        usage: None,
        retry_after,
    }
}

fn settings() -> Settings {
    Settings::default()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn observe_n(reg: &BreakerRegistry, ep: &Endpoint, class: Class, n: usize) {
    for _ in 0..n {
        reg.observe(&report(ep, class, None));
    }
}

#[tokio::test(start_paused = true)]
async fn failures_reported_by_fallback_open_the_breaker() {
    let s = snapshot(json!({}));
    let ax = ep(&s, "a/x");
    let reg = BreakerRegistry::default();
    assert_eq!(
        reg.admit(&ax, &settings(), Instant::now()),
        Ok(Admission::Closed)
    );
    // Every failure class counts toward the streak.
    for class in [
        Class::ConnectFailed,
        Class::ServerError,
        Class::FirstTokenTimeout,
        Class::EmptyCompletion,
    ] {
        reg.observe(&report(&ax, class, None));
    }
    assert_eq!(reg.state("a/x", Instant::now()).phase, Phase::Closed);
    assert_eq!(reg.state("a/x", Instant::now()).consecutive_failures, 4);
    reg.observe(&report(&ax, Class::Malformed, None));
    let now = Instant::now();
    let view = reg.state("a/x", now);
    assert_eq!(view.phase, Phase::Open);
    let until = view.open_until.unwrap();
    assert!(until >= now + Duration::from_millis(500) && until <= now + secs(1));
    assert!(matches!(
        reg.admit(&ax, &settings(), now),
        Err(Refusal::BreakerOpen { .. })
    ));
    // Other endpoints, even of the same provider, are unaffected.
    assert_eq!(
        reg.admit(&ep(&s, "a/y"), &settings(), now),
        Ok(Admission::Closed)
    );
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_rate_with_min_requests() {
    let s = snapshot(json!({}));
    let ax = ep(&s, "a/x");
    let reg = BreakerRegistry::default();
    let lax = Settings {
        consecutive_failures: 1000,
        min_requests: 10,
        failure_rate: 0.5,
        ..settings()
    };
    // Thresholds reach the registry with admission.
    assert!(reg.admit(&ax, &lax, Instant::now()).is_ok());
    for _ in 0..4 {
        observe_n(&reg, &ax, Class::Success, 1);
        observe_n(&reg, &ax, Class::ServerError, 1);
    }
    observe_n(&reg, &ax, Class::Success, 1);
    // 9 requests: under min_requests, whatever the rate.
    assert_eq!(reg.state("a/x", Instant::now()).phase, Phase::Closed);
    assert_eq!(reg.state("a/x", Instant::now()).requests, 9);
    observe_n(&reg, &ax, Class::ServerError, 1);
    assert_eq!(reg.state("a/x", Instant::now()).phase, Phase::Open);
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_cancellations_are_ignored() {
    let s = snapshot(json!({}));
    let ax = ep(&s, "a/x");
    let reg = BreakerRegistry::default();
    for class in [
        Class::ClientError,
        Class::ContextLength,
        Class::ContentPolicy,
        Class::Cancelled,
    ] {
        observe_n(&reg, &ax, class, 10);
    }
    // Not even an entry was made for them.
    assert!(reg.all(Instant::now()).is_empty());
    observe_n(&reg, &ax, Class::ServerError, 4);
    observe_n(&reg, &ax, Class::ClientError, 10);
    observe_n(&reg, &ax, Class::Cancelled, 10);
    let view = reg.state("a/x", Instant::now());
    assert_eq!(view.phase, Phase::Closed);
    // Ignored outcomes neither extend nor reset the streak.
    assert_eq!(view.consecutive_failures, 4);
    assert_eq!(view.requests, 4);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_cooldown_honours_retry_after_with_default_and_cap() {
    let s = snapshot(json!({}));
    let (ax, ay, bx) = (ep(&s, "a/x"), ep(&s, "a/y"), ep(&s, "b/x"));
    let reg = BreakerRegistry::default();
    reg.observe(&report(&ax, Class::RateLimited, Some(secs(3))));
    reg.observe(&report(&ay, Class::RateLimited, None));
    reg.observe(&report(&bx, Class::RateLimited, Some(secs(3600))));
    let now = Instant::now();
    let retry_in = |e: &Endpoint| reg.admit(e, &settings(), Instant::now());
    assert_eq!(
        retry_in(&ax),
        Err(Refusal::RateLimitCooldown { retry_in: secs(3) })
    );
    assert_eq!(
        retry_in(&ay),
        Err(Refusal::RateLimitCooldown { retry_in: secs(1) })
    );
    assert_eq!(
        retry_in(&bx),
        Err(Refusal::RateLimitCooldown { retry_in: secs(60) })
    );
    assert_eq!(
        reg.state("a/x", now).rate_limited_until,
        Some(now + secs(3))
    );
    // 429s are not failures: the breaker stays closed.
    observe_n(&reg, &ax, Class::RateLimited, 20);
    assert_eq!(reg.state("a/x", now).phase, Phase::Closed);
    assert_eq!(reg.state("a/x", now).consecutive_failures, 0);

    advance(secs(1)).await;
    assert_eq!(retry_in(&ay), Ok(Admission::Closed));
    assert_eq!(
        retry_in(&ax),
        Err(Refusal::RateLimitCooldown { retry_in: secs(2) })
    );
    advance(secs(2)).await;
    assert_eq!(retry_in(&ax), Ok(Admission::Closed));
    assert!(
        reg.state("a/x", Instant::now())
            .rate_limited_until
            .is_none()
    );
    advance(secs(57)).await;
    assert_eq!(retry_in(&bx), Ok(Admission::Closed));
}

#[tokio::test(start_paused = true)]
async fn credential_cooldown_covers_every_endpoint_of_the_provider() {
    let s = snapshot(json!({}));
    let (ax, ay, bx) = (ep(&s, "a/x"), ep(&s, "a/y"), ep(&s, "b/x"));
    let reg = BreakerRegistry::default();
    reg.observe(&report(&ax, Class::Credential, None));
    let cooled = Err(Refusal::CredentialCooldown {
        retry_in: secs(300),
    });
    assert_eq!(reg.admit(&ax, &settings(), Instant::now()), cooled);
    // a/y was never seen, yet it shares a's key.
    assert_eq!(reg.admit(&ay, &settings(), Instant::now()), cooled);
    assert_eq!(
        reg.admit(&bx, &settings(), Instant::now()),
        Ok(Admission::Closed)
    );
    let view = reg.state("a/y", Instant::now());
    assert_eq!(view.credential_until, Some(Instant::now() + secs(300)));
    // Not a breaker failure.
    assert_eq!(view.phase, Phase::Closed);
    assert_eq!(reg.state("a/x", Instant::now()).consecutive_failures, 0);

    advance(secs(299)).await;
    assert_eq!(
        reg.admit(&ay, &settings(), Instant::now()),
        Err(Refusal::CredentialCooldown { retry_in: secs(1) })
    );
    advance(secs(1)).await;
    assert_eq!(
        reg.admit(&ay, &settings(), Instant::now()),
        Ok(Admission::Closed)
    );
    assert!(reg.state("a/y", Instant::now()).credential_until.is_none());
}

#[tokio::test(start_paused = true)]
async fn credential_cooldown_length_is_configurable() {
    let s = snapshot(json!({}));
    let ax = ep(&s, "a/x");
    let reg = BreakerRegistry::new(RegistryConfig {
        credential: secs(30),
        ..RegistryConfig::default()
    });
    reg.observe(&report(&ax, Class::Credential, None));
    advance(secs(30)).await;
    assert_eq!(
        reg.admit(&ax, &settings(), Instant::now()),
        Ok(Admission::Closed)
    );
}

/// Opens a/x with the default streak of 5 and waits out the first open period.
async fn open_then_wait(reg: &BreakerRegistry, ax: &Endpoint) {
    observe_n(reg, ax, Class::ServerError, 5);
    assert_eq!(reg.state("a/x", Instant::now()).phase, Phase::Open);
    advance(secs(1)).await;
    assert_eq!(reg.state("a/x", Instant::now()).phase, Phase::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_lifecycle_through_the_registry() {
    let s = snapshot(json!({}));
    let ax = ep(&s, "a/x");
    let reg = BreakerRegistry::default();
    open_then_wait(&reg, &ax).await;

    assert_eq!(
        reg.admit(&ax, &settings(), Instant::now()),
        Ok(Admission::Probe)
    );
    assert!(reg.state("a/x", Instant::now()).probe_in_flight);
    assert!(matches!(
        reg.admit(&ax, &settings(), Instant::now()),
        Err(Refusal::BreakerOpen { .. })
    ));
    // Probe fails: open again for a doubled period (2 s, jittered into [1 s, 2 s]).
    advance(Duration::from_millis(200)).await;
    reg.observe(&report(&ax, Class::ServerError, None));
    let now = Instant::now();
    let until = reg.state("a/x", now).open_until.unwrap();
    assert!(
        until >= now + secs(1) && until <= now + secs(2),
        "{until:?}"
    );

    advance(secs(2)).await;
    assert_eq!(
        reg.admit(&ax, &settings(), Instant::now()),
        Ok(Admission::Probe)
    );
    // Probe answered 429: still open, cooling down, not doubled (the period stays ≤ 2 s).
    reg.observe(&report(&ax, Class::RateLimited, Some(secs(1))));
    let now = Instant::now();
    let view = reg.state("a/x", now);
    assert_eq!(view.phase, Phase::Open);
    assert!(view.open_until.unwrap() <= now + secs(2));
    assert_eq!(view.rate_limited_until, Some(now + secs(1)));

    advance(secs(2)).await;
    assert_eq!(
        reg.admit(&ax, &settings(), Instant::now()),
        Ok(Admission::Probe)
    );
    reg.observe(&report(&ax, Class::Success, None));
    let view = reg.state("a/x", Instant::now());
    assert_eq!(view.phase, Phase::Closed);
    assert_eq!(view.consecutive_failures, 0);
    assert_eq!(
        reg.admit(&ax, &settings(), Instant::now()),
        Ok(Admission::Closed)
    );
    // Reset: the next open lasts at most open_base again.
    observe_n(&reg, &ax, Class::ServerError, 5);
    let now = Instant::now();
    assert!(reg.state("a/x", now).open_until.unwrap() <= now + secs(1));
}

#[tokio::test(start_paused = true)]
async fn cancelled_probe_frees_the_slot() {
    let s = snapshot(json!({}));
    let ax = ep(&s, "a/x");
    let reg = BreakerRegistry::default();
    open_then_wait(&reg, &ax).await;
    assert_eq!(
        reg.admit(&ax, &settings(), Instant::now()),
        Ok(Admission::Probe)
    );
    reg.observe(&report(&ax, Class::Cancelled, None));
    assert_eq!(reg.state("a/x", Instant::now()).phase, Phase::HalfOpen);
    assert_eq!(
        reg.admit(&ax, &settings(), Instant::now()),
        Ok(Admission::Probe)
    );
}

#[tokio::test(start_paused = true)]
async fn stuck_probe_slot_is_freed_after_the_bound() {
    let s = snapshot(json!({}));
    let ax = ep(&s, "a/x");
    let reg = BreakerRegistry::new(RegistryConfig {
        probe_timeout: secs(20),
        ..RegistryConfig::default()
    });
    open_then_wait(&reg, &ax).await;
    assert_eq!(
        reg.admit(&ax, &settings(), Instant::now()),
        Ok(Admission::Probe)
    );
    advance(secs(19)).await;
    assert!(reg.admit(&ax, &settings(), Instant::now()).is_err());
    advance(secs(1)).await;
    assert_eq!(
        reg.admit(&ax, &settings(), Instant::now()),
        Ok(Admission::Probe)
    );
    // The default bound is 60 s.
    assert_eq!(RegistryConfig::default().probe_timeout, secs(60));
}

#[tokio::test(start_paused = true)]
async fn retain_keeps_unchanged_ids_and_drops_the_rest() {
    let s = snapshot(json!({}));
    let (ax, ay, bx) = (ep(&s, "a/x"), ep(&s, "a/y"), ep(&s, "b/x"));
    let reg = BreakerRegistry::default();
    observe_n(&reg, &ax, Class::ServerError, 5);
    observe_n(&reg, &ay, Class::ServerError, 3);
    reg.observe(&report(&bx, Class::Credential, None));
    let ids = |reg: &BreakerRegistry| -> Vec<String> {
        reg.all(Instant::now())
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect()
    };
    assert_eq!(ids(&reg), ["a/x", "a/y", "b/x"]);

    reg.retain(&|id| id != "a/y");
    assert_eq!(ids(&reg), ["a/x", "b/x"]);
    let now = Instant::now();
    assert_eq!(reg.state("a/x", now).phase, Phase::Open);
    assert!(reg.state("b/x", now).credential_until.is_some());
    // A removed id that comes back starts afresh.
    assert_eq!(reg.state("a/y", now).consecutive_failures, 0);
    observe_n(&reg, &ay, Class::ServerError, 1);
    assert_eq!(reg.state("a/y", now).consecutive_failures, 1);

    // Dropping b's only endpoint drops b's credential cooldown with it.
    reg.retain(&|id| id.starts_with("a/"));
    assert_eq!(ids(&reg), ["a/x", "a/y"]);
    assert_eq!(
        reg.admit(&bx, &settings(), Instant::now()),
        Ok(Admission::Closed)
    );
    // Keeping everything changes nothing.
    reg.retain(&|_| true);
    assert_eq!(reg.state("a/x", Instant::now()).phase, Phase::Open);
    reg.retain(&|_| false);
    assert!(reg.all(Instant::now()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn unknown_endpoint_state_is_closed() {
    let reg = BreakerRegistry::default();
    let view = reg.state("nobody/none", Instant::now());
    assert_eq!(view.phase, Phase::Closed);
    assert_eq!(view.phase.as_str(), "closed");
    assert_eq!(view.requests, 0);
    assert!(view.open_until.is_none() && view.credential_until.is_none());
}

/// How a test's inner service answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 with a body already in memory.
    Full,
    /// 200 with a stream that stays open.
    Stream,
    /// An error.
    Fail,
}

/// A service that counts its calls and answers as told.
fn answering(
    calls: Arc<AtomicUsize>,
    answer: Answer,
) -> impl Service<
    Request<()>,
    Response = Response<ProxyBody>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<ProxyBody>, BoxError>>,
> + Clone {
    service_fn(move |_req: Request<()>| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            match answer {
                Answer::Full => Ok(Response::new(ProxyBody::full("ok"))),
                Answer::Stream => Ok(Response::new(ProxyBody::events(Endless))),
                Answer::Fail => Err::<_, BoxError>("upstream refused".into()),
            }
        }
    })
}

/// One attempt at endpoint `id` through `svc`.
async fn send<S>(svc: &mut S, s: &Arc<Snapshot>, id: &str) -> Result<Response<ProxyBody>, BoxError>
where
    S: Service<Request<()>, Response = Response<ProxyBody>, Error = BoxError>,
{
    svc.ready().await?.call(attempt(s, id)).await
}

fn attempt(s: &Arc<Snapshot>, id: &str) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(Arc::clone(s));
    req.extensions_mut().insert(ep(s, id));
    req
}

#[tokio::test(start_paused = true)]
async fn layer_refuses_without_calling_inward() {
    let s = snapshot(json!({ "consecutive_failures": 2, "open_base": "3s", "open_max": "3s" }));
    let ax = ep(&s, "a/x");
    let reg = Arc::new(BreakerRegistry::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc =
        BreakerLayer::new(Arc::clone(&reg)).layer(answering(Arc::clone(&calls), Answer::Full));

    // First attempt passes and teaches the registry the policy's thresholds.
    let res = send(&mut svc, &s, "a/x").await;
    assert_eq!(res.unwrap().body().as_full(), Some(&b"ok"[..]));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Two failures open it under the policy's threshold of 2, not the default 5.
    observe_n(&reg, &ax, Class::ServerError, 2);
    let err = send(&mut svc, &s, "a/x").await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "inner must not be called");
    let f = Failure::find(&*err).unwrap().get();
    assert_eq!(f.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(f.error_type(), "service_unavailable");
    assert_eq!(f.code(), "breaker_open");
    assert!(f.skipped());
    assert!(f.class().is_none());
    let retry = f.retry_after().unwrap();
    assert!(
        retry >= Duration::from_millis(1500) && retry <= secs(3),
        "{retry:?}"
    );
    assert_eq!(f.metadata().unwrap()["endpoint"], "a/x");
    assert!(err.to_string().contains("a/x"), "{err}");

    // Other endpoints still pass.
    let res = send(&mut svc, &s, "b/x").await;
    assert!(res.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // After the open period the layer lets exactly one probe through.
    advance(secs(3)).await;
    assert!(send(&mut svc, &s, "a/x").await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(send(&mut svc, &s, "a/x").await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn layer_refuses_cooldowns_with_their_codes() {
    let s = snapshot(json!({}));
    let reg = Arc::new(BreakerRegistry::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc =
        BreakerLayer::new(Arc::clone(&reg)).layer(answering(Arc::clone(&calls), Answer::Full));
    reg.observe(&report(&ep(&s, "a/x"), Class::RateLimited, Some(secs(4))));
    reg.observe(&report(&ep(&s, "b/x"), Class::Credential, None));

    let err = send(&mut svc, &s, "a/x").await.unwrap_err();
    let f = Failure::find(&*err).unwrap().get();
    assert_eq!(f.code(), "rate_limit_cooldown");
    assert_eq!(f.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(f.retry_after(), Some(secs(4)));
    assert!(f.skipped());

    let err = send(&mut svc, &s, "b/x").await.unwrap_err();
    let f = Failure::find(&*err).unwrap().get();
    assert_eq!(f.code(), "credential_cooldown");
    assert_eq!(f.error_type(), "service_unavailable");
    assert_eq!(f.retry_after(), Some(secs(300)));
    assert_eq!(f.metadata().unwrap()["provider"], "b");
    assert!(f.class().is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // a/y is another endpoint of a: unaffected by a/x's rate limit.
    assert!(send(&mut svc, &s, "a/y").await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn layer_passes_requests_through_to_the_inner_service() {
    let s = snapshot(json!({}));
    let reg = Arc::new(BreakerRegistry::default());
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<ProxyBody>>();
    let mut svc = BreakerLayer::new(reg).layer(mock);

    handle.allow(1);
    let fut = svc.ready().await.unwrap().call(attempt(&s, "a/x"));
    let (req, send) = handle.next_request().await.unwrap();
    // The request reaches the inner service with its extensions intact.
    assert_eq!(
        req.extensions().get::<Arc<Endpoint>>().unwrap().id.as_ref(),
        "a/x"
    );
    send.send_response(Response::new(ProxyBody::full("upstream")));
    assert_eq!(fut.await.unwrap().body().as_full(), Some(&b"upstream"[..]));

    // Inner errors are passed outwards unchanged.
    handle.allow(1);
    let fut = svc.ready().await.unwrap().call(attempt(&s, "a/x"));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("inner broke");
    assert_eq!(fut.await.unwrap_err().to_string(), "inner broke");
}

#[tokio::test(start_paused = true)]
async fn request_without_endpoint_passes_through() {
    let reg = Arc::new(BreakerRegistry::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc =
        BreakerLayer::new(Arc::clone(&reg)).layer(answering(Arc::clone(&calls), Answer::Full));
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .is_ok()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(reg.all(Instant::now()).is_empty());
}

#[test]
fn refusal_errors_name_what_they_refuse() {
    let s = snapshot(json!({}));
    let ax = ep(&s, "a/x");
    let cases = [
        (
            Refusal::BreakerOpen { retry_in: secs(2) },
            "breaker_open",
            "a/x",
        ),
        (
            Refusal::RateLimitCooldown { retry_in: secs(2) },
            "rate_limit_cooldown",
            "a/x",
        ),
        (
            Refusal::CredentialCooldown { retry_in: secs(2) },
            "credential_cooldown",
            "'a'",
        ),
    ];
    for (refusal, code, names) in cases {
        assert_eq!(refusal.retry_in(), secs(2));
        let err = refusal_error(refusal, &ax);
        let f = Failure::find(&*err).unwrap().get();
        assert_eq!(f.code(), code);
        assert_eq!(f.metadata().unwrap()["retry_in_ms"], 2000);
        assert!(err.to_string().contains(names), "{err}");
    }
}

#[test]
fn admissions_from_many_threads_take_one_probe() {
    let s = snapshot(json!({}));
    let ax = ep(&s, "a/x");
    let reg = Arc::new(BreakerRegistry::default());
    let t0 = Instant::now();
    for _ in 0..5 {
        let mut r = report(&ax, Class::ServerError, None);
        r.sent_at = t0;
        r.ended_at = t0;
        reg.observe(&r);
    }
    let later = t0 + secs(2);
    let probes: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let reg = Arc::clone(&reg);
                let ax = Arc::clone(&ax);
                scope.spawn(move || {
                    (0..100)
                        .filter(|_| reg.admit(&ax, &settings(), later) == Ok(Admission::Probe))
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(probes, 1);
}

/// A stream that never sends: an attempt in flight for as long as its body is kept.
struct Endless;

impl EventSource for Endless {
    fn poll_event(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Event, BoxError>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_at_its_in_flight_limit_sheds_the_next_attempt_until_a_stream_ends() {
    let s = snapshot_with(json!({ "limits": { "max_in_flight_per_endpoint": 2 } }));
    let reg = Arc::new(BreakerRegistry::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc =
        BreakerLayer::new(Arc::clone(&reg)).layer(answering(Arc::clone(&calls), Answer::Stream));
    let in_flight = |id: &str| reg.state(id, Instant::now()).in_flight;

    let first = send(&mut svc, &s, "a/x").await.unwrap();
    let second = send(&mut svc, &s, "a/x").await.unwrap();
    assert_eq!(in_flight("a/x"), 2);

    let err = send(&mut svc, &s, "a/x").await.unwrap_err();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a shed attempt must not call inward"
    );
    let f = Failure::find(&*err).unwrap().get();
    assert_eq!(f.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(f.code(), "endpoint_saturated");
    assert!(f.skipped() && f.class().is_none());
    assert_eq!(f.retry_after(), Some(secs(1)));
    assert_eq!(f.metadata().unwrap()["endpoint"], "a/x");
    assert!(err.to_string().contains("2 requests in flight"), "{err}");
    // The refusal gave its place back; the other endpoint has its own count.
    assert_eq!(in_flight("a/x"), 2);
    assert!(send(&mut svc, &s, "b/x").await.is_ok());

    // A stream that ends (its body dropped) makes room for one more.
    drop(first);
    assert_eq!(in_flight("a/x"), 1);
    let third = send(&mut svc, &s, "a/x").await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    drop((second, third));
    assert_eq!(in_flight("a/x"), 0);
}

#[tokio::test(start_paused = true)]
async fn bodies_in_memory_and_failed_calls_give_their_place_back_at_once() {
    let s = snapshot_with(json!({ "limits": { "max_in_flight_per_endpoint": 1 } }));
    let reg = Arc::new(BreakerRegistry::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut full =
        BreakerLayer::new(Arc::clone(&reg)).layer(answering(Arc::clone(&calls), Answer::Full));
    let mut failing =
        BreakerLayer::new(Arc::clone(&reg)).layer(answering(Arc::clone(&calls), Answer::Fail));
    for _ in 0..3 {
        let kept = send(&mut full, &s, "a/x").await;
        assert_eq!(kept.unwrap().body().as_full(), Some(&b"ok"[..]));
        assert!(
            send(&mut failing, &s, "a/x")
                .await
                .unwrap_err()
                .to_string()
                .contains("upstream refused")
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert_eq!(reg.state("a/x", Instant::now()).in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_shed_attempt_does_not_take_a_half_open_breakers_probe() {
    let s = snapshot(json!({}));
    let ax = ep(&s, "a/x");
    let reg = BreakerRegistry::default();
    let open = Settings {
        consecutive_failures: 1,
        open_base: secs(1),
        open_max: secs(1),
        ..settings()
    };
    let held = reg.admit_within(&ax, &open, 1, Instant::now()).unwrap();
    assert_eq!(held.0, Admission::Closed);
    observe_n(&reg, &ax, Class::ServerError, 1);
    assert_eq!(reg.state("a/x", Instant::now()).phase, Phase::Open);
    advance(secs(10)).await;
    assert!(matches!(
        reg.admit_within(&ax, &open, 1, Instant::now()),
        Err(Refusal::Saturated { limit: 1, .. })
    ));
    drop(held);
    let (admission, _permit) = reg.admit_within(&ax, &open, 1, Instant::now()).unwrap();
    assert_eq!(
        admission,
        Admission::Probe,
        "the probe slot was taken by a shed attempt"
    );
}
