use tower::Layer;

use crate::{AttemptTimeout, Deadline};

/// Wraps a service in [`Deadline`]: the whole request's time limit.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer;

impl DeadlineLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline::new(inner)
    }
}

/// Wraps a service in [`AttemptTimeout`]: one attempt's first-token, idle and total limits.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttemptTimeoutLayer;

impl AttemptTimeoutLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout::new(inner)
    }
}
