//! One request: record it, check the key, pick the behaviour, and answer — or fail the way the
//! behaviour says. Wire shapes live in the per-API modules (`openai`; Anthropic later).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use crate::config::{Behavior, SimConfig};
use crate::error::SimError;
use crate::openai::{self, Kind, Reply, Route, ToolCall};
use crate::record::{Call, Outcome, Recorder, record_headers};
use crate::script::{Script, SimBody, Step, Tracker};
use crate::server::ConnCtx;
use crate::text::{content_chunks, continue_after, prompt_tokens, tool_arguments};

/// State shared by the [`crate::Sim`] handle and every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) open: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The config without its sequence, which lives in `sequence` as it is consumed.
    config: SimConfig,
    sequence: VecDeque<Behavior>,
    /// Requests answered so far per behaviour (`None` = default), for `fail_every`.
    counters: HashMap<Option<String>, u32>,
}

impl State {
    fn new(mut config: SimConfig) -> Self {
        let sequence = std::mem::take(&mut config.sequence).into();
        Self {
            config,
            sequence,
            counters: HashMap::new(),
        }
    }
}

impl Shared {
    pub(crate) fn new(config: SimConfig) -> Self {
        Self {
            recorder: Arc::new(Recorder::new()),
            open: AtomicUsize::new(0),
            state: Mutex::new(State::new(config)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the whole config; `fail_every` counting starts over.
    pub(crate) fn set_config(&self, config: SimConfig) {
        *self.lock() = State::new(config);
    }

    pub(crate) fn push_sequence(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.lock().sequence.extend(behaviors);
    }

    fn identity(&self) -> (String, Option<String>) {
        let state = self.lock();
        (state.config.name.clone(), state.config.api_key.clone())
    }

    fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().config.models.keys().cloned().collect();
        names.sort();
        names
    }

    /// The behaviour for the next generation request, and whether its `status` applies to
    /// this request (`fail_every`).
    fn resolve(&self, model: &str) -> (Behavior, bool) {
        let mut state = self.lock();
        if let Some(behavior) = state.sequence.pop_front() {
            let fails = fails(behavior.fail_every, 1);
            return (behavior, fails);
        }
        let (key, behavior) = match state.config.models.get(model) {
            Some(behavior) => (Some(model.to_owned()), behavior.clone()),
            None => (None, state.config.default.clone()),
        };
        let count = state.counters.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        let fails = fails(behavior.fail_every, *count);
        (behavior, fails)
    }
}

fn fails(every: Option<u32>, count: u32) -> bool {
    match every {
        None | Some(0) => true,
        Some(n) => count.is_multiple_of(n),
    }
}

/// Accepts `Authorization: Bearer <key>` (OpenAI, and the Anthropic SDK), `api-key` (Azure)
/// and `x-api-key` (Anthropic).
fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let plain = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    [bearer, plain("api-key"), plain("x-api-key")]
        .into_iter()
        .flatten()
        .any(|given| given == key)
}

type SimResponse = Response<SimBody>;

fn respond(status: StatusCode, content_type: &'static str, body: SimBody) -> SimResponse {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, body: Bytes) -> SimResponse {
    respond(status, "application/json", SimBody::full(body))
}

fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> SimResponse {
    json_response(status, openai::error_body(message, kind, None, code))
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A generation request after it was recorded.
struct Exchange {
    seq: u64,
    tracker: Tracker,
    name: String,
    model: String,
    body: Value,
    stream: bool,
}

/// The hyper service of one connection.
#[derive(Clone, Debug)]
pub(crate) struct Handler {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Arc<ConnCtx>,
}

impl Handler {
    pub(crate) async fn handle(self, request: Request<Incoming>) -> Result<SimResponse, SimError> {
        if request.uri().path().starts_with("/_sim/") {
            return self.control(request).await;
        }
        let recorder = self.shared.recorder.clone();
        let seq = recorder.next_seq();
        let at_ms = recorder.now_ms();
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        let path = parts.uri.path().to_owned();
        let model = json
            .as_ref()
            .and_then(|j| j.get("model"))
            .and_then(Value::as_str)
            .or_else(|| openai::azure_deployment(&path))
            .map(str::to_owned);
        let stream = json.as_ref().and_then(|j| j.get("stream")) == Some(&Value::Bool(true));
        recorder.push(Call {
            seq,
            at_ms,
            method: parts.method.as_str().to_owned(),
            path: path.clone(),
            headers: record_headers(&parts.headers),
            body: json.clone().unwrap_or(Value::Null),
            model: model.clone(),
            stream,
            outcome: None,
        });
        let mut tracker = Tracker::new(recorder, seq);
        let mut fail = |status: StatusCode, message: &str, kind: &str, code: Option<&str>| {
            tracker.finish(Outcome::Error {
                status: status.as_u16(),
            });
            Ok(error_response(status, message, kind, code))
        };

        let (name, api_key) = self.shared.identity();
        if let Some(key) = api_key.as_deref()
            && !authorized(&parts.headers, key)
        {
            return fail(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided. You can find your API key at the provider's dashboard.",
                "invalid_request_error",
                Some("invalid_api_key"),
            );
        }
        let route = openai::route(&parts.method, &path);
        match route {
            Route::NotFound => fail(
                StatusCode::NOT_FOUND,
                &format!("Invalid URL ({} {path})", parts.method),
                "invalid_request_error",
                None,
            ),
            Route::WrongMethod => fail(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("Not allowed to {} on {path}", parts.method),
                "invalid_request_error",
                None,
            ),
            Route::Models => {
                let body = openai::models(&self.shared.model_names(), &name);
                tracker.finish(Outcome::Completed { chunks: 0 });
                Ok(json_response(StatusCode::OK, body))
            }
            Route::Chat | Route::Completions | Route::Embeddings => {
                let Some(body) = json.filter(Value::is_object) else {
                    return fail(
                        StatusCode::BAD_REQUEST,
                        "We could not parse the JSON body of your request. (HINT: This likely \
                         means you aren't using your HTTP library correctly. The OpenAI API \
                         expects a JSON payload.)",
                        "invalid_request_error",
                        None,
                    );
                };
                let Some(model) = model else {
                    return fail(
                        StatusCode::BAD_REQUEST,
                        "you must provide a model parameter",
                        "invalid_request_error",
                        None,
                    );
                };
                let exchange = Exchange {
                    seq,
                    tracker,
                    name,
                    model,
                    body,
                    stream,
                };
                self.generate(route, exchange).await
            }
        }
    }

    async fn generate(&self, route: Route, mut ex: Exchange) -> Result<SimResponse, SimError> {
        let (b, fails) = self.shared.resolve(&ex.model);
        pause(b.headers_delay).await;
        if b.reset {
            ex.tracker.finish(Outcome::Reset);
            self.conn.reset();
            self.conn.closed().await;
            return Err(SimError::NoResponse);
        }
        if b.never_answer {
            // Dropping `ex` when the client leaves records ClientGone.
            self.conn.closed().await;
            return Err(SimError::NoResponse);
        }
        let prefill = match route {
            Route::Chat => trailing_assistant(&ex.body),
            _ => None,
        };
        if b.reject_prefill && prefill.is_some() {
            ex.tracker.finish(Outcome::Error { status: 400 });
            let body = openai::error_body(
                "assistant prefill is not supported",
                "invalid_request_error",
                Some("messages"),
                Some("invalid_request_error"),
            );
            return Ok(with_request_id(
                json_response(StatusCode::BAD_REQUEST, body),
                ex.seq,
            ));
        }
        if let Some(status) = b.status.filter(|_| fails)
            && status != 200
        {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            ex.tracker.finish(Outcome::Error {
                status: status.as_u16(),
            });
            let mut response = json_response(status, openai::status_error(status, &b));
            if let Some(value) = b
                .retry_after
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return Ok(with_request_id(response, ex.seq));
        }

        let prompt = prompt_tokens(&ex.body);
        if route == Route::Embeddings {
            pause(b.first_token_delay).await;
            let body = openai::embeddings(&ex.body, &ex.model, prompt, !b.omit_usage);
            ex.tracker.finish(Outcome::Completed { chunks: 0 });
            return Ok(with_request_id(json_response(StatusCode::OK, body), ex.seq));
        }

        let (kind, id) = match route {
            Route::Chat => (Kind::Chat, format!("chatcmpl-{}-{}", ex.name, ex.seq)),
            _ => (Kind::Completion, format!("cmpl-{}-{}", ex.name, ex.seq)),
        };
        let chunks = content_chunks(&ex.name, &b);
        let tool = (kind == Kind::Chat && b.tool_call && !b.empty).then(|| ToolCall {
            id: format!("call_{}_{}", ex.name, ex.seq),
            name: first_tool_name(&ex.body),
        });
        let pieces = match (&tool, prefill.and_then(|m| m.get("content")?.as_str())) {
            (Some(_), _) => tool_arguments(&chunks),
            (None, Some(prefill)) => continue_after(chunks, prefill),
            (None, None) => chunks,
        };
        let reply = Reply {
            kind,
            id,
            created: unix_now(),
            model: &ex.model,
            pieces,
            tool,
            prompt_tokens: prompt,
            report_usage: !b.omit_usage,
        };

        if ex.stream {
            let include_usage = ex
                .body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let steps = reply.stream(&b, include_usage);
            let body = SimBody::Script(Box::new(Script::new(steps, ex.tracker)));
            let mut response = respond(StatusCode::OK, "text/event-stream; charset=utf-8", body);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return Ok(with_request_id(response, ex.seq));
        }

        pause(b.first_token_delay).await;
        if b.malformed_at.is_some() {
            ex.tracker.finish(Outcome::Completed { chunks: 0 });
            let body = Bytes::from_static(openai::MALFORMED_BODY);
            return Ok(with_request_id(json_response(StatusCode::OK, body), ex.seq));
        }
        let body = reply.body();
        let steps: Option<VecDeque<Step>> = if b.cut_after.is_some() {
            let half = body.slice(..body.len() / 2);
            Some(
                [
                    Step::Send {
                        bytes: half,
                        content: false,
                    },
                    Step::Cut,
                ]
                .into(),
            )
        } else if b.stall_after.is_some() {
            Some([Step::Stall].into())
        } else {
            None
        };
        let response = match steps {
            Some(steps) => {
                // The full length is announced so the client knows the body is incomplete.
                let length = HeaderValue::from(body.len());
                let script = SimBody::Script(Box::new(Script::new(steps, ex.tracker)));
                let mut response = respond(StatusCode::OK, "application/json", script);
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, length);
                response
            }
            None => {
                let chunks = reply.pieces.len();
                ex.tracker.finish(Outcome::Completed { chunks });
                json_response(StatusCode::OK, body)
            }
        };
        Ok(with_request_id(response, ex.seq))
    }

    /// `/_sim/*`: remote control for a sim in another process; never recorded.
    async fn control(self, request: Request<Incoming>) -> Result<SimResponse, SimError> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let bad = |err: serde_json::Error| {
            error_response(
                StatusCode::BAD_REQUEST,
                &err.to_string(),
                "invalid_request_error",
                None,
            )
        };
        let ok = || json_response(StatusCode::OK, Bytes::from_static(b"{\"ok\":true}"));
        let response = match (&parts.method, parts.uri.path()) {
            (&Method::GET, "/_sim/calls") => {
                match serde_json::to_vec(&self.shared.recorder.calls()) {
                    Ok(body) => json_response(StatusCode::OK, body.into()),
                    Err(err) => error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &err.to_string(),
                        "server_error",
                        None,
                    ),
                }
            }
            (&Method::POST, "/_sim/config") => match serde_json::from_slice::<SimConfig>(&bytes) {
                Ok(config) => {
                    self.shared.set_config(config);
                    ok()
                }
                Err(err) => bad(err),
            },
            (&Method::POST, "/_sim/sequence") => {
                match serde_json::from_slice::<Vec<Behavior>>(&bytes) {
                    Ok(behaviors) => {
                        self.shared.push_sequence(behaviors);
                        ok()
                    }
                    Err(err) => bad(err),
                }
            }
            (&Method::POST, "/_sim/reset") => {
                self.shared.recorder.clear();
                ok()
            }
            (method, path) => error_response(
                StatusCode::NOT_FOUND,
                &format!("Invalid URL ({method} {path})"),
                "invalid_request_error",
                None,
            ),
        };
        Ok(response)
    }
}

