//! The inputs every benchmark shares: a realistic chat request, the stream and the
//! completion an upstream answers it with, and the rewrite the proxy applies to them.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use switchyard_core::Pricing;
use switchyard_wire::Rewrite;

/// Events in [`chat_stream_events`]: role chunk, content chunks, finish chunk, usage chunk,
/// `[DONE]`.
pub const STREAM_EVENTS: usize = 200;

/// Content chunks in the stream (and completion tokens in both answers).
pub const CONTENT_CHUNKS: usize = STREAM_EVENTS - 4;

/// The policy's model id the benchmark requests are for.
pub const MODEL: &str = "fast-chat";

/// The provider of [`MODEL`]'s first endpoint.
pub const PROVIDER: &str = "acme";

/// The upstream's own name for [`MODEL`] at [`PROVIDER`].
pub const UPSTREAM_MODEL: &str = "gpt-4o-mini-2024-07-18";

/// Prompt tokens the upstream reports for [`chat_request`].
pub const PROMPT_TOKENS: u64 = 512;

/// Every tenth event reaches the reader split across two body frames: a TCP read ends
/// wherever the segment ends, and the decoder's carry-over path is part of the cost.
const SPLIT_EVERY: usize = 10;

const RESPONSE_ID: &str = "chatcmpl-BenchStream0001";
const CREATED: u64 = 1_763_700_000;
const FINGERPRINT: &str = "fp_sim";

const ANSWER: &str = "The sidecar keeps a policy snapshot pinned for the whole request, \
so a reload in the middle of a stream never changes the rules under it. When the first \
provider answers with a rate limit, the fallback executor moves to the next endpoint of \
the same model before it tries another model, and the budget reservation follows the \
attempt. Costs are settled on the usage the provider reports in its final chunk, which is \
why the proxy always asks for stream usage and hides it again from clients that did not \
ask for it. Breakers open after repeated failures and admit a single probe once the \
cool-down has passed, so traffic returns to a recovered primary within seconds.";

/// A ~2 KB chat completion request as an SDK sends it: a system prompt and four turns
/// (user, assistant tool call, tool result, user), a two-function `tools` array, sampling
/// parameters and OpenRouter's `provider` object and `models` fallback list.
///
/// With `stream` it asks for a stream without `stream_options`, as SDKs do by default, so
/// the proxy has to add `include_usage` itself.
pub fn chat_request(stream: bool) -> Bytes {
    let mut body = json!({
        "model": MODEL,
        "messages": [
            {
                "role": "system",
                "content": "You are the operations assistant for a logistics company. Answer \
                    in short paragraphs, cite the tool results you used, and never invent \
                    shipment numbers. If a question needs live data, call a tool first; if no \
                    tool fits, say so plainly. Times are in UTC unless the user names a zone."
            },
            {
                "role": "user",
                "content": "Where is shipment SY-2291-KX right now, and will it reach the \
                    Rotterdam depot before the Thursday cut-off?"
            },
            {
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": "call_8f2c1d",
                    "type": "function",
                    "function": {
                        "name": "track_shipment",
                        "arguments": "{\"shipment_id\":\"SY-2291-KX\",\"include_eta\":true}"
                    }
                }]
            },
            {
                "role": "tool",
                "tool_call_id": "call_8f2c1d",
                "content": "{\"shipment_id\":\"SY-2291-KX\",\"status\":\"in_transit\",\
                    \"location\":\"Antwerp, BE\",\"eta\":\"2026-11-26T14:30:00Z\",\
                    \"carrier\":\"NordFreight\",\"delays\":[]}"
            },
            {
                "role": "user",
                "content": "Thanks. Draft a two-sentence note to the depot manager with the \
                    ETA, and flag it if the margin to the cut-off is under six hours."
            }
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "track_shipment",
                    "description": "Current position, status and estimated arrival of one shipment.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "shipment_id": {"type": "string", "description": "Shipment number, e.g. SY-1234-AB."},
                            "include_eta": {"type": "boolean"}
                        },
                        "required": ["shipment_id"]
                    }
                }
            },
            {
                "type": "function",
                "function": {
                    "name": "depot_schedule",
                    "description": "Opening hours and cut-off times of a depot.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "depot": {"type": "string"},
                            "date": {"type": "string", "format": "date"}
                        },
                        "required": ["depot"]
                    }
                }
            }
        ],
        "tool_choice": "auto",
        "temperature": 0.2,
        "max_tokens": 400,
        "user": "ops-dashboard",
        "provider": {
            "order": ["acme", "backup"],
            "allow_fallbacks": true,
            "data_collection": "deny",
            "sort": "price",
            "max_price": {"prompt": 1, "completion": 4}
        },
        "models": ["fast-chat", "smart-chat"]
    });
    if stream && let Some(obj) = body.as_object_mut() {
        obj.insert("stream".into(), Value::Bool(true));
    }
    Bytes::from(body.to_string())
}

