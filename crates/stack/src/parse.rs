use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, StatusCode, header::CONTENT_LENGTH};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use switchyard_core::{BoxError, Failure, ProxyError};
use switchyard_policy::Snapshot;
use switchyard_wire::{Operation, ParsedRequest};
use tower::{Layer, Service};

/// Buffers the request body (under the policy's `max_request_bytes`) and parses it once into
/// the typed view every inner layer reads. The inner request's body is that view.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseLayer;

impl ParseLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for ParseLayer {
    type Service = Parse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Parse { inner }
    }
}

/// See [`ParseLayer`].
#[derive(Clone, Debug)]
pub struct Parse<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, B, R> Service<Request<B>> for Parse<S>
where
    S: Service<Request<Arc<ParsedRequest>>, Response = R, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    R: Send + 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = BoxFuture<R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service answers this request; a clone takes its place for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let cap = req
                .extensions()
                .get::<Arc<Snapshot>>()
                .map_or(32 << 20, |s| s.defaults().limits.max_request_bytes);
            let Some(op) = Operation::from_path(req.uri().path()) else {
                return Err(Failure::boxed(UnreadableBody {
                    detail: "no LLM operation at this path".into(),
                }));
            };
            // Refuse a declared oversize body before reading a byte of it.
            let declared = req
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > cap) {
                return Err(Failure::boxed(BodyTooLarge { limit: cap }));
            }
            let (parts, body) = req.into_parts();
            let limit = usize::try_from(cap).unwrap_or(usize::MAX);
            let bytes = match Limited::new(body, limit).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                    return Err(Failure::boxed(BodyTooLarge { limit: cap }));
                }
                Err(e) => {
                    return Err(Failure::boxed(UnreadableBody {
                        detail: e.to_string(),
                    }));
                }
            };
            let parsed = ParsedRequest::parse(op, bytes).map_err(Failure::boxed)?;
            inner
                .call(Request::from_parts(parts, Arc::new(parsed)))
                .await
        })
    }
}

/// The request body exceeds `limits.max_request_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than the {limit}-byte limit")]
pub struct BodyTooLarge {
    pub limit: u64,
}

impl ProxyError for BodyTooLarge {
    fn status(&self) -> StatusCode {
        StatusCode::PAYLOAD_TOO_LARGE
    }
    fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }
    fn code(&self) -> &'static str {
        "request_too_large"
    }
}

/// The request body could not be read (client aborted, broken framing).
#[derive(Debug, thiserror::Error)]
#[error("request body could not be read: {detail}")]
pub struct UnreadableBody {
    pub detail: String,
}

impl ProxyError for UnreadableBody {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }
    fn code(&self) -> &'static str {
        "unreadable_body"
    }
}
