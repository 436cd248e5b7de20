//! The OpenAI wire format: routes, `chat.completion` / `chat.completion.chunk`,
//! `text_completion`, embeddings, the models list and error bodies, shaped exactly as the
//! official SDKs parse them.

use std::collections::VecDeque;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::Behavior;
use crate::script::Step;
use crate::text::base64;

/// What `system_fingerprint` says in every generation response.
const SYSTEM_FINGERPRINT: &str = "fp_sim";

/// Sent in place of the `malformed_at` chunk: valid SSE framing around broken JSON.
pub(crate) const MALFORMED_EVENT: &[u8] = b"data: {\"choices\":[{\"delta\":\n\n";

/// Sent as the whole body of a non-streaming `malformed_at` answer.
pub(crate) const MALFORMED_BODY: &[u8] = b"{\"choices\":[{\"message\":";

const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// Dimensions of every simulated embedding.
pub(crate) const EMBEDDING_DIMS: usize = 8;

/// An OpenAI endpoint, by path suffix, so Azure's `/openai/deployments/<d>/chat/completions`
/// reaches the same code as `/v1/chat/completions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Chat,
    Completions,
    Embeddings,
    Models,
    WrongMethod,
    NotFound,
}

pub(crate) fn route(method: &Method, path: &str) -> Route {
    let path = path.trim_end_matches('/');
    let (route, wanted) = if path.ends_with("/chat/completions") {
        (Route::Chat, Method::POST)
    } else if path.ends_with("/completions") {
        (Route::Completions, Method::POST)
    } else if path.ends_with("/embeddings") {
        (Route::Embeddings, Method::POST)
    } else if path.ends_with("/models") {
        (Route::Models, Method::GET)
    } else {
        return Route::NotFound;
    };
    if *method == wanted {
        route
    } else {
        Route::WrongMethod
    }
}

/// The deployment name of an Azure OpenAI path, which stands in for the body's `model`.
pub(crate) fn azure_deployment(path: &str) -> Option<&str> {
    let rest = path.split_once("/deployments/")?.1;
    rest.split('/').next().filter(|name| !name.is_empty())
}

/// An OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn error_body(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Bytes {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    Bytes::from(body.to_string())
}

