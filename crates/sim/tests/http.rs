//! The sim over real sockets: wire shapes, faults at the HTTP and TCP level, recording.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use switchyard_sim::{
    Behavior, Outcome, Sim, SimConfig, continuation_text, expected_text, fingerprint, prompt_tokens,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const SECOND: Duration = Duration::from_secs(1);

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Say hello to the simulated world"}
    ]})
}

fn chat_stream(model: &str, include_usage: bool) -> Value {
    let mut body = chat(model);
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

async fn send(
    sim: &Sim,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", sim.addr()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let request = request
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    client().request(request).await.unwrap()
}

async fn post(sim: &Sim, path: &str, body: &Value) -> (StatusCode, HeaderMap, Bytes) {
    let response = send(sim, Method::POST, path, Some(body), &[]).await;
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

async fn post_json(sim: &Sim, path: &str, body: &Value) -> (StatusCode, Value) {
    let (status, _, bytes) = post(sim, path, body).await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Reads a stream frame by frame: each must be exactly one SSE event.
async fn frames(response: Response<Incoming>) -> Result<Vec<String>, (Vec<String>, String)> {
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    out.push(String::from_utf8(data.to_vec()).unwrap());
                }
            }
            Err(err) => return Err((out, err.to_string())),
        }
    }
    Ok(out)
}

fn data(event: &str) -> Value {
    assert!(
        event.starts_with("data: ") && event.ends_with("\n\n"),
        "{event:?}"
    );
    assert_eq!(
        event.matches("data: ").count(),
        1,
        "one event per frame: {event:?}"
    );
    serde_json::from_str(event.trim_start_matches("data: ").trim_end()).unwrap()
}

async fn stream(sim: &Sim, body: &Value) -> Vec<String> {
    let response = send(sim, Method::POST, "/v1/chat/completions", Some(body), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    frames(response).await.unwrap()
}

/// Writes a raw HTTP/1.1 request and returns the socket.
async fn raw(sim: &Sim, body: &Value) -> TcpStream {
    let mut tcp = TcpStream::connect(sim.addr()).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

async fn until(mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + 2 * SECOND;
    while !check() {
        assert!(Instant::now() < deadline, "condition not reached within 2s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn chat_completion_has_every_openai_field() {
    let sim = Sim::start(SimConfig::named("alpha")).await.unwrap();
    let body = chat("gpt-x");
    let (status, headers, bytes) = post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-request-id"], "req_sim_1");
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["id"], "chatcmpl-alpha-1");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-x");
    assert_eq!(v["system_fingerprint"], "fp_sim");
    let choice = &v["choices"][0];
    assert_eq!(v["choices"].as_array().unwrap().len(), 1);
    assert_eq!(choice["index"], 0);
    assert_eq!(
        choice["message"],
        json!({"role": "assistant", "content": expected_text("alpha", &Behavior::ok()), "refusal": null})
    );
    assert!(choice.as_object().unwrap().contains_key("logprobs"));
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(choice["finish_reason"], "stop");
    // ceil(8/4)+3 + ceil(32/4)+3
    assert_eq!(prompt_tokens(&body), 16);
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 16, "completion_tokens": 8, "total_tokens": 24})
    );
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("alpha says hello ")
    );

    let calls = sim.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!((call.seq, call.method.as_str()), (1, "POST"));
    assert_eq!(call.path, "/v1/chat/completions");
    assert_eq!(call.model.as_deref(), Some("gpt-x"));
    assert!(!call.stream);
    assert_eq!(call.body, body);
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(
        sim.wait_outcome(1, SECOND).await,
        Some(Outcome::Completed { chunks: 8 })
    );
}

#[tokio::test]
async fn chat_stream_with_include_usage() {
    let sim = Sim::start(SimConfig::named("alpha").default_behavior(Behavior::ok().chunks(3)))
        .await
        .unwrap();
    let events = stream(&sim, &chat_stream("m", true)).await;
    assert_eq!(events.len(), 1 + 3 + 1 + 1 + 1, "{events:#?}");
    assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| data(e)).collect();
    for chunk in &chunks {
        assert_eq!(chunk["id"], "chatcmpl-alpha-1");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "m");
        assert_eq!(chunk["system_fingerprint"], "fp_sim");
        assert!(chunk["created"].as_u64().unwrap() > 0);
        assert!(chunk.as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let mut text = String::new();
    for chunk in &chunks[1..4] {
        let choice = &chunk["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["finish_reason"], Value::Null);
        assert_eq!(choice["logprobs"], Value::Null);
        assert_eq!(chunk["usage"], Value::Null);
        text.push_str(choice["delta"]["content"].as_str().unwrap());
    }
    assert_eq!(text, expected_text("alpha", &Behavior::ok().chunks(3)));
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["usage"], Value::Null);
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        chunks[5]["usage"],
        json!({"prompt_tokens": 16, "completion_tokens": 3, "total_tokens": 19})
    );
    let call = &sim.calls()[0];
    assert!(call.stream);
    assert_eq!(
        sim.wait_outcome(call.seq, SECOND).await,
        Some(Outcome::Completed { chunks: 3 })
    );
}

