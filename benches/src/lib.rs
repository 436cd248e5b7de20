//! Fixtures for Switchyard's micro-benchmarks (`benches/*.rs`, run with
//! `cargo bench -p switchyard-benches`; `cargo bench -p switchyard-benches -- --test` runs each
//! benchmark once, as CI does).
//!
//! The benchmarks measure the proxy's CPU cost per request on realistic inputs: a ~2 KB chat
//! request with tools and OpenRouter routing fields ([`chat_request`]), the 200-event stream
//! and the completion an upstream answers it with ([`chat_stream_events`],
//! [`chat_completion`]), error rendering, the routing decision over a 50-model policy, and the
//! whole tower stack built by `switchyard_stack::proxy_with` over a [`CannedUpstream`] that
//! does the real upstream's work minus the network. Each routing and stack number comes with a
//! direct-call baseline from the same run ([`direct_request`] for the stack), so the overhead is
//! a ratio, not a guess.
//!
//! This crate sits outside the proxy and is never part of it. It opens no sockets: network
//! latency, TLS and hyper's own I/O are not measured here (the black-box tests and a load
//! generator against `switchyard run` cover those).

mod error;
mod fixtures;
mod policy;
mod upstream;

#[cfg(test)]
mod tests;

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use switchyard_core::{BoxError, EventKind, EventSource};

pub use error::{FailedAttempt, FixtureError, MissingEndpoint, ProvidersExhausted};
pub use fixtures::{
    CONTENT_CHUNKS, MODEL, PROMPT_TOKENS, PROVIDER, STREAM_EVENTS, UPSTREAM_MODEL, chat_completion,
    chat_request, chat_stream_events, chat_stream_frames, pricing, rewrite,
};
pub use policy::{BENCH_KEY, BenchEnv, POLICY_JSON, policy, policy_store};
pub use upstream::{
    CannedUpstream, FrameBody, SentLog, collect_body, direct_request, proxy_request,
};

/// What draining an event stream yielded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Events yielded, including those with no bytes for the client.
    pub events: usize,
    /// Bytes the client would be sent.
    pub bytes: usize,
    /// Events classified [`EventKind::Output`].
    pub output: usize,
    /// Whether a [`EventKind::Done`] event was seen.
    pub done: bool,
}

/// Polls an event source to its end. The sources the benchmarks build never wait (their
/// bodies are in memory), so a `Pending` is reported as an error instead of spinning.
pub fn drain<S: EventSource + ?Sized>(mut source: Pin<&mut S>) -> Result<Drained, BoxError> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Drained::default();
    loop {
        match source.as_mut().poll_event(&mut cx) {
            Poll::Ready(Some(Ok(ev))) => {
                out.events += 1;
                out.bytes += ev.bytes.len();
                out.output += usize::from(ev.kind == EventKind::Output);
                out.done |= ev.kind == EventKind::Done;
            }
            Poll::Ready(Some(Err(e))) => return Err(e),
            Poll::Ready(None) => return Ok(out),
            Poll::Pending => return Err("an in-memory event source returned Pending".into()),
        }
    }
}

/// The value of a fixture, or the end of the benchmark process with the error: a benchmark
/// that went on with a broken fixture would time an error path and report it as the result.
pub fn or_exit<T, E: fmt::Display>(what: &str, result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => {
            eprintln!("switchyard-benches: {what}: {e}");
            std::process::exit(1)
        }
    }
}
