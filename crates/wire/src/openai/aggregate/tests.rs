#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_core::{EventSource, Pricing};

use super::*;
use crate::{OpenAiEventStream, Rewrite, rewrite_response};

fn rw(client_wants_usage: bool) -> Rewrite {
    Rewrite {
        model: Arc::from("fast-chat"),
        provider: Arc::from("acme"),
        upstream_model: Arc::from("gpt-4o-mini"),
        pricing: Pricing {
            prompt: 2.0,
            completion: 8.0,
            request: 0.0,
        },
        client_wants_usage,
    }
}

thread_local! {
    /// The last body `events_of` adapted, so `aggregate` can build the same answer again
    /// through an `AggregateSink` and compare.
    static LAST: std::cell::RefCell<Option<(Operation, String, Rewrite)>> =
        const { std::cell::RefCell::new(None) };
}

/// The events our own stream adapter makes of an upstream SSE body.
fn events_of(op: Operation, sse: &str, rw: Rewrite) -> Vec<Event> {
    LAST.with(|l| *l.borrow_mut() = Some((op, sse.to_owned(), rw.clone())));
    adapt(op, sse, rw, None)
}

fn adapt(op: Operation, sse: &str, rw: Rewrite, sink: Option<AggregateSink>) -> Vec<Event> {
    let body = Full::new(Bytes::from(sse.to_owned()));
    let mut s = OpenAiEventStream::new(body, op, rw, 1 << 16);
    if let Some(sink) = sink {
        s = s.with_sink(sink);
    }
    let mut s = Box::pin(s);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match s.as_mut().poll_event(&mut cx) {
            Poll::Ready(Some(ev)) => out.push(ev.unwrap()),
            Poll::Ready(None) => return out,
            Poll::Pending => panic!("a full body is always ready"),
        }
    }
}

fn sse(chunks: &[Value]) -> String {
    let mut out = String::new();
    for c in chunks {
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

fn aggregate(op: Operation, events: &[Event], wants: bool) -> (Aggregated, Value) {
    let mut agg = Aggregator::new(op, wants).with_upstream_model("gpt-4o-mini");
    for ev in events {
        agg.push(ev).unwrap();
    }
    let out = agg.finish().unwrap();
    let v: Value = serde_json::from_slice(&out.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.body)));
    if wants && let Some((last_op, sse, rw)) = LAST.with(|l| l.borrow_mut().take()) {
        assert_eq!(last_op, op);
        for built in [
            sink_aggregate(op, &sse, rw.clone()),
            tap_aggregate(op, &sse, rw),
        ] {
            if v["model"] == "" {
                // No chunk named a model: the rewriting aggregator still names the served one.
                let u: Value = serde_json::from_slice(&built.body).unwrap();
                assert_eq!(u["model"], "fast-chat");
                assert_eq!(u["provider"], "acme");
            } else {
                assert_eq!(built, out, "{sse}");
            }
        }
    }
    (out, v)
}

/// The answer built in an `AggregateSink`, which the stream adapter feeds the chunks as the
/// upstream wrote them, by an aggregator that rewrites the body.
fn sink_aggregate(op: Operation, sse: &str, rw: Rewrite) -> Aggregated {
    let sink = AggregateSink::new(Aggregator::new(op, true).with_rewrite(&rw));
    let folded = adapt(op, sse, rw.clone(), Some(sink.clone()));
    let passed = adapt(op, sse, rw, None);
    // Same kinds and usage as the events passed on; bytes only for [DONE].
    let outline = |evs: &[Event]| -> Vec<(EventKind, Option<Usage>)> {
        evs.iter().map(|e| (e.kind, e.usage)).collect()
    };
    assert_eq!(outline(&folded), outline(&passed), "{sse}");
    for ev in &folded {
        if ev.kind != EventKind::Done {
            assert!(ev.bytes.is_empty(), "{ev:?}");
        }
    }
    sink.take().unwrap().finish().unwrap()
}

