//! The stream side of both layers: wrappers around a response's [`EventSource`] that end it
//! when a limit runs out.
//!
//! Each wrapper owns exactly one [`Sleep`]. It is armed at the earliest limit and re-armed
//! lazily: a limit that only moves later (the idle limit, pushed on by every event) is
//! re-armed when the old instant fires, not on every event, so a fast stream costs one clock
//! read per event instead of one timer-wheel update per event. A limit that moves earlier
//! (first output switching from the first-token limit to a shorter idle limit) is re-armed at
//! once, or it would fire late.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use pin_project_lite::pin_project;
use switchyard_core::{BoxError, Event, EventKind, EventSource, Failure, InboundApi};
use switchyard_policy::Timeouts;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::error::{AttemptTimeout, DeadlineExceeded, FirstTokenTimeout, IdleTimeout};

/// How far ahead "never" is: tokio's own stand-in for an unbounded sleep is about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `start + d`, saturating at a far-future instant instead of panicking on overflow (a policy
/// may legitimately say "a very long time").
pub(crate) fn at(start: Instant, d: Duration) -> Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(FAR_FUTURE))
        .unwrap_or(start)
}

/// Which limit fell due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    FirstToken,
    Idle,
    Attempt,
    Deadline,
}

/// One attempt's limits, fixed when the attempt starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttemptClock {
    pub start: Instant,
    pub first_token: Duration,
    pub idle: Duration,
    pub attempt: Option<Duration>,
    pub deadline: Option<Instant>,
}

impl AttemptClock {
    pub fn new(start: Instant, timeouts: &Timeouts, deadline: Option<Instant>) -> Self {
        Self {
            start,
            first_token: timeouts.first_token,
            idle: timeouts.idle,
            attempt: timeouts.attempt,
            deadline,
        }
    }

    /// The next limit to fall due, given when the last event after the first output came
    /// (`None`: no output yet, so the first-token limit applies).
    ///
    /// On a tie the endpoint's own limit wins over the attempt cap, and both win over the
    /// request's deadline: an endpoint that used up its whole allowance has earned the
    /// verdict, while a deadline that merely coincides says nothing about it.
    pub fn next(&self, last_output: Option<Instant>) -> (Instant, Cause) {
        let mut due = match last_output {
            None => (at(self.start, self.first_token), Cause::FirstToken),
            Some(last) => (at(last, self.idle), Cause::Idle),
        };
        if let Some(attempt) = self.attempt {
            let cap = at(self.start, attempt);
            if cap < due.0 {
                due = (cap, Cause::Attempt);
            }
        }
        if let Some(deadline) = self.deadline
            && deadline < due.0
        {
            due = (deadline, Cause::Deadline);
        }
        due
    }

    /// The error for a limit that fell due.
    pub fn error(&self, cause: Cause) -> BoxError {
        match cause {
            Cause::FirstToken => Failure::boxed(FirstTokenTimeout {
                after: self.first_token,
            }),
            Cause::Idle => Failure::boxed(IdleTimeout { after: self.idle }),
            Cause::Attempt => Failure::boxed(AttemptTimeout {
                after: self.attempt.unwrap_or_default(),
            }),
            Cause::Deadline => Failure::boxed(DeadlineExceeded),
        }
    }
}

pin_project! {
    /// An attempt's stream under its first-token, idle, attempt and deadline limits.
    pub(crate) struct AttemptEvents {
        #[pin]
        sleep: Sleep,
        // `None` once the stream has ended or been cut: dropping it closes the upstream.
        inner: Option<Pin<Box<dyn EventSource>>>,
        clock: AttemptClock,
        last_output: Option<Instant>,
        done: bool,
    }
}

impl AttemptEvents {
    pub fn new(inner: Pin<Box<dyn EventSource>>, clock: AttemptClock) -> Self {
        Self {
            sleep: sleep_until(clock.next(None).0),
            inner: Some(inner),
            clock,
            last_output: None,
            done: false,
        }
    }
}

