use std::time::Duration;

use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};
use switchyard_core::ProxyError;

/// One line of the attempt trail, as callers see it in error metadata.
#[derive(Clone, Debug)]
pub struct AttemptSummary {
    pub attempt: u32,
    pub endpoint: String,
    pub provider: String,
    pub model: String,
    /// The verdict (`core::Class::as_str`), or why the endpoint was skipped.
    pub outcome: &'static str,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub detail: String,
}

impl AttemptSummary {
    fn json(&self) -> Value {
        json!({
            "attempt": self.attempt,
            "endpoint": self.endpoint,
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "detail": self.detail,
        })
    }
}

fn trail_json(trail: &[AttemptSummary]) -> Value {
    json!({ "attempts": trail.iter().map(AttemptSummary::json).collect::<Vec<_>>() })
}

/// Every attempt failed (or the retry budget ran out before the plan did).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct ProvidersExhausted {
    pub trail: Vec<AttemptSummary>,
    /// Set when the retry budget, not the plan, ended the request.
    pub budget_exhausted: bool,
}

impl ProvidersExhausted {
    fn message(&self) -> String {
        let tried = self.trail.iter().filter(|a| a.attempt > 0).count();
        let last = self
            .trail
            .iter()
            .rev()
            .find(|a| a.attempt > 0)
            .map(|a| format!("; last: {} on {} ({})", a.outcome, a.endpoint, a.detail))
            .unwrap_or_default();
        let why = if self.budget_exhausted {
            " (retry budget exhausted)"
        } else {
            ""
        };
        format!("all {tried} attempts failed{why}{last}")
    }
}

impl ProxyError for ProvidersExhausted {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_GATEWAY
    }
    fn error_type(&self) -> &'static str {
        "upstream_error"
    }
    fn code(&self) -> &'static str {
        if self.budget_exhausted {
            "retry_budget_exhausted"
        } else {
            "providers_exhausted"
        }
    }
    fn metadata(&self) -> Option<Value> {
        Some(trail_json(&self.trail))
    }
    fn extra_headers(&self, headers: &mut http::HeaderMap) {
        let n = self.trail.iter().filter(|a| a.attempt > 0).count();
        headers.insert("x-switchyard-attempts", HeaderValue::from(n));
    }
}

/// No candidate could be tried at all: every one is behind an open breaker or cooling down.
#[derive(Debug, thiserror::Error)]
#[error("no healthy endpoint: every candidate is unavailable ({})", self.skipped.iter().map(|s| format!("{}: {}", s.endpoint, s.outcome)).collect::<Vec<_>>().join(", "))]
pub struct NoHealthyEndpoint {
    pub skipped: Vec<AttemptSummary>,
    /// The soonest any of them may be tried again.
    pub retry_in: Option<Duration>,
}

impl ProxyError for NoHealthyEndpoint {
    fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }
    fn error_type(&self) -> &'static str {
        "service_unavailable"
    }
    fn code(&self) -> &'static str {
        "no_healthy_endpoint"
    }
    fn metadata(&self) -> Option<Value> {
        Some(trail_json(&self.skipped))
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_in
    }
    fn extra_headers(&self, headers: &mut http::HeaderMap) {
        headers.insert("x-switchyard-attempts", HeaderValue::from(0));
    }
}

/// The request reached Fallback without a plan: a wiring bug.
#[derive(Debug, thiserror::Error)]
#[error("the request has no routing plan")]
pub struct NoPlan;

impl ProxyError for NoPlan {
    fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
    fn error_type(&self) -> &'static str {
        "internal_error"
    }
    fn code(&self) -> &'static str {
        "internal_error"
    }
}
