use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_core::{AttemptObserver, AttemptReport, BreakerEffect};
use switchyard_policy::{Breaker as Settings, Endpoint};
use tokio::time::Instant;

use crate::state::{Admission, Circuit, Phase, Refusal};

/// Cooldown lengths and the probe bound; the breaker thresholds themselves come from the
/// policy ([`switchyard_policy::Breaker`]) with every admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Rate-limit cooldown after a 429 without `Retry-After` (default 1 s).
    pub rate_limit_default: Duration,
    /// Longest rate-limit cooldown, whatever `Retry-After` asks (default 60 s): a huge value
    /// must not take an endpoint out for hours.
    pub rate_limit_max: Duration,
    /// Credential cooldown of a provider whose key was rejected (default 5 min): a bad key
    /// rarely fixes itself sooner, and every attempt with it is wasted (or billed).
    pub credential: Duration,
    /// After this long a half-open probe whose outcome never came back stops holding the
    /// probe slot (default 60 s).
    pub probe_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            rate_limit_default: Duration::from_secs(1),
            rate_limit_max: Duration::from_secs(60),
            credential: Duration::from_secs(300),
            probe_timeout: Duration::from_secs(60),
        }
    }
}

/// One endpoint's breaker state for `/admin/providers`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StateView {
    pub phase: Phase,
    /// Failures in a row since the last success.
    pub consecutive_failures: u32,
    /// Counted outcomes inside the breaker's failure-rate window.
    pub requests: u32,
    /// Failed fraction of `requests` (0 when there are none).
    pub failure_rate: f64,
    /// End of the open period, while open.
    pub open_until: Option<Instant>,
    /// Whether a half-open breaker has its probe out.
    pub probe_in_flight: bool,
    /// End of the endpoint's rate-limit cooldown, while it lasts.
    pub rate_limited_until: Option<Instant>,
    /// End of the provider's credential cooldown, while it lasts.
    pub credential_until: Option<Instant>,
    /// Attempts on the endpoint holding an in-flight permit now.
    pub in_flight: u32,
}

impl StateView {
    /// The view of an endpoint nothing is known about: closed, nothing counted.
    pub fn closed() -> Self {
        Self {
            phase: Phase::Closed,
            consecutive_failures: 0,
            requests: 0,
            failure_rate: 0.0,
            open_until: None,
            probe_in_flight: false,
            rate_limited_until: None,
            credential_until: None,
            in_flight: 0,
        }
    }
}

struct EndpointEntry {
    provider: Arc<str>,
    state: Mutex<EntryState>,
    /// Attempts admitted with a permit and not yet finished (their bodies not yet dropped).
    in_flight: AtomicU32,
}

/// Wait suggested to a caller shed because every endpoint it could use was saturated.
const SATURATED_RETRY: Duration = Duration::from_secs(1);

