use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use switchyard_core::{BoxError, Served};
use tokio::time::Instant;

use crate::Selector;

/// What a successful response teaches the session table: which endpoint served this session.
#[derive(Debug)]
pub(crate) struct Sticky {
    pub selector: Arc<Selector>,
    /// The request's first model: the session key's model half.
    pub model: Arc<str>,
    pub session: Arc<str>,
}

pin_project! {
    /// Response future of [`Select`](crate::Select): the inner call (remembering the serving
    /// endpoint of a sticky session on success), or the refusal decided before it.
    #[project = ResponseFutureProj]
    #[derive(Debug)]
    pub enum ResponseFuture<F> {
        Inner { #[pin] fut: F, sticky: Option<Sticky> },
        Failed { error: Option<BoxError> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(fut: F, sticky: Option<Sticky>) -> Self {
        Self::Inner { fut, sticky }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self::Failed { error: Some(error) }
    }
}

impl<F, B> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, BoxError>>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Inner { fut, sticky } => {
                let out = std::task::ready!(fut.poll(cx));
                if let (Ok(resp), Some(sticky)) = (&out, sticky.take()) {
                    remember(resp, sticky);
                }
                Poll::Ready(out)
            }
            // Polled again after completion, a contract breach: stay pending rather than panic.
            ResponseFutureProj::Failed { error } => {
                error.take().map_or(Poll::Pending, |e| Poll::Ready(Err(e)))
            }
        }
    }
}

/// Only a success served by the session's own model moves the session: a fallback model
/// serving once must not pull later requests away from the model asked for first.
fn remember<B>(resp: &Response<B>, sticky: Sticky) {
    if !resp.status().is_success() {
        return;
    }
    let Some(served) = resp.extensions().get::<Served>() else {
        return;
    };
    if served.model != sticky.model {
        return;
    }
    sticky.selector.sessions().record(
        sticky.model,
        sticky.session,
        Arc::clone(&served.endpoint),
        Instant::now(),
    );
}
