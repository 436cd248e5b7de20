//! An upstream without a network: an in-memory response body and an innermost service that
//! does the upstream's CPU work (upstream body, response rewrite, stream adapter) on canned
//! answers.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use switchyard_core::{BoxError, Failure, ProxyBody, Served};
use switchyard_policy::{Endpoint, Snapshot};
use switchyard_wire::{
    BodyEdits, OpenAiEventStream, Operation, ParsedRequest, Rewrite, rewrite_response,
};
use tower::Service;

use crate::error::{FixtureError, MissingEndpoint};
use crate::fixtures::{chat_completion, chat_stream_frames};

/// SSE line cap when the request carries no snapshot (the policy default).
const DEFAULT_MAX_LINE: usize = 1 << 20;

/// A response body that hands out prepared frames, each at once, like a socket whose data
/// has all arrived. Cloning the frames is a reference-count bump, so building one per
/// iteration costs next to nothing.
#[derive(Clone, Debug)]
pub struct FrameBody {
    frames: Arc<[Bytes]>,
    next: usize,
}

impl FrameBody {
    /// A body that yields `frames` in order, then ends.
    pub fn new(frames: Arc<[Bytes]>) -> Self {
        Self { frames, next: 0 }
    }
}

impl Body for FrameBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = self.frames.get(self.next).cloned();
        if frame.is_some() {
            self.next += 1;
        }
        Poll::Ready(frame.map(|f| Ok(Frame::data(f))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.frames.len()
    }

    fn size_hint(&self) -> SizeHint {
        let left = self.frames.get(self.next..).unwrap_or_default();
        SizeHint::with_exact(left.iter().map(|f| f.len() as u64).sum())
    }
}

/// Upstream bodies the [`CannedUpstream`] has built, in call order.
pub type SentLog = Arc<Mutex<Vec<Bytes>>>;

/// The innermost service of the bench stack: answers every attempt with the canned
/// [`chat_completion`] or, for a streaming request, the canned [`chat_stream_frames`].
///
/// It does all the per-request work the real `Upstream` does except the network: it builds
/// the upstream body, rewrites the completion (or wraps the stream in the OpenAI stream
/// adapter) for the attempt's endpoint and sets [`Served`]. So the stack's overhead is the
/// difference to calling it directly.
#[derive(Clone)]
pub struct CannedUpstream {
    completion: Bytes,
    frames: Arc<[Bytes]>,
    sent: Option<SentLog>,
}

impl fmt::Debug for CannedUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CannedUpstream")
            .field("completion_bytes", &self.completion.len())
            .field("frames", &self.frames.len())
            .field("recording", &self.sent.is_some())
            .finish()
    }
}

impl Default for CannedUpstream {
    fn default() -> Self {
        Self::new()
    }
}

impl CannedUpstream {
    /// Answers with the bench fixtures.
    pub fn new() -> Self {
        Self {
            completion: chat_completion(),
            frames: chat_stream_frames(),
            sent: None,
        }
    }

    /// Also keeps every upstream body it builds, for tests; benchmarks use [`Self::new`].
    pub fn recording() -> (Self, SentLog) {
        let log = SentLog::default();
        let upstream = Self {
            sent: Some(log.clone()),
            ..Self::new()
        };
        (upstream, log)
    }

    fn answer(&self, req: &Request<Arc<ParsedRequest>>) -> Result<Response<ProxyBody>, BoxError> {
        let endpoint = req
            .extensions()
            .get::<Arc<Endpoint>>()
            .ok_or_else(|| Failure::boxed(MissingEndpoint))?;
        let max_line = req
            .extensions()
            .get::<Arc<Snapshot>>()
            .and_then(|s| usize::try_from(s.defaults().limits.max_sse_line_bytes).ok())
            .unwrap_or(DEFAULT_MAX_LINE);
        let parsed = req.body();
        let op = parsed.operation();

        // What the real upstream serialises before it writes the request to the socket,
        // with the compat layer's edits for this endpoint when the stack made any.
        let sent = match req.extensions().get::<BodyEdits>() {
            Some(edits) => parsed.upstream_body_with(&endpoint.upstream_model, edits),
            None => parsed.upstream_body(&endpoint.upstream_model),
        };
        match &self.sent {
            Some(log) => {
                if let Ok(mut log) = log.lock() {
                    log.push(sent);
                }
            }
            None => {
                std::hint::black_box(sent);
            }
        }

        let rw = Rewrite {
            model: endpoint.model.clone(),
            provider: endpoint.provider.id.clone(),
            upstream_model: endpoint.upstream_model.clone(),
            pricing: endpoint.pricing,
            client_wants_usage: parsed.client_wants_usage(),
        };
        let mut served = Served {
            endpoint: endpoint.id.clone(),
            provider: endpoint.provider.id.clone(),
            model: endpoint.model.clone(),
            upstream_model: endpoint.upstream_model.clone(),
            attempts: 1,
            usage: None,
        };
        let mut resp = if parsed.stream() {
            let events =
                OpenAiEventStream::new(FrameBody::new(self.frames.clone()), op, rw, max_line);
            let mut r = Response::new(ProxyBody::events(events));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        } else {
            let (body, usage) =
                rewrite_response(op, &self.completion, &rw).map_err(Failure::boxed)?;
            served.usage = usage;
            let mut r = Response::new(ProxyBody::full(body));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        };
        resp.extensions_mut().insert(served);
        Ok(resp)
    }
}

impl Service<Request<Arc<ParsedRequest>>> for CannedUpstream {
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<ProxyBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Arc<ParsedRequest>>) -> Self::Future {
        std::future::ready(self.answer(&req))
    }
}

/// A `POST /v1/chat/completions` carrying `body`, as hyper hands it to the proxy service.
pub fn proxy_request(body: Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body.clone()));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("/v1/chat/completions");
    let h = req.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    req
}

/// The least a proxy must do before the upstream call, without any layer: parse the body
/// once and take the first endpoint of the requested model. The baseline the whole stack is
/// measured against.
pub fn direct_request(
    snapshot: &Arc<Snapshot>,
    body: Bytes,
) -> Result<Request<Arc<ParsedRequest>>, FixtureError> {
    let parsed = ParsedRequest::parse(Operation::ChatCompletions, body)?;
    let name = parsed.model().unwrap_or_default();
    let endpoint = snapshot
        .model(name)
        .and_then(|m| m.endpoints.first())
        .cloned()
        .ok_or_else(|| FixtureError::UnknownModel(name.to_owned()))?;
    let mut req = Request::new(Arc::new(parsed));
    req.extensions_mut().insert(snapshot.clone());
    req.extensions_mut().insert(endpoint);
    Ok(req)
}

/// Reads a proxy response body to the end, as hyper does when it writes it out.
pub async fn collect_body(resp: Response<ProxyBody>) -> Result<Bytes, BoxError> {
    Ok(resp.into_body().collect().await?.to_bytes())
}
