use std::time::Duration;

use crate::prefs::ProviderPrefs;

/// Attempt and request timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect to the upstream (default 5 s).
    pub connect: Duration,
    /// From request sent to the first output token (default 10 s; raise it for reasoning models).
    pub first_token: Duration,
    /// Longest gap between two streamed chunks (default 10 s).
    pub idle: Duration,
    /// Cap on one whole attempt (default none).
    pub attempt: Option<Duration>,
    /// The whole request across all attempts (default 600 s).
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_token: Duration::from_secs(10),
            idle: Duration::from_secs(10),
            attempt: None,
            total: Duration::from_secs(600),
        }
    }
}

/// Per-route or per-endpoint timeout overrides; `None` keeps the value underneath.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeoutOverrides {
    pub connect: Option<Duration>,
    pub first_token: Option<Duration>,
    pub idle: Option<Duration>,
    pub attempt: Option<Duration>,
    pub total: Option<Duration>,
}

impl Timeouts {
    /// These timeouts with every value that `o` sets replaced.
    pub fn overlay(&self, o: &TimeoutOverrides) -> Timeouts {
        Timeouts {
            connect: o.connect.unwrap_or(self.connect),
            first_token: o.first_token.unwrap_or(self.first_token),
            idle: o.idle.unwrap_or(self.idle),
            attempt: o.attempt.or(self.attempt),
            total: o.total.unwrap_or(self.total),
        }
    }
}

/// Retry and fallback behaviour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retry {
    /// Upstream attempts per model, the first included (default 3).
    pub max_attempts: u32,
    /// Extra tries on the same endpoint for retryable failures before moving on (default 1).
    pub same_endpoint_retries: u32,
    /// Full-jitter backoff lower bound (default 500 ms).
    pub backoff_base: Duration,
    /// Full-jitter backoff upper bound (default 8 s).
    pub backoff_max: Duration,
    /// Retries allowed as a fraction of recent requests, 0..=1 (default 0.2).
    pub budget_ratio: f64,
    /// Retries per second always allowed whatever the ratio (default 1.0).
    pub budget_min_per_s: f64,
    /// Longest Retry-After that is waited out instead of moving on (default 10 s).
    pub max_retry_after_wait: Duration,
    /// Continue a cut stream with the partial answer as prefill (default true).
    pub continuation: bool,
    /// Buffer the whole response before sending, so any failure can fall back (default false).
    pub buffer: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            same_endpoint_retries: 1,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            budget_ratio: 0.2,
            budget_min_per_s: 1.0,
            max_retry_after_wait: Duration::from_secs(10),
            continuation: true,
            buffer: false,
        }
    }
}

/// Per-route retry overrides; `None` keeps the value underneath.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RetryOverrides {
    pub max_attempts: Option<u32>,
    pub same_endpoint_retries: Option<u32>,
    pub backoff_base: Option<Duration>,
    pub backoff_max: Option<Duration>,
    pub budget_ratio: Option<f64>,
    pub budget_min_per_s: Option<f64>,
    pub max_retry_after_wait: Option<Duration>,
    pub continuation: Option<bool>,
    pub buffer: Option<bool>,
}

impl Retry {
    /// This retry policy with every value that `o` sets replaced.
    pub fn overlay(&self, o: &RetryOverrides) -> Retry {
        Retry {
            max_attempts: o.max_attempts.unwrap_or(self.max_attempts),
            same_endpoint_retries: o
                .same_endpoint_retries
                .unwrap_or(self.same_endpoint_retries),
            backoff_base: o.backoff_base.unwrap_or(self.backoff_base),
            backoff_max: o.backoff_max.unwrap_or(self.backoff_max),
            budget_ratio: o.budget_ratio.unwrap_or(self.budget_ratio),
            budget_min_per_s: o.budget_min_per_s.unwrap_or(self.budget_min_per_s),
            max_retry_after_wait: o.max_retry_after_wait.unwrap_or(self.max_retry_after_wait),
            continuation: o.continuation.unwrap_or(self.continuation),
            buffer: o.buffer.unwrap_or(self.buffer),
        }
    }
}

/// Circuit breaker thresholds, applied per endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Breaker {
    /// Consecutive failures that open the breaker (default 5).
    pub consecutive_failures: u32,
    /// Failure fraction over `window` that opens the breaker, 0..=1 (default 0.5).
    pub failure_rate: f64,
    /// Sliding window for `failure_rate` (default 60 s).
    pub window: Duration,
    /// Requests in `window` before `failure_rate` applies (default 20).
    pub min_requests: u32,
    /// First open period, doubled (jittered) on each re-open (default 1 s).
    pub open_base: Duration,
    /// Longest open period (default 8 s).
    pub open_max: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(60),
            min_requests: 20,
            open_base: Duration::from_secs(1),
            open_max: Duration::from_secs(8),
        }
    }
}

