//! Aggregation: the whole-body answer a caller asked for, built from the stream Switchyard
//! forced on the upstream (so first-token and idle timeouts guard every request).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use switchyard_core::{Event, EventKind, Pricing, Usage};

use crate::error::WireError;
use crate::json::{self, ObjectWriter, push_str_literal};
use crate::openai::response::{malformed, upstream_error, write_usage as write_costed_usage};
use crate::{Operation, Rewrite};

/// More choices or tool calls than any real answer has: a hostile or broken upstream, which
/// must not make the per-event lookup quadratic.
const MAX_CHOICES: usize = 128;
const MAX_TOOL_CALLS: usize = 128;

/// The whole-body answer built by [`Aggregator::finish`].
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregated {
    /// A `chat.completion` or `text_completion` body, as the upstream would have answered a
    /// non-streaming request (already rewritten for the caller).
    pub body: Bytes,
    /// The usage the stream reported (with its cost), if it reported any.
    pub usage: Option<Usage>,
    /// No choice carried content, a tool call or a refusal: an empty completion.
    pub empty: bool,
}

/// Folds the events of an already rewritten chat or text completion stream
/// ([`crate::OpenAiEventStream`]) into the non-streaming body the caller asked for.
///
/// Every event's JSON is parsed once; text, refusals, reasoning and tool-call arguments are
/// appended to growing buffers, so the work is linear in the stream's size. Members the
/// stream carried once (`id`, `created`, `model`, `provider`, `system_fingerprint`,
/// `service_tier`, `metadata`) are copied as written.
#[derive(Debug)]
pub struct Aggregator {
    op: Operation,
    client_wants_usage: bool,
    upstream_model: Option<String>,
    /// Set by [`Aggregator::with_rewrite`]: the body names this model and provider and
    /// its usage is costed at these prices, whatever the chunks said.
    rewrite: Option<(Arc<str>, Arc<str>, Pricing)>,
    id: Option<String>,
    created: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    system_fingerprint: Option<String>,
    service_tier: Option<String>,
    metadata: Option<String>,
    /// The last `usage` object as written (it already carries `cost`).
    usage_raw: Option<String>,
    usage: Option<Usage>,
    choices: Vec<Choice>,
    output_events: u64,
    failed: Option<WireError>,
}

#[derive(Debug, Default)]
struct Choice {
    index: u32,
    role: Option<String>,
    /// `delta.content` for chat, `text` for text completions.
    content: String,
    refusal: Option<String>,
    reasoning: Option<String>,
    reasoning_content: Option<String>,
    tool_calls: Vec<ToolCall>,
    function_call: Option<FunctionCall>,
    /// Raw elements of `delta.annotations` (citations).
    annotations: Vec<String>,
    logprobs: Option<Logprobs>,
    finish_reason: Option<String>,
    native_finish_reason: Option<String>,
}

#[derive(Debug, Default)]
struct ToolCall {
    index: u32,
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

#[derive(Debug, Default)]
struct FunctionCall {
    name: String,
    arguments: String,
}

/// `logprobs` as an object of arrays (`content` and `refusal` for chat; `tokens`,
/// `token_logprobs`, `top_logprobs`, `text_offset` for text completions), each array
/// concatenated across chunks; raw elements.
#[derive(Debug, Default)]
struct Logprobs {
    members: Vec<(String, Option<Vec<String>>)>,
}

#[derive(Default, Deserialize)]
pub(crate) struct Chunk<'a> {
    #[serde(borrow, default)]
    pub(crate) error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) choices: Option<Vec<ChoiceChunk<'a>>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    created: Option<&'a RawValue>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    provider: Option<&'a RawValue>,
    #[serde(borrow, default)]
    system_fingerprint: Option<&'a RawValue>,
    #[serde(borrow, default)]
    service_tier: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
}