#[tokio::test]
async fn chat_stream_without_include_usage_has_no_usage_field() {
    let sim = Sim::start(SimConfig::named("b")).await.unwrap();
    let events = stream(&sim, &chat_stream("m", false)).await;
    assert_eq!(events.len(), 1 + 8 + 1 + 1);
    for event in &events[..events.len() - 1] {
        assert!(
            !data(event).as_object().unwrap().contains_key("usage"),
            "{event}"
        );
    }
    // include_usage honoured, omit_usage wins over it
    sim.set_config(SimConfig::named("b").default_behavior(Behavior::ok().omit_usage()));
    let events = stream(&sim, &chat_stream("m", true)).await;
    assert_eq!(events.len(), 1 + 8 + 1 + 1);
    assert!(events.iter().all(|e| !e.contains("\"usage\"")));
    let (_, v) = post_json(&sim, "/v1/chat/completions", &chat("m")).await;
    assert!(v.get("usage").is_none());
}

#[tokio::test]
async fn text_completions_stream_and_not() {
    let sim = Sim::start(SimConfig::named("c").default_behavior(Behavior::ok().text("one two")))
        .await
        .unwrap();
    let body = json!({"model": "davinci", "prompt": "123456789"});
    let (status, v) = post_json(&sim, "/v1/completions", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["id"], "cmpl-c-1");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "davinci");
    assert_eq!(
        v["choices"],
        json!([{"text": "one two", "index": 0, "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    );

    let mut body = body;
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = send(&sim, Method::POST, "/v1/completions", Some(&body), &[]).await;
    let events = frames(response).await.unwrap();
    assert_eq!(events.len(), 2 + 1 + 1 + 1);
    let first = data(&events[0]);
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "one ");
    assert_eq!(first["usage"], Value::Null);
    assert_eq!(data(&events[1])["choices"][0]["text"], "two");
    assert_eq!(data(&events[2])["choices"][0]["finish_reason"], "stop");
    assert_eq!(data(&events[3])["usage"]["completion_tokens"], 2);
    assert_eq!(events[4], "data: [DONE]\n\n");
}

#[tokio::test]
async fn embeddings_floats_base64_and_usage() {
    let sim = Sim::start(SimConfig::named("e")).await.unwrap();
    let body = json!({"model": "emb", "input": ["abcd", "abcde"]});
    let (status, v) = post_json(&sim, "/v1/embeddings", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "emb");
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    let floats: Vec<f32> = serde_json::from_value(data[0]["embedding"].clone()).unwrap();
    assert_eq!(floats.len(), 8);

    let (_, again) = post_json(
        &sim,
        "/v1/embeddings",
        &json!({"model": "emb", "input": "abcd"}),
    )
    .await;
    assert_eq!(
        again["data"][0]["embedding"], data[0]["embedding"],
        "deterministic"
    );

    let b64 = json!({"model": "emb", "input": "abcd", "encoding_format": "base64"});
    let (_, v) = post_json(&sim, "/v1/embeddings", &b64).await;
    let encoded = v["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(encoded.len(), 44, "8 f32 = 32 bytes = 44 base64 chars");
    assert_eq!(
        sim.wait_outcome(1, SECOND).await,
        Some(Outcome::Completed { chunks: 0 })
    );
}

#[tokio::test]
async fn models_lists_configured_names() {
    let sim = Sim::start(
        SimConfig::named("prov")
            .model("zeta", Behavior::ok())
            .model("alpha", Behavior::ok()),
    )
    .await
    .unwrap();
    let response = send(&sim, Method::GET, "/v1/models", None, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let v: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "zeta"]);
    assert_eq!(v["data"][0]["owned_by"], "prov");
    assert_eq!(v["data"][0]["object"], "model");
}

#[tokio::test]
async fn unknown_paths_bad_json_and_missing_model_are_openai_errors() {
    let sim = Sim::start(SimConfig::named("x")).await.unwrap();
    let (status, v) = post_json(&sim, "/v1/nothing", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["message"], "Invalid URL (POST /v1/nothing)");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"].as_object().unwrap().contains_key("param"));
    assert!(v["error"].as_object().unwrap().contains_key("code"));

    let response = send(&sim, Method::GET, "/v1/chat/completions", None, &[]).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    let mut request = Request::post(format!("http://{}/v1/chat/completions", sim.addr()))
        .body(Full::new(Bytes::from_static(b"{not json")))
        .unwrap();
    request
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let v: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("parse the JSON body")
    );

    let (status, _) = post_json(&sim, "/v1/chat/completions", &json!({"messages": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let calls = sim.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[2].body, Value::Null);
    let outcomes: Vec<_> = calls.iter().map(|c| c.outcome.clone().unwrap()).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Error { status: 404 },
            Outcome::Error { status: 405 },
            Outcome::Error { status: 400 },
            Outcome::Error { status: 400 },
        ]
    );
}

#[tokio::test]
async fn status_fault_with_retry_after_and_custom_error() {
    let sim = Sim::start(
        SimConfig::named("f")
            .model("limited", Behavior::ok().status(429).retry_after("7"))
            .model(
                "long",
                Behavior::ok()
                    .status(400)
                    .error_code("context_length_exceeded")
                    .error_message("This model's maximum context length is 8 tokens."),
            ),
    )
    .await
    .unwrap();
    let (status, headers, bytes) =
        post(&sim, "/v1/chat/completions", &chat_stream("limited", true)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(headers["content-type"], "application/json");
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "requests");

    let (status, headers, bytes) = post(&sim, "/v1/chat/completions", &chat("long")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(headers.get("retry-after").is_none());
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "This model's maximum context length is 8 tokens.",
            "type": "invalid_request_error", "param": null, "code": "context_length_exceeded"}})
    );
    assert_eq!(sim.calls()[0].outcome, Some(Outcome::Error { status: 429 }));
    assert_eq!(sim.calls()[1].outcome, Some(Outcome::Error { status: 400 }));
}

