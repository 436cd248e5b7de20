//! One endpoint's circuit: the pure state machine, driven by explicit instants so it can be
//! tested without HTTP or a clock.

use std::collections::VecDeque;
use std::time::Duration;

use switchyard_policy::Breaker as Settings;
use tokio::time::Instant;

/// The failure-rate window is kept as this many buckets (so its edge is precise to 1/20th of
/// the window): memory stays constant whatever the request rate.
const BUCKETS: u32 = 20;
/// Narrowest bucket, so that a tiny window cannot turn every report into a bucket.
const MIN_BUCKET: Duration = Duration::from_millis(10);
/// Hard cap on buckets; only reached right after the window was widened by a reload.
const MAX_BUCKETS: usize = 2 * BUCKETS as usize + 4;
/// Doubling stops growing the exponent here; `open_max` caps the duration long before.
const MAX_EXPONENT: u32 = 31;

/// Where a circuit stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Traffic flows; outcomes are counted.
    Closed,
    /// No traffic until the open period ends.
    Open,
    /// One probe at a time decides between closing and re-opening.
    HalfOpen,
}

impl Phase {
    /// The label used by `/admin/providers` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Why an attempt on an endpoint may go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The circuit is closed: ordinary traffic.
    Closed,
    /// The circuit is half-open and this attempt is its one probe.
    Probe,
}

/// Why an attempt on an endpoint must not be made now, and when trying again makes sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The circuit is open, or half-open with its probe still out.
    BreakerOpen { retry_in: Duration },
    /// The endpoint answered 429 and is cooling down.
    RateLimitCooldown { retry_in: Duration },
    /// The provider's key was rejected and is cooling down.
    CredentialCooldown { retry_in: Duration },
    /// The endpoint already has `limit` attempts in flight (`limits.max_in_flight_per_endpoint`):
    /// the attempt is shed rather than queued.
    Saturated { limit: u32, retry_in: Duration },
}

impl Refusal {
    /// How long until the refusal may lift.
    pub fn retry_in(&self) -> Duration {
        match *self {
            Self::BreakerOpen { retry_in }
            | Self::RateLimitCooldown { retry_in }
            | Self::CredentialCooldown { retry_in }
            | Self::Saturated { retry_in, .. } => retry_in,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// `probe` is when the probe in flight was admitted, if one is.
    HalfOpen {
        probe: Option<Instant>,
    },
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    start: Instant,
    ok: u32,
    failed: u32,
}

/// Outcome counts over the sliding `window`, in time buckets.
///
/// A bucket is dropped once its first report is `window` old, so reports count for between
/// `window - window/20` and `window`: the edge errs towards forgetting, never towards opening.
#[derive(Clone, Debug, Default)]
struct Window {
    buckets: VecDeque<Bucket>,
}

impl Window {
    fn record(&mut self, at: Instant, failed: bool, window: Duration) {
        self.prune(at, window);
        let width = (window / BUCKETS).max(MIN_BUCKET);
        // Reports arrive roughly in order; a late one joins the newest bucket.
        let fits = self.buckets.back().is_some_and(|b| at < b.start + width);
        if !fits {
            if self.buckets.len() >= MAX_BUCKETS {
                self.buckets.pop_front();
            }
            self.buckets.push_back(Bucket {
                start: at,
                ok: 0,
                failed: 0,
            });
        }
        if let Some(bucket) = self.buckets.back_mut() {
            if failed {
                bucket.failed = bucket.failed.saturating_add(1);
            } else {
                bucket.ok = bucket.ok.saturating_add(1);
            }
        }
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        while self
            .buckets
            .front()
            .is_some_and(|b| now.saturating_duration_since(b.start) >= window)
        {
            self.buckets.pop_front();
        }
    }

    /// (requests, failures) still inside the window at `now`.
    fn counts(&self, now: Instant, window: Duration) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|b| now.saturating_duration_since(b.start) < window)
            .fold((0u32, 0u32), |(n, f), b| {
                (
                    n.saturating_add(b.ok).saturating_add(b.failed),
                    f.saturating_add(b.failed),
                )
            })
    }

    fn clear(&mut self) {
        self.buckets.clear();
    }
}

