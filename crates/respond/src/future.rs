use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use switchyard_core::{BoxError, InboundApi, ProxyBody};

use crate::render;

pin_project! {
    /// Response future of [`crate::Respond`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        api: InboundApi,
        request_id: Option<String>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, api: InboundApi, request_id: Option<String>) -> Self {
        Self {
            inner,
            api,
            request_id,
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, BoxError>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(res) => res,
        };
        Poll::Ready(Ok(match res {
            Ok(mut resp) => {
                render::stamp_served(&mut resp);
                resp
            }
            Err(err) => render::from_box_error(*this.api, &*err, this.request_id.as_deref()),
        }))
    }
}
