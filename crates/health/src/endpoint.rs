use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::HealthConfig;
use crate::stats::{Summary, summarize, within};

/// How an attempt ended, as far as health is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered.
    Success,
    /// The endpoint failed (connect error, 5xx, timeout, cut stream, ...).
    Failure,
    /// Says nothing about the endpoint (client error, cancellation): counts nowhere.
    Neutral,
}

/// One finished upstream attempt.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When the attempt ended.
    pub at: Instant,
    pub outcome: Outcome,
    /// From sending the request to the first output event; `None` when not streamed.
    pub ttft: Option<Duration>,
    /// From sending the request to the end of the response.
    pub latency: Duration,
    /// Output (completion) tokens, reported or estimated.
    pub output_tokens: Option<u64>,
}

/// Live statistics of one endpoint; shared as `Arc<EndpointHealth>` between the registry and
/// every attempt in flight.
pub struct EndpointHealth {
    id: Arc<str>,
    config: Arc<HealthConfig>,
    state: Mutex<State>,
    summary: ArcSwap<Summary>,
    /// Origin of `refreshed_at`, which must be an atomic integer for the lock-free staleness
    /// check in [`EndpointHealth::summary`].
    base: Instant,
    /// When the summary was last computed: nanoseconds since `base` plus one; 0 = never.
    refreshed_at: AtomicU64,
    /// The endpoint is in outage at every instant before this one, as signed nanoseconds
    /// since `base` (`stamp`); `i64::MIN` = at none. Computed by `record`, so
    /// [`EndpointHealth::recent_outage`] needs no lock.
    outage_until: AtomicI64,
    /// From this instant on the samples may describe an outage again after a gap (older
    /// successes aging out can raise the failure ratio), which `outage_until` cannot express:
    /// asked about such an instant, `recent_outage` counts the samples. `i64::MAX` = never.
    outage_recheck: AtomicI64,
}

struct State {
    /// Attempts in the order they were recorded; Neutral ones are never stored.
    ring: VecDeque<Sample>,
    /// How many samples in `ring` are failures.
    failures_in_ring: usize,
    consecutive_failures: u32,
    last_failure: Option<Instant>,
    scratch: Vec<f64>,
    /// Reused by `outage_span`: each sample's expiry stamp and whether it failed.
    expiries: Vec<(i64, bool)>,
}

impl EndpointHealth {
    pub(crate) fn new(id: Arc<str>, config: Arc<HealthConfig>) -> Self {
        Self {
            id,
            config,
            state: Mutex::new(State {
                ring: VecDeque::new(),
                failures_in_ring: 0,
                consecutive_failures: 0,
                last_failure: None,
                scratch: Vec::new(),
                expiries: Vec::new(),
            }),
            summary: ArcSwap::from_pointee(Summary::default()),
            base: Instant::now(),
            refreshed_at: AtomicU64::new(0),
            outage_until: AtomicI64::new(i64::MIN),
            outage_recheck: AtomicI64::new(i64::MAX),
        }
    }

