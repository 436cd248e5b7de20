use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::{BoxError, Usage};

/// What an event of a streamed response carries, decided once by the wire adapter that
/// parsed it, so that outer layers (commit point, budget, metrics) never parse it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Carries no model output yet (role announcement, empty deltas, keep-alive comments).
    Preamble,
    /// Carries model output: text, a tool-call fragment or a finish reason. The first such
    /// event is a stream's commit point.
    Output,
    /// Carries token usage and nothing the client would see as output.
    Usage,
    /// The stream's terminator (`data: [DONE]` or `message_stop`).
    Done,
    /// An in-band error event from the upstream, or one written by Switchyard.
    Error,
}

/// One server-sent event, already framed (`data: ...\n\n`) in the caller's wire format.
#[derive(Clone, Debug)]
pub struct Event {
    pub bytes: Bytes,
    pub kind: EventKind,
    /// Usage reported by this event (with its cost), when it reports any.
    pub usage: Option<Usage>,
}

/// A stream of [`Event`]s, polled by hyper through [`ProxyBody`] only as fast as the client
/// reads, so backpressure reaches the upstream.
pub trait EventSource: Send + 'static {
    fn poll_event(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, BoxError>>>;
}

/// The response body every layer passes outwards: nothing, one buffered chunk, or a stream
/// of events. Dropping it drops the upstream body with it, which closes the upstream
/// connection of an unfinished stream at once.
pub struct ProxyBody(Kind);

enum Kind {
    Full(Option<Bytes>),
    Events(Pin<Box<dyn EventSource>>),
}

impl ProxyBody {
    pub fn empty() -> Self {
        Self(Kind::Full(None))
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Self::empty()
        } else {
            Self(Kind::Full(Some(bytes)))
        }
    }

    pub fn events(source: impl EventSource) -> Self {
        Self(Kind::Events(Box::pin(source)))
    }

    pub fn from_boxed_events(source: Pin<Box<dyn EventSource>>) -> Self {
        Self(Kind::Events(source))
    }

    /// Takes the event stream out, for a layer that wants to inspect or wrap it; a buffered
    /// body is handed back unchanged.
    pub fn into_events(self) -> Result<Pin<Box<dyn EventSource>>, Self> {
        match self.0 {
            Kind::Events(source) => Ok(source),
            other => Err(Self(other)),
        }
    }

    /// The buffered bytes, if this body is not a stream.
    pub fn as_full(&self) -> Option<&[u8]> {
        match &self.0 {
            Kind::Full(Some(b)) => Some(b),
            Kind::Full(None) => Some(&[]),
            Kind::Events(_) => None,
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.0, Kind::Events(_))
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Full(b) => f
                .debug_struct("ProxyBody::Full")
                .field("len", &b.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Events(_) => f.write_str("ProxyBody::Events"),
        }
    }
}

impl From<Bytes> for ProxyBody {
    fn from(b: Bytes) -> Self {
        Self::full(b)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            // An event may carry only metadata (a usage report the client did not ask to
            // see): it has no bytes and is not written.
            Kind::Events(source) => loop {
                match source.as_mut().poll_event(cx) {
                    Poll::Ready(Some(Ok(ev))) if ev.bytes.is_empty() => continue,
                    other => {
                        return other.map(|ev| ev.map(|ev| ev.map(|ev| Frame::data(ev.bytes))));
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.0, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Events(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;

    struct Script(VecDeque<Event>);
    impl EventSource for Script {
        fn poll_event(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Event, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn ev(s: &'static str, kind: EventKind) -> Event {
        Event {
            bytes: Bytes::from_static(s.as_bytes()),
            kind,
            usage: None,
        }
    }

    #[tokio::test]
    async fn full_body_yields_once_with_exact_size() {
        let body = ProxyBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_stream());
        let bytes = body.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(bytes.as_deref(), Some(&b"hello"[..]));
        assert!(ProxyBody::full("").is_end_stream());
    }

    #[tokio::test]
    async fn event_body_concatenates_event_bytes() {
        let src = Script(VecDeque::from([
            ev("data: {\"a\":1}\n\n", EventKind::Output),
            ev("", EventKind::Usage),
            ev("data: [DONE]\n\n", EventKind::Done),
        ]));
        let body = ProxyBody::events(src);
        assert!(body.is_stream());
        let bytes = body.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(
            bytes.as_deref(),
            Some(&b"data: {\"a\":1}\n\ndata: [DONE]\n\n"[..])
        );
    }

    #[test]
    fn into_events_hands_back_full_bodies() {
        let full = ProxyBody::full("x");
        let back = full.into_events().err();
        assert_eq!(back.as_ref().and_then(|b| b.as_full()), Some(&b"x"[..]));
    }
}
