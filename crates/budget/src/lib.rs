//! Budgets: spend caps that hold under concurrency, across restarts and across replicas.
//!
//! [`BudgetLayer`] sits after Select (it needs the route to know which budgets apply) and
//! before Fallback. For a request that any budget may cover it puts a [`RequestBudget`] in the
//! extensions as `Arc<dyn SpendGuard>`; the fallback executor then
//!
//! - **reserves** before every attempt's first upstream byte the attempt's worst case — the
//!   prompt estimate plus `max_tokens` (or the endpoint's output limit, or
//!   [`DEFAULT_WORST_CASE_OUTPUT`]) at that endpoint's prices — against every window of every
//!   budget that applies (`global`, the request's route, its tag — header `x-switchyard-tag`
//!   or the body's `user` — and the attempt's model), atomically in the ledger; a fallback to
//!   another endpoint reserves again at its prices;
//! - **settles** when the attempt ends to what it cost the caller: the provider's reported
//!   usage (or an estimate when it reported none, never zero for output the caller received);
//!   zero for an attempt that failed before any output reached the caller.
//!
//! A reservation that does not fit is a 402 `budget_exceeded` naming the budget and window,
//! with `Retry-After` at the window's reset; with the route's `fit_to_budget` the request's
//! `max_tokens` is lowered so it fits instead. Per-request caps (`max_cost_usd`,
//! `max_tokens`) are checked without touching the ledger. Windows are calendar days and months
//! in each budget's time zone (UTC by default).
//!
//! The ledger ([`switchyard_core::Ledger`]) is the embedded durable log by default, or Redis
//! across replicas; when it cannot be reached budgets fail closed (503) unless configured to
//! fail open.

mod error;
mod guard;
mod window;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::Request;
use jiff::Timestamp;
use serde_json::{Value, json};
use switchyard_core::{BudgetEvents, Ledger, SpendGuard};
use switchyard_policy::{Plan, Snapshot};
use switchyard_wire::ParsedRequest;
use tower::{Layer, Service};

pub use error::{BudgetExceeded, LedgerUnavailable};
pub use guard::{DEFAULT_WORST_CASE_OUTPUT, RequestBudget};
pub use window::{Period, WindowKind, period};

/// The header that names the budget tag (else the body's `user`).
pub const TAG_HEADER: &str = "x-switchyard-tag";

/// The wall clock budgets are computed on; a test can replace it to cross midnight.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The process-wide budget state: the ledger, the clock, and the fail-open choice.
pub struct Budgets {
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) fail_open: bool,
    pub(crate) events: Option<Arc<dyn BudgetEvents>>,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("fail_open", &self.fail_open)
            .finish_non_exhaustive()
    }
}

impl Budgets {
    pub fn new(ledger: Arc<dyn Ledger>, clock: Arc<dyn Clock>, fail_open: bool) -> Self {
        Self {
            ledger,
            clock,
            fail_open,
            events: None,
        }
    }

    /// Reports spend and refusals (metrics) to `events`.
    pub fn with_events(mut self, events: Arc<dyn BudgetEvents>) -> Self {
        self.events = Some(events);
        self
    }

    /// `GET /admin/budgets`: per budget and window, spent, reserved, cap and reset time.
    pub async fn status_json(&self, snapshot: &Snapshot) -> Value {
        let now = self.clock.now();
        let mut rows = Vec::new();
        let mut keys = Vec::new();
        for b in snapshot.budgets() {
            for (kind, cap) in [
                (WindowKind::Daily, b.daily_usd),
                (WindowKind::Monthly, b.monthly_usd),
            ] {
                let Some(cap) = cap else { continue };
                let p = period(kind, now, &b.timezone);
                keys.push(Arc::<str>::from(format!(
                    "{}:{}:{}",
                    b.id,
                    kind.as_str(),
                    p.label
                )));
                rows.push((b, kind, cap, p));
            }
        }
        let totals = self.ledger.totals(&keys).await;
        let budgets: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(i, (b, kind, cap, p))| {
                let t = totals.as_ref().ok().and_then(|t| t.get(i)).copied();
                json!({
                    "budget": &*b.id,
                    "window": kind.as_str(),
                    "period": p.label,
                    "timezone": b.timezone.iana_name().unwrap_or("UTC"),
                    "cap_usd": cap,
                    "spent_usd": t.map(|t| t.spent),
                    "reserved_usd": t.map(|t| t.reserved),
                    "remaining_usd": t.map(|t| (cap - t.spent - t.reserved).max(0.0)),
                    "resets_at": p.ends_at.to_string(),
                })
            })
            .collect();
        json!({
            "budgets": budgets,
            "ledger_error": totals.err().map(|e| e.to_string()),
        })
    }
}

/// See the crate documentation.
#[derive(Clone, Debug)]
pub struct BudgetLayer {
    budgets: Arc<Budgets>,
}

impl BudgetLayer {
    pub fn new(budgets: Arc<Budgets>) -> Self {
        Self { budgets }
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget {
            inner,
            budgets: self.budgets.clone(),
        }
    }
}

/// See the crate documentation.
#[derive(Clone, Debug)]
pub struct Budget<S> {
    inner: S,
    budgets: Arc<Budgets>,
}

impl<S> Service<Request<Arc<ParsedRequest>>> for Budget<S>
where
    S: Service<Request<Arc<ParsedRequest>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    // The guard is installed before the call; settling happens per attempt, below.
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Arc<ParsedRequest>>) -> Self::Future {
        let snapshot = req.extensions().get::<Arc<Snapshot>>().cloned();
        // No budgets in the policy: no guard, no cost on the hot path.
        if let Some(snapshot) = snapshot.filter(|s| !s.budgets().is_empty()) {
            let route = req
                .extensions()
                .get::<Arc<Plan>>()
                .and_then(|p| p.route.clone());
            let tag = req
                .headers()
                .get(TAG_HEADER)
                .and_then(|v| v.to_str().ok())
                .or_else(|| req.body().user())
                .map(Arc::from);
            let request_id: Arc<str> = req
                .headers()
                .get("x-switchyard-request-id")
                .and_then(|v| v.to_str().ok())
                .map_or_else(anonymous_id, Arc::from);
            let guard: Arc<dyn SpendGuard> = Arc::new(RequestBudget {
                budgets: self.budgets.clone(),
                route,
                request_id,
                tag,
                prompt_tokens: req.body().estimated_prompt_tokens(),
                max_tokens: req.body().max_tokens(),
                snapshot,
                open: Arc::new(Mutex::new(Vec::new())),
            });
            req.extensions_mut().insert(guard);
        }
        self.inner.call(req)
    }
}

/// A reservation id for a request that reached the layer without a request id (only in
/// tests that build the stack partially): unique within the process.
fn anonymous_id() -> Arc<str> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Arc::from(format!("anon-{n}"))
}

impl Drop for RequestBudget {
    /// Attempts still open when the request is gone (the client left before they ended)
    /// produced nothing the caller received: they are released at zero.
    fn drop(&mut self) {
        for attempt in self.unsettled() {
            let fut = self.settle(attempt, 0.0, false);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(fut);
            }
        }
    }
}

#[cfg(test)]
mod tests;