/// The error body for a behaviour's `status`, with per-status defaults close to what
/// OpenAI sends for each.
pub(crate) fn status_error(status: StatusCode, b: &Behavior) -> Bytes {
    let (message, kind, code) = match status.as_u16() {
        400 => ("Invalid request.", "invalid_request_error", None),
        401 => (
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        402 => (
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        403 => (
            "You are not allowed to sample from this model.",
            "invalid_request_error",
            Some("model_not_allowed"),
        ),
        404 => (
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
            Some("model_not_found"),
        ),
        408 => ("Request timed out.", "timeout", None),
        413 => (
            "Request too large.",
            "invalid_request_error",
            Some("request_too_large"),
        ),
        429 => (
            "Rate limit reached for requests. Please try again later.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        502 => ("Bad gateway.", "server_error", None),
        503 => (
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
        ),
        504 => ("Gateway timeout.", "server_error", None),
        529 => ("Overloaded.", "server_error", Some("overloaded")),
        code if code >= 500 => ("Server error.", "server_error", None),
        _ => ("Request failed.", "invalid_request_error", None),
    };
    error_body(
        b.error_message.as_deref().unwrap_or(message),
        b.error_type.as_deref().unwrap_or(kind),
        None,
        b.error_code.as_deref().or(code),
    )
}

/// Which generation endpoint a [`Reply`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Chat,
    Completion,
}

/// A tool call in a chat answer.
#[derive(Clone, Debug)]
pub(crate) struct ToolCall {
    pub(crate) id: String,
    pub(crate) name: String,
}

/// A successful chat or text completion, ready to be rendered whole or as a stream.
#[derive(Clone, Debug)]
pub(crate) struct Reply<'a> {
    pub(crate) kind: Kind,
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: &'a str,
    /// Content chunks, or a tool call's argument fragments; one completion token each.
    pub(crate) pieces: Vec<String>,
    pub(crate) tool: Option<ToolCall>,
    pub(crate) prompt_tokens: u64,
    /// False for `omit_usage`.
    pub(crate) report_usage: bool,
}

impl Reply<'_> {
    fn usage(&self) -> Value {
        let completion = self.pieces.len() as u64;
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    fn finish_reason(&self) -> &'static str {
        if self.tool.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    fn object(&self, stream: bool) -> &'static str {
        match (self.kind, stream) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    /// The non-streaming body.
    pub(crate) fn body(&self) -> Bytes {
        let text = self.pieces.concat();
        let choice = match (self.kind, &self.tool) {
            (Kind::Chat, Some(tool)) => json!({
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "refusal": null,
                    "tool_calls": [{
                        "id": tool.id,
                        "type": "function",
                        "function": {"name": tool.name, "arguments": text},
                    }],
                },
                "logprobs": null,
                "finish_reason": self.finish_reason(),
            }),
            (Kind::Chat, None) => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": self.finish_reason(),
            }),
            (Kind::Completion, _) => json!({
                "text": text,
                "index": 0,
                "logprobs": null,
                "finish_reason": self.finish_reason(),
            }),
        };
        let mut body = json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "system_fingerprint": SYSTEM_FINGERPRINT,
        });
        if self.report_usage {
            body["usage"] = self.usage();
        }
        Bytes::from(body.to_string())
    }

    /// The streamed answer as a script: role chunk (chat), content chunks, the finish chunk,
    /// the usage chunk when asked for, `[DONE]` — with the behaviour's delays and faults.
    pub(crate) fn stream(&self, b: &Behavior, include_usage: bool) -> VecDeque<Step> {
        let usage = include_usage && self.report_usage;
        let mut steps = VecDeque::new();
        if self.kind == Kind::Chat {
            let delta = if self.tool.is_some() {
                json!({"role": "assistant", "content": null})
            } else {
                json!({"role": "assistant", "content": ""})
            };
            steps.push_back(frame(self.event(usage, self.chunk_choice(delta, None))));
        }
        // cut_after and stall_after both end the script; the earlier one wins.
        let fault = match (b.cut_after, b.stall_after) {
            (Some(cut), Some(stall)) if stall < cut => Some((stall, Step::Stall)),
            (Some(cut), _) => Some((cut, Step::Cut)),
            (None, Some(stall)) => Some((stall, Step::Stall)),
            (None, None) => None,
        };
        for (i, piece) in self.pieces.iter().enumerate() {
            if let Some((at, step)) = &fault
                && *at == i
            {
                steps.push_back(step.clone());
                return steps;
            }
            steps.push_back(Step::Wait(if i == 0 {
                b.first_token_delay
            } else {
                b.chunk_delay
            }));
            let bytes = if b.malformed_at == Some(i + 1) {
                Bytes::from_static(MALFORMED_EVENT)
            } else {
                self.event(usage, self.content_choice(i, piece))
            };
            steps.push_back(Step::Send {
                bytes,
                content: true,
            });
        }
        if let Some((_, step)) = fault {
            steps.push_back(step);
            return steps;
        }
        if self.pieces.is_empty() {
            steps.push_back(Step::Wait(b.first_token_delay));
        }
        let last = match self.kind {
            Kind::Chat => self.chunk_choice(json!({}), Some(self.finish_reason())),
            Kind::Completion => self.text_choice("", Some(self.finish_reason())),
        };
        steps.push_back(frame(self.event(usage, last)));
        if usage {
            let mut chunk = self.chunk_base(json!([]));
            chunk["usage"] = self.usage();
            steps.push_back(frame(sse(&chunk)));
        }
        if !b.omit_done {
            steps.push_back(frame(Bytes::from_static(DONE_EVENT)));
        }
        steps
    }

    fn content_choice(&self, i: usize, piece: &str) -> Value {
        match (self.kind, &self.tool) {
            (Kind::Chat, Some(tool)) if i == 0 => self.chunk_choice(
                json!({"tool_calls": [{
                    "index": 0,
                    "id": tool.id,
                    "type": "function",
                    "function": {"name": tool.name, "arguments": piece},
                }]}),
                None,
            ),
            (Kind::Chat, Some(_)) => self.chunk_choice(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                None,
            ),
            (Kind::Chat, None) => self.chunk_choice(json!({"content": piece}), None),
            (Kind::Completion, _) => self.text_choice(piece, None),
        }
    }

    fn chunk_choice(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
    }

    fn text_choice(&self, text: &str, finish: Option<&str>) -> Value {
        json!({"text": text, "index": 0, "logprobs": null, "finish_reason": finish})
    }

    fn chunk_base(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        })
    }

    /// A stream chunk with one choice. Once usage was asked for, every chunk carries
    /// `"usage": null` until the final usage chunk, as OpenAI does.
    fn event(&self, usage: bool, choice: Value) -> Bytes {
        let mut chunk = self.chunk_base(json!([choice]));
        if usage {
            chunk["usage"] = Value::Null;
        }
        sse(&chunk)
    }
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// A frame that is not a content chunk.
fn frame(bytes: Bytes) -> Step {
    Step::Send {
        bytes,
        content: false,
    }
}

