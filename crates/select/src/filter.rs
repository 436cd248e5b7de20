//! Hard filters: an endpoint failing one is never tried. Checks compare numbers and borrowed
//! strings only; the human-readable detail is formatted only for an endpoint that fails.

use std::fmt;

use switchyard_policy::{DataCollection, Endpoint, ExclusionReason, MaxPrice, ProviderPrefs};
use switchyard_wire::ParsedRequest;

/// Whether a `only` / `ignore` / `order` entry names this endpoint: its provider id, or its
/// full endpoint id for a provider listed more than once.
pub(crate) fn names(list: &[String], ep: &Endpoint) -> bool {
    list.iter().any(|p| names_endpoint(p, ep))
}

/// Whether one such entry names this endpoint.
pub(crate) fn names_endpoint(entry: &str, ep: &Endpoint) -> bool {
    entry == &*ep.provider.id || entry == &*ep.id
}

/// The filters that apply to one request, precomputed from its preferences and body.
#[derive(Debug)]
pub(crate) struct Filters<'a> {
    only: Option<&'a [String]>,
    ignore: Option<&'a [String]>,
    deny_data_collection: bool,
    zdr: bool,
    quantizations: Option<&'a [String]>,
    /// The request's parameters, when `require_parameters` is on.
    required: Option<Vec<&'a str>>,
    tools: bool,
    response_format: bool,
    max_tokens: Option<u64>,
    prompt_tokens: u64,
    max_price: Option<MaxPrice>,
}

/// Why an endpoint failed, with what the detail message needs.
#[derive(Debug)]
pub(crate) enum Fail<'a> {
    Only,
    Ignore,
    DataCollection,
    Zdr,
    Quantization(Option<&'a str>),
    NoParameters,
    MissingParameter(&'a str),
    Tools,
    ResponseFormat,
    MaxTokens {
        asked: u64,
        limit: u64,
    },
    ContextLength {
        prompt: u64,
        max_tokens: u64,
        limit: u64,
    },
    MaxPrice {
        what: &'static str,
        price: f64,
        limit: f64,
    },
}

impl Fail<'_> {
    pub(crate) fn reason(&self) -> ExclusionReason {
        match self {
            Self::Only => ExclusionReason::Only,
            Self::Ignore => ExclusionReason::Ignore,
            Self::DataCollection => ExclusionReason::DataCollection,
            Self::Zdr => ExclusionReason::Zdr,
            Self::Quantization(_) => ExclusionReason::Quantization,
            Self::NoParameters | Self::MissingParameter(_) => ExclusionReason::RequireParameters,
            Self::Tools => ExclusionReason::Tools,
            Self::ResponseFormat => ExclusionReason::ResponseFormat,
            Self::MaxTokens { .. } => ExclusionReason::MaxTokens,
            Self::ContextLength { .. } => ExclusionReason::ContextLength,
            Self::MaxPrice { .. } => ExclusionReason::MaxPrice,
        }
    }
}

/// The detail message: says what the endpoint has against what the request asked.
pub(crate) struct Detail<'a>(pub &'a Fail<'a>, pub &'a Endpoint);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let provider = &*self.1.provider.id;
        match *self.0 {
            Fail::Only => write!(f, "provider '{provider}' is not listed in provider.only"),
            Fail::Ignore => write!(f, "provider '{provider}' is listed in provider.ignore"),
            Fail::DataCollection => write!(
                f,
                "provider '{provider}' may collect data (data_collection: allow) and the request \
                 sets data_collection: deny"
            ),
            Fail::Zdr => write!(
                f,
                "provider '{provider}' is not zero-data-retention and the request sets zdr: true"
            ),
            Fail::Quantization(Some(q)) => {
                write!(
                    f,
                    "quantization '{q}' is not listed in provider.quantizations"
                )
            }
            Fail::Quantization(None) => write!(
                f,
                "the endpoint declares no quantization and provider.quantizations is set"
            ),
            Fail::NoParameters => write!(
                f,
                "the endpoint declares no supported_parameters and require_parameters is true"
            ),
            Fail::MissingParameter(p) => write!(
                f,
                "the endpoint does not declare parameter '{p}' and require_parameters is true"
            ),
            Fail::Tools => write!(f, "the endpoint does not support tools"),
            Fail::ResponseFormat => write!(f, "the endpoint does not support response_format"),
            Fail::MaxTokens { asked, limit } => write!(
                f,
                "max_tokens {asked} is above the endpoint's max_output_tokens {limit}"
            ),
            Fail::ContextLength {
                prompt,
                max_tokens,
                limit,
            } => write!(
                f,
                "about {prompt} prompt tokens + max_tokens {max_tokens} exceed the model's \
                 context_length {limit}"
            ),
            Fail::MaxPrice { what, price, limit } => {
                let unit = if what == "request" {
                    "USD per request"
                } else {
                    "USD per million tokens"
                };
                write!(
                    f,
                    "{what} price {price} is above max_price.{what} {limit} ({unit})"
                )
            }
        }
    }
}

