//! The OpenAI streaming adapter: upstream SSE bytes in, caller-ready [`Event`]s out.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Body;
use pin_project_lite::pin_project;
use serde_json::value::RawValue;
use switchyard_core::{BoxError, Event, EventKind, EventSource, Failure};

use crate::error::WireError;
use crate::json::{self, ObjectWriter};
use crate::openai::aggregate::{AggregateSink, ChoiceChunk, Chunk};
use crate::openai::response::{Shape, malformed, rewrite_object, write_usage};
use crate::sse::{SseDecoder, SseError, SseEvent};
use crate::{Operation, Rewrite};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Reading,
    /// The upstream body ended; the decoder is being flushed.
    Flushing,
    /// `[DONE]` was yielded; the body's end is read if it is already there.
    AfterDone,
    Done,
}

pin_project! {
    /// Reads an OpenAI SSE response body and yields one [`Event`] per SSE event, re-framed
    /// as `data: <json>\n\n` with the model, provider and usage cost rewritten and each
    /// event classified ([`EventKind`]).
    ///
    /// The upstream body is polled only when an event is asked for, so a slow client slows
    /// the upstream read. Ends after `[DONE]`, at upstream EOF (with or without `[DONE]`),
    /// or after yielding an error: the upstream body's own (passed on as it is), or a
    /// [`WireError`] as a [`Failure`] for a chunk that is not JSON or a line over the cap,
    /// so the fallback executor finds its verdict with `Failure::find`.
    pub struct OpenAiEventStream<B> {
        #[pin]
        body: B,
        decoder: SseDecoder,
        op: Operation,
        rw: Rewrite,
        state: State,
        sink: Option<AggregateSink>,
    }
}

impl<B> OpenAiEventStream<B> {
    /// Wraps an upstream response body; `max_line_bytes` caps one SSE line (and one event's
    /// data).
    pub fn new(body: B, op: Operation, rw: Rewrite, max_line_bytes: usize) -> Self {
        Self {
            body,
            decoder: SseDecoder::new(max_line_bytes),
            op,
            rw,
            state: State::Reading,
            sink: None,
        }
    }

    /// Folds every chunk into `sink`'s aggregator from the one parse the chunk gets. With
    /// [`AggregateSink::new`] the chunks are not passed on: the events keep their kind and
    /// usage but carry no bytes, except `[DONE]` and in-band errors (for a caller that asked
    /// for a whole body). With [`AggregateSink::tap`] the events are as without a sink.
    pub fn with_sink(mut self, sink: AggregateSink) -> Self {
        sink.attach();
        self.sink = Some(sink);
        self
    }
}

impl<B> fmt::Debug for OpenAiEventStream<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEventStream")
            .field("op", &self.op)
            .field("rw", &self.rw)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<B> EventSource for OpenAiEventStream<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn poll_event(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, BoxError>>> {
        let mut this = self.project();
        loop {
            let decoded = match *this.state {
                State::Done => return Poll::Ready(None),
                State::AfterDone => {
                    *this.state = State::Done;
                    return Poll::Ready(drain_end(this.body.as_mut(), cx));
                }
                State::Reading => this.decoder.next_event(),
                State::Flushing => this.decoder.finish(),
            };
            match decoded {
                Ok(Some(sse)) => match convert(*this.op, this.rw, sse, this.sink.as_ref()) {
                    Ok(Some(ev)) => {
                        if ev.kind == EventKind::Done {
                            // Anything after [DONE] is ignored by every client, and an upstream
                            // that never closes must not hang the caller: what follows is only
                            // read if it is already there (see `drain_end`).
                            *this.state = State::AfterDone;
                        }
                        return Poll::Ready(Some(Ok(ev)));
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        *this.state = State::Done;
                        return Poll::Ready(Some(Err(Failure::boxed(e))));
                    }
                },
                Ok(None) if *this.state == State::Flushing => {
                    *this.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(SseError::LineTooLong { limit }) => {
                    *this.state = State::Done;
                    return Poll::Ready(Some(Err(Failure::boxed(WireError::LineTooLong {
                        limit,
                    }))));
                }
            }
            match ready!(this.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers carry nothing an OpenAI client reads.
                    if let Ok(data) = frame.into_data() {
                        this.decoder.push(&data);
                    }
                }
                Some(Err(e)) => {
                    *this.state = State::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => *this.state = State::Flushing,
            }
        }
    }
}

/// Reads the body's end when it has already arrived (it usually shares a packet with
/// `[DONE]`), so the upstream connection goes back to the pool instead of being closed; never
/// waits, and reads at most a few frames of anything an upstream sends after `[DONE]`.
fn drain_end<B>(mut body: Pin<&mut B>, cx: &mut Context<'_>) -> Option<Result<Event, BoxError>>
where
    B: Body<Data = Bytes>,
{
    for _ in 0..4 {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) | Poll::Pending => return None,
        }
    }
    None
}

