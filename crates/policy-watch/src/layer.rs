use std::sync::Arc;

use tower::Layer;

use crate::{PinPolicy, PolicyStore};

/// Wraps a service in [`PinPolicy`].
#[derive(Clone, Debug)]
pub struct PinPolicyLayer {
    store: Arc<PolicyStore>,
}

impl PinPolicyLayer {
    pub fn new(store: Arc<PolicyStore>) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for PinPolicyLayer {
    type Service = PinPolicy<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PinPolicy::new(inner, self.store.clone())
    }
}
