use tower::Layer;

use crate::Respond;

/// Wraps a service in [`Respond`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RespondLayer;

impl RespondLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Respond::new(inner)
    }
}