fn with_request_id(mut response: SimResponse, seq: u64) -> SimResponse {
    if let Ok(value) = HeaderValue::from_str(&format!("req_sim_{seq}")) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    response
}

/// The request's last message when it is the assistant's: a prefill to continue.
fn trailing_assistant(body: &Value) -> Option<&Value> {
    body.get("messages")?
        .as_array()?
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
}

/// The function a tool-call answer calls: the request's first tool, as OpenAI
/// (`tools[0].function.name`) or flat (`tools[0].name`) declares it.
fn first_tool_name(body: &Value) -> String {
    let tool = body.pointer("/tools/0");
    tool.and_then(|t| t.pointer("/function/name").or_else(|| t.get("name")))
        .and_then(Value::as_str)
        .unwrap_or("tool")
        .to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn sequence_then_model_then_default() {
        let config = SimConfig::named("p")
            .default_behavior(Behavior::ok().chunks(1))
            .model("m", Behavior::ok().chunks(2))
            .then(Behavior::ok().chunks(3));
        let shared = Shared::new(config);
        shared.push_sequence([Behavior::ok().chunks(4)]);
        assert_eq!(shared.resolve("other").0.chunks, Some(3));
        assert_eq!(shared.resolve("m").0.chunks, Some(4));
        assert_eq!(shared.resolve("m").0.chunks, Some(2));
        assert_eq!(shared.resolve("other").0.chunks, Some(1));
        shared.set_config(SimConfig::named("q").then(Behavior::ok().chunks(9)));
        assert_eq!(shared.resolve("m").0.chunks, Some(9));
        assert_eq!(shared.resolve("m").0.chunks, None);
    }

    #[test]
    fn fail_every_counts_per_behaviour() {
        let config = SimConfig::named("p")
            .default_behavior(Behavior::ok().status(500).fail_every(3))
            .model("m", Behavior::ok().status(429).fail_every(2));
        let shared = Shared::new(config);
        let defaults: Vec<bool> = (0..6).map(|_| shared.resolve("x").1).collect();
        assert_eq!(defaults, [false, false, true, false, false, true]);
        let models: Vec<bool> = (0..4).map(|_| shared.resolve("m").1).collect();
        assert_eq!(models, [false, true, false, true]);
        assert!(
            !shared.resolve("y").1,
            "default counter is shared by unknown models"
        );
        assert!(fails(None, 7));
        assert!(fails(Some(0), 7));
        assert!(fails(Some(1), 1));
    }

    #[test]
    fn keys_are_accepted_from_three_headers() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, "k"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        assert!(authorized(&headers, "k"));
        assert!(!authorized(&headers, "other"));
        let mut headers = HeaderMap::new();
        headers.insert("api-key", HeaderValue::from_static("k"));
        assert!(authorized(&headers, "k"));
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("k"));
        assert!(authorized(&headers, "k"));
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("k"));
        assert!(!authorized(&headers, "k"), "the Bearer scheme is required");
    }

    #[test]
    fn tool_name_comes_from_the_first_tool() {
        let body = json!({"tools": [
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "function", "function": {"name": "second"}}
        ]});
        assert_eq!(first_tool_name(&body), "get_weather");
        assert_eq!(
            first_tool_name(&json!({"tools": [{"name": "flat"}]})),
            "flat"
        );
        assert_eq!(first_tool_name(&json!({})), "tool");
    }

    #[test]
    fn trailing_assistant_messages_are_prefills() {
        let prefill = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hel"}
        ]});
        assert_eq!(
            trailing_assistant(&prefill).and_then(|m| m["content"].as_str()),
            Some("Hel")
        );
        let parts = json!({"messages": [{"role": "assistant", "content": [{"type": "text", "text": "x"}]}]});
        assert!(trailing_assistant(&parts).is_some());
        for body in [
            json!({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}),
            json!({"messages": []}),
            json!({"prompt": "x"}),
            json!({"messages": "nope"}),
        ] {
            assert!(trailing_assistant(&body).is_none(), "{body}");
        }
    }
}
