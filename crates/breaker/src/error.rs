use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use switchyard_core::ProxyError;

/// The endpoint's circuit breaker is open (or half-open with its one probe already out).
#[derive(Debug, thiserror::Error)]
#[error("circuit breaker for endpoint '{endpoint}' is open; retry in {retry_in:?}")]
pub struct BreakerOpen {
    pub endpoint: Arc<str>,
    pub retry_in: Duration,
}

/// The endpoint answered 429 recently and is cooling down.
#[derive(Debug, thiserror::Error)]
#[error("endpoint '{endpoint}' is cooling down after a rate limit; retry in {retry_in:?}")]
pub struct RateLimitCooldown {
    pub endpoint: Arc<str>,
    pub retry_in: Duration,
}

/// The provider rejected our key (401 / 403 / 402 / quota) recently; its key is not used again
/// until the cooldown ends.
#[derive(Debug, thiserror::Error)]
#[error("provider '{provider}' is cooling down after a credential failure; retry in {retry_in:?}")]
pub struct CredentialCooldown {
    pub provider: Arc<str>,
    pub retry_in: Duration,
}

/// The endpoint has as many attempts in flight as `limits.max_in_flight_per_endpoint` allows.
#[derive(Debug, thiserror::Error)]
#[error("endpoint '{endpoint}' has {limit} requests in flight, its limit; retry in {retry_in:?}")]
pub struct EndpointSaturated {
    pub endpoint: Arc<str>,
    pub limit: u32,
    pub retry_in: Duration,
}

/// Shared answer of the refusals: they are Switchyard's own decision not to try an
/// endpoint, so they are 503s, never attempts (`class()` stays `None`) and always skipped.
macro_rules! refusal_error {
    ($ty:ty, $code:literal, $key:literal, $field:ident) => {
        impl ProxyError for $ty {
            fn status(&self) -> StatusCode {
                StatusCode::SERVICE_UNAVAILABLE
            }
            fn error_type(&self) -> &'static str {
                "service_unavailable"
            }
            fn code(&self) -> &'static str {
                $code
            }
            fn metadata(&self) -> Option<serde_json::Value> {
                Some(json!({
                    $key: &*self.$field,
                    "retry_in_ms": u64::try_from(self.retry_in.as_millis()).unwrap_or(u64::MAX),
                }))
            }
            fn retry_after(&self) -> Option<Duration> {
                Some(self.retry_in)
            }
            fn skipped(&self) -> bool {
                true
            }
        }
    };
}

refusal_error!(BreakerOpen, "breaker_open", "endpoint", endpoint);
refusal_error!(
    RateLimitCooldown,
    "rate_limit_cooldown",
    "endpoint",
    endpoint
);
refusal_error!(
    EndpointSaturated,
    "endpoint_saturated",
    "endpoint",
    endpoint
);
refusal_error!(
    CredentialCooldown,
    "credential_cooldown",
    "provider",
    provider
);
