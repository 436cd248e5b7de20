//! The span schema: one request span per proxied request, one child span per upstream
//! attempt, made with plain `tracing` macros and turned into OpenTelemetry spans by the
//! layer [`init`](crate::init) installs.
//!
//! **Request span** (tracing name `request`, OTel name `"{operation} {model}"`, kind server):
//! `otel.name`, `otel.kind = "server"`, `otel.status_code`, [`gen_ai.operation.name`],
//! [`gen_ai.request.model`] (the policy model id the request asked for, after alias
//! resolution — never a raw client string), [`gen_ai.request.max_tokens`],
//! [`gen_ai.provider.name`] and [`gen_ai.response.model`] (who served),
//! [`gen_ai.usage.input_tokens`], [`gen_ai.usage.output_tokens`],
//! [`switchyard.request_id`], [`switchyard.route`], [`switchyard.attempts`],
//! [`switchyard.cost_usd`], [`http.response.status_code`], [`error.type`].
//!
//! **Attempt span** (tracing name `attempt`, OTel name `"{operation} {upstream model}"`, kind
//! client), a child of the request span: `otel.name`, `otel.kind = "client"`,
//! `otel.status_code`, [`gen_ai.operation.name`], [`gen_ai.provider.name`] (provider id),
//! [`gen_ai.request.model`] (the upstream's model name), [`gen_ai.request.max_tokens`],
//! [`gen_ai.response.model`], [`gen_ai.usage.input_tokens`], [`gen_ai.usage.output_tokens`],
//! [`gen_ai.response.finish_reasons`], [`switchyard.endpoint`], [`switchyard.attempt`],
//! [`switchyard.outcome`] (the attempt's `Class`), [`switchyard.fallback_reason`] (the
//! previous attempt's class, when this attempt is a fallback), [`switchyard.cost_usd`],
//! [`switchyard.ttft_ms`], [`switchyard.breaker_state`], [`http.response.status_code`],
//! [`error.type`].
//!
//! Every field a span will ever get must be declared when it is created (as
//! `tracing::field::Empty` if its value comes later): `tracing` drops records of undeclared
//! fields. Integers are recorded as `i64` (a `u64` would arrive as a string attribute), which
//! the `record_*` helpers here do. Spans use the target [`TARGET`] so the OpenTelemetry layer
//! keeps them whatever the log level is. Crates that must not depend on this one can write
//! the same span by hand:
//!
//! ```
//! let span = tracing::info_span!(
//!     target: "switchyard",
//!     "attempt",
//!     otel.name = %format_args!("{} {}", "chat", "gpt-4o"),
//!     otel.kind = "client",
//!     otel.status_code = tracing::field::Empty,
//!     gen_ai.operation.name = "chat",
//!     gen_ai.provider.name = "openai-main",
//!     gen_ai.request.model = "gpt-4o",
//!     gen_ai.request.max_tokens = tracing::field::Empty,
//!     gen_ai.response.model = tracing::field::Empty,
//!     gen_ai.usage.input_tokens = tracing::field::Empty,
//!     gen_ai.usage.output_tokens = tracing::field::Empty,
//!     gen_ai.response.finish_reasons = tracing::field::Empty,
//!     switchyard.endpoint = "openai-main/gpt-4o",
//!     switchyard.attempt = 1_i64,
//!     switchyard.outcome = tracing::field::Empty,
//!     switchyard.fallback_reason = tracing::field::Empty,
//!     switchyard.cost_usd = tracing::field::Empty,
//!     switchyard.ttft_ms = tracing::field::Empty,
//!     switchyard.breaker_state = tracing::field::Empty,
//!     http.response.status_code = tracing::field::Empty,
//!     error.type = tracing::field::Empty,
//! );
//! span.record(switchyard_telemetry::fields::SWITCHYARD_OUTCOME, "success");
//! ```
//!
//! [`gen_ai.operation.name`]: fields::GEN_AI_OPERATION_NAME
//! [`gen_ai.request.model`]: fields::GEN_AI_REQUEST_MODEL
//! [`gen_ai.request.max_tokens`]: fields::GEN_AI_REQUEST_MAX_TOKENS
//! [`gen_ai.provider.name`]: fields::GEN_AI_PROVIDER_NAME
//! [`gen_ai.response.model`]: fields::GEN_AI_RESPONSE_MODEL
//! [`gen_ai.response.finish_reasons`]: fields::GEN_AI_RESPONSE_FINISH_REASONS
//! [`gen_ai.usage.input_tokens`]: fields::GEN_AI_USAGE_INPUT_TOKENS
//! [`gen_ai.usage.output_tokens`]: fields::GEN_AI_USAGE_OUTPUT_TOKENS
//! [`switchyard.request_id`]: fields::SWITCHYARD_REQUEST_ID
//! [`switchyard.route`]: fields::SWITCHYARD_ROUTE
//! [`switchyard.attempts`]: fields::SWITCHYARD_ATTEMPTS
//! [`switchyard.endpoint`]: fields::SWITCHYARD_ENDPOINT
//! [`switchyard.attempt`]: fields::SWITCHYARD_ATTEMPT
//! [`switchyard.outcome`]: fields::SWITCHYARD_OUTCOME
//! [`switchyard.fallback_reason`]: fields::SWITCHYARD_FALLBACK_REASON
//! [`switchyard.cost_usd`]: fields::SWITCHYARD_COST_USD
//! [`switchyard.ttft_ms`]: fields::SWITCHYARD_TTFT_MS
//! [`switchyard.breaker_state`]: fields::SWITCHYARD_BREAKER_STATE
//! [`http.response.status_code`]: fields::HTTP_RESPONSE_STATUS_CODE
//! [`error.type`]: fields::ERROR_TYPE

