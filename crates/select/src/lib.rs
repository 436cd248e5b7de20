//! Select: the routing decision. Turns a request into a [`Plan`]: the route that governs it,
//! the models it may be served by, the effective provider preferences, the endpoints to try in
//! order, and every endpoint left out with the reason.
//!
//! It sits after Parse (it reads the typed request) and before the attempt layers (they walk
//! the plan), runs once per request against the snapshot pinned for that request, and follows
//! OpenRouter's documented routing, computed locally from the policy. The rules, in full in
//! `crates/select/ROUTING.md`:
//!
//! - **Route**: the `x-switchyard-route` header, else `@preset/<id>` in a model name (alone,
//!   or as `model@preset/<id>`), else the route whose `match_models` names the first requested
//!   model. A named route that does not exist is a 404 `route_not_found`.
//! - **Models**: the request's own list when it gives one (`models: [...]`, the comma form
//!   `"a,b"`, or `model@preset/<id>`); else the route's `models` when non-empty; else the
//!   requested model. Names resolve by id or alias; `:nitro` (sort by throughput) and `:floor`
//!   (sort by price) may end any name. An unknown model is a 404 `model_not_found`.
//! - **Preferences**: `defaults.provider`, then the route's `provider`, then the request's
//!   (field by field, later wins), then a `:nitro`/`:floor` suffix. A malformed `provider`
//!   object is a 400 `invalid_parameter` naming the field.
//! - **Hard filters** (first failure recorded): `only`, `ignore`, `data_collection`, `zdr`,
//!   `quantizations`, `require_parameters`, tools, `response_format`, `max_tokens`, context
//!   window, `max_price`.
//! - **Ordering**, per model (or across all with `sort.partition: "none"`): `order` first, then
//!   `sort`, else OpenRouter's price-weighted balancing (outages last, first pick weighted by
//!   1/price², the rest cheapest first); `preferred_*` thresholds push measured laggards
//!   behind every other candidate; a sticky session's endpoint goes first; with
//!   `allow_fallbacks: false` only the first candidate of each model (or the `order`
//!   providers) stays.
//! - **Nothing left**: a 404 [`NoEndpoints`] listing every exclusion; nothing is sent upstream.
//!
//! Long-lived state (live health, sticky sessions, the balancer's random source) lives in the
//! [`Selector`], built once and shared; [`Selector::plan`] is also what `switchyard explain`
//! and `POST /admin/explain` call, with [`explain_json`] to render it.
//!
//! This crate sends nothing, does not retry or walk the plan (that is Fallback), does not
//! check breakers or credential cooldowns (per attempt, inside Fallback), and does not measure
//! health (it only reads `switchyard-health`).

mod error;
mod explain;
mod filter;
mod future;
mod layer;
mod order;
mod resolve;
mod selector;
mod session;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use switchyard_core::{BoxError, Failure, Notes};
use switchyard_policy::Snapshot;
use switchyard_wire::ParsedRequest;
use tokio::time::Instant;
use tower::Service;

pub use error::{
    InvalidProvider, MissingModel, NoEndpoints, RouteSource, UnknownModel, UnknownRoute,
};
pub use explain::{explain_json, summary_json};
pub use future::ResponseFuture;
pub use layer::SelectLayer;
pub use order::PRICE_EPSILON;
pub use resolve::ROUTE_HEADER;
pub use selector::{SESSION_HEADER, Selector};
pub use session::{DEFAULT_CAPACITY, DEFAULT_IDLE, SessionTable};

/// Inserts the request's `Arc<Plan>` into its extensions, or refuses the request; on a
/// successful response, remembers which endpoint served a sticky session.
#[derive(Clone, Debug)]
pub struct Select<S> {
    inner: S,
    selector: Arc<Selector>,
}

impl<S> Select<S> {
    /// Wraps `inner`, routing with `selector`.
    pub fn new(inner: S, selector: Arc<Selector>) -> Self {
        Self { inner, selector }
    }
}

impl<S, B> Service<Request<Arc<ParsedRequest>>> for Select<S>
where
    S: Service<Request<Arc<ParsedRequest>>, Response = Response<B>, Error = BoxError>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Arc<ParsedRequest>>) -> Self::Future {
        let plan = match req.extensions().get::<Arc<Snapshot>>() {
            Some(snapshot) => {
                self.selector
                    .plan(snapshot, req.body(), req.headers(), Instant::now())
            }
            None => Err(Failure::boxed(error::NoPolicy)),
        };
        match plan {
            Ok(plan) => {
                let sticky = match (&plan.session, plan.models.first()) {
                    (Some(session), Some(model)) => Some(future::Sticky {
                        selector: Arc::clone(&self.selector),
                        model: Arc::clone(model),
                        session: Arc::clone(session),
                    }),
                    _ => None,
                };
                if let Some(notes) = req.extensions().get::<Notes>() {
                    notes.update(|n| {
                        n.route = plan.route.as_ref().map(|r| Arc::clone(&r.id));
                        n.models.clone_from(&plan.models);
                        n.excluded = plan
                            .excluded
                            .iter()
                            .map(|x| (Arc::clone(&x.endpoint), Arc::from(x.reason.code())))
                            .collect();
                    });
                }
                req.extensions_mut().insert(Arc::new(plan));
                ResponseFuture::inner(self.inner.call(req), sticky)
            }
            Err(e) => {
                // Nothing left to try: the exclusions are the whole story of this request.
                if let (Some(notes), Some(meta)) = (
                    req.extensions().get::<Notes>(),
                    Failure::find(&*e)
                        .filter(|f| f.get().code() == "no_endpoints")
                        .and_then(|f| f.get().metadata()),
                ) {
                    let excluded = meta["excluded_by"]
                        .as_array()
                        .map(|xs| {
                            xs.iter()
                                .filter_map(|x| {
                                    Some((
                                        Arc::from(x["endpoint"].as_str()?),
                                        Arc::from(x["reason"].as_str()?),
                                    ))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    notes.update(|n| n.excluded = excluded);
                }
                ResponseFuture::failed(e)
            }
        }
    }
}
