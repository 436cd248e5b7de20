//! Fallback: walks the routing plan, one attempt at a time, until one succeeds.
//!
//! It sits after Select (it needs the plan) and wraps the per-attempt layers (Compat,
//! Breaker, AttemptTimeout, Upstream), because what they do depends on which endpoint an
//! attempt goes to (DESIGN.md §1). It is the one place that classifies an attempt
//! ([`switchyard_core::Class`]); every observer (health, breaker, later budgets and metrics)
//! learns the same verdict from it.
//!
//! What it does with each verdict is DESIGN.md §4's table: the same endpoint once more after
//! a connect failure or a 5xx (with full-jitter backoff), never after the request may have been
//! billed; another provider of the same model first on a 429, else a capped `Retry-After` wait
//! when it fits the deadline; credential failures move on (the breaker cools the key down);
//! a context-length 400 only moves to a model with a larger window; other 4xx and refusals
//! are returned unchanged. Retries draw on a process-wide [`RetryBudget`], and each model gets
//! at most `retry.max_attempts` attempts.
//!
//! Streams are held back until their commit point — the first event that carries output — so
//! every fault before it (error status, error event, timeout, malformed chunk, empty answer)
//! falls back invisibly. Non-streaming clients are served from an upstream stream that is
//! aggregated, so first-token and idle timeouts protect them too; `retry.buffer` holds a
//! streaming answer until it completes. After the commit point a cut or stall is never passed
//! off as success: with `retry.continuation` the partial answer is continued as an assistant
//! prefill (same endpoint first, then other endpoints that declare `supports_prefill`) and
//! spliced into the client's stream; otherwise the stream ends with an explicit error event
//! naming the original failure, without `[DONE]`.

mod budget;
mod committed;
mod error;
mod exec;
mod future;
mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use switchyard_core::{AttemptObserver, BoxError, ProxyBody};
use switchyard_wire::ParsedRequest;
use tower::Service;

pub use budget::RetryBudget;
pub use error::{AttemptSummary, NoHealthyEndpoint, NoPlan, ProvidersExhausted};
pub use future::ResponseFuture;
pub use layer::FallbackLayer;

/// See the crate documentation.
#[derive(Clone)]
pub struct Fallback<S> {
    inner: S,
    observers: Arc<[Arc<dyn AttemptObserver>]>,
    budget: Arc<RetryBudget>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Fallback<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Arc<ParsedRequest>>> for Fallback<S>
where
    S: Service<Request<Arc<ParsedRequest>>, Response = Response<ProxyBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt readies its own clone of the inner service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Arc<ParsedRequest>>) -> Self::Future {
        let exec = exec::Exec::new(
            self.inner.clone(),
            self.observers.clone(),
            self.budget.clone(),
            req,
        );
        ResponseFuture::new(async move { exec?.run().await })
    }
}

#[cfg(test)]
mod tests;