/// Turns one upstream SSE event into the caller's event; `None` for an event with no data.
///
/// With a sink, chunks are folded into its aggregator too, and unless it is a tap they are
/// not passed on (see [`AggregateSink`]).
fn convert(
    op: Operation,
    rw: &Rewrite,
    sse: SseEvent,
    sink: Option<&AggregateSink>,
) -> Result<Option<Event>, WireError> {
    match (sink, convert_event(op, rw, sse, sink)?) {
        (Some(sink), Some(mut ev))
            if !sink.passes_on()
                && !matches!(ev.kind, EventKind::Done | EventKind::Error)
                && !ev.bytes.is_empty() =>
        {
            // A chunk the typed pass could not take: folded in from its rewritten bytes.
            sink.with(|agg| agg.push(&ev)).transpose()?;
            ev.bytes = Bytes::new();
            Ok(Some(ev))
        }
        (_, ev) => Ok(ev),
    }
}

fn convert_event(
    op: Operation,
    rw: &Rewrite,
    sse: SseEvent,
    sink: Option<&AggregateSink>,
) -> Result<Option<Event>, WireError> {
    let data = sse.data.trim_ascii();
    if data.is_empty() {
        return Ok(None);
    }
    if data == b"[DONE]" {
        return Ok(Some(Event {
            bytes: frame(sse.event.as_deref(), b"[DONE]"),
            kind: EventKind::Done,
            usage: None,
        }));
    }
    let text = std::str::from_utf8(data).map_err(|e| malformed(format!("invalid UTF-8: {e}")))?;
    if let Some(sink) = sink
        && !sink.passes_on()
        && let Some(ev) = absorb(op, rw, text, sink)?
    {
        return Ok(Some(ev));
    }
    let members = json::object_members(text)
        .map_err(|e| malformed(format!("stream chunk: {e}")))?
        .ok_or_else(|| malformed("stream chunk is not a JSON object"))?;
    let (kind, choices) = classify(op, &members);
    let mut out = Vec::with_capacity(text.len() + 64);
    let usage = rewrite_object(op, &members, rw, Shape::Chunk, &mut out);
    let bytes = if kind == EventKind::Usage && !rw.client_wants_usage {
        // The caller did not ask for usage; outer layers still read `usage`.
        Bytes::new()
    } else {
        frame(sse.event.as_deref(), &out)
    };
    let ev = Event { bytes, kind, usage };
    if let Some(sink) = sink
        && sink.passes_on()
        && kind != EventKind::Error
    {
        tap(sink, &ev, &members, choices);
    }
    Ok(Some(ev))
}

