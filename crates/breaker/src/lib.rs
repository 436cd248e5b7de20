//! Breaker: per attempt, decides whether the endpoint being tried may be sent to at all.
//!
//! It sits inside Fallback, after Compat and before AttemptTimeout (DESIGN.md §1), because
//! the answer depends on which endpoint this attempt goes to. Three things can refuse:
//!
//! - the endpoint's **circuit breaker** ([`Circuit`]): opens after `consecutive_failures`
//!   failures in a row or a `failure_rate` over `window` (with `min_requests`), stays open for
//!   a doubling, jittered period, then lets one probe through at a time;
//! - the endpoint's **rate-limit cooldown** after a 429 (its `Retry-After`, else 1 s, at most
//!   60 s);
//! - the provider's **credential cooldown** after a rejected key (5 min by default), which
//!   covers every endpoint of that provider: the same key is not tried again meanwhile.
//!
//! A refusal fails the attempt at once, without calling inward, as a 503 [`BreakerOpen`],
//! [`RateLimitCooldown`] or [`CredentialCooldown`] that is marked skipped: the fallback
//! executor moves to the next candidate without counting an attempt.
//!
//! State lives in the long-lived [`BreakerRegistry`], keyed by stable endpoint and provider
//! ids, so it survives policy reloads. This layer does not record outcomes: the fallback
//! executor classifies each attempt once (`core::Class`) and reports it to the registry as an
//! [`AttemptObserver`](switchyard_core::AttemptObserver). Nor does it filter candidates before
//! the plan is made (select does that), wait out a cooldown, or retry (fallback does).

mod error;
mod layer;
mod registry;
mod state;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use switchyard_core::{BoxError, ShortCircuit};
use switchyard_policy::{Endpoint, Snapshot};
use tokio::time::Instant;
use tower::Service;

pub use error::{BreakerOpen, CredentialCooldown, RateLimitCooldown};
pub use layer::BreakerLayer;
pub use registry::{BreakerRegistry, RegistryConfig, StateView};
pub use state::{Admission, Circuit, CircuitView, Phase, Refusal, open_period};

/// Response future of [`Breaker`]: the inner call, or the refusal decided before it.
pub type ResponseFuture<F, R> = ShortCircuit<F, R>;

/// Refuses an attempt whose endpoint is broken or cooling down; passes the others inward.
///
/// Reads the attempt's `Arc<Endpoint>` and, for the thresholds, the `Arc<Snapshot>` from the
/// request's extensions. A request without an endpoint is not an attempt and passes through;
/// without a snapshot the built-in thresholds apply.
#[derive(Clone, Debug)]
pub struct Breaker<S> {
    inner: S,
    registry: Arc<BreakerRegistry>,
}

impl<S> Breaker<S> {
    pub fn new(inner: S, registry: Arc<BreakerRegistry>) -> Self {
        Self { inner, registry }
    }
}

impl<S, B> Service<Request<B>> for Breaker<S>
where
    S: Service<Request<B>, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(endpoint) = req.extensions().get::<Arc<Endpoint>>() else {
            return ShortCircuit::inner(self.inner.call(req));
        };
        let settings = req
            .extensions()
            .get::<Arc<Snapshot>>()
            .map(|s| s.defaults().breaker)
            .unwrap_or_default();
        match self.registry.admit(endpoint, &settings, Instant::now()) {
            Ok(_) => ShortCircuit::inner(self.inner.call(req)),
            Err(refusal) => {
                tracing::debug!(
                    endpoint = %endpoint.id,
                    refusal = ?refusal,
                    "endpoint skipped"
                );
                ShortCircuit::ready(Err(refusal_error(refusal, endpoint)))
            }
        }
    }
}

/// The leaf error a refusal stands for, boxed for the layers above.
pub fn refusal_error(refusal: Refusal, endpoint: &Endpoint) -> BoxError {
    use switchyard_core::Failure;
    match refusal {
        Refusal::BreakerOpen { retry_in } => Failure::boxed(BreakerOpen {
            endpoint: Arc::clone(&endpoint.id),
            retry_in,
        }),
        Refusal::RateLimitCooldown { retry_in } => Failure::boxed(RateLimitCooldown {
            endpoint: Arc::clone(&endpoint.id),
            retry_in,
        }),
        Refusal::CredentialCooldown { retry_in } => Failure::boxed(CredentialCooldown {
            provider: Arc::clone(&endpoint.provider.id),
            retry_in,
        }),
    }
}

#[cfg(test)]
mod tests;
