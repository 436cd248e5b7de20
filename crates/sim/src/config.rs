//! The scriptable part: what a simulated provider does with each request.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the simulated provider answers one request. The default is a healthy, instant,
/// 8-chunk answer; every field adds one fault or delay.
///
/// A chat request whose last message is the assistant's, with string content P, asks for a
/// continuation (assistant prefill): when P is a prefix of the text this behaviour produces
/// ([`crate::expected_text`]), only the rest is generated, in the same chunks (the first one
/// possibly a partial word; see [`crate::continuation_text`]), and completion tokens count
/// those chunks only; otherwise the normal text is generated. Faults and delays apply to a
/// continuation like to any request. Tool-call answers are never continued.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// Non-200 status: respond with it and an OpenAI error body.
    pub status: Option<u16>,
    /// Message of that error body; a per-status default when unset.
    pub error_message: Option<String>,
    /// `code` of that error body, e.g. `context_length_exceeded`; a per-status default when unset.
    pub error_code: Option<String>,
    /// `type` of that error body; a per-status default when unset.
    pub error_type: Option<String>,
    /// `Retry-After` header value of the error response, sent as given.
    pub retry_after: Option<String>,
    /// Wait before the response headers (humantime string, e.g. `"250ms"`).
    #[serde(with = "duration_str")]
    pub headers_delay: Duration,
    /// Stream: wait after the headers and role chunk, before the first content chunk.
    /// Non-stream: added to `headers_delay`.
    #[serde(with = "duration_str")]
    pub first_token_delay: Duration,
    /// Stream: wait between two content chunks.
    #[serde(with = "duration_str")]
    pub chunk_delay: Duration,
    /// Number of content chunks (default 8); each is one generated word followed by a space.
    pub chunks: Option<usize>,
    /// Replaces the generated words; split after each space into chunks, so the content is
    /// exactly this text.
    pub text: Option<String>,
    /// Stream: abort the connection after this many content chunks, without the terminating
    /// chunk. Non-stream: send the headers and half of the body, then abort.
    pub cut_after: Option<usize>,
    /// Stream: after this many content chunks send nothing more and keep the connection open
    /// until the client leaves. Non-stream: send the headers, never the body.
    pub stall_after: Option<usize>,
    /// Stream: the Nth content chunk (1-based) is sent as broken JSON and the stream goes on.
    /// Non-stream: the whole body is broken JSON.
    pub malformed_at: Option<usize>,
    /// Stream: end the body without `data: [DONE]`.
    pub omit_done: bool,
    /// No usage in the response, and no usage chunk even when the client asked for one.
    pub omit_usage: bool,
    /// 200 with empty content and no tool call (finish_reason `"stop"`).
    pub empty: bool,
    /// Read the request, then close the TCP connection with RST before any response byte.
    pub reset: bool,
    /// Read the request and never respond, until the client leaves.
    pub never_answer: bool,
    /// With `status`: only every Nth request answered by this behaviour (the Nth, 2Nth, ...)
    /// fails; the others succeed.
    pub fail_every: Option<u32>,
    /// Answer with a tool call to the request's first tool, its arguments streamed in
    /// `chunks` fragments.
    pub tool_call: bool,
    /// Answer 400 (`invalid_request_error`, "assistant prefill is not supported") to any chat
    /// request whose last message is the assistant's, as a provider without prefill support
    /// does.
    pub reject_prefill: bool,
}

impl Behavior {
    /// A healthy, instant answer of 8 chunks.
    pub fn ok() -> Self {
        Self::default()
    }

    /// Fails with this HTTP status and an OpenAI error body.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the error body's `code`.
    pub fn error_code(mut self, code: impl Into<String>) -> Self {
        self.error_code = Some(code.into());
        self
    }

    /// Sets the error body's `message`.
    pub fn error_message(mut self, message: impl Into<String>) -> Self {
        self.error_message = Some(message.into());
        self
    }

    /// Sets the error body's `type`.
    pub fn error_type(mut self, kind: impl Into<String>) -> Self {
        self.error_type = Some(kind.into());
        self
    }

    /// Sets the `Retry-After` header of the error response.
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Waits this long before the response headers.
    pub fn headers_delay(mut self, delay: Duration) -> Self {
        self.headers_delay = delay;
        self
    }

    /// Waits this long before the first content chunk.
    pub fn first_token_delay(mut self, delay: Duration) -> Self {
        self.first_token_delay = delay;
        self
    }

    /// Waits this long between content chunks.
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Sends this many content chunks.
    pub fn chunks(mut self, chunks: usize) -> Self {
        self.chunks = Some(chunks);
        self
    }

    /// Answers with exactly this text.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Aborts the connection after this many content chunks.
    pub fn cut_after(mut self, chunks: usize) -> Self {
        self.cut_after = Some(chunks);
        self
    }

    /// Goes silent after this many content chunks.
    pub fn stall_after(mut self, chunks: usize) -> Self {
        self.stall_after = Some(chunks);
        self
    }

    /// Breaks the JSON of the Nth content chunk (1-based).
    pub fn malformed_at(mut self, chunk: usize) -> Self {
        self.malformed_at = Some(chunk);
        self
    }

    /// Ends the stream without `data: [DONE]`.
    pub fn omit_done(mut self) -> Self {
        self.omit_done = true;
        self
    }

    /// Reports no usage.
    pub fn omit_usage(mut self) -> Self {
        self.omit_usage = true;
        self
    }

    /// Answers 200 with empty content.
    pub fn empty(mut self) -> Self {
        self.empty = true;
        self
    }

