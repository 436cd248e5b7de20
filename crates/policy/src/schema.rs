//! The policy file as written: serde types only, no meaning attached. Names match the file's
//! keys, and serde's "expected struct X" messages use these type names.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::prefs::{DataCollection, ProviderPrefs};
use crate::snapshot::Api;

/// A duration written as a string: `"500ms"`, `"5s"`, `"2m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dur(pub(crate) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\", \"5s\" or \"2m\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                humantime::parse_duration(v.trim()).map(Dur).map_err(|e| {
                    E::custom(format!(
                        "invalid duration \"{v}\": {e}; write it like \"500ms\", \"5s\" or \"2m\""
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

pub(crate) fn dur(d: Option<Dur>) -> Option<Duration> {
    d.map(|d| d.0)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Policy {
    #[serde(default)]
    pub providers: BTreeMap<String, Provider>,
    #[serde(default)]
    pub models: BTreeMap<String, Model>,
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub budgets: Vec<Budget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Provider {
    pub api: Api,
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    pub data_collection: Option<DataCollection>,
    pub zdr: Option<bool>,
    #[serde(default)]
    pub intercept_hosts: Vec<String>,
    #[serde(default)]
    pub allow_private_network: bool,
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKey {
    pub env: Option<String>,
    pub file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Model {
    #[serde(default)]
    pub aliases: Vec<String>,
    pub context_length: Option<u64>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Endpoint {
    pub provider: String,
    pub upstream_model: Option<String>,
    pub pricing: Option<Pricing>,
    pub max_output_tokens: Option<u64>,
    pub quantization: Option<String>,
    #[serde(default)]
    pub supported_parameters: Vec<String>,
    #[serde(default)]
    pub supports_prefill: bool,
    #[serde(default)]
    pub timeouts: Timeouts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pricing {
    #[serde(default)]
    pub prompt: f64,
    #[serde(default)]
    pub completion: f64,
    #[serde(default)]
    pub request: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Timeouts {
    pub connect: Option<Dur>,
    pub first_token: Option<Dur>,
    pub idle: Option<Dur>,
    pub attempt: Option<Dur>,
    pub total: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retry {
    pub max_attempts: Option<u32>,
    pub same_endpoint_retries: Option<u32>,
    pub backoff_base: Option<Dur>,
    pub backoff_max: Option<Dur>,
    pub budget_ratio: Option<f64>,
    pub budget_min_per_s: Option<f64>,
    pub max_retry_after_wait: Option<Dur>,
    pub continuation: Option<bool>,
    pub buffer: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Breaker {
    pub consecutive_failures: Option<u32>,
    pub failure_rate: Option<f64>,
    pub window: Option<Dur>,
    pub min_requests: Option<u32>,
    pub open_base: Option<Dur>,
    pub open_max: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    pub max_request_bytes: Option<u64>,
    pub max_response_bytes: Option<u64>,
    pub max_sse_line_bytes: Option<u64>,
    pub header_read_timeout: Option<Dur>,
    pub max_in_flight_per_endpoint: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    #[serde(default)]
    pub match_models: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    pub provider: Option<ProviderPrefs>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub retry: Retry,
    pub max_tokens: Option<u64>,
    /// Cap `max_tokens` so a request fits the remaining budget instead of refusing it.
    #[serde(default)]
    pub fit_to_budget: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Defaults {
    pub provider: Option<ProviderPrefs>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default)]
    pub breaker: Breaker,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Budget {
    pub id: String,
    pub scope: Scope,
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    /// IANA time zone of the calendar windows (default UTC).
    pub timezone: Option<String>,
    /// USD: the most one request may cost.
    pub max_cost_usd: Option<f64>,
    /// Tokens: a ceiling applied to each request's `max_tokens`.
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scope {
    Global,
    Route(String),
    Tag(String),
    Model(String),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn durations_parse_from_strings_only() {
        let d: Dur = serde_json::from_str("\"500ms\"").unwrap();
        assert_eq!(d.0, Duration::from_millis(500));
        let d: Dur = serde_json::from_str("\"2m\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(120));
        let d: Dur = serde_json::from_str("\"1s 500ms\"").unwrap();
        assert_eq!(d.0, Duration::from_millis(1500));
        let e = serde_json::from_str::<Dur>("\"5 parsecs\"").unwrap_err();
        assert!(
            e.to_string().contains("invalid duration \"5 parsecs\""),
            "{e}"
        );
        let e = serde_json::from_str::<Dur>("5").unwrap_err();
        assert!(e.to_string().contains("a duration string"), "{e}");
    }

    #[test]
    fn scope_forms() {
        let s: Vec<Scope> =
            serde_json::from_str(r#"["global", {"route": "r"}, {"tag": "t"}, {"model": "m"}]"#)
                .unwrap();
        assert!(matches!(s[0], Scope::Global));
        assert!(matches!(&s[1], Scope::Route(r) if r == "r"));
        assert!(matches!(&s[2], Scope::Tag(t) if t == "t"));
        assert!(matches!(&s[3], Scope::Model(m) if m == "m"));
        assert!(serde_json::from_str::<Scope>(r#""everything""#).is_err());
    }
}