    /// The endpoint id this belongs to.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records a finished attempt. A failure refreshes the summary at once, so routing sees it
    /// on the next request; successes refresh it at most every `refresh`.
    pub fn record(&self, sample: Sample) {
        if sample.outcome == Outcome::Neutral {
            return;
        }
        let cfg = &*self.config;
        let mut state = self.lock();
        let capacity = cfg.max_samples.max(1);
        // Samples this old count in no statistic; dropping them keeps idle endpoints small.
        let horizon = cfg.window.max(cfg.outage_window);
        while state.ring.len() >= capacity
            || state
                .ring
                .front()
                .is_some_and(|s| !within(sample.at, s.at, horizon))
        {
            if let Some(old) = state.ring.pop_front()
                && old.outcome == Outcome::Failure
            {
                state.failures_in_ring = state.failures_in_ring.saturating_sub(1);
            }
        }
        state.ring.push_back(sample);
        match sample.outcome {
            Outcome::Success => state.consecutive_failures = 0,
            Outcome::Failure => {
                state.failures_in_ring += 1;
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                state.last_failure = Some(sample.at);
            }
            Outcome::Neutral => {}
        }
        // The common case, a success with no failure left in the ring, is answered in O(1):
        // the streak was just broken and a ratio of zero failures is no outage (unless the
        // threshold itself is zero), which is what `outage_span` would find in O(n log n).
        let (until, recheck) = if sample.outcome == Outcome::Success
            && state.failures_in_ring == 0
            && cfg.outage_failure_ratio > 0.0
        {
            (i64::MIN, i64::MAX)
        } else {
            self.outage_span(&mut state)
        };
        // Recheck first: a reader that sees the new `until` then sees the new `recheck` too.
        // One racing this record may still pair the old `until` with the new `recheck`; that
        // can only turn its one answer into a `false` that the next call corrects.
        self.outage_recheck.store(recheck, Ordering::Release);
        self.outage_until.store(until, Ordering::Release);
        // Read the clock under the lock so summaries are published in the order computed.
        let now = Instant::now();
        if sample.outcome == Outcome::Failure || self.is_stale(now) {
            self.refresh(&mut state, now);
        }
    }

    /// The cached summary: an `arc-swap` load, at most `refresh` old. When it is stale and no
    /// one is recording, the reader recomputes it (so old samples leave the window even on an
    /// idle endpoint); it never waits for a recorder, and then returns the previous summary.
    pub fn summary(&self) -> Arc<Summary> {
        let now = Instant::now();
        if self.is_stale(now)
            && let Ok(mut state) = self.state.try_lock()
            && self.is_stale(now)
        {
            self.refresh(&mut state, now);
        }
        self.summary.load_full()
    }

    /// Whether the endpoint had a significant outage in the `outage_window` before `now`:
    /// `outage_consecutive` failures in a row, the last of them within the window, or at least
    /// `outage_min_attempts` attempts within the window of which at least
    /// `outage_failure_ratio` failed. Computed from the samples, not the cached summary.
    ///
    /// Lock-free: `record` precomputes until when the samples it leaves mean an outage, so this
    /// is one or two atomic loads and compares. Only an instant at which aging-out samples would start
    /// a new outage after a gap (rare: the old successes that diluted a burst of failures
    /// leave first) is answered by counting the samples under the lock.
    pub fn recent_outage(&self, now: Instant) -> bool {
        let at = stamp(self.base, now);
        if at < self.outage_until.load(Ordering::Acquire) {
            return true;
        }
        if at < self.outage_recheck.load(Ordering::Acquire) {
            return false;
        }
        count_outage(&self.config, &self.lock(), now)
    }

