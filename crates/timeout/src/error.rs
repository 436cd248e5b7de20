use std::time::Duration;

use http::StatusCode;
use switchyard_core::{Class, ProxyError};

/// The `type` every timeout error carries.
const TIMEOUT: &str = "timeout";

/// Text of [`DeadlineExceeded`], shared with the in-band error event the Deadline layer
/// writes into a stream it cuts, so the two never drift apart.
pub(crate) const DEADLINE_MESSAGE: &str = "the request did not complete within its deadline";

/// The whole request ran past its deadline (`timeouts.total`, or an earlier deadline set
/// outside the proxy's stack). It is the request's limit, not the endpoint's fault, so it
/// stands for no attempt verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", DEADLINE_MESSAGE)]
pub struct DeadlineExceeded;

impl ProxyError for DeadlineExceeded {
    fn status(&self) -> StatusCode {
        StatusCode::GATEWAY_TIMEOUT
    }
    fn error_type(&self) -> &'static str {
        TIMEOUT
    }
    fn code(&self) -> &'static str {
        "deadline_exceeded"
    }
}

/// The attempt produced no output (neither response headers nor an output event) within
/// the first-token timeout, counted from when the attempt started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the upstream produced no output within the first-token timeout of {after:?}")]
pub struct FirstTokenTimeout {
    /// The first-token timeout that ran out.
    pub after: Duration,
}

impl ProxyError for FirstTokenTimeout {
    fn status(&self) -> StatusCode {
        StatusCode::GATEWAY_TIMEOUT
    }
    fn error_type(&self) -> &'static str {
        TIMEOUT
    }
    fn code(&self) -> &'static str {
        "first_token_timeout"
    }
    fn class(&self) -> Option<Class> {
        Some(Class::FirstTokenTimeout)
    }
}

/// After its first output, the attempt's stream went silent for longer than the idle
/// timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the upstream stream was idle for longer than {after:?}")]
pub struct IdleTimeout {
    /// The idle timeout that ran out.
    pub after: Duration,
}

impl ProxyError for IdleTimeout {
    fn status(&self) -> StatusCode {
        StatusCode::GATEWAY_TIMEOUT
    }
    fn error_type(&self) -> &'static str {
        TIMEOUT
    }
    fn code(&self) -> &'static str {
        "idle_timeout"
    }
    fn class(&self) -> Option<Class> {
        Some(Class::IdleTimeout)
    }
}

/// The attempt as a whole (headers and stream) took longer than the attempt timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the upstream attempt took longer than {after:?}")]
pub struct AttemptTimeout {
    /// The attempt timeout that ran out.
    pub after: Duration,
}

impl ProxyError for AttemptTimeout {
    fn status(&self) -> StatusCode {
        StatusCode::GATEWAY_TIMEOUT
    }
    fn error_type(&self) -> &'static str {
        TIMEOUT
    }
    fn code(&self) -> &'static str {
        "attempt_timeout"
    }
    fn class(&self) -> Option<Class> {
        Some(Class::AttemptTimeout)
    }
}