/// The answer folded by a tap: the events are exactly those passed on without one, and the
/// aggregate is folded from the parse that rewrote them.
fn tap_aggregate(op: Operation, sse: &str, rw: Rewrite) -> Aggregated {
    let sink = AggregateSink::tap(Aggregator::new(op, true).with_rewrite(&rw));
    let tapped = adapt(op, sse, rw.clone(), Some(sink.clone()));
    let passed = adapt(op, sse, rw, None);
    let all = |evs: &[Event]| -> Vec<(Bytes, EventKind, Option<Usage>)> {
        evs.iter()
            .map(|e| (e.bytes.clone(), e.kind, e.usage))
            .collect()
    };
    assert_eq!(all(&tapped), all(&passed), "{sse}");
    // What the caller reads while streaming matches an aggregator fed the events.
    let mut fed = Aggregator::new(op, true);
    for ev in passed.iter().filter(|e| e.kind != EventKind::Error) {
        fed.push(ev).unwrap();
    }
    let agg = sink.take().unwrap();
    assert_eq!(agg.partial_text(), fed.partial_text());
    assert_eq!(agg.output_events(), fed.output_events());
    assert_eq!(agg.finish_reason(), fed.finish_reason());
    assert_eq!(agg.usage(), fed.usage());
    assert_eq!(agg.has_tool_calls(), fed.has_tool_calls());
    agg.finish().unwrap()
}

/// Chunks the typed pass rejects (duplicate keys) are folded in from their rewritten bytes;
/// a chunk the aggregator refuses fails the stream; in-band errors pass through framed.
#[test]
fn a_sink_takes_odd_chunks_and_fails_on_refused_ones() {
    let op = Operation::ChatCompletions;
    let odd = concat!(
        "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"m\",\"model\":\"m2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"B\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let sink = AggregateSink::new(Aggregator::new(op, true).with_rewrite(&rw(true)));
    let evs = adapt(op, odd, rw(true), Some(sink.clone()));
    assert_eq!(evs.len(), 3);
    assert!(
        evs[..2]
            .iter()
            .all(|e| e.kind == EventKind::Output && e.bytes.is_empty())
    );
    let v: Value = serde_json::from_slice(&sink.take().unwrap().finish().unwrap().body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "AB");
    assert_eq!(v["model"], "fast-chat");
    assert!(sink.take().is_none(), "taken once");

    let many: Vec<Value> = (0..=MAX_CHOICES as u32)
        .map(|i| json!({"index": i, "delta": {"content": "x"}}))
        .collect();
    let refused = sse(&[json!({"id": "c", "model": "m", "choices": many})]);
    let sink = AggregateSink::new(Aggregator::new(op, true));
    let body = Full::new(Bytes::from(refused));
    let mut s = Box::pin(OpenAiEventStream::new(body, op, rw(true), 1 << 20).with_sink(sink));
    let mut cx = Context::from_waker(Waker::noop());
    match s.as_mut().poll_event(&mut cx) {
        Poll::Ready(Some(Err(e))) => assert!(e.to_string().contains("choices"), "{e}"),
        other => panic!("{:?}", other.map(|o| o.map(|r| r.map(|e| e.kind)))),
    }

    // A tap passes the same chunk on and keeps the refusal for the caller to judge.
    let many: Vec<Value> = (0..=MAX_CHOICES as u32)
        .map(|i| json!({"index": i, "delta": {"content": "x"}}))
        .collect();
    let refused = sse(&[json!({"id": "c", "model": "m", "choices": many})]);
    let tap = AggregateSink::tap(Aggregator::new(op, true));
    let evs = adapt(op, &refused, rw(true), Some(tap.clone()));
    assert_eq!(evs.len(), 2, "the chunk and [DONE] pass on");
    assert_eq!(evs[0].kind, EventKind::Output);
    let agg = tap.take().unwrap();
    assert!(
        agg.failure()
            .is_some_and(|e| e.to_string().contains("choices"))
    );
    assert!(agg.finish().is_err());

    let error = "data: {\"error\":{\"message\":\"overloaded\",\"code\":529}}\n\n";
    let sink = AggregateSink::new(Aggregator::new(op, true));
    let evs = adapt(op, error, rw(true), Some(sink.clone()));
    assert_eq!(evs[0].kind, EventKind::Error);
    assert!(evs[0].bytes.starts_with(b"data: "), "{:?}", evs[0]);
    assert_eq!(sink.take().unwrap().output_events(), 0);
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        "usage": null})
}

