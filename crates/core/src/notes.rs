use std::sync::{Arc, Mutex};

/// What the inner layers learned about a request, for the outer observer (access log,
/// request metrics, generation lookup) that cannot see inside the stack: the route and models
/// Select resolved and the endpoints it excluded. Put in the request's extensions by that
/// observer; layers write to it only if it is there.
#[derive(Clone, Debug, Default)]
pub struct Notes(Arc<Mutex<RequestNotes>>);

/// See [`Notes`].
#[derive(Clone, Debug, Default)]
pub struct RequestNotes {
    pub route: Option<Arc<str>>,
    pub models: Vec<Arc<str>>,
    /// Endpoint id and the code of the filter that excluded it.
    pub excluded: Vec<(Arc<str>, Arc<str>)>,
    /// Upstream attempts made so far (the fallback executor keeps it current, so that a
    /// failed request reports them too).
    pub attempts: u32,
}

impl Notes {
    pub fn update(&self, f: impl FnOnce(&mut RequestNotes)) {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    pub fn get(&self) -> RequestNotes {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Writes the current trace context (W3C `traceparent`) into an upstream request's headers.
/// The binary provides it (only it and `telemetry` know OpenTelemetry); the upstream calls it
/// inside the attempt's span.
pub trait ContextInjector: Send + Sync + 'static {
    fn inject(&self, headers: &mut http::HeaderMap);
}
