//! Live per-endpoint health statistics: latency, time to first token, throughput, error rate
//! and recent outages.
//!
//! Every upstream attempt feeds its endpoint's [`EndpointHealth`] (streamed bodies through
//! [`observe`], buffered ones with [`EndpointHealth::record`]); the select layer reads the
//! cached [`Summary`] to sort by throughput or latency and to apply the `preferred_*`
//! thresholds, and asks [`EndpointHealth::recent_outage`] to skip endpoints that failed badly in
//! the last few seconds. The [`HealthRegistry`] is long-lived and keyed by stable endpoint ids
//! (`provider/model`), so statistics survive policy reloads: the owner calls
//! [`HealthRegistry::retain`] after a reload and unchanged ids keep their state.
//!
//! Recording takes a short `std::sync::Mutex` section and never awaits; reading a summary is an
//! `arc-swap` load, and asking about a recent outage is an atomic load (recording precomputes
//! until when the samples mean one). All times are [`tokio::time::Instant`] so paused-clock tests work.
//!
//! This crate does not decide anything: it neither filters nor orders candidates (that is
//! `select`), nor opens circuits (that is `breaker`), nor classifies outcomes (callers pass an
//! [`Outcome`] they already decided).

mod endpoint;
mod observe;
mod registry;
mod stats;

use std::time::Duration;

pub use endpoint::{EndpointHealth, Outcome, Sample};
pub use observe::observe;
pub use registry::HealthRegistry;
pub use stats::{Percentiles, Quantile, Summary};

/// How statistics are kept and when an endpoint counts as having a recent outage.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// Rolling window for percentiles, sample counts and error rate (default 5 min).
    pub window: Duration,
    /// Samples kept per endpoint, newest win (default 256).
    pub max_samples: usize,
    /// How far back [`EndpointHealth::recent_outage`] looks (default 30 s).
    pub outage_window: Duration,
    /// An outage is this many consecutive failures, the last within `outage_window`
    /// (default 3; 0 disables this rule).
    pub outage_consecutive: u32,
    /// ... or at least this many attempts within `outage_window` (default 5) ...
    pub outage_min_attempts: u32,
    /// ... of which at least this fraction failed (default 0.5).
    pub outage_failure_ratio: f64,
    /// Summaries are recomputed at most this often (default 250 ms), and at once on a failure.
    pub refresh: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            max_samples: 256,
            outage_window: Duration::from_secs(30),
            outage_consecutive: 3,
            outage_min_attempts: 5,
            outage_failure_ratio: 0.5,
            refresh: Duration::from_millis(250),
        }
    }
}
