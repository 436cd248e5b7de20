use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// A layer's response future when the layer may answer before calling inward: either the
    /// inner service's future, or a result decided on the spot (a refusal, a local answer).
    #[project = ShortCircuitProj]
    #[derive(Debug)]
    pub enum ShortCircuit<F, R> {
        Inner { #[pin] fut: F },
        Ready { result: Option<Result<R, BoxError>> },
    }
}

impl<F, R> ShortCircuit<F, R> {
    pub fn inner(fut: F) -> Self {
        Self::Inner { fut }
    }

    pub fn ready(result: Result<R, BoxError>) -> Self {
        Self::Ready {
            result: Some(result),
        }
    }
}

impl<F, R> Future for ShortCircuit<F, R>
where
    F: Future<Output = Result<R, BoxError>>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShortCircuitProj::Inner { fut } => fut.poll(cx),
            // Polled again after completion, a contract breach: stay pending rather than panic.
            ShortCircuitProj::Ready { result } => result.take().map_or(Poll::Pending, Poll::Ready),
        }
    }
}