fn usage_chunk() -> Value {
    json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18", "choices": [],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
            "completion_tokens_details": {"reasoning_tokens": 0}}})
}

const COST: f64 = (1000.0 * 2.0 + 500.0 * 8.0) / 1e6;

// The official chat completion object (platform.openai.com API reference, "The chat
// completion object"), strictly: any member we write that it does not define fails to parse,
// except Switchyard's own `provider`, `metadata` and `usage.cost`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ChatCompletion {
    id: String,
    object: String,
    created: u64,
    model: String,
    choices: Vec<ChatChoice>,
    usage: Option<CompletionUsage>,
    system_fingerprint: Option<String>,
    service_tier: Option<String>,
    provider: String,
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ChatChoice {
    index: u32,
    message: ChatMessage,
    logprobs: Option<ChoiceLogprobs>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ChatMessage {
    role: String,
    content: Option<String>,
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<MessageToolCall>>,
    #[serde(default)]
    annotations: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct MessageToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    function: FunctionCallOut,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FunctionCallOut {
    name: String,
    arguments: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ChoiceLogprobs {
    content: Option<Vec<TokenLogprob>>,
    refusal: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TokenLogprob {
    token: String,
    logprob: f64,
    bytes: Option<Vec<u8>>,
    top_logprobs: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CompletionUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<Value>,
    #[serde(default)]
    completion_tokens_details: Option<Value>,
    cost: f64,
}

fn typed(body: &[u8]) -> ChatCompletion {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[test]
fn chat_stream_becomes_the_whole_body_openai_would_have_sent() {
    let stream = sse(&[
        chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            None,
        ),
        chunk(json!({"content": "Caf\u{e9} "}), None),
        chunk(json!({"content": "\"quoted\"\n"}), None),
        chunk(json!({}), Some("stop")),
        usage_chunk(),
    ]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let (out, v) = aggregate(Operation::ChatCompletions, &events, true);
    assert_eq!(
        v,
        json!({
            "id": "chatcmpl-9",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "fast-chat",
            "provider": "acme",
            "choices": [{"index": 0,
                "message": {"role": "assistant", "content": "Caf\u{e9} \"quoted\"\n", "refusal": null},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
                "completion_tokens_details": {"reasoning_tokens": 0}, "cost": COST},
            "system_fingerprint": "fp_1",
            "metadata": {"upstream_model": "gpt-4o-mini"}
        })
    );
    assert!(!out.empty);
    let u = out.usage.unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (1000, 500));
    assert!((u.cost - COST).abs() < 1e-15);
    let typed = typed(&out.body);
    assert_eq!(typed.object, "chat.completion");
    assert_eq!(
        typed.choices[0].message.content.as_deref(),
        Some("Caf\u{e9} \"quoted\"\n")
    );
    // Round trip: what serde reads back and writes again is the same document.
    let again: Value = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(again, v);
}

#[test]
fn aggregated_body_equals_the_rewritten_whole_body() {
    // The same answer, once whole and once streamed, both rewritten for the caller.
    let whole = json!({"id": "chatcmpl-9", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world",
            "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
            "completion_tokens_details": {"reasoning_tokens": 0}},
        "system_fingerprint": "fp_1"});
    let (rewritten, usage) = rewrite_response(
        Operation::ChatCompletions,
        whole.to_string().as_bytes(),
        &rw(false),
    )
    .unwrap();
    let stream = sse(&[
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Hello"}), None),
        chunk(json!({"content": " world"}), None),
        chunk(json!({}), Some("stop")),
        usage_chunk(),
    ]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let (out, v) = aggregate(Operation::ChatCompletions, &events, true);
    let want: Value = serde_json::from_slice(&rewritten).unwrap();
    assert_eq!(v, want);
    assert_eq!(out.usage, usage);
}

#[test]
fn hidden_usage_chunk_is_rebuilt_from_metered_usage() {
    let stream = sse(&[
        chunk(json!({"role": "assistant", "content": "hi"}), Some("stop")),
        usage_chunk(),
    ]);
    // The stream was built for a caller that never asked for the usage chunk.
    let events = events_of(Operation::ChatCompletions, &stream, rw(false));
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::Usage && e.bytes.is_empty())
    );
    let (out, v) = aggregate(Operation::ChatCompletions, &events, true);
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500, "cost": COST})
    );
    assert_eq!(out.usage.map(|u| u.completion_tokens), Some(500));
    typed(&out.body);
    // A body without usage when the caller is not to see it; still metered.
    let (out, v) = aggregate(Operation::ChatCompletions, &events, false);
    assert!(v.get("usage").is_none());
    assert_eq!(out.usage.map(|u| u.prompt_tokens), Some(1000));
    // No usage at all.
    let stream = sse(&[chunk(json!({"content": "hi"}), Some("stop"))]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let (out, v) = aggregate(Operation::ChatCompletions, &events, true);
    assert!(v.get("usage").is_none());
    assert_eq!(out.usage, None);
}

#[test]
fn tool_calls_merge_by_index() {
    let call = |index: u32, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut f = json!({"arguments": args});
        if let Some(name) = name {
            f["name"] = json!(name);
        }
        let mut c = json!({"index": index, "function": f});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["type"] = json!("function");
        }
        chunk(json!({"tool_calls": [c]}), None)
    };
    let stream = sse(&[
        chunk(json!({"role": "assistant", "content": null}), None),
        call(0, Some("call_a"), Some("get_weather"), ""),
        call(0, None, None, "{\"city\":"),
        call(1, Some("call_b"), Some("get_time"), "{\"tz\""),
        call(0, None, None, "\"Paris\"}"),
        call(1, None, None, ":\"CET\"}"),
        chunk(json!({}), Some("tool_calls")),
    ]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let mut agg = Aggregator::new(Operation::ChatCompletions, true);
    for ev in &events {
        agg.push(ev).unwrap();
    }
    assert!(agg.has_tool_calls());
    assert_eq!(agg.partial_text(), "");
    assert_eq!(agg.output_events(), 6);
    let out = agg.finish().unwrap();
    assert!(!out.empty, "a tool call is an answer");
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(
        message["tool_calls"],
        json!([
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}}
        ])
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let t = typed(&out.body);
    assert_eq!(t.choices[0].message.tool_calls.as_ref().unwrap().len(), 2);
}

