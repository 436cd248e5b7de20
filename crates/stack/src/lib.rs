//! The proxy service, composed once: this file is the only place that says in which order the
//! layers run, and why (DESIGN.md §1).
//!
//! Everything that depends on which endpoint is being tried sits inside the per-attempt
//! dispatch, or it would apply to the first candidate only. The service is boxed once, here,
//! at the stack's edge.

mod dispatch;
mod parse;
mod request_id;
mod router;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use switchyard_compat::CompatLayer;
use switchyard_core::{BoxError, ProxyBody};
use switchyard_health::HealthRegistry;
use switchyard_policy_watch::{PinPolicyLayer, PolicyStore};
use switchyard_respond::RespondLayer;
use switchyard_select::{SelectLayer, Selector};
use switchyard_upstream::Upstream;
use switchyard_wire::ParsedRequest;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder};

pub use dispatch::{DispatchLayer, EmptyPlan};
pub use parse::{BodyTooLarge, ParseLayer, UnreadableBody};
pub use request_id::{RequestIdLayer, new_request_id};
pub use router::Router;

/// The proxy listener's service, ready for hyper.
pub type ProxyService<B> = BoxCloneService<Request<B>, Response<ProxyBody>, Infallible>;

/// The long-lived state the layers share, which outlives every policy reload: endpoint
/// health (fed by every attempt, read by the selector) and the selector's sticky sessions.
#[derive(Clone, Debug)]
pub struct Registries {
    pub health: Arc<HealthRegistry>,
    pub selector: Arc<Selector>,
}

impl Registries {
    pub fn new() -> Self {
        let health = Arc::new(HealthRegistry::default());
        Self {
            selector: Arc::new(Selector::new(health.clone())),
            health,
        }
    }
}

impl Default for Registries {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds the proxy service over the real upstream client.
pub fn proxy<B>(
    store: Arc<PolicyStore>,
    registries: &Registries,
    upstream: Upstream,
) -> ProxyService<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    proxy_with(store, registries, upstream)
}

/// Builds the proxy service over any innermost service that sends one attempt: the real
/// [`Upstream`] in production, an in-process fake in stack tests and benchmarks.
pub fn proxy_with<B, U>(
    store: Arc<PolicyStore>,
    registries: &Registries,
    upstream: U,
) -> ProxyService<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    U: Service<Request<Arc<ParsedRequest>>, Response = Response<ProxyBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    U::Future: Send + 'static,
{
    // Per request, from the pinned snapshot on: resolve the models to a plan, then send.
    let llm = ServiceBuilder::new()
        // Buffers the body under the policy's size cap and parses it once into a typed view;
        // needs the pinned snapshot for the cap, and everything inward needs the view.
        .layer(ParseLayer::new())
        // Turns the requested models into an ordered plan of endpoints; runs once per request.
        .layer(SelectLayer::new(registries.selector.clone()))
        // Per attempt: picks the endpoint this attempt goes to. Layers that depend on the
        // endpoint (compat, breaker, attempt timeout) belong inside it.
        .layer(DispatchLayer::new(registries.health.clone()))
        // Per attempt, so each endpoint gets parameters it accepts.
        .layer(CompatLayer::new())
        // Innermost: the pooled client, the provider's key, the wire adapters.
        .service(upstream);

    let svc = ServiceBuilder::new()
        // Outermost: every response, errors included, carries a fresh request id.
        .layer(RequestIdLayer::new())
        // Every error below becomes a response in the caller's wire format; nothing escapes.
        .layer(RespondLayer::new())
        // One arc-swap load per request: the whole request, stream included, sees one policy.
        .layer(PinPolicyLayer::new(store))
        // Paths and methods; `/v1/models` is answered here from the pinned snapshot.
        .service(Router::new(llm));
    BoxCloneService::new(svc)
}