/// One attempt's place in its endpoint's in-flight count, given back when dropped. The
/// breaker layer keeps it with the attempt's response body, so a stream holds its place
/// until it ends or its reader goes away.
pub struct InFlightPermit {
    entry: Arc<EndpointEntry>,
}

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        self.entry.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for InFlightPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightPermit")
            .field("in_flight", &self.entry.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

struct EntryState {
    circuit: Circuit,
    /// The thresholds last seen at admission: outcomes are reported without a policy at hand,
    /// and a reload that changes them reaches here with the next attempt.
    settings: Settings,
}

impl EndpointEntry {
    fn lock(&self) -> std::sync::MutexGuard<'_, EntryState> {
        // The state is plain data updated in place; a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct ProviderEntry {
    credential_until: Mutex<Option<Instant>>,
}

impl ProviderEntry {
    fn until(&self) -> Option<Instant> {
        *self
            .credential_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

type Map<T> = HashMap<Arc<str>, Arc<T>>;

/// Every endpoint's circuit breaker and rate-limit cooldown, and every provider's credential
/// cooldown, keyed by stable ids (`provider/model` for endpoints, the provider id).
///
/// Long-lived: it outlives policy snapshots, and a reload reconciles it with
/// [`retain`](Self::retain). It learns outcomes as an [`AttemptObserver`] of the fallback
/// executor and answers [`admit`](Self::admit) on every attempt: one `arc-swap` load per map
/// and one short per-endpoint lock; only the first sight of an id copies a map.
pub struct BreakerRegistry {
    config: RegistryConfig,
    endpoints: ArcSwap<Map<EndpointEntry>>,
    providers: ArcSwap<Map<ProviderEntry>>,
    /// Serializes copy-on-write map updates so two of them cannot lose each other's changes.
    write: Mutex<()>,
}

impl BreakerRegistry {
    /// An empty registry.
    pub fn new(config: RegistryConfig) -> Self {
        Self {
            config,
            endpoints: ArcSwap::from_pointee(Map::new()),
            providers: ArcSwap::from_pointee(Map::new()),
            write: Mutex::new(()),
        }
    }

    /// The cooldown configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// May an attempt go to `endpoint` at `now`? A half-open breaker's admission is its probe
    /// and marks the probe in flight until its outcome is observed.
    ///
    /// Refusals in order: the provider's credential cooldown, an open breaker (or a probe
    /// already out), the endpoint's rate-limit cooldown.
    pub fn admit(
        &self,
        endpoint: &Endpoint,
        settings: &Settings,
        now: Instant,
    ) -> Result<Admission, Refusal> {
        // Made first so that `state` can show this endpoint's provider cooldown.
        let entry = self.endpoint(&endpoint.id, &endpoint.provider.id);
        self.admit_entry(&entry, endpoint, settings, now)
    }

    /// [`admit`](Self::admit), after taking one of the endpoint's `limit` in-flight places:
    /// an endpoint with `limit` attempts out sheds the next one ([`Refusal::Saturated`]) before
    /// its breaker is asked, so a shed attempt never takes a half-open breaker's probe. The
    /// place is held by the returned permit.
    pub fn admit_within(
        &self,
        endpoint: &Endpoint,
        settings: &Settings,
        limit: u32,
        now: Instant,
    ) -> Result<(Admission, InFlightPermit), Refusal> {
        let entry = self.endpoint(&endpoint.id, &endpoint.provider.id);
        let before = entry.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = InFlightPermit {
            entry: Arc::clone(&entry),
        };
        if before >= limit {
            return Err(Refusal::Saturated {
                limit,
                retry_in: SATURATED_RETRY,
            });
        }
        let admission = self.admit_entry(&entry, endpoint, settings, now)?;
        Ok((admission, permit))
    }

    fn admit_entry(
        &self,
        entry: &EndpointEntry,
        endpoint: &Endpoint,
        settings: &Settings,
        now: Instant,
    ) -> Result<Admission, Refusal> {
        if let Some(provider) = self.providers.load().get(&*endpoint.provider.id)
            && let Some(until) = provider.until()
            && now < until
        {
            return Err(Refusal::CredentialCooldown {
                retry_in: until - now,
            });
        }
        let mut state = entry.lock();
        state.settings = *settings;
        let admission = state
            .circuit
            .admit(now, settings, self.config.probe_timeout);
        if admission == Ok(Admission::Probe) {
            tracing::info!(endpoint = %endpoint.id, "breaker half-open: probing");
        }
        admission
    }

    /// The breaker state of endpoint `id` at `now`; closed and empty if nothing is known.
    pub fn state(&self, id: &str, now: Instant) -> StateView {
        let Some(entry) = self.endpoints.load().get(id).map(Arc::clone) else {
            return StateView::closed();
        };
        let credential_until = self
            .providers
            .load()
            .get(&*entry.provider)
            .and_then(|p| p.until())
            .filter(|u| now < *u);
        let state = entry.lock();
        let c = state.circuit.view(now, &state.settings);
        StateView {
            phase: c.phase,
            consecutive_failures: c.consecutive_failures,
            requests: c.requests,
            failure_rate: c.failure_rate,
            open_until: c.open_until,
            probe_in_flight: c.probe_in_flight,
            rate_limited_until: c.rate_limited_until,
            credential_until,
            in_flight: entry.in_flight.load(Ordering::Acquire),
        }
    }

    /// Every known endpoint's state at `now`, sorted by id.
    pub fn all(&self, now: Instant) -> Vec<(Arc<str>, StateView)> {
        let map = self.endpoints.load();
        let mut all: Vec<_> = map
            .keys()
            .map(|id| (Arc::clone(id), self.state(id, now)))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Drops every endpoint for which `keep` says false (a reload removed it), and every
    /// provider no kept endpoint belongs to; the rest keep their state. A removed id that
    /// comes back starts afresh.
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.endpoints.load_full();
        let endpoints: Map<EndpointEntry> = current
            .iter()
            .filter(|(id, _)| keep(id))
            .map(|(id, e)| (Arc::clone(id), Arc::clone(e)))
            .collect();
        if endpoints.len() != current.len() {
            self.endpoints.store(Arc::new(endpoints));
        }
        let endpoints = self.endpoints.load();
        let providers = self.providers.load_full();
        let used = |p: &str| endpoints.values().any(|e| &*e.provider == p);
        if !providers.keys().all(|p| used(p)) {
            let kept: Map<ProviderEntry> = providers
                .iter()
                .filter(|(p, _)| used(p))
                .map(|(p, e)| (Arc::clone(p), Arc::clone(e)))
                .collect();
            self.providers.store(Arc::new(kept));
        }
    }

    /// The endpoint's entry, created on first use.
    fn endpoint(&self, id: &str, provider: &str) -> Arc<EndpointEntry> {
        if let Some(found) = self.endpoints.load().get(id) {
            return Arc::clone(found);
        }
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.endpoints.load();
        if let Some(found) = current.get(id) {
            return Arc::clone(found);
        }
        let created = Arc::new(EndpointEntry {
            provider: Arc::from(provider),
            state: Mutex::new(EntryState {
                circuit: Circuit::new(),
                settings: Settings::default(),
            }),
            in_flight: AtomicU32::new(0),
        });
        let mut next = Map::clone(&current);
        next.insert(Arc::from(id), Arc::clone(&created));
        self.endpoints.store(Arc::new(next));
        created
    }

    /// The provider's entry, created on first use.
    fn provider(&self, id: &str) -> Arc<ProviderEntry> {
        if let Some(found) = self.providers.load().get(id) {
            return Arc::clone(found);
        }
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.providers.load();
        if let Some(found) = current.get(id) {
            return Arc::clone(found);
        }
        let created = Arc::new(ProviderEntry::default());
        let mut next = Map::clone(&current);
        next.insert(Arc::from(id), Arc::clone(&created));
        self.providers.store(Arc::new(next));
        created
    }
}

impl AttemptObserver for BreakerRegistry {
    fn observe(&self, report: &AttemptReport) {
        let effect = report.class.breaker_effect();
        let existing = self.endpoints.load().get(&*report.endpoint).map(Arc::clone);
        let entry = match (existing, effect) {
            (Some(entry), _) => entry,
            // Nothing to forget about an endpoint never seen.
            (None, BreakerEffect::Ignore) => return,
            (None, _) => self.endpoint(&report.endpoint, &report.provider),
        };
        let (sent, at) = (report.sent_at, report.ended_at);
        let mut state = entry.lock();
        let settings = state.settings;
        let before = state.circuit.phase(at);
        match effect {
            BreakerEffect::Success => state.circuit.on_success(sent, at, &settings),
            BreakerEffect::Failure => {
                state
                    .circuit
                    .on_failure(sent, at, &settings, fastrand::f64());
            }
            BreakerEffect::RateOnly => {
                let wait = report
                    .retry_after
                    .unwrap_or(self.config.rate_limit_default)
                    .min(self.config.rate_limit_max);
                state
                    .circuit
                    .on_rate_limited(sent, at, at + wait, &settings, fastrand::f64());
            }
            BreakerEffect::Credential => {
                state.circuit.on_ignored(sent);
                drop(state);
                let until = at + self.config.credential;
                let provider = self.provider(&report.provider);
                let mut slot = provider
                    .credential_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *slot = Some(slot.map_or(until, |u| u.max(until)));
                tracing::warn!(
                    provider = %report.provider,
                    cooldown = ?self.config.credential,
                    "provider key rejected: credential cooldown"
                );
                return;
            }
            BreakerEffect::Ignore => state.circuit.on_ignored(sent),
        }
        let after = state.circuit.view(at, &settings);
        drop(state);
        if after.phase != before {
            match after.phase {
                Phase::Open => tracing::warn!(
                    endpoint = %report.endpoint,
                    class = report.class.as_str(),
                    open_for = ?after.open_until.map(|u| u - at),
                    consecutive_failures = after.consecutive_failures,
                    failure_rate = after.failure_rate,
                    "breaker opened"
                ),
                Phase::Closed => tracing::info!(endpoint = %report.endpoint, "breaker closed"),
                Phase::HalfOpen => {}
            }
        }
    }
}

impl Default for BreakerRegistry {
    fn default() -> Self {
        Self::new(RegistryConfig::default())
    }
}

impl fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.endpoints.load();
        let mut ids: Vec<&str> = map.keys().map(|id| &**id).collect();
        ids.sort_unstable();
        f.debug_struct("BreakerRegistry")
            .field("config", &self.config)
            .field("endpoints", &ids)
            .finish()
    }
}
