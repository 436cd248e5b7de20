//! The admin listener: health, readiness and policy status. Loopback by default; it serves
//! operators and probes, never application traffic.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use switchyard_core::{InboundApi, ProxyBody};
use switchyard_respond::{NotFound, WrongMethod, error_response};
use tower::util::BoxCloneService;

use crate::server::Shared;

pub type AdminService = BoxCloneService<Request<Incoming>, Response<ProxyBody>, Infallible>;

pub fn service(shared: Arc<Shared>) -> AdminService {
    BoxCloneService::new(tower::service_fn(move |req: Request<Incoming>| {
        let resp = handle(&shared, req.method(), req.uri().path());
        async move { Ok::<_, Infallible>(resp) }
    }))
}

/// Paths and the one method each accepts.
const ROUTES: &[(&str, Method)] = &[
    ("/healthz", Method::GET),
    ("/readyz", Method::GET),
    ("/admin/policy", Method::GET),
];

fn handle(shared: &Shared, method: &Method, path: &str) -> Response<ProxyBody> {
    let Some((_, allowed)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return error_response(
            InboundApi::OpenAi,
            &NotFound {
                method: method.clone(),
                path: path.to_string(),
            },
            None,
        );
    };
    if method != allowed {
        return error_response(
            InboundApi::OpenAi,
            &WrongMethod {
                method: method.clone(),
                path: path.to_string(),
                allowed: "GET",
            },
            None,
        );
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if shared.draining.load(Ordering::SeqCst) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        _ => json(&shared.store.status_json()),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(value: &serde_json::Value) -> Response<ProxyBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut r = Response::new(ProxyBody::full(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
