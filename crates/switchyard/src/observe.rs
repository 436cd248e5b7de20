//! The outermost service of the proxy listener: what every request did, for operators.
//!
//! It wraps the whole stack (so `stack` and the layers stay free of OpenTelemetry) and, per
//! model call: opens the request span, continuing the caller's W3C trace; counts the request in
//! flight; gives the layers a [`Notes`] to write the route, models and exclusions into and a
//! [`ContextInjector`] that propagates the trace to providers; and when the response body ends
//! (or the client leaves), records request metrics, the generation record behind
//! `GET /api/v1/generation?id=` (answered here), the request span's end, and one access-log
//! line. Prompts and completions are never logged.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use switchyard_core::{
    BoxError, ContextInjector, Event, EventKind, EventSource, InboundApi, Notes, ProxyBody, Served,
    Usage,
};
use switchyard_respond::{NotFound, WrongMethod, error_response};
use switchyard_telemetry::{
    GenAiOperation, GenerationDone, GenerationStore, InFlightGuard, Metrics, RequestDone,
    RequestSpanEnd, RequestSpanStart,
};
use tokio::time::Instant;
use tower::Service;
use tracing::Instrument;

/// Path of OpenRouter's generation lookup.
pub const GENERATION_PATH: &str = "/api/v1/generation";

/// The process-wide observability sinks.
#[derive(Clone, Debug)]
pub struct Observability {
    pub metrics: Arc<Metrics>,
    pub generations: Arc<GenerationStore>,
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    obs: Observability,
}

impl<S> Observe<S> {
    pub fn new(inner: S, obs: Observability) -> Self {
        Self { inner, obs }
    }
}

/// Injects the current span's trace context into upstream requests.
#[derive(Debug)]
struct OtelInjector;

impl ContextInjector for OtelInjector {
    fn inject(&self, headers: &mut http::HeaderMap) {
        switchyard_telemetry::inject_context(headers);
    }
}

impl<S, B> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        if path == GENERATION_PATH {
            let resp = generation(&self.obs.generations, &req);
            return Box::pin(async move { Ok(resp) });
        }
        let Some(op) = GenAiOperation::from_path(path) else {
            let fut = self.inner.call(req);
            return Box::pin(fut);
        };
        let started = Instant::now();
        let in_flight = self.obs.metrics.request_started();
        let span = switchyard_telemetry::request_span(&RequestSpanStart {
            operation: op,
            model: "",
            request_id: "",
            route: None,
            max_tokens: None,
        });
        switchyard_telemetry::continue_trace(&span, req.headers());
        let notes = Notes::default();
        req.extensions_mut().insert(notes.clone());
        let injector: Arc<dyn ContextInjector> = Arc::new(OtelInjector);
        req.extensions_mut().insert(injector);
        let fut = self.inner.call(req).instrument(span.clone());
        let obs = self.obs.clone();
        Box::pin(async move {
            let Ok(resp) = fut.await;
            let finish = Finish {
                obs,
                op,
                span,
                notes,
                started,
                status: resp.status().as_u16(),
                request_id: header(&resp, "x-switchyard-request-id"),
                served: resp.extensions().get::<Served>().cloned(),
                _in_flight: in_flight,
            };
            if resp.body().is_stream() {
                let (parts, body) = resp.into_parts();
                let body = match body.into_events() {
                    Ok(source) => ProxyBody::events(Watched {
                        source,
                        finish: Some(finish),
                        ttft: None,
                        usage: None,
                        error: false,
                    }),
                    Err(full) => full,
                };
                return Ok(Response::from_parts(parts, body));
            }
            let usage = finish.served.as_ref().and_then(|s| s.usage);
            // Only an answer has a first token; an error body is not one.
            let ttft = (finish.status < 300).then(|| finish.started.elapsed());
            finish.done(usage, ttft, false);
            Ok(resp)
        })
    }
}

