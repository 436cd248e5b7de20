//! The typed view of an OpenAI-shaped request body: one parse, member ranges into the
//! caller's bytes, and the upstream body rebuilt from those ranges.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::Operation;
use crate::error::RequestError;
use crate::json::{self, ObjectWriter};

/// What a top-level key means to Switchyard. Everything else is [`Field::Other`] and is
/// copied upstream untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Model,
    Messages,
    Prompt,
    Input,
    Stream,
    StreamOptions,
    MaxTokens,
    MaxCompletionTokens,
    User,
    Tools,
    Functions,
    ResponseFormat,
    /// OpenRouter routing fields, which never go upstream.
    Provider,
    Models,
    SessionId,
    Routing,
    Other,
}

impl Field {
    fn of(key: &str) -> Self {
        match key {
            "model" => Self::Model,
            "messages" => Self::Messages,
            "prompt" => Self::Prompt,
            "input" => Self::Input,
            "stream" => Self::Stream,
            "stream_options" => Self::StreamOptions,
            "max_tokens" => Self::MaxTokens,
            "max_completion_tokens" => Self::MaxCompletionTokens,
            "user" => Self::User,
            "tools" => Self::Tools,
            "functions" => Self::Functions,
            "response_format" => Self::ResponseFormat,
            "provider" => Self::Provider,
            "models" => Self::Models,
            "session_id" => Self::SessionId,
            "route" | "transforms" | "preset" | "plugins" => Self::Routing,
            _ => Self::Other,
        }
    }

    fn is_routing(self) -> bool {
        matches!(
            self,
            Self::Provider | Self::Models | Self::SessionId | Self::Routing
        )
    }

    /// Whether the key is a sampling or feature parameter, which an endpoint must support
    /// under `require_parameters`. `user` is attribution, not a feature: counting it would
    /// exclude every endpoint that does not list it.
    fn is_parameter(self) -> bool {
        !self.is_routing()
            && !matches!(
                self,
                Self::Model
                    | Self::Messages
                    | Self::Prompt
                    | Self::Input
                    | Self::Stream
                    | Self::StreamOptions
                    | Self::User
            )
    }
}

/// How the body is adapted for one attempt: what the `compat` layer decides per endpoint,
/// and what the fallback executor asks for (a forced stream, a continuation prefill).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BodyEdits {
    /// Top-level members not to send (parameters the endpoint does not support).
    pub drop: Vec<Box<str>>,
    /// Top-level members to send under another name: `(from, to)`.
    pub rename: Vec<(Box<str>, &'static str)>,
    /// Upper bound for the token limit (`max_tokens` / `max_completion_tokens`).
    pub max_tokens: Option<u64>,
    /// Ask the upstream for a stream (`"stream": true` with `stream_options.include_usage`)
    /// even though the caller asked for a whole body, so that first-token and idle timeouts
    /// guard every request; the answer is aggregated for the caller. Chat and text
    /// completions only; embeddings never stream.
    pub force_stream: bool,
    /// Continue an answer that was cut: this text goes upstream as the assistant's own
    /// words, `{"role":"assistant","content": <prefill>}` after the last message (merged into
    /// the last message when that already is an assistant message with string content).
    /// Chat completions only; an empty string is no prefill.
    pub prefill: Option<String>,
}

impl BodyEdits {
    pub fn is_empty(&self) -> bool {
        self.drop.is_empty()
            && self.rename.is_empty()
            && self.max_tokens.is_none()
            && !self.force_stream
            && self.prefill.is_none()
    }
}

/// A top-level member, as ranges into the raw body.

#[derive(Clone, Debug)]
struct Member {
    /// The key as written, quotes included.
    key: Range<usize>,
    /// The decoded key, kept only when it differs from the written one (it had escapes).
    unescaped: Option<Box<str>>,
    value: Range<usize>,
    field: Field,
    null: bool,
}

/// A caller's request body, parsed once.
///
/// Holds the body bytes and where each top-level member sits in them; the few fields
/// Switchyard routes on are decoded, everything else (messages above all) stays as bytes
/// and is copied upstream as written.
#[derive(Clone)]
pub struct ParsedRequest {
    op: Operation,
    raw: Bytes,
    members: Vec<Member>,
    model: Option<String>,
    models: Vec<String>,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<u64>,
    session_id: Option<String>,
    user: Option<String>,
    provider: Option<Range<usize>>,
    has_tools: bool,
    has_response_format: bool,
    prompt_bytes: usize,
    /// The client's `stream_options` members other than `include_usage` (key, value).
    stream_options_rest: Vec<(Range<usize>, Range<usize>)>,
}

// Hand-written so that a debug log line can never carry the prompt.
impl fmt::Debug for ParsedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedRequest")
            .field("op", &self.op)
            .field("len", &self.raw.len())
            .field("model", &self.model)
            .field("models", &self.models)
            .field("stream", &self.stream)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

fn invalid(param: &'static str, expected: &'static str) -> RequestError {
    RequestError::InvalidParameter { param, expected }
}

fn string_of(v: &RawValue, param: &'static str) -> Result<String, RequestError> {
    if !json::is_string(v) {
        return Err(invalid(param, "a string"));
    }
    json::decode_str(v.get())
        .map(|s| s.into_owned())
        .map_err(|_| invalid(param, "a string"))
}

fn bool_of(v: &RawValue, param: &'static str) -> Result<bool, RequestError> {
    match v.get() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(param, "a boolean")),
    }
}

fn uint_of(v: &RawValue, param: &'static str) -> Result<u64, RequestError> {
    serde_json::from_str::<u64>(v.get()).map_err(|_| invalid(param, "a non-negative integer"))
}

