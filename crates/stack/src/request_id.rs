use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Request, Response};
use switchyard_respond::headers::REQUEST_ID;
use tower::{Layer, Service};

/// Sets a fresh `x-switchyard-request-id` on every request (replacing any the client sent:
/// ids index the generation lookup, so they must be ours) and copies it to the response.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl RequestIdLayer {
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestId { inner }
    }
}

/// See [`RequestIdLayer`].
#[derive(Clone, Debug)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = new_request_id();
        let value = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("gen-0"));
        req.headers_mut().insert(REQUEST_ID, value.clone());
        future::ResponseFuture {
            inner: self.inner.call(req),
            id: Some(value),
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// A unique id such as `gen-1763700000-9f0c2a...`: unix seconds, then a counter mixed with a
/// per-process random seed so that ids are neither guessable nor repeated across restarts.
pub fn new_request_id() -> String {
    let seed = *SEED.get_or_init(|| fastrand::u64(..));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("gen-{secs}-{:016x}", splitmix64(seed ^ n))
}

/// A bijective mix, so distinct counters never collide.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

mod future {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http::{HeaderValue, Response};
    use pin_project_lite::pin_project;

    use super::REQUEST_ID;

    pin_project! {
        /// Response future of [`super::RequestId`].
        #[derive(Debug)]
        pub struct ResponseFuture<F> {
            #[pin]
            pub(super) inner: F,
            pub(super) id: Option<HeaderValue>,
        }
    }

    impl<F, RB, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<Response<RB>, E>>,
    {
        type Output = Result<Response<RB>, E>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            let mut res = match this.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            if let (Ok(resp), Some(id)) = (&mut res, this.id.take()) {
                resp.headers_mut().insert(REQUEST_ID, id);
            }
            Poll::Ready(res)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(5) {
            assert!(id.starts_with("gen-"));
            assert!(HeaderValue::from_str(id).is_ok());
        }
    }
}
