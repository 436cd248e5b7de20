use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, StatusCode};
use switchyard_core::{BoxError, Failure, ProxyError, ShortCircuit};
use switchyard_policy::Plan;
use switchyard_wire::ParsedRequest;
use tower::{Layer, Service};

/// Sends the request to the first candidate of its plan, as its one attempt.
///
/// This is the seam where the fallback executor goes: it will walk the whole plan under a
/// retry budget instead of taking the first candidate.
#[derive(Clone, Copy, Debug, Default)]
pub struct DispatchLayer;

impl DispatchLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for DispatchLayer {
    type Service = Dispatch<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Dispatch { inner }
    }
}

/// See [`DispatchLayer`].
#[derive(Clone, Debug)]
pub struct Dispatch<S> {
    inner: S,
}

impl<S, R> Service<Request<Arc<ParsedRequest>>> for Dispatch<S>
where
    S: Service<Request<Arc<ParsedRequest>>, Response = R, Error = BoxError>,
{
    type Response = R;
    type Error = BoxError;
    type Future = ShortCircuit<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Arc<ParsedRequest>>) -> Self::Future {
        let first = req
            .extensions()
            .get::<Arc<Plan>>()
            .and_then(|p| p.candidates.first().map(|c| c.endpoint.clone()));
        match first {
            Some(endpoint) => {
                req.extensions_mut().insert(endpoint);
                ShortCircuit::inner(self.inner.call(req))
            }
            None => ShortCircuit::ready(Err(Failure::boxed(NoEndpoints))),
        }
    }
}

/// No endpoint is left to try for this request.
#[derive(Debug, thiserror::Error)]
#[error("no endpoint can serve this request")]
pub struct NoEndpoints;

impl ProxyError for NoEndpoints {
    fn status(&self) -> StatusCode {
        StatusCode::NOT_FOUND
    }
    fn error_type(&self) -> &'static str {
        "no_endpoints"
    }
    fn code(&self) -> &'static str {
        "no_endpoints"
    }
}