fn strings_of(v: &RawValue, param: &'static str) -> Result<Vec<String>, RequestError> {
    let mut out = Vec::new();
    let mut ok = true;
    let is_array = json::for_each_element(v.get(), |e| {
        if !ok {
            return;
        }
        match json::is_string(e).then(|| json::decode_str(e.get())) {
            Some(Ok(s)) => out.push(s.into_owned()),
            _ => ok = false,
        }
    })
    .unwrap_or(false);
    if is_array && ok {
        Ok(out)
    } else {
        Err(invalid(param, "an array of strings"))
    }
}

impl ParsedRequest {
    /// Parses and validates a request body for `op`.
    pub fn parse(op: Operation, raw: Bytes) -> Result<ParsedRequest, RequestError> {
        let text = std::str::from_utf8(&raw).map_err(|e| RequestError::InvalidJson {
            message: format!("invalid UTF-8: {e}"),
        })?;
        let parsed = json::object_members(text)
            .map_err(|e| RequestError::InvalidJson {
                message: e.to_string(),
            })?
            .ok_or(RequestError::InvalidBody)?;

        let mut req = ParsedRequest {
            op,
            raw: Bytes::new(),
            members: Vec::with_capacity(parsed.len()),
            model: None,
            models: Vec::new(),
            stream: false,
            include_usage: false,
            max_tokens: None,
            session_id: None,
            user: None,
            provider: None,
            has_tools: false,
            has_response_format: false,
            prompt_bytes: 0,
            stream_options_rest: Vec::new(),
        };
        let mut max_tokens = None;
        let mut max_completion_tokens = None;
        let mut main_present = false;

        for m in &parsed {
            let field = Field::of(&m.key);
            let v = m.value;
            let null = json::is_null(v);
            let value = json::range_in(text, v.get());
            // A null optional parameter means "not set", as OpenAI treats it.
            match field {
                _ if null && field != main_field(op) => {}
                Field::Model => req.model = Some(string_of(v, "model")?),
                Field::Models => req.models = strings_of(v, "models")?,
                Field::Stream => req.stream = bool_of(v, "stream")?,
                Field::StreamOptions => req.read_stream_options(text, v)?,
                Field::MaxTokens => max_tokens = Some(uint_of(v, "max_tokens")?),
                Field::MaxCompletionTokens => {
                    max_completion_tokens = Some(uint_of(v, "max_completion_tokens")?);
                }
                Field::SessionId => req.session_id = Some(string_of(v, "session_id")?),
                Field::User => req.user = Some(string_of(v, "user")?),
                Field::Provider => {
                    if !json::is_object(v) {
                        return Err(invalid("provider", "an object"));
                    }
                    req.provider = Some(value.clone());
                }
                Field::Tools | Field::Functions => {
                    if !json::is_array(v) {
                        let param = if field == Field::Tools {
                            "tools"
                        } else {
                            "functions"
                        };
                        return Err(invalid(param, "an array"));
                    }
                    req.has_tools |= json::is_nonempty_array(v);
                }
                Field::ResponseFormat => {
                    if !json::is_object(v) {
                        return Err(invalid("response_format", "an object"));
                    }
                    req.has_response_format = true;
                }
                f if f == main_field(op) => {
                    let ok = match op {
                        Operation::ChatCompletions => json::is_array(v),
                        Operation::Completions | Operation::Embeddings => !null,
                    };
                    main_present = ok;
                    req.prompt_bytes = v.get().len();
                }
                _ => {}
            }
            let key = json::range_in(text, m.key_raw);
            let unescaped = match &m.key {
                Cow::Owned(k) => Some(k.as_str().into()),
                Cow::Borrowed(_) => None,
            };
            req.members.push(Member {
                key,
                unescaped,
                value,
                field,
                null,
            });
        }

        if !main_present {
            return Err(RequestError::MissingParameter {
                param: main_param(op),
            });
        }
        if req.model.is_none() && req.models.is_empty() {
            return Err(RequestError::MissingParameter { param: "model" });
        }
        req.max_tokens = max_completion_tokens.or(max_tokens);
        req.raw = raw;
        Ok(req)
    }

    fn read_stream_options(&mut self, text: &str, v: &RawValue) -> Result<(), RequestError> {
        let members = json::object_members(v.get())
            .ok()
            .flatten()
            .ok_or_else(|| invalid("stream_options", "an object"))?;
        for m in members {
            if m.key == "include_usage" {
                if !json::is_null(m.value) {
                    self.include_usage = bool_of(m.value, "stream_options.include_usage")?;
                }
            } else {
                self.stream_options_rest.push((
                    json::range_in(text, m.key_raw),
                    json::range_in(text, m.value.get()),
                ));
            }
        }
        Ok(())
    }

    /// The operation this body was parsed for.
    pub fn operation(&self) -> Operation {
        self.op
    }

    /// The body exactly as the caller sent it.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// `model`, as written (aliases, comma lists and suffixes are resolved by selection).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// OpenRouter's `models` fallback list, empty when absent.
    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// `stream: true`.
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// Whether the caller asked to see the usage chunk (`stream_options.include_usage`).
    pub fn client_wants_usage(&self) -> bool {
        self.include_usage
    }

