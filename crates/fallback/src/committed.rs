//! A stream after its commit point: passed through event by event, watched to the end, and
//! never passed off as complete when it is not.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::future::poll_fn;
use futures_util::stream::{self, Stream, StreamExt};
use http::{Request, Response};
use switchyard_core::{BoxError, Class, Event, EventKind, EventSource, ProxyBody};
use switchyard_policy::Endpoint;
use switchyard_wire::ParsedRequest;
use tower::Service;

use crate::exec::{Agg, AttemptMeta, Charge, Exec, Source, Verdict, class_of, done_event};

pub(crate) struct Committed<S> {
    exec: Exec<S>,
    held: VecDeque<Event>,
    source: Source,
    agg: Agg,
    meta: AttemptMeta,
    /// The first failure after the commit point: what the client is told if nothing saves
    /// the answer.
    original: Option<String>,
    /// Endpoints already asked to continue this answer.
    continued_on: Vec<Arc<str>>,
    /// A continuation's events are flowing: its preamble is not shown again.
    continuing: bool,
    /// What the aggregate held when the attempt in flight began: its charge counts only what
    /// came after (earlier attempts were settled when they failed).
    base: Base,
    /// What the answer's earlier, failed attempts were charged: added to the usage the
    /// continuation reports, so that the client's usage is what the whole answer cost.
    earlier: Option<switchyard_core::Usage>,
    done: bool,
}

/// The aggregate's output and usage when a continuation began.
#[derive(Clone, Copy, Default)]
struct Base {
    text_len: usize,
    events: u64,
    usage: Option<switchyard_core::Usage>,
}

impl<S> Committed<S>
where
    S: Service<Request<Arc<ParsedRequest>>, Response = Response<ProxyBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    pub(crate) fn new(
        exec: Exec<S>,
        held: VecDeque<Event>,
        source: Source,
        agg: Agg,
        meta: AttemptMeta,
    ) -> Self {
        Self {
            exec,
            held,
            source,
            agg,
            meta,
            original: None,
            continued_on: Vec::new(),
            continuing: false,
            base: Base::default(),
            earlier: None,
            done: false,
        }
    }

    pub(crate) fn into_body(self) -> ProxyBody {
        let events = stream::unfold(self, |mut st| async move {
            let item = st.next_event().await?;
            Some((item, st))
        });
        ProxyBody::events(StreamSource(Box::pin(events)))
    }

    async fn next_event(&mut self) -> Option<Result<Event, BoxError>> {
        loop {
            if let Some(ev) = self.held.pop_front() {
                if self.continuing && ev.kind == EventKind::Preamble {
                    continue;
                }
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            match poll_fn(|cx| self.source.as_mut().poll_event(cx)).await {
                Some(Ok(ev)) => match ev.kind {
                    EventKind::Done => {
                        self.succeed().await;
                        return Some(Ok(ev));
                    }
                    EventKind::Error => {
                        let detail = crate::exec::redacted(
                            &self.meta.endpoint,
                            String::from_utf8_lossy(crate::exec::sse_data(&ev.bytes)).into_owned(),
                        );
                        self.fail(Class::CutAfterCommit, detail).await;
                    }
                    EventKind::Preamble if self.continuing => {}
                    _ => {
                        // The aggregate only serves a continuation; the client gets the event
                        // as the upstream sent it either way. A continuation's events were
                        // folded by no adapter into this aggregate.
                        if !self.continuing {
                            let _ = self.agg.push(&ev);
                            return Some(Ok(ev));
                        }
                        // The aggregate keeps the continuation's own usage (its charge); the
                        // client is shown the whole answer's.
                        let _ = self.agg.push_unfolded(&ev);
                        return Some(Ok(with_earlier_usage(ev, self.earlier)));
                    }
                },
                Some(Err(e)) => {
                    let class = match class_of(&e) {
                        Class::IdleTimeout => Class::IdleTimeout,
                        _ => Class::CutAfterCommit,
                    };
                    self.fail(class, e.to_string()).await;
                }
                None => {
                    // The upstream closed without [DONE]: complete if it said why it
                    // stopped, a cut if it did not.
                    if self.agg.has_finish_reason() {
                        self.succeed().await;
                        return Some(Ok(done_event()));
                    }
                    self.fail(
                        Class::CutAfterCommit,
                        "the upstream closed the stream before the answer was complete".into(),
                    )
                    .await;
                }
            }
        }
    }

    async fn succeed(&mut self) {
        self.done = true;
        let (usage, charge) = self.charge();
        let meta = self.meta.clone();
        self.exec
            .report(
                &meta,
                Class::Success,
                Some(200),
                None,
                String::new(),
                usage,
                charge,
            )
            .await;
    }

    /// After the commit point: report the failure, try to continue the answer elsewhere,
    /// else end with an explicit error naming the first failure.
    async fn fail(&mut self, class: Class, detail: String) {
        let meta = self.meta.clone();
        let (usage, charge) = self.charge();
        self.earlier = sum_usage(self.earlier, usage);
        // The failed stream is let go now: its connection closes (a stalled upstream stops
        // sending) and its endpoint's in-flight place is free for a continuation there.
        self.source = crate::exec::ended();
        self.exec
            .report(&meta, class, Some(200), None, detail.clone(), usage, charge)
            .await;
        let original = self.original.get_or_insert(detail).clone();
        if self.can_continue() {
            while let Some(endpoint) = self.next_prefill_endpoint() {
                if !self.exec.fits_deadline(std::time::Duration::ZERO) {
                    break;
                }
                self.continued_on.push(endpoint.id.clone());
                let prefill = self.agg.partial_text();
                match self.exec.attempt(&endpoint, Some(prefill)).await {
                    Verdict::Committed {
                        held,
                        source,
                        agg,
                        meta,
                        ..
                    } => {
                        // Only the output of the continuation reaches the client; its own
                        // aggregate is folded into ours for any further continuation, and
                        // its charge counts from here.
                        self.base = Base {
                            text_len: self.agg.partial_text_len(),
                            events: self.agg.output_events(),
                            usage: self.agg.usage(),
                        };
                        for ev in &held {
                            if ev.kind != EventKind::Preamble {
                                let _ = self.agg.push_unfolded(ev);
                            }
                        }
                        drop(agg);
                        self.held = held;
                        self.source = source;
                        self.meta = meta;
                        self.continuing = true;
                        return;
                    }
                    Verdict::Fatal(_) => break,
                    Verdict::Complete(_) | Verdict::Failed { .. } | Verdict::Skipped { .. } => {}
                }
            }
        }
        tracing::warn!(endpoint = %self.meta.endpoint.id, error = %original, "stream failed after its commit point");
        self.held.push_back(Event {
            bytes: switchyard_wire::error_event(
                &format!("the answer was interrupted: {original}"),
                "upstream_error",
                "stream_interrupted",
            ),
            kind: EventKind::Error,
            usage: None,
        });
        self.done = true;
    }

    /// Continuation is for plain text the client streams, never for a tool call in progress.
    fn can_continue(&self) -> bool {
        self.exec.retry.continuation
            && self.exec.parsed.stream()
            && !self.agg.has_tool_calls()
            && self.agg.partial_text_len() > 0
    }

    /// The same endpoint first, then the plan's other candidates, each only if it declares
    /// `supports_prefill` and has not been asked yet.
    fn next_prefill_endpoint(&mut self) -> Option<Arc<Endpoint>> {
        let first = std::iter::once(self.meta.endpoint.clone())
            .chain(self.exec.plan.candidates.iter().map(|c| c.endpoint.clone()));
        first
            .filter(|e| e.supports_prefill)
            .find(|e| !self.continued_on.contains(&e.id))
    }
}

