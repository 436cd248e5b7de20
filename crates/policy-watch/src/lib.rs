//! The live policy: one [`PolicyStore`] per process, and the [`PinPolicy`] layer.
//!
//! A reload reads, parses, validates and compiles the whole file before it swaps, so a
//! request either sees the old snapshot or the new one, never a mix; on any error the last
//! good snapshot stays in force and the error is kept for `/admin/policy`.
//!
//! [`PinPolicy`] sits near the top of the stack (DESIGN.md §1): one `arc-swap` load per
//! request, carried in the request's extensions as `Arc<Snapshot>` until the response (and
//! its stream) ends, so a reload mid-request cannot change the rules under it.
//!
//! [`spawn_watcher`] notices that the policy file changed (a watch on its directory, so
//! rename-replace and Kubernetes ConfigMap `..data` swaps are seen, plus a polling fallback)
//! and calls back; the callback reloads. It does not read the policy itself.
//!
//! Long-lived state (breakers, health, budgets) does not live here: it lives in registries
//! keyed by stable ids, which survive a swap.

mod layer;
mod store;
mod watch;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use switchyard_policy::Snapshot;
use tower::Service;

pub use layer::PinPolicyLayer;
pub use store::{PolicyStatus, PolicyStore, ReloadError};
pub use watch::{WatchError, WatchHandle, WatchOptions, spawn_watcher};

/// Inserts the current `Arc<Snapshot>` into every request's extensions.
#[derive(Clone, Debug)]
pub struct PinPolicy<S> {
    inner: S,
    store: Arc<PolicyStore>,
}

impl<S> PinPolicy<S> {
    pub fn new(inner: S, store: Arc<PolicyStore>) -> Self {
        Self { inner, store }
    }
}

impl<S, B> Service<Request<B>> for PinPolicy<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    // Pinning finishes before the inner call starts, so the inner future needs no wrapper.
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let snapshot: Arc<Snapshot> = self.store.load();
        req.extensions_mut().insert(snapshot);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests;
