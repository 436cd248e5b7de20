use std::fmt;
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

type BoxedInner =
    Pin<Box<dyn Future<Output = Result<http::Response<crate::ProxyBody>, BoxError>> + Send>>;

/// A layer's response future when the layer's work is an `async` block: boxed once, named so
/// that service types stay writable.
pub struct BoxResponseFuture {
    inner: BoxedInner,
}

impl BoxResponseFuture {
    pub fn new(
        fut: impl Future<Output = Result<http::Response<crate::ProxyBody>, BoxError>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(fut),
        }
    }
}

impl fmt::Debug for BoxResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxResponseFuture")
    }
}

impl Future for BoxResponseFuture {
    type Output = Result<http::Response<crate::ProxyBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
