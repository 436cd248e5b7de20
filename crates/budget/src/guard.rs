//! One request's budgets: reserve per attempt, settle per attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::{
    AttemptPrice, BoxError, BoxFuture, Charge, Failure, Ledger, LedgerError, SpendGuard,
};
use switchyard_policy::{Budget, BudgetScope, Route, Snapshot};

use crate::window::{WindowKind, period};
use crate::{BudgetExceeded, Budgets, LedgerUnavailable};

/// When neither the request nor the endpoint bounds the output, the worst case assumes this
/// many output tokens (and says so in the reservation); providers' usage settles the truth.
pub const DEFAULT_WORST_CASE_OUTPUT: u64 = 4096;

/// Output small enough that capping a request to it is pointless: refuse instead.
const MIN_FITTED_TOKENS: u64 = 16;

/// An open reservation: attempt, amount, and the budgets it counts against.
pub(crate) type Open = (u32, f64, Vec<Arc<str>>);

/// The budgets of one request, as the fallback executor uses them.
pub struct RequestBudget {
    pub(crate) budgets: Arc<Budgets>,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) request_id: Arc<str>,
    pub(crate) tag: Option<Arc<str>>,
    pub(crate) prompt_tokens: u64,
    pub(crate) max_tokens: Option<u64>,
    /// Attempts with an open reservation, and its amount.
    pub(crate) open: Arc<Mutex<Vec<Open>>>,
}

