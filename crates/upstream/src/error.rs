use http::StatusCode;
use switchyard_core::{Class, ProxyError};
use switchyard_policy::Api;

/// The upstream could not be reached, or the connection failed before a response arrived.
#[derive(Debug, thiserror::Error)]
#[error("provider '{provider}' could not be reached: {}", chain(source))]
pub struct Unreachable {
    pub provider: String,
    #[source]
    pub source: hyper_util::client::legacy::Error,
}

impl ProxyError for Unreachable {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_GATEWAY
    }
    fn error_type(&self) -> &'static str {
        "upstream_error"
    }
    fn code(&self) -> &'static str {
        "upstream_unreachable"
    }
    /// A failure while connecting (TCP, TLS, DNS) means the request was never written and
    /// may be sent again; anything later may have reached the provider.
    fn class(&self) -> Option<Class> {
        Some(if !self.source.is_connect() {
            Class::ResetAfterWrite
        } else if tls_failure(&self.source) {
            Class::TlsFailed
        } else {
            Class::ConnectFailed
        })
    }
}

/// The upstream answered something that is not a valid response of its API.
#[derive(Debug, thiserror::Error)]
#[error("provider '{provider}' sent an invalid response: {detail}")]
pub struct InvalidResponse {
    pub provider: String,
    pub detail: String,
}

impl ProxyError for InvalidResponse {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_GATEWAY
    }
    fn error_type(&self) -> &'static str {
        "upstream_error"
    }
    fn code(&self) -> &'static str {
        "upstream_invalid_response"
    }
    fn class(&self) -> Option<Class> {
        Some(Class::Malformed)
    }
}

/// The provider's key cannot be sent as a header (control characters in the env var or file).
#[derive(Debug, thiserror::Error)]
#[error("the API key configured for provider '{provider}' is not a valid header value")]
pub struct InvalidKey {
    pub provider: String,
}

impl ProxyError for InvalidKey {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_GATEWAY
    }
    fn error_type(&self) -> &'static str {
        "upstream_error"
    }
    fn code(&self) -> &'static str {
        "invalid_provider_key"
    }
    fn class(&self) -> Option<Class> {
        Some(Class::Credential)
    }
}

/// This build has no adapter for the provider's API yet.
#[derive(Debug, thiserror::Error)]
#[error("provider '{provider}' uses the {api:?} API, which this version cannot call")]
pub struct UnsupportedApi {
    pub provider: String,
    pub api: Api,
}

impl ProxyError for UnsupportedApi {
    fn status(&self) -> StatusCode {
        StatusCode::NOT_IMPLEMENTED
    }
    fn error_type(&self) -> &'static str {
        "upstream_error"
    }
    fn code(&self) -> &'static str {
        "unsupported_provider_api"
    }
    /// Nothing was sent; the next endpoint may well speak an API this build has.
    fn class(&self) -> Option<Class> {
        Some(Class::ConnectFailed)
    }
}

/// The request reached the upstream service without an endpoint chosen for it: a wiring bug.
#[derive(Debug, thiserror::Error)]
#[error("no endpoint was chosen for this attempt")]
pub struct NoAttemptTarget;

impl ProxyError for NoAttemptTarget {
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

/// The TLS client could not be built (bad CA file content).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("CA certificates of provider '{provider}': {detail}")]
    Ca { provider: String, detail: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

impl ProxyError for BuildError {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_GATEWAY
    }
    fn error_type(&self) -> &'static str {
        "upstream_error"
    }
    fn code(&self) -> &'static str {
        "upstream_tls_setup"
    }
}

/// An error and its sources on one line: hyper-util's own message ("client error (Connect)")
/// says nothing of the cause (refused, DNS, an untrusted certificate) that operators need.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// Whether a connect error was the TLS handshake (an untrusted certificate, a protocol
/// mismatch) rather than the network. The rustls error sits inside nested `io::Error`s, whose
/// `source()` skips the error they wrap, so those are unwrapped with `get_ref`.
fn tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}
