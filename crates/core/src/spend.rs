use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{BoxError, Pricing};

/// A boxed future, as the spend and ledger traits return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an attempt at one endpoint may cost, for its reservation.
#[derive(Clone, Debug)]
pub struct AttemptPrice {
    /// Policy model id of the endpoint.
    pub model: Arc<str>,
    /// Stable endpoint id.
    pub endpoint: Arc<str>,
    pub pricing: Pricing,
    /// The endpoint's output limit, for the worst case when the request sets no `max_tokens`.
    pub max_output_tokens: Option<u64>,
}

/// The request's budgets, as the fallback executor sees them (DESIGN.md §4 "Budgets"): a
/// reservation of the worst case before each attempt's first upstream byte, a settlement to
/// what the attempt cost the caller when it ends. Put in the request's extensions as
/// `Arc<dyn SpendGuard>` by the budget layer.
pub trait SpendGuard: Send + Sync + 'static {
    /// Reserves the attempt's worst-case cost against every budget that applies, atomically.
    /// `Ok(Some(n))` asks the attempt to cap its output at `n` tokens (so it fits); an error
    /// (`budget_exceeded`, 402) means this attempt must not be sent.
    fn reserve(
        &self,
        attempt: u32,
        price: &AttemptPrice,
    ) -> BoxFuture<'static, Result<Option<u64>, BoxError>>;

    /// Settles the attempt's reservation to `cost` USD (0 for an attempt that failed before
    /// any output reached the caller). Idempotent per attempt.
    fn settle(&self, attempt: u32, cost: f64, estimated: bool) -> BoxFuture<'static, ()>;
}

/// One budget window a reservation counts against, e.g. `team-a:daily:2026-11-21`.
#[derive(Clone, Debug, PartialEq)]
pub struct Charge {
    /// Stable key: budget id, window kind and the window's calendar period.
    pub key: Arc<str>,
    /// USD the window may spend.
    pub cap: f64,
    /// Seconds from now until the window ends (backends expire keys after it).
    pub ttl_secs: u64,
}

/// Spent and reserved USD of one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub spent: f64,
    pub reserved: f64,
}

/// Why a ledger refused or failed.
#[derive(Clone, Debug, PartialEq)]
pub enum LedgerError {
    /// The reservation does not fit this window's cap; nothing was reserved anywhere.
    Exceeded {
        key: Arc<str>,
        spent: f64,
        reserved: f64,
        cap: f64,
    },
    /// The store could not be reached or written.
    Unavailable(String),
}

/// Where spend is kept: the embedded durable log by default, Redis across replicas.
///
/// `reserve` is all-or-nothing across `charges`; `settle` moves a reservation's amount out of
/// `reserved` and `actual` into `spent` on every window it was charged to, exactly once per
/// reservation id (replays are ignored).
pub trait Ledger: Send + Sync + 'static {
    fn reserve<'a>(
        &'a self,
        id: &'a str,
        charges: &'a [Charge],
        amount: f64,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;

    fn settle<'a>(&'a self, id: &'a str, actual: f64) -> BoxFuture<'a, Result<(), LedgerError>>;

    fn totals<'a>(
        &'a self,
        keys: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<Vec<Totals>, LedgerError>>;
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exceeded {
                key,
                spent,
                reserved,
                cap,
            } => write!(
                f,
                "budget window {key} would exceed its cap of ${cap} (spent ${spent:.6}, reserved ${reserved:.6})"
            ),
            Self::Unavailable(why) => write!(f, "spend ledger unavailable: {why}"),
        }
    }
}

impl std::error::Error for LedgerError {}

/// Learns what budgets did: metrics of spend and refusals.
pub trait BudgetEvents: Send + Sync + 'static {
    /// `usd` was charged to budget `budget` (each budget a settlement counts against).
    fn spent(&self, budget: &str, usd: f64);
    /// A reservation against `budget` was refused.
    fn rejected(&self, budget: &str);
}
