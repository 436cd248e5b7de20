use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_core::Pricing;

use crate::prefs::{DataCollection, ProviderPrefs};
use crate::settings::{Defaults, RetryOverrides, TimeoutOverrides};

/// A credential. `Debug` and `Display` print `[redacted]` so that a key never reaches a log,
/// an error or a panic message by accident; only [`Secret::expose`] yields it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The wire API a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    OpenAi,
    Anthropic,
    Azure,
}

/// One upstream provider: where it lives, how to authenticate, and its data policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Provider {
    /// Stable id from the policy (`providers.<id>`).
    pub id: Arc<str>,
    pub api: Api,
    /// `base_url` as given, trailing `/` trimmed.
    pub base_url: String,
    /// True for `https://`.
    pub https: bool,
    /// `host[:port]` as given.
    pub authority: http::uri::Authority,
    /// Host only: no port, no IPv6 brackets.
    pub host: String,
    /// Explicit port, or 443 / 80 by scheme.
    pub port: u16,
    /// Path prefix without trailing `/` (`/v1`), `""` if none.
    pub base_path: String,
    /// Resolved at compile time; `None` when not configured or not found (with a warning).
    pub api_key: Option<Secret>,
    pub data_collection: DataCollection,
    /// Zero data retention.
    pub zdr: bool,
    /// Hosts whose intercepted traffic goes to this provider, lower-case.
    pub intercept_hosts: Vec<String>,
    /// Whether `base_url` may point at a loopback, private or link-local address.
    pub allow_private_network: bool,
    /// Contents of `ca_file`: PEM certificates this provider's connections trust in
    /// addition to the public web roots (a private CA, a self-signed test server).
    pub ca_pem: Option<Arc<[u8]>>,
}

/// A model as the application names it, served by one or more endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Stable id from the policy (`models.<id>`).
    pub id: Arc<str>,
    /// Other names that resolve to this model.
    pub aliases: Vec<Arc<str>>,
    /// Context window, tokens.
    pub context_length: Option<u64>,
    /// In file order.
    pub endpoints: Vec<Arc<Endpoint>>,
}

/// One model at one provider: the unit that is selected, tried, priced and broken.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Stable id `<provider-id>/<model-id>`; when a model lists the same provider more than
    /// once, the later ones get `#<upstream_model>` appended.
    pub id: Arc<str>,
    /// The policy model id this endpoint serves.
    pub model: Arc<str>,
    pub provider: Arc<Provider>,
    /// The model name sent upstream (defaults to the model id).
    pub upstream_model: Arc<str>,
    /// USD per million tokens, and USD per request.
    pub pricing: Pricing,
    /// Largest completion this endpoint produces, tokens.
    pub max_output_tokens: Option<u64>,
    pub quantization: Option<Arc<str>>,
    /// Sorted and deduplicated, for [`Endpoint::supports`].
    pub supported_parameters: Vec<Arc<str>>,
    /// Whether a trailing assistant message is continued (needed for stream continuation).
    pub supports_prefill: bool,
    pub timeouts: TimeoutOverrides,
}

impl Endpoint {
    /// Whether the endpoint declares support for request parameter `p`.
    pub fn supports(&self, p: &str) -> bool {
        self.supported_parameters
            .binary_search_by(|x| (**x).cmp(p))
            .is_ok()
    }
}

/// A named routing rule: which requested models it applies to and how they are served.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Stable id from the policy; requests can name it as `@preset/<id>`.
    pub id: Arc<str>,
    /// Model ids (aliases resolved) whose requests this route governs.
    pub match_models: Vec<Arc<str>>,
    /// Model ids (aliases resolved) to serve with, in fallback order; empty means the
    /// requested model.
    pub models: Vec<Arc<str>>,
    pub provider: Option<ProviderPrefs>,
    pub timeouts: TimeoutOverrides,
    pub retry: RetryOverrides,
    /// Cap on the completion length, tokens.
    pub max_tokens: Option<u64>,
    /// When a request's worst case does not fit a budget, cap its `max_tokens` so it fits
    /// (if any output fits at all) instead of refusing it with 402.
    pub fit_to_budget: bool,
}