/// A snapshot of one circuit for the admin endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CircuitView {
    pub phase: Phase,
    /// Failures in a row since the last success (as they stood when the circuit opened).
    pub consecutive_failures: u32,
    /// Counted outcomes inside the failure-rate window.
    pub requests: u32,
    /// Failed fraction of `requests`, 0 when there are none.
    pub failure_rate: f64,
    /// End of the open period, while open.
    pub open_until: Option<Instant>,
    /// Whether a half-open circuit has its probe out.
    pub probe_in_flight: bool,
    /// End of the rate-limit cooldown, while it lasts.
    pub rate_limited_until: Option<Instant>,
}

/// One endpoint's circuit breaker and rate-limit cooldown.
///
/// - **Closed**: every success and failure is counted. It opens when `consecutive_failures`
///   failures come in a row, or when at least `min_requests` outcomes lie in the last `window`
///   and the failed fraction reaches `failure_rate`.
/// - **Open** for a jittered period: the n-th open in a row (counting from 0) lasts a random
///   time in `[d/2, d]` where `d = min(open_base * 2^n, open_max)` — never near zero, so a
///   broken endpoint is not hammered, and spread so that replicas do not probe in lockstep.
/// - **Half-open** once the period ends: one probe at a time. Its success closes the circuit
///   and resets the doubling; its failure re-opens it for the next, doubled period; a 429
///   re-opens it for the same period (the endpoint is up but busy). A probe whose outcome never
///   comes back stops holding the slot after `probe_timeout`.
///
/// An outcome of an attempt sent before the circuit last opened is stale: it says nothing about
/// the endpoint since then and is ignored (it can neither close a half-open circuit nor
/// re-open a recovered one). Thresholds are read at each call, so a reload that changes them
/// applies to existing state.
#[derive(Clone, Debug)]
pub struct Circuit {
    state: State,
    consecutive: u32,
    window: Window,
    /// Doubling exponent of the current (or last) open period.
    exponent: u32,
    /// When the circuit last opened: attempts sent earlier are stale.
    opened_at: Option<Instant>,
    rate_until: Option<Instant>,
}

impl Default for Circuit {
    fn default() -> Self {
        Self::new()
    }
}

impl Circuit {
    /// A closed circuit with nothing counted.
    pub fn new() -> Self {
        Self {
            state: State::Closed,
            consecutive: 0,
            window: Window::default(),
            exponent: 0,
            opened_at: None,
            rate_until: None,
        }
    }

    /// The phase at `now` (an open circuit whose period has ended reads as half-open).
    pub fn phase(&self, now: Instant) -> Phase {
        match self.state {
            State::Closed => Phase::Closed,
            State::Open { until } if now < until => Phase::Open,
            State::Open { .. } | State::HalfOpen { .. } => Phase::HalfOpen,
        }
    }

    /// May an attempt go to this endpoint at `now`? A half-open admission takes the probe slot.
    pub fn admit(
        &mut self,
        now: Instant,
        settings: &Settings,
        probe_timeout: Duration,
    ) -> Result<Admission, Refusal> {
        if let State::Open { until } = self.state {
            if now < until {
                let lifts = self.rate_until.map_or(until, |r| r.max(until));
                return Err(Refusal::BreakerOpen {
                    retry_in: lifts - now,
                });
            }
            self.state = State::HalfOpen { probe: None };
        }
        let probing = match self.state {
            State::HalfOpen { probe: Some(since) } => {
                if now.saturating_duration_since(since) < probe_timeout {
                    // The probe usually answers well within one base open period.
                    return Err(Refusal::BreakerOpen {
                        retry_in: settings.open_base.max(Duration::from_millis(1)),
                    });
                }
                true
            }
            State::HalfOpen { probe: None } => true,
            State::Closed | State::Open { .. } => false,
        };
        if let Some(until) = self.rate_until
            && now < until
        {
            return Err(Refusal::RateLimitCooldown {
                retry_in: until - now,
            });
        }
        if probing {
            self.state = State::HalfOpen { probe: Some(now) };
            Ok(Admission::Probe)
        } else {
            Ok(Admission::Closed)
        }
    }

    /// A successful attempt sent at `sent_at`, finished at `at`.
    pub fn on_success(&mut self, sent_at: Instant, at: Instant, settings: &Settings) {
        if self.is_stale(sent_at) {
            return;
        }
        match self.state {
            State::Closed => {
                self.consecutive = 0;
                self.window.record(at, false, settings.window);
            }
            State::HalfOpen { .. } => self.close(),
            State::Open { .. } => {}
        }
    }