/// The embeddings list for a request body: one deterministic 8-dimensional vector per input,
/// as floats or, for `encoding_format: "base64"`, little-endian f32 bytes in base64.
pub(crate) fn embeddings(
    body: &Value,
    model: &str,
    prompt_tokens: u64,
    report_usage: bool,
) -> Bytes {
    let input = body.get("input").unwrap_or(&Value::Null);
    let inputs: Vec<&Value> = match input {
        Value::Array(items) if !items.is_empty() && !items.iter().all(Value::is_number) => {
            items.iter().collect()
        }
        other => vec![other],
    };
    let base64_format = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding(input);
            let embedding = if base64_format {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let mut out = json!({"object": "list", "data": data, "model": model});
    if report_usage {
        out["usage"] = json!({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens});
    }
    Bytes::from(out.to_string())
}

/// The vector for one input: SHA-256 of its JSON text mapped to floats in [-1, 1], so the same
/// input always embeds the same way.
pub(crate) fn embedding(input: &Value) -> [f32; EMBEDDING_DIMS] {
    let text = match input {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let digest = Sha256::digest(text.as_bytes());
    let mut vector = [0f32; EMBEDDING_DIMS];
    for (x, byte) in vector.iter_mut().zip(digest.iter()) {
        *x = f32::from(*byte) / 127.5 - 1.0;
    }
    vector
}

/// `GET /v1/models`: the configured model names, sorted.
pub(crate) fn models(names: &[String], owner: &str) -> Bytes {
    let data: Vec<Value> = names
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    fn reply(kind: Kind, pieces: &[&str]) -> Reply<'static> {
        Reply {
            kind,
            id: "chatcmpl-t-1".into(),
            created: 1_700_000_000,
            model: "m",
            pieces: pieces.iter().map(|p| (*p).to_owned()).collect(),
            tool: None,
            prompt_tokens: 5,
            report_usage: true,
        }
    }

    fn events(steps: &VecDeque<Step>) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Send { bytes, .. } => Some(String::from_utf8(bytes.to_vec()).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn json_of(event: &str) -> Value {
        let data = event
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn routes_by_suffix_and_method() {
        assert_eq!(route(&Method::POST, "/v1/chat/completions"), Route::Chat);
        assert_eq!(route(&Method::POST, "/v1/completions"), Route::Completions);
        assert_eq!(route(&Method::POST, "/v1/embeddings/"), Route::Embeddings);
        assert_eq!(route(&Method::GET, "/v1/models"), Route::Models);
        assert_eq!(
            route(&Method::POST, "/openai/deployments/gpt4/chat/completions"),
            Route::Chat
        );
        assert_eq!(
            route(&Method::GET, "/v1/chat/completions"),
            Route::WrongMethod
        );
        assert_eq!(route(&Method::POST, "/v1/models"), Route::WrongMethod);
        assert_eq!(route(&Method::POST, "/v1/messages"), Route::NotFound);
        assert_eq!(
            azure_deployment("/openai/deployments/gpt4/chat/completions"),
            Some("gpt4")
        );
        assert_eq!(azure_deployment("/v1/chat/completions"), None);
    }

    #[test]
    fn status_errors_default_per_status_and_take_overrides() {
        let body: Value = serde_json::from_slice(&status_error(
            StatusCode::TOO_MANY_REQUESTS,
            &Behavior::ok(),
        ))
        .unwrap();
        assert_eq!(body["error"]["type"], "requests");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["param"], Value::Null);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Rate limit")
        );
        let b = Behavior::ok()
            .error_code("context_length_exceeded")
            .error_message("too long")
            .error_type("invalid_request_error");
        let body: Value =
            serde_json::from_slice(&status_error(StatusCode::BAD_REQUEST, &b)).unwrap();
        assert_eq!(
            body,
            json!({"error": {"message": "too long", "type": "invalid_request_error",
                "param": null, "code": "context_length_exceeded"}})
        );
        let body: Value = serde_json::from_slice(&status_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &Behavior::ok(),
        ))
        .unwrap();
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["code"], Value::Null);
    }

    #[test]
    fn chat_stream_has_role_content_finish_usage_done() {
        let r = reply(Kind::Chat, &["a ", "b "]);
        let b = Behavior::ok().chunk_delay(Duration::from_millis(7));
        let steps = r.stream(&b, true);
        let waits: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Wait(d) => Some(*d),
                _ => None,
            })
            .collect();
        assert_eq!(waits, [Duration::ZERO, Duration::from_millis(7)]);
        let ev = events(&steps);
        assert_eq!(ev.len(), 6);
        assert_eq!(ev[5], "data: [DONE]\n\n");
        let role = json_of(&ev[0]);
        assert_eq!(
            role["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(role["usage"], Value::Null);
        assert!(role.as_object().unwrap().contains_key("usage"));
        assert_eq!(json_of(&ev[2])["choices"][0]["delta"]["content"], "b ");
        let finish = json_of(&ev[3]);
        assert_eq!(finish["choices"][0]["delta"], json!({}));
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        let usage = json_of(&ev[4]);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
        );
    }

    #[test]
    fn no_usage_field_without_include_usage() {
        let r = reply(Kind::Chat, &["a "]);
        for ev in events(&r.stream(&Behavior::ok(), false))
            .iter()
            .filter(|e| !e.contains("[DONE]"))
        {
            assert!(
                !json_of(ev).as_object().unwrap().contains_key("usage"),
                "{ev}"
            );
        }
        let mut r = reply(Kind::Chat, &["a "]);
        r.report_usage = false;
        let ev = events(&r.stream(&Behavior::ok(), true));
        assert_eq!(ev.len(), 4, "omit_usage drops the usage chunk: {ev:?}");
        assert!(!json_of(&ev[0]).as_object().unwrap().contains_key("usage"));
    }

    #[test]
    fn faults_end_the_script_at_the_right_chunk() {
        let r = reply(Kind::Chat, &["a ", "b ", "c "]);
        let steps = r.stream(&Behavior::ok().cut_after(2), false);
        assert_eq!(steps.back(), Some(&Step::Cut));
        assert_eq!(
            steps
                .iter()
                .filter(|s| matches!(s, Step::Send { content: true, .. }))
                .count(),
            2
        );
        let steps = r.stream(&Behavior::ok().cut_after(5).stall_after(1), false);
        assert_eq!(steps.back(), Some(&Step::Stall));
        assert_eq!(
            steps
                .iter()
                .filter(|s| matches!(s, Step::Send { content: true, .. }))
                .count(),
            1
        );
        let steps = r.stream(&Behavior::ok().cut_after(9), false);
        assert_eq!(steps.back(), Some(&Step::Cut));
        assert_eq!(events(&steps).len(), 4, "all content, no finish chunk");
        let steps = r.stream(&Behavior::ok().cut_after(0), false);
        assert_eq!(steps.len(), 2, "role chunk then cut: {steps:?}");
        let ev = events(&r.stream(&Behavior::ok().malformed_at(2).omit_done(), false));
        assert_eq!(ev[2].as_bytes(), MALFORMED_EVENT);
        assert!(serde_json::from_str::<Value>(ev[2].trim_start_matches("data: ")).is_err());
        assert!(!ev.iter().any(|e| e.contains("[DONE]")));
        assert_eq!(
            json_of(ev.last().unwrap())["choices"][0]["finish_reason"],
            "stop"
        );
    }

    #[test]
    fn completion_stream_has_no_role_chunk() {
        let r = reply(Kind::Completion, &["x ", "y"]);
        let ev = events(&r.stream(&Behavior::ok(), true));
        assert_eq!(ev.len(), 5);
        let first = json_of(&ev[0]);
        assert_eq!(first["object"], "text_completion");
        assert_eq!(first["choices"][0]["text"], "x ");
        assert_eq!(first["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(json_of(&ev[2])["choices"][0]["finish_reason"], "stop");
        assert_eq!(json_of(&ev[3])["choices"], json!([]));
        assert_eq!(json_of(&ev[3])["object"], "text_completion");
    }

    #[test]
    fn tool_call_stream_and_body() {
        let mut r = reply(Kind::Chat, &["{\"text\":\"a ", "b \"}"]);
        r.tool = Some(ToolCall {
            id: "call_1".into(),
            name: "lookup".into(),
        });
        let ev = events(&r.stream(&Behavior::ok(), false));
        assert_eq!(
            json_of(&ev[0])["choices"][0]["delta"]["content"],
            Value::Null
        );
        let first = &json_of(&ev[1])["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(first["id"], "call_1");
        assert_eq!(first["type"], "function");
        assert_eq!(first["function"]["name"], "lookup");
        let second = &json_of(&ev[2])["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(second["index"], 0);
        assert_eq!(second["function"]["arguments"], "b \"}");
        assert_eq!(json_of(&ev[3])["choices"][0]["finish_reason"], "tool_calls");
        let body: Value = serde_json::from_slice(&r.body()).unwrap();
        let message = &body["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            "{\"text\":\"a b \"}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(body["usage"]["completion_tokens"], 2);
    }

    #[test]
    fn embeddings_floats_and_base64_agree() {
        let body = json!({"input": ["one", "two"], "model": "e"});
        let out: Value = serde_json::from_slice(&embeddings(&body, "e", 2, true)).unwrap();
        assert_eq!(out["object"], "list");
        assert_eq!(out["data"].as_array().unwrap().len(), 2);
        assert_eq!(out["data"][1]["index"], 1);
        assert_eq!(out["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));
        let floats: Vec<f32> = serde_json::from_value(out["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(floats.len(), EMBEDDING_DIMS);
        assert_eq!(floats, embedding(&json!("one")));
        assert!(floats.iter().all(|x| (-1.0..=1.0).contains(x)));
        assert_ne!(embedding(&json!("one")), embedding(&json!("two")));

        let body = json!({"input": "one", "encoding_format": "base64"});
        let out: Value = serde_json::from_slice(&embeddings(&body, "e", 1, false)).unwrap();
        assert!(out.get("usage").is_none());
        let encoded = out["data"][0]["embedding"].as_str().unwrap();
        let bytes: Vec<u8> = embedding(&json!("one"))
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(encoded, base64(&bytes));
        assert_eq!(encoded.len(), 44);

        let tokens = json!({"input": [1, 2, 3]});
        let out: Value = serde_json::from_slice(&embeddings(&tokens, "e", 3, true)).unwrap();
        assert_eq!(
            out["data"].as_array().unwrap().len(),
            1,
            "a token array is one input"
        );
    }

    #[test]
    fn models_list_shape() {
        let out: Value =
            serde_json::from_slice(&models(&["a".to_owned(), "b".to_owned()], "prov")).unwrap();
        assert_eq!(out["object"], "list");
        assert_eq!(
            out["data"][1],
            json!({"id": "b", "object": "model", "created": 0, "owned_by": "prov"})
        );
    }
}