    /// Output token limit: `max_completion_tokens`, else `max_tokens`.
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_tokens
    }

    /// OpenRouter's `session_id` for sticky routing.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// `user`, the caller's end-user id.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The raw JSON text of OpenRouter's `provider` object, for the policy crate to parse.
    pub fn provider_raw(&self) -> Option<&str> {
        self.provider
            .as_ref()
            .and_then(|r| std::str::from_utf8(&self.raw[r.clone()]).ok())
    }

    /// A non-empty `tools` (or legacy `functions`) array.
    pub fn has_tools(&self) -> bool {
        self.has_tools
    }

    /// A `response_format` object.
    pub fn has_response_format(&self) -> bool {
        self.has_response_format
    }

    /// Top-level keys that ask for a sampling or feature parameter (`temperature`, `tools`,
    /// `max_tokens`, ...), for `require_parameters`: every non-null member except the
    /// content (`messages`, `prompt`, `input`), `model`, `stream`, `stream_options`, `user`
    /// and the routing fields.
    pub fn parameters(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .filter(|m| m.field.is_parameter() && !m.null)
            .filter_map(|m| match &m.unescaped {
                Some(k) => Some(k.as_ref()),
                None => std::str::from_utf8(&self.raw[m.key.start + 1..m.key.end - 1]).ok(),
            })
    }

    /// A cheap prompt-size estimate: bytes of `messages` / `prompt` / `input` over four,
    /// rounded up. Provider-reported usage always replaces it.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        self.prompt_bytes.div_ceil(4) as u64
    }

    /// The body to send upstream: `model` set to `upstream_model` (first, when the caller
    /// sent none), routing fields removed, and for a stream `stream_options.include_usage`
    /// forced on (keeping the caller's other stream options) so usage can always be metered.
    /// Every other member is copied byte for byte, in order.
    pub fn upstream_body(&self, upstream_model: &str) -> Bytes {
        self.upstream_body_with(upstream_model, &BodyEdits::default())
    }

    /// [`Self::upstream_body`] adapted to one attempt: members dropped or renamed and the
    /// token limit capped as `edits` says (see the `compat` layer), the stream forced on and
    /// a continuation prefill appended to `messages` (see [`BodyEdits`]). `messages` is
    /// spliced as raw text: the caller's messages are never re-encoded.
    pub fn upstream_body_with(&self, upstream_model: &str, edits: &BodyEdits) -> Bytes {
        let prefill = edits
            .prefill
            .as_deref()
            .filter(|p| !p.is_empty() && self.op == Operation::ChatCompletions);
        let extra = prefill.map_or(0, |p| p.len() + 48);
        let mut out = Vec::with_capacity(self.raw.len() + upstream_model.len() + 64 + extra);
        let mut w = ObjectWriter::open(&mut out);
        let force_stream = edits.force_stream && self.op.streams_usage();
        let force_usage = (self.stream || force_stream) && self.op.streams_usage();
        if !self.members.iter().any(|m| m.field == Field::Model) {
            w.str("model", upstream_model);
        }
        let mut wrote_stream = false;
        let mut wrote_stream_options = false;
        for m in &self.members {
            match m.field {
                Field::Model => w.str("model", upstream_model),
                f if f.is_routing() => {}
                Field::StreamOptions if force_usage => {
                    self.write_stream_options(w.key("stream_options"));
                    wrote_stream_options = true;
                }
                Field::Stream if force_stream => {
                    w.raw_key(&self.raw[m.key.clone()])
                        .extend_from_slice(b"true");
                    wrote_stream = true;
                }
                Field::Messages if prefill.is_some() => {
                    let out = w.raw_key(&self.raw[m.key.clone()]);
                    let messages = std::str::from_utf8(&self.raw[m.value.clone()]).unwrap_or("[]");
                    splice_prefill(messages, prefill.unwrap_or_default(), out);
                }
                _ if edits.is_empty() => {
                    w.raw(&self.raw[m.key.clone()], &self.raw[m.value.clone()]);
                }
                f => {
                    let key = self.key_text(m);
                    if edits.drop.iter().any(|d| **d == *key) {
                        continue;
                    }
                    let renamed = edits
                        .rename
                        .iter()
                        .find(|(from, _)| **from == *key)
                        .map(|(_, to)| *to);
                    let capped = match (f, edits.max_tokens, self.max_tokens()) {
                        (Field::MaxTokens | Field::MaxCompletionTokens, Some(cap), Some(n))
                            if n > cap =>
                        {
                            Some(cap)
                        }
                        _ => None,
                    };
                    match (renamed, capped) {
                        (None, None) => {
                            w.raw(&self.raw[m.key.clone()], &self.raw[m.value.clone()]);
                        }
                        (name, cap) => {
                            let out = w.key(name.unwrap_or(key));
                            match cap {
                                Some(cap) => out.extend_from_slice(cap.to_string().as_bytes()),
                                None => out.extend_from_slice(&self.raw[m.value.clone()]),
                            }
                        }
                    }
                }
            }
        }
        if force_stream && !wrote_stream {
            w.key("stream").extend_from_slice(b"true");
        }
        if force_usage && !wrote_stream_options {
            self.write_stream_options(w.key("stream_options"));
        }
        w.close();
        Bytes::from(out)
    }

    /// A member's key as text (keys with escapes compare as their raw text, which never
    /// matches a parameter name and so is never edited).
    fn key_text<'a>(&'a self, m: &'a Member) -> &'a str {
        if let Some(k) = &m.unescaped {
            return k;
        }
        let raw = &self.raw[m.key.clone()];
        let inner = raw
            .strip_prefix(b"\"")
            .and_then(|r| r.strip_suffix(b"\""))
            .unwrap_or(raw);
        std::str::from_utf8(inner).unwrap_or("")
    }

    fn write_stream_options(&self, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::open(out);
        for (k, v) in &self.stream_options_rest {
            w.raw(&self.raw[k.clone()], &self.raw[v.clone()]);
        }
        w.key("include_usage").extend_from_slice(b"true");
        w.close();
    }
}

