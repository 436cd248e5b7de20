//! Observability for Switchyard: log output, OpenTelemetry traces and metrics over OTLP,
//! Prometheus metrics for `/metrics`, and the store behind `GET /api/v1/generation`.
//!
//! The binary calls [`init`] once at start-up (it reads `TelemetryConfig::from_env`) and
//! [`Telemetry::shutdown`] at exit. [`Metrics`] and [`GenerationStore`] are
//! `AttemptObserver`s: the stack hands them to the fallback executor next to health and
//! breaker, and the request path calls their request-level methods. The request path makes
//! its spans after the schema in [`spans`] (field names in [`fields`]), continues an
//! incoming `traceparent` with [`continue_trace`] and puts ours on upstream requests with
//! [`inject_context`].
//!
//! This is the only crate besides the binary that depends on OpenTelemetry. It does not
//! serve HTTP, read the policy, or decide anything about a request; labels and stored
//! strings are policy ids and fixed codes, never prompts, completions, keys or headers.

mod config;
mod error;
mod generation;
mod jsonlog;
mod labels;
mod metrics;
mod propagation;
mod setup;
pub mod spans;

pub use config::{
    DEFAULT_EXPORT_TIMEOUT, DEFAULT_LOG_FILTER, DEFAULT_METRICS_INTERVAL, DEFAULT_SERVICE_NAME,
    LogFormat, OtlpConfig, OtlpProtocol, SamplerConfig, TelemetryConfig,
};
pub use error::TelemetryError;
pub use generation::{
    DEFAULT_CAPACITY, DEFAULT_MAX_BYTES, GenerationDone, GenerationStore, MAX_ATTEMPTS,
    MAX_EXCLUDED, MAX_MODELS, MAX_NAME_BYTES, MAX_REASON_BYTES,
};
pub use labels::{MAX_LABEL_BYTES, NONE as LABEL_NONE, OVERFLOW as LABEL_OVERFLOW};
pub use metrics::{
    BreakerState, CONTENT_TYPE, InFlightGuard, MAX_LABEL_VALUES, Metrics, OPENMETRICS_CONTENT_TYPE,
    RequestDone,
};
pub use propagation::{continue_trace, extract_context, inject_context, inject_context_from};
pub use setup::{SCOPE, Telemetry, init};
pub use spans::{
    AttemptSpanStart, GenAiOperation, RequestSpanEnd, RequestSpanStart, attempt_span, fields,
    record_attempt, record_error, record_finish_reasons, record_request_end, record_usage, rename,
    request_span,
};
