use tower::Layer;

use crate::Select;

/// Wraps a service in [`Select`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SelectLayer;

impl SelectLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for SelectLayer {
    type Service = Select<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Select::new(inner)
    }
}