impl ChoiceChunk<'_> {
    /// Whether this choice carries model output: the verdict the stream adapter's
    /// member-by-member classification gives (a `null` member deserializes to `None`).
    pub(crate) fn has_output(&self, op: Operation) -> bool {
        let text = |v: Option<&RawValue>| {
            v.is_some_and(|v| json::is_nonempty_string(v) || json::is_nonempty_array(v))
        };
        self.finish_reason.is_some()
            || (op == Operation::Completions && self.text.is_some_and(json::is_nonempty_string))
            || self.delta.as_ref().is_some_and(|d| {
                text(d.content)
                    || text(d.refusal)
                    || text(d.reasoning)
                    || text(d.reasoning_content)
                    || d.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                    || d.function_call.is_some()
            })
    }
}

/// An [`Aggregator`] shared between a stream adapter (attached with
/// [`crate::OpenAiEventStream::with_sink`]), which folds in each chunk from the parse it
/// makes anyway, and the caller that reads the stream's events and the aggregate. Every
/// chunk but `[DONE]` and in-band errors is folded in.
///
/// Two kinds: [`AggregateSink::new`] for a caller that wants a whole body, not the stream
/// (each chunk is parsed once, into the aggregator's typed view, and its event carries no
/// bytes), and [`AggregateSink::tap`] for a caller that passes the stream on (events keep
/// their bytes; the aggregate is folded from the parse that rewrote them).
#[derive(Clone, Debug)]
pub struct AggregateSink(Arc<SinkInner>);

#[derive(Debug)]
struct SinkInner {
    agg: Mutex<Option<Aggregator>>,
    pass_on: bool,
    attached: AtomicBool,
}

impl AggregateSink {
    /// A sink that takes the stream's chunks in place of the caller.
    pub fn new(agg: Aggregator) -> Self {
        Self::with_mode(agg, false)
    }

    /// A sink that folds the chunks in while the stream passes them on.
    pub fn tap(agg: Aggregator) -> Self {
        Self::with_mode(agg, true)
    }

    fn with_mode(agg: Aggregator, pass_on: bool) -> Self {
        Self(Arc::new(SinkInner {
            agg: Mutex::new(Some(agg)),
            pass_on,
            attached: AtomicBool::new(false),
        }))
    }

    /// Whether the events keep their bytes ([`AggregateSink::tap`]).
    pub fn passes_on(&self) -> bool {
        self.0.pass_on
    }

    /// Whether a stream adapter feeds this sink. One that does not (a response that was not
    /// an SSE stream, or an inner service that does not know sinks) leaves folding to the
    /// caller.
    pub fn attached(&self) -> bool {
        self.0.attached.load(Ordering::Acquire)
    }

    pub(crate) fn attach(&self) {
        self.0.attached.store(true, Ordering::Release);
    }

    /// Runs `f` on the aggregator; `None` once it was taken.
    pub fn with<R>(&self, f: impl FnOnce(&mut Aggregator) -> R) -> Option<R> {
        // Nothing under this lock panics halfway through an update.
        let mut guard = self.0.agg.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_mut().map(f)
    }