/// Writes the `messages` array `raw` with `prefill` as the assistant's last words: merged
/// into a trailing assistant message with string content (a caller's own prefill, which the
/// continuation extends), else appended as a new assistant message. Only that last message is
/// re-encoded; everything before it is copied as written.
fn splice_prefill(raw: &str, prefill: &str, out: &mut Vec<u8>) {
    let mut last: Option<&RawValue> = None;
    let is_array = json::for_each_element(raw, |e| last = Some(e)).unwrap_or(false);
    if !is_array {
        // Validated as an array at parse time; never reached, but never send a broken body.
        out.extend_from_slice(raw.as_bytes());
        return;
    }
    if let Some(last) = last
        && let Some(merged) = merge_into_assistant(last, prefill)
    {
        let at = json::range_in(raw, last.get());
        out.extend_from_slice(&raw.as_bytes()[..at.start]);
        out.extend_from_slice(&merged);
        out.extend_from_slice(&raw.as_bytes()[at.end..]);
        return;
    }
    // The array's text ends with `]`: a raw value carries no surrounding whitespace.
    let head = raw.strip_suffix(']').unwrap_or(raw).trim_end();
    out.extend_from_slice(head.as_bytes());
    if last.is_some() {
        out.push(b',');
    }
    let mut w = ObjectWriter::open(out);
    w.str("role", "assistant");
    w.str("content", prefill);
    w.close();
    out.push(b']');
}

/// The assistant message `message` with `prefill` appended to its string content; `None`
/// when it is not an assistant message with string content.
fn merge_into_assistant(message: &RawValue, prefill: &str) -> Option<Vec<u8>> {
    let members = json::object_members(message.get()).ok().flatten()?;
    let role = members.iter().find(|m| m.key == "role")?;
    if !json::is_string(role.value) || json::decode_str(role.value.get()).ok()? != "assistant" {
        return None;
    }
    let content = members.iter().find(|m| m.key == "content")?;
    if !json::is_string(content.value) {
        return None;
    }
    let mut text = json::decode_str(content.value.get()).ok()?.into_owned();
    text.push_str(prefill);
    let mut out = Vec::with_capacity(message.get().len() + prefill.len() + 8);
    let mut w = ObjectWriter::open(&mut out);
    for m in &members {
        if m.key == "content" {
            w.str("content", &text);
        } else {
            w.raw(m.key_raw.as_bytes(), m.value.get().as_bytes());
        }
    }
    w.close();
    Some(out)
}

fn main_field(op: Operation) -> Field {
    match op {
        Operation::ChatCompletions => Field::Messages,
        Operation::Completions => Field::Prompt,
        Operation::Embeddings => Field::Input,
    }
}

