use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use switchyard_core::{BoxError, Event, EventKind, EventSource, ProxyBody};
use tokio::time::Instant;

use crate::{EndpointHealth, Outcome, Sample};

/// Wraps a streamed response body so the attempt is recorded into `health` when it ends.
///
/// `sent_at` is when the request was sent upstream; TTFT runs from it to the first
/// [`EventKind::Output`] event and latency to the end. The stream records a success at its
/// `Done` event or its end, whichever comes first (a reader may stop at `Done`), and a failure
/// at an error or an in-band [`EventKind::Error`] event. Output tokens come from the last
/// event that reports usage, or else are estimated as the number of output events. A stream
/// dropped before it ended (the client went away) records nothing. A buffered body is returned
/// unchanged: the caller records it with [`EndpointHealth::record`].
pub fn observe(body: ProxyBody, health: Arc<EndpointHealth>, sent_at: Instant) -> ProxyBody {
    match body.into_events() {
        Ok(inner) => ProxyBody::events(Observed {
            inner,
            health,
            sent_at,
            first_output: None,
            reported_tokens: None,
            output_events: 0,
            recorded: false,
        }),
        Err(buffered) => buffered,
    }
}

struct Observed {
    inner: Pin<Box<dyn EventSource>>,
    health: Arc<EndpointHealth>,
    sent_at: Instant,
    first_output: Option<Instant>,
    reported_tokens: Option<u64>,
    output_events: u64,
    /// Set once the attempt is recorded, so nothing after its end is recorded twice.
    recorded: bool,
}

impl Observed {
    fn see(&mut self, ev: &Event, now: Instant) {
        if ev.kind == EventKind::Output {
            self.first_output.get_or_insert(now);
            self.output_events += 1;
        }
        if let Some(usage) = ev.usage {
            // Some providers report usage more than once (a running count, then the total).
            self.reported_tokens = Some(usage.completion_tokens);
        }
    }

    fn record(&mut self, outcome: Outcome, now: Instant) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let estimate = (self.output_events > 0).then_some(self.output_events);
        self.health.record(Sample {
            at: now,
            outcome,
            ttft: self
                .first_output
                .map(|at| at.saturating_duration_since(self.sent_at)),
            latency: now.saturating_duration_since(self.sent_at),
            output_tokens: self.reported_tokens.or(estimate),
        });
    }
}