impl std::fmt::Debug for RequestBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBudget")
            .field("request_id", &self.request_id)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl RequestBudget {
    fn applies(&self, b: &Budget, model: &str) -> bool {
        match &b.scope {
            BudgetScope::Global => true,
            BudgetScope::Route(r) => self.route.as_ref().is_some_and(|x| x.id == *r),
            BudgetScope::Tag(t) => self.tag.as_ref().is_some_and(|x| x == t),
            BudgetScope::Model(m) => **m == *model,
        }
    }

    fn rid(&self, attempt: u32) -> String {
        format!("{}#{attempt}", self.request_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Open>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What one attempt's reservation will ask for.
struct Ask {
    charges: Vec<Charge>,
    /// Per charge: budget id, window kind, seconds to reset.
    labels: Vec<(Arc<str>, WindowKind, u64)>,
    out_tokens: u64,
    /// The per-request ceilings that apply (budget id, USD).
    request_caps: Vec<(Arc<str>, f64)>,
    token_ceiling: Option<u64>,
}

impl SpendGuard for RequestBudget {
    fn reserve(
        &self,
        attempt: u32,
        price: &AttemptPrice,
    ) -> BoxFuture<'static, Result<Option<u64>, BoxError>> {
        let now = self.budgets.clock.now();
        let mut ask = Ask {
            charges: Vec::new(),
            labels: Vec::new(),
            out_tokens: 0,
            request_caps: Vec::new(),
            token_ceiling: None,
        };
        for b in self.snapshot.budgets() {
            if !self.applies(b, &price.model) {
                continue;
            }
            if let Some(t) = b.max_tokens {
                ask.token_ceiling = Some(ask.token_ceiling.map_or(t, |c| c.min(t)));
            }
            if let Some(c) = b.max_cost_usd {
                ask.request_caps.push((b.id.clone(), c));
            }
            for (kind, cap) in [
                (WindowKind::Daily, b.daily_usd),
                (WindowKind::Monthly, b.monthly_usd),
            ] {
                let Some(cap) = cap else { continue };
                let p = period(kind, now, &b.timezone);
                let secs = u64::try_from(p.ends_at.as_second() - now.as_second()).unwrap_or(0);
                ask.charges.push(Charge {
                    key: format!("{}:{}:{}", b.id, kind.as_str(), p.label).into(),
                    cap,
                    // Kept a day past the window so late settlements still find it.
                    ttl_secs: secs + 86_400,
                });
                ask.labels.push((b.id.clone(), kind, secs));
            }
        }
        if ask.charges.is_empty() && ask.request_caps.is_empty() && ask.token_ceiling.is_none() {
            return Box::pin(async { Ok(None) });
        }
        let requested = self.max_tokens.or(price.max_output_tokens);
        ask.out_tokens = match (requested, ask.token_ceiling) {
            (Some(r), Some(c)) => r.min(c),
            (Some(r), None) => r,
            (None, Some(c)) => c,
            (None, None) => DEFAULT_WORST_CASE_OUTPUT,
        };
        // Output is capped when a ceiling lowered it below what the request would have used.
        let mut cap_tokens = ask
            .token_ceiling
            .filter(|c| requested.is_none_or(|r| *c < r));

        let fit = self.route.as_ref().is_some_and(|r| r.fit_to_budget);
        let pricing = price.pricing;
        let cost_of = move |out: u64, prompt: u64| pricing.cost(prompt, out);
        let prompt = self.prompt_tokens;

        // Per-request caps first: no ledger round trip needed to refuse.
        for (budget, max) in &ask.request_caps {
            let needed = cost_of(ask.out_tokens, prompt);
            if needed > *max {
                match fit_tokens(*max, prompt, &pricing) {
                    Some(t) if fit && t >= MIN_FITTED_TOKENS => {
                        ask.out_tokens = t.min(ask.out_tokens);
                        cap_tokens = Some(ask.out_tokens);
                    }
                    _ => {
                        if let Some(ev) = &self.budgets.events {
                            ev.rejected(budget);
                        }
                        return refuse(BudgetExceeded {
                            budget: budget.to_string(),
                            window: "request",
                            cap: *max,
                            spent: 0.0,
                            reserved: 0.0,
                            needed,
                            resets_in: None,
                        });
                    }
                }
            }
        }
        if ask.charges.is_empty() {
            return Box::pin(async move { Ok(cap_tokens) });
        }

        let ledger: Arc<dyn Ledger> = self.budgets.ledger.clone();
        let fail_open = self.budgets.fail_open;
        let rid = self.rid(attempt);
        let amount = cost_of(ask.out_tokens, prompt);
        let open = self.open.clone();
        let events = self.budgets.events.clone();
        Box::pin(async move {
            let mut amount = amount;
            let mut tried_fit = false;
            loop {
                match ledger.reserve(&rid, &ask.charges, amount).await {
                    Ok(()) => {
                        let mut ids: Vec<Arc<str>> =
                            ask.labels.iter().map(|(b, _, _)| b.clone()).collect();
                        ids.dedup();
                        open.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((attempt, amount, ids));
                        return Ok(cap_tokens);
                    }
                    Err(LedgerError::Exceeded {
                        key,
                        spent,
                        reserved,
                        cap,
                    }) => {
                        let remaining = cap - spent - reserved;
                        if fit && !tried_fit {
                            tried_fit = true;
                            if let Some(t) = fit_tokens(remaining, prompt, &pricing)
                                && t >= MIN_FITTED_TOKENS
                            {
                                let t = t.min(ask.out_tokens);
                                amount = cost_of(t, prompt);
                                cap_tokens = Some(t);
                                continue;
                            }
                        }
                        let (budget_id, kind, secs): (Arc<str>, WindowKind, u64) = ask
                            .charges
                            .iter()
                            .position(|c| c.key == key)
                            .and_then(|i| ask.labels.get(i).cloned())
                            .unwrap_or((key.clone(), WindowKind::Daily, 0));
                        if let Some(ev) = &events {
                            ev.rejected(&budget_id);
                        }
                        return Err(Failure::boxed(BudgetExceeded {
                            budget: budget_id.to_string(),
                            window: kind.as_str(),
                            cap,
                            spent,
                            reserved,
                            needed: amount,
                            resets_in: Some(Duration::from_secs(secs.max(1))),
                        }));
                    }
                    Err(LedgerError::Unavailable(why)) => {
                        if fail_open {
                            tracing::warn!(error = %why, "spend ledger unavailable; budgets fail open");
                            return Ok(cap_tokens);
                        }
                        return Err(Failure::boxed(LedgerUnavailable(why)));
                    }
                }
            }
        })
    }

    fn settle(&self, attempt: u32, cost: f64, estimated: bool) -> BoxFuture<'static, ()> {
        let Some((reserved, budgets)) = self.take(attempt) else {
            return Box::pin(async {});
        };
        if let Some(ev) = &self.budgets.events {
            for b in &budgets {
                ev.spent(b, cost);
            }
        }
        let ledger: Arc<dyn Ledger> = self.budgets.ledger.clone();
        let rid = self.rid(attempt);
        if estimated {
            tracing::debug!(request_id = %self.request_id, attempt, cost, "settling an estimated cost");
        }
        if cost > reserved * 1.000_001 + 1e-9 {
            tracing::warn!(request_id = %self.request_id, attempt, cost, reserved, "attempt cost more than its reservation");
        }
        Box::pin(async move {
            if let Err(e) = ledger.settle(&rid, cost).await {
                tracing::error!(error = %e, reservation = %rid, "settlement failed; the reservation stays counted as spent");
            }
        })
    }
}

impl RequestBudget {
    fn take(&self, attempt: u32) -> Option<(f64, Vec<Arc<str>>)> {
        let mut open = self.lock();
        let i = open.iter().position(|(a, _, _)| *a == attempt)?;
        let (_, amount, budgets) = open.swap_remove(i);
        Some((amount, budgets))
    }

    /// Attempts reserved and never settled (the request was dropped mid-attempt).
    pub(crate) fn unsettled(&self) -> Vec<u32> {
        self.lock().iter().map(|(a, _, _)| *a).collect()
    }
}

fn refuse(e: BudgetExceeded) -> BoxFuture<'static, Result<Option<u64>, BoxError>> {
    Box::pin(async move { Err(Failure::boxed(e)) })
}

/// The most output tokens that keep the cost within `usd`, if any do.
fn fit_tokens(usd: f64, prompt: u64, pricing: &switchyard_core::Pricing) -> Option<u64> {
    let fixed = pricing.cost(prompt, 0);
    if usd <= fixed {
        return None;
    }
    if pricing.completion <= 0.0 {
        return Some(u64::MAX);
    }
    Some(((usd - fixed) * 1e6 / pricing.completion).floor() as u64)
}