    /// Takes the aggregator out; chunks the stream reads after this are dropped.
    pub fn take(&self) -> Option<Aggregator> {
        self.0
            .agg
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl<'a> Chunk<'a> {
    /// The chunk a member walk found (members deduplicated, the last kept) with its choices
    /// already parsed: what parsing it whole would give, without parsing it again. `choices`
    /// is `None` for a chunk without choices (or with `null`).
    pub(crate) fn from_members(
        members: &[json::Member<'a>],
        choices: Option<Vec<ChoiceChunk<'a>>>,
    ) -> Self {
        let mut c = Chunk {
            choices,
            ..Chunk::default()
        };
        for m in members {
            // A `null` member is absent to the typed parse too.
            let v = (!json::is_null(m.value)).then_some(m.value);
            match m.key.as_ref() {
                "error" => c.error = v,
                "usage" => c.usage = v,
                "id" => c.id = v,
                "created" => c.created = v,
                "model" => c.model = v,
                "provider" => c.provider = v,
                "system_fingerprint" => c.system_fingerprint = v,
                "service_tier" => c.service_tier = v,
                "metadata" => c.metadata = v,
                _ => {}
            }
        }
        c
    }
}

#[derive(Deserialize)]
pub(crate) struct ChoiceChunk<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    /// Text completions.
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    logprobs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
    #[serde(borrow, default)]
    native_finish_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct Delta<'a> {
    #[serde(borrow, default)]
    role: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallChunk<'a>>>,
    #[serde(borrow, default)]
    function_call: Option<FunctionChunk<'a>>,
    #[serde(borrow, default)]
    annotations: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
pub(crate) struct ToolCallChunk<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function: Option<FunctionChunk<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionChunk<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

/// The text of a raw value: a string decoded, content parts (`[{"type":"text","text":..}]`)
/// joined, anything else (a provider sending tool arguments as an object) as written.
fn text_of(v: &RawValue) -> Cow<'_, str> {
    if json::is_string(v) {
        return json::decode_str(v.get()).unwrap_or(Cow::Borrowed(""));
    }
    if json::is_array(v) {
        let mut out = String::new();
        let _ = json::for_each_element(v.get(), |part| {
            if json::is_string(part) {
                out.push_str(&text_of(part));
            } else if let Ok(Some(members)) = json::object_members(part.get())
                && let Some(t) = members.iter().find(|m| m.key == "text")
                && json::is_string(t.value)
            {
                out.push_str(&text_of(t.value));
            }
        });
        return Cow::Owned(out);
    }
    Cow::Borrowed(v.get())
}

/// Keeps the first value seen.
fn first(slot: &mut Option<String>, v: Option<&RawValue>) {
    if slot.is_none()
        && let Some(v) = v
    {
        *slot = Some(v.get().to_owned());
    }
}

/// Keeps the last value seen.
fn last(slot: &mut Option<String>, v: Option<&RawValue>) {
    if let Some(v) = v {
        *slot = Some(v.get().to_owned());
    }
}

fn append(slot: &mut Option<String>, v: Option<&RawValue>) {
    if let Some(v) = v {
        slot.get_or_insert_with(String::new).push_str(&text_of(v));
    }
}

/// The `data` of a framed SSE event (`event:` lines and comments skipped, several `data:`
/// lines joined with `\n`).
fn sse_data(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut lines = bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter_map(|l| l.strip_prefix(b"data:"))
        .map(|l| l.strip_prefix(b" ").unwrap_or(l));
    let Some(first) = lines.next() else {
        return Cow::Borrowed(&[]);
    };
    match lines.next() {
        None => Cow::Borrowed(first),
        Some(second) => {
            let mut joined = Vec::with_capacity(bytes.len());
            joined.extend_from_slice(first);
            for l in std::iter::once(second).chain(lines) {
                joined.push(b'\n');
                joined.extend_from_slice(l);
            }
            Cow::Owned(joined)
        }
    }
}

impl Aggregator {
    /// An aggregator for a stream of `op` (chat or text completions).
    ///
    /// `client_wants_usage` says whether the body shows `usage`: pass `true` for a caller
    /// that asked for a whole body (OpenAI always reports usage there). The usage the stream
    /// reported is returned in [`Aggregated::usage`] either way. The stream may have hidden
    /// its usage chunk (`Rewrite::client_wants_usage` false): the usage object is then
    /// rebuilt from [`Event::usage`].
    pub fn new(op: Operation, client_wants_usage: bool) -> Self {
        Self {
            op,
            client_wants_usage,
            upstream_model: None,
            rewrite: None,
            id: None,
            created: None,
            model: None,
            provider: None,
            system_fingerprint: None,
            service_tier: None,
            metadata: None,
            usage_raw: None,
            usage: None,
            choices: Vec::new(),
            output_events: 0,
            failed: None,
        }
    }

    /// Adds `metadata.upstream_model` to a body whose chunks carried no `metadata`, as
    /// [`crate::rewrite_response`] does for a whole body.
    pub fn with_upstream_model(mut self, upstream_model: impl Into<String>) -> Self {
        self.upstream_model = Some(upstream_model.into());
        self
    }

    /// Rewrites the body for the caller as [`crate::OpenAiEventStream`] rewrites chunks:
    /// `model` and `provider` from `rw`, `usage.cost` at `rw.pricing`, and
    /// `metadata.upstream_model` as [`Self::with_upstream_model`] adds it. Needed in an
    /// [`AggregateSink`], which is fed the chunks as the upstream wrote them; a body built
    /// from already rewritten chunks comes out the same with or without it.
    pub fn with_rewrite(mut self, rw: &Rewrite) -> Self {
        self.upstream_model = Some(rw.upstream_model.to_string());
        self.rewrite = Some((rw.model.clone(), rw.provider.clone(), rw.pricing));
        self
    }

    /// Takes in one event of the stream, in order.
    ///
    /// Errors, which also make [`Self::finish`] fail: a chunk that is not the JSON a chat or
    /// text completion chunk is ([`WireError::Malformed`]), or an in-band `error` event
    /// ([`WireError::UpstreamError`]).
    pub fn push(&mut self, event: &Event) -> Result<(), WireError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.count(event.kind, event.usage);
        if event.kind == EventKind::Done || event.bytes.is_empty() {
            return Ok(());
        }
        let data = sse_data(&event.bytes);
        let data = data.trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            return Ok(());
        }
        // Validated once here: parsing from a `str` lets serde borrow every raw value without
        // checking its UTF-8 again, which parsing from bytes does for each one.
        let result = std::str::from_utf8(data)
            .map_err(|e| malformed(format!("invalid UTF-8: {e}")))
            .and_then(|text| {
                serde_json::from_str::<Chunk<'_>>(text)
                    .map_err(|e| malformed(format!("stream chunk: {e}")))
            })
            .and_then(|chunk| self.absorb(chunk));
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// [`Self::push`] for a chunk the stream adapter already parsed (its event's `kind` and
    /// `usage` found from the same parse), so it is parsed once.
    pub(crate) fn push_parsed(
        &mut self,
        kind: EventKind,
        usage: Option<Usage>,
        chunk: Chunk<'_>,
    ) -> Result<(), WireError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.count(kind, usage);
        let result = self.absorb(chunk);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn count(&mut self, kind: EventKind, usage: Option<Usage>) {
        if kind == EventKind::Output {
            self.output_events += 1;
        }
        if let Some(usage) = usage {
            self.usage = Some(usage);
        }
    }

    fn absorb(&mut self, chunk: Chunk<'_>) -> Result<(), WireError> {
        if let Some(err) = chunk.error {
            return Err(upstream_error(err));
        }
        first(&mut self.id, chunk.id);
        first(&mut self.created, chunk.created);
        first(&mut self.model, chunk.model);
        first(&mut self.provider, chunk.provider);
        first(&mut self.system_fingerprint, chunk.system_fingerprint);
        first(&mut self.service_tier, chunk.service_tier);
        last(&mut self.metadata, chunk.metadata);
        last(&mut self.usage_raw, chunk.usage);
        for c in chunk.choices.unwrap_or_default() {
            let index = c.index.unwrap_or(0);
            let choice = self.choice(index)?;
            choice.absorb(c)?;
        }
        Ok(())
    }

    fn choice(&mut self, index: u32) -> Result<&mut Choice, WireError> {
        let at = match self.choices.iter().position(|c| c.index == index) {
            Some(at) => at,
            None if self.choices.len() >= MAX_CHOICES => {
                return Err(malformed(format!("more than {MAX_CHOICES} choices")));
            }
            None => {
                self.choices.push(Choice {
                    index,
                    ..Choice::default()
                });
                self.choices.len() - 1
            }
        };
        Ok(&mut self.choices[at])
    }

    /// The text generated so far for choice 0 (`content`, or `text` for text completions),
    /// for a continuation prefill.
    pub fn partial_text(&self) -> &str {
        self.choices
            .iter()
            .find(|c| c.index == 0)
            .map_or("", |c| c.content.as_str())
    }

    /// Whether any choice started a tool call (or a legacy function call): such an answer is
    /// never continued.
    pub fn has_tool_calls(&self) -> bool {
        self.choices
            .iter()
            .any(|c| !c.tool_calls.is_empty() || c.function_call.is_some())
    }

    /// Why a pushed event was refused, once one was: every later push and
    /// [`Self::finish`] fail with it.
    pub fn failure(&self) -> Option<WireError> {
        self.failed.clone()
    }

    /// How many [`EventKind::Output`] events were pushed.
    pub fn output_events(&self) -> u64 {
        self.output_events
    }

    /// True while no choice has content, a tool call or a refusal (an empty completion).
    pub fn is_empty(&self) -> bool {
        self.choices.iter().all(Choice::is_empty)
    }

    /// Why the first choice stopped, once the upstream said so.
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices
            .first()
            .and_then(|c| c.finish_reason.as_deref())
    }