/// Size and concurrency limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted, bytes (default 32 MiB).
    pub max_request_bytes: u64,
    /// Largest upstream response read, bytes (default 64 MiB).
    pub max_response_bytes: u64,
    /// Longest single SSE line from an upstream, bytes (default 1 MiB).
    pub max_sse_line_bytes: u64,
    /// Time allowed for a client to send the request headers (default 10 s).
    pub header_read_timeout: Duration,
    /// Requests in flight per endpoint before shedding (default 256).
    pub max_in_flight_per_endpoint: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 32 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            max_sse_line_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_in_flight_per_endpoint: 256,
        }
    }
}

/// The policy's `defaults` section with every unset value filled from the built-in defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    /// Provider preferences applied under every route and request.
    pub provider: ProviderPrefs,
    pub timeouts: Timeouts,
    pub retry: Retry,
    pub breaker: Breaker,
    pub limits: Limits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_match_the_design() {
        let t = Timeouts::default();
        assert_eq!(t.connect, Duration::from_secs(5));
        assert_eq!(t.first_token, Duration::from_secs(10));
        assert_eq!(t.idle, Duration::from_secs(10));
        assert_eq!(t.attempt, None);
        assert_eq!(t.total, Duration::from_secs(600));

        let r = Retry::default();
        assert_eq!(r.max_attempts, 3);
        assert_eq!(r.same_endpoint_retries, 1);
        assert_eq!(r.backoff_base, Duration::from_millis(500));
        assert_eq!(r.backoff_max, Duration::from_secs(8));
        assert_eq!(r.budget_ratio, 0.2);
        assert_eq!(r.budget_min_per_s, 1.0);
        assert_eq!(r.max_retry_after_wait, Duration::from_secs(10));
        assert!(r.continuation);
        assert!(!r.buffer);

        let b = Breaker::default();
        assert_eq!(b.consecutive_failures, 5);
        assert_eq!(b.failure_rate, 0.5);
        assert_eq!(b.window, Duration::from_secs(60));
        assert_eq!(b.min_requests, 20);
        assert_eq!(b.open_base, Duration::from_secs(1));
        assert_eq!(b.open_max, Duration::from_secs(8));

        let l = Limits::default();
        assert_eq!(l.max_request_bytes, 33_554_432);
        assert_eq!(l.max_response_bytes, 67_108_864);
        assert_eq!(l.max_sse_line_bytes, 1_048_576);
        assert_eq!(l.header_read_timeout, Duration::from_secs(10));
        assert_eq!(l.max_in_flight_per_endpoint, 256);
    }

    #[test]
    fn timeouts_overlay_replaces_only_set_values() {
        let base = Timeouts::default();
        assert_eq!(base.overlay(&TimeoutOverrides::default()), base);
        let o = TimeoutOverrides {
            first_token: Some(Duration::from_secs(30)),
            attempt: Some(Duration::from_secs(90)),
            ..Default::default()
        };
        let t = base.overlay(&o);
        assert_eq!(t.first_token, Duration::from_secs(30));
        assert_eq!(t.attempt, Some(Duration::from_secs(90)));
        assert_eq!(t.connect, base.connect);
        assert_eq!(t.idle, base.idle);
        assert_eq!(t.total, base.total);
        // An unset attempt override keeps an attempt cap set underneath.
        let t2 = t.overlay(&TimeoutOverrides {
            connect: Some(Duration::from_secs(1)),
            ..Default::default()
        });
        assert_eq!(t2.attempt, Some(Duration::from_secs(90)));
        assert_eq!(t2.connect, Duration::from_secs(1));
    }

    #[test]
    fn retry_overlay_replaces_only_set_values() {
        let base = Retry::default();
        assert_eq!(base.overlay(&RetryOverrides::default()), base);
        let o = RetryOverrides {
            max_attempts: Some(5),
            budget_ratio: Some(0.5),
            continuation: Some(false),
            buffer: Some(true),
            backoff_max: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let r = base.overlay(&o);
        assert_eq!(r.max_attempts, 5);
        assert_eq!(r.budget_ratio, 0.5);
        assert!(!r.continuation);
        assert!(r.buffer);
        assert_eq!(r.backoff_max, Duration::from_secs(2));
        assert_eq!(r.backoff_base, base.backoff_base);
        assert_eq!(r.same_endpoint_retries, base.same_endpoint_retries);
        assert_eq!(r.budget_min_per_s, base.budget_min_per_s);
        assert_eq!(r.max_retry_after_wait, base.max_retry_after_wait);
    }
}
