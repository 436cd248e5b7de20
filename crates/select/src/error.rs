use std::fmt;

use http::StatusCode;
use switchyard_core::ProxyError;
use switchyard_policy::Exclusion;

/// The request names a model the policy does not know (by id or alias).
#[derive(Debug, thiserror::Error)]
#[error("model '{model}' is not configured in the policy")]
pub struct UnknownModel {
    pub model: String,
}

impl ProxyError for UnknownModel {
    fn status(&self) -> StatusCode {
        StatusCode::NOT_FOUND
    }
    fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }
    fn code(&self) -> &'static str {
        "model_not_found"
    }
    fn param(&self) -> Option<&str> {
        Some("model")
    }
}

/// Neither `model`, `models` nor the route names anything to serve.
#[derive(Debug, thiserror::Error)]
#[error("you must provide a model parameter")]
pub struct MissingModel;

impl ProxyError for MissingModel {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }
    fn code(&self) -> &'static str {
        "missing_parameter"
    }
    fn param(&self) -> Option<&str> {
        Some("model")
    }
}

/// Where the request named a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteSource {
    /// The `x-switchyard-route` header.
    Header,
    /// `@preset/<id>` in a model name.
    Preset,
}

impl fmt::Display for RouteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Header => "the x-switchyard-route header",
            Self::Preset => "@preset/ in the model",
        })
    }
}

/// The request names a route (`@preset/<id>` or `x-switchyard-route`) the policy does not have.
#[derive(Debug, thiserror::Error)]
#[error("route '{route}' is not configured in the policy (named by {source_kind})")]
pub struct UnknownRoute {
    pub route: String,
    pub source_kind: RouteSource,
}

impl ProxyError for UnknownRoute {
    fn status(&self) -> StatusCode {
        StatusCode::NOT_FOUND
    }
    fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }
    fn code(&self) -> &'static str {
        "route_not_found"
    }
    fn param(&self) -> Option<&str> {
        match self.source_kind {
            RouteSource::Preset => Some("model"),
            RouteSource::Header => None,
        }
    }
}

/// The request's `provider` object is not OpenRouter's provider preferences (serde's message,
/// with the path of the offending field).
#[derive(Debug, thiserror::Error)]
#[error("invalid `provider` object: {message}")]
pub struct InvalidProvider {
    pub message: String,
}

impl ProxyError for InvalidProvider {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }
    fn code(&self) -> &'static str {
        "invalid_parameter"
    }
    fn param(&self) -> Option<&str> {
        Some("provider")
    }
}

/// Every endpoint of every requested model was removed by a hard filter (or the models have
/// none): nothing is sent upstream.
#[derive(Debug)]
pub struct NoEndpoints {
    /// The models that were asked for, in fallback order.
    pub models: Vec<std::sync::Arc<str>>,
    /// Every endpoint considered, with the first filter that removed it.
    pub excluded: Vec<Exclusion>,
}

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no endpoint can serve this request for model ")?;
        for (i, m) in self.models.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "'{m}'")?;
        }
        if self.excluded.is_empty() {
            return f.write_str(": the policy lists no endpoints for it");
        }
        f.write_str(": ")?;
        for (i, e) in self.excluded.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} excluded by {} ({})", e.endpoint, e.reason, e.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for NoEndpoints {}

impl ProxyError for NoEndpoints {
    fn status(&self) -> StatusCode {
        StatusCode::NOT_FOUND
    }
    fn error_type(&self) -> &'static str {
        "no_endpoints"
    }
    fn code(&self) -> &'static str {
        "no_endpoints"
    }
    fn metadata(&self) -> Option<serde_json::Value> {
        let excluded: Vec<serde_json::Value> = self.excluded.iter().map(exclusion_json).collect();
        Some(serde_json::json!({ "excluded_by": excluded }))
    }
}

/// One exclusion as the error metadata and the explain output show it.
pub(crate) fn exclusion_json(e: &Exclusion) -> serde_json::Value {
    serde_json::json!({
        "endpoint": &*e.endpoint,
        "provider": &*e.provider,
        "model": &*e.model,
        "reason": e.reason.code(),
        "detail": e.detail,
    })
}

/// The request reached Select without a pinned policy: a wiring bug in the stack.
#[derive(Debug, thiserror::Error)]
#[error("no policy snapshot is pinned to this request")]
pub(crate) struct NoPolicy;

impl ProxyError for NoPolicy {
    fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
    fn error_type(&self) -> &'static str {
        "internal_error"
    }
    fn code(&self) -> &'static str {
        "internal_error"
    }
}