impl EventSource for Observed {
    fn poll_event(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, BoxError>>> {
        let this = self.get_mut();
        let polled = ready!(this.inner.as_mut().poll_event(cx));
        if this.recorded {
            return Poll::Ready(polled);
        }
        let now = Instant::now();
        match &polled {
            Some(Ok(ev)) => {
                this.see(ev, now);
                match ev.kind {
                    EventKind::Done => this.record(Outcome::Success, now),
                    EventKind::Error => this.record(Outcome::Failure, now),
                    EventKind::Preamble | EventKind::Output | EventKind::Usage => {}
                }
            }
            Some(Err(_)) => this.record(Outcome::Failure, now),
            None => this.record(Outcome::Success, now),
        }
        Poll::Ready(polled)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::VecDeque;
    use std::future::{Future, poll_fn};
    use std::time::Duration;

    use bytes::Bytes;
    use switchyard_core::Usage;
    use tokio::time::{Sleep, advance, sleep};

    use super::*;
    use crate::{HealthConfig, HealthRegistry};

    enum Step {
        Wait(u64),
        Event(EventKind, Option<u64>),
        Fail,
    }

    /// Plays its steps in order, sleeping (on the paused clock) where told.
    struct Script {
        steps: VecDeque<Step>,
        sleeping: Option<Pin<Box<Sleep>>>,
    }

    impl Script {
        fn new(steps: impl IntoIterator<Item = Step>) -> Self {
            Self {
                steps: steps.into_iter().collect(),
                sleeping: None,
            }
        }
    }

    impl EventSource for Script {
        fn poll_event(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Event, BoxError>>> {
            let this = self.get_mut();
            loop {
                if let Some(s) = this.sleeping.as_mut() {
                    ready!(s.as_mut().poll(cx));
                    this.sleeping = None;
                }
                match this.steps.pop_front() {
                    None => return Poll::Ready(None),
                    Some(Step::Wait(ms)) => {
                        this.sleeping = Some(Box::pin(sleep(Duration::from_millis(ms))));
                    }
                    Some(Step::Event(kind, tokens)) => {
                        return Poll::Ready(Some(Ok(Event {
                            bytes: Bytes::from_static(b"data: {}\n\n"),
                            kind,
                            usage: tokens.map(|t| Usage {
                                prompt_tokens: 7,
                                completion_tokens: t,
                                cost: 0.0,
                                estimated: false,
                            }),
                        })));
                    }
                    Some(Step::Fail) => return Poll::Ready(Some(Err("upstream reset".into()))),
                }
            }
        }
    }

    use EventKind::{Done, Output, Preamble, Usage as UsageKind};

    fn ev(kind: EventKind) -> Step {
        Step::Event(kind, None)
    }

    fn setup() -> (Arc<EndpointHealth>, Instant) {
        let reg = HealthRegistry::new(HealthConfig::default());
        (reg.endpoint("p/m"), Instant::now())
    }

    /// Reads the body to its end (or its first error), returning the kinds seen.
    async fn drain(body: ProxyBody) -> (Vec<EventKind>, bool) {
        let mut source = body.into_events().expect("a stream");
        let mut kinds = Vec::new();
        loop {
            match poll_fn(|cx| source.as_mut().poll_event(cx)).await {
                Some(Ok(e)) => kinds.push(e.kind),
                Some(Err(_)) => return (kinds, true),
                None => return (kinds, false),
            }
        }
    }

    fn only(h: &EndpointHealth) -> Sample {
        let recorded = h.recorded();
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        recorded[0]
    }

    #[tokio::test(start_paused = true)]
    async fn success_with_ttft_latency_and_reported_tokens() {
        let (h, sent_at) = setup();
        let body = ProxyBody::events(Script::new([
            Step::Wait(100),
            ev(Preamble),
            Step::Wait(200),
            ev(Output),
            Step::Wait(500),
            ev(Output),
            Step::Wait(100),
            Step::Event(UsageKind, Some(42)),
            Step::Wait(50),
            ev(Done),
        ]));
        let body = observe(body, Arc::clone(&h), sent_at);
        let (kinds, failed) = drain(body).await;
        assert_eq!(kinds, [Preamble, Output, Output, UsageKind, Done]);
        assert!(!failed);
        let s = only(&h);
        assert_eq!(s.outcome, Outcome::Success);
        assert_eq!(s.ttft, Some(Duration::from_millis(300)));
        assert_eq!(s.latency, Duration::from_millis(950));
        assert_eq!(s.output_tokens, Some(42));
        assert_eq!(s.at, sent_at + Duration::from_millis(950));

        let summary = h.summary();
        assert_eq!((summary.samples, summary.failures), (1, 0));
        // 42 tokens over 650 ms of generation.
        let tput = summary.throughput.map(|p| p.p50).unwrap();
        assert!((tput - 42.0 / 0.65).abs() < 1e-9, "{tput}");
    }

    #[tokio::test(start_paused = true)]
    async fn counts_output_events_without_usage_and_records_at_source_end() {
        let (h, sent_at) = setup();
        // A source that ends without a Done event still records a success at its end.
        let body = ProxyBody::events(Script::new([
            Step::Wait(40),
            ev(Output),
            ev(Output),
            ev(Preamble),
            ev(Output),
            Step::Wait(60),
        ]));
        let (_, failed) = drain(observe(body, Arc::clone(&h), sent_at)).await;
        assert!(!failed);
        let s = only(&h);
        assert_eq!(s.outcome, Outcome::Success);
        assert_eq!(s.ttft, Some(Duration::from_millis(40)));
        assert_eq!(s.latency, Duration::from_millis(100));
        assert_eq!(s.output_tokens, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_usage_report_wins() {
        let (h, sent_at) = setup();
        let body = ProxyBody::events(Script::new([
            Step::Event(Preamble, Some(1)),
            ev(Output),
            Step::Event(Output, Some(9)),
            ev(Done),
        ]));
        drain(observe(body, Arc::clone(&h), sent_at)).await;
        assert_eq!(only(&h).output_tokens, Some(9));
    }

    #[tokio::test(start_paused = true)]
    async fn no_output_means_no_ttft_and_no_tokens() {
        let (h, sent_at) = setup();
        let body = ProxyBody::events(Script::new([Step::Wait(10), ev(Preamble), ev(Done)]));
        drain(observe(body, Arc::clone(&h), sent_at)).await;
        let s = only(&h);
        assert_eq!(s.outcome, Outcome::Success);
        assert_eq!((s.ttft, s.output_tokens), (None, None));
        assert_eq!(s.latency, Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_records_a_failure_once() {
        let (h, sent_at) = setup();
        let body = ProxyBody::events(Script::new([
            Step::Wait(30),
            ev(Output),
            Step::Wait(70),
            Step::Fail,
        ]));
        let (kinds, failed) = drain(observe(body, Arc::clone(&h), sent_at)).await;
        assert_eq!(kinds, [Output]);
        assert!(failed);
        let s = only(&h);
        assert_eq!(s.outcome, Outcome::Failure);
        assert_eq!(s.latency, Duration::from_millis(100));
        assert_eq!(s.ttft, Some(Duration::from_millis(30)));
        // Failures publish at once.
        let summary = h.summary();
        assert_eq!((summary.samples, summary.failures), (1, 1));
        assert_eq!(summary.consecutive_failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_in_band_error_event_is_a_failure_even_if_the_stream_then_ends() {
        let (h, sent_at) = setup();
        let body = ProxyBody::events(Script::new([
            ev(Preamble),
            Step::Wait(20),
            ev(EventKind::Error),
            Step::Wait(20),
        ]));
        let (kinds, failed) = drain(observe(body, Arc::clone(&h), sent_at)).await;
        assert_eq!(kinds, [Preamble, EventKind::Error]);
        assert!(!failed);
        let s = only(&h);
        assert_eq!(s.outcome, Outcome::Failure);
        assert_eq!(s.latency, Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn polling_past_the_end_records_nothing_more() {
        let (h, sent_at) = setup();
        let body = ProxyBody::events(Script::new([ev(Output), ev(Done)]));
        let mut source = observe(body, Arc::clone(&h), sent_at)
            .into_events()
            .expect("a stream");
        for _ in 0..5 {
            let _ = poll_fn(|cx| source.as_mut().poll_event(cx)).await;
        }
        assert_eq!(only(&h).outcome, Outcome::Success);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_stream_records_nothing() {
        let (h, sent_at) = setup();
        let body = ProxyBody::events(Script::new([
            Step::Wait(10),
            ev(Output),
            Step::Wait(10),
            ev(Output),
            Step::Wait(1000),
            ev(Done),
        ]));
        let mut source = observe(body, Arc::clone(&h), sent_at)
            .into_events()
            .expect("a stream");
        for _ in 0..2 {
            let got = poll_fn(|cx| source.as_mut().poll_event(cx)).await;
            assert_eq!(got.unwrap().unwrap().kind, Output);
        }
        drop(source);
        advance(Duration::from_secs(2)).await;
        assert!(h.recorded().is_empty());
        let s = h.summary();
        assert_eq!((s.samples, s.failures), (0, 0));
        assert!(!h.recent_outage(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn buffered_bodies_pass_through_unrecorded() {
        let (h, sent_at) = setup();
        let body = observe(ProxyBody::full("{\"ok\":true}"), Arc::clone(&h), sent_at);
        assert!(!body.is_stream());
        assert_eq!(body.as_full(), Some(&b"{\"ok\":true}"[..]));
        assert!(h.recorded().is_empty());
    }
}
