//! Leaf errors of the wire crate.

use http::{HeaderMap, StatusCode};
use switchyard_core::{Class, ProxyError};

use crate::classify::{classify_error_event, classify_response};

/// Why a caller's request body was rejected before any routing. Always a 400 in the
/// caller's error shape; `code` and `param` are part of the external contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not JSON (serde's message, with line and column).
    #[error("request body is not valid JSON: {message}")]
    InvalidJson { message: String },
    /// The body is JSON but not an object.
    #[error("request body must be a JSON object")]
    InvalidBody,
    /// A field Switchyard reads has the wrong type.
    #[error("invalid type for `{param}`: expected {expected}")]
    InvalidParameter {
        param: &'static str,
        expected: &'static str,
    },
    /// A field the operation requires is absent (or not of its required shape).
    #[error("missing required parameter `{param}`")]
    MissingParameter { param: &'static str },
}

impl ProxyError for RequestError {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson { .. } => "invalid_json",
            Self::InvalidBody => "invalid_body",
            Self::InvalidParameter { .. } => "invalid_parameter",
            Self::MissingParameter { .. } => "missing_parameter",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidParameter { param, .. } | Self::MissingParameter { param } => Some(param),
            Self::InvalidJson { .. } | Self::InvalidBody => None,
        }
    }
}

/// What went wrong reading an upstream response.
///
/// Streams yield it as [`switchyard_core::Failure::boxed`], so layers find it (and its
/// verdict, [`ProxyError::class`]) with [`switchyard_core::Failure::find`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The upstream sent something that is not the JSON (or SSE) its API promises.
    #[error("malformed upstream response: {detail}")]
    Malformed { detail: String },
    /// The upstream answered with an `error` object instead of a result.
    #[error("upstream error{}: {message}", status.map(|s| format!(" {s}")).unwrap_or_default())]
    UpstreamError {
        /// HTTP status named by the error object (OpenRouter puts it in `error.code`).
        status: Option<u16>,
        message: String,
    },
    /// An SSE line (or one event's data) exceeded the configured cap.
    #[error("upstream SSE line longer than {limit} bytes")]
    LineTooLong { limit: usize },
}

impl ProxyError for WireError {
    fn status(&self) -> StatusCode {
        match self {
            Self::UpstreamError {
                status: Some(s), ..
            } => StatusCode::from_u16(*s)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_type(&self) -> &'static str {
        "upstream_error"
    }

    /// Malformed JSON or SSE and over-long lines are [`Class::Malformed`]; an upstream
    /// `error` object is classified by the status it names and its wording, as
    /// [`classify_response`] (or, with no status, [`classify_error_event`]) does.
    fn class(&self) -> Option<Class> {
        Some(match self {
            Self::Malformed { .. } | Self::LineTooLong { .. } => Class::Malformed,
            Self::UpstreamError {
                status: Some(status),
                message,
            } if *status >= 400 => {
                classify_response(*status, &HeaderMap::new(), message.as_bytes()).class
            }
            Self::UpstreamError { message, .. } => classify_error_event(message.as_bytes()),
        })
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed_response",
            Self::UpstreamError { .. } => "upstream_error",
            Self::LineTooLong { .. } => "sse_line_too_long",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_errors_are_400_with_stable_codes() {
        let e = RequestError::InvalidParameter {
            param: "stream",
            expected: "a boolean",
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.error_type(), "invalid_request_error");
        assert_eq!(e.code(), "invalid_parameter");
        assert_eq!(e.param(), Some("stream"));
        assert_eq!(RequestError::InvalidBody.param(), None);
        assert_eq!(
            RequestError::MissingParameter { param: "messages" }.code(),
            "missing_parameter"
        );
    }

    #[test]
    fn wire_errors_map_to_gateway_statuses() {
        let e = WireError::UpstreamError {
            status: Some(429),
            message: "slow down".into(),
        };
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.to_string(), "upstream error 429: slow down");
        let e = WireError::UpstreamError {
            status: Some(200),
            message: "odd".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(e.to_string(), "upstream error 200: odd");
        let e = WireError::Malformed { detail: "x".into() };
        assert_eq!(e.code(), "malformed_response");
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn wire_errors_carry_their_verdict() {
        let class = |e: WireError| e.class();
        assert_eq!(
            class(WireError::Malformed { detail: "x".into() }),
            Some(Class::Malformed)
        );
        assert_eq!(
            class(WireError::LineTooLong { limit: 8 }),
            Some(Class::Malformed)
        );
        let upstream = |status, message: &str| WireError::UpstreamError {
            status,
            message: message.into(),
        };
        assert_eq!(
            class(upstream(Some(429), "slow down")),
            Some(Class::RateLimited)
        );
        assert_eq!(class(upstream(Some(503), "busy")), Some(Class::ServerError));
        assert_eq!(
            class(upstream(Some(401), "bad key")),
            Some(Class::Credential)
        );
        assert_eq!(
            class(upstream(
                Some(400),
                "This model's maximum context length is 8192 tokens"
            )),
            Some(Class::ContextLength)
        );
        assert_eq!(
            class(upstream(Some(400), "bad temperature")),
            Some(Class::ClientError)
        );
        assert_eq!(
            class(upstream(None, "Provider disconnected")),
            Some(Class::ServerError)
        );
        assert_eq!(
            class(upstream(None, "prompt is too long: 9 tokens > 8 maximum")),
            Some(Class::ContextLength)
        );
        assert_eq!(class(upstream(Some(200), "odd")), Some(Class::ServerError));
        assert_eq!(
            class(upstream(None, "rate limit exceeded")),
            Some(Class::RateLimited)
        );
    }
}
