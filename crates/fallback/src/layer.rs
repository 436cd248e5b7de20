use std::sync::Arc;

use switchyard_core::AttemptObserver;
use tower::Layer;

use crate::{Fallback, RetryBudget};

/// Wraps the per-attempt stack in [`Fallback`].
#[derive(Clone)]
pub struct FallbackLayer {
    observers: Arc<[Arc<dyn AttemptObserver>]>,
    budget: Arc<RetryBudget>,
}

impl std::fmt::Debug for FallbackLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

impl FallbackLayer {
    /// `observers` learn every attempt's verdict (health, breaker, ...); `budget` is the
    /// process-wide retry budget.
    pub fn new(observers: Vec<Arc<dyn AttemptObserver>>, budget: Arc<RetryBudget>) -> Self {
        Self {
            observers: observers.into(),
            budget,
        }
    }
}

impl<S> Layer<S> for FallbackLayer {
    type Service = Fallback<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            observers: self.observers.clone(),
            budget: self.budget.clone(),
        }
    }
}