fn header(resp: &Response<ProxyBody>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `GET /api/v1/generation?id=<request id>`.
fn generation<B>(store: &GenerationStore, req: &Request<B>) -> Response<ProxyBody> {
    if req.method() != Method::GET {
        return error_response(
            InboundApi::OpenAi,
            &WrongMethod {
                method: req.method().clone(),
                path: GENERATION_PATH.into(),
                allowed: "GET",
            },
            None,
        );
    }
    let id = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("id=")))
        .unwrap_or("");
    match store.get(id) {
        Some(v) => {
            let mut r = Response::new(ProxyBody::full(serde_json::to_vec(&v).unwrap_or_default()));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        None => {
            let mut r = error_response(
                InboundApi::OpenAi,
                &NotFound {
                    method: Method::GET,
                    path: format!("{GENERATION_PATH}?id={id}"),
                },
                None,
            );
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

/// Everything needed to close a request's record once its response is over.
struct Finish {
    obs: Observability,
    op: GenAiOperation,
    span: tracing::Span,
    notes: Notes,
    started: Instant,
    status: u16,
    request_id: Option<String>,
    served: Option<Served>,
    _in_flight: InFlightGuard,
}

impl Finish {
    fn done(self, usage: Option<Usage>, ttft: Option<Duration>, interrupted: bool) {
        let duration = self.started.elapsed();
        let notes = self.notes.get();
        let route = notes.route.as_deref();
        let provider = self.served.as_ref().map(|s| &*s.provider);
        let model = self.served.as_ref().map(|s| &*s.model);
        let attempts = self
            .served
            .as_ref()
            .map_or(notes.attempts, |s| s.attempts.max(notes.attempts));
        let outcome = outcome(self.status, interrupted);
        self.obs.metrics.request_finished(&RequestDone {
            request_id: self.request_id.as_deref(),
            operation: self.op.as_str(),
            route,
            status: self.status,
            outcome,
            duration,
            ttft: if self.status < 300 { ttft } else { None },
            provider,
            model,
            usage,
        });
        if let Some(id) = self.request_id.as_deref() {
            let models: Vec<&str> = notes.models.iter().map(|m| &**m).collect();
            let excluded: Vec<(&str, &str)> =
                notes.excluded.iter().map(|(e, r)| (&**e, &**r)).collect();
            self.obs
                .generations
                .record_request(id, route, &models, &excluded);
            self.obs.generations.finish(
                id,
                &GenerationDone {
                    status: self.status,
                    provider,
                    model,
                    upstream_model: self.served.as_ref().map(|s| &*s.upstream_model),
                    usage,
                    cost: None,
                    duration,
                    ttft,
                },
            );
        }
        self.span.record(
            "switchyard.request_id",
            self.request_id.as_deref().unwrap_or(""),
        );
        if let Some(m) = notes.models.first() {
            self.span.record("gen_ai.request.model", &**m);
            switchyard_telemetry::rename(&self.span, format!("{} {m}", self.op.as_str()));
        }
        if let Some(r) = route {
            self.span.record("switchyard.route", r);
        }
        switchyard_telemetry::record_request_end(
            &self.span,
            &RequestSpanEnd {
                status: self.status,
                attempts,
                provider,
                response_model: self.served.as_ref().map(|s| &*s.upstream_model),
                usage,
                error_type: (outcome != "ok").then_some(outcome),
            },
        );
        tracing::info!(
            target: "switchyard::access",
            request_id = self.request_id.as_deref().unwrap_or(""),
            operation = self.op.as_str(),
            route = route.unwrap_or(""),
            models = ?notes.models,
            provider = provider.unwrap_or(""),
            model = model.unwrap_or(""),
            attempts,
            status = self.status,
            outcome,
            prompt_tokens = usage.map(|u| u.prompt_tokens),
            completion_tokens = usage.map(|u| u.completion_tokens),
            cost_usd = usage.map(|u| u.cost),
            usage_estimated = usage.is_some_and(|u| u.estimated),
            ttft_ms = ttft.map(|t| t.as_millis() as u64),
            duration_ms = duration.as_millis() as u64,
            excluded = notes.excluded.len(),
            "request"
        );
    }
}

/// A low-cardinality outcome label from the status the client got.
fn outcome(status: u16, interrupted: bool) -> &'static str {
    match status {
        _ if interrupted => "interrupted",
        200..=299 => "ok",
        400 | 413 => "bad_request",
        402 => "budget_exceeded",
        404 => "not_found",
        405 => "method_not_allowed",
        408 | 504 => "timeout",
        429 => "rate_limited",
        401 | 403 => "unauthorized",
        502 => "upstream_error",
        503 => "unavailable",
        400..=499 => "client_error",
        _ => "error",
    }
}

/// A streamed body, watched to its end: the client's TTFT, the usage reported, and whether
/// it ended in an error event or with the client leaving.
struct Watched {
    source: Pin<Box<dyn EventSource>>,
    finish: Option<Finish>,
    ttft: Option<Duration>,
    usage: Option<Usage>,
    error: bool,
}

impl EventSource for Watched {
    fn poll_event(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, BoxError>>> {
        let polled = self.source.as_mut().poll_event(cx);
        match &polled {
            Poll::Ready(Some(Ok(ev))) => {
                if ev.kind == EventKind::Output && self.ttft.is_none() {
                    self.ttft = self.finish.as_ref().map(|f| f.started.elapsed());
                }
                if let Some(u) = ev.usage {
                    self.usage = Some(u);
                }
                if ev.kind == EventKind::Error {
                    self.error = true;
                }
            }
            Poll::Ready(Some(Err(_))) => self.error = true,
            Poll::Ready(None) => {
                let (usage, ttft, error) = (self.usage, self.ttft, self.error);
                if let Some(f) = self.finish.take() {
                    f.done(usage, ttft, error);
                }
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Watched {
    /// The client left before the end: recorded as interrupted.
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            f.done(self.usage, self.ttft, true);
        }
    }
}

impl std::fmt::Debug for Finish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finish")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}