    /// The usage reported so far, with its cost.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The whole body. Fails if a pushed event failed, and for embeddings (which never
    /// stream).
    pub fn finish(mut self) -> Result<Aggregated, WireError> {
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        if self.op == Operation::Embeddings {
            return Err(malformed("embeddings are never streamed"));
        }
        self.choices.sort_by_key(|c| c.index);
        let empty = self.choices.iter().all(Choice::is_empty);
        let mut out = Vec::with_capacity(self.size_hint());
        let mut w = ObjectWriter::open(&mut out);
        raw_or(&mut w, "id", self.id.as_deref(), "\"\"");
        let object = match self.op {
            Operation::ChatCompletions => "chat.completion",
            _ => "text_completion",
        };
        w.str("object", object);
        raw_or(&mut w, "created", self.created.as_deref(), "0");
        match &self.rewrite {
            Some((model, provider, _)) => {
                w.str("model", model);
                w.str("provider", provider);
            }
            None => {
                raw_or(&mut w, "model", self.model.as_deref(), "\"\"");
                if let Some(p) = &self.provider {
                    w.key("provider").extend_from_slice(p.as_bytes());
                }
            }
        }
        let choices = w.key("choices");
        choices.push(b'[');
        for (i, c) in self.choices.iter().enumerate() {
            if i > 0 {
                choices.push(b',');
            }
            match self.op {
                Operation::ChatCompletions => c.write_chat(choices),
                _ => c.write_text(choices),
            }
        }
        choices.push(b']');
        if self.client_wants_usage {
            match (&self.usage_raw, &self.usage) {
                (Some(raw), _) => match &self.rewrite {
                    Some((_, _, pricing)) => {
                        write_costed_usage(self.op, raw, pricing, w.key("usage"));
                    }
                    None => w.key("usage").extend_from_slice(raw.as_bytes()),
                },
                (None, Some(u)) => write_usage(w.key("usage"), u),
                (None, None) => {}
            }
        }
        for (key, value) in [
            ("system_fingerprint", &self.system_fingerprint),
            ("service_tier", &self.service_tier),
            ("metadata", &self.metadata),
        ] {
            if let Some(v) = value {
                w.key(key).extend_from_slice(v.as_bytes());
            }
        }
        if self.metadata.is_none()
            && let Some(name) = &self.upstream_model
        {
            let mut meta = ObjectWriter::open(w.key("metadata"));
            meta.str("upstream_model", name);
            meta.close();
        }
        w.close();
        Ok(Aggregated {
            body: Bytes::from(out),
            usage: self.usage,
            empty,
        })
    }

