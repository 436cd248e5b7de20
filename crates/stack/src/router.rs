use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response};
use serde_json::{Value, json};
use switchyard_core::{BoxError, Failure, ProxyBody, ShortCircuit};
use switchyard_policy::Snapshot;
use switchyard_respond::{Internal, NotFound, WrongMethod};
use switchyard_wire::Operation;
use tower::Service;

/// Dispatches by path and method: LLM operations go to the pipeline, `GET /v1/models` is
/// answered from the pinned snapshot, anything else is refused without touching an upstream.
#[derive(Clone, Debug)]
pub struct Router<S> {
    llm: S,
    started: u64,
}

impl<S> Router<S> {
    pub fn new(llm: S) -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self { llm, started }
    }
}

impl<S, B> Service<Request<B>> for Router<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ShortCircuit<S::Future, Response<ProxyBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.llm.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        if Operation::from_path(path).is_some() {
            if req.method() == Method::POST {
                return ShortCircuit::inner(self.llm.call(req));
            }
            return refuse_method(&req, "POST");
        }
        if path == "/v1/models" {
            if req.method() != Method::GET {
                return refuse_method(&req, "GET");
            }
            return ShortCircuit::ready(match req.extensions().get::<Arc<Snapshot>>() {
                Some(s) => Ok(models_list(s, self.started)),
                None => Err(Failure::boxed(Internal)),
            });
        }
        ShortCircuit::ready(Err(Failure::boxed(NotFound {
            method: req.method().clone(),
            path: path.to_string(),
        })))
    }
}

fn refuse_method<F, B>(
    req: &Request<B>,
    allowed: &'static str,
) -> ShortCircuit<F, Response<ProxyBody>> {
    ShortCircuit::ready(Err(Failure::boxed(WrongMethod {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        allowed,
    })))
}

/// OpenAI's list shape; aliases are listed too, each saying which model it stands for, since
/// an app may be configured with either name.
fn models_list(snapshot: &Snapshot, created: u64) -> Response<ProxyBody> {
    let mut data = Vec::new();
    for m in snapshot.models() {
        let entry = |id: &str, alias_of: Option<&str>| {
            let mut v = json!({
                "id": id,
                "object": "model",
                "created": created,
                "owned_by": "switchyard",
                "context_length": m.context_length,
                "providers": m.endpoints.iter().map(|e| e.provider.id.as_ref()).collect::<Vec<_>>(),
            });
            if let (Some(a), Some(obj)) = (alias_of, v.as_object_mut()) {
                obj.insert("alias_of".into(), Value::from(a));
            }
            v
        };
        data.push(entry(&m.id, None));
        for a in &m.aliases {
            data.push(entry(a, Some(&m.id)));
        }
    }
    let body = serde_json::to_vec(&json!({ "object": "list", "data": data })).unwrap_or_default();
    let mut resp = Response::new(ProxyBody::full(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
