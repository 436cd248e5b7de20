use http::StatusCode;
use switchyard_core::ProxyError;

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

/// Neither `model` nor `models` names anything.
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
