//! Compat: per attempt, adapts the request's parameters to the endpoint being tried.
//!
//! It sits inside the per-attempt dispatch (DESIGN.md §1), because what an endpoint accepts
//! depends on which endpoint this attempt goes to. Select has already removed endpoints that
//! cannot serve the request at all (tools, structured output, `require_parameters`); what is
//! left here is adaptation, never refusal:
//!
//! - an endpoint that declares `supported_parameters` is never sent a parameter outside that
//!   list: the parameter is dropped (only reachable when `require_parameters` is off — with it
//!   on, such endpoints were filtered out);
//! - `max_tokens` and `max_completion_tokens` are renamed to whichever of the two the
//!   endpoint declares (reasoning-model APIs reject `max_tokens`, older servers only know it);
//! - the token limit is capped at the route's `max_tokens` ceiling and the endpoint's
//!   `max_output_tokens`.
//!
//! An endpoint that declares no parameter list is assumed to accept everything and gets the
//! request as the client wrote it. The decision is a [`BodyEdits`] in the request's extensions,
//! applied by the upstream while it writes the body; nothing is re-parsed.

mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use switchyard_policy::{Endpoint, Plan};
use switchyard_wire::{BodyEdits, ParsedRequest};
use tower::Service;

pub use layer::CompatLayer;

/// The two spellings of the output-token limit.
const TOKEN_LIMITS: [&str; 2] = ["max_tokens", "max_completion_tokens"];

/// Inserts the attempt's [`BodyEdits`] into the request's extensions.
#[derive(Clone, Debug)]
pub struct Compat<S> {
    inner: S,
}

impl<S> Compat<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<Request<Arc<ParsedRequest>>> for Compat<S>
where
    S: Service<Request<Arc<ParsedRequest>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    // The adaptation is decided before the call; the inner future needs no wrapper.
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Arc<ParsedRequest>>) -> Self::Future {
        if let Some(endpoint) = req.extensions().get::<Arc<Endpoint>>().cloned() {
            let route_cap = req
                .extensions()
                .get::<Arc<Plan>>()
                .and_then(|p| p.route.as_ref())
                .and_then(|r| r.max_tokens);
            let edits = edits_for(&endpoint, req.body(), route_cap);
            if !edits.is_empty() {
                // Edits an outer layer already asked for (a forced stream, a prefill) stay.
                let edits = match req.extensions_mut().remove::<BodyEdits>() {
                    Some(outer) => BodyEdits {
                        drop: edits.drop,
                        rename: edits.rename,
                        max_tokens: edits.max_tokens,
                        ..outer
                    },
                    None => edits,
                };
                tracing::debug!(
                    endpoint = %endpoint.id,
                    dropped = ?edits.drop,
                    renamed = ?edits.rename,
                    max_tokens = ?edits.max_tokens,
                    "adapted request parameters"
                );
                req.extensions_mut().insert(edits);
            }
        }
        self.inner.call(req)
    }
}

/// What to change in `req` so that `endpoint` accepts it.
pub fn edits_for(endpoint: &Endpoint, req: &ParsedRequest, route_cap: Option<u64>) -> BodyEdits {
    let mut edits = BodyEdits {
        max_tokens: match (route_cap, endpoint.max_output_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        ..BodyEdits::default()
    };
    if req
        .max_tokens()
        .is_none_or(|n| edits.max_tokens.is_none_or(|cap| n <= cap))
    {
        edits.max_tokens = None;
    }
    if endpoint.supported_parameters.is_empty() {
        return edits;
    }
    for param in req.parameters() {
        if endpoint.supports(param) {
            continue;
        }
        if TOKEN_LIMITS.contains(&param)
            && let Some(other) = TOKEN_LIMITS
                .iter()
                .find(|t| **t != param && endpoint.supports(t))
        {
            edits.rename.push((param.into(), other));
            continue;
        }
        edits.drop.push(param.into());
    }
    edits
}

#[cfg(test)]
mod tests;