    fn size_hint(&self) -> usize {
        256 + self
            .choices
            .iter()
            .map(|c| {
                c.content.len()
                    + c.refusal.as_ref().map_or(0, String::len)
                    + c.reasoning.as_ref().map_or(0, String::len)
                    + c.reasoning_content.as_ref().map_or(0, String::len)
                    + c.tool_calls
                        .iter()
                        .map(|t| t.arguments.len() + t.name.len() + 64)
                        .sum::<usize>()
                    + 128
            })
            .sum::<usize>()
    }
}

fn raw_or(w: &mut ObjectWriter<'_>, key: &str, value: Option<&str>, default: &str) {
    w.key(key)
        .extend_from_slice(value.unwrap_or(default).as_bytes());
}

/// A usage object rebuilt from metered usage, for a stream whose usage chunk was hidden.
fn write_usage(out: &mut Vec<u8>, u: &Usage) {
    let mut w = ObjectWriter::open(out);
    for (key, n) in [
        ("prompt_tokens", u.prompt_tokens),
        ("completion_tokens", u.completion_tokens),
        (
            "total_tokens",
            u.prompt_tokens.saturating_add(u.completion_tokens),
        ),
    ] {
        w.key(key).extend_from_slice(n.to_string().as_bytes());
    }
    json::push_f64(w.key("cost"), u.cost);
    w.close();
}