impl<'a> Filters<'a> {
    /// `max_tokens` is the request's, already capped by the route.
    pub(crate) fn new(
        prefs: &'a ProviderPrefs,
        req: &'a ParsedRequest,
        max_tokens: Option<u64>,
    ) -> Self {
        Self {
            only: prefs.only.as_deref(),
            ignore: prefs.ignore.as_deref(),
            deny_data_collection: prefs.data_collection == Some(DataCollection::Deny),
            zdr: prefs.zdr == Some(true),
            quantizations: prefs.quantizations.as_deref(),
            required: (prefs.require_parameters == Some(true)).then(|| req.parameters().collect()),
            tools: req.has_tools(),
            response_format: req.has_response_format(),
            max_tokens,
            prompt_tokens: req.estimated_prompt_tokens(),
            max_price: prefs.max_price,
        }
    }

    /// The first filter `ep` fails, in the order of [`ExclusionReason`]; `context_length` is
    /// its model's window.
    pub(crate) fn check<'e>(
        &self,
        ep: &'e Endpoint,
        context_length: Option<u64>,
    ) -> Option<Fail<'e>>
    where
        'a: 'e,
    {
        if let Some(only) = self.only
            && !names(only, ep)
        {
            return Some(Fail::Only);
        }
        if let Some(ignore) = self.ignore
            && names(ignore, ep)
        {
            return Some(Fail::Ignore);
        }
        if self.deny_data_collection && ep.provider.data_collection == DataCollection::Allow {
            return Some(Fail::DataCollection);
        }
        if self.zdr && !ep.provider.zdr {
            return Some(Fail::Zdr);
        }
        if let Some(allowed) = self.quantizations {
            let ok = ep
                .quantization
                .as_deref()
                .is_some_and(|q| allowed.iter().any(|a| a.eq_ignore_ascii_case(q)));
            if !ok {
                return Some(Fail::Quantization(ep.quantization.as_deref()));
            }
        }
        if let Some(required) = &self.required {
            if ep.supported_parameters.is_empty() {
                return Some(Fail::NoParameters);
            }
            if let Some(p) = required.iter().find(|p| !ep.supports(p)).copied() {
                return Some(Fail::MissingParameter(p));
            }
        }
        // An endpoint that declares no parameter list is assumed to accept everything.
        let declares = !ep.supported_parameters.is_empty();
        if self.tools && declares && !ep.supports("tools") {
            return Some(Fail::Tools);
        }
        if self.response_format && declares && !ep.supports("response_format") {
            return Some(Fail::ResponseFormat);
        }
        if let (Some(asked), Some(limit)) = (self.max_tokens, ep.max_output_tokens)
            && asked > limit
        {
            return Some(Fail::MaxTokens { asked, limit });
        }
        if let Some(limit) = context_length {
            let max_tokens = self.max_tokens.unwrap_or(0);
            if self.prompt_tokens.saturating_add(max_tokens) > limit {
                return Some(Fail::ContextLength {
                    prompt: self.prompt_tokens,
                    max_tokens,
                    limit,
                });
            }
        }
        if let Some(mp) = &self.max_price {
            let checks = [
                ("prompt", ep.pricing.prompt, mp.prompt),
                ("completion", ep.pricing.completion, mp.completion),
                ("request", ep.pricing.request, mp.request),
            ];
            for (what, price, limit) in checks {
                if let Some(limit) = limit
                    && price > limit
                {
                    return Some(Fail::MaxPrice { what, price, limit });
                }
            }
        }
        None
    }
}