#[test]
fn tool_calls_without_index_follow_their_ids_and_names_are_not_doubled() {
    let stream = sse(&[
        chunk(
            json!({"tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"function": {"name": "f", "arguments": "}"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"id": "b", "type": "function", "function": {"name": "g", "arguments": {"x": 1}}}]}),
            Some("tool_calls"),
        ),
    ]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let (_, v) = aggregate(Operation::ChatCompletions, &events, true);
    let calls = &v["choices"][0]["message"]["tool_calls"];
    assert_eq!(
        calls[0]["function"],
        json!({"name": "f", "arguments": "{}"})
    );
    assert_eq!(calls[1]["id"], "b");
    // Arguments sent as an object by a non-conforming server arrive as their JSON text.
    assert_eq!(calls[1]["function"]["arguments"], "{\"x\":1}");
}

#[test]
fn legacy_function_call_reasoning_and_annotations() {
    let stream = sse(&[
        chunk(json!({"role": "assistant", "reasoning": "think "}), None),
        chunk(
            json!({"reasoning": "hard", "reasoning_content": "deep"}),
            None,
        ),
        chunk(
            json!({"function_call": {"name": "lookup", "arguments": "{\"q\""}}),
            None,
        ),
        chunk(json!({"function_call": {"arguments": ":1}"}}), None),
        chunk(
            json!({"annotations": [{"type": "url_citation", "url_citation": {"url": "https://x"}}]}),
            Some("function_call"),
        ),
    ]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let (out, v) = aggregate(Operation::ChatCompletions, &events, true);
    let m = &v["choices"][0]["message"];
    assert_eq!(m["reasoning"], "think hard");
    assert_eq!(m["reasoning_content"], "deep");
    assert_eq!(
        m["function_call"],
        json!({"name": "lookup", "arguments": "{\"q\":1}"})
    );
    assert_eq!(m["content"], Value::Null);
    assert_eq!(m["annotations"][0]["type"], "url_citation");
    assert!(!out.empty);
}

#[test]
fn refusals_and_empty_answers() {
    let stream = sse(&[
        chunk(
            json!({"role": "assistant", "content": null, "refusal": ""}),
            None,
        ),
        chunk(json!({"refusal": "I can't "}), None),
        chunk(json!({"refusal": "help with that."}), Some("stop")),
    ]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let (out, v) = aggregate(Operation::ChatCompletions, &events, true);
    assert!(!out.empty, "a refusal is an answer");
    let m = &v["choices"][0]["message"];
    assert_eq!(m["refusal"], "I can't help with that.");
    assert_eq!(m["content"], Value::Null);

    let stream = sse(&[
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "", "refusal": null}), Some("stop")),
    ]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let (out, v) = aggregate(Operation::ChatCompletions, &events, true);
    assert!(out.empty);
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert_eq!(v["choices"][0]["message"]["refusal"], Value::Null);
    typed(&out.body);

    // No chunks at all: still a well-formed (empty) body.
    let events = events_of(Operation::ChatCompletions, "data: [DONE]\n\n", rw(true));
    let (out, v) = aggregate(Operation::ChatCompletions, &events, true);
    assert!(out.empty);
    assert_eq!(v["choices"], json!([]));
    assert_eq!(v["object"], "chat.completion");
}

#[test]
fn logprobs_are_concatenated() {
    let lp = |token: &str| {
        json!({"content": [{"token": token, "logprob": -0.5, "bytes": [104], "top_logprobs": []}],
            "refusal": null})
    };
    let mut a = chunk(json!({"content": "h"}), None);
    a["choices"][0]["logprobs"] = lp("h");
    let mut b = chunk(json!({"content": "i"}), Some("stop"));
    b["choices"][0]["logprobs"] = lp("i");
    let events = events_of(Operation::ChatCompletions, &sse(&[a, b]), rw(true));
    let (out, v) = aggregate(Operation::ChatCompletions, &events, true);
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["content"].as_array().unwrap().len(), 2);
    assert_eq!(lp["content"][1]["token"], "i");
    assert_eq!(lp["refusal"], Value::Null);
    let t = typed(&out.body);
    assert_eq!(
        t.choices[0]
            .logprobs
            .as_ref()
            .unwrap()
            .content
            .as_ref()
            .unwrap()[0]
            .token,
        "h"
    );
}

#[test]
fn several_choices_interleaved() {
    let two = |a: Value, b: Value| {
        json!({"id": "x", "created": 1, "model": "m", "choices": [
            {"index": 1, "delta": b, "finish_reason": null},
            {"index": 0, "delta": a, "finish_reason": null}]})
    };
    let stream = sse(&[
        two(json!({"content": "A1"}), json!({"content": "B1"})),
        two(json!({"content": "A2"}), json!({"content": "B2"})),
        json!({"id": "x", "choices": [{"index": 1, "delta": {}, "finish_reason": "length"},
            {"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    ]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let mut agg = Aggregator::new(Operation::ChatCompletions, true);
    for ev in &events {
        agg.push(ev).unwrap();
    }
    assert_eq!(agg.partial_text(), "A1A2");
    let out = agg.finish().unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["content"], "A1A2");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][1]["message"]["content"], "B1B2");
    assert_eq!(v["choices"][1]["finish_reason"], "length");
}

#[test]
fn text_completions() {
    let c = |text: &str, finish: Option<&str>| {
        json!({"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "davinci",
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]})
    };
    let stream = sse(&[
        c("one ", None),
        c("two", None),
        c("", Some("length")),
        json!({"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "davinci",
            "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
    ]);
    let events = events_of(Operation::Completions, &stream, rw(true));
    let (out, v) = aggregate(Operation::Completions, &events, true);
    assert_eq!(
        v,
        json!({"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "fast-chat",
            "provider": "acme",
            "choices": [{"text": "one two", "index": 0, "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                "cost": (3.0 * 2.0 + 2.0 * 8.0) / 1e6},
            "metadata": {"upstream_model": "gpt-4o-mini"}})
    );
    assert!(!out.empty);
    // Legacy logprobs: every array concatenated.
    let mut a = c("a", None);
    a["choices"][0]["logprobs"] = json!({"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": null, "text_offset": [0]});
    let mut b = c("b", Some("stop"));
    b["choices"][0]["logprobs"] = json!({"tokens": ["b"], "token_logprobs": [-0.2], "top_logprobs": null, "text_offset": [1]});
    let events = events_of(Operation::Completions, &sse(&[a, b]), rw(true));
    let (_, v) = aggregate(Operation::Completions, &events, true);
    assert_eq!(
        v["choices"][0]["logprobs"],
        json!({"tokens": ["a", "b"], "token_logprobs": [-0.1, -0.2], "top_logprobs": null,
            "text_offset": [0, 1]})
    );
}

#[test]
fn partial_text_and_output_events_track_a_stream_in_progress() {
    let stream = sse(&[
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "The quick"}), None),
        chunk(json!({"content": " brown"}), None),
    ]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let mut agg = Aggregator::new(Operation::ChatCompletions, true);
    assert_eq!(agg.partial_text(), "");
    agg.push(&events[0]).unwrap();
    assert_eq!(agg.output_events(), 0);
    agg.push(&events[1]).unwrap();
    assert_eq!(agg.partial_text(), "The quick");
    agg.push(&events[2]).unwrap();
    assert_eq!(agg.partial_text(), "The quick brown");
    assert_eq!(agg.output_events(), 2);
    assert!(!agg.has_tool_calls());
    // A cut stream still finishes into a body, with no finish reason.
    let out = agg.finish().unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(v["choices"][0]["message"]["content"], "The quick brown");
}

#[test]
fn error_events_and_malformed_chunks_fail_the_aggregation() {
    let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"Provider disconnected\",\"code\":502}}\n\n";
    let events = events_of(Operation::ChatCompletions, stream, rw(true));
    let mut agg = Aggregator::new(Operation::ChatCompletions, true);
    agg.push(&events[0]).unwrap();
    let err = agg.push(&events[1]).unwrap_err();
    assert_eq!(
        err,
        WireError::UpstreamError {
            status: Some(502),
            message: "Provider disconnected".into()
        }
    );
    // Sticky: later events and finish report the same failure.
    assert_eq!(agg.push(&events[0]).unwrap_err(), err);
    assert_eq!(agg.finish().unwrap_err(), err);

    let bad = Event {
        bytes: Bytes::from_static(b"data: {\"choices\":[{\"delta\":\n\n"),
        kind: EventKind::Preamble,
        usage: None,
    };
    let mut agg = Aggregator::new(Operation::ChatCompletions, true);
    assert!(matches!(agg.push(&bad), Err(WireError::Malformed { .. })));
    assert!(matches!(agg.finish(), Err(WireError::Malformed { .. })));

    let wrong_shape = Event {
        bytes: Bytes::from_static(b"data: {\"choices\":[{\"index\":\"zero\"}]}\n\n"),
        kind: EventKind::Preamble,
        usage: None,
    };
    let mut agg = Aggregator::new(Operation::ChatCompletions, true);
    assert!(matches!(
        agg.push(&wrong_shape),
        Err(WireError::Malformed { .. })
    ));

    let agg = Aggregator::new(Operation::Embeddings, true);
    assert!(matches!(agg.finish(), Err(WireError::Malformed { .. })));
}

#[test]
fn named_multi_line_events_and_metadata() {
    let ev = Event {
        bytes: Bytes::from_static(
            b"event: delta\ndata: {\"model\":\"fast-chat\",\ndata: \"metadata\":{\"k\":1},\ndata: \"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
        ),
        kind: EventKind::Output,
        usage: None,
    };
    let mut agg = Aggregator::new(Operation::ChatCompletions, true).with_upstream_model("u");
    agg.push(&ev).unwrap();
    let out = agg.finish().unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "x");
    // The chunks' own metadata wins over the upstream model note.
    assert_eq!(v["metadata"], json!({"k": 1}));
    assert_eq!(v["model"], "fast-chat");
    assert_eq!(v["id"], "");
    assert_eq!(v["created"], 0);
}

#[test]
fn content_parts_are_joined() {
    let stream = sse(&[chunk(
        json!({"content": [{"type": "text", "text": "a"}, {"type": "thinking", "thinking": []}, {"type": "text", "text": "b"}]}),
        Some("stop"),
    )]);
    let events = events_of(Operation::ChatCompletions, &stream, rw(true));
    let (_, v) = aggregate(Operation::ChatCompletions, &events, true);
    assert_eq!(v["choices"][0]["message"]["content"], "ab");
}

#[test]
fn hostile_choice_counts_are_bounded() {
    let mut agg = Aggregator::new(Operation::ChatCompletions, true);
    let mut failed = false;
    for i in 0..(MAX_CHOICES as u32 + 1) {
        let ev = Event {
            bytes: Bytes::from(format!(
                "data: {{\"choices\":[{{\"index\":{i},\"delta\":{{\"content\":\"x\"}}}}]}}\n\n"
            )),
            kind: EventKind::Output,
            usage: None,
        };
        failed |= agg.push(&ev).is_err();
    }
    assert!(failed);
}

#[test]
fn long_streams_aggregate_linearly() {
    // 50 000 chunks: quadratic string building would take seconds here.
    let n = 50_000;
    let mut agg = Aggregator::new(Operation::ChatCompletions, true);
    let ev = Event {
        bytes: Bytes::from_static(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n",
        ),
        kind: EventKind::Output,
        usage: None,
    };
    let start = std::time::Instant::now();
    for _ in 0..n {
        agg.push(&ev).unwrap();
    }
    assert_eq!(agg.partial_text().len(), 5 * n);
    assert_eq!(agg.output_events(), n as u64);
    let out = agg.finish().unwrap();
    assert!(out.body.len() > 5 * n);
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn sse_data_extraction() {
    assert_eq!(&sse_data(b"data: {}\n\n")[..], b"{}");
    assert_eq!(&sse_data(b"data:{}\r\n\r\n")[..], b"{}");
    assert_eq!(&sse_data(b"event: x\ndata: a\ndata: b\n\n")[..], b"a\nb");
    assert_eq!(&sse_data(b": comment\n\n")[..], b"");
}