    /// The outage instants the samples in `state` describe, as `(until, recheck)`: an outage
    /// at every stamp before `until`, none from there to `recheck`, unknown from `recheck` on.
    ///
    /// A sample counts at `now` while `now < at + outage_window`, so as time passes samples
    /// leave in order of that expiry, whatever order they were recorded in. Walking them by
    /// expiry with running counts gives the ratio rule's verdict between consecutive expiries;
    /// the streak rule holds until the last failure expires.
    fn outage_span(&self, state: &mut State) -> (i64, i64) {
        let cfg = &*self.config;
        // No sample is ever within an empty window.
        if cfg.outage_window.is_zero() {
            return (i64::MIN, i64::MAX);
        }
        let window = i64::try_from(cfg.outage_window.as_nanos()).unwrap_or(i64::MAX);
        let expiry = |at: Instant| stamp(self.base, at).saturating_add(window);

        let mut until = match state.last_failure {
            Some(at)
                if cfg.outage_consecutive > 0
                    && state.consecutive_failures >= cfg.outage_consecutive =>
            {
                expiry(at)
            }
            _ => i64::MIN,
        };

        let State { ring, expiries, .. } = state;
        expiries.clear();
        expiries.extend(
            ring.iter()
                .map(|s| (expiry(s.at), s.outcome == Outcome::Failure)),
        );
        // Recorded in time order but for stragglers, so this is usually one linear pass.
        expiries.sort_unstable_by_key(|&(expires, _)| expires);

        let mut attempts = u32::try_from(expiries.len()).unwrap_or(u32::MAX);
        let mut failures =
            u32::try_from(expiries.iter().filter(|e| e.1).count()).unwrap_or(u32::MAX);
        // The segment [from, to) over which `attempts` and `failures` hold.
        let mut from = i64::MIN;
        let mut rest = expiries.as_slice();
        loop {
            let to = rest.first().map_or(i64::MAX, |e| e.0);
            if from < to && ratio_outage(cfg, attempts, failures) {
                if from > until {
                    return (until, from);
                }
                until = until.max(to);
            }
            let Some(&(expires, _)) = rest.first() else {
                return (until, i64::MAX);
            };
            while let Some((&(at, failed), tail)) = rest.split_first()
                && at == expires
            {
                attempts = attempts.saturating_sub(1);
                failures = failures.saturating_sub(u32::from(failed));
                rest = tail;
            }
            from = expires;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No section under this lock can leave the state half-updated, so a poisoned lock
        // (a panic elsewhere on that thread) still holds usable statistics.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_stale(&self, now: Instant) -> bool {
        match self.refreshed_at.load(Ordering::Relaxed) {
            0 => true,
            at => {
                let since = Duration::from_nanos(at - 1);
                now.saturating_duration_since(self.base) >= since + self.config.refresh
            }
        }
    }

    fn refresh(&self, state: &mut State, now: Instant) {
        let State {
            ring,
            consecutive_failures,
            scratch,
            ..
        } = state;
        let summary = summarize(
            ring,
            *consecutive_failures,
            now,
            self.config.window,
            scratch,
        );
        self.summary.store(Arc::new(summary));
        let nanos = now.saturating_duration_since(self.base).as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.refreshed_at.store(stamp, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn counted_outage(&self, now: Instant) -> bool {
        count_outage(&self.config, &self.lock(), now)
    }

    #[cfg(test)]
    pub(crate) fn recorded(&self) -> Vec<Sample> {
        self.lock().ring.iter().copied().collect()
    }
}

/// The outage verdict counted from the samples themselves: the definition that
/// `EndpointHealth::outage_span` precomputes.
fn count_outage(cfg: &HealthConfig, state: &State, now: Instant) -> bool {
    let streak = cfg.outage_consecutive > 0
        && state.consecutive_failures >= cfg.outage_consecutive
        && state
            .last_failure
            .is_some_and(|at| within(now, at, cfg.outage_window));
    if streak {
        return true;
    }
    let (mut attempts, mut failures) = (0u32, 0u32);
    for s in state
        .ring
        .iter()
        .filter(|s| within(now, s.at, cfg.outage_window))
    {
        attempts += 1;
        if s.outcome == Outcome::Failure {
            failures += 1;
        }
    }
    ratio_outage(cfg, attempts, failures)
}

/// The ratio rule on counts of attempts within the outage window.
fn ratio_outage(cfg: &HealthConfig, attempts: u32, failures: u32) -> bool {
    attempts > 0
        && attempts >= cfg.outage_min_attempts
        && f64::from(failures) / f64::from(attempts) >= cfg.outage_failure_ratio
}

/// `at` as signed nanoseconds since `base`, saturating: instants before `base` are negative,
/// so an outage question about any instant compares exactly.
fn stamp(base: Instant, at: Instant) -> i64 {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    match at.checked_duration_since(base) {
        Some(after) => nanos(after),
        None => -nanos(base.saturating_duration_since(at)),
    }
}

impl fmt::Debug for EndpointHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointHealth")
            .field("id", &self.id)
            .field("summary", &self.summary.load())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::time::advance;

    fn health(config: HealthConfig) -> EndpointHealth {
        EndpointHealth::new(Arc::from("p/m"), Arc::new(config))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample(outcome: Outcome, latency_ms: u64) -> Sample {
        Sample {
            at: Instant::now(),
            outcome,
            ttft: Some(ms(latency_ms / 4)),
            latency: ms(latency_ms),
            output_tokens: Some(100),
        }
    }

    fn ok(latency_ms: u64) -> Sample {
        sample(Outcome::Success, latency_ms)
    }

    fn fail() -> Sample {
        sample(Outcome::Failure, 50)
    }

    #[tokio::test(start_paused = true)]
    async fn percentiles_of_known_samples() {
        let h = health(HealthConfig::default());
        // Latencies 20 ms .. 2000 ms, TTFT a quarter of each, 100 tokens each.
        for i in 1..=100 {
            h.record(ok(i * 20));
        }
        advance(ms(250)).await;
        let s = h.summary();
        assert_eq!((s.samples, s.failures, s.error_rate), (100, 0, 0.0));
        let lat = s.latency.unwrap();
        assert!((lat.p50 - 1.0).abs() < 1e-9, "{lat:?}");
        assert!((lat.p75 - 1.5).abs() < 1e-9, "{lat:?}");
        assert!((lat.p90 - 1.8).abs() < 1e-9, "{lat:?}");
        assert!((lat.p99 - 1.98).abs() < 1e-9, "{lat:?}");
        let ttft = s.ttft.unwrap();
        assert!((ttft.p50 - 0.25).abs() < 1e-9, "{ttft:?}");
        assert!((ttft.p99 - 0.495).abs() < 1e-9, "{ttft:?}");
        // Throughput: 100 tokens over the 3/4 of the latency after the first token, so the
        // highest throughputs come from the shortest attempts: p50 is the 51st longest.
        let tput = s.throughput.unwrap();
        let expect = |lat_ms: f64| 100.0 / (lat_ms * 0.75 / 1000.0);
        assert!((tput.p50 - expect(1020.0)).abs() < 1e-6, "{tput:?}");
        assert!((tput.p99 - expect(40.0)).abs() < 1e-6, "{tput:?}");
        assert_eq!(s.consecutive_failures, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn samples_leave_the_window() {
        let h = health(HealthConfig {
            window: Duration::from_secs(60),
            ..HealthConfig::default()
        });
        h.record(ok(100));
        advance(Duration::from_secs(30)).await;
        h.record(ok(300));
        assert_eq!(h.summary().samples, 2);

        advance(Duration::from_secs(31)).await;
        // Nothing recorded since: the reader's refresh drops the first sample.
        let s = h.summary();
        assert_eq!(s.samples, 1);
        assert_eq!(s.latency.map(|p| p.p50), Some(0.3));

        advance(Duration::from_secs(30)).await;
        let s = h.summary();
        assert_eq!(s.samples, 0);
        assert!(s.latency.is_none() && s.ttft.is_none() && s.throughput.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn ring_keeps_the_newest_samples() {
        let h = health(HealthConfig {
            max_samples: 4,
            ..HealthConfig::default()
        });
        for i in 1..=6 {
            h.record(ok(i * 100));
        }
        let kept: Vec<_> = h.recorded().iter().map(|s| s.latency).collect();
        assert_eq!(kept, vec![ms(300), ms(400), ms(500), ms(600)]);
        advance(ms(250)).await;
        let s = h.summary();
        assert_eq!(s.samples, 4);
        assert_eq!(s.latency.map(|p| p.p50), Some(0.4));
    }

    #[tokio::test(start_paused = true)]
    async fn error_rate_and_streak() {
        let h = health(HealthConfig::default());
        h.record(ok(100));
        h.record(fail());
        h.record(ok(100));
        h.record(fail());
        let s = h.summary();
        assert_eq!((s.samples, s.failures), (4, 2));
        assert!((s.error_rate - 0.5).abs() < 1e-12);
        assert_eq!(s.consecutive_failures, 1);
        // Failures do not feed latency: only the two 100 ms successes.
        assert_eq!(s.latency.map(|p| (p.p50, p.p99)), Some((0.1, 0.1)));
        h.record(fail());
        assert_eq!(h.summary().consecutive_failures, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_counts_nowhere() {
        let h = health(HealthConfig::default());
        h.record(fail());
        h.record(fail());
        h.record(sample(Outcome::Neutral, 10));
        h.record(sample(Outcome::Neutral, 10));
        assert_eq!(h.recorded().len(), 2);
        advance(ms(250)).await;
        let s = h.summary();
        assert_eq!((s.samples, s.failures), (2, 2));
        // A neutral outcome neither resets nor extends the streak.
        assert_eq!(s.consecutive_failures, 2);
        h.record(fail());
        assert!(h.recent_outage(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn outage_by_consecutive_failures_clears_with_time() {
        let h = health(HealthConfig::default());
        h.record(fail());
        h.record(fail());
        assert!(!h.recent_outage(Instant::now()));
        advance(Duration::from_secs(10)).await;
        h.record(fail());
        assert!(h.recent_outage(Instant::now()));
        advance(Duration::from_secs(29)).await;
        assert!(h.recent_outage(Instant::now()));
        // 30 s after the last failure the window has passed. The ratio rule needs 5 attempts,
        // so only the streak rule could fire here.
        advance(Duration::from_secs(1)).await;
        assert!(!h.recent_outage(Instant::now()));
        // The streak is still 3: one more failure is an outage again at once.
        h.record(fail());
        assert!(h.recent_outage(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_streak() {
        // Out of reach of the ratio rule, so only the streak decides.
        let h = health(HealthConfig {
            outage_min_attempts: 100,
            ..HealthConfig::default()
        });
        for _ in 0..3 {
            h.record(fail());
        }
        assert!(h.recent_outage(Instant::now()));
        h.record(ok(100));
        assert!(!h.recent_outage(Instant::now()));
        h.record(fail());
        h.record(fail());
        assert!(!h.recent_outage(Instant::now()));
        assert_eq!(h.summary().consecutive_failures, 2);
        h.record(fail());
        assert!(h.recent_outage(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn outage_by_failure_ratio() {
        let h = health(HealthConfig::default());
        // Alternating outcomes never make a streak of 3.
        for _ in 0..2 {
            h.record(fail());
            h.record(ok(100));
        }
        assert!(!h.recent_outage(Instant::now()), "4 attempts are too few");
        h.record(fail());
        // 3 of 5 failed: >= 0.5 over >= 5 attempts.
        assert!(h.recent_outage(Instant::now()));
        h.record(ok(100));
        // 3 of 6 is still exactly half.
        assert!(h.recent_outage(Instant::now()));
        h.record(ok(100));
        assert!(!h.recent_outage(Instant::now()), "3 of 7 is below half");

        // Old attempts leave the outage window: 5 fresh successes then 4 fresh failures of 9.
        advance(Duration::from_secs(31)).await;
        for _ in 0..5 {
            h.record(ok(100));
        }
        for _ in 0..2 {
            h.record(fail());
            h.record(fail());
            h.record(ok(100));
        }
        assert!(!h.recent_outage(Instant::now()), "4 of 11 failed");
        h.record(fail());
        h.record(fail());
        // 6 of 13 fresh: below half, but the streak of 2 is not an outage either.
        assert!(!h.recent_outage(Instant::now()));
        h.record(fail());
        // 7 of 14 and a streak of 3.
        assert!(h.recent_outage(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_only_counts_attempts_within_the_outage_window() {
        let h = health(HealthConfig {
            outage_consecutive: 0,
            ..HealthConfig::default()
        });
        for _ in 0..5 {
            h.record(fail());
        }
        let failed_at = Instant::now();
        assert!(h.recent_outage(failed_at));
        advance(Duration::from_secs(20)).await;
        h.record(ok(100));
        assert!(h.recent_outage(Instant::now()), "5 of 6 failed");
        // The question may be asked about an earlier instant, too.
        assert!(h.recent_outage(failed_at));
        advance(Duration::from_secs(10)).await;
        // The 5 failures are exactly 30 s old: only the success is left in the window.
        assert!(!h.recent_outage(Instant::now()));
    }

    /// Asserts the lock-free answer and the counted one at `at`, and returns it.
    fn outage_at(h: &EndpointHealth, at: Instant) -> bool {
        let fast = h.recent_outage(at);
        assert_eq!(fast, h.counted_outage(at), "at {at:?}");
        fast
    }

    fn failed_at(at: Instant) -> Sample {
        Sample { at, ..fail() }
    }

    fn succeeded_at(at: Instant) -> Sample {
        Sample { at, ..ok(100) }
    }

    const NS: Duration = Duration::from_nanos(1);

    #[tokio::test(start_paused = true)]
    async fn streak_outage_ends_one_window_after_the_last_failure() {
        let h = health(HealthConfig {
            outage_min_attempts: 100,
            ..HealthConfig::default()
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record(fail());
            advance(Duration::from_secs(1)).await;
        }
        let last = t0 + Duration::from_secs(2);
        let end = last + Duration::from_secs(30);
        assert!(outage_at(&h, last));
        assert!(outage_at(&h, end - NS));
        assert!(!outage_at(&h, end));
        assert!(!outage_at(&h, end + Duration::from_secs(3600)));
        // Asked about earlier instants, the streak holds there too.
        assert!(outage_at(&h, t0));
        assert!(outage_at(&h, t0 - Duration::from_secs(5)));

        // A later failure moves the end; a success ends the streak at every instant.
        advance(Duration::from_secs(10)).await;
        h.record(fail());
        let end = Instant::now() + Duration::from_secs(30);
        assert!(outage_at(&h, end - NS));
        assert!(!outage_at(&h, end));
        h.record(ok(100));
        assert!(!outage_at(&h, Instant::now()));
        assert!(!outage_at(&h, t0));
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_outage_ends_when_too_few_attempts_are_left() {
        let h = health(HealthConfig {
            outage_consecutive: 0,
            ..HealthConfig::default()
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            h.record(fail());
            advance(Duration::from_secs(1)).await;
        }
        // The first failure leaves the window at t0 + 30 s: 4 attempts are too few.
        let end = t0 + Duration::from_secs(30);
        assert!(outage_at(&h, t0 + Duration::from_secs(4)));
        assert!(outage_at(&h, end - NS));
        assert!(!outage_at(&h, end));
        for s in 30..40 {
            assert!(!outage_at(&h, t0 + Duration::from_secs(s)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_outage_ends_when_the_ratio_drops() {
        let h = health(HealthConfig {
            outage_consecutive: 0,
            outage_min_attempts: 3,
            ..HealthConfig::default()
        });
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        for (at, failed) in [(0, true), (5, true), (10, false), (12, false), (14, true)] {
            h.record(if failed {
                failed_at(secs(at))
            } else {
                succeeded_at(secs(at))
            });
        }
        // 3 of 5, then 2 of 4 from 30 s, then 1 of 3 from 35 s: below half, though enough
        // attempts remain.
        assert!(outage_at(&h, secs(14)));
        assert!(outage_at(&h, secs(30) - NS));
        assert!(outage_at(&h, secs(30)));
        assert!(outage_at(&h, secs(35) - NS));
        assert!(!outage_at(&h, secs(35)));
        // Later expiries never bring it back: 1 of 2, then 1 of 1, are too few attempts.
        for s in [40, 42, 44, 45, 60] {
            assert!(!outage_at(&h, secs(s)), "{s} s");
        }
        assert_eq!(
            h.outage_recheck.load(Ordering::Relaxed),
            i64::MAX,
            "nothing left to recheck"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn aging_out_successes_start_an_outage_after_a_gap() {
        let h = health(HealthConfig {
            outage_consecutive: 0,
            ..HealthConfig::default()
        });
        let t0 = Instant::now();
        for _ in 0..6 {
            h.record(ok(100));
        }
        advance(Duration::from_secs(20)).await;
        for _ in 0..5 {
            h.record(fail());
        }
        // 5 of 11 failed; once the 6 successes leave at 30 s, 5 of 5 have.
        let start = t0 + Duration::from_secs(30);
        let end = t0 + Duration::from_secs(50);
        assert!(!outage_at(&h, Instant::now()));
        assert!(!outage_at(&h, start - NS));
        assert_eq!(
            h.outage_recheck.load(Ordering::Relaxed),
            stamp(h.base, start),
            "the fast path knows where it cannot answer"
        );
        assert!(outage_at(&h, start));
        assert!(outage_at(&h, end - NS));
        assert!(!outage_at(&h, end));
        // The question can be asked with the clock there, too.
        advance(Duration::from_secs(10)).await;
        assert!(h.recent_outage(Instant::now()));
        advance(Duration::from_secs(20)).await;
        assert!(!h.recent_outage(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_longer_of_streak_and_ratio_decides_the_end() {
        let h = health(HealthConfig::default());
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        // Ratio: 3 of 5 until the first failure leaves at 30 s, then 2 of 4 until 31 s.
        // Streak: the last three are failures, the last of them at 20 s, so until 50 s.
        h.record(failed_at(secs(0)));
        h.record(succeeded_at(secs(1)));
        h.record(succeeded_at(secs(2)));
        h.record(failed_at(secs(10)));
        assert!(!outage_at(&h, secs(10)), "4 attempts, a streak of 1");
        h.record(failed_at(secs(19)));
        h.record(failed_at(secs(20)));
        assert!(outage_at(&h, secs(31)));
        assert!(outage_at(&h, secs(50) - NS));
        assert!(!outage_at(&h, secs(50)));

        // A success ends the streak: only the ratio is left, 4 of 7, then 3 of 6 from 30 s,
        // 3 of 5 from 31 s, and 4 attempts are too few from 32 s.
        h.record(succeeded_at(secs(21)));
        assert!(outage_at(&h, secs(31)));
        assert!(outage_at(&h, secs(32) - NS));
        assert!(!outage_at(&h, secs(32)));
    }

    #[tokio::test(start_paused = true)]
    async fn samples_expire_in_time_order_not_record_order() {
        let h = health(HealthConfig {
            outage_consecutive: 0,
            outage_min_attempts: 2,
            outage_failure_ratio: 0.6,
            ..HealthConfig::default()
        });
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        // Recorded newest first: a straggler's sample may end before one recorded earlier.
        h.record(failed_at(secs(9)));
        h.record(succeeded_at(secs(8)));
        h.record(failed_at(secs(1)));
        // 2 of 3 failed; from 31 s, when the oldest leaves, 1 of 2; from 38 s 1 attempt is
        // too few. Taken in record order, the failure at 1 s would seem to stay until 39 s.
        assert!(outage_at(&h, secs(31) - NS));
        assert!(!outage_at(&h, secs(31)));
        assert!(!outage_at(&h, secs(38) - NS));
        assert!(!outage_at(&h, secs(38)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_outage_window_never_holds_an_outage() {
        let h = health(HealthConfig {
            outage_window: Duration::ZERO,
            outage_min_attempts: 1,
            ..HealthConfig::default()
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            h.record(fail());
        }
        for at in [t0 - Duration::from_secs(1), t0, t0 + NS] {
            assert!(!outage_at(&h, at));
        }
    }

    /// A deterministic generator, so a failing case can be replayed.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[tokio::test(start_paused = true)]
    async fn precomputed_outage_matches_counting_the_samples() {
        let mut rng = Lcg(0x5eed);
        let ratios = [0.0, 0.34, 0.5, 0.75, 1.0, f64::NAN];
        for case in 0..200 {
            let config = HealthConfig {
                window: Duration::from_secs(rng.below(2) * 5),
                max_samples: 1 + rng.below(10) as usize,
                outage_window: Duration::from_millis(500 + rng.below(3) * 1000),
                outage_consecutive: rng.below(5) as u32,
                outage_min_attempts: rng.below(6) as u32,
                outage_failure_ratio: ratios[rng.below(ratios.len() as u64) as usize],
                ..HealthConfig::default()
            };
            let window = config.outage_window;
            let h = health(config.clone());
            for _ in 0..20 {
                advance(ms(rng.below(1200))).await;
                let now = Instant::now();
                // Up to 1.5 s late, so samples arrive out of order and before `base`.
                let at = now - ms(rng.below(4) * 500);
                let outcome = match rng.below(5) {
                    0 => Outcome::Neutral,
                    1 | 2 => Outcome::Failure,
                    _ => Outcome::Success,
                };
                h.record(Sample {
                    at,
                    outcome,
                    ..ok(100)
                });
                let mut probes: Vec<Instant> =
                    (0..40).map(|k| now - ms(1000) + ms(k * 125)).collect();
                for s in h.recorded() {
                    let expires = s.at + window;
                    probes.extend([s.at, expires - NS, expires, expires + NS]);
                }
                for t in probes {
                    assert_eq!(
                        h.recent_outage(t),
                        h.counted_outage(t),
                        "case {case}, {config:?}, at {t:?}, samples {:?}",
                        h.recorded()
                    );
                }
            }
        }
    }

    #[test]
    fn recent_outage_takes_no_lock() {
        let h = Arc::new(health(HealthConfig::default()));
        for _ in 0..3 {
            h.record(fail());
        }
        let held = h.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = Arc::clone(&h);
        let now = Instant::now();
        let thread = std::thread::spawn(move || {
            let _ = tx.send((
                reader.recent_outage(now),
                reader.recent_outage(now + Duration::from_secs(60)),
            ));
        });
        let answer = rx.recv_timeout(Duration::from_secs(10));
        drop(held);
        thread.join().unwrap();
        assert_eq!(answer.ok(), Some((true, false)), "blocked on the lock");
    }

    #[tokio::test(start_paused = true)]
    async fn successes_refresh_at_most_every_refresh_but_failures_at_once() {
        let h = health(HealthConfig::default());
        h.record(ok(100));
        // The first sample is published at once.
        assert_eq!(h.summary().samples, 1);

        advance(ms(100)).await;
        h.record(ok(100));
        h.record(ok(100));
        assert_eq!(h.summary().samples, 1, "throttled");

        advance(ms(149)).await;
        assert_eq!(h.summary().samples, 1, "still throttled at 249 ms");
        advance(ms(1)).await;
        h.record(ok(100));
        let s = h.summary();
        assert_eq!(s.samples, 4, "refreshed by the record at 250 ms");

        advance(ms(10)).await;
        h.record(ok(100));
        assert_eq!(h.summary().samples, 4, "throttled again");
        h.record(fail());
        let s = h.summary();
        assert_eq!(
            (s.samples, s.failures),
            (6, 1),
            "a failure publishes at once"
        );
        assert_eq!(s.consecutive_failures, 1);

        h.record(ok(100));
        assert_eq!(h.summary().samples, 6, "a success right after is throttled");
        advance(ms(250)).await;
        // No record: the reader refreshes the stale summary itself.
        let s = h.summary();
        assert_eq!((s.samples, s.failures, s.consecutive_failures), (7, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn summary_readers_do_not_wait_for_a_recorder() {
        let h = health(HealthConfig::default());
        h.record(ok(100));
        advance(ms(300)).await;
        h.record(ok(100));
        let published = h.summary();
        advance(ms(300)).await;
        let held = h.lock();
        // Stale, but the state is locked: the previous summary comes back at once.
        assert!(Arc::ptr_eq(&h.summary(), &published));
        drop(held);
        assert!(!Arc::ptr_eq(&h.summary(), &published));
    }

    #[tokio::test(start_paused = true)]
    async fn debug_names_the_endpoint() {
        let h = health(HealthConfig::default());
        assert_eq!(h.id(), "p/m");
        assert!(format!("{h:?}").contains("p/m"));
    }
}
