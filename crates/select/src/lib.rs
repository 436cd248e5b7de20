//! Select: turns the model(s) a request names into a [`Plan`] of candidate endpoints.
//!
//! It sits after Parse (it reads the typed request) and before the attempt layers (they walk
//! the plan), and it runs once per request, against the snapshot pinned for that request.
//! Names resolve by model id or alias; `model` may be OpenRouter's comma form `"a,b,c"`, and
//! `models: [...]` lists fallback models after it. An unknown name is the caller's error (404
//! naming the model) and nothing is sent upstream.
//!
//! This crate does not send anything, and it holds no state of its own.

mod error;
mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use switchyard_core::{BoxError, Failure, ShortCircuit};
use switchyard_policy::{Plan, Snapshot};
use switchyard_wire::ParsedRequest;
use tower::Service;

pub use error::{MissingModel, UnknownModel};
pub use layer::SelectLayer;

/// Response future of [`Select`]: the inner call, or the refusal decided before it.
pub type ResponseFuture<F, R> = ShortCircuit<F, R>;

/// Inserts the request's [`Plan`] into its extensions, or refuses the request.
#[derive(Clone, Debug)]
pub struct Select<S> {
    inner: S,
}

impl<S> Select<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, R> Service<Request<Arc<ParsedRequest>>> for Select<S>
where
    S: Service<Request<Arc<ParsedRequest>>, Response = R, Error = BoxError>,
{
    type Response = R;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Arc<ParsedRequest>>) -> Self::Future {
        let plan = match req.extensions().get::<Arc<Snapshot>>() {
            Some(snapshot) => plan(snapshot, req.body()),
            None => Err(Failure::boxed(error::NoPolicy)),
        };
        match plan {
            Ok(plan) => {
                req.extensions_mut().insert(Arc::new(plan));
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(e) => ResponseFuture::ready(Err(e)),
        }
    }
}

/// The plan for one request under one snapshot.
pub fn plan(snapshot: &Snapshot, req: &ParsedRequest) -> Result<Plan, BoxError> {
    let mut names: Vec<&str> = Vec::new();
    if let Some(model) = req.model() {
        names.extend(model.split(',').map(str::trim).filter(|s| !s.is_empty()));
    }
    names.extend(req.models().iter().map(String::as_str));
    if names.is_empty() {
        return Err(Failure::boxed(MissingModel));
    }

    let mut plan = Plan::default();
    for name in names {
        let Some(model) = snapshot.model(name) else {
            return Err(Failure::boxed(UnknownModel {
                model: name.to_string(),
            }));
        };
        if plan.models.iter().any(|m| *m == model.id) {
            continue;
        }
        plan.models.push(model.id.clone());
        plan.candidates.extend(
            model
                .endpoints
                .iter()
                .map(|e| switchyard_policy::Candidate {
                    endpoint: e.clone(),
                    why: "fallback",
                    score: None,
                }),
        );
    }
    Ok(plan)
}
