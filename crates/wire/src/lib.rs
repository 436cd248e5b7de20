//! Wire formats on the proxy's hot path: the caller's request body, the upstream's
//! response body and its server-sent events.
//!
//! The `Parse` layer builds a [`ParsedRequest`] (one parse of the body into member ranges;
//! messages are never decoded); the `Upstream` adapters send
//! [`ParsedRequest::upstream_body_with`] (adapted per attempt by [`BodyEdits`]: compat
//! edits, a forced stream, a continuation prefill) and turn what comes back into the caller's
//! shape with [`rewrite_response`] or an [`OpenAiEventStream`], which classifies every event
//! ([`switchyard_core::EventKind`]) and meters its usage so the outer layers (commit point,
//! budget, metrics) never parse a body again. [`SseDecoder`] is the shared, bounded SSE
//! codec.
//!
//! For resilience the fallback executor reads verdicts from here: [`classify_response`] and
//! [`classify_error_event`] turn an upstream failure into a [`switchyard_core::Class`] (and a
//! Retry-After), [`WireError`] carries its own; an [`Aggregator`] folds a forced stream back
//! into the whole body the caller asked for and tracks the partial answer for a
//! continuation; [`error_event`] is the explicit in-band error of a stream that failed after
//! its commit point.
//!
//! Members Switchyard does not interpret are copied byte for byte, never re-encoded.
//!
//! This crate does no IO, holds no state and knows nothing of policy: it neither resolves
//! model names nor parses the OpenRouter `provider` object (it hands over its raw text).
//! Anthropic's wire format and translation between the two arrive in a later change, beside
//! [`openai`].

mod classify;
mod error;
mod json;
pub mod openai;
mod sse;

use std::sync::Arc;

use switchyard_core::Pricing;

pub use classify::{Verdict, classify_error_event, classify_response, retry_after};
pub use error::{RequestError, WireError};
pub use openai::{
    AggregateSink, Aggregated, Aggregator, BodyEdits, OpenAiEventStream, ParsedRequest,
    error_event, rewrite_response,
};
pub use sse::{SseDecoder, SseError, SseEvent};

/// The LLM operation a request asks for, told by its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
    /// `POST /v1/embeddings`.
    Embeddings,
}

impl Operation {
    /// The operation served at an inbound OpenAI path (`/v1/chat/completions`, ...).
    pub fn from_path(path: &str) -> Option<Operation> {
        match path {
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/completions" => Some(Self::Completions),
            "/v1/embeddings" => Some(Self::Embeddings),
            _ => None,
        }
    }

    /// The path appended to a provider's `base_url` (which ends in `/v1`).
    pub fn upstream_path(&self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }

    /// The OpenTelemetry GenAI operation name (`gen_ai.operation.name`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat",
            Self::Completions => "text_completion",
            Self::Embeddings => "embeddings",
        }
    }

    /// Whether the operation streams and accepts `stream_options.include_usage`.
    pub(crate) fn streams_usage(self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Completions)
    }
}

/// How an upstream response is rewritten for the caller.
#[derive(Clone, Debug)]
pub struct Rewrite {
    /// The policy's model id that served; replaces `model`.
    pub model: Arc<str>,
    /// The provider id; added as a top-level `provider`.
    pub provider: Arc<str>,
    /// The upstream's own model name; added as `metadata.upstream_model` to a response
    /// body that has no `metadata` of its own.
    pub upstream_model: Arc<str>,
    /// Prices of the serving endpoint, for `usage.cost`.
    pub pricing: Pricing,
    /// Whether the caller asked for the usage chunk; when not, it is metered but not shown.
    pub client_wants_usage: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_by_path() {
        for (path, op, up, name) in [
            (
                "/v1/chat/completions",
                Operation::ChatCompletions,
                "/chat/completions",
                "chat",
            ),
            (
                "/v1/completions",
                Operation::Completions,
                "/completions",
                "text_completion",
            ),
            (
                "/v1/embeddings",
                Operation::Embeddings,
                "/embeddings",
                "embeddings",
            ),
        ] {
            assert_eq!(Operation::from_path(path), Some(op));
            assert_eq!(op.upstream_path(), up);
            assert_eq!(op.as_str(), name);
        }
        assert_eq!(Operation::from_path("/v1/messages"), None);
        assert_eq!(Operation::from_path("/v1/chat/completions/"), None);
        assert_eq!(Operation::from_path("/chat/completions"), None);
    }
}
