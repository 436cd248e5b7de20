use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

struct State {
    /// Attempts in the order they were recorded; Neutral ones are never stored.
    ring: VecDeque<Sample>,
    consecutive_failures: u32,
    last_failure: Option<Instant>,
    scratch: Vec<f64>,
}

impl EndpointHealth {
    pub(crate) fn new(id: Arc<str>, config: Arc<HealthConfig>) -> Self {
        Self {
            id,
            config,
            state: Mutex::new(State {
                ring: VecDeque::new(),
                consecutive_failures: 0,
                last_failure: None,
                scratch: Vec::new(),
            }),
            summary: ArcSwap::from_pointee(Summary::default()),
            base: Instant::now(),
            refreshed_at: AtomicU64::new(0),
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
        while state.ring.len() >= capacity {
            state.ring.pop_front();
        }
        // Samples this old count in no statistic; dropping them keeps idle endpoints small.
        let horizon = cfg.window.max(cfg.outage_window);
        while state
            .ring
            .front()
            .is_some_and(|s| !within(sample.at, s.at, horizon))
        {
            state.ring.pop_front();
        }
        state.ring.push_back(sample);
        match sample.outcome {
            Outcome::Success => state.consecutive_failures = 0,
            Outcome::Failure => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                state.last_failure = Some(sample.at);
            }
            Outcome::Neutral => {}
        }
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
    pub fn recent_outage(&self, now: Instant) -> bool {
        let cfg = &*self.config;
        let state = self.lock();
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
        attempts > 0
            && attempts >= cfg.outage_min_attempts
            && f64::from(failures) / f64::from(attempts) >= cfg.outage_failure_ratio
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
    pub(crate) fn recorded(&self) -> Vec<Sample> {
        self.lock().ring.iter().copied().collect()
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