/// Folds a chunk that passes on into a tap's aggregator, from the member walk and the typed
/// choices its classification made (no parse of its own); from its rewritten bytes when the
/// choices were not parsed, and only counted when its bytes are hidden (a usage chunk the
/// caller did not ask for), as the aggregator treats such an event. A chunk the aggregator
/// refuses does not stop the stream: the aggregator keeps the failure
/// ([`crate::Aggregator::failure`]) for the caller to judge.
fn tap(
    sink: &AggregateSink,
    ev: &Event,
    members: &[json::Member<'_>],
    choices: Option<Option<Vec<ChoiceChunk<'_>>>>,
) {
    match choices {
        Some(choices) if !ev.bytes.is_empty() => sink
            .with(|agg| agg.push_parsed(ev.kind, ev.usage, Chunk::from_members(members, choices))),
        _ => sink.with(|agg| agg.push(ev)),
    };
}

/// A chunk parsed once, classified, metered and folded into the sink's aggregator; its event
/// carries no bytes. `Ok(None)` for anything the typed parse cannot vouch for (an `error`
/// member, a chunk that is not an object, duplicate keys, odd shapes), which then takes the
/// general path and is classified exactly as there. An error is the aggregator's verdict on
/// the chunk (too many choices, say).
fn absorb(
    op: Operation,
    rw: &Rewrite,
    text: &str,
    sink: &AggregateSink,
) -> Result<Option<Event>, WireError> {
    if json::first_byte(text) != Some(b'{') {
        return Ok(None);
    }
    let Ok(chunk) = serde_json::from_str::<Chunk<'_>>(text) else {
        return Ok(None);
    };
    if chunk.error.is_some() {
        return Ok(None);
    }
    let usage = chunk.usage.filter(|u| json::is_object(u)).map(|u| {
        let mut scratch = Vec::new();
        write_usage(op, u.get(), &rw.pricing, &mut scratch)
    });
    let choices = chunk.choices.as_deref().unwrap_or_default();
    let kind = if choices.iter().any(|c| c.has_output(op)) {
        EventKind::Output
    } else if choices.is_empty() && usage.is_some() {
        EventKind::Usage
    } else {
        EventKind::Preamble
    };
    let ev = Event {
        bytes: Bytes::new(),
        kind,
        usage,
    };
    if kind == EventKind::Usage && !rw.client_wants_usage {
        // Hidden from the caller, as on the general path: metered, not shown.
        sink.with(|agg| agg.push(&ev)).transpose()?;
    } else {
        sink.with(|agg| agg.push_parsed(kind, usage, chunk))
            .transpose()?;
    }
    Ok(Some(ev))
}

/// The chunk's kind, and its choices as the typed parse read them: `Some(None)` when it has
/// none (or `null`), `None` when the typed parse could not take them (or was not needed).
#[allow(clippy::type_complexity)]
fn classify<'a>(
    op: Operation,
    members: &[json::Member<'a>],
) -> (EventKind, Option<Option<Vec<ChoiceChunk<'a>>>>) {
    let mut choices = 0usize;
    let mut output = false;
    let mut usage = false;
    let mut typed = Some(None);
    for m in members {
        match m.key.as_ref() {
            "error" if !json::is_null(m.value) => return (EventKind::Error, None),
            "usage" => usage = json::is_object(m.value),
            "choices" if json::is_null(m.value) => {}
            "choices" => {
                let parsed;
                (choices, output, parsed) = choices_output(op, m.value);
                typed = parsed.map(Some);
            }
            _ => {}
        }
    }
    let kind = if output {
        EventKind::Output
    } else if choices == 0 && usage {
        EventKind::Usage
    } else {
        EventKind::Preamble
    };
    (kind, typed)
}

/// How many choices `choices` holds, whether any of them carries model output, and the
/// choices as the typed pass read them (`None` when it could not).
///
/// One typed pass over the array in the common case; an array the typed pass rejects
/// (elements that are not objects, duplicate keys) is walked member by member instead, so
/// odd chunks are classified exactly as before.
fn choices_output<'a>(
    op: Operation,
    choices: &'a RawValue,
) -> (usize, bool, Option<Vec<ChoiceChunk<'a>>>) {
    if let Ok(typed) = serde_json::from_str::<Vec<ChoiceChunk<'a>>>(choices.get()) {
        let output = typed.iter().any(|c| c.has_output(op));
        return (typed.len(), output, Some(typed));
    }
    let mut count = 0usize;
    let mut output = false;
    let _ = json::for_each_element(choices.get(), |c| {
        count += 1;
        output |= choice_has_output(op, c);
    });
    (count, output, None)
}

fn choice_has_output(op: Operation, choice: &RawValue) -> bool {
    let mut output = false;
    let _ = json::for_each_member(choice.get(), |m| match m.key.as_ref() {
        "finish_reason" => output |= !json::is_null(m.value),
        "text" if op == Operation::Completions => output |= json::is_nonempty_string(m.value),
        "delta" => output |= delta_has_output(m.value),
        _ => {}
    });
    output
}

fn delta_has_output(delta: &RawValue) -> bool {
    let mut output = false;
    let _ = json::for_each_member(delta.get(), |m| match m.key.as_ref() {
        // `reasoning` (OpenRouter) and `reasoning_content` (DeepSeek, vLLM) are model output
        // the caller sees; a reasoning model may stream them for minutes before `content`.
        "content" | "refusal" | "reasoning" | "reasoning_content" => {
            output |= json::is_nonempty_string(m.value) || json::is_nonempty_array(m.value);
        }
        "tool_calls" => output |= json::is_nonempty_array(m.value),
        "function_call" => output |= !json::is_null(m.value),
        _ => {}
    });
    output
}

