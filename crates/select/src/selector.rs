//! The routing decision: [`Selector::plan`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use switchyard_core::{BoxError, Failure};
use switchyard_health::HealthRegistry;
use switchyard_policy::{Candidate, Exclusion, ExclusionReason, Plan, Snapshot, SortPartition};
use switchyard_wire::ParsedRequest;
use tokio::time::Instant;

use crate::error::NoEndpoints;
use crate::filter::{Detail, Filters, names};
use crate::order::{Rules, Slot};
use crate::resolve::resolve;
use crate::session::SessionTable;

/// The header that names a sticky session when the body has no `session_id`.
pub const SESSION_HEADER: &str = "x-session-id";

/// The long-lived state routing reads: live endpoint health, the sticky-session table and the
/// random source of the default balancing. One per process, shared by the Select layer and
/// the explain endpoints; it outlives policy reloads.
pub struct Selector {
    health: Arc<HealthRegistry>,
    sessions: SessionTable,
    /// SplitMix64 state: one atomic add per draw, so concurrent requests never contend on a
    /// lock, and a fixed seed replays the same draws in a single-threaded test.
    rng: AtomicU64,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Selector {
    /// A selector reading `health`, with a default session table (100 000 sessions, 10 min
    /// idle expiry) and a randomly seeded balancer.
    pub fn new(health: Arc<HealthRegistry>) -> Self {
        Self {
            health,
            sessions: SessionTable::default(),
            rng: AtomicU64::new(fastrand::u64(..)),
        }
    }

    /// Seeds the balancer, so tests and benchmarks see a reproducible sequence of draws.
    pub fn with_seed(self, seed: u64) -> Self {
        Self {
            rng: AtomicU64::new(seed),
            ..self
        }
    }

    /// Replaces the session table (capacity and idle expiry).
    pub fn with_sessions(self, sessions: SessionTable) -> Self {
        Self { sessions, ..self }
    }

    /// The live health statistics routing reads.
    pub fn health(&self) -> &Arc<HealthRegistry> {
        &self.health
    }

    /// The sticky-session table.
    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    /// A uniform draw in `[0, 1)`.
    fn unit(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// The plan for one request under one snapshot: which route and models, the effective
    /// preferences, the candidates in the order to try them, and every excluded endpoint.
    ///
    /// Pure apart from reading health, the session table and the random source, so the
    /// Select layer, `switchyard explain` and `POST /admin/explain` share it. Errors are
    /// [`Failure`]s: unknown model or route (404), bad `provider` object (400), no endpoint
    /// left ([`NoEndpoints`], 404).
    pub fn plan(
        &self,
        snapshot: &Snapshot,
        req: &ParsedRequest,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<Plan, BoxError> {
        let resolved = resolve(snapshot, req, headers)?;
        let prefs = &resolved.prefs;
        let route_cap = resolved.route.and_then(|r| r.max_tokens);
        let max_tokens = match (req.max_tokens(), route_cap) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (asked, _) => asked,
        };
        let filters = Filters::new(prefs, req, max_tokens);
        let rules = Rules::new(prefs);

        let total: usize = resolved.models.iter().map(|m| m.endpoints.len()).sum();
        let mut slots: Vec<Slot<'_>> = Vec::with_capacity(total);
        let mut excluded: Vec<Exclusion> = Vec::new();
        for (pos, model) in resolved.models.iter().enumerate() {
            for ep in &model.endpoints {
                match filters.check(ep, model.context_length) {
                    None => slots.push(Slot::new(ep, pos)),
                    Some(fail) => excluded.push(Exclusion {
                        endpoint: Arc::clone(&ep.id),
                        provider: Arc::clone(&ep.provider.id),
                        model: Arc::clone(&ep.model),
                        reason: fail.reason(),
                        detail: Detail(&fail, ep).to_string(),
                    }),
                }
            }
        }

        let models: Vec<Arc<str>> = resolved.models.iter().map(|m| Arc::clone(&m.id)).collect();
        if slots.is_empty() {
            return Err(Failure::boxed(NoEndpoints { models, excluded }));
        }

        // A price sort reads no live state; everything else does (outages or summaries).
        let needs_summaries = rules.needs_summaries();
        if rules.reads_health() {
            for s in &mut slots {
                s.health = self.health.get(&s.ep.id);
                if needs_summaries {
                    s.summary = s.health.as_ref().map(|h| h.summary());
                }
            }
        }

        let mut unit = || self.unit();
        let partition = prefs.sort.map(|s| s.partition()).unwrap_or_default();
        if partition == SortPartition::None {
            rules.order_group(&mut slots, now, &mut unit);
        } else {
            // Slots are grouped by model already; order each group in place.
            let mut start = 0;
            while start < slots.len() {
                let pos = slots[start].model_pos;
                let len = slots[start..]
                    .iter()
                    .take_while(|s| s.model_pos == pos)
                    .count();
                rules.order_group(&mut slots[start..start + len], now, &mut unit);
                start += len;
            }
        }
        rules.push_down_below_preferred(&mut slots);

        let session: Option<Arc<str>> = req
            .session_id()
            .or_else(|| headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Arc::from);
        if let Some(session) = &session {
            self.stick(&mut slots, &models[0], session, now);
        }

        if prefs.allow_fallbacks == Some(false) {
            slots = self.drop_fallbacks(slots, prefs.order.as_deref(), &models, &mut excluded);
            // Possible only when `order` names none of the providers the filters left.
            if slots.is_empty() {
                return Err(Failure::boxed(NoEndpoints { models, excluded }));
            }
        }

        let candidates = slots
            .into_iter()
            .map(|s| Candidate {
                endpoint: Arc::clone(s.ep),
                why: s.why,
                score: s.score,
            })
            .collect();
        Ok(Plan {
            route: resolved.route.cloned(),
            models,
            prefs: resolved.prefs,
            candidates,
            excluded,
            session,
        })
    }

    /// Moves the session's last endpoint to the front while it is still a candidate and has
    /// had no recent outage.
    fn stick(&self, slots: &mut Vec<Slot<'_>>, model: &Arc<str>, session: &Arc<str>, now: Instant) {
        let Some(endpoint) = self.sessions.get(model, session, now) else {
            return;
        };
        let Some(i) = slots.iter().position(|s| s.ep.id == endpoint) else {
            return;
        };
        if slots[i].health.is_none() {
            slots[i].health = self.health.get(&endpoint);
        }
        if slots[i].outage(now) {
            return;
        }
        let mut slot = slots.remove(i);
        slot.why = "sticky";
        slot.score = None;
        slots.insert(0, slot);
    }

    /// `allow_fallbacks: false`: per model, only the providers named in `order` when it is set,
    /// else only the first candidate; the rest become exclusions.
    fn drop_fallbacks<'s>(
        &self,
        slots: Vec<Slot<'s>>,
        order: Option<&[String]>,
        models: &[Arc<str>],
        excluded: &mut Vec<Exclusion>,
    ) -> Vec<Slot<'s>> {
        let order = order.filter(|o| !o.is_empty());
        let mut seen = vec![false; models.len()];
        let mut kept = Vec::with_capacity(slots.len());
        for s in slots {
            let keep = match order {
                Some(order) => names(order, s.ep),
                None => !std::mem::replace(&mut seen[s.model_pos], true),
            };
            if keep {
                kept.push(s);
                continue;
            }
            let detail = match order {
                Some(_) => format!(
                    "provider.allow_fallbacks is false and provider '{}' is not listed in \
                     provider.order",
                    s.ep.provider.id
                ),
                None => format!(
                    "provider.allow_fallbacks is false: only the first endpoint of model '{}' \
                     is tried",
                    s.ep.model
                ),
            };
            excluded.push(Exclusion {
                endpoint: Arc::clone(&s.ep.id),
                provider: Arc::clone(&s.ep.provider.id),
                model: Arc::clone(&s.ep.model),
                reason: ExclusionReason::AllowFallbacks,
                detail,
            });
        }
        kept
    }
}
