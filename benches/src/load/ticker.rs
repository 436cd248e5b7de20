//! The ticker: an OpenAI-compatible streaming upstream whose every content chunk carries the
//! moment it was handed to the socket (`@<ns since the harness started> `), so the client can
//! measure each chunk's delivery latency through a proxy exactly. The sim cannot stamp its
//! chunks, and inter-chunk gaps alone hide a constant per-chunk cost.
//!
//! It runs in the harness process on its own thread and single-threaded runtime, and shares
//! the harness's clock ([`stamp`]).

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the harness's clock started: the unit of chunk stamps.
pub fn stamp() -> u64 {
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The shape of every streamed answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Content chunks per answer.
    pub chunks: usize,
    /// From the role chunk to the first content chunk.
    pub first_token: Duration,
    /// Between content chunks (on a fixed schedule, so timer lateness does not accumulate).
    pub gap: Duration,
}

/// A running ticker; it stops when dropped.
#[derive(Debug)]
pub struct Ticker {
    addrs: Vec<SocketAddr>,
    _stop: oneshot::Sender<()>,
}

impl Ticker {
    /// Binds `count` listeners on 127.0.0.1 and serves them on a thread of their own.
    pub fn start(count: usize, shape: Shape) -> io::Result<Ticker> {
        let mut listeners = Vec::with_capacity(count);
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let l = StdListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
            l.set_nonblocking(true)?;
            addrs.push(l.local_addr()?);
            listeners.push(l);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("ticker".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for l in listeners {
                        match TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(accept(l, shape));
                            }
                            Err(e) => eprintln!("ticker: listener: {e}"),
                        }
                    }
                    // Stops when the handle is dropped (the sender goes away).
                    let _ = stopped.await;
                });
            })?;
        Ok(Ticker { addrs, _stop: stop })
    }

    /// The listeners' addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

async fn accept(listener: TcpListener, shape: Shape) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, shape));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

type TickBody = Either<Full<Bytes>, StreamBody<TickStream>>;
type TickStream = std::pin::Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

