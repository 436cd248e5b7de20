//! The routing plan of one request: what `select` decided and the attempt layers walk.
//!
//! It lives beside the snapshot it points into, so that `select` (which writes it) and the
//! attempt layers (which read it) share it without depending on each other.

use std::fmt;
use std::sync::Arc;

use crate::{Endpoint, ProviderPrefs, Route};

/// The endpoints one request may be sent to, best first, and the ones it may not.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The route that governs the request, if one matched.
    pub route: Option<Arc<Route>>,
    /// The models asked for, in fallback order, as policy model ids.
    pub models: Vec<Arc<str>>,
    /// The effective provider preferences: `defaults.provider`, then the route's, then the
    /// request's, each field of a later one replacing the earlier (plus `:nitro`/`:floor`).
    pub prefs: ProviderPrefs,
    /// Endpoints in the order they are to be tried.
    pub candidates: Vec<Candidate>,
    /// Endpoints that will not be tried, each with the first filter that excluded it.
    pub excluded: Vec<Exclusion>,
    /// The sticky-session key, when the request named a session.
    pub session: Option<Arc<str>>,
}

/// One endpoint the request may go to, and why it sits where it does.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub endpoint: Arc<Endpoint>,
    /// Why this endpoint is at this position (`sticky`, `order`, `weighted`, `price`,
    /// `throughput`, `latency`, `fallback`, `outage`, `below_preferred`).
    pub why: &'static str,
    /// The number the ordering used for it (price in USD/M, tokens/s, seconds, weight), if any.
    pub score: Option<f64>,
}

/// An endpoint a hard filter removed, with the filter (a stable, low-cardinality code) and a
/// human-readable detail.
#[derive(Clone, Debug, PartialEq)]
pub struct Exclusion {
    pub endpoint: Arc<str>,
    pub provider: Arc<str>,
    pub model: Arc<str>,
    pub reason: ExclusionReason,
    pub detail: String,
}

/// The hard filters of DESIGN.md §4 "Selection", in the order they are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExclusionReason {
    Only,
    Ignore,
    DataCollection,
    Zdr,
    Quantization,
    RequireParameters,
    Tools,
    ResponseFormat,
    MaxTokens,
    ContextLength,
    MaxPrice,
    BreakerOpen,
    CredentialCooldown,
    AllowFallbacks,
}

impl ExclusionReason {
    /// The stable code used in error metadata, explain output and metric labels.
    pub fn code(self) -> &'static str {
        match self {
            Self::Only => "only",
            Self::Ignore => "ignore",
            Self::DataCollection => "data_collection",
            Self::Zdr => "zdr",
            Self::Quantization => "quantizations",
            Self::RequireParameters => "require_parameters",
            Self::Tools => "tools",
            Self::ResponseFormat => "response_format",
            Self::MaxTokens => "max_tokens",
            Self::ContextLength => "context_length",
            Self::MaxPrice => "max_price",
            Self::BreakerOpen => "breaker_open",
            Self::CredentialCooldown => "credential_cooldown",
            Self::AllowFallbacks => "allow_fallbacks",
        }
    }
}

impl fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
