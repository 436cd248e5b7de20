use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Map, Value, json};
use switchyard_core::{Failure, InboundApi, ProxyBody, ProxyError, Served};

use crate::Internal;

/// Header names of the external contract (DESIGN.md §3).
pub mod headers {
    pub const REQUEST_ID: &str = "x-switchyard-request-id";
    pub const PROVIDER: &str = "x-switchyard-provider";
    pub const MODEL: &str = "x-switchyard-model";
    pub const ATTEMPTS: &str = "x-switchyard-attempts";
    pub const COST: &str = "x-switchyard-cost";
    pub const SHOULD_RETRY: &str = "x-should-retry";
}

pub(crate) fn from_box_error(
    api: InboundApi,
    err: &(dyn std::error::Error + 'static),
    request_id: Option<&str>,
) -> Response<ProxyBody> {
    match Failure::find(err) {
        Some(failure) => {
            let e = failure.get();
            if e.status().is_server_error() {
                tracing::warn!(code = e.code(), error = %e, "request failed");
            } else {
                tracing::debug!(code = e.code(), error = %e, "request refused");
            }
            error_response(api, e, request_id)
        }
        None => {
            tracing::error!(error = %err, "unclassified error reached the response edge");
            error_response(api, &Internal, request_id)
        }
    }
}

/// Renders one error in the caller's wire format, with `x-should-retry: false`: everything
/// rendered here is a decision Switchyard made, not an upstream's answer passed through.
pub fn error_response(
    api: InboundApi,
    err: &dyn ProxyError,
    request_id: Option<&str>,
) -> Response<ProxyBody> {
    let status = err.status();
    let message = err.to_string();
    let mut detail = Map::new();
    let body = match api {
        InboundApi::OpenAi => {
            detail.insert("message".into(), Value::String(message));
            detail.insert("type".into(), Value::String(err.error_type().into()));
            detail.insert("code".into(), Value::String(err.code().into()));
            detail.insert("param".into(), err.param().map_or(Value::Null, Value::from));
            if let Some(meta) = metadata(err, request_id) {
                detail.insert("metadata".into(), meta);
            }
            json!({ "error": detail })
        }
        InboundApi::Anthropic => {
            detail.insert(
                "type".into(),
                Value::String(anthropic_type(status, err.error_type()).into()),
            );
            detail.insert("message".into(), Value::String(message));
            detail.insert("code".into(), Value::String(err.code().into()));
            if let Some(param) = err.param() {
                detail.insert("param".into(), Value::from(param));
            }
            if let Some(meta) = metadata(err, request_id) {
                detail.insert("metadata".into(), meta);
            }
            let mut top = json!({ "type": "error", "error": detail });
            if let (Some(id), Some(obj)) = (request_id, top.as_object_mut()) {
                obj.insert("request_id".into(), Value::from(id));
            }
            top
        }
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(ProxyBody::full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(headers::SHOULD_RETRY, HeaderValue::from_static("false"));
    if let Some(after) = err.retry_after() {
        // Whole seconds, rounded up: a client waiting less than asked would only be refused again.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        h.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    err.extra_headers(h);
    resp
}

fn metadata(err: &dyn ProxyError, request_id: Option<&str>) -> Option<Value> {
    let mut meta = match err.metadata() {
        Some(Value::Object(m)) => m,
        Some(other) => {
            let mut m = Map::new();
            m.insert("detail".into(), other);
            m
        }
        None => Map::new(),
    };
    if let Some(id) = request_id {
        meta.insert("request_id".into(), Value::from(id));
    }
    (!meta.is_empty()).then_some(Value::Object(meta))
}

/// Anthropic SDKs branch on these exact `type` strings.
fn anthropic_type(status: StatusCode, openai_type: &str) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ if openai_type == "invalid_request_error" => "invalid_request_error",
        _ => "api_error",
    }
}

/// Writes the `x-switchyard-*` headers of a served response from its [`Served`] extension.
pub fn stamp_served(resp: &mut Response<ProxyBody>) {
    let Some(served) = resp.extensions().get::<Served>().cloned() else {
        return;
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&served.provider) {
        h.insert(headers::PROVIDER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&served.model) {
        h.insert(headers::MODEL, v);
    }
    h.insert(headers::ATTEMPTS, HeaderValue::from(served.attempts));
    if let Some(usage) = served.usage
        && let Ok(v) = HeaderValue::from_str(&format_cost(usage.cost))
    {
        h.insert(headers::COST, v);
    }
}

/// USD with enough digits for sub-micro-dollar prices, without float noise.
pub(crate) fn format_cost(cost: f64) -> String {
    let s = format!("{cost:.10}");
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_string()
}