use std::time::Duration;

use opentelemetry::{Array, StringValue, Value};
use switchyard_core::{AttemptReport, Class, Usage};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of Switchyard's spans; the OpenTelemetry layer keeps every span and
/// event whose target starts with it, at `INFO` and above.
pub const TARGET: &str = "switchyard";

/// Attribute (span field) names. The `gen_ai.*` ones follow the OpenTelemetry GenAI semantic
/// conventions (status: development), defined here rather than taken from the semconv crate,
/// whose GenAI constants are experimental.
pub mod fields {
    /// Overrides the OTel span name (`tracing` names are static).
    pub const OTEL_NAME: &str = "otel.name";
    /// `server` for the request span, `client` for an attempt.
    pub const OTEL_KIND: &str = "otel.kind";
    /// `ok` or `error`.
    pub const OTEL_STATUS_CODE: &str = "otel.status_code";
    /// `chat`, `text_completion` or `embeddings`.
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
    /// Provider id from the policy.
    pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    /// A string array; set with [`record_finish_reasons`](super::record_finish_reasons).
    pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    /// `gen_ai.token.type` metric attribute: `input` or `output`.
    pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
    /// Low-cardinality error class: the attempt's `Class`, or the error code of a request.
    pub const ERROR_TYPE: &str = "error.type";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// `x-switchyard-request-id`.
    pub const SWITCHYARD_REQUEST_ID: &str = "switchyard.request_id";
    /// Policy route id.
    pub const SWITCHYARD_ROUTE: &str = "switchyard.route";
    /// Upstream attempts the request made.
    pub const SWITCHYARD_ATTEMPTS: &str = "switchyard.attempts";
    /// Stable endpoint id (`provider/model`).
    pub const SWITCHYARD_ENDPOINT: &str = "switchyard.endpoint";
    /// 1-based attempt number.
    pub const SWITCHYARD_ATTEMPT: &str = "switchyard.attempt";
    /// The attempt's verdict (`Class::as_str`).
    pub const SWITCHYARD_OUTCOME: &str = "switchyard.outcome";
    /// Why the previous attempt was left: its `Class`.
    pub const SWITCHYARD_FALLBACK_REASON: &str = "switchyard.fallback_reason";
    /// USD.
    pub const SWITCHYARD_COST_USD: &str = "switchyard.cost_usd";
    /// Whether the cost and tokens are Switchyard's estimate (no usage reported).
    pub const SWITCHYARD_USAGE_ESTIMATED: &str = "switchyard.usage_estimated";
    /// Milliseconds from sending to the first output event.
    pub const SWITCHYARD_TTFT_MS: &str = "switchyard.ttft_ms";
    /// `closed`, `half_open` or `open` when the attempt was admitted.
    pub const SWITCHYARD_BREAKER_STATE: &str = "switchyard.breaker_state";
}

/// The GenAI operation a request performs (`gen_ai.operation.name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GenAiOperation {
    Chat,
    TextCompletion,
    Embeddings,
}

impl GenAiOperation {
    /// The semantic-convention value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::TextCompletion => "text_completion",
            Self::Embeddings => "embeddings",
        }
    }

    /// The operation of a proxy path (`/v1/chat/completions` and Anthropic's `/v1/messages`
    /// are chat); `None` for paths that are not a model call.
    pub fn from_path(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" | "/v1/messages" => Some(Self::Chat),
            "/v1/completions" => Some(Self::TextCompletion),
            "/v1/embeddings" => Some(Self::Embeddings),
            _ => None,
        }
    }
}

/// What the request span starts with.
#[derive(Clone, Copy, Debug)]
pub struct RequestSpanStart<'a> {
    pub operation: GenAiOperation,
    /// Policy model id (or route) the request resolved to.
    pub model: &'a str,
    pub request_id: &'a str,
    pub route: Option<&'a str>,
    pub max_tokens: Option<u64>,
}

