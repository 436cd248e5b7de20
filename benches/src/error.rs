//! Errors of the fixtures, and the errors the benchmarks render.

use http::StatusCode;
use serde_json::{Value, json};
use switchyard_core::ProxyError;
use switchyard_wire::RequestError;

/// A fixture could not be built; a benchmark that hits this measures nothing and stops.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The bench policy does not compile (every diagnostic, joined).
    #[error("the bench policy does not compile: {0}")]
    Policy(String),
    /// A request names a model the bench policy lacks.
    #[error("model `{0}` is not in the bench policy")]
    UnknownModel(String),
    /// A fixture request does not parse.
    #[error("fixture request rejected: {0}")]
    Request(#[from] RequestError),
    /// A fixture answer was not what the benchmark expects.
    #[error("unexpected fixture answer: {0}")]
    Unexpected(String),
}

/// The attempt reached the canned upstream without an endpoint in its extensions: the
/// stack's dispatch did not run.
#[derive(Debug, thiserror::Error)]
#[error("the attempt carries no endpoint")]
pub struct MissingEndpoint;

impl ProxyError for MissingEndpoint {
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

/// One failed attempt in [`ProvidersExhausted`]'s trail.
#[derive(Clone, Debug)]
pub struct FailedAttempt {
    pub provider: &'static str,
    pub model: &'static str,
    /// The upstream's status, or `None` when it never answered.
    pub status: Option<u16>,
    /// Low-cardinality reason, as metrics label it.
    pub reason: &'static str,
}

/// The heaviest error Switchyard renders: a 502 after every attempt failed, with the attempt
/// trail in `metadata` and a `Retry-After`. The fallback layer's own error will have this
/// shape; this stand-in lets the renderer be measured on it today.
#[derive(Clone, Debug, thiserror::Error)]
#[error("all {} attempts failed; the last upstream answered 503", attempts.len())]
pub struct ProvidersExhausted {
    pub attempts: Vec<FailedAttempt>,
}

impl ProvidersExhausted {
    /// Three attempts over two providers and two models.
    pub fn sample() -> Self {
        Self {
            attempts: vec![
                FailedAttempt {
                    provider: "acme",
                    model: "fast-chat",
                    status: Some(429),
                    reason: "rate_limited",
                },
                FailedAttempt {
                    provider: "backup",
                    model: "fast-chat",
                    status: None,
                    reason: "connect_failed",
                },
                FailedAttempt {
                    provider: "backup",
                    model: "smart-chat",
                    status: Some(503),
                    reason: "upstream_5xx",
                },
            ],
        }
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
        "providers_exhausted"
    }
    fn metadata(&self) -> Option<Value> {
        let attempts: Vec<Value> = self
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "provider": a.provider,
                    "model": a.model,
                    "status": a.status,
                    "reason": a.reason,
                })
            })
            .collect();
        Some(json!({ "attempts": attempts }))
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(1500))
    }
}
