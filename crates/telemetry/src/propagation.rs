//! W3C trace context (`traceparent`, `tracestate`) in and out of HTTP headers, so the
//! request span continues the caller's trace and upstream requests carry ours.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The trace context a request came with (an empty context when it has none or it does not
/// parse). Give it to the request span with [`continue_trace`].
pub fn extract_context(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes `span` a child of the caller's trace, if the request carried one. Call it right
/// after creating the span, before it is entered.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    let cx = extract_context(headers);
    // Without an OpenTelemetry layer there is nothing to continue; not an error.
    let _ = span.set_parent(cx);
}

/// Writes the current span's trace context into `headers` (for an upstream request). Does
/// nothing when no trace is being recorded, so an incoming `traceparent` is left as it is.
pub fn inject_context(headers: &mut HeaderMap) {
    inject_context_from(&tracing::Span::current().context(), headers);
}

/// Writes `cx`'s trace context into `headers`.
pub fn inject_context_from(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use opentelemetry::trace::TraceContextExt;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn extract_reads_traceparent() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(PARENT));
        let cx = extract_context(&h);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert!(sc.is_remote());
        assert!(sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn extract_ignores_garbage() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("00-nonsense"));
        assert!(!extract_context(&h).span().span_context().is_valid());
        assert!(
            !extract_context(&HeaderMap::new())
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn inject_round_trips_and_keeps_tracestate() {
        let mut incoming = HeaderMap::new();
        incoming.insert("traceparent", HeaderValue::from_static(PARENT));
        incoming.insert("tracestate", HeaderValue::from_static("vendor=abc"));
        let cx = extract_context(&incoming);
        let mut out = HeaderMap::new();
        inject_context_from(&cx, &mut out);
        assert_eq!(out.get("traceparent").unwrap(), PARENT);
        assert_eq!(out.get("tracestate").unwrap(), "vendor=abc");
    }

    #[test]
    fn inject_without_a_trace_leaves_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(PARENT));
        inject_context(&mut h);
        assert_eq!(h.get("traceparent").unwrap(), PARENT);
        let mut empty = HeaderMap::new();
        inject_context(&mut empty);
        assert!(empty.is_empty());
    }
}
