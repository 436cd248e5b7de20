use http::{Method, StatusCode};
use switchyard_core::ProxyError;

/// The path is not one the proxy serves.
#[derive(Debug, thiserror::Error)]
#[error("unknown request URL: {method} {path}")]
pub struct NotFound {
    pub method: Method,
    pub path: String,
}

impl ProxyError for NotFound {
    fn status(&self) -> StatusCode {
        StatusCode::NOT_FOUND
    }
    fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }
    fn code(&self) -> &'static str {
        "unknown_url"
    }
}

/// The path exists but not for this method.
#[derive(Debug, thiserror::Error)]
#[error("method {method} is not allowed for {path} (allowed: {allowed})")]
pub struct WrongMethod {
    pub method: Method,
    pub path: String,
    pub allowed: &'static str,
}

impl ProxyError for WrongMethod {
    fn status(&self) -> StatusCode {
        StatusCode::METHOD_NOT_ALLOWED
    }
    fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }
    fn code(&self) -> &'static str {
        "method_not_allowed"
    }
    fn extra_headers(&self, headers: &mut http::HeaderMap) {
        headers.insert(
            http::header::ALLOW,
            http::HeaderValue::from_static(self.allowed),
        );
    }
}

/// An error that carries no [`ProxyError`]: a bug or an unexpected failure below us. The
/// caller learns only that it happened; the detail goes to the log.
#[derive(Debug, thiserror::Error)]
#[error("internal error in the proxy")]
pub struct Internal;

impl ProxyError for Internal {
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
