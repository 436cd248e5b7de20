use std::sync::Arc;

/// The wire format the caller speaks, which is also the shape of every error it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InboundApi {
    OpenAi,
    Anthropic,
}

impl InboundApi {
    /// The caller's API as told by the request path (`/v1/messages` is Anthropic's).
    pub fn from_path(path: &str) -> Self {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Self::Anthropic
        } else {
            Self::OpenAi
        }
    }
}

/// An endpoint's prices: `prompt` and `completion` in USD per million tokens, `request` in
/// USD per request (OpenRouter's units).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pricing {
    pub prompt: f64,
    pub completion: f64,
    pub request: f64,
}

impl Pricing {
    /// Cost in USD of one call with this usage.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.prompt + completion_tokens as f64 * self.completion) / 1e6
            + self.request
    }
}

/// Token usage of one upstream call and what it cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// USD, from the serving endpoint's [`Pricing`].
    pub cost: f64,
    /// True when the provider reported no usage and Switchyard estimated it.
    pub estimated: bool,
}

/// Who served a response: set by the upstream on the response's extensions and read by the
/// outer layers for the `x-switchyard-*` headers, metrics and logs.
#[derive(Clone, Debug)]
pub struct Served {
    /// Stable endpoint id from the policy (`provider/model`).
    pub endpoint: Arc<str>,
    /// Provider id from the policy.
    pub provider: Arc<str>,
    /// Model id from the policy (after any fallback).
    pub model: Arc<str>,
    /// The upstream's own model name.
    pub upstream_model: Arc<str>,
    /// Upstream attempts made for this request, this one included.
    pub attempts: u32,
    /// Usage, when known before the body is sent (non-streaming responses).
    pub usage: Option<Usage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_per_million_tokens_plus_per_request() {
        let p = Pricing {
            prompt: 0.5,
            completion: 1.5,
            request: 0.001,
        };
        let c = p.cost(1_000, 2_000);
        assert!((c - (0.0005 + 0.003 + 0.001)).abs() < 1e-12, "{c}");
    }

    #[test]
    fn inbound_api_from_path() {
        assert_eq!(InboundApi::from_path("/v1/messages"), InboundApi::Anthropic);
        assert_eq!(
            InboundApi::from_path("/v1/chat/completions"),
            InboundApi::OpenAi
        );
    }
}

/// When the whole request must be over (DESIGN.md §4 `timeouts.total`), set by the Deadline
/// layer; attempts, backoffs and Retry-After waits never run past it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub tokio::time::Instant);
