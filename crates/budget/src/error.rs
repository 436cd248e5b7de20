use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use switchyard_core::ProxyError;

/// A reservation does not fit a budget: nothing is sent upstream (402).
#[derive(Debug, thiserror::Error)]
#[error(
    "budget '{budget}' {window} limit of ${cap} would be exceeded (spent ${spent:.6}, reserved ${reserved:.6}, this request needs up to ${needed:.6})"
)]
pub struct BudgetExceeded {
    pub budget: String,
    /// `daily`, `monthly` or `request`.
    pub window: &'static str,
    pub cap: f64,
    pub spent: f64,
    pub reserved: f64,
    pub needed: f64,
    /// Until the window resets; none for a per-request cap.
    pub resets_in: Option<Duration>,
}

impl ProxyError for BudgetExceeded {
    fn status(&self) -> StatusCode {
        StatusCode::PAYMENT_REQUIRED
    }
    fn error_type(&self) -> &'static str {
        "budget_exceeded"
    }
    fn code(&self) -> &'static str {
        "budget_exceeded"
    }
    fn metadata(&self) -> Option<Value> {
        Some(json!({
            "budget": self.budget,
            "window": self.window,
            "cap_usd": self.cap,
            "spent_usd": self.spent,
            "reserved_usd": self.reserved,
            "needed_usd": self.needed,
            "resets_in_s": self.resets_in.map(|d| d.as_secs()),
        }))
    }
    fn retry_after(&self) -> Option<Duration> {
        self.resets_in
    }
    /// A dearer endpoint not fitting is no reason to refuse a cheaper one: the fallback
    /// executor moves on, and answers 402 only if no candidate fits.
    fn skipped(&self) -> bool {
        true
    }
}

/// The spend ledger cannot be reached and budgets fail closed (503).
#[derive(Debug, thiserror::Error)]
#[error("budgets cannot be checked: {0}")]
pub struct LedgerUnavailable(pub String);

impl ProxyError for LedgerUnavailable {
    fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }
    fn error_type(&self) -> &'static str {
        "service_unavailable"
    }
    fn code(&self) -> &'static str {
        "ledger_unavailable"
    }
    fn retry_after(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
}