/// What a budget counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BudgetScope {
    Global,
    /// A route id.
    Route(Arc<str>),
    /// A caller tag (`x-switchyard-tag` or `user`).
    Tag(Arc<str>),
    /// A model id (an alias in the file is resolved to the id).
    Model(Arc<str>),
}

/// A spend cap.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// Stable id; ledger counters are keyed by it.
    pub id: Arc<str>,
    pub scope: BudgetScope,
    /// USD per calendar day in `timezone`.
    pub daily_usd: Option<f64>,
    /// USD per calendar month in `timezone`.
    pub monthly_usd: Option<f64>,
    /// The time zone whose midnight starts a day (and whose 1st starts a month); UTC unless
    /// the budget names one.
    pub timezone: jiff::tz::TimeZone,
    /// USD: the most one request may cost under this budget.
    pub max_cost_usd: Option<f64>,
    /// Tokens: a ceiling applied to each request's `max_tokens`.
    pub max_tokens: Option<u64>,
}

/// A compiled policy: immutable, with every lookup the request path needs precomputed.
/// One is loaded per request and shared behind an `Arc`.
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) sha256: String,
    pub(crate) providers: Vec<Arc<Provider>>,
    pub(crate) provider_index: HashMap<Arc<str>, usize>,
    pub(crate) intercept_index: HashMap<String, usize>,
    pub(crate) models: Vec<Arc<Model>>,
    /// Ids and aliases.
    pub(crate) model_index: HashMap<Arc<str>, usize>,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) endpoint_index: HashMap<Arc<str>, usize>,
    pub(crate) routes: Vec<Arc<Route>>,
    pub(crate) route_index: HashMap<Arc<str>, usize>,
    /// Model id to the route whose `match_models` names it.
    pub(crate) route_by_model: HashMap<Arc<str>, usize>,
    pub(crate) defaults: Defaults,
    pub(crate) budgets: Vec<Budget>,
}

impl Snapshot {
    /// Hex SHA-256 of the policy source text.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The provider with this id.
    pub fn provider(&self, id: &str) -> Option<&Arc<Provider>> {
        self.provider_index.get(id).map(|&i| &self.providers[i])
    }

    /// All providers, in file order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The provider that intercepted traffic for `host` goes to (case-insensitive).
    pub fn provider_for_intercept_host(&self, host: &str) -> Option<&Arc<Provider>> {
        let host = host.trim_end_matches('.');
        let found = match self.intercept_index.get(host) {
            Some(i) => Some(i),
            None => self.intercept_index.get(&host.to_ascii_lowercase()),
        };
        found.map(|&i| &self.providers[i])
    }

    /// The model with this id or alias.
    pub fn model(&self, name: &str) -> Option<&Arc<Model>> {
        self.model_index.get(name).map(|&i| &self.models[i])
    }

    /// All models, in file order.
    pub fn models(&self) -> &[Arc<Model>] {
        &self.models
    }

    /// Every endpoint of every model, in file order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The endpoint with this id.
    pub fn endpoint(&self, id: &str) -> Option<&Arc<Endpoint>> {
        self.endpoint_index.get(id).map(|&i| &self.endpoints[i])
    }

    /// The route with this id.
    pub fn route(&self, id: &str) -> Option<&Arc<Route>> {
        self.route_index.get(id).map(|&i| &self.routes[i])
    }

    /// The route whose `match_models` names this model (by id or alias).
    pub fn route_for_model(&self, name: &str) -> Option<&Arc<Route>> {
        let model = self.model(name)?;
        self.route_by_model
            .get(&*model.id)
            .map(|&i| &self.routes[i])
    }

    /// All routes, in file order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The `defaults` section, built-in defaults filled in.
    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// All budgets, in file order.
    pub fn budgets(&self) -> &[Budget] {
        &self.budgets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("sk-live-abcdef");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "sk-live-abcdef");
    }

    #[test]
    fn api_names() {
        let v: Vec<Api> =
            serde_json::from_str(r#"["openai","anthropic","azure"]"#).unwrap_or_default();
        assert_eq!(v, vec![Api::OpenAi, Api::Anthropic, Api::Azure]);
    }
}
