//! The proxy service, composed once: this file is the only place that says in which order the
//! layers run, and why (DESIGN.md §1).
//!
//! Everything that depends on which endpoint is being tried sits inside the per-attempt
//! fallback executor, or it would apply to the first candidate only. The service is boxed once, here,
//! at the stack's edge.

mod parse;
mod request_id;
mod router;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use switchyard_breaker::{BreakerLayer, BreakerRegistry};
use switchyard_budget::{BudgetLayer, Budgets, SystemClock};
use switchyard_compat::CompatLayer;
use switchyard_core::{AttemptObserver, BoxError, ProxyBody};
use switchyard_fallback::{FallbackLayer, RetryBudget};
use switchyard_health::HealthRegistry;
use switchyard_ledger::MemoryLedger;
use switchyard_policy_watch::{PinPolicyLayer, PolicyStore};
use switchyard_respond::RespondLayer;
use switchyard_select::{SelectLayer, Selector};
use switchyard_timeout::{AttemptTimeoutLayer, DeadlineLayer};
use switchyard_upstream::Upstream;
use switchyard_wire::ParsedRequest;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder};

pub use parse::{BodyTooLarge, ParseLayer, UnreadableBody};
pub use request_id::{RequestIdLayer, new_request_id};
pub use router::Router;

/// The proxy listener's service, ready for hyper.
pub type ProxyService<B> = BoxCloneService<Request<B>, Response<ProxyBody>, Infallible>;

/// The long-lived state the layers share, which outlives every policy reload: endpoint
/// health (fed by every attempt, read by the selector) and the selector's sticky sessions.
#[derive(Clone)]
pub struct Registries {
    pub health: Arc<HealthRegistry>,
    pub selector: Arc<Selector>,
    pub breakers: Arc<BreakerRegistry>,
    pub retry_budget: Arc<RetryBudget>,
    /// Budget spend, kept in the ledger (the embedded durable log, or Redis).
    pub budgets: Arc<Budgets>,
    /// Further observers of every attempt (metrics, the generation record).
    pub extra_observers: Vec<Arc<dyn AttemptObserver>>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("health", &self.health)
            .field("breakers", &self.breakers)
            .field("budgets", &self.budgets)
            .field("extra_observers", &self.extra_observers.len())
            .finish_non_exhaustive()
    }
}

impl Registries {
    /// Registries with an in-memory ledger: for tests, benches and `explain`.
    pub fn new() -> Self {
        Self::with_budgets(Arc::new(Budgets::new(
            Arc::new(MemoryLedger::new()),
            Arc::new(SystemClock),
            false,
        )))
    }

    /// Registries whose budgets live in the given ledger.
    pub fn with_budgets(budgets: Arc<Budgets>) -> Self {
        let health = Arc::new(HealthRegistry::default());
        Self {
            selector: Arc::new(Selector::new(health.clone())),
            health,
            breakers: Arc::new(BreakerRegistry::default()),
            retry_budget: Arc::new(RetryBudget::new()),
            budgets,
            extra_observers: Vec::new(),
        }
    }

    /// Adds an observer of every attempt's verdict.
    pub fn with_observer(mut self, observer: Arc<dyn AttemptObserver>) -> Self {
        self.extra_observers.push(observer);
        self
    }

    /// Everything that learns from each attempt's verdict.
    pub fn observers(&self) -> Vec<Arc<dyn AttemptObserver>> {
        let mut all: Vec<Arc<dyn AttemptObserver>> =
            vec![self.health.clone(), self.breakers.clone()];
        all.extend(self.extra_observers.iter().cloned());
        all
    }

    /// After a reload: drops the state of endpoints the policy no longer has; unchanged ids
    /// keep theirs (breaker state, health, sessions pointing at them).
    pub fn reconcile(&self, snapshot: &switchyard_policy::Snapshot) {
        let keep = |id: &str| snapshot.endpoint(id).is_some();
        self.health.retain(&keep);
        self.breakers.retain(&keep);
    }
}

impl Default for Registries {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds the proxy service over the real upstream client.
pub fn proxy<B>(
    store: Arc<PolicyStore>,
    registries: &Registries,
    upstream: Upstream,
) -> ProxyService<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    proxy_with(store, registries, upstream)
}

/// Builds the proxy service over any innermost service that sends one attempt: the real
/// [`Upstream`] in production, an in-process fake in stack tests and benchmarks.
pub fn proxy_with<B, U>(
    store: Arc<PolicyStore>,
    registries: &Registries,
    upstream: U,
) -> ProxyService<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    U: Service<Request<Arc<ParsedRequest>>, Response = Response<ProxyBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    U::Future: Send + 'static,
{
    // Per request, from the pinned snapshot on: a plan, then attempts until one succeeds.
    let llm = ServiceBuilder::new()
        // Buffers the body under the policy's size cap and parses it once into a typed view;
        // needs the pinned snapshot for the cap, and everything inward needs the view.
        .layer(ParseLayer::new())
        // The request's total time, across every attempt, backoff and wait below it; a
        // stream still running at the deadline is cut with an explicit error event.
        .layer(DeadlineLayer::new())
        // Turns the requested models into an ordered plan of endpoints; once per request.
        .layer(SelectLayer::new(registries.selector.clone()))
        // The request's spend guard: which budgets apply depends on the route Select chose,
        // and every attempt below reserves its worst case before its first upstream byte.
        .layer(BudgetLayer::new(registries.budgets.clone()))
        // Walks the plan: classifies each attempt once, retries or moves on, holds streams
        // until their commit point, continues cut streams. Everything below runs per attempt,
        // because it depends on the endpoint being tried.
        .layer(FallbackLayer::new(
            registries.observers(),
            registries.retry_budget.clone(),
        ))
        // The endpoint gets only parameters it accepts.
        .layer(CompatLayer::new())
        // May we send to this endpoint at all? Open breakers, cooldowns and endpoints at their
        // in-flight limit are skipped, not tried; an admitted attempt holds its place until done.
        .layer(BreakerLayer::new(registries.breakers.clone()))
        // First token, idle between chunks, attempt total — never past the deadline.
        .layer(AttemptTimeoutLayer::new())
        // Innermost: the pooled client, the provider's key, the wire adapters.
        .service(upstream);

    let svc = ServiceBuilder::new()
        // Outermost: every response, errors included, carries a fresh request id.
        .layer(RequestIdLayer::new())
        // Every error below becomes a response in the caller's wire format; nothing escapes.
        .layer(RespondLayer::new())
        // One arc-swap load per request: the whole request, stream included, sees one policy.
        .layer(PinPolicyLayer::new(store))
        // Paths and methods; `/v1/models` is answered here from the pinned snapshot.
        .service(Router::new(llm));
    BoxCloneService::new(svc)
}