fn str_or_null(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str_literal(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

impl Choice {
    fn absorb(&mut self, c: ChoiceChunk<'_>) -> Result<(), WireError> {
        if let Some(text) = c.text {
            self.content.push_str(&text_of(text));
        }
        if let Some(d) = c.delta {
            if self.role.is_none()
                && let Some(role) = d.role
            {
                self.role = Some(text_of(role).into_owned());
            }
            if let Some(content) = d.content {
                self.content.push_str(&text_of(content));
            }
            append(&mut self.refusal, d.refusal);
            append(&mut self.reasoning, d.reasoning);
            append(&mut self.reasoning_content, d.reasoning_content);
            for t in d.tool_calls.unwrap_or_default() {
                self.absorb_tool_call(t)?;
            }
            if let Some(f) = d.function_call {
                let call = self.function_call.get_or_insert_with(FunctionCall::default);
                if call.name.is_empty()
                    && let Some(name) = f.name
                {
                    call.name = text_of(name).into_owned();
                }
                if let Some(args) = f.arguments {
                    call.arguments.push_str(&text_of(args));
                }
            }
            for a in d.annotations.unwrap_or_default() {
                self.annotations.push(a.get().to_owned());
            }
        }
        if let Some(lp) = c.logprobs {
            self.logprobs
                .get_or_insert_with(Logprobs::default)
                .absorb(lp);
        }
        last(&mut self.finish_reason, c.finish_reason);
        last(&mut self.native_finish_reason, c.native_finish_reason);
        Ok(())
    }

    fn absorb_tool_call(&mut self, t: ToolCallChunk<'_>) -> Result<(), WireError> {
        let id = t.id.map(|v| text_of(v).into_owned());
        // Some OpenAI-compatible servers omit `index`: a fragment with a new id starts a new
        // call, one without an id continues the last call.
        let index = match t.index {
            Some(i) => i,
            None => match (self.tool_calls.last(), &id) {
                (Some(prev), Some(id)) if prev.id.as_deref() != Some(id.as_str()) => {
                    prev.index.saturating_add(1)
                }
                (Some(prev), _) => prev.index,
                (None, _) => 0,
            },
        };
        let at = match self.tool_calls.iter().position(|c| c.index == index) {
            Some(at) => at,
            None if self.tool_calls.len() >= MAX_TOOL_CALLS => {
                return Err(malformed(format!("more than {MAX_TOOL_CALLS} tool calls")));
            }
            None => {
                self.tool_calls.push(ToolCall {
                    index,
                    ..ToolCall::default()
                });
                self.tool_calls.len() - 1
            }
        };
        let call = &mut self.tool_calls[at];
        if call.id.is_none() {
            call.id = id;
        }
        if call.kind.is_none() {
            call.kind = t.kind.map(|v| text_of(v).into_owned());
        }
        if let Some(f) = t.function {
            // The name arrives whole in the call's first fragment; a server repeating it in
            // later fragments must not double it.
            if call.name.is_empty()
                && let Some(name) = f.name
            {
                call.name = text_of(name).into_owned();
            }
            if let Some(args) = f.arguments {
                call.arguments.push_str(&text_of(args));
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.content.is_empty()
            && self.tool_calls.is_empty()
            && self.function_call.is_none()
            && self.refusal.as_deref().is_none_or(str::is_empty)
    }

    fn write_chat(&self, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::open(out);
        w.key("index")
            .extend_from_slice(self.index.to_string().as_bytes());
        let mut m = ObjectWriter::open(w.key("message"));
        m.str("role", self.role.as_deref().unwrap_or("assistant"));
        // OpenAI answers a tool call (or a refusal) with `content: null`, plain text with a
        // string, and an empty completion with "".
        let calls = !self.tool_calls.is_empty() || self.function_call.is_some();
        let refused = self.refusal.as_deref().is_some_and(|r| !r.is_empty());
        let content =
            (!self.content.is_empty() || !(calls || refused)).then_some(self.content.as_str());
        str_or_null(m.key("content"), content);
        str_or_null(m.key("refusal"), self.refusal.as_deref());
        if let Some(r) = &self.reasoning {
            m.str("reasoning", r);
        }
        if let Some(r) = &self.reasoning_content {
            m.str("reasoning_content", r);
        }
        if !self.tool_calls.is_empty() {
            let out = m.key("tool_calls");
            out.push(b'[');
            for (i, t) in self.tool_calls.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let mut call = ObjectWriter::open(out);
                call.str("id", t.id.as_deref().unwrap_or(""));
                call.str("type", t.kind.as_deref().unwrap_or("function"));
                let mut f = ObjectWriter::open(call.key("function"));
                f.str("name", &t.name);
                f.str("arguments", &t.arguments);
                f.close();
                call.close();
            }
            out.push(b']');
        }
        if let Some(f) = &self.function_call {
            let mut call = ObjectWriter::open(m.key("function_call"));
            call.str("name", &f.name);
            call.str("arguments", &f.arguments);
            call.close();
        }
        if !self.annotations.is_empty() {
            write_raw_array(m.key("annotations"), &self.annotations);
        }
        m.close();
        self.write_tail(&mut w);
        w.close();
    }

    fn write_text(&self, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::open(out);
        w.str("text", &self.content);
        w.key("index")
            .extend_from_slice(self.index.to_string().as_bytes());
        self.write_tail(&mut w);
        w.close();
    }

    /// `logprobs`, `finish_reason` (null when the stream never finished) and OpenRouter's
    /// `native_finish_reason`.
    fn write_tail(&self, w: &mut ObjectWriter<'_>) {
        match &self.logprobs {
            Some(lp) => lp.write(w.key("logprobs")),
            None => w.key("logprobs").extend_from_slice(b"null"),
        }
        raw_or(w, "finish_reason", self.finish_reason.as_deref(), "null");
        if let Some(n) = &self.native_finish_reason {
            w.key("native_finish_reason")
                .extend_from_slice(n.as_bytes());
        }
    }
}

fn write_raw_array(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.as_bytes());
    }
    out.push(b']');
}

impl Logprobs {
    fn absorb(&mut self, lp: &RawValue) {
        let Ok(Some(members)) = json::object_members(lp.get()) else {
            return;
        };
        for m in members {
            let at = match self.members.iter().position(|(k, _)| *k == m.key) {
                Some(at) => at,
                None => {
                    self.members.push((m.key.into_owned(), None));
                    self.members.len() - 1
                }
            };
            if !json::is_array(m.value) {
                continue;
            }
            let slot = self.members[at].1.get_or_insert_with(Vec::new);
            let _ = json::for_each_element(m.value.get(), |e| slot.push(e.get().to_owned()));
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::open(out);
        for (key, items) in &self.members {
            match items {
                Some(items) => write_raw_array(w.key(key), items),
                None => w.key(key).extend_from_slice(b"null"),
            }
        }
        w.close();
    }
}

#[cfg(test)]
mod tests;
