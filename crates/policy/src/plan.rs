//! The routing plan of one request: what `select` decided and the attempt layers walk.
//!
//! It lives beside the snapshot it points into, so that `select` (which writes it) and the
//! attempt layers (which read it) share it without depending on each other.

use std::sync::Arc;

use crate::{Endpoint, Route};

/// The endpoints one request may be sent to, best first.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The route that governs the request, if one matched.
    pub route: Option<Arc<Route>>,
    /// The models asked for, in fallback order, as policy model ids.
    pub models: Vec<Arc<str>>,
    /// Endpoints in the order they are to be tried.
    pub candidates: Vec<Arc<Endpoint>>,
}
