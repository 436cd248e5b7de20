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
//!   covers every endpoint of that provider: the same key is not tried again meanwhile;
//! - the endpoint's **in-flight limit** (`limits.max_in_flight_per_endpoint`, 256 by
//!   default): an endpoint with that many attempts out sheds the next one instead of queueing
//!   it. An admitted attempt holds an [`InFlightPermit`] inside its response body, so a stream
//!   counts until it ends or its reader goes away.
//!
//! A refusal fails the attempt at once, without calling inward, as a 503 [`BreakerOpen`],
//! [`RateLimitCooldown`], [`CredentialCooldown`] or [`EndpointSaturated`] that is marked
//! skipped: the fallback executor moves to the next candidate without counting an attempt.
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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use switchyard_core::{BoxError, Event, EventSource, ProxyBody, ShortCircuit};
use switchyard_policy::{Endpoint, Limits, Snapshot};
use tokio::time::Instant;
use tower::Service;

pub use error::{BreakerOpen, CredentialCooldown, EndpointSaturated, RateLimitCooldown};
pub use layer::BreakerLayer;
pub use registry::{BreakerRegistry, InFlightPermit, RegistryConfig, StateView};
pub use state::{Admission, Circuit, CircuitView, Phase, Refusal, open_period};

/// Response future of [`Breaker`]: the inner call holding its in-flight permit, or the
/// refusal decided before it.
pub type ResponseFuture<F, R> = ShortCircuit<Holding<F>, R>;

/// A response that can keep an attempt's [`InFlightPermit`] for as long as it matters.
pub trait HoldPermit {
    /// This response, keeping `permit` until the attempt is over.
    fn hold(self, permit: InFlightPermit) -> Self;
}

impl HoldPermit for http::Response<ProxyBody> {
    /// A streamed body keeps the permit until it is dropped; a body already in memory ends
    /// the attempt, and the permit is given back at once.
    fn hold(self, permit: InFlightPermit) -> Self {
        let (parts, body) = self.into_parts();
        let body = match body.into_events() {
            Ok(source) => ProxyBody::events(Permitted {
                source,
                _permit: permit,
            }),
            Err(full) => full,
        };
        http::Response::from_parts(parts, body)
    }
}

/// An attempt's event stream with its in-flight permit.
struct Permitted {
    source: Pin<Box<dyn EventSource>>,
    _permit: InFlightPermit,
}

impl EventSource for Permitted {
    fn poll_event(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, BoxError>>> {
        self.source.as_mut().poll_event(cx)
    }
}

pin_project_lite::pin_project! {
    /// The inner call of an admitted attempt; its response takes the permit, an error drops it.
    #[derive(Debug)]
    pub struct Holding<F> {
        #[pin]
        fut: F,
        permit: Option<InFlightPermit>,
    }
}

impl<F, R> Future for Holding<F>
where
    F: Future<Output = Result<R, BoxError>>,
    R: HoldPermit,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.fut.poll(cx));
        Poll::Ready(match (out, this.permit.take()) {
            (Ok(resp), Some(permit)) => Ok(resp.hold(permit)),
            (out, _) => out,
        })
    }
}

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
    S::Response: HoldPermit,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(endpoint) = req.extensions().get::<Arc<Endpoint>>() else {
            return ShortCircuit::inner(Holding {
                fut: self.inner.call(req),
                permit: None,
            });
        };
        let (settings, limit) = req.extensions().get::<Arc<Snapshot>>().map_or_else(
            || {
                (
                    Default::default(),
                    Limits::default().max_in_flight_per_endpoint,
                )
            },
            |s| {
                let d = s.defaults();
                (d.breaker, d.limits.max_in_flight_per_endpoint)
            },
        );
        match self
            .registry
            .admit_within(endpoint, &settings, limit, Instant::now())
        {
            Ok((_, permit)) => ShortCircuit::inner(Holding {
                fut: self.inner.call(req),
                permit: Some(permit),
            }),
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
        Refusal::Saturated { limit, retry_in } => Failure::boxed(EndpointSaturated {
            endpoint: Arc::clone(&endpoint.id),
            limit,
            retry_in,
        }),
    }
}

#[cfg(test)]
mod tests;
