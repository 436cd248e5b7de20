use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use switchyard_core::{BoxError, Failure, ProxyBody, ProxyError, Served};
use switchyard_health::{HealthRegistry, Outcome, Sample};
use switchyard_policy::Plan;
use switchyard_wire::ParsedRequest;
use tokio::time::Instant;
use tower::{Layer, Service};

/// Sends the request to the first candidate of its plan, as its one attempt, and records the
/// attempt's outcome in the endpoint's live statistics (which the selector reads).
///
/// This is the seam where the fallback executor goes: it will walk the whole plan under a
/// retry budget instead of taking the first candidate.
#[derive(Clone, Debug)]
pub struct DispatchLayer {
    health: Arc<HealthRegistry>,
}

impl DispatchLayer {
    pub fn new(health: Arc<HealthRegistry>) -> Self {
        Self { health }
    }
}

impl<S> Layer<S> for DispatchLayer {
    type Service = Dispatch<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Dispatch {
            inner,
            health: self.health.clone(),
        }
    }
}

/// See [`DispatchLayer`].
#[derive(Clone, Debug)]
pub struct Dispatch<S> {
    inner: S,
    health: Arc<HealthRegistry>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S> Service<Request<Arc<ParsedRequest>>> for Dispatch<S>
where
    S: Service<Request<Arc<ParsedRequest>>, Response = Response<ProxyBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = BoxFuture<Response<ProxyBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Arc<ParsedRequest>>) -> Self::Future {
        let first = req
            .extensions()
            .get::<Arc<Plan>>()
            .and_then(|p| p.candidates.first().map(|c| c.endpoint.clone()));
        let Some(endpoint) = first else {
            return Box::pin(async { Err(Failure::boxed(EmptyPlan)) });
        };
        let health = self.health.endpoint(&endpoint.id);
        req.extensions_mut().insert(endpoint);
        let sent_at = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => Ok(record_response(resp, health, sent_at)),
                Err(e) => {
                    health.record(Sample {
                        at: Instant::now(),
                        outcome: Outcome::Failure,
                        ttft: None,
                        latency: sent_at.elapsed(),
                        output_tokens: None,
                    });
                    Err(e)
                }
            }
        })
    }
}

/// Streams are recorded when they end (their TTFT and throughput are only known then);
/// buffered answers now. Rate limits and server errors count against the endpoint; other
/// client errors are the request's fault and count nowhere.
fn record_response(
    resp: Response<ProxyBody>,
    health: Arc<switchyard_health::EndpointHealth>,
    sent_at: Instant,
) -> Response<ProxyBody> {
    let status = resp.status();
    if status.is_success() && resp.body().is_stream() {
        let (parts, body) = resp.into_parts();
        return Response::from_parts(parts, switchyard_health::observe(body, health, sent_at));
    }
    let outcome = if status.is_success() {
        Outcome::Success
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Outcome::Failure
    } else {
        Outcome::Neutral
    };
    let latency = sent_at.elapsed();
    health.record(Sample {
        at: Instant::now(),
        outcome,
        ttft: Some(latency),
        latency,
        output_tokens: resp
            .extensions()
            .get::<Served>()
            .and_then(|s| s.usage)
            .map(|u| u.completion_tokens),
    });
    resp
}

/// The request reached dispatch with no plan or an empty one: Select refuses such requests
/// with `no_endpoints` first, so this is a wiring bug.
#[derive(Debug, thiserror::Error)]
#[error("the request has no routing plan")]
pub struct EmptyPlan;

impl ProxyError for EmptyPlan {
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
