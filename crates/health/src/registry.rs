use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::{EndpointHealth, HealthConfig, Summary};

type Map = HashMap<Arc<str>, Arc<EndpointHealth>>;

/// Every endpoint's [`EndpointHealth`], keyed by stable endpoint id (`provider/model`).
///
/// Long-lived: it outlives policy snapshots, and a reload reconciles it with
/// [`retain`](Self::retain) instead of replacing it. Lookups are one `arc-swap` load; adding or
/// removing ids (rare: first use, reloads) copies the map.
pub struct HealthRegistry {
    config: Arc<HealthConfig>,
    endpoints: ArcSwap<Map>,
    /// Serializes copy-on-write updates so two of them cannot lose each other's changes.
    write: Mutex<()>,
}

impl HealthRegistry {
    /// An empty registry whose endpoints all use `config`.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config: Arc::new(config),
            endpoints: ArcSwap::from_pointee(Map::new()),
            write: Mutex::new(()),
        }
    }

    /// The configuration every endpoint uses.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// The endpoint's health, created empty on first use.
    pub fn endpoint(&self, id: &str) -> Arc<EndpointHealth> {
        if let Some(found) = self.get(id) {
            return found;
        }
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.endpoints.load();
        if let Some(found) = current.get(id) {
            return Arc::clone(found);
        }
        let id: Arc<str> = Arc::from(id);
        let created = Arc::new(EndpointHealth::new(
            Arc::clone(&id),
            Arc::clone(&self.config),
        ));
        let mut next = Map::clone(&current);
        next.insert(id, Arc::clone(&created));
        self.endpoints.store(Arc::new(next));
        created
    }

    /// The endpoint's health if it has any; never allocates.
    pub fn get(&self, id: &str) -> Option<Arc<EndpointHealth>> {
        self.endpoints.load().get(id).map(Arc::clone)
    }

    /// Drops every endpoint for which `keep` says false (after a reload removed it); the
    /// others keep their state. Attempts still holding a dropped endpoint record into it
    /// harmlessly; a later [`endpoint`](Self::endpoint) call starts it afresh.
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.endpoints.load();
        if current.keys().all(|id| keep(id)) {
            return;
        }
        let next: Map = current
            .iter()
            .filter(|(id, _)| keep(id))
            .map(|(id, h)| (Arc::clone(id), Arc::clone(h)))
            .collect();
        self.endpoints.store(Arc::new(next));
    }

    /// Every endpoint's summary, sorted by id (for `/admin/providers`).
    pub fn all(&self) -> Vec<(Arc<str>, Arc<Summary>)> {
        let map = self.endpoints.load();
        let mut all: Vec<_> = map
            .iter()
            .map(|(id, h)| (Arc::clone(id), h.summary()))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self::new(HealthConfig::default())
    }
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.endpoints.load();
        let mut ids: Vec<&str> = map.keys().map(|id| &**id).collect();
        ids.sort_unstable();
        f.debug_struct("HealthRegistry")
            .field("config", &self.config)
            .field("endpoints", &ids)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::{Outcome, Sample};

    fn fail() -> Sample {
        Sample {
            at: Instant::now(),
            outcome: Outcome::Failure,
            ttft: None,
            latency: Duration::from_millis(5),
            output_tokens: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn endpoint_is_created_once_and_shared() {
        let reg = HealthRegistry::default();
        assert!(reg.get("a/x").is_none());
        let a = reg.endpoint("a/x");
        let again = reg.endpoint("a/x");
        assert!(Arc::ptr_eq(&a, &again));
        assert!(Arc::ptr_eq(&a, &reg.get("a/x").unwrap()));
        assert_eq!(a.id(), "a/x");
        a.record(fail());
        assert_eq!(reg.get("a/x").unwrap().summary().failures, 1);
        assert!(reg.get("b/x").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn retain_drops_removed_ids_and_keeps_the_others_state() {
        let reg = HealthRegistry::default();
        let a = reg.endpoint("a/x");
        let b = reg.endpoint("b/x");
        reg.endpoint("c/x");
        for _ in 0..3 {
            a.record(fail());
            b.record(fail());
        }
        reg.retain(&|id| id != "b/x");
        assert!(reg.get("b/x").is_none());
        let kept = reg.get("a/x").unwrap();
        assert!(Arc::ptr_eq(&kept, &a));
        assert_eq!(kept.summary().failures, 3);
        assert!(kept.recent_outage(Instant::now()));
        assert!(reg.get("c/x").is_some());

        // A removed id that comes back starts afresh.
        let b_again = reg.endpoint("b/x");
        assert!(!Arc::ptr_eq(&b_again, &b));
        assert_eq!(b_again.summary().samples, 0);
        assert!(!b_again.recent_outage(Instant::now()));

        // Keeping everything changes nothing.
        reg.retain(&|_| true);
        assert!(Arc::ptr_eq(&reg.get("b/x").unwrap(), &b_again));
        reg.retain(&|_| false);
        assert!(reg.all().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn all_is_sorted_by_id() {
        let reg = HealthRegistry::default();
        for id in ["z/m", "a/m", "m/m", "a/a"] {
            reg.endpoint(id);
        }
        reg.endpoint("m/m").record(fail());
        let all = reg.all();
        let ids: Vec<&str> = all.iter().map(|(id, _)| &**id).collect();
        assert_eq!(ids, ["a/a", "a/m", "m/m", "z/m"]);
        let failures: Vec<u32> = all.iter().map(|(_, s)| s.failures).collect();
        assert_eq!(failures, [0, 0, 1, 0]);
        let debug = format!("{reg:?}");
        assert!(
            debug.contains("\"a/a\", \"a/m\", \"m/m\", \"z/m\""),
            "{debug}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn config_reaches_every_endpoint() {
        let reg = HealthRegistry::new(HealthConfig {
            outage_consecutive: 1,
            ..HealthConfig::default()
        });
        assert_eq!(reg.config().outage_consecutive, 1);
        let e = reg.endpoint("a/x");
        e.record(fail());
        assert!(e.recent_outage(Instant::now()));
    }

    #[test]
    fn concurrent_creation_yields_one_endpoint() {
        let reg = Arc::new(HealthRegistry::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let reg = Arc::clone(&reg);
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| reg.endpoint(&format!("p/{}", i % 10)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let got: Vec<Vec<Arc<EndpointHealth>>> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(reg.all().len(), 10);
        for per_thread in &got {
            for h in per_thread {
                assert!(Arc::ptr_eq(h, &reg.get(h.id()).unwrap()));
            }
        }
    }
}

/// Endpoint health learns from the fallback executor's verdict on every attempt: the same
/// classification the breaker and budgets read (DESIGN.md §4).
impl switchyard_core::AttemptObserver for HealthRegistry {
    fn observe(&self, r: &switchyard_core::AttemptReport) {
        use crate::{Outcome, Sample};
        use switchyard_core::{BreakerEffect, Class};
        let outcome = match r.class.breaker_effect() {
            BreakerEffect::Success => Outcome::Success,
            BreakerEffect::Failure => Outcome::Failure,
            // A rate limit or a bad key is not an outage of the endpoint (the breaker's
            // cooldowns handle those); client errors and cancellations are nobody's fault.
            BreakerEffect::RateOnly | BreakerEffect::Credential | BreakerEffect::Ignore => {
                Outcome::Neutral
            }
        };
        if outcome == Outcome::Neutral && r.class != Class::Success {
            return;
        }
        self.endpoint(&r.endpoint).record(Sample {
            at: r.ended_at,
            outcome,
            ttft: r.ttft,
            latency: r.ended_at.saturating_duration_since(r.sent_at),
            output_tokens: r.usage.map(|u| u.completion_tokens),
        });
    }
}

#[cfg(test)]
mod observer_tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;
    use std::time::Duration;

    use switchyard_core::{AttemptObserver, AttemptReport, Class, Usage};
    use tokio::time::Instant;

    use crate::{HealthConfig, HealthRegistry};

    fn report(class: Class, ttft_ms: u64, total_ms: u64, tokens: u64) -> AttemptReport {
        let sent_at = Instant::now();
        AttemptReport {
            request_id: None,
            endpoint: Arc::from("p/m"),
            provider: Arc::from("p"),
            model: Arc::from("m"),
            attempt: 1,
            class,
            status: Some(200),
            sent_at,
            ttft: Some(Duration::from_millis(ttft_ms)),
            ended_at: sent_at + Duration::from_millis(total_ms),
            usage: Some(Usage {
                prompt_tokens: 10,
                completion_tokens: tokens,
                cost: 0.0,
                estimated: false,
            }),
            retry_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reports_feed_samples_by_verdict() {
        let h = HealthRegistry::new(HealthConfig {
            refresh: Duration::ZERO,
            ..HealthConfig::default()
        });
        h.observe(&report(Class::Success, 100, 1100, 50));
        h.observe(&report(Class::RateLimited, 0, 10, 0));
        h.observe(&report(Class::ClientError, 0, 10, 0));
        let s = h.get("p/m").unwrap().summary();
        assert_eq!(s.samples, 1, "only the success counts");
        assert!((s.throughput.unwrap().p50 - 50.0).abs() < 1e-9);
        for _ in 0..3 {
            h.observe(&report(Class::FirstTokenTimeout, 0, 10, 0));
        }
        assert!(h.get("p/m").unwrap().recent_outage(Instant::now()));
    }
}