    /// Resets the TCP connection after reading the request.
    pub fn reset(mut self) -> Self {
        self.reset = true;
        self
    }

    /// Never answers.
    pub fn never_answer(mut self) -> Self {
        self.never_answer = true;
        self
    }

    /// With `status`, fails only every Nth request.
    pub fn fail_every(mut self, n: u32) -> Self {
        self.fail_every = Some(n);
        self
    }

    /// Answers with a tool call.
    pub fn tool_call(mut self) -> Self {
        self.tool_call = true;
        self
    }

    /// Rejects requests that end with an assistant message (no prefill support).
    pub fn reject_prefill(mut self) -> Self {
        self.reject_prefill = true;
        self
    }
}

/// Everything one simulated provider does: its name, its key, and its behaviours.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Appears in the generated text, in response ids and as the models' `owned_by`.
    pub name: String,
    /// When set, requests must carry `Authorization: Bearer <key>`, `api-key: <key>` or
    /// `x-api-key: <key>`, or get an OpenAI 401.
    pub api_key: Option<String>,
    /// The behaviour for models not listed in `models`.
    pub default: Behavior,
    /// Behaviour by the request's `model`.
    pub models: HashMap<String, Behavior>,
    /// Consumed one per generation request (chat, completions, embeddings), in order, before
    /// `models` and `default` apply.
    pub sequence: Vec<Behavior>,
}

impl SimConfig {
    /// A healthy provider with this name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Requires this API key.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the behaviour for models not listed.
    pub fn default_behavior(mut self, behavior: Behavior) -> Self {
        self.default = behavior;
        self
    }

    /// Adds (or replaces) a model and its behaviour.
    pub fn model(mut self, model: impl Into<String>, behavior: Behavior) -> Self {
        self.models.insert(model.into(), behavior);
        self
    }

    /// Appends a behaviour to the sequence.
    pub fn then(mut self, behavior: Behavior) -> Self {
        self.sequence.push(behavior);
        self
    }
}

/// Durations as humantime strings (`"250ms"`, `"1s"`), as everywhere in Switchyard's config.
mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn durations_are_humantime_strings() {
        let b: Behavior = serde_json::from_str(
            r#"{"headers_delay":"250ms","first_token_delay":"1s","chunk_delay":"1m 5ms"}"#,
        )
        .unwrap();
        assert_eq!(b.headers_delay, Duration::from_millis(250));
        assert_eq!(b.first_token_delay, Duration::from_secs(1));
        assert_eq!(b.chunk_delay, Duration::from_millis(60_005));
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["headers_delay"], "250ms");
        let back: Behavior = serde_json::from_value(json).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_rejected() {
        assert!(serde_json::from_str::<Behavior>(r#"{"statuss":500}"#).is_err());
        assert!(serde_json::from_str::<Behavior>(r#"{"chunk_delay":"soon"}"#).is_err());
        assert!(serde_json::from_str::<Behavior>(r#"{"chunk_delay":250}"#).is_err());
        assert!(serde_json::from_str::<SimConfig>(r#"{"name":"a","model":{}}"#).is_err());
    }

    #[test]
    fn config_defaults_fill_missing_fields() {
        let c: SimConfig = serde_json::from_str(
            r#"{"name":"flaky","models":{"m":{"status":429,"retry_after":"2"}},"sequence":[{"reset":true}]}"#,
        )
        .unwrap();
        assert_eq!(c.name, "flaky");
        assert_eq!(c.default, Behavior::ok());
        assert_eq!(c.models["m"], Behavior::ok().status(429).retry_after("2"));
        assert_eq!(c.sequence, vec![Behavior::ok().reset()]);
    }

    #[test]
    fn builders_set_their_field() {
        let b = Behavior::ok()
            .status(503)
            .error_code("overloaded")
            .error_message("busy")
            .error_type("server_error")
            .chunks(3)
            .text("a b")
            .cut_after(1)
            .stall_after(2)
            .malformed_at(3)
            .omit_done()
            .omit_usage()
            .empty()
            .never_answer()
            .fail_every(2)
            .tool_call()
            .reject_prefill()
            .chunk_delay(Duration::from_millis(5));
        assert_eq!(b.status, Some(503));
        assert_eq!(b.error_code.as_deref(), Some("overloaded"));
        assert_eq!(b.error_message.as_deref(), Some("busy"));
        assert_eq!(b.error_type.as_deref(), Some("server_error"));
        assert_eq!(b.chunks, Some(3));
        assert_eq!(b.text.as_deref(), Some("a b"));
        assert_eq!(
            (b.cut_after, b.stall_after, b.malformed_at),
            (Some(1), Some(2), Some(3))
        );
        assert!(b.omit_done && b.omit_usage && b.empty && b.never_answer && b.tool_call);
        assert!(b.reject_prefill);
        assert!(!Behavior::ok().reject_prefill);
        let parsed: Behavior = serde_json::from_str(r#"{"reject_prefill":true}"#).unwrap();
        assert_eq!(parsed, Behavior::ok().reject_prefill());
        assert!(!b.reset);
        assert_eq!(b.fail_every, Some(2));
        assert_eq!(b.chunk_delay, Duration::from_millis(5));
        let c = SimConfig::named("x")
            .api_key("k")
            .model("m", b.clone())
            .then(Behavior::ok().reset());
        assert_eq!(c.models["m"], b);
        assert_eq!(c.api_key.as_deref(), Some("k"));
        assert_eq!(c.sequence.len(), 1);
    }
}
