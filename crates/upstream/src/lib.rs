//! Upstream: the innermost service, one call per attempt.
//!
//! It turns the parsed client request plus the endpoint chosen for this attempt (an
//! `Arc<Endpoint>` in the request's extensions) into a request to that provider: URL from the
//! provider's `base_url` and the operation's path, the provider's own key (never anything the
//! client sent: the client's `Authorization` is not forwarded), `model` rewritten to the
//! endpoint's `upstream_model`, OpenRouter's routing fields stripped. Responses come back in the
//! caller's wire format with the served `model`, `provider` and `usage.cost`; streams come back
//! as a [`switchyard_core::ProxyBody`] of events pulled from the upstream only as fast as the
//! client reads, and dropped (closing the upstream connection) the moment the client goes.
//!
//! It does not retry, time out attempts, or choose endpoints: those are the layers above.

mod client;
mod error;
mod future;
mod resolve;

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use switchyard_core::{BoxError, Failure, ProxyBody, Served};
use switchyard_policy::{Api, Endpoint, Snapshot};
use switchyard_wire::{AggregateSink, BodyEdits, OpenAiEventStream, ParsedRequest, Rewrite};
use tower::Service;

pub use client::{ClientConfig, Clients};
pub use error::{BuildError, InvalidResponse, NoAttemptTarget, Unreachable};
pub use future::ResponseFuture;

const USER_AGENT_VALUE: &str = concat!("switchyard/", env!("CARGO_PKG_VERSION"));

/// The innermost service: sends one attempt to the endpoint named in the request.
#[derive(Clone, Debug)]
pub struct Upstream {
    clients: Arc<Clients>,
}

impl Upstream {
    pub fn new(clients: Arc<Clients>) -> Self {
        Self { clients }
    }
}

impl Service<Request<Arc<ParsedRequest>>> for Upstream {
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pooled client has no readiness of its own; per-endpoint limits are enforced by
        // the layers above, per request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Arc<ParsedRequest>>) -> Self::Future {
        let clients = self.clients.clone();
        ResponseFuture::new(send(clients, req))
    }
}

async fn send(
    clients: Arc<Clients>,
    req: Request<Arc<ParsedRequest>>,
) -> Result<Response<ProxyBody>, BoxError> {
    let Some(endpoint) = req.extensions().get::<Arc<Endpoint>>().cloned() else {
        return Err(Failure::boxed(NoAttemptTarget));
    };
    let (max_response, max_line) = match req.extensions().get::<Arc<Snapshot>>() {
        Some(s) => (
            s.defaults().limits.max_response_bytes,
            s.defaults().limits.max_sse_line_bytes,
        ),
        None => (64 << 20, 1 << 20),
    };
    let req_edits = req.extensions().get::<BodyEdits>().cloned();
    let injector = req
        .extensions()
        .get::<Arc<dyn switchyard_core::ContextInjector>>()
        .cloned();
    let forced_stream = req_edits.as_ref().is_some_and(|e| e.force_stream);
    let sink = req.extensions().get::<AggregateSink>().cloned();
    let parsed = req.into_body();
    let op = parsed.operation();
    let provider = &endpoint.provider;

    let edits = req_edits;
    let mut upstream_req = build_request(&endpoint, &parsed, edits.as_ref())?;
    // The provider sees our trace context (this attempt's span), never the caller's headers.
    if let Some(injector) = injector {
        injector.inject(upstream_req.headers_mut());
    }
    let client = clients.for_provider(provider)?;
    let resp = client.request(upstream_req).await.map_err(|e| {
        Failure::boxed(Unreachable {
            provider: provider.id.to_string(),
            source: e,
        })
    })?;

    let (parts, body) = resp.into_parts();
    let status = parts.status;
    let mut served = Served {
        endpoint: endpoint.id.clone(),
        provider: provider.id.clone(),
        model: endpoint.model.clone(),
        upstream_model: endpoint.upstream_model.clone(),
        attempts: 1,
        usage: None,
    };
    let rewrite = Rewrite {
        model: endpoint.model.clone(),
        provider: provider.id.clone(),
        upstream_model: endpoint.upstream_model.clone(),
        pricing: endpoint.pricing,
        // A forced stream is aggregated by the fallback executor, which needs the usage chunk.
        client_wants_usage: parsed.client_wants_usage() || forced_stream,
    };

    let is_sse = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));

    let mut out = if status.is_success() && is_sse {
        let mut events = OpenAiEventStream::new(body, op, rewrite, usize_cap(max_line));
        if let Some(sink) = sink {
            events = events.with_sink(sink);
        }
        let mut r = Response::new(ProxyBody::events(events));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        let bytes = Limited::new(body, usize_cap(max_response))
            .collect()
            .await
            .map_err(|e| {
                Failure::boxed(InvalidResponse {
                    provider: provider.id.to_string(),
                    detail: format!("reading the response body failed: {e}"),
                })
            })?
            .to_bytes();
        if status.is_success() {
            let (rewritten, usage) = switchyard_wire::rewrite_response(op, &bytes, &rewrite)
                .map_err(|e| {
                    Failure::boxed(InvalidResponse {
                        provider: provider.id.to_string(),
                        detail: e.to_string(),
                    })
                })?;
            served.usage = usage;
            let mut r = Response::new(ProxyBody::full(rewritten));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        } else {
            // Not ours to reshape: the provider's own error, with its status, goes back as is
            // — except our key, should the provider echo it (some quote the bad key back).
            let bytes = match &provider.api_key {
                Some(key) => redact(bytes, key.expose()),
                None => bytes,
            };
            let mut r = Response::new(ProxyBody::full(bytes));
            if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
                r.headers_mut().insert(CONTENT_TYPE, ct.clone());
            }
            if let Some(ra) = parts.headers.get(RETRY_AFTER) {
                r.headers_mut().insert(RETRY_AFTER, ra.clone());
            }
            r
        }
    };
    *out.status_mut() = status;
    out.extensions_mut().insert(served);
    Ok(out)
}

