//! Respond: the edge where every error from the layers below becomes an HTTP response.
//!
//! It sits just inside request-id and tracing, outside everything else (DESIGN.md §1), so no
//! error escapes unanswered and every answer is shaped for the caller's SDK: OpenAI's
//! `{"error": {...}}` or Anthropic's `{"type": "error", "error": {...}}`, chosen by the request
//! path. Errors that Switchyard decided itself carry `x-should-retry: false`, so SDKs do not
//! multiply a deliberate refusal with their own retries.
//!
//! On success it stamps the `x-switchyard-*` headers from the [`Served`] response extension.
//! It does not decide statuses: each leaf error says its own through
//! [`switchyard_core::ProxyError`]; this crate only renders them.

mod error;
mod future;
mod layer;
mod render;

use std::task::{Context, Poll};

use http::{Request, Response};
use switchyard_core::{BoxError, InboundApi, ProxyBody};
use tower::Service;

pub use error::{Internal, NotFound, WrongMethod};
pub use future::ResponseFuture;
pub use layer::RespondLayer;
pub use render::{error_response, headers, stamp_served};

/// Turns `Err(BoxError)` from the inner service into a shaped error response.
#[derive(Clone, Debug)]
pub struct Respond<S> {
    inner: S,
}

impl<S> Respond<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<Request<B>> for Respond<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = std::convert::Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A layer that is not ready is a layer that has failed: nothing below us applies
        // backpressure through poll_ready (load shedding answers per request instead), so a
        // readiness error is a bug we surface per request rather than a reason to hang.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let api = InboundApi::from_path(req.uri().path());
        let request_id = req
            .headers()
            .get(headers::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        ResponseFuture::new(self.inner.call(req), api, request_id)
    }
}

#[cfg(test)]
mod tests;