    /// A failed attempt; `jitter` in `[0, 1]` places the open period within its bounds.
    pub fn on_failure(&mut self, sent_at: Instant, at: Instant, settings: &Settings, jitter: f64) {
        if self.is_stale(sent_at) {
            return;
        }
        match self.state {
            State::Closed => {
                self.consecutive = self.consecutive.saturating_add(1);
                self.window.record(at, true, settings.window);
                if self.should_open(at, settings) {
                    self.exponent = 0;
                    self.open(at, settings, jitter);
                }
            }
            State::HalfOpen { .. } => {
                self.exponent = self.exponent.saturating_add(1).min(MAX_EXPONENT);
                self.open(at, settings, jitter);
            }
            State::Open { .. } => {}
        }
    }

    /// A 429: the endpoint cools down until `until`; a probe answered so re-opens the circuit
    /// for the same period as before. Never counts as a failure.
    pub fn on_rate_limited(
        &mut self,
        sent_at: Instant,
        at: Instant,
        until: Instant,
        settings: &Settings,
        jitter: f64,
    ) {
        self.rate_until = Some(self.rate_until.map_or(until, |r| r.max(until)));
        if !self.is_stale(sent_at) && matches!(self.state, State::HalfOpen { .. }) {
            self.open(at, settings, jitter);
        }
    }

    /// An outcome that says nothing about the endpoint (client error, cancellation, a
    /// credential failure handled per provider): it only frees the probe slot.
    pub fn on_ignored(&mut self, sent_at: Instant) {
        if !self.is_stale(sent_at)
            && let State::HalfOpen { probe: Some(_) } = self.state
        {
            self.state = State::HalfOpen { probe: None };
        }
    }

    /// How the circuit looks at `now`.
    pub fn view(&self, now: Instant, settings: &Settings) -> CircuitView {
        let (requests, failed) = self.window.counts(now, settings.window);
        let phase = self.phase(now);
        CircuitView {
            phase,
            consecutive_failures: self.consecutive,
            requests,
            failure_rate: if requests == 0 {
                0.0
            } else {
                f64::from(failed) / f64::from(requests)
            },
            open_until: match self.state {
                State::Open { until } if now < until => Some(until),
                _ => None,
            },
            probe_in_flight: matches!(self.state, State::HalfOpen { probe: Some(_) }),
            rate_limited_until: self.rate_until.filter(|u| now < *u),
        }
    }

    fn is_stale(&self, sent_at: Instant) -> bool {
        self.opened_at.is_some_and(|o| sent_at < o)
    }

    fn should_open(&self, now: Instant, s: &Settings) -> bool {
        if s.consecutive_failures > 0 && self.consecutive >= s.consecutive_failures {
            return true;
        }
        let (requests, failed) = self.window.counts(now, s.window);
        requests > 0
            && requests >= s.min_requests
            && f64::from(failed) >= s.failure_rate * f64::from(requests)
    }

    fn open(&mut self, at: Instant, settings: &Settings, jitter: f64) {
        let period = open_period(settings, self.exponent, jitter);
        self.state = State::Open { until: at + period };
        self.opened_at = Some(at);
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.exponent = 0;
        self.consecutive = 0;
        // The failures that opened the circuit are history; counting them again would re-open
        // a recovered endpoint on its first new failure.
        self.window.clear();
    }
}