/// Creates the request span with every field of the schema declared. Follow with
/// [`continue_trace`](crate::continue_trace) to join the caller's trace.
pub fn request_span(start: &RequestSpanStart<'_>) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = %format_args!("{} {}", start.operation.as_str(), start.model),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = start.operation.as_str(),
        gen_ai.request.model = start.model,
        gen_ai.request.max_tokens = tracing::field::Empty,
        gen_ai.provider.name = tracing::field::Empty,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        switchyard.request_id = start.request_id,
        switchyard.route = tracing::field::Empty,
        switchyard.attempts = tracing::field::Empty,
        switchyard.cost_usd = tracing::field::Empty,
        switchyard.usage_estimated = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if let Some(route) = start.route {
        span.record(fields::SWITCHYARD_ROUTE, route);
    }
    if let Some(n) = start.max_tokens {
        span.record(fields::GEN_AI_REQUEST_MAX_TOKENS, int(n));
    }
    span
}

/// What an attempt span starts with.
#[derive(Clone, Copy, Debug)]
pub struct AttemptSpanStart<'a> {
    pub operation: GenAiOperation,
    /// Provider id from the policy.
    pub provider: &'a str,
    /// The upstream's own model name (what is sent to the provider).
    pub upstream_model: &'a str,
    /// Stable endpoint id (`provider/model`).
    pub endpoint: &'a str,
    /// 1-based.
    pub attempt: u32,
    /// The previous attempt's verdict, when this one is a retry or fallback.
    pub fallback_reason: Option<Class>,
    /// The endpoint's breaker phase when the attempt was admitted.
    pub breaker_state: Option<&'static str>,
    pub max_tokens: Option<u64>,
}

/// Creates an attempt span (a child of the current span) with every field of the schema
/// declared.
pub fn attempt_span(start: &AttemptSpanStart<'_>) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "attempt",
        otel.name = %format_args!("{} {}", start.operation.as_str(), start.upstream_model),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = start.operation.as_str(),
        gen_ai.provider.name = start.provider,
        gen_ai.request.model = start.upstream_model,
        gen_ai.request.max_tokens = tracing::field::Empty,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        switchyard.endpoint = start.endpoint,
        switchyard.attempt = i64::from(start.attempt),
        switchyard.outcome = tracing::field::Empty,
        switchyard.fallback_reason = tracing::field::Empty,
        switchyard.cost_usd = tracing::field::Empty,
        switchyard.usage_estimated = tracing::field::Empty,
        switchyard.ttft_ms = tracing::field::Empty,
        switchyard.breaker_state = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if let Some(c) = start.fallback_reason {
        span.record(fields::SWITCHYARD_FALLBACK_REASON, c.as_str());
    }
    if let Some(s) = start.breaker_state {
        span.record(fields::SWITCHYARD_BREAKER_STATE, s);
    }
    if let Some(n) = start.max_tokens {
        span.record(fields::GEN_AI_REQUEST_MAX_TOKENS, int(n));
    }
    span
}

/// Records an attempt's verdict on its span: outcome, status, TTFT, usage and cost, and an
/// error status for anything but success.
pub fn record_attempt(span: &Span, report: &AttemptReport) {
    span.record(fields::SWITCHYARD_OUTCOME, report.class.as_str());
    if let Some(s) = report.status {
        span.record(fields::HTTP_RESPONSE_STATUS_CODE, i64::from(s));
    }
    if let Some(t) = report.ttft {
        span.record(fields::SWITCHYARD_TTFT_MS, millis(t));
    }
    if let Some(u) = &report.usage {
        record_usage(span, u);
    }
    if report.class == Class::Success {
        span.record(fields::OTEL_STATUS_CODE, "ok");
    } else {
        record_error(span, report.class.as_str());
    }
}

/// Records token usage and cost.
pub fn record_usage(span: &Span, usage: &Usage) {
    span.record(fields::GEN_AI_USAGE_INPUT_TOKENS, int(usage.prompt_tokens));
    span.record(
        fields::GEN_AI_USAGE_OUTPUT_TOKENS,
        int(usage.completion_tokens),
    );
    if usage.cost.is_finite() {
        span.record(fields::SWITCHYARD_COST_USD, usage.cost);
    }
    if usage.estimated {
        span.record(fields::SWITCHYARD_USAGE_ESTIMATED, true);
    }
}

/// Marks the span failed with a low-cardinality `error.type` (a `Class` or an error code).
pub fn record_error(span: &Span, error_type: &str) {
    span.record(fields::ERROR_TYPE, error_type);
    span.record(fields::OTEL_STATUS_CODE, "error");
}

