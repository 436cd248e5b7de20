use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::Usage;

/// The verdict on one upstream attempt (DESIGN.md §4), decided once by the fallback executor
/// and read by everything that reacts to it: the next step of the fallback, the breaker,
/// endpoint health, budgets and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A complete answer with output.
    Success,
    /// Connect, TLS or DNS failure, or a reset before the request was written: nothing was
    /// sent, so the same endpoint may be tried once more.
    ConnectFailed,
    /// The upstream's TLS certificate is not trusted (or the handshake failed): nothing was
    /// sent, and trying the same endpoint again cannot help.
    TlsFailed,
    /// Reset or EOF after the request was written: possibly billed; never resent there.
    ResetAfterWrite,
    /// No output within the first-token timeout.
    FirstTokenTimeout,
    /// No event within the idle timeout between chunks.
    IdleTimeout,
    /// The attempt's own total time ran out.
    AttemptTimeout,
    /// 429 (not a quota): the endpoint is rate limited for a while.
    RateLimited,
    /// 401 / 403 / 402 / quota-429 on our key: the provider's key is unusable for a while.
    Credential,
    /// 500 / 502 / 503 / 504 / 529 or an upstream error event before any output.
    ServerError,
    /// A 200 with no content and no tool call.
    EmptyCompletion,
    /// Upstream JSON or SSE that does not parse.
    Malformed,
    /// 400: the prompt does not fit the model's context window.
    ContextLength,
    /// A content-policy refusal.
    ContentPolicy,
    /// Any other 4xx from the upstream: the request's fault.
    ClientError,
    /// The stream was cut or stalled after its commit point.
    CutAfterCommit,
    /// The client went away; nothing is the endpoint's fault.
    Cancelled,
}

/// How an attempt's verdict counts for the endpoint's circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerEffect {
    Success,
    Failure,
    /// Counts toward the rate-limit cooldown only.
    RateOnly,
    /// Counts toward the provider's credential cooldown only.
    Credential,
    /// Counts nowhere.
    Ignore,
}

impl Class {
    /// The low-cardinality label for metrics, logs and the attempt trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::ConnectFailed => "connect_failed",
            Self::TlsFailed => "tls_failed",
            Self::ResetAfterWrite => "reset_after_write",
            Self::FirstTokenTimeout => "first_token_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::AttemptTimeout => "attempt_timeout",
            Self::RateLimited => "rate_limited",
            Self::Credential => "credential",
            Self::ServerError => "server_error",
            Self::EmptyCompletion => "empty_completion",
            Self::Malformed => "malformed",
            Self::ContextLength => "context_length",
            Self::ContentPolicy => "content_policy",
            Self::ClientError => "client_error",
            Self::CutAfterCommit => "cut_after_commit",
            Self::Cancelled => "cancelled",
        }
    }

    /// The table of DESIGN.md §4, "counts toward breaker".
    pub fn breaker_effect(self) -> BreakerEffect {
        match self {
            Self::Success => BreakerEffect::Success,
            Self::ConnectFailed
            | Self::TlsFailed
            | Self::ResetAfterWrite
            | Self::FirstTokenTimeout
            | Self::IdleTimeout
            | Self::AttemptTimeout
            | Self::ServerError
            | Self::EmptyCompletion
            | Self::Malformed
            | Self::CutAfterCommit => BreakerEffect::Failure,
            Self::RateLimited => BreakerEffect::RateOnly,
            Self::Credential => BreakerEffect::Credential,
            Self::ContextLength | Self::ContentPolicy | Self::ClientError | Self::Cancelled => {
                BreakerEffect::Ignore
            }
        }
    }

    /// Whether the upstream may have billed the attempt (it received the request and may
    /// have generated tokens): such an attempt is never settled at zero.
    pub fn maybe_billed(self) -> bool {
        !matches!(self, Self::ConnectFailed | Self::TlsFailed)
    }
}

/// A candidate the fallback executor skipped without sending anything to it.
#[derive(Clone, Copy, Debug)]
pub struct SkipReport<'a> {
    /// The request's id (`x-switchyard-request-id`), when it has one.
    pub request_id: Option<&'a str>,
    /// Stable endpoint id (`provider/model`).
    pub endpoint: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    /// The refusal's error code, e.g. `breaker_open`, `endpoint_saturated`,
    /// `budget_exceeded`.
    pub reason: &'static str,
}

/// One finished upstream attempt, as the fallback executor reports it to every observer.
#[derive(Clone, Debug)]
pub struct AttemptReport {
    /// The request's id (`x-switchyard-request-id`), when it has one.
    pub request_id: Option<Arc<str>>,
    /// Stable endpoint id (`provider/model`).
    pub endpoint: Arc<str>,
    pub provider: Arc<str>,
    pub model: Arc<str>,
    /// 1-based attempt number within the request.
    pub attempt: u32,
    pub class: Class,
    /// HTTP status the upstream answered with, if it answered.
    pub status: Option<u16>,
    pub sent_at: Instant,
    /// Time from sending to the first output event.
    pub ttft: Option<Duration>,
    pub ended_at: Instant,
    /// Usage reported by the upstream (or estimated, see [`Usage::estimated`]).
    pub usage: Option<Usage>,
    /// `Retry-After` the upstream asked for.
    pub retry_after: Option<Duration>,
}

/// Something that learns from every attempt: endpoint health, the breaker, budgets, metrics.
pub trait AttemptObserver: Send + Sync + 'static {
    fn observe(&self, report: &AttemptReport);

    /// A retry was not made because the retry budget was spent.
    fn retry_budget_refused(&self) {}

    /// A candidate was skipped without being sent: Switchyard's own refusal.
    fn attempt_skipped(&self, _skip: &SkipReport<'_>) {}
}