#[tokio::test]
async fn headers_delay_holds_the_response_head() {
    let delay = Duration::from_millis(200);
    let sim =
        Sim::start(SimConfig::named("d").default_behavior(Behavior::ok().headers_delay(delay)))
            .await
            .unwrap();
    let start = Instant::now();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat("m")),
        &[],
    )
    .await;
    assert!(start.elapsed() >= delay, "{:?}", start.elapsed());
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn first_token_and_chunk_delays_pace_the_stream() {
    let b = Behavior::ok()
        .chunks(3)
        .first_token_delay(Duration::from_millis(300))
        .chunk_delay(Duration::from_millis(100));
    let sim = Sim::start(SimConfig::named("d").default_behavior(b))
        .await
        .unwrap();
    let start = Instant::now();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat_stream("m", false)),
        &[],
    )
    .await;
    let mut body = response.into_body();
    let role = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&role).contains("\"role\":\"assistant\""));
    assert!(
        start.elapsed() < Duration::from_millis(150),
        "role chunk comes with the headers"
    );
    body.frame().await.unwrap().unwrap();
    let first = start.elapsed();
    assert!(first >= Duration::from_millis(300), "{first:?}");
    body.frame().await.unwrap().unwrap();
    assert!(start.elapsed() >= first + Duration::from_millis(100));
}

#[tokio::test]
async fn cut_after_aborts_mid_stream() {
    let sim = Sim::start(SimConfig::named("c").default_behavior(Behavior::ok().cut_after(2)))
        .await
        .unwrap();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat_stream("m", false)),
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (events, _err) = frames(response).await.unwrap_err();
    assert_eq!(events.len(), 3, "role + 2 content chunks: {events:?}");
    assert_eq!(
        sim.wait_outcome(1, SECOND).await,
        Some(Outcome::Cut { chunks: 2 })
    );

    // At the TCP level: the chunked body never gets its terminating zero-size chunk.
    let mut tcp = raw(&sim, &chat_stream("m", false)).await;
    let mut received = Vec::new();
    timeout(2 * SECOND, tcp.read_to_end(&mut received))
        .await
        .unwrap()
        .ok();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn cut_non_stream_sends_half_the_announced_body() {
    let sim = Sim::start(SimConfig::named("c").default_behavior(Behavior::ok().cut_after(0)))
        .await
        .unwrap();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat("m")),
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let announced: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(announced > 100);
    assert!(response.into_body().collect().await.is_err());
    assert_eq!(
        sim.wait_outcome(1, SECOND).await,
        Some(Outcome::Cut { chunks: 0 })
    );
}