fn usize_cap(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// The request exactly as the provider will see it.
fn build_request(
    endpoint: &Endpoint,
    parsed: &ParsedRequest,
    edits: Option<&BodyEdits>,
) -> Result<Request<Full<Bytes>>, BoxError> {
    let provider = &endpoint.provider;
    let uri = upstream_uri(provider, parsed.operation().upstream_path())?;
    let body = match edits {
        Some(e) => parsed.upstream_body_with(&endpoint.upstream_model, e),
        None => parsed.upstream_body(&endpoint.upstream_model),
    };
    let mut builder = Request::post(uri)
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(
            ACCEPT,
            if parsed.stream() || edits.is_some_and(|e| e.force_stream) {
                "text/event-stream"
            } else {
                "application/json"
            },
        );
    if provider.api != Api::OpenAi {
        return Err(Failure::boxed(UnsupportedApi {
            provider: provider.id.to_string(),
            api: provider.api,
        }));
    }
    if let Some(key) = &provider.api_key {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                Failure::boxed(InvalidKey {
                    provider: provider.id.to_string(),
                })
            })?;
        // Keeps the key out of hyper's debug output and out of HPACK tables.
        value.set_sensitive(true);
        builder = builder.header(AUTHORIZATION, value);
    }
    builder.body(Full::new(body)).map_err(|e| {
        Failure::boxed(InvalidResponse {
            provider: provider.id.to_string(),
            detail: format!("could not build the upstream request: {e}"),
        })
    })
}

fn upstream_uri(provider: &switchyard_policy::Provider, path: &str) -> Result<Uri, BoxError> {
    let scheme = if provider.https { "https" } else { "http" };
    let s = format!(
        "{scheme}://{}{}{}",
        provider.authority, provider.base_path, path
    );
    s.parse::<Uri>().map_err(|_| {
        Failure::boxed(InvalidResponse {
            provider: provider.id.to_string(),
            detail: "base_url does not form a valid request URI".into(),
        })
    })
}

use error::{InvalidKey, UnsupportedApi};

/// `body` with every occurrence of `secret` replaced by `[redacted]`.
pub fn redact(body: Bytes, secret: &str) -> Bytes {
    let needle = secret.as_bytes();
    if needle.is_empty() || body.len() < needle.len() {
        return body;
    }
    let Some(first) = body.windows(needle.len()).position(|w| w == needle) else {
        return body;
    };
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(&body[..first]);
    let mut rest = &body[first..];
    while !rest.is_empty() {
        if rest.starts_with(needle) {
            out.extend_from_slice(b"[redacted]");
            rest = &rest[needle.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    #[test]
    fn every_occurrence_of_the_key_is_replaced() {
        let body = Bytes::from_static(
            b"{\"error\":{\"message\":\"Incorrect API key sk-abc123 (sk-abc123)\"}}",
        );
        let out = redact(body, "sk-abc123");
        assert_eq!(
            &out[..],
            b"{\"error\":{\"message\":\"Incorrect API key [redacted] ([redacted])\"}}"
        );
        let clean = Bytes::from_static(b"nothing here");
        assert_eq!(redact(clean.clone(), "sk-abc123"), clean);
        assert_eq!(redact(clean.clone(), ""), clean);
    }
}