/// An OpenAI in-band error event, `data: {"error":{"message","type","code"}}` and a blank
/// line: the shape OpenRouter sends when a stream fails after it started, and what Switchyard
/// writes when a committed stream fails for good. No `[DONE]` follows it, so a client can tell
/// the answer is incomplete.
pub fn error_event(message: &str, error_type: &str, code: &str) -> Bytes {
    let mut json = Vec::with_capacity(message.len() + error_type.len() + code.len() + 48);
    let mut outer = ObjectWriter::open(&mut json);
    let mut err = ObjectWriter::open(outer.key("error"));
    err.str("message", message);
    err.str("type", error_type);
    err.str("code", code);
    err.close();
    outer.close();
    frame(None, &json)
}

/// Frames `json` as one SSE event. JSON carries line breaks only as whitespace between
/// tokens, so splitting it into several `data:` lines is lossless for the reader, and it
/// keeps the framing valid when an upstream pretty-printed its chunks.
fn frame(event: Option<&str>, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 16);
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    let mut rest = json;
    loop {
        let end = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest[..end]);
        out.push(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.push(b'\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body::Frame;
    use serde_json::Value;
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;
    use switchyard_core::{Class, Pricing, ProxyBody, Usage};

    /// The [`WireError`] inside a stream's error.
    fn wire_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> &'a WireError {
        let failure = Failure::find(err).expect("a Failure");
        let inner: &dyn std::error::Error = failure.get();
        inner.downcast_ref::<WireError>().expect("a WireError")
    }

    /// A body that hands out scripted frames and counts how many were taken.
    struct TestBody {
        frames: VecDeque<Result<Bytes, BoxError>>,
        pulled: Arc<AtomicUsize>,
        /// How often the end of the body was reported.
        ends: Arc<AtomicUsize>,
    }

    impl Body for TestBody {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let next = self.frames.pop_front();
            if next.is_some() {
                self.pulled.fetch_add(1, Ordering::SeqCst);
            } else {
                self.ends.fetch_add(1, Ordering::SeqCst);
            }
            Poll::Ready(next.map(|r| r.map(Frame::data)))
        }
    }

    fn body_of(chunks: Vec<Vec<u8>>) -> (TestBody, Arc<AtomicUsize>) {
        let pulled = Arc::new(AtomicUsize::new(0));
        let body = TestBody {
            frames: chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect(),
            pulled: pulled.clone(),
            ends: Arc::new(AtomicUsize::new(0)),
        };
        (body, pulled)
    }

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

    type Item = Result<Event, BoxError>;

    fn next(s: &mut Pin<Box<OpenAiEventStream<TestBody>>>) -> Option<Item> {
        let mut cx = Context::from_waker(Waker::noop());
        match s.as_mut().poll_event(&mut cx) {
            Poll::Ready(item) => item,
            Poll::Pending => panic!("test body is always ready"),
        }
    }

    fn collect(s: &mut Pin<Box<OpenAiEventStream<TestBody>>>) -> Vec<Item> {
        let mut out = Vec::new();
        while let Some(item) = next(s) {
            out.push(item);
        }
        // Ended streams stay ended.
        assert!(next(s).is_none());
        out
    }

    fn stream_over(
        op: Operation,
        chunks: Vec<Vec<u8>>,
        rw: Rewrite,
    ) -> Pin<Box<OpenAiEventStream<TestBody>>> {
        let (body, _) = body_of(chunks);
        Box::pin(OpenAiEventStream::new(body, op, rw, 4096))
    }

    fn split(input: &[u8], size: usize) -> Vec<Vec<u8>> {
        input.chunks(size).map(<[u8]>::to_vec).collect()
    }

    fn events(items: Vec<Item>) -> Vec<Event> {
        items.into_iter().map(|i| i.unwrap()).collect()
    }

    fn payload(ev: &Event) -> Value {
        let s = std::str::from_utf8(&ev.bytes).unwrap();
        let json: String = s
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect::<Vec<_>>()
            .join("\n");
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {s:?}"))
    }

    const CHAT_STREAM: &str = concat!(
        ": OPENROUTER PROCESSING\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Caf\\u00e9 \\\"x\\\"\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500,\"total_tokens\":1500}}\n\n",
        "data: [DONE]\n\n",
    );

    fn check_chat_stream(evs: &[Event], wants_usage: bool) {
        let kinds: Vec<_> = evs.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Preamble,
                EventKind::Output,
                EventKind::Output,
                EventKind::Usage,
                EventKind::Done
            ]
        );
        for ev in &evs[..3] {
            let v = payload(ev);
            assert_eq!(v["model"], "fast-chat");
            assert_eq!(v["provider"], "acme");
            assert!(v.get("metadata").is_none());
            assert!(ev.usage.is_none());
            assert!(ev.bytes.ends_with(b"\n\n") && ev.bytes.starts_with(b"data: {"));
        }
        // Content is byte-identical to what the upstream wrote.
        let s = std::str::from_utf8(&evs[1].bytes).unwrap();
        assert!(
            s.contains(r#""delta":{"content":"Caf\u00e9 \"x\""}"#),
            "{s}"
        );
        let usage = evs[3].usage.unwrap();
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 1000,
                completion_tokens: 500,
                cost: (1000.0 * 2.0 + 500.0 * 8.0) / 1e6,
                estimated: false
            }
        );
        if wants_usage {
            let v = payload(&evs[3]);
            assert_eq!(v["usage"]["cost"].as_f64(), Some(usage.cost));
            assert_eq!(v["usage"]["total_tokens"], 1500);
            assert_eq!(v["model"], "fast-chat");
        } else {
            assert!(evs[3].bytes.is_empty());
        }
        assert_eq!(&evs[4].bytes[..], b"data: [DONE]\n\n");
    }

    #[test]
    fn chat_stream_over_odd_chunk_boundaries() {
        for size in [1, 2, 3, 7, 64, 1000, CHAT_STREAM.len()] {
            for wants in [false, true] {
                let mut s = stream_over(
                    Operation::ChatCompletions,
                    split(CHAT_STREAM.as_bytes(), size),
                    rw(wants),
                );
                let evs = events(collect(&mut s));
                check_chat_stream(&evs, wants);
            }
        }
    }

    #[tokio::test]
    async fn proxy_body_hides_the_usage_chunk_unless_asked() {
        use http_body_util::BodyExt;
        for wants in [false, true] {
            let (body, _) = body_of(split(CHAT_STREAM.as_bytes(), 5));
            let src = OpenAiEventStream::new(body, Operation::ChatCompletions, rw(wants), 4096);
            let bytes = ProxyBody::events(src).collect().await.unwrap().to_bytes();
            let text = std::str::from_utf8(&bytes).unwrap();
            assert_eq!(text.matches("data: ").count(), if wants { 5 } else { 4 });
            assert_eq!(text.contains("\"usage\":{"), wants, "{text}");
            assert!(text.ends_with("data: [DONE]\n\n"));
            assert!(!text.contains("OPENROUTER"));
        }
    }

    #[test]
    fn pulls_upstream_frames_only_when_polled() {
        let frames: Vec<Vec<u8>> = CHAT_STREAM
            .split_inclusive("\n\n")
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let total = frames.len();
        let (body, pulled) = body_of(frames);
        let mut s = Box::pin(OpenAiEventStream::new(
            body,
            Operation::ChatCompletions,
            rw(false),
            4096,
        ));
        assert_eq!(pulled.load(Ordering::SeqCst), 0);
        let first = next(&mut s).unwrap().unwrap();
        assert_eq!(first.kind, EventKind::Preamble);
        // The comment frame and the first event's frame, nothing more.
        assert_eq!(pulled.load(Ordering::SeqCst), 2);
        next(&mut s).unwrap().unwrap();
        assert_eq!(pulled.load(Ordering::SeqCst), 3);
        assert!(pulled.load(Ordering::SeqCst) < total);
    }

    #[test]
    fn reads_the_body_end_after_done_so_the_connection_can_be_reused() {
        let frames = vec![
            b"data: {\"model\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n".to_vec(),
            b"data: [DONE]\n\n".to_vec(),
        ];
        let (body, pulled) = body_of(frames);
        let ends = body.ends.clone();
        let mut s = Box::pin(OpenAiEventStream::new(
            body,
            Operation::ChatCompletions,
            rw(false),
            4096,
        ));
        assert_eq!(next(&mut s).unwrap().unwrap().kind, EventKind::Output);
        assert_eq!(next(&mut s).unwrap().unwrap().kind, EventKind::Done);
        assert_eq!(ends.load(Ordering::SeqCst), 0);
        assert!(next(&mut s).is_none());
        // Both frames and the end of the body were read: nothing is left unread upstream.
        assert_eq!(pulled.load(Ordering::SeqCst), 2);
        assert_eq!(ends.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn stops_after_done() {
        let input = "data: [DONE]\n\ndata: {\"model\":\"x\",\"choices\":[]}\n\n";
        let (body, pulled) = body_of(vec![input.as_bytes().to_vec(), b"more".to_vec()]);
        let mut s = Box::pin(OpenAiEventStream::new(
            body,
            Operation::ChatCompletions,
            rw(false),
            4096,
        ));
        let evs = events(collect(&mut s));
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, EventKind::Done);
        // What follows [DONE] is read off the connection (boundedly) but never yielded.
        assert_eq!(pulled.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn eof_without_done_flushes_and_ends() {
        let input = "data: {\"model\":\"x\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"model\":\"x\",\"choices\":[{\"delta\":{\"content\":\"b\"}}]}";
        let mut s = stream_over(
            Operation::ChatCompletions,
            split(input.as_bytes(), 9),
            rw(false),
        );
        let evs = events(collect(&mut s));
        assert_eq!(evs.len(), 2);
        assert_eq!(payload(&evs[1])["choices"][0]["delta"]["content"], "b");
        assert!(evs.iter().all(|e| e.kind == EventKind::Output));
    }

    #[test]
    fn malformed_chunk_is_an_error_and_ends_the_stream() {
        let input = concat!(
            "data: {\"model\":\"x\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"model\":\"x\",\"choices\":[{\"delta\":{\"content\":\"a\"\n\n",
            "data: {\"model\":\"x\",\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
        );
        let mut s = stream_over(
            Operation::ChatCompletions,
            split(input.as_bytes(), 4),
            rw(false),
        );
        let items = collect(&mut s);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().kind, EventKind::Preamble);
        let err = items[1].as_ref().unwrap_err();
        let wire = wire_error(&**err);
        assert!(matches!(wire, WireError::Malformed { .. }), "{wire:?}");
        let failure = Failure::find(&**err).unwrap().get();
        assert_eq!(failure.class(), Some(Class::Malformed));
        assert_eq!(failure.code(), "malformed_response");
        for bad in ["data: [1,2]\n\n", "data: nope\n\n", "data: \"s\"\n\n"] {
            let mut s = stream_over(
                Operation::ChatCompletions,
                vec![bad.as_bytes().to_vec()],
                rw(false),
            );
            let items = collect(&mut s);
            assert_eq!(items.len(), 1, "{bad}");
            let wire = wire_error(&**items[0].as_ref().unwrap_err());
            assert!(matches!(wire, WireError::Malformed { .. }), "{bad}");
        }
    }

    #[test]
    fn upstream_body_error_is_passed_on() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let body = TestBody {
            frames: VecDeque::from([
                Ok(Bytes::from_static(
                    b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                )),
                Err("connection reset".into()),
                Ok(Bytes::from_static(b"data: [DONE]\n\n")),
            ]),
            pulled,
            ends: Arc::new(AtomicUsize::new(0)),
        };
        let mut s = Box::pin(OpenAiEventStream::new(
            body,
            Operation::ChatCompletions,
            rw(false),
            4096,
        ));
        let items = collect(&mut s);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().kind, EventKind::Output);
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.to_string(), "connection reset");
        // The body's own error is passed on as it is, not wrapped.
        assert!(Failure::find(&**err).is_none());
    }

    #[test]
    fn line_cap_is_an_error() {
        let long = format!("data: {{\"x\":\"{}\"}}\n\n", "a".repeat(200));
        let (body, _) = body_of(split(long.as_bytes(), 16));
        let mut s = Box::pin(OpenAiEventStream::new(
            body,
            Operation::ChatCompletions,
            rw(false),
            64,
        ));
        let items = collect(&mut s);
        assert_eq!(items.len(), 1);
        let err = items[0].as_ref().unwrap_err();
        assert_eq!(wire_error(&**err), &WireError::LineTooLong { limit: 64 });
        let failure = Failure::find(&**err).unwrap().get();
        assert_eq!(failure.class(), Some(Class::Malformed));
        assert_eq!(failure.code(), "sse_line_too_long");
    }

    fn kind_of(op: Operation, chunk: &str) -> EventKind {
        let input = format!("data: {chunk}\n\n");
        let mut s = stream_over(op, vec![input.into_bytes()], rw(true));
        let evs = events(collect(&mut s));
        assert_eq!(evs.len(), 1, "{chunk}");
        evs[0].kind
    }

    #[test]
    fn classification() {
        use EventKind::*;
        let chat = Operation::ChatCompletions;
        let cases = [
            (
                r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
                Preamble,
            ),
            (
                r#"{"choices":[{"delta":{"content":null},"finish_reason":null}]}"#,
                Preamble,
            ),
            (r#"{"choices":[]}"#, Preamble),
            (r#"{"choices":[],"usage":null}"#, Preamble),
            (
                r#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#,
                Preamble,
            ),
            (r#"{"choices":[{"delta":{"content":" "}}]}"#, Output),
            (r#"{"choices":[{"delta":{"refusal":"no"}}]}"#, Output),
            (
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":""}}]}}]}"#,
                Output,
            ),
            (r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#, Preamble),
            (
                r#"{"choices":[{"delta":{"function_call":{"name":"f"}}}]}"#,
                Output,
            ),
            (r#"{"choices":[{"delta":{"reasoning":"hmm"}}]}"#, Output),
            (
                r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#,
                Output,
            ),
            (
                r#"{"choices":[{"delta":{}},{"delta":{},"finish_reason":"length"}]}"#,
                Output,
            ),
            (r#"{"choices":[{"text":"hi"}]}"#, Preamble),
            (
                r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
                Usage,
            ),
            (
                r#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
                Usage,
            ),
            (r#"{"choices":null,"usage":{"prompt_tokens":1}}"#, Usage),
            (r#"{"error":{"message":"overloaded","code":502}}"#, Error),
            (
                r#"{"choices":[{"delta":{"content":"x"}}],"error":{"message":"cut"}}"#,
                Error,
            ),
            (
                r#"{"error":null,"choices":[{"delta":{"content":"x"}}]}"#,
                Output,
            ),
        ];
        for (chunk, kind) in cases {
            assert_eq!(kind_of(chat, chunk), kind, "{chunk}");
        }
        let cmpl = Operation::Completions;
        assert_eq!(
            kind_of(
                cmpl,
                r#"{"choices":[{"text":"hi","index":0,"finish_reason":null}]}"#
            ),
            Output
        );
        assert_eq!(
            kind_of(
                cmpl,
                r#"{"choices":[{"text":"","index":0,"finish_reason":null}]}"#
            ),
            Preamble
        );
    }

    #[test]
    fn output_chunk_with_usage_keeps_both() {
        let input = "data: {\"model\":\"x\",\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\n";
        let mut s = stream_over(
            Operation::ChatCompletions,
            vec![input.as_bytes().to_vec()],
            rw(false),
        );
        let evs = events(collect(&mut s));
        assert_eq!(evs[0].kind, EventKind::Output);
        assert_eq!(evs[0].usage.map(|u| u.completion_tokens), Some(1));
        assert!((payload(&evs[0])["usage"]["cost"].as_f64().unwrap() - 16e-6).abs() < 1e-15);
    }

    #[test]
    fn event_names_and_multiline_data_are_reframed() {
        let input = "event: delta\ndata: {\"model\":\"x\",\ndata:  \"choices\":[{\"delta\":\ndata: {\"content\":\"a\"}}]}\n\n: ping\n\n:\n\nevent: ping\n\n";
        let mut s = stream_over(
            Operation::ChatCompletions,
            split(input.as_bytes(), 3),
            rw(false),
        );
        let evs = events(collect(&mut s));
        assert_eq!(evs.len(), 1);
        let text = std::str::from_utf8(&evs[0].bytes).unwrap();
        assert!(text.starts_with("event: delta\ndata: {"), "{text}");
        assert!(text.ends_with("\n\n"));
        // Re-decoding our own framing gives back one valid JSON event.
        let mut dec = SseDecoder::new(4096);
        dec.push(&evs[0].bytes);
        let back = dec.next_event().unwrap().unwrap();
        assert_eq!(back.event.as_deref(), Some("delta"));
        let v: Value = serde_json::from_slice(&back.data).unwrap();
        assert_eq!(v["model"], "fast-chat");
        assert_eq!(v["choices"][0]["delta"]["content"], "a");
        assert_eq!(evs[0].kind, EventKind::Output);
    }

    #[test]
    fn error_events_pass_through() {
        let input = "data: {\"error\":{\"message\":\"Provider returned error\",\"code\":502}}\n\n";
        let mut s = stream_over(
            Operation::ChatCompletions,
            vec![input.as_bytes().to_vec()],
            rw(false),
        );
        let evs = events(collect(&mut s));
        assert_eq!(evs[0].kind, EventKind::Error);
        assert_eq!(&evs[0].bytes[..], input.as_bytes());
    }

    #[test]
    fn empty_data_events_are_skipped() {
        let input = "data:\n\ndata:   \n\ndata: [DONE]\n\n";
        let mut s = stream_over(
            Operation::ChatCompletions,
            vec![input.as_bytes().to_vec()],
            rw(false),
        );
        let evs = events(collect(&mut s));
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, EventKind::Done);
    }

    #[test]
    fn frame_splits_line_breaks() {
        assert_eq!(&frame(None, b"{}")[..], b"data: {}\n\n");
        assert_eq!(
            &frame(Some("e"), b"{\r\n\"a\":1\r}")[..],
            b"event: e\ndata: {\ndata: \"a\":1\ndata: }\n\n"
        );
    }

    #[test]
    fn error_event_is_an_openai_in_band_error() {
        let ev = error_event(
            "upstream \"cut\"\nmid-answer",
            "upstream_error",
            "stream_cut",
        );
        let text = std::str::from_utf8(&ev).unwrap();
        assert!(
            text.starts_with("data: {\"error\":{") && text.ends_with("}}\n\n"),
            "{text}"
        );
        assert_eq!(text.matches('\n').count(), 2, "one data line: {text:?}");
        let v: Value = serde_json::from_str(text.trim_start_matches("data: ").trim_end()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "upstream \"cut\"\nmid-answer",
                "type": "upstream_error", "code": "stream_cut"}})
        );
        // Our own stream adapter reads it back as an error event.
        let mut s = stream_over(Operation::ChatCompletions, vec![ev.to_vec()], rw(false));
        let evs = events(collect(&mut s));
        assert_eq!(evs[0].kind, EventKind::Error);
        assert_eq!(evs[0].bytes, ev);
    }

    /// The typed pass and the member-by-member walk agree on every shape of `choices`.
    #[test]
    fn typed_choice_classification_matches_the_walk() {
        let choices = [
            r#"[]"#,
            r#"[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]"#,
            r#"[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]"#,
            r#"[{"index":0,"delta":{},"finish_reason":"stop"}]"#,
            r#"[{"index":0,"delta":{"content":null,"refusal":"no"}}]"#,
            r#"[{"index":0,"delta":{"reasoning":"hmm"}}]"#,
            r#"[{"index":0,"delta":{"reasoning_content":""}}]"#,
            r#"[{"index":0,"delta":{"content":[{"type":"text","text":"a"}]}}]"#,
            r#"[{"index":0,"delta":{"content":[]}}]"#,
            r#"[{"index":0,"delta":{"tool_calls":[]}}]"#,
            r#"[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c"}]}}]"#,
            r#"[{"index":0,"delta":{"function_call":null}}]"#,
            r#"[{"index":0,"delta":{"function_call":{"name":"f"}}}]"#,
            r#"[{"index":0,"delta":null}]"#,
            r#"[{"index":0,"delta":"odd"}]"#,
            r#"[{"index":0,"text":"x"}]"#,
            r#"[{"index":0,"text":""}]"#,
            r#"[{"index":0,"text":null,"logprobs":{"tokens":["a"]}}]"#,
            r#"[{"index":0,"delta":{}},{"index":1,"delta":{"content":"b"}}]"#,
            r#"[1,{"index":0,"delta":{"content":"b"}}]"#,
            r#"[{"delta":{"content":""},"delta":{"content":"dup"}}]"#,
            r#"[{"finish_reason":null,"finish_reason":"stop"}]"#,
            r#"{"not":"an array"}"#,
            r#""text""#,
            r#"null"#,
        ];
        for op in [Operation::ChatCompletions, Operation::Completions] {
            for text in choices {
                let raw: &RawValue = serde_json::from_str(text).unwrap();
                let mut count = 0usize;
                let mut output = false;
                let _ = json::for_each_element(raw.get(), |c| {
                    count += 1;
                    output |= choice_has_output(op, c);
                });
                let (typed_count, typed_output, _) = choices_output(op, raw);
                assert_eq!(
                    (typed_count, typed_output),
                    (count, output),
                    "{op:?} {text}"
                );
            }
        }
    }
}