impl<S> Committed<S> {
    /// What the attempt in flight is charged: its reported usage, else an estimate from the
    /// output it sent the client (never zero once output reached it).
    fn charge(&self) -> (Option<switchyard_core::Usage>, Charge) {
        match self.agg.usage() {
            Some(u) if Some(u) != self.base.usage => (Some(u), Charge::Reported(u.cost)),
            _ => {
                let u = self
                    .exec
                    .estimated_usage(&self.meta, self.output_tokens_estimate());
                (Some(u), Charge::Estimated(u.cost))
            }
        }
    }

    /// Tokens of output the attempt in flight sent: at least one per output event, at least a
    /// token per four bytes of text.
    fn output_tokens_estimate(&self) -> u64 {
        let text = self
            .agg
            .partial_text_len()
            .saturating_sub(self.base.text_len);
        let events = self.agg.output_events().saturating_sub(self.base.events);
        events.max((text as u64).div_ceil(4))
    }
}

impl<S> Drop for Committed<S> {
    /// The client went away mid-stream: the upstream is dropped with us (closing its
    /// connection), and what the client received is settled as an estimate.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (usage, charge) = self.charge();
        let meta = self.meta.clone();
        self.exec.abandon(&meta, usage, charge);
    }
}

fn sum_usage(
    a: Option<switchyard_core::Usage>,
    b: Option<switchyard_core::Usage>,
) -> Option<switchyard_core::Usage> {
    match (a, b) {
        (Some(a), Some(b)) => Some(switchyard_core::Usage {
            prompt_tokens: a.prompt_tokens + b.prompt_tokens,
            completion_tokens: a.completion_tokens + b.completion_tokens,
            cost: a.cost + b.cost,
            estimated: a.estimated || b.estimated,
        }),
        (a, b) => a.or(b),
    }
}

/// A continuation's usage event, with the earlier attempts' usage added to its tokens and
/// cost (in the bytes the client reads and in the event's metering). Events without usage,
/// and usage chunks that are not a JSON object with a `usage` object, pass unchanged.
fn with_earlier_usage(mut ev: Event, earlier: Option<switchyard_core::Usage>) -> Event {
    let (Some(own), Some(earlier)) = (ev.usage, earlier) else {
        return ev;
    };
    let total = sum_usage(Some(own), Some(earlier)).unwrap_or(own);
    ev.usage = Some(total);
    if ev.bytes.is_empty() {
        return ev;
    }
    let Ok(mut chunk) =
        serde_json::from_slice::<serde_json::Value>(crate::exec::sse_data(&ev.bytes))
    else {
        return ev;
    };
    let Some(usage) = chunk.get_mut("usage").and_then(|u| u.as_object_mut()) else {
        return ev;
    };
    usage.insert("prompt_tokens".into(), total.prompt_tokens.into());
    usage.insert("completion_tokens".into(), total.completion_tokens.into());
    usage.insert(
        "total_tokens".into(),
        (total.prompt_tokens + total.completion_tokens).into(),
    );
    usage.insert("cost".into(), total.cost.into());
    ev.bytes = bytes::Bytes::from(format!("data: {chunk}\n\n"));
    ev
}

/// Adapts a boxed stream of events to the body's event source.
struct StreamSource<T>(std::pin::Pin<Box<T>>);

impl<T> EventSource for StreamSource<T>
where
    T: Stream<Item = Result<Event, BoxError>> + Send + 'static,
{
    fn poll_event(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Event, BoxError>>> {
        self.0.poll_next_unpin(cx)
    }
}