/// How the request ended, for its span.
#[derive(Clone, Copy, Debug)]
pub struct RequestSpanEnd<'a> {
    pub status: u16,
    pub attempts: u32,
    /// Who served, when someone did.
    pub provider: Option<&'a str>,
    /// The served upstream model name.
    pub response_model: Option<&'a str>,
    pub usage: Option<Usage>,
    /// The error code of a failed request (`respond`'s low-cardinality code).
    pub error_type: Option<&'a str>,
}

/// Records how the request ended on its span.
pub fn record_request_end(span: &Span, end: &RequestSpanEnd<'_>) {
    span.record(fields::HTTP_RESPONSE_STATUS_CODE, i64::from(end.status));
    span.record(fields::SWITCHYARD_ATTEMPTS, i64::from(end.attempts));
    if let Some(p) = end.provider {
        span.record(fields::GEN_AI_PROVIDER_NAME, p);
    }
    if let Some(m) = end.response_model {
        span.record(fields::GEN_AI_RESPONSE_MODEL, m);
    }
    if let Some(u) = &end.usage {
        record_usage(span, u);
    }
    match end.error_type {
        Some(e) => record_error(span, e),
        None if end.status >= 500 => record_error(span, "http_error"),
        None => {
            span.record(fields::OTEL_STATUS_CODE, "ok");
        }
    }
}

/// Sets `gen_ai.response.finish_reasons` as a string array (a `tracing` field cannot hold
/// one).
pub fn record_finish_reasons(span: &Span, reasons: &[&str]) {
    let values: Vec<StringValue> = reasons
        .iter()
        .map(|r| StringValue::from(r.to_string()))
        .collect();
    span.set_attribute(
        fields::GEN_AI_RESPONSE_FINISH_REASONS,
        Value::Array(Array::String(values)),
    );
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Renames a span that has already started (its OpenTelemetry name): the request span learns
/// its model only after the stack resolved it, and a recorded `otel.name` is ignored once the
/// span has started.
pub fn rename(span: &Span, name: String) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    span.context().span().update_name(name);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn operations_from_paths() {
        assert_eq!(
            GenAiOperation::from_path("/v1/chat/completions"),
            Some(GenAiOperation::Chat)
        );
        assert_eq!(
            GenAiOperation::from_path("/v1/messages"),
            Some(GenAiOperation::Chat)
        );
        assert_eq!(
            GenAiOperation::from_path("/v1/completions").map(GenAiOperation::as_str),
            Some("text_completion")
        );
        assert_eq!(
            GenAiOperation::from_path("/v1/embeddings").map(GenAiOperation::as_str),
            Some("embeddings")
        );
        assert_eq!(GenAiOperation::from_path("/v1/models"), None);
    }

    /// Every constant names a field the constructors declare, so `record` never silently
    /// drops a value.
    #[test]
    fn constructors_declare_every_schema_field() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
        tracing::subscriber::with_default(subscriber, || {
            let req = request_span(&RequestSpanStart {
                operation: GenAiOperation::Chat,
                model: "m",
                request_id: "r",
                route: None,
                max_tokens: None,
            });
            let att = attempt_span(&AttemptSpanStart {
                operation: GenAiOperation::Chat,
                provider: "p",
                upstream_model: "u",
                endpoint: "p/m",
                attempt: 1,
                fallback_reason: None,
                breaker_state: None,
                max_tokens: None,
            });
            let common = [
                fields::OTEL_NAME,
                fields::OTEL_KIND,
                fields::OTEL_STATUS_CODE,
                fields::GEN_AI_OPERATION_NAME,
                fields::GEN_AI_PROVIDER_NAME,
                fields::GEN_AI_REQUEST_MODEL,
                fields::GEN_AI_RESPONSE_MODEL,
                fields::GEN_AI_REQUEST_MAX_TOKENS,
                fields::GEN_AI_USAGE_INPUT_TOKENS,
                fields::GEN_AI_USAGE_OUTPUT_TOKENS,
                fields::ERROR_TYPE,
                fields::HTTP_RESPONSE_STATUS_CODE,
                fields::SWITCHYARD_COST_USD,
                fields::SWITCHYARD_USAGE_ESTIMATED,
            ];
            for f in common.iter().chain(&[
                fields::SWITCHYARD_REQUEST_ID,
                fields::SWITCHYARD_ROUTE,
                fields::SWITCHYARD_ATTEMPTS,
            ]) {
                assert!(req.field(*f).is_some(), "request span lacks {f}");
            }
            for f in common.iter().chain(&[
                fields::GEN_AI_RESPONSE_FINISH_REASONS,
                fields::SWITCHYARD_ENDPOINT,
                fields::SWITCHYARD_ATTEMPT,
                fields::SWITCHYARD_OUTCOME,
                fields::SWITCHYARD_FALLBACK_REASON,
                fields::SWITCHYARD_TTFT_MS,
                fields::SWITCHYARD_BREAKER_STATE,
            ]) {
                assert!(att.field(*f).is_some(), "attempt span lacks {f}");
            }
        });
    }
}