async fn answer(req: Request<Incoming>, shape: Shape) -> Result<Response<TickBody>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = json
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("tick")
        .to_owned();
    let stream = json.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = json
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let answer = Answer {
        id: format!("chatcmpl-tick-{}", stamp()),
        model,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        shape,
        include_usage,
    };
    let mut response = if stream {
        let mut r = Response::new(Either::Right(StreamBody::new(answer.stream())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        r
    } else {
        let mut r = Response::new(Either::Left(Full::new(answer.completion())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    };
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// Prompt tokens the ticker reports; the harness's requests are all about this size.
const PROMPT_TOKENS: u64 = 40;

/// One answer being generated.
#[derive(Clone, Debug)]
pub struct Answer {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub shape: Shape,
    pub include_usage: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Role,
    Content(usize),
    Finish,
    Usage,
    Done,
}

impl Answer {
    fn chunk(&self, choices: &str, usage: &str) -> Bytes {
        Bytes::from(format!(
            "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"choices\":{choices}{usage}}}\n\n",
            self.id,
            self.created,
            Value::String(self.model.clone()),
        ))
    }

    fn event(&self, step: Step) -> Bytes {
        match step {
            Step::Role => self.chunk(
                r#"[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]"#,
                "",
            ),
            Step::Content(_) => self.chunk(
                &format!(
                    r#"[{{"index":0,"delta":{{"content":"@{} "}},"finish_reason":null}}]"#,
                    stamp()
                ),
                "",
            ),
            Step::Finish => self.chunk(r#"[{"index":0,"delta":{},"finish_reason":"stop"}]"#, ""),
            Step::Usage => {
                let completion = self.shape.chunks as u64;
                self.chunk(
                    "[]",
                    &format!(
                        r#","usage":{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":{completion},"total_tokens":{}}}"#,
                        PROMPT_TOKENS + completion
                    ),
                )
            }
            Step::Done => Bytes::from_static(b"data: [DONE]\n\n"),
        }
    }

    fn next(&self, step: Step) -> Option<Step> {
        match step {
            Step::Role if self.shape.chunks > 0 => Some(Step::Content(0)),
            Step::Role => Some(Step::Finish),
            Step::Content(i) if i + 1 < self.shape.chunks => Some(Step::Content(i + 1)),
            Step::Content(_) => Some(Step::Finish),
            Step::Finish if self.include_usage => Some(Step::Usage),
            Step::Finish | Step::Usage => Some(Step::Done),
            Step::Done => None,
        }
    }

    /// The SSE body: content chunk `i` leaves at `start + first_token + i * gap`, stamped
    /// the moment it is handed to hyper.
    pub fn stream(self) -> TickStream {
        let start = tokio::time::Instant::now();
        Box::pin(stream::unfold(Some(Step::Role), move |step| {
            let answer = self.clone();
            async move {
                let step = step?;
                if let Step::Content(i) = step {
                    let offset = answer.shape.first_token
                        + answer
                            .shape
                            .gap
                            .saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
                    tokio::time::sleep_until(start + offset).await;
                }
                let bytes = answer.event(step);
                Some((Ok(Frame::data(bytes)), answer.next(step)))
            }
        }))
    }

    /// A non-streaming completion of the same text (unstamped).
    pub fn completion(&self) -> Bytes {
        let text = "tick ".repeat(self.shape.chunks);
        let completion = self.shape.chunks as u64;
        let body = serde_json::json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion, "total_tokens": PROMPT_TOKENS + completion},
        });
        Bytes::from(body.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use futures_util::StreamExt;

    use super::*;
    use crate::load::sse::{self, Splitter};

    fn answer(chunks: usize, include_usage: bool) -> Answer {
        Answer {
            id: "chatcmpl-tick-1".into(),
            model: "m\"x".into(),
            created: 7,
            shape: Shape {
                chunks,
                first_token: Duration::from_millis(20),
                gap: Duration::from_millis(10),
            },
            include_usage,
        }
    }

    async fn frames(a: Answer) -> Vec<(Bytes, tokio::time::Instant)> {
        let mut s = a.stream();
        let mut out = Vec::new();
        while let Some(Ok(frame)) = s.next().await {
            out.push((frame.into_data().unwrap(), tokio::time::Instant::now()));
        }
        out
    }

    #[tokio::test]
    async fn stream_is_valid_openai_sse_on_schedule() {
        let start = tokio::time::Instant::now();
        let got = frames(answer(3, true)).await;
        // role, 3 content, finish, usage, done
        assert_eq!(got.len(), 7);
        let offsets: Vec<u64> = got
            .iter()
            .map(|(_, at)| at.duration_since(start).as_millis() as u64)
            .collect();
        // Content i leaves at 20 + 10 i ms (never early; late by a busy machine's margin);
        // the rest follows the last one at once.
        let due = [0, 20, 30, 40, 40, 40, 40];
        for (i, (&at, &due)) in offsets.iter().zip(&due).enumerate() {
            assert!(
                at >= due && at < due + 40,
                "frame {i} at {at} ms, due {due}: {offsets:?}"
            );
        }
        let mut texts = Vec::new();
        let mut splitter = Splitter::default();
        for (bytes, _) in &got {
            splitter.push(bytes, |e| {
                let payload = sse::data(e).unwrap();
                if payload != "[DONE]" {
                    let v: Value = serde_json::from_str(&payload).unwrap();
                    assert_eq!(v["model"], "m\"x");
                    assert_eq!(v["object"], "chat.completion.chunk");
                }
                if let Some(t) = sse::content(e) {
                    texts.push(t);
                }
            });
        }
        assert_eq!(texts.len(), 3);
        assert!(texts.iter().all(|t| sse::stamp_of(t).is_some()));
        let usage: Value =
            serde_json::from_str(&sse::data(&got[5].0[..got[5].0.len() - 2]).unwrap()).unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], 3);
        assert_eq!(&got[6].0[..], b"data: [DONE]\n\n");
    }

    #[tokio::test]
    async fn no_usage_chunk_unless_asked_and_empty_answers_finish() {
        let got = frames(answer(2, false)).await;
        assert_eq!(got.len(), 5);
        assert!(
            !got.iter()
                .any(|(b, _)| b.windows(7).any(|w| w == b"\"usage\""))
        );
        let got = frames(answer(0, false)).await;
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn stamps_increase() {
        let a = stamp();
        std::thread::sleep(Duration::from_millis(1));
        assert!(stamp() > a);
    }

    #[tokio::test]
    async fn serves_streams_over_http() {
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;

        let ticker = Ticker::start(
            2,
            Shape {
                chunks: 4,
                first_token: Duration::ZERO,
                gap: Duration::from_millis(2),
            },
        )
        .unwrap();
        assert_eq!(ticker.addrs().len(), 2);
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let req = Request::post(format!("http://{}/v1/chat/completions", ticker.addrs()[1]))
            .body(Full::new(Bytes::from_static(
                br#"{"model":"r","stream":true,"stream_options":{"include_usage":true}}"#,
            )))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let mut stamps = Vec::new();
        Splitter::default().push(&body, |e| {
            if let Some(s) = sse::content(e).as_deref().and_then(sse::stamp_of) {
                stamps.push(s);
            }
        });
        assert_eq!(stamps.len(), 4);
        assert!(stamps.windows(2).all(|w| w[1] > w[0]));
        assert!(body.ends_with(b"data: [DONE]\n\n"));

        let req = Request::post(format!("http://{}/v1/chat/completions", ticker.addrs()[0]))
            .body(Full::new(Bytes::from_static(br#"{"model":"r"}"#)))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "tick tick tick tick "
        );
    }
}