impl EventSource for AttemptEvents {
    fn poll_event(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, BoxError>>> {
        let mut this = self.project();
        if this.inner.is_none() {
            return Poll::Ready(None);
        }
        // The timer is checked before the upstream so that an upstream that is always ready
        // cannot outrun its limits.
        while this.sleep.as_mut().poll(cx).is_ready() {
            let (due, cause) = this.clock.next(*this.last_output);
            if Instant::now() < due {
                this.sleep.as_mut().reset(due);
                continue;
            }
            *this.inner = None;
            // After the terminator the answer is complete: a stalled close is cut quietly.
            if *this.done {
                return Poll::Ready(None);
            }
            return Poll::Ready(Some(Err(this.clock.error(cause))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_event(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(ev))) => {
                // Before the first output only the first-token limit runs: a role chunk or a
                // keep-alive is not output and buys no time.
                if ev.kind == EventKind::Output || this.last_output.is_some() {
                    *this.last_output = Some(Instant::now());
                    let (due, _) = this.clock.next(*this.last_output);
                    if due < this.sleep.deadline() {
                        this.sleep.as_mut().reset(due);
                    }
                }
                if ev.kind == EventKind::Done {
                    *this.done = true;
                }
                Poll::Ready(Some(Ok(ev)))
            }
            Poll::Ready(Some(Err(err))) => {
                // A failed stream is over; waiting on it would only add a second error.
                *this.inner = None;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                *this.inner = None;
                Poll::Ready(None)
            }
        }
    }
}

/// The in-band error event that ends a stream cut at the request's deadline, in the
/// caller's wire format.
pub(crate) fn deadline_event(api: InboundApi) -> Event {
    let bytes = match api {
        InboundApi::OpenAi => OPENAI_DEADLINE_EVENT,
        InboundApi::Anthropic => ANTHROPIC_DEADLINE_EVENT,
    };
    Event {
        bytes: Bytes::from_static(bytes.as_bytes()),
        kind: EventKind::Error,
        usage: None,
    }
}

// Written out once: the message is a constant with nothing to escape, so no JSON encoder
// runs on the request path.
const OPENAI_DEADLINE_EVENT: &str = concat!(
    r#"data: {"error":{"message":""#,
    "the request did not complete within its deadline",
    r#"","type":"timeout","code":"deadline_exceeded"}}"#,
    "\n\n"
);

const ANTHROPIC_DEADLINE_EVENT: &str = concat!(
    "event: error\n",
    r#"data: {"type":"error","error":{"type":"timeout_error","message":""#,
    "the request did not complete within its deadline",
    r#"","code":"deadline_exceeded"}}"#,
    "\n\n"
);

pin_project! {
    /// A response stream under the request's deadline: at the deadline it ends with one
    /// in-band error event and no terminator.
    pub(crate) struct DeadlineEvents {
        #[pin]
        sleep: Sleep,
        inner: Option<Pin<Box<dyn EventSource>>>,
        api: InboundApi,
        done: bool,
    }
}

impl DeadlineEvents {
    pub fn new(inner: Pin<Box<dyn EventSource>>, deadline: Instant, api: InboundApi) -> Self {
        Self {
            sleep: sleep_until(deadline),
            inner: Some(inner),
            api,
            done: false,
        }
    }
}

impl EventSource for DeadlineEvents {
    fn poll_event(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, BoxError>>> {
        let this = self.project();
        if this.inner.is_none() {
            return Poll::Ready(None);
        }
        if this.sleep.poll(cx).is_ready() {
            *this.inner = None;
            if *this.done {
                return Poll::Ready(None);
            }
            return Poll::Ready(Some(Ok(deadline_event(*this.api))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_event(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(ev))) => {
                if ev.kind == EventKind::Done {
                    *this.done = true;
                }
                Poll::Ready(Some(Ok(ev)))
            }
            Poll::Ready(Some(Err(err))) => {
                *this.inner = None;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                *this.inner = None;
                Poll::Ready(None)
            }
        }
    }
}
