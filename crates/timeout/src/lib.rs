//! Timeouts: the whole request's deadline, and each upstream attempt's first-token, idle and
//! attempt limits.
//!
//! Two layers, at two places in the stack (DESIGN.md §1):
//!
//! - [`Deadline`] sits outside Select and Fallback, once per request. It puts the request's
//!   [`switchyard_core::Deadline`] (`now + defaults.timeouts.total`, or an earlier deadline
//!   already set) into the extensions, so that retries, backoffs and Retry-After waits below
//!   can stay inside it. It fails the response future with
//!   [`DeadlineExceeded`](error::DeadlineExceeded) (504) if the response is not ready by
//!   then — dropping the inner future cancels every attempt under it — and cuts a streamed
//!   body at the deadline with one in-band error event in the caller's wire format and no
//!   `[DONE]`.
//! - [`AttemptTimeout`] sits innermost in the per-attempt stack, just outside Upstream. With
//!   the timeouts of the defaults, the plan's route and the attempt's endpoint (each
//!   overriding the one before, see [`effective_timeouts`]) it fails the attempt when headers
//!   or the first output event do not come within `first_token` of the attempt's start, when
//!   a stream that has produced output goes quiet for `idle`, or when the attempt takes
//!   longer than `attempt`. Its errors (in a stream: `Err` items made with
//!   [`Failure::boxed`](switchyard_core::Failure::boxed)) say which verdict they stand for
//!   through `ProxyError::class`. It never waits past the request's deadline: an attempt
//!   cut by the deadline fails with `DeadlineExceeded`, which stands for no verdict because
//!   the request's time ran out, not the endpoint's.
//!
//! Preamble events (role chunks, keep-alives) never satisfy the first-token limit; once
//! output has started, every event restarts the idle limit. After the stream's terminator
//! event a limit that runs out ends the stream quietly: the answer is already complete.
//!
//! This crate does not retry, classify whole attempts or decide what a timeout means for the
//! endpoint (Fallback and the breaker do), and does not time connects: `timeouts.connect`
//! belongs to the upstream client. The deadline is taken from the defaults only, because it
//! is set before Select has chosen a route.

pub mod error;
mod events;
mod future;
mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use switchyard_core::{BoxError, InboundApi, ProxyBody};
use switchyard_policy::{Endpoint, Plan, Route, Snapshot, Timeouts};
use tokio::time::Instant;
use tower::Service;

pub use future::{AttemptTimeoutFuture, DeadlineFuture};
pub use layer::{AttemptTimeoutLayer, DeadlineLayer};

use crate::events::{AttemptClock, at};

/// The timeouts one attempt runs under: the defaults, overridden by the route's, overridden
/// by the endpoint's.
pub fn effective_timeouts(
    defaults: &Timeouts,
    route: Option<&Route>,
    endpoint: Option<&Endpoint>,
) -> Timeouts {
    let mut t = *defaults;
    if let Some(route) = route {
        t = t.overlay(&route.timeouts);
    }
    if let Some(endpoint) = endpoint {
        t = t.overlay(&endpoint.timeouts);
    }
    t
}

/// Sets the request's deadline and holds the whole request, stream included, to it.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
}

impl<S> Deadline<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The snapshot is pinned outside this layer; without one (a wiring mistake) the
        // built-in total still bounds the request.
        let total = req
            .extensions()
            .get::<Arc<Snapshot>>()
            .map_or(Timeouts::default().total, |s| s.defaults().timeouts.total);
        let mut deadline = at(Instant::now(), total);
        // Whoever set a deadline outside us promised it to someone: never extend it.
        if let Some(outer) = req.extensions().get::<switchyard_core::Deadline>() {
            deadline = deadline.min(outer.0);
        }
        req.extensions_mut()
            .insert(switchyard_core::Deadline(deadline));
        let api = InboundApi::from_path(req.uri().path());
        DeadlineFuture::new(self.inner.call(req), deadline, api)
    }
}

/// Holds one upstream attempt, headers and stream, to its first-token, idle and attempt
/// limits and to the request's deadline.
#[derive(Clone, Debug)]
pub struct AttemptTimeout<S> {
    inner: S,
}

impl<S> AttemptTimeout<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<Request<B>> for AttemptTimeout<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = AttemptTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let ext = req.extensions();
        let defaults = ext
            .get::<Arc<Snapshot>>()
            .map_or_else(Timeouts::default, |s| s.defaults().timeouts);
        let route = ext.get::<Arc<Plan>>().and_then(|p| p.route.as_deref());
        let endpoint = ext.get::<Arc<Endpoint>>().map(|e| &**e);
        let timeouts = effective_timeouts(&defaults, route, endpoint);
        let deadline = ext.get::<switchyard_core::Deadline>().map(|d| d.0);
        let clock = AttemptClock::new(Instant::now(), &timeouts, deadline);
        AttemptTimeoutFuture::new(self.inner.call(req), clock)
    }
}

#[cfg(test)]
mod tests;