#[tokio::test]
async fn stall_after_goes_silent_until_the_client_leaves() {
    let sim = Sim::start(SimConfig::named("s").default_behavior(Behavior::ok().stall_after(2)))
        .await
        .unwrap();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat_stream("m", false)),
        &[],
    )
    .await;
    let mut body = response.into_body();
    for _ in 0..3 {
        body.frame().await.unwrap().unwrap();
    }
    assert!(
        timeout(Duration::from_millis(300), body.frame())
            .await
            .is_err(),
        "must stay silent"
    );
    assert_eq!(sim.calls()[0].outcome, None);
    assert_eq!(sim.open_connections(), 1);
    drop(body);
    let outcome = sim.wait_outcome(1, SECOND).await;
    assert!(
        matches!(outcome, Some(Outcome::ClientGone { chunks: 2, at_ms }) if at_ms >= 300),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn malformed_at_breaks_one_chunk_and_goes_on() {
    let sim = Sim::start(
        SimConfig::named("m").default_behavior(Behavior::ok().chunks(3).malformed_at(2)),
    )
    .await
    .unwrap();
    let events = stream(&sim, &chat_stream("m", false)).await;
    assert_eq!(events.len(), 6);
    assert_eq!(events[2], "data: {\"choices\":[{\"delta\":\n\n");
    assert!(serde_json::from_str::<Value>(events[2].trim_start_matches("data: ")).is_err());
    assert_eq!(data(&events[3])["choices"][0]["delta"]["content"], "hello ");
    assert_eq!(events[5], "data: [DONE]\n\n");
    assert_eq!(
        sim.wait_outcome(1, SECOND).await,
        Some(Outcome::Completed { chunks: 3 })
    );

    let (status, _, bytes) = post(&sim, "/v1/chat/completions", &chat("m")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
}

#[tokio::test]
async fn omit_done_ends_the_body_cleanly() {
    let sim =
        Sim::start(SimConfig::named("o").default_behavior(Behavior::ok().chunks(2).omit_done()))
            .await
            .unwrap();
    let events = stream(&sim, &chat_stream("m", true)).await;
    assert_eq!(events.len(), 1 + 2 + 1 + 1);
    assert!(events.iter().all(|e| !e.contains("[DONE]")));
    assert_eq!(data(events.last().unwrap())["choices"], json!([]));
}

#[tokio::test]
async fn empty_answers_have_no_content() {
    let sim =
        Sim::start(SimConfig::named("e").default_behavior(Behavior::ok().empty().tool_call()))
            .await
            .unwrap();
    let mut body = chat("m");
    body["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let (_, v) = post_json(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 0);

    body["stream"] = json!(true);
    let events = stream(&sim, &body).await;
    assert_eq!(events.len(), 3, "role, finish, done: {events:?}");
    assert_eq!(data(&events[1])["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn tool_call_answers() {
    let b = Behavior::ok().chunks(2).tool_call();
    let sim = Sim::start(SimConfig::named("t").default_behavior(b.clone()))
        .await
        .unwrap();
    let mut body = chat("m");
    body["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let (_, v) = post_json(&sim, "/v1/chat/completions", &body).await;
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["id"], "call_t_1");
    assert_eq!(message["tool_calls"][0]["type"], "function");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    let args = message["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    assert_eq!(args, expected_text("t", &b));
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"text": "t says "})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    body["stream"] = json!(true);
    let events = stream(&sim, &body).await;
    let mut streamed = String::new();
    for event in &events[1..3] {
        let call = &data(event)["choices"][0]["delta"]["tool_calls"][0];
        streamed.push_str(call["function"]["arguments"].as_str().unwrap());
    }
    assert_eq!(streamed, args);
    assert_eq!(
        data(&events[1])["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        data(&events[3])["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn reset_closes_with_rst_before_any_byte() {
    let sim = Sim::start(SimConfig::named("r").default_behavior(Behavior::ok().reset()))
        .await
        .unwrap();
    let mut tcp = raw(&sim, &chat("m")).await;
    let mut buf = [0u8; 64];
    let read = timeout(2 * SECOND, tcp.read(&mut buf)).await.unwrap();
    match read {
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset),
        Ok(n) => panic!("expected a reset, read {n} bytes: {:?}", &buf[..n]),
    }
    assert_eq!(sim.wait_outcome(1, SECOND).await, Some(Outcome::Reset));
    assert_eq!(
        sim.calls()[0].model.as_deref(),
        Some("m"),
        "the request was read"
    );

    let request = Request::post(format!("http://{}/v1/chat/completions", sim.addr()))
        .body(Full::new(Bytes::from(chat("m").to_string())))
        .unwrap();
    assert!(client().request(request).await.is_err());
    until(|| sim.open_connections() == 0).await;
}

#[tokio::test]
async fn never_answer_keeps_silent_until_the_client_leaves() {
    let sim = Sim::start(SimConfig::named("n").default_behavior(Behavior::ok().never_answer()))
        .await
        .unwrap();
    let mut tcp = raw(&sim, &chat("m")).await;
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(300), tcp.read(&mut buf))
            .await
            .is_err()
    );
    until(|| sim.call_count() == 1).await;
    assert_eq!(sim.calls()[0].outcome, None);
    assert_eq!(sim.open_connections(), 1);
    drop(tcp);
    let outcome = sim.wait_outcome(1, SECOND).await;
    assert!(
        matches!(outcome, Some(Outcome::ClientGone { chunks: 0, .. })),
        "{outcome:?}"
    );
    until(|| sim.open_connections() == 0).await;
}

#[tokio::test]
async fn client_gone_mid_stream_is_recorded_promptly() {
    let sim = Sim::start(
        SimConfig::named("g").default_behavior(
            Behavior::ok()
                .chunks(50)
                .chunk_delay(Duration::from_millis(50)),
        ),
    )
    .await
    .unwrap();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat_stream("m", false)),
        &[],
    )
    .await;
    let mut body = response.into_body();
    for _ in 0..3 {
        body.frame().await.unwrap().unwrap();
    }
    let left = Instant::now();
    drop(body);
    let outcome = sim.wait_outcome(1, SECOND).await;
    assert!(left.elapsed() < SECOND);
    match outcome {
        Some(Outcome::ClientGone { chunks, at_ms }) => {
            assert!((2..=4).contains(&chunks), "{chunks}");
            assert!(at_ms >= 50, "{at_ms}");
        }
        other => panic!("{other:?}"),
    }
    until(|| sim.open_connections() == 0).await;
}

#[tokio::test]
async fn fail_every_fails_only_every_nth() {
    let sim = Sim::start(
        SimConfig::named("f").default_behavior(Behavior::ok().status(500).fail_every(2)),
    )
    .await
    .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post(&sim, "/v1/chat/completions", &chat("m"))
                .await
                .0
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 500, 200, 500]);
}

