//! Why a simulated exchange ended without a normal response.

/// Errors the sim hands to hyper; each one ends the exchange the way a faulty provider would.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SimError {
    /// `cut_after`: the body is aborted mid-way, so the client sees it incomplete.
    #[error("response cut by a simulated fault")]
    Cut,
    /// `reset` or `never_answer`: the connection was closed without a response.
    #[error("connection closed without a response by a simulated fault")]
    NoResponse,
    /// The client broke off while sending its request.
    #[error("reading the request body: {0}")]
    Body(#[from] hyper::Error),
}