/// The `exponent`-th open period: `d = min(open_base * 2^exponent, open_max)`, placed in
/// `[d/2, d]` by `jitter` (clamped to `[0, 1]`).
pub fn open_period(settings: &Settings, exponent: u32, jitter: f64) -> Duration {
    let factor = 1u32 << exponent.min(MAX_EXPONENT);
    let full = settings
        .open_base
        .saturating_mul(factor)
        .min(settings.open_max);
    let half = full / 2;
    let jitter = if jitter.is_nan() {
        1.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    half + (full - half).mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PROBE: Duration = Duration::from_secs(60);

    fn settings() -> Settings {
        Settings::default()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Fails `n` attempts sent and finished at `at`.
    fn fail_n(c: &mut Circuit, n: u32, at: Instant, s: &Settings) {
        for _ in 0..n {
            c.on_failure(at, at, s, 1.0);
        }
    }

    fn opened_until(c: &Circuit, now: Instant) -> Instant {
        c.view(now, &settings()).open_until.expect("open")
    }

    #[test]
    fn opens_after_the_configured_streak_only() {
        let s = settings();
        let t = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 4, t, &s);
        assert_eq!(c.phase(t), Phase::Closed);
        assert_eq!(c.admit(t, &s, PROBE), Ok(Admission::Closed));
        // A success breaks the streak.
        c.on_success(t, t, &s);
        fail_n(&mut c, 4, t, &s);
        assert_eq!(c.phase(t), Phase::Closed);
        assert_eq!(c.view(t, &s).consecutive_failures, 4);
        c.on_failure(t, t, &s, 1.0);
        assert_eq!(c.phase(t), Phase::Open);
        assert_eq!(c.view(t, &s).consecutive_failures, 5);
        assert_eq!(
            c.admit(t, &s, PROBE),
            Err(Refusal::BreakerOpen { retry_in: secs(1) })
        );
    }

    #[test]
    fn opens_on_failure_rate_once_min_requests_are_seen() {
        let s = Settings {
            consecutive_failures: 100,
            ..settings()
        };
        let t = Instant::now();
        let mut c = Circuit::new();
        // 9 failures alternating with 10 successes: 19 requests, below min_requests (20).
        for _ in 0..9 {
            c.on_success(t, t, &s);
            c.on_failure(t, t, &s, 1.0);
        }
        c.on_success(t, t, &s);
        assert_eq!(c.phase(t), Phase::Closed);
        let v = c.view(t, &s);
        assert_eq!(v.requests, 19);
        assert!((v.failure_rate - 9.0 / 19.0).abs() < 1e-9);
        // The 20th request is the 10th failure: 50% over 20 requests.
        c.on_failure(t, t, &s, 1.0);
        assert_eq!(c.phase(t), Phase::Open);
    }

    #[test]
    fn failure_rate_below_threshold_keeps_closed() {
        let s = Settings {
            consecutive_failures: 100,
            ..settings()
        };
        let t = Instant::now();
        let mut c = Circuit::new();
        for _ in 0..30 {
            c.on_success(t, t, &s);
            c.on_success(t, t, &s);
            c.on_failure(t, t, &s, 1.0);
        }
        assert_eq!(c.phase(t), Phase::Closed);
        assert_eq!(c.view(t, &s).requests, 90);
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let s = Settings {
            consecutive_failures: 100,
            ..settings()
        };
        let t0 = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 15, t0, &s);
        // 61 s later those 15 failures are out of the 60 s window: 6 new failures and
        // 14 successes are 30%, not the 21 / 35 = 60% they would be with the old ones.
        let t1 = t0 + secs(61);
        for _ in 0..14 {
            c.on_success(t1, t1, &s);
        }
        fail_n(&mut c, 6, t1, &s);
        assert_eq!(c.view(t1, &s).requests, 20);
        assert_eq!(c.phase(t1), Phase::Closed);
    }

    #[test]
    fn window_memory_is_bounded() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new();
        for i in 0..10_000u64 {
            let at = t0 + ms(i * 7);
            c.on_success(at, at, &s);
        }
        assert!(c.window.buckets.len() <= MAX_BUCKETS);
        let end = t0 + ms(9_999 * 7);
        // Only the last 60 s (within one bucket's precision) are counted.
        let n = c.view(end, &s).requests;
        assert!((8_000..=8_572).contains(&n), "{n}");
    }

    #[test]
    fn changed_thresholds_apply_to_existing_state() {
        let t = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 3, t, &settings());
        assert_eq!(c.phase(t), Phase::Closed);
        let strict = Settings {
            consecutive_failures: 4,
            ..settings()
        };
        c.on_failure(t, t, &strict, 1.0);
        assert_eq!(c.phase(t), Phase::Open);
    }

    #[test]
    fn open_period_doubles_with_jitter_within_bounds_and_cap() {
        let s = settings();
        for (exp, full) in [
            (0, 1000),
            (1, 2000),
            (2, 4000),
            (3, 8000),
            (4, 8000),
            (40, 8000),
        ] {
            assert_eq!(open_period(&s, exp, 1.0), ms(full), "exponent {exp}");
            assert_eq!(open_period(&s, exp, 0.0), ms(full / 2), "exponent {exp}");
            let mid = open_period(&s, exp, 0.5);
            assert!(
                mid > ms(full / 2) && mid < ms(full),
                "exponent {exp}: {mid:?}"
            );
        }
        // Out-of-range jitter is clamped, never outside [d/2, d].
        assert_eq!(open_period(&s, 0, 7.0), secs(1));
        assert_eq!(open_period(&s, 0, -1.0), ms(500));
        assert_eq!(open_period(&s, 0, f64::NAN), secs(1));
        // Random jitter stays in bounds.
        for _ in 0..1000 {
            let d = open_period(&s, 2, fastrand::f64());
            assert!(d >= secs(2) && d <= secs(4), "{d:?}");
        }
    }

    #[test]
    fn half_open_admits_a_single_probe() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 5, t0, &s);
        let until = opened_until(&c, t0);
        assert_eq!(until, t0 + secs(1));
        // Still open just before the end.
        assert!(matches!(
            c.admit(t0 + ms(999), &s, PROBE),
            Err(Refusal::BreakerOpen { retry_in }) if retry_in == ms(1)
        ));
        let t1 = t0 + secs(1);
        assert_eq!(c.phase(t1), Phase::HalfOpen);
        assert_eq!(c.admit(t1, &s, PROBE), Ok(Admission::Probe));
        assert!(c.view(t1, &s).probe_in_flight);
        // A second, concurrent admission is refused.
        assert_eq!(
            c.admit(t1 + ms(10), &s, PROBE),
            Err(Refusal::BreakerOpen {
                retry_in: s.open_base
            })
        );
    }

    #[test]
    fn probe_success_closes_and_resets_the_doubling() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 5, t0, &s);
        // Two failed probes: open periods 1 s, then 2 s, then 4 s.
        let mut t = t0 + secs(1);
        for expected in [2, 4] {
            assert_eq!(c.admit(t, &s, PROBE), Ok(Admission::Probe));
            c.on_failure(t, t, &s, 1.0);
            assert_eq!(opened_until(&c, t), t + secs(expected));
            t += secs(expected);
        }
        assert_eq!(c.admit(t, &s, PROBE), Ok(Admission::Probe));
        c.on_success(t, t + ms(300), &s);
        let t = t + ms(300);
        assert_eq!(c.phase(t), Phase::Closed);
        let v = c.view(t, &s);
        assert_eq!(v.consecutive_failures, 0);
        assert_eq!(v.requests, 0);
        assert_eq!(c.admit(t, &s, PROBE), Ok(Admission::Closed));
        assert_eq!(c.admit(t, &s, PROBE), Ok(Admission::Closed));
        // The next open starts from open_base again.
        fail_n(&mut c, 5, t, &s);
        assert_eq!(opened_until(&c, t), t + secs(1));
    }

    #[test]
    fn probe_failure_reopens_doubled() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 5, t0, &s);
        let t1 = t0 + secs(1);
        assert_eq!(c.admit(t1, &s, PROBE), Ok(Admission::Probe));
        c.on_failure(t1, t1 + ms(100), &s, 0.0);
        let t2 = t1 + ms(100);
        assert_eq!(c.phase(t2), Phase::Open);
        // Doubled to 2 s, jitter 0 puts it at the lower bound d/2.
        assert_eq!(opened_until(&c, t2), t2 + secs(1));
        assert!(!c.view(t2, &s).probe_in_flight);
        assert!(c.admit(t2 + ms(999), &s, PROBE).is_err());
        assert_eq!(c.admit(t2 + secs(1), &s, PROBE), Ok(Admission::Probe));
    }

    #[test]
    fn rate_limited_probe_keeps_it_open_without_doubling() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 5, t0, &s);
        let t1 = t0 + secs(1);
        assert_eq!(c.admit(t1, &s, PROBE), Ok(Admission::Probe));
        c.on_rate_limited(t1, t1, t1 + ms(500), &s, 1.0);
        assert_eq!(c.phase(t1), Phase::Open);
        assert_eq!(opened_until(&c, t1), t1 + secs(1));
        assert_eq!(c.view(t1, &s).rate_limited_until, Some(t1 + ms(500)));
        // Not a failure: the consecutive count did not move.
        assert_eq!(c.view(t1, &s).consecutive_failures, 5);
        // Open wins over the shorter cooldown; retry_in is when both have lifted.
        assert_eq!(
            c.admit(t1 + ms(100), &s, PROBE),
            Err(Refusal::BreakerOpen { retry_in: ms(900) })
        );
    }

    #[test]
    fn rate_limit_in_closed_is_a_cooldown_not_a_failure() {
        let s = settings();
        let t = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 4, t, &s);
        for _ in 0..10 {
            c.on_rate_limited(t, t, t + secs(3), &s, 1.0);
        }
        assert_eq!(c.phase(t), Phase::Closed);
        assert_eq!(c.view(t, &s).consecutive_failures, 4);
        assert_eq!(c.view(t, &s).requests, 4);
        assert_eq!(
            c.admit(t + secs(1), &s, PROBE),
            Err(Refusal::RateLimitCooldown { retry_in: secs(2) })
        );
        // A shorter, later cooldown does not shorten the running one.
        c.on_rate_limited(t, t, t + secs(1), &s, 1.0);
        assert_eq!(c.view(t, &s).rate_limited_until, Some(t + secs(3)));
        assert_eq!(c.admit(t + secs(3), &s, PROBE), Ok(Admission::Closed));
    }

    #[test]
    fn cooldown_in_half_open_does_not_take_the_probe_slot() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 5, t0, &s);
        // A stale 429 (sent before the open) still sets a cooldown.
        c.on_rate_limited(t0 - ms(1), t0 + ms(200), t0 + secs(3), &s, 1.0);
        let t1 = t0 + secs(1);
        assert_eq!(
            c.admit(t1, &s, PROBE),
            Err(Refusal::RateLimitCooldown { retry_in: secs(2) })
        );
        assert!(!c.view(t1, &s).probe_in_flight);
        assert_eq!(c.admit(t0 + secs(3), &s, PROBE), Ok(Admission::Probe));
    }

    #[test]
    fn stuck_probe_frees_its_slot_after_the_bound() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 5, t0, &s);
        let t1 = t0 + secs(1);
        assert_eq!(c.admit(t1, &s, PROBE), Ok(Admission::Probe));
        assert!(c.admit(t1 + secs(59), &s, PROBE).is_err());
        assert_eq!(c.admit(t1 + secs(60), &s, PROBE), Ok(Admission::Probe));
        assert!(c.admit(t1 + secs(61), &s, PROBE).is_err());
    }

    #[test]
    fn ignored_probe_outcome_frees_the_slot_without_deciding() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new();
        fail_n(&mut c, 5, t0, &s);
        let t1 = t0 + secs(1);
        assert_eq!(c.admit(t1, &s, PROBE), Ok(Admission::Probe));
        c.on_ignored(t1);
        assert_eq!(c.phase(t1), Phase::HalfOpen);
        assert!(!c.view(t1, &s).probe_in_flight);
        assert_eq!(c.admit(t1, &s, PROBE), Ok(Admission::Probe));
    }

    #[test]
    fn stale_outcomes_neither_close_nor_reopen() {
        let s = settings();
        let t0 = Instant::now();
        let mut c = Circuit::new();
        let before = t0 - ms(500);
        fail_n(&mut c, 5, t0, &s);
        // An attempt sent before the open succeeds while half-open: not the probe.
        let t1 = t0 + secs(1);
        assert_eq!(c.admit(t1, &s, PROBE), Ok(Admission::Probe));
        c.on_success(before, t1, &s);
        c.on_ignored(before);
        assert_eq!(c.phase(t1), Phase::HalfOpen);
        assert!(c.view(t1, &s).probe_in_flight);
        // The real probe succeeds; late failures from before the open change nothing.
        c.on_success(t1, t1, &s);
        assert_eq!(c.phase(t1), Phase::Closed);
        fail_n(&mut c, 10, before, &s);
        assert_eq!(c.phase(t1), Phase::Closed);
        assert_eq!(c.view(t1, &s).consecutive_failures, 0);
        // Outcomes while open are stale by construction.
        fail_n(&mut c, 5, t1, &s);
        let t2 = t1 + ms(10);
        let until = opened_until(&c, t2);
        c.on_success(t1 - ms(1), t2, &s);
        assert_eq!(opened_until(&c, t2), until);
    }
}
