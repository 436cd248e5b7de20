use tower::Layer;

use crate::Compat;

/// Wraps a service in [`Compat`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CompatLayer;

impl CompatLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for CompatLayer {
    type Service = Compat<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Compat::new(inner)
    }
}