fn main_param(op: Operation) -> &'static str {
    match op {
        Operation::ChatCompletions => "messages",
        Operation::Completions => "prompt",
        Operation::Embeddings => "input",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::{Value, json};
    use switchyard_core::ProxyError;

    fn chat(body: &str) -> Result<ParsedRequest, RequestError> {
        ParsedRequest::parse(Operation::ChatCompletions, Bytes::from(body.to_owned()))
    }

    fn err(op: Operation, body: &str) -> RequestError {
        ParsedRequest::parse(op, Bytes::from(body.to_owned())).unwrap_err()
    }

    fn param_err(body: &str) -> (&'static str, Option<String>) {
        let e = chat(body).unwrap_err();
        (e.code(), e.param().map(str::to_owned))
    }

    fn upstream(req: &ParsedRequest, model: &str) -> (String, Value) {
        let b = req.upstream_body(model);
        let s = String::from_utf8(b.to_vec()).unwrap();
        let v: Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
        (s, v)
    }

    const FULL: &str = r#"{
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "caf\u00e9 \"quoted\"  spaced"}],
        "temperature": 0.70,
        "provider": {"order": ["a", "b"], "allow_fallbacks": false},
        "models": ["gpt-4o", "claude"],
        "session_id": "s-1",
        "user": "u-9",
        "route": "fallback", "transforms": ["middle-out"], "preset": "p", "plugins": [],
        "max_tokens": 100,
        "max_completion_tokens": 50,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_object"},
        "seed": 1e2,
        "stream": false
    }"#;

    #[test]
    fn reads_routing_fields() {
        let r = chat(FULL).unwrap();
        assert_eq!(r.operation(), Operation::ChatCompletions);
        assert_eq!(r.model(), Some("gpt-4o"));
        assert_eq!(r.models(), ["gpt-4o", "claude"]);
        assert!(!r.stream());
        assert!(!r.client_wants_usage());
        assert_eq!(r.max_tokens(), Some(50));
        assert_eq!(r.session_id(), Some("s-1"));
        assert_eq!(r.user(), Some("u-9"));
        assert_eq!(
            r.provider_raw(),
            Some(r#"{"order": ["a", "b"], "allow_fallbacks": false}"#)
        );
        assert!(r.has_tools());
        assert!(r.has_response_format());
        assert_eq!(&r.raw()[..], FULL.as_bytes());
        let params: Vec<_> = r.parameters().collect();
        assert_eq!(
            params,
            [
                "temperature",
                "max_tokens",
                "max_completion_tokens",
                "tools",
                "response_format",
                "seed"
            ]
        );
    }

    #[test]
    fn minimal_request_defaults() {
        let r = chat(r#"{"model":"m","messages":[]}"#).unwrap();
        assert_eq!(r.models(), [] as [String; 0]);
        assert!(!r.stream());
        assert_eq!(r.max_tokens(), None);
        assert_eq!(r.session_id(), None);
        assert_eq!(r.user(), None);
        assert_eq!(r.provider_raw(), None);
        assert!(!r.has_tools());
        assert!(!r.has_response_format());
        assert_eq!(r.parameters().count(), 0);
        assert_eq!(r.estimated_prompt_tokens(), 1); // "[]" is 2 bytes
    }

    #[test]
    fn max_tokens_falls_back_to_legacy_field() {
        let r = chat(r#"{"model":"m","messages":[],"max_tokens":7}"#).unwrap();
        assert_eq!(r.max_tokens(), Some(7));
        let r = chat(r#"{"model":"m","messages":[],"max_tokens":7,"max_completion_tokens":null}"#)
            .unwrap();
        assert_eq!(r.max_tokens(), Some(7));
    }

    #[test]
    fn nulls_mean_not_set() {
        let r = chat(
            r#"{"model":"m","messages":[],"stream":null,"stream_options":null,"max_tokens":null,
                "user":null,"provider":null,"tools":null,"response_format":null,"models":null,
                "temperature":null}"#,
        )
        .unwrap();
        assert!(!r.stream());
        assert_eq!(r.max_tokens(), None);
        assert_eq!(r.provider_raw(), None);
        assert!(!r.has_tools() && !r.has_response_format());
        assert_eq!(r.parameters().count(), 0);
    }

    #[test]
    fn tools_must_be_non_empty_to_count() {
        assert!(
            !chat(r#"{"model":"m","messages":[],"tools":[]}"#)
                .unwrap()
                .has_tools()
        );
        assert!(
            chat(r#"{"model":"m","messages":[],"functions":[{"name":"f"}]}"#)
                .unwrap()
                .has_tools()
        );
    }

    #[test]
    fn invalid_json_reports_line_and_column() {
        let e = err(
            Operation::ChatCompletions,
            "{\n  \"model\": \"m\",\n  oops\n}",
        );
        assert_eq!(e.code(), "invalid_json");
        assert_eq!(e.param(), None);
        assert_eq!(e.error_type(), "invalid_request_error");
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        let RequestError::InvalidJson { message } = &e else {
            panic!("{e:?}")
        };
        assert!(message.contains("line 3 column 3"), "{message}");
        for body in ["", "{", "{\"model\":\"m\",}", "{} {}", "nul"] {
            assert_eq!(
                err(Operation::ChatCompletions, body).code(),
                "invalid_json",
                "{body}"
            );
        }
        let e = ParsedRequest::parse(
            Operation::ChatCompletions,
            Bytes::from_static(b"{\"a\":\"\xff\"}"),
        )
        .unwrap_err();
        assert_eq!(e.code(), "invalid_json");
    }

    #[test]
    fn non_objects_are_invalid_bodies() {
        for body in ["[]", "\"x\"", "1", "null", " true "] {
            let e = err(Operation::ChatCompletions, body);
            assert_eq!(e, RequestError::InvalidBody, "{body}");
            assert_eq!(e.code(), "invalid_body");
        }
    }

    #[test]
    fn wrong_types_name_the_parameter() {
        let cases = [
            (r#"{"model":"m","messages":[],"stream":"yes"}"#, "stream"),
            (r#"{"model":"m","messages":[],"stream":1}"#, "stream"),
            (r#"{"model":5,"messages":[]}"#, "model"),
            (r#"{"model":"m","models":"a","messages":[]}"#, "models"),
            (r#"{"model":"m","models":["a",1],"messages":[]}"#, "models"),
            (
                r#"{"model":"m","messages":[],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[],"max_tokens":1.5}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[],"max_tokens":"10"}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[],"max_completion_tokens":true}"#,
                "max_completion_tokens",
            ),
            (r#"{"model":"m","messages":[],"provider":[]}"#, "provider"),
            (
                r#"{"model":"m","messages":[],"provider":"openai"}"#,
                "provider",
            ),
            (
                r#"{"model":"m","messages":[],"session_id":3}"#,
                "session_id",
            ),
            (r#"{"model":"m","messages":[],"user":{}}"#, "user"),
            (r#"{"model":"m","messages":[],"tools":{}}"#, "tools"),
            (
                r#"{"model":"m","messages":[],"functions":"f"}"#,
                "functions",
            ),
            (
                r#"{"model":"m","messages":[],"response_format":"json"}"#,
                "response_format",
            ),
            (
                r#"{"model":"m","messages":[],"stream_options":true}"#,
                "stream_options",
            ),
            (
                r#"{"model":"m","messages":[],"stream_options":{"include_usage":"y"}}"#,
                "stream_options.include_usage",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(
                param_err(body),
                ("invalid_parameter", Some(param.to_owned())),
                "{body}"
            );
        }
    }

    #[test]
    fn missing_content_per_operation() {
        let missing = |op, body| {
            let e = err(op, body);
            (e.code(), e.param().map(str::to_owned))
        };
        let m = |p: &str| ("missing_parameter", Some(p.to_owned()));
        assert_eq!(
            missing(Operation::ChatCompletions, r#"{"model":"m"}"#),
            m("messages")
        );
        assert_eq!(
            missing(
                Operation::ChatCompletions,
                r#"{"model":"m","messages":"hi"}"#
            ),
            m("messages")
        );
        assert_eq!(
            missing(
                Operation::ChatCompletions,
                r#"{"model":"m","messages":null}"#
            ),
            m("messages")
        );
        // The wrong content field for the operation does not count.
        assert_eq!(
            missing(Operation::ChatCompletions, r#"{"model":"m","prompt":"hi"}"#),
            m("messages")
        );
        assert_eq!(
            missing(Operation::Completions, r#"{"model":"m","messages":[]}"#),
            m("prompt")
        );
        assert_eq!(
            missing(Operation::Completions, r#"{"model":"m","prompt":null}"#),
            m("prompt")
        );
        assert_eq!(
            missing(Operation::Embeddings, r#"{"model":"m"}"#),
            m("input")
        );
        assert!(
            ParsedRequest::parse(
                Operation::Completions,
                Bytes::from_static(br#"{"model":"m","prompt":[1,2]}"#)
            )
            .is_ok()
        );
        assert!(
            ParsedRequest::parse(
                Operation::Embeddings,
                Bytes::from_static(br#"{"model":"m","input":"x"}"#)
            )
            .is_ok()
        );
    }

    #[test]
    fn model_may_be_absent_only_with_models() {
        assert_eq!(
            param_err(r#"{"messages":[]}"#),
            ("missing_parameter", Some("model".to_owned()))
        );
        assert_eq!(
            param_err(r#"{"messages":[],"models":[]}"#),
            ("missing_parameter", Some("model".to_owned()))
        );
        assert_eq!(
            param_err(r#"{"messages":[],"model":null}"#),
            ("missing_parameter", Some("model".to_owned()))
        );
        let r = chat(r#"{"messages":[],"models":["a","b"]}"#).unwrap();
        assert_eq!(r.model(), None);
        assert_eq!(r.models(), ["a", "b"]);
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let r = chat(r#"{"model":"a","messages":[],"stream":"bad","model":"b","stream":true}"#)
            .unwrap();
        assert_eq!(r.model(), Some("b"));
        assert!(r.stream());
        // Also when the key is spelled with escapes.
        let r = chat(r#"{"model":"a","messages":[],"mod\u0065l":"c"}"#).unwrap();
        assert_eq!(r.model(), Some("c"));
        let (s, v) = upstream(&r, "up");
        assert_eq!(v["model"], "up");
        assert_eq!(s.matches("model").count(), 1, "{s}");
        // And the validation applies to the last one only.
        assert_eq!(
            param_err(r#"{"model":"m","messages":[],"stream":true,"stream":"x"}"#)
                .1
                .as_deref(),
            Some("stream")
        );
    }

    #[test]
    fn escaped_strings_decode() {
        let r = chat(r#"{"model":"gpt\u002d4o \"x\"","messages":[],"user":"\u00e9"}"#).unwrap();
        assert_eq!(r.model(), Some("gpt-4o \"x\""));
        assert_eq!(r.user(), Some("é"));
        let r = chat(r#"{"model":"m","messages":[],"t\u0065mperature":1}"#).unwrap();
        assert_eq!(r.parameters().collect::<Vec<_>>(), ["temperature"]);
    }

    #[test]
    fn upstream_body_strips_routing_and_rewrites_model() {
        let r = chat(FULL).unwrap();
        let (s, v) = upstream(&r, "gpt-4o-2024-08-06");
        assert_eq!(
            s,
            concat!(
                r#"{"model":"gpt-4o-2024-08-06","#,
                r#""messages":[{"role": "user", "content": "caf\u00e9 \"quoted\"  spaced"}],"#,
                r#""temperature":0.70,"user":"u-9","max_tokens":100,"max_completion_tokens":50,"#,
                r#""tools":[{"type": "function", "function": {"name": "f"}}],"#,
                r#""response_format":{"type": "json_object"},"seed":1e2,"stream":false}"#
            )
        );
        for k in [
            "provider",
            "models",
            "session_id",
            "route",
            "transforms",
            "preset",
            "plugins",
        ] {
            assert!(v.get(k).is_none(), "{k} leaked");
        }
        assert!(v.get("stream_options").is_none());
    }

    #[test]
    fn upstream_body_keeps_every_other_member_byte_identical() {
        let body = r#"{"messages":[{"role":"user","content":"x\ud83d\ude00\n"}],"logit_bias":{"50256":-100},"n":1,"stop":["\n\n"],"extra":{"deep":[1,2.50,{"a":null}]},"models":["a"]}"#;
        let r = chat(body).unwrap();
        let (s, v) = upstream(&r, "m\"x");
        assert_eq!(v["model"], "m\"x");
        let orig: Value = serde_json::from_str(body).unwrap();
        for k in ["messages", "logit_bias", "n", "stop", "extra"] {
            assert_eq!(v[k], orig[k], "{k}");
            let m = r
                .members
                .iter()
                .find(|m| &r.raw[m.key.clone()] == format!("\"{k}\"").as_bytes())
                .unwrap();
            let raw = std::str::from_utf8(&r.raw[m.value.clone()]).unwrap();
            assert!(
                s.contains(&format!("\"{k}\":{raw}")),
                "{k} not byte-identical in {s}"
            );
        }
        // Model first when the caller sent none; order of the rest preserved.
        assert!(s.starts_with(r#"{"model":"m\"x","messages":"#), "{s}");
        let pos = |k: &str| s.find(&format!("\"{k}\":")).unwrap();
        assert!(pos("messages") < pos("logit_bias") && pos("logit_bias") < pos("n"));
        assert!(pos("stop") < pos("extra"));
    }

    #[test]
    fn stream_forces_include_usage_and_keeps_other_options() {
        let r = chat(r#"{"model":"m","messages":[],"stream":true}"#).unwrap();
        assert!(!r.client_wants_usage());
        let (s, v) = upstream(&r, "u");
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert!(
            s.ends_with(r#""stream":true,"stream_options":{"include_usage":true}}"#),
            "{s}"
        );

        let r = chat(
            r#"{"model":"m","stream_options":{"include_usage":false,"continuous_usage_stats":true},"messages":[],"stream":true}"#,
        )
        .unwrap();
        assert!(!r.client_wants_usage());
        let (s, v) = upstream(&r, "u");
        assert_eq!(
            v["stream_options"],
            json!({"continuous_usage_stats": true, "include_usage": true})
        );
        assert!(s.contains(r#""stream_options":{"continuous_usage_stats":true,"include_usage":true},"messages""#), "{s}");

        let r = chat(
            r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(r.client_wants_usage());
        let (_, v) = upstream(&r, "u");
        assert_eq!(v["stream_options"], json!({"include_usage": true}));

        let r = chat(r#"{"model":"m","messages":[],"stream":true,"stream_options":null}"#).unwrap();
        let (s, v) = upstream(&r, "u");
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert_eq!(s.matches("stream_options").count(), 1);
    }

    #[test]
    fn non_streams_leave_stream_options_alone() {
        let body = r#"{"model":"m","messages":[],"stream_options":{"include_usage":false}}"#;
        let r = chat(body).unwrap();
        let (s, _) = upstream(&r, "m");
        assert_eq!(s, body);
        // Embeddings never stream, whatever the body says.
        let body = r#"{"model":"m","input":"x","stream":true}"#;
        let r = ParsedRequest::parse(Operation::Embeddings, Bytes::from_static(body.as_bytes()))
            .unwrap();
        let (s, _) = upstream(&r, "m");
        assert_eq!(s, body);
    }

    #[test]
    fn completions_stream_also_asks_for_usage() {
        let r = ParsedRequest::parse(
            Operation::Completions,
            Bytes::from_static(br#"{"model":"m","prompt":"hi","stream":true}"#),
        )
        .unwrap();
        let (_, v) = upstream(&r, "u");
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn prompt_estimate_counts_content_bytes() {
        let content = "x".repeat(397);
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{content}"}}]}}"#);
        let r = chat(&body).unwrap();
        let messages_len = body.len() - r#"{"model":"m","messages":}"#.len();
        assert_eq!(r.estimated_prompt_tokens(), messages_len.div_ceil(4) as u64);
        let r = ParsedRequest::parse(
            Operation::Embeddings,
            Bytes::from_static(br#"{"model":"m","input":"abcdefghi"}"#),
        )
        .unwrap();
        assert_eq!(r.estimated_prompt_tokens(), 3); // 11 bytes with quotes
    }

    #[test]
    fn debug_does_not_print_the_prompt() {
        let r = chat(r#"{"model":"m","messages":[{"role":"user","content":"secret"}]}"#).unwrap();
        let d = format!("{r:?}");
        assert!(!d.contains("secret"), "{d}");
        assert!(d.contains("ChatCompletions"));
    }

    #[test]
    fn edits_drop_rename_and_cap_while_keeping_everything_else_raw() {
        let req = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"logit_bias":{"1":2},"max_tokens":5000,"temperature":0.3,"seed":7,"provider":{"only":["a"]}}"#).unwrap();
        let edits = BodyEdits {
            drop: vec!["logit_bias".into(), "seed".into()],
            rename: vec![("max_tokens".into(), "max_completion_tokens")],
            max_tokens: Some(4096),
            force_stream: false,
            prefill: None,
        };
        let out = req.upstream_body_with("up", &edits);
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            text,
            r#"{"model":"up","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":4096,"temperature":0.3}"#
        );
        // No edits: identical to the plain upstream body.
        assert_eq!(
            req.upstream_body_with("up", &BodyEdits::default()),
            req.upstream_body("up")
        );
        // A cap above the request's own limit leaves the value as written.
        let loose = BodyEdits {
            max_tokens: Some(10_000),
            ..BodyEdits::default()
        };
        let v: Value = serde_json::from_slice(&req.upstream_body_with("up", &loose)).unwrap();
        assert_eq!(v["max_tokens"], 5000);
        assert_eq!(v["logit_bias"], json!({"1": 2}));
    }

    fn edited(req: &ParsedRequest, edits: &BodyEdits) -> (String, Value) {
        let b = req.upstream_body_with("up", edits);
        let s = String::from_utf8(b.to_vec()).unwrap();
        let v: Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
        (s, v)
    }

    fn forced() -> BodyEdits {
        BodyEdits {
            force_stream: true,
            ..BodyEdits::default()
        }
    }

    fn prefill(text: &str) -> BodyEdits {
        BodyEdits {
            prefill: Some(text.to_owned()),
            ..BodyEdits::default()
        }
    }

    #[test]
    fn new_edits_are_not_empty() {
        assert!(BodyEdits::default().is_empty());
        assert!(!forced().is_empty());
        assert!(!prefill("x").is_empty());
    }

    #[test]
    fn force_stream_replaces_stream_false_in_place() {
        let req = chat(r#"{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#).unwrap();
        let (s, v) = edited(&req, &forced());
        assert_eq!(
            s,
            r#"{"model":"up","stream":true,"messages":[{"role":"user","content":"hi"}],"temperature":0.5,"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(v["stream"], true);
        // The caller's own view is unchanged: it still wants a whole body.
        assert!(!req.stream() && !req.client_wants_usage());
    }

    #[test]
    fn force_stream_appends_stream_when_absent_or_null() {
        let req = chat(r#"{"model":"m","messages":[]}"#).unwrap();
        let (s, _) = edited(&req, &forced());
        assert_eq!(
            s,
            r#"{"model":"up","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#
        );
        let req = chat(r#"{"model":"m","messages":[],"stream":null}"#).unwrap();
        let (s, _) = edited(&req, &forced());
        assert_eq!(s.matches("\"stream\"").count(), 1, "{s}");
        assert!(s.contains(r#""stream":true"#), "{s}");
    }

    #[test]
    fn force_stream_keeps_other_stream_options_and_other_edits() {
        let req = chat(r#"{"model":"m","messages":[],"stream_options":{"include_usage":false,"continuous_usage_stats":true},"seed":1,"max_tokens":900}"#).unwrap();
        let edits = BodyEdits {
            drop: vec!["seed".into()],
            max_tokens: Some(100),
            force_stream: true,
            ..BodyEdits::default()
        };
        let (s, v) = edited(&req, &edits);
        assert_eq!(
            v["stream_options"],
            json!({"continuous_usage_stats": true, "include_usage": true})
        );
        assert_eq!(v["stream"], true);
        assert_eq!(v["max_tokens"], 100);
        assert!(v.get("seed").is_none(), "{s}");
        // Already streaming: forcing changes nothing.
        let req = chat(r#"{"model":"m","messages":[],"stream":true}"#).unwrap();
        assert_eq!(
            req.upstream_body_with("up", &forced()),
            req.upstream_body("up")
        );
    }

    #[test]
    fn force_stream_never_applies_to_embeddings() {
        let body = r#"{"model":"m","input":"x"}"#;
        let r = ParsedRequest::parse(Operation::Embeddings, Bytes::from_static(body.as_bytes()))
            .unwrap();
        let (s, _) = edited(&r, &forced());
        assert_eq!(s, r#"{"model":"up","input":"x"}"#);
        let r = ParsedRequest::parse(
            Operation::Completions,
            Bytes::from_static(br#"{"model":"m","prompt":"p"}"#),
        )
        .unwrap();
        let (_, v) = edited(&r, &forced());
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn prefill_is_appended_as_the_last_message_without_touching_the_others() {
        let req = chat(r#"{"model":"m","messages":[ {"role":"system","content":"caf\u00e9"} , {"role":"user","content":"hi \"x\""} ],"n":1}"#).unwrap();
        let (s, v) = edited(&req, &prefill("Sure, \"the\" ans"));
        assert_eq!(
            s,
            r#"{"model":"up","messages":[ {"role":"system","content":"caf\u00e9"} , {"role":"user","content":"hi \"x\""},{"role":"assistant","content":"Sure, \"the\" ans"}],"n":1}"#
        );
        let messages = v["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages[2],
            json!({"role": "assistant", "content": "Sure, \"the\" ans"})
        );
    }

    #[test]
    fn prefill_into_an_empty_array_and_with_newlines() {
        let req = chat("{\"model\":\"m\",\"messages\":[\n]}").unwrap();
        let (s, v) = edited(&req, &prefill("a\nb"));
        assert_eq!(
            s,
            r#"{"model":"up","messages":[{"role":"assistant","content":"a\nb"}]}"#
        );
        assert_eq!(v["messages"][0]["content"], "a\nb");
        let req =
            chat("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}\n  ]}")
                .unwrap();
        let (_, v) = edited(&req, &prefill("p"));
        assert_eq!(v["messages"][1]["role"], "assistant");
    }

    #[test]
    fn prefill_extends_a_trailing_assistant_message() {
        let req = chat(r#"{"model":"m","messages":[{"role":"user","content":"q"},{"role":"assistant","name":"bot","content":"Once upon"}]}"#).unwrap();
        let (s, v) = edited(&req, &prefill(" a time"));
        assert_eq!(
            s,
            r#"{"model":"up","messages":[{"role":"user","content":"q"},{"role":"assistant","name":"bot","content":"Once upon a time"}]}"#
        );
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
        // Non-string content is not merged into: a new message follows it.
        let req = chat(r#"{"model":"m","messages":[{"role":"assistant","content":[{"type":"text","text":"x"}]}]}"#).unwrap();
        let (_, v) = edited(&req, &prefill("y"));
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["messages"][1],
            json!({"role": "assistant", "content": "y"})
        );
        // A trailing user message is never merged into.
        let req = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
        let (_, v) = edited(&req, &prefill("y"));
        assert_eq!(v["messages"][0]["content"], "x");
        assert_eq!(v["messages"][1]["content"], "y");
    }

    #[test]
    fn empty_prefill_and_other_operations_are_ignored() {
        let req = chat(r#"{"model":"m","messages":[{"role":"user","content":"q"}]}"#).unwrap();
        let (s, _) = edited(&req, &prefill(""));
        assert_eq!(
            s,
            r#"{"model":"up","messages":[{"role":"user","content":"q"}]}"#
        );
        let r = ParsedRequest::parse(
            Operation::Completions,
            Bytes::from_static(br#"{"model":"m","prompt":"p"}"#),
        )
        .unwrap();
        let (s, _) = edited(&r, &prefill("x"));
        assert_eq!(s, r#"{"model":"up","prompt":"p"}"#);
    }

    #[test]
    fn prefill_and_force_stream_together() {
        let req = chat(
            r#"{"model":"m","messages":[{"role":"user","content":"q"}],"provider":{"only":["a"]}}"#,
        )
        .unwrap();
        let edits = BodyEdits {
            force_stream: true,
            prefill: Some("Hel".into()),
            ..BodyEdits::default()
        };
        let (s, _) = edited(&req, &edits);
        assert_eq!(
            s,
            r#"{"model":"up","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"Hel"}],"stream":true,"stream_options":{"include_usage":true}}"#
        );
    }
}
