use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use switchyard_core::{BoxError, Failure, InboundApi, ProxyBody};
use tokio::time::{Instant, Sleep, sleep_until};

use crate::error::DeadlineExceeded;
use crate::events::{AttemptClock, AttemptEvents, Cause, DeadlineEvents};

pin_project! {
    /// Response future of [`Deadline`](crate::Deadline): the inner call, failed with
    /// [`DeadlineExceeded`] if it is not ready by the deadline; a streamed body is wrapped so
    /// that it, too, ends at the deadline.
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        api: InboundApi,
    }
}

impl<F> DeadlineFuture<F> {
    pub(crate) fn new(inner: F, deadline: Instant, api: InboundApi) -> Self {
        Self {
            inner,
            sleep: sleep_until(deadline),
            api,
        }
    }
}

impl<F> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, BoxError>>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The deadline first: a response that is only ready after it is not an answer.
        if this.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Failure::boxed(DeadlineExceeded)));
        }
        let resp = ready!(this.inner.poll(cx))?;
        let deadline = this.sleep.deadline();
        let api = *this.api;
        Poll::Ready(Ok(resp.map(|body| match body.into_events() {
            Ok(events) => ProxyBody::events(DeadlineEvents::new(events, deadline, api)),
            Err(full) => full,
        })))
    }
}

pin_project! {
    /// Response future of [`AttemptTimeout`](crate::AttemptTimeout): the attempt's call,
    /// failed if its headers do not arrive within the first-token or attempt limit (or by the
    /// request's deadline); a streamed body is wrapped to keep enforcing the limits.
    #[derive(Debug)]
    pub struct AttemptTimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        clock: AttemptClock,
        cause: Cause,
    }
}

impl<F> AttemptTimeoutFuture<F> {
    pub(crate) fn new(inner: F, clock: AttemptClock) -> Self {
        // Nothing can be output before the headers, so the first-token limit covers them.
        let (due, cause) = clock.next(None);
        Self {
            inner,
            sleep: sleep_until(due),
            clock,
            cause,
        }
    }
}

impl<F> Future for AttemptTimeoutFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, BoxError>>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.sleep.poll(cx).is_ready() {
            return Poll::Ready(Err(this.clock.error(*this.cause)));
        }
        let resp = ready!(this.inner.poll(cx))?;
        let clock = *this.clock;
        Poll::Ready(Ok(resp.map(|body| match body.into_events() {
            Ok(events) => ProxyBody::events(AttemptEvents::new(events, clock)),
            Err(full) => full,
        })))
    }
}