#[tokio::test]
async fn sequence_then_model_then_default() {
    let sim = Sim::start(
        SimConfig::named("p")
            .model("special", Behavior::ok().status(503))
            .default_behavior(Behavior::ok().status(502))
            .then(Behavior::ok().status(429)),
    )
    .await
    .unwrap();
    sim.push_sequence(Behavior::ok());
    // GET /v1/models does not consume the sequence
    assert_eq!(
        send(&sim, Method::GET, "/v1/models", None, &[])
            .await
            .status(),
        StatusCode::OK
    );
    let mut statuses = Vec::new();
    for model in ["special", "special", "special", "other"] {
        statuses.push(
            post(&sim, "/v1/chat/completions", &chat(model))
                .await
                .0
                .as_u16(),
        );
    }
    assert_eq!(statuses, [429, 200, 503, 502]);
}

#[tokio::test]
async fn api_key_is_enforced_and_fingerprinted() {
    let sim = Sim::start(SimConfig::named("k").api_key("sk-right"))
        .await
        .unwrap();
    let body = chat("m");
    let path = "/v1/chat/completions";
    let missing = send(&sim, Method::POST, path, Some(&body), &[]).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let v: Value =
        serde_json::from_slice(&missing.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let wrong = send(
        &sim,
        Method::POST,
        path,
        Some(&body),
        &[("authorization", "Bearer sk-wrong")],
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    for header in [
        ("authorization", "Bearer sk-right"),
        ("x-api-key", "sk-right"),
        ("api-key", "sk-right"),
    ] {
        let ok = send(&sim, Method::POST, path, Some(&body), &[header]).await;
        assert_eq!(ok.status(), StatusCode::OK, "{header:?}");
    }
    let calls = sim.calls();
    assert_eq!(calls.len(), 5);
    assert_eq!(
        calls[1].header("authorization"),
        Some(fingerprint("Bearer sk-wrong").as_str())
    );
    assert_eq!(
        calls[2].header("authorization"),
        Some(fingerprint("Bearer sk-right").as_str())
    );
    assert_eq!(
        calls[3].header("x-api-key"),
        Some(fingerprint("sk-right").as_str())
    );
    assert_eq!(
        calls[4].header("api-key"),
        Some(fingerprint("sk-right").as_str())
    );
    let recorded = serde_json::to_string(&calls).unwrap();
    assert!(!recorded.contains("sk-right") && !recorded.contains("sk-wrong"));
    assert_eq!(calls[0].outcome, Some(Outcome::Error { status: 401 }));
}

#[tokio::test]
async fn control_endpoints_drive_the_sim_and_are_not_recorded() {
    let sim = Sim::start(SimConfig::named("ctl")).await.unwrap();
    let config = json!({"name": "remote", "models": {"m": {"status": 503}}});
    let (status, v) = post_json(&sim, "/_sim/config", &config).await;
    assert_eq!((status, v), (StatusCode::OK, json!({"ok": true})));
    let sequence = json!([{"status": 418}, {"headers_delay": "1ms"}]);
    assert_eq!(
        post(&sim, "/_sim/sequence", &sequence).await.0,
        StatusCode::OK
    );
    let (bad, v) = post_json(&sim, "/_sim/sequence", &json!([{"bogus": 1}])).await;
    assert_eq!(bad, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("bogus"));

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            post(&sim, "/v1/chat/completions", &chat("m"))
                .await
                .0
                .as_u16(),
        );
    }
    assert_eq!(statuses, [418, 200, 503]);
    let (_, v) = post_json(&sim, "/v1/chat/completions", &chat("x")).await;
    assert_eq!(v["id"], "chatcmpl-remote-4", "the new name is used");

    let response = send(&sim, Method::GET, "/_sim/calls", None, &[]).await;
    let calls: Vec<switchyard_sim::Call> =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls, sim.calls());
    assert!(calls.iter().all(|c| !c.path.starts_with("/_sim")));
    assert_eq!(calls[0].outcome, Some(Outcome::Error { status: 418 }));

    assert_eq!(
        post(&sim, "/_sim/reset", &json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(sim.call_count(), 0);
    post(&sim, "/v1/chat/completions", &chat("x")).await;
    assert_eq!(sim.calls()[0].seq, 5, "seq keeps counting after a reset");
    sim.clear_calls();
    assert_eq!(sim.call_count(), 0);
}

#[tokio::test]
async fn open_connections_counts_tcp_connections() {
    let sim = Sim::start(SimConfig::named("o")).await.unwrap();
    assert_eq!(sim.open_connections(), 0);
    let a = TcpStream::connect(sim.addr()).await.unwrap();
    let b = TcpStream::connect(sim.addr()).await.unwrap();
    until(|| sim.open_connections() == 2).await;
    drop(a);
    until(|| sim.open_connections() == 1).await;
    drop(b);
    until(|| sim.open_connections() == 0).await;
}

#[tokio::test]
async fn h2c_and_azure_paths_work() {
    let sim = Sim::start(SimConfig::named("h2")).await.unwrap();
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(format!(
        "http://{}/openai/deployments/dep1/chat/completions?api-version=2024-10-21",
        sim.addr()
    ))
    .body(Full::new(Bytes::from(
        json!({"messages": [], "stream": true}).to_string(),
    )))
    .unwrap();
    let response = h2.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let events = frames(response).await.unwrap();
    assert_eq!(events.len(), 1 + 8 + 1 + 1);
    assert_eq!(data(&events[0])["model"], "dep1");
    assert_eq!(sim.calls()[0].model.as_deref(), Some("dep1"));
}

#[tokio::test]
async fn shutdown_closes_the_listener() {
    let sim = Sim::start(SimConfig::named("s")).await.unwrap();
    let addr = sim.addr();
    assert_eq!(sim.base_url(), format!("http://{addr}/v1"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    post(&sim, "/v1/chat/completions", &chat("m")).await;
    sim.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());

    let sim = Sim::start(SimConfig::named("d")).await.unwrap();
    let addr = sim.addr();
    drop(sim);
    let deadline = Instant::now() + 2 * SECOND;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "listener still open after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn start_on_a_given_address() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let sim = Sim::start_on(addr, SimConfig::named("fixed"))
        .await
        .unwrap();
    assert_eq!(sim.addr(), addr);
    assert!(
        Sim::start_on(addr, SimConfig::default()).await.is_err(),
        "port taken"
    );
}

#[tokio::test(start_paused = true)]
async fn delays_follow_the_tokio_clock() {
    let b = Behavior::ok()
        .chunks(3)
        .headers_delay(Duration::from_secs(60))
        .chunk_delay(Duration::from_secs(30));
    let sim = Sim::start(SimConfig::named("p").default_behavior(b))
        .await
        .unwrap();
    let wall = std::time::Instant::now();
    let start = Instant::now();
    let events = stream(&sim, &chat_stream("m", false)).await;
    assert_eq!(events.len(), 6);
    assert!(
        start.elapsed() >= Duration::from_secs(120),
        "{:?}",
        start.elapsed()
    );
    assert!(wall.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn h2_client_gone_mid_stream_is_recorded_promptly() {
    let sim = Sim::start(
        SimConfig::named("g2").default_behavior(
            Behavior::ok()
                .chunks(50)
                .chunk_delay(Duration::from_millis(50)),
        ),
    )
    .await
    .unwrap();
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(format!("http://{}/v1/chat/completions", sim.addr()))
        .body(Full::new(Bytes::from(chat_stream("m", false).to_string())))
        .unwrap();
    let mut body = h2.request(request).await.unwrap().into_body();
    for _ in 0..3 {
        body.frame().await.unwrap().unwrap();
    }
    drop(body);
    let outcome = sim.wait_outcome(1, SECOND).await;
    assert!(
        matches!(outcome, Some(Outcome::ClientGone { chunks: 2..=4, .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn shutdown_does_not_wait_forever_for_a_stalled_stream() {
    let sim = Sim::start(SimConfig::named("s").default_behavior(Behavior::ok().stall_after(1)))
        .await
        .unwrap();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat_stream("m", false)),
        &[],
    )
    .await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    let start = Instant::now();
    timeout(3 * SECOND, sim.shutdown())
        .await
        .expect("shutdown is bounded");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "in-flight streams get a grace period"
    );
    let rest = timeout(SECOND, body.frame())
        .await
        .expect("the connection is closed");
    assert!(!matches!(rest, Some(Ok(_))), "{rest:?}");
}

/// A chat request continuing an answer that already reads `prefill`.
fn prefilled(model: &str, prefill: &str, stream: bool) -> Value {
    let mut body = chat(model);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": prefill}));
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// The content of a chat stream's content chunks, and its reported completion tokens.
fn streamed_content(events: &[String]) -> (Vec<String>, Option<u64>) {
    let mut pieces = Vec::new();
    let mut completion = None;
    for event in events.iter().filter(|e| !e.contains("[DONE]")) {
        let chunk = data(event);
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str()
            && !text.is_empty()
        {
            pieces.push(text.to_owned());
        }
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            completion = Some(n);
        }
    }
    (pieces, completion)
}

#[tokio::test]
async fn prefill_continues_the_answer() {
    let sim = Sim::start(SimConfig::named("alpha")).await.unwrap();
    let full = expected_text("alpha", &Behavior::ok());
    assert_eq!(full, "alpha says hello from a simulated provider with ");

    // Mid-word prefill, whole body: only the rest, counted in chunks.
    let (status, v) = post_json(
        &sim,
        "/v1/chat/completions",
        &prefilled("m", "alpha says hel", false),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rest = "lo from a simulated provider with ";
    assert_eq!(v["choices"][0]["message"]["content"], rest);
    assert_eq!(
        continuation_text("alpha", &Behavior::ok(), "alpha says hel"),
        rest
    );
    assert_eq!(v["usage"]["completion_tokens"], 6);
    assert_eq!(
        v["usage"]["prompt_tokens"],
        prompt_tokens(&prefilled("m", "alpha says hel", false))
    );

    // Streamed: the same rest, the first chunk a partial word.
    let events = stream(&sim, &prefilled("m", "alpha says hel", true)).await;
    let (pieces, completion) = streamed_content(&events);
    assert_eq!(
        pieces,
        ["lo ", "from ", "a ", "simulated ", "provider ", "with "]
    );
    assert_eq!(completion, Some(6));
    assert_eq!(
        sim.wait_outcome(2, SECOND).await,
        Some(Outcome::Completed { chunks: 6 })
    );

    // On a chunk boundary.
    let events = stream(&sim, &prefilled("m", "alpha says hello ", true)).await;
    assert_eq!(streamed_content(&events).0[0], "from ");

    // Not a prefix: the normal answer.
    let (_, v) = post_json(&sim, "/v1/chat/completions", &prefilled("m", "beta", false)).await;
    assert_eq!(v["choices"][0]["message"]["content"], full);
    assert_eq!(v["usage"]["completion_tokens"], 8);

    // The whole answer already: nothing is left to say.
    let (_, v) = post_json(&sim, "/v1/chat/completions", &prefilled("m", &full, false)).await;
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert_eq!(v["usage"]["completion_tokens"], 0);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn faults_apply_to_continuations() {
    // A stream cut after 3 chunks, continued on the same sim, cut again, then finished.
    let sim = Sim::start(
        SimConfig::named("alpha")
            .then(Behavior::ok().cut_after(3))
            .then(Behavior::ok().cut_after(2)),
    )
    .await
    .unwrap();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat_stream("m", true)),
        &[],
    )
    .await;
    let (events, _) = frames(response).await.unwrap_err();
    let (first, _) = streamed_content(&events);
    assert_eq!(first.concat(), "alpha says hello ");

    let so_far = first.concat();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&prefilled("m", &so_far, true)),
        &[],
    )
    .await;
    let (events, _) = frames(response).await.unwrap_err();
    let (second, _) = streamed_content(&events);
    assert_eq!(second, ["from ", "a "]);
    assert_eq!(
        sim.wait_outcome(2, SECOND).await,
        Some(Outcome::Cut { chunks: 2 })
    );

    let so_far = format!("{so_far}{}", second.concat());
    let events = stream(&sim, &prefilled("m", &so_far, true)).await;
    let (third, completion) = streamed_content(&events);
    assert_eq!(
        format!("{so_far}{}", third.concat()),
        expected_text("alpha", &Behavior::ok())
    );
    assert_eq!(completion, Some(3));
    assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
}

#[tokio::test]
async fn reject_prefill_answers_400() {
    let sim = Sim::start(SimConfig::named("r").default_behavior(Behavior::ok().reject_prefill()))
        .await
        .unwrap();
    for stream in [false, true] {
        let (status, headers, bytes) = post(
            &sim,
            "/v1/chat/completions",
            &prefilled("m", "alpha", stream),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers["content-type"], "application/json");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["message"], "assistant prefill is not supported");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_request_error");
    }
    // Non-string content is an assistant message too.
    let mut body = chat("m");
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": [{"type": "text", "text": "x"}]}));
    assert_eq!(
        post(&sim, "/v1/chat/completions", &body).await.0,
        StatusCode::BAD_REQUEST
    );
    // An assistant message earlier in the conversation is not a prefill.
    let mut body = chat("m");
    let messages = body["messages"].as_array_mut().unwrap();
    messages.insert(1, json!({"role": "assistant", "content": "earlier"}));
    let (status, v) = post_json(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["choices"][0]["message"]["content"],
        expected_text("r", &Behavior::ok())
    );
    // Text completions have no messages to reject.
    let (status, _) = post_json(
        &sim,
        "/v1/completions",
        &json!({"model": "m", "prompt": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let outcomes: Vec<_> = sim.calls().into_iter().map(|c| c.outcome).collect();
    assert_eq!(outcomes[0], Some(Outcome::Error { status: 400 }));
    assert_eq!(outcomes[1], Some(Outcome::Error { status: 400 }));
}

#[tokio::test]
async fn first_token_delay_delays_a_whole_body() {
    let b = Behavior::ok()
        .headers_delay(Duration::from_millis(150))
        .first_token_delay(Duration::from_millis(200));
    let sim = Sim::start(SimConfig::named("d").default_behavior(b))
        .await
        .unwrap();
    let start = Instant::now();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat("m")),
        &[],
    )
    .await;
    // Nothing of a whole-body answer comes before its first token would have.
    assert!(
        start.elapsed() >= Duration::from_millis(350),
        "{:?}",
        start.elapsed()
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 8);
}

#[tokio::test(start_paused = true)]
async fn whole_body_delays_follow_the_tokio_clock() {
    let b = Behavior::ok()
        .headers_delay(Duration::from_secs(60))
        .first_token_delay(Duration::from_secs(30));
    let sim = Sim::start(SimConfig::named("p").default_behavior(b))
        .await
        .unwrap();
    let wall = std::time::Instant::now();
    let start = Instant::now();
    let (status, v) = post_json(&sim, "/v1/chat/completions", &chat("m")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["object"], "chat.completion");
    assert!(
        start.elapsed() >= Duration::from_secs(90),
        "{:?}",
        start.elapsed()
    );
    assert!(wall.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn stall_after_whole_body_sends_headers_only() {
    let sim = Sim::start(SimConfig::named("s").default_behavior(Behavior::ok().stall_after(0)))
        .await
        .unwrap();
    let response = send(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat("m")),
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let announced: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(announced > 100);
    let mut body = response.into_body();
    assert!(
        timeout(Duration::from_millis(300), body.frame())
            .await
            .is_err(),
        "the body never comes"
    );
    assert_eq!(sim.calls()[0].outcome, None);
    drop(body);
    let outcome = sim.wait_outcome(1, SECOND).await;
    assert!(
        matches!(outcome, Some(Outcome::ClientGone { chunks: 0, .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn never_answer_a_stream_sends_no_headers() {
    let sim = Sim::start(SimConfig::named("n").default_behavior(Behavior::ok().never_answer()))
        .await
        .unwrap();
    let mut tcp = raw(&sim, &chat_stream("m", true)).await;
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(300), tcp.read(&mut buf))
            .await
            .is_err(),
        "not even a status line"
    );
    until(|| sim.call_count() == 1).await;
    assert!(sim.calls()[0].stream);
    drop(tcp);
    let outcome = sim.wait_outcome(1, SECOND).await;
    assert!(
        matches!(outcome, Some(Outcome::ClientGone { chunks: 0, .. })),
        "{outcome:?}"
    );
}
