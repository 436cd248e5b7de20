#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Body;
use serde_json::{Value, json};
use switchyard_core::{EventSource, Failure, InboundApi, ProxyError};
use switchyard_respond::{error_response, headers};
use switchyard_wire::{
    OpenAiEventStream, Operation, ParsedRequest, RequestError, rewrite_response,
};
use tower::ServiceExt;

use super::*;

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The JSON of each `data:` line of an SSE body, `[DONE]` as a string.
fn sse_data(body: &[u8]) -> Vec<Value> {
    std::str::from_utf8(body)
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                Value::String(data.into())
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

#[test]
fn chat_request_is_about_two_kilobytes_with_routing_fields() {
    for stream in [false, true] {
        let body = chat_request(stream);
        assert!(
            (1800..=2600).contains(&body.len()),
            "request is {} bytes",
            body.len()
        );
        let v = json_of(&body);
        let roles: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(v["tools"].as_array().unwrap().len(), 2);
        assert_eq!(v["provider"]["order"], json!(["acme", "backup"]));
        assert_eq!(v["stream"].as_bool(), stream.then_some(true));
        assert!(v.get("stream_options").is_none());

        let parsed = ParsedRequest::parse(Operation::ChatCompletions, body).unwrap();
        assert_eq!(parsed.model(), Some(MODEL));
        assert_eq!(parsed.models(), ["fast-chat", "smart-chat"]);
        assert!(parsed.provider_raw().is_some());
        assert!(parsed.has_tools());
        assert_eq!(parsed.stream(), stream);
        assert!(!parsed.client_wants_usage());
    }
}

#[test]
fn upstream_body_of_the_request_drops_routing_and_forces_usage() {
    let original = json_of(&chat_request(true));
    let parsed = ParsedRequest::parse(Operation::ChatCompletions, chat_request(true)).unwrap();
    let up = json_of(&parsed.upstream_body(UPSTREAM_MODEL));
    assert_eq!(up["model"], UPSTREAM_MODEL);
    assert!(up.get("provider").is_none());
    assert!(up.get("models").is_none());
    assert_eq!(up["stream_options"], json!({"include_usage": true}));
    assert_eq!(up["messages"], original["messages"]);
    assert_eq!(up["tools"], original["tools"]);
    assert_eq!(up["max_tokens"], 400);
}

#[test]
fn stream_has_200_events_shaped_like_the_sims() {
    let events = chat_stream_events();
    assert_eq!(events.len(), STREAM_EVENTS);
    let all: Vec<u8> = events.iter().flat_map(|e| e.iter().copied()).collect();
    let data = sse_data(&all);
    assert_eq!(data.len(), STREAM_EVENTS, "one data line per event");

    assert_eq!(data[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = &data[STREAM_EVENTS - 3];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &data[STREAM_EVENTS - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], PROMPT_TOKENS);
    assert_eq!(usage["usage"]["completion_tokens"], CONTENT_CHUNKS);
    assert_eq!(data[STREAM_EVENTS - 1], "[DONE]");
    for chunk in &data[..STREAM_EVENTS - 2] {
        assert_eq!(
            chunk["usage"],
            Value::Null,
            "usage null before the usage chunk"
        );
        assert_eq!(chunk["model"], UPSTREAM_MODEL);
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }

    // The stream and the completion tell the same answer.
    let streamed: String = data[1..=CONTENT_CHUNKS]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    let completion = json_of(&chat_completion());
    assert_eq!(completion["choices"][0]["message"]["content"], streamed);
    assert_eq!(streamed.split(' ').count(), CONTENT_CHUNKS);
}

#[test]
fn frames_carry_the_events_mostly_one_per_frame() {
    let events = chat_stream_events();
    let frames = chat_stream_frames();
    assert_eq!(frames.len(), STREAM_EVENTS + STREAM_EVENTS / 10);
    assert!(frames.iter().all(|f| !f.is_empty()));
    let joined = |parts: &[Bytes]| -> Vec<u8> { parts.iter().flat_map(|p| p.to_vec()).collect() };
    assert_eq!(joined(&frames), joined(&events));
    // Split events straddle two frames: neither half ends an event.
    assert!(!frames[9].ends_with(b"\n\n"));
    assert!(frames[10].ends_with(b"\n\n"));
}

#[test]
fn frame_body_yields_frames_in_order_then_ends() {
    let frames: Arc<[Bytes]> = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")].into();
    let mut body = FrameBody::new(frames);
    assert_eq!(body.size_hint().exact(), Some(5));
    assert!(!body.is_end_stream());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut got = Vec::new();
    while let std::task::Poll::Ready(Some(frame)) =
        std::pin::Pin::new(&mut body).poll_frame(&mut cx)
    {
        got.push(frame.unwrap().into_data().unwrap());
        if got.len() == 1 {
            assert_eq!(body.size_hint().exact(), Some(3));
        }
    }
    assert_eq!(got, ["ab", "cde"]);
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
}

#[test]
fn event_stream_over_the_frames_yields_every_event() {
    for wants_usage in [true, false] {
        let mut stream = Box::pin(OpenAiEventStream::new(
            FrameBody::new(chat_stream_frames()),
            Operation::ChatCompletions,
            rewrite(wants_usage),
            1 << 20,
        ));
        let d = drain(stream.as_mut()).unwrap();
        assert_eq!(d.events, STREAM_EVENTS);
        assert_eq!(
            d.output,
            CONTENT_CHUNKS + 1,
            "content chunks and the finish chunk"
        );
        assert!(d.done);
        assert!(d.bytes > 30_000, "{} bytes", d.bytes);
    }
}

#[test]
fn event_stream_meters_usage_and_rewrites_chunks() {
    let mut stream = Box::pin(OpenAiEventStream::new(
        FrameBody::new(chat_stream_frames()),
        Operation::ChatCompletions,
        rewrite(false),
        1 << 20,
    ));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut usage = None;
    let mut first = None;
    while let std::task::Poll::Ready(Some(ev)) = stream.as_mut().poll_event(&mut cx) {
        let ev = ev.unwrap();
        first.get_or_insert_with(|| ev.bytes.clone());
        if let Some(u) = ev.usage {
            assert!(
                ev.bytes.is_empty(),
                "usage hidden from a client that did not ask"
            );
            usage = Some(u);
        }
    }
    let usage = usage.unwrap();
    assert_eq!(usage.prompt_tokens, PROMPT_TOKENS);
    assert_eq!(usage.completion_tokens, CONTENT_CHUNKS as u64);
    let cost = pricing().cost(PROMPT_TOKENS, CONTENT_CHUNKS as u64);
    assert!((usage.cost - cost).abs() < 1e-12);
    let first = sse_data(&first.unwrap());
    assert_eq!(first[0]["model"], MODEL);
    assert_eq!(first[0]["provider"], PROVIDER);
}

#[test]
fn completion_rewrites_with_cost() {
    let (body, usage) = rewrite_response(
        Operation::ChatCompletions,
        &chat_completion(),
        &rewrite(false),
    )
    .unwrap();
    let v = json_of(&body);
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["provider"], PROVIDER);
    assert_eq!(v["metadata"]["upstream_model"], UPSTREAM_MODEL);
    let usage = usage.unwrap();
    assert_eq!(usage.completion_tokens, CONTENT_CHUNKS as u64);
    assert!((usage.cost - pricing().cost(PROMPT_TOKENS, CONTENT_CHUNKS as u64)).abs() < 1e-12);
}

#[test]
fn drain_reports_pending_and_errors() {
    struct Pending;
    impl EventSource for Pending {
        fn poll_event(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<switchyard_core::Event, switchyard_core::BoxError>>>
        {
            std::task::Poll::Pending
        }
    }
    assert!(drain(std::pin::pin!(Pending)).is_err());

    // A line over the cap is the stream's error, and drain hands it back.
    let mut tiny = Box::pin(OpenAiEventStream::new(
        FrameBody::new(chat_stream_frames()),
        Operation::ChatCompletions,
        rewrite(true),
        64,
    ));
    assert!(drain(tiny.as_mut()).is_err());
}

#[test]
fn policy_compiles_with_the_bench_key() {
    let store = policy_store().unwrap();
    let snapshot = store.load();
    let model = snapshot.model("chat").unwrap();
    assert_eq!(&*model.id, MODEL);
    let first = &model.endpoints[0];
    assert_eq!(&*first.provider.id, PROVIDER);
    assert_eq!(&*first.upstream_model, UPSTREAM_MODEL);
    assert_eq!(first.pricing, pricing());
    assert_eq!(
        first.provider.api_key.as_ref().map(|k| k.expose()),
        Some(BENCH_KEY)
    );
    assert!(snapshot.model("smart-chat").is_some());
}

#[test]
fn direct_request_picks_the_first_endpoint() {
    let snapshot = policy_store().unwrap().load();
    let req = direct_request(&snapshot, chat_request(false)).unwrap();
    let endpoint = req
        .extensions()
        .get::<Arc<switchyard_policy::Endpoint>>()
        .unwrap();
    assert_eq!(&*endpoint.upstream_model, UPSTREAM_MODEL);
    assert!(
        req.extensions()
            .get::<Arc<switchyard_policy::Snapshot>>()
            .is_some()
    );

    let unknown = Bytes::from_static(br#"{"model":"nope","messages":[]}"#);
    assert!(matches!(
        direct_request(&snapshot, unknown),
        Err(FixtureError::UnknownModel(m)) if m == "nope"
    ));
    assert!(matches!(
        direct_request(&snapshot, Bytes::from_static(b"[1]")),
        Err(FixtureError::Request(RequestError::InvalidBody))
    ));
}

#[tokio::test]
async fn canned_upstream_answers_like_the_real_one() {
    let snapshot = policy_store().unwrap().load();
    let (upstream, sent) = CannedUpstream::recording();

    let resp = upstream
        .clone()
        .oneshot(direct_request(&snapshot, chat_request(false)).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let served = resp.extensions().get::<switchyard_core::Served>().unwrap();
    assert_eq!(&*served.provider, PROVIDER);
    assert!(served.usage.is_some());
    let body = json_of(&collect_body(resp).await.unwrap());
    assert_eq!(body["model"], MODEL);

    let resp = upstream
        .clone()
        .oneshot(direct_request(&snapshot, chat_request(true)).unwrap())
        .await
        .unwrap();
    assert!(resp.body().is_stream());
    let data = sse_data(&collect_body(resp).await.unwrap());
    assert_eq!(data.len(), STREAM_EVENTS - 1, "the usage chunk is hidden");

    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    let up = json_of(&sent[1]);
    assert_eq!(up["model"], UPSTREAM_MODEL);
    assert_eq!(up["stream_options"]["include_usage"], true);

    // Without dispatch there is no endpoint: an error, not a guess.
    let bare = Request::new(Arc::new(
        ParsedRequest::parse(Operation::ChatCompletions, chat_request(false)).unwrap(),
    ));
    let err = upstream.oneshot(bare).await.unwrap_err();
    assert_eq!(Failure::find(&*err).unwrap().get().code(), "internal_error");
}

#[tokio::test]
async fn whole_stack_serves_a_completion_over_the_canned_upstream() {
    let (upstream, sent) = CannedUpstream::recording();
    let svc: switchyard_stack::ProxyService<http_body_util::Full<Bytes>> =
        switchyard_stack::proxy_with(
            policy_store().unwrap(),
            &switchyard_stack::Registries::new(),
            upstream,
        );

    let resp = svc
        .clone()
        .oneshot(proxy_request(chat_request(false)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h[headers::PROVIDER], PROVIDER);
    assert_eq!(h[headers::MODEL], MODEL);
    assert!(h.contains_key(headers::REQUEST_ID));
    let body = json_of(&collect_body(resp).await.unwrap());
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["provider"], PROVIDER);

    let up = json_of(&sent.lock().unwrap()[0]);
    assert_eq!(up["model"], UPSTREAM_MODEL);
    assert!(up.get("provider").is_none() && up.get("models").is_none());
}

#[tokio::test]
async fn whole_stack_streams_over_the_canned_upstream() {
    let svc: switchyard_stack::ProxyService<http_body_util::Full<Bytes>> =
        switchyard_stack::proxy_with(
            policy_store().unwrap(),
            &switchyard_stack::Registries::new(),
            CannedUpstream::new(),
        );
    let resp = svc
        .oneshot(proxy_request(chat_request(true)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[http::header::CONTENT_TYPE],
        "text/event-stream"
    );
    let data = sse_data(&collect_body(resp).await.unwrap());
    assert_eq!(data.len(), STREAM_EVENTS - 1);
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(data[..data.len() - 1].iter().all(|c| c["model"] == MODEL));
}

#[tokio::test]
async fn whole_stack_refuses_an_unknown_model_without_calling_upstream() {
    let (upstream, sent) = CannedUpstream::recording();
    let svc: switchyard_stack::ProxyService<http_body_util::Full<Bytes>> =
        switchyard_stack::proxy_with(
            policy_store().unwrap(),
            &switchyard_stack::Registries::new(),
            upstream,
        );
    let body =
        Bytes::from_static(br#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#);
    let resp = svc.oneshot(proxy_request(body)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn error_response_renders_the_attempt_trail() {
    let resp = error_response(
        InboundApi::OpenAi,
        &ProvidersExhausted::sample(),
        Some("gen-1-abc"),
    );
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()[headers::SHOULD_RETRY], "false");
    assert_eq!(resp.headers()[http::header::RETRY_AFTER], "2");
    let v = json_of(&collect_body(resp).await.unwrap());
    assert_eq!(v["error"]["code"], "providers_exhausted");
    assert_eq!(v["error"]["type"], "upstream_error");
    let attempts = v["error"]["metadata"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[1]["status"], Value::Null);
    assert_eq!(attempts[2]["reason"], "upstream_5xx");
    assert_eq!(v["error"]["metadata"]["request_id"], "gen-1-abc");
}

#[test]
fn missing_endpoint_is_an_internal_error() {
    assert_eq!(MissingEndpoint.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        ProvidersExhausted::sample().to_string(),
        "all 3 attempts failed; the last upstream answered 503"
    );
}

#[test]
fn or_exit_passes_values_through() {
    assert_eq!(or_exit("value", Ok::<_, FixtureError>(7)), 7);
}
