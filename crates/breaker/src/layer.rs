use std::sync::Arc;

use tower::Layer;

use crate::{Breaker, BreakerRegistry};

/// Wraps a per-attempt service in [`Breaker`], sharing one long-lived registry.
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    registry: Arc<BreakerRegistry>,
}

impl BreakerLayer {
    pub fn new(registry: Arc<BreakerRegistry>) -> Self {
        Self { registry }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker::new(inner, Arc::clone(&self.registry))
    }
}