/// The completion's text, one piece (one completion token) per content chunk.
fn pieces() -> Vec<String> {
    ANSWER
        .split(' ')
        .cycle()
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            }
        })
        .take(CONTENT_CHUNKS)
        .collect()
}

fn usage() -> Value {
    let completion = CONTENT_CHUNKS as u64;
    json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}
    })
}

fn chunk(choices: Value, usage: Value) -> Bytes {
    let chunk = json!({
        "id": RESPONSE_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": UPSTREAM_MODEL,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": usage,
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

fn choice(delta: Value, finish: Option<&str>) -> Value {
    json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
}

/// The upstream's answer to a streaming [`chat_request`], as the sim sends it with
/// `include_usage` on: a role chunk, [`CONTENT_CHUNKS`] content chunks, the finish chunk, the
/// usage chunk (`choices: []`) and `[DONE]`, every chunk before the last carrying
/// `"usage": null`. One complete SSE event per element.
pub fn chat_stream_events() -> Vec<Bytes> {
    let mut events = Vec::with_capacity(STREAM_EVENTS);
    events.push(chunk(
        choice(json!({"role": "assistant", "content": ""}), None),
        Value::Null,
    ));
    for piece in pieces() {
        events.push(chunk(choice(json!({"content": piece}), None), Value::Null));
    }
    events.push(chunk(choice(json!({}), Some("stop")), Value::Null));
    events.push(chunk(json!([]), usage()));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// [`chat_stream_events`] as the body frames a reader sees: mostly one event per frame, every
/// tenth event split in two.
pub fn chat_stream_frames() -> Arc<[Bytes]> {
    let mut frames = Vec::with_capacity(STREAM_EVENTS + STREAM_EVENTS / SPLIT_EVERY);
    for (i, event) in chat_stream_events().into_iter().enumerate() {
        if i % SPLIT_EVERY == SPLIT_EVERY - 1 {
            let mid = event.len() / 2;
            frames.push(event.slice(..mid));
            frames.push(event.slice(mid..));
        } else {
            frames.push(event);
        }
    }
    frames.into()
}

/// The upstream's non-streaming answer to [`chat_request`]: the same text as the stream, in
/// one `chat.completion` body with usage.
pub fn chat_completion() -> Bytes {
    let body = json!({
        "id": "chatcmpl-BenchComplete01",
        "object": "chat.completion",
        "created": CREATED,
        "model": UPSTREAM_MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": pieces().concat(), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": usage(),
        "system_fingerprint": FINGERPRINT,
    });
    Bytes::from(body.to_string())
}

/// Prices of the bench policy's first `fast-chat` endpoint (USD per million tokens).
pub fn pricing() -> Pricing {
    Pricing {
        prompt: 0.15,
        completion: 0.6,
        request: 0.0,
    }
}

/// The rewrite the upstream applies for [`MODEL`] served by [`PROVIDER`].
pub fn rewrite(client_wants_usage: bool) -> Rewrite {
    Rewrite {
        model: Arc::from(MODEL),
        provider: Arc::from(PROVIDER),
        upstream_model: Arc::from(UPSTREAM_MODEL),
        pricing: pricing(),
        client_wants_usage,
    }
}
