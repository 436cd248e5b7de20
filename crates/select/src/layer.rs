use std::sync::Arc;

use tower::Layer;

use crate::{Select, Selector};

/// Wraps a service in [`Select`], sharing one long-lived [`Selector`].
#[derive(Clone, Debug)]
pub struct SelectLayer {
    selector: Arc<Selector>,
}

impl SelectLayer {
    /// A layer routing with `selector` (its health registry and session table outlive
    /// policy reloads, so the binary builds it once).
    pub fn new(selector: Arc<Selector>) -> Self {
        Self { selector }
    }
}

impl<S> Layer<S> for SelectLayer {
    type Service = Select<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Select::new(inner, Arc::clone(&self.selector))
    }
}
