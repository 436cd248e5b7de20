use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::BoxError;

/// What `respond` needs to know about an error to answer the caller.
///
/// Leaf errors live in the crate that raises them (in its `error.rs`) and implement this
/// trait; they travel between layers as a [`BoxError`] holding a [`Failure`]. The `type` and
/// `code` strings are part of the external contract: keep them stable.
pub trait ProxyError: std::error::Error + Send + Sync + 'static {
    /// HTTP status returned to the caller.
    fn status(&self) -> StatusCode;
    /// Stable error `type` (e.g. `invalid_request_error`, `no_endpoints`).
    fn error_type(&self) -> &'static str;
    /// Stable error `code` (e.g. `model_not_found`); also the low-cardinality metric reason.
    fn code(&self) -> &'static str;
    /// The request parameter the error is about, if any.
    fn param(&self) -> Option<&str> {
        None
    }
    /// Structured detail for the error body's `metadata` (attempt trail, exclusions, ...).
    fn metadata(&self) -> Option<serde_json::Value> {
        None
    }
    /// Value for a `Retry-After` header, if the caller may usefully retry later.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// The attempt verdict this error stands for, when it describes an upstream attempt
    /// (a timeout, an unreachable upstream, a malformed stream).
    fn class(&self) -> Option<crate::Class> {
        None
    }
    /// True when the endpoint was not tried at all (breaker open, cooling down): the fallback
    /// executor moves on without counting an attempt.
    fn skipped(&self) -> bool {
        false
    }
    /// Any further response headers the error calls for (e.g. `Allow` on a 405).
    fn extra_headers(&self, _headers: &mut http::HeaderMap) {}
}

/// A [`ProxyError`] as a concrete type, so that `respond` can find it in a [`BoxError`] by
/// downcasting.
pub struct Failure(Box<dyn ProxyError>);

impl Failure {
    pub fn new(err: impl ProxyError) -> Self {
        Self(Box::new(err))
    }

    /// Wraps a leaf error straight into the error type used between layers.
    pub fn boxed(err: impl ProxyError) -> BoxError {
        Box::new(Self::new(err))
    }

    pub fn get(&self) -> &dyn ProxyError {
        &*self.0
    }

    /// Finds the [`Failure`] in an error (or in its chain of sources).
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Failure> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(f) = e.downcast_ref::<Failure>() {
                return Some(f);
            }
            cur = e.source();
        }
        None
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Teapot;
    impl fmt::Display for Teapot {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("short and stout")
        }
    }
    impl std::error::Error for Teapot {}
    impl ProxyError for Teapot {
        fn status(&self) -> StatusCode {
            StatusCode::IM_A_TEAPOT
        }
        fn error_type(&self) -> &'static str {
            "teapot"
        }
        fn code(&self) -> &'static str {
            "tea"
        }
    }

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn finds_failure_directly_and_through_sources() {
        let direct = Failure::boxed(Teapot);
        let found = Failure::find(&*direct).map(|f| f.get().status());
        assert_eq!(found, Some(StatusCode::IM_A_TEAPOT));

        let wrapped: BoxError = Box::new(Wrapper(Failure::boxed(Teapot)));
        let found = Failure::find(&*wrapped).map(|f| f.get().code());
        assert_eq!(found, Some("tea"));
        assert_eq!(wrapped.to_string(), "wrapped");
    }

    #[test]
    fn plain_errors_have_no_failure() {
        let plain: BoxError = "boom".into();
        assert!(Failure::find(&*plain).is_none());
    }
}
