//! The response body: one buffered chunk, or a script of timed frames and faults played out
//! only as fast as hyper polls it, so no task outlives a client that left.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::error::SimError;
use crate::record::{Outcome, Recorder};

/// One step of a scripted response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Wait before the next step.
    Wait(Duration),
    /// Send one body frame; `content` frames count as content chunks.
    Send { bytes: Bytes, content: bool },
    /// Abort the body: HTTP/1 closes the connection mid-body, HTTP/2 resets the stream.
    Cut,
    /// Send nothing more, ever; the exchange ends when the client leaves.
    Stall,
}

/// Owns a call's outcome until it is set, and sets `ClientGone` if it is dropped first: hyper
/// drops the response future or body as soon as the client goes away.
#[derive(Debug)]
pub(crate) struct Tracker {
    recorder: Arc<Recorder>,
    seq: u64,
    chunks: usize,
    done: bool,
}

impl Tracker {
    pub(crate) fn new(recorder: Arc<Recorder>, seq: u64) -> Self {
        Self {
            recorder,
            seq,
            chunks: 0,
            done: false,
        }
    }

    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if !self.done {
            self.done = true;
            self.recorder.finish(self.seq, outcome);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.done {
            let at_ms = self.recorder.now_ms();
            self.finish(Outcome::ClientGone {
                chunks: self.chunks,
                at_ms,
            });
        }
    }
}

/// A scripted body in progress.
#[derive(Debug)]
pub(crate) struct Script {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<Sleep>>>,
    tracker: Tracker,
    /// Whether hyper got one chance to flush before a cut.
    flushed: bool,
}

impl Script {
    pub(crate) fn new(steps: VecDeque<Step>, tracker: Tracker) -> Self {
        Self {
            steps,
            sleep: None,
            tracker,
            flushed: false,
        }
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, SimError>>> {
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            match self.steps.front() {
                None => {
                    let chunks = self.tracker.chunks;
                    self.tracker.finish(Outcome::Completed { chunks });
                    return Poll::Ready(None);
                }
                // No waker is registered: nothing will ever come. hyper still watches the
                // socket and drops this body when the client leaves.
                Some(Step::Stall) => return Poll::Pending,
                // hyper drops its write buffer when a body fails: yield once first, so what
                // was sent before the cut is flushed and the client sees a partial body.
                Some(Step::Cut) if !self.flushed => {
                    self.flushed = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(_) => {}
            }
            match self.steps.pop_front() {
                Some(Step::Wait(delay)) if !delay.is_zero() => {
                    self.sleep = Some(Box::pin(tokio::time::sleep(delay)));
                }
                Some(Step::Send { bytes, content }) => {
                    if content {
                        self.tracker.chunks += 1;
                    }
                    if self.steps.is_empty() {
                        let chunks = self.tracker.chunks;
                        self.tracker.finish(Outcome::Completed { chunks });
                    }
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Some(Step::Cut) => {
                    let chunks = self.tracker.chunks;
                    self.tracker.finish(Outcome::Cut { chunks });
                    return Poll::Ready(Some(Err(SimError::Cut)));
                }
                _ => {}
            }
        }
    }
}

/// The body of every sim response.
#[derive(Debug)]
pub(crate) enum SimBody {
    Full(Option<Bytes>),
    Script(Box<Script>),
}

impl SimBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = SimError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SimError>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Script(script) => script.poll_step(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Script(script) => script.steps.is_empty() && script.tracker.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Script(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use http_body_util::BodyExt;

    use super::*;

    fn send(text: &'static str, content: bool) -> Step {
        Step::Send {
            bytes: Bytes::from_static(text.as_bytes()),
            content,
        }
    }

    fn script(steps: Vec<Step>) -> (Arc<Recorder>, u64, SimBody) {
        let recorder = Arc::new(Recorder::new());
        let seq = recorder.next_seq();
        recorder.push(crate::record::Call {
            seq,
            at_ms: 0,
            method: "POST".into(),
            path: "/".into(),
            headers: Vec::new(),
            body: serde_json::Value::Null,
            model: None,
            stream: true,
            outcome: None,
        });
        let tracker = Tracker::new(recorder.clone(), seq);
        (
            recorder,
            seq,
            SimBody::Script(Box::new(Script::new(steps.into(), tracker))),
        )
    }

    fn outcome(recorder: &Recorder) -> Option<Outcome> {
        recorder.calls()[0].outcome.clone()
    }

    #[tokio::test(start_paused = true)]
    async fn plays_frames_with_delays_and_completes() {
        let (rec, _, mut body) = script(vec![
            send("a", false),
            Step::Wait(Duration::from_secs(3)),
            send("b", true),
            Step::Wait(Duration::ZERO),
            send("c", true),
        ]);
        let start = tokio::time::Instant::now();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "a");
        assert_eq!(start.elapsed(), Duration::ZERO);
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "b");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(outcome(&rec), None);
        let third = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(third, "c");
        assert_eq!(outcome(&rec), Some(Outcome::Completed { chunks: 2 }));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn cut_errors_the_body_and_records_chunks() {
        let (rec, _, mut body) = script(vec![send("a", true), Step::Cut, send("never", true)]);
        assert!(body.frame().await.unwrap().is_ok());
        assert!(matches!(body.frame().await.unwrap(), Err(SimError::Cut)));
        assert!(!body.is_end_stream());
        assert_eq!(outcome(&rec), Some(Outcome::Cut { chunks: 1 }));
    }

    #[tokio::test(start_paused = true)]
    async fn stall_never_ends_and_drop_records_client_gone() {
        let (rec, seq, mut body) = script(vec![send("a", true), send("b", true), Step::Stall]);
        body.frame().await.unwrap().unwrap();
        body.frame().await.unwrap().unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
        assert!(waited.is_err(), "a stalled body must stay silent");
        assert!(!body.is_end_stream());
        assert_eq!(outcome(&rec), None);
        drop(body);
        assert_eq!(
            rec.wait_outcome(seq, Duration::ZERO).await,
            Some(Outcome::ClientGone {
                chunks: 2,
                at_ms: 3_600_000
            })
        );
    }

    #[tokio::test]
    async fn full_body_is_one_exact_frame() {
        let mut body = SimBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame, "hello");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }
}
