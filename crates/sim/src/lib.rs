//! Simulated LLM providers speaking the real wire formats, with scriptable faults and call
//! recording.
//!
//! A [`Sim`] is an OpenAI-compatible HTTP server on a loopback port (HTTP/1.1 and h2c) whose
//! answers are scripted per request sequence, per model and by default ([`SimConfig`],
//! [`Behavior`]): errors with Retry-After, delays before headers, first token and between
//! chunks, streams that are cut, stall, carry broken JSON or lack `[DONE]`, empty answers,
//! tool calls, TCP resets and requests that are never answered. A chat request that ends with
//! an assistant message continues that answer (assistant prefill, see [`Behavior`]), unless
//! the behaviour rejects prefill as some providers do. Every request is recorded ([`Call`])
//! with how it ended ([`Outcome`]), including when the client went away.
//!
//! It sits outside the proxy: black-box tests, benchmarks and `switchyard demo` point
//! Switchyard's providers at it. It depends on no other Switchyard crate and is never in the
//! proxy's request path. It does not check request parameters beyond what its answers need,
//! and speaks only the OpenAI API so far (the wire code lives in one module per API, so an
//! Anthropic `/v1/messages` module can sit beside it).
//!
//! Remote control for a sim in another process: `GET /_sim/calls`, `POST /_sim/config`
//! (a [`SimConfig`]), `POST /_sim/sequence` (behaviours to append), `POST /_sim/reset`
//! (clear calls). These paths are not recorded.

mod config;
mod error;
mod handler;
mod openai;
mod record;
mod script;
mod server;
mod text;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{Behavior, SimConfig};
pub use record::{Call, Outcome, fingerprint};
pub use text::{DEFAULT_CHUNKS, continuation_text, expected_text, prompt_tokens};

use handler::Shared;

/// A running simulated provider. The server stops when this handle is dropped (in the
/// background) or on [`Sim::shutdown`].
#[derive(Debug)]
pub struct Sim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sim {
    /// Starts a sim on `127.0.0.1` with a free port.
    pub async fn start(config: SimConfig) -> io::Result<Sim> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts a sim on `addr`.
    pub async fn start_on(addr: SocketAddr, config: SimConfig) -> io::Result<Sim> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, shared.clone(), stopped));
        Ok(Sim {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the sim listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL an OpenAI SDK or a policy's `base_url` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A snapshot of the recorded calls, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.recorder.calls()
    }

    /// How many calls are recorded.
    pub fn call_count(&self) -> usize {
        self.shared.recorder.len()
    }

    /// Forgets the recorded calls; arrival numbers keep counting.
    pub fn clear_calls(&self) {
        self.shared.recorder.clear();
    }

    /// Replaces the whole config at runtime (its sequence replaces the pending one, and
    /// `fail_every` counting starts over).
    pub fn set_config(&self, config: SimConfig) {
        self.shared.set_config(config);
    }

    /// Appends a behaviour to the sequence.
    pub fn push_sequence(&self, b: Behavior) {
        self.shared.push_sequence([b]);
    }

    /// TCP connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Waits until call `seq` has finished and returns its outcome; `None` once `timeout`
    /// has passed (also when the call was cleared meanwhile).
    pub async fn wait_outcome(&self, seq: u64, timeout: Duration) -> Option<Outcome> {
        self.shared.recorder.wait_outcome(seq, timeout).await
    }

    /// Stops accepting, lets in-flight responses finish for up to a second, then closes
    /// every connection.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::debug!(%err, "sim: server task failed");
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
