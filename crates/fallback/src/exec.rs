//! The attempt loop, up to the commit point.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::poll_fn;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, request::Parts};
use switchyard_core::{
    AttemptObserver, AttemptPrice, AttemptReport, BoxError, Class, Deadline, Event, EventKind,
    EventSource, Failure, ProxyBody, Served, SpendGuard,
};
use switchyard_policy::{Endpoint, Plan, Retry, Snapshot};
use switchyard_wire::{
    AggregateSink, Aggregator, BodyEdits, Operation, ParsedRequest, Rewrite, WireError,
};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::RetryBudget;
use crate::committed::Committed;
use crate::error::{AttemptSummary, NoHealthyEndpoint, NoPlan, ProvidersExhausted};

pub(crate) type Source = Pin<Box<dyn EventSource>>;

/// Everything one request's attempts share.
pub(crate) struct Exec<S> {
    pub(crate) inner: S,
    pub(crate) observers: Arc<[Arc<dyn AttemptObserver>]>,
    budget: Arc<RetryBudget>,
    /// Headers and extensions every attempt request starts from.
    pub(crate) parts: Parts,
    pub(crate) parsed: Arc<ParsedRequest>,
    pub(crate) plan: Arc<Plan>,
    pub(crate) retry: Retry,
    pub(crate) deadline: Option<Instant>,
    /// The client reads a non-streaming answer, built from an upstream stream.
    aggregate: bool,
    /// `retry.buffer` for a streaming client: hold the answer until it is complete.
    buffer: bool,
    pub(crate) trail: Vec<AttemptSummary>,
    pub(crate) attempts: u32,
    request_id: Option<Arc<str>>,
    /// The previous attempt's verdict: why this one is a retry or a fallback.
    last_class: Option<Class>,
    /// The request's budgets, when any apply.
    guard: Option<Arc<dyn SpendGuard>>,
    /// Reservations made so far (each attempt's is numbered anew, even for one that was then
    /// skipped, so no reservation id is ever reused).
    reservations: u32,
    /// The first budget refusal: what the caller gets if no candidate fits any budget.
    budget_refusal: Option<BoxError>,
}

/// What one attempt came to, before the commit point. Lives for one attempt, on the stack
/// of the executor: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Verdict {
    /// The endpoint was not tried (breaker open, cooling down).
    Skipped {
        retry_in: Option<Duration>,
        why: String,
    },
    /// A stream reached its commit point: these events are held, the rest is in `source`.
    Committed {
        held: VecDeque<Event>,
        source: Source,
        agg: Agg,
        meta: AttemptMeta,
        served: Served,
        parts: http::response::Parts,
    },
    /// A complete answer (non-streaming, aggregated, or buffered).
    Complete(Response<ProxyBody>),
    /// The request itself is over (its deadline passed): no further attempt.
    Fatal(BoxError),
    /// The attempt failed; `response` is the upstream's own answer when it gave one.
    Failed {
        class: Class,
        status: Option<u16>,
        retry_after: Option<Duration>,
        detail: String,
        response: Option<Response<ProxyBody>>,
    },
}

/// An attempt's verdict, read out for reporting.
struct Outcome {
    class: Class,
    status: Option<u16>,
    retry_after: Option<Duration>,
    detail: String,
    usage: Option<switchyard_core::Usage>,
    charge: Charge,
}

/// What an attempt is charged to the caller's budgets.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Charge {
    /// The upstream's reported usage, priced.
    Reported(f64),
    /// No usage was reported: an estimate (prompt estimate plus output seen).
    Estimated(f64),
    /// Nothing reached the caller.
    Nothing,
}

impl Charge {
    fn amount(self) -> (f64, bool) {
        match self {
            Self::Reported(c) => (c, false),
            Self::Estimated(c) => (c, true),
            Self::Nothing => (0.0, false),
        }
    }
}

/// Who an attempt went to and when.
#[derive(Clone, Debug)]
pub(crate) struct AttemptMeta {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) attempt: u32,
    pub(crate) sent_at: Instant,
    pub(crate) ttft: Option<Duration>,
    /// The budget reservation this attempt holds, to be settled when it ends.
    pub(crate) reservation: Option<u32>,
    /// The attempt's span (OpenTelemetry GenAI client span once exported).
    pub(crate) span: tracing::Span,
    /// Where the upstream adapter folds the attempt's answer: the caller's whole body, or
    /// (a tap) the aggregate a streamed answer keeps for a continuation. `None` for a
    /// continuation, which the committed stream folds into the answer it continues.
    pub(crate) sink: Option<AggregateSink>,
}

/// An attempt's aggregate: fed here from the events, or folded by the upstream adapter into
/// a sink from the parse each chunk gets there (the adapter attached it).
pub(crate) enum Agg {
    Local(Box<Aggregator>),
    Sink(AggregateSink),
}

impl Agg {
    /// Takes in an event of the attempt's own stream: already folded in by the adapter when
    /// there is a sink, which only reports what it refused.
    pub(crate) fn push(&mut self, ev: &Event) -> Result<(), WireError> {
        match self {
            Agg::Local(a) => a.push(ev),
            Agg::Sink(s) => s.with(|a| a.failure()).flatten().map_or(Ok(()), Err),
        }
    }

    /// Takes in an event of another stream (a continuation's), which no adapter folded here.
    pub(crate) fn push_unfolded(&mut self, ev: &Event) -> Result<(), WireError> {
        match self {
            Agg::Local(a) => a.push(ev),
            Agg::Sink(s) => s.with(|a| a.push(ev)).unwrap_or(Ok(())),
        }
    }

    fn read<R: Default>(&self, f: impl FnOnce(&Aggregator) -> R) -> R {
        match self {
            Agg::Local(a) => f(a),
            Agg::Sink(s) => s.with(|a| f(a)).unwrap_or_default(),
        }
    }

    pub(crate) fn output_events(&self) -> u64 {
        self.read(Aggregator::output_events)
    }

    /// No content yet; a sink already taken counts as empty.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Agg::Local(a) => a.is_empty(),
            Agg::Sink(s) => s.with(|a| a.is_empty()).unwrap_or(true),
        }
    }

    pub(crate) fn has_finish_reason(&self) -> bool {
        self.read(|a| a.finish_reason().is_some())
    }

    pub(crate) fn has_tool_calls(&self) -> bool {
        self.read(Aggregator::has_tool_calls)
    }

    pub(crate) fn usage(&self) -> Option<switchyard_core::Usage> {
        self.read(Aggregator::usage)
    }

    /// Length in bytes of the text so far (choice 0), for output estimates.
    pub(crate) fn partial_text_len(&self) -> usize {
        self.read(|a| a.partial_text().len())
    }

    /// The text so far (choice 0), for a continuation's prefill.
    pub(crate) fn partial_text(&self) -> String {
        self.read(|a| a.partial_text().to_owned())
    }

    fn into_aggregator(self, op: Operation) -> Aggregator {
        match self {
            Agg::Local(a) => *a,
            Agg::Sink(s) => s.take().unwrap_or_else(|| Aggregator::new(op, true)),
        }
    }
}

impl<S> Exec<S>
where
    S: Service<Request<Arc<ParsedRequest>>, Response = Response<ProxyBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    pub(crate) fn new(
        inner: S,
        observers: Arc<[Arc<dyn AttemptObserver>]>,
        budget: Arc<RetryBudget>,
        req: Request<Arc<ParsedRequest>>,
    ) -> Result<Self, BoxError> {
        let (parts, parsed) = req.into_parts();
        let plan = parts
            .extensions
            .get::<Arc<Plan>>()
            .cloned()
            .ok_or_else(|| Failure::boxed(NoPlan))?;
        let snapshot = parts
            .extensions
            .get::<Arc<Snapshot>>()
            .cloned()
            .ok_or_else(|| Failure::boxed(NoPlan))?;
        let defaults = snapshot.defaults();
        let (retry, timeouts) = match &plan.route {
            Some(r) => (
                defaults.retry.overlay(&r.retry),
                defaults.timeouts.overlay(&r.timeouts),
            ),
            None => (defaults.retry, defaults.timeouts),
        };
        let now = Instant::now();
        // The route's total may be tighter than the default the Deadline layer used.
        let route_deadline = now + timeouts.total;
        let deadline = match parts.extensions.get::<Deadline>() {
            Some(Deadline(d)) => Some((*d).min(route_deadline)),
            None => Some(route_deadline),
        };
        let streamable = parsed.operation() != Operation::Embeddings;
        let aggregate = streamable && !parsed.stream();
        let buffer = streamable && parsed.stream() && retry.buffer;
        budget.deposit(now);
        let request_id = parts
            .headers
            .get("x-switchyard-request-id")
            .and_then(|v| v.to_str().ok())
            .map(Arc::from);
        let guard = parts.extensions.get::<Arc<dyn SpendGuard>>().cloned();
        Ok(Self {
            last_class: None,
            guard,
            reservations: 0,
            budget_refusal: None,
            request_id,
            inner,
            observers,
            budget,
            parts,
            parsed,
            plan,
            retry,
            deadline,
            aggregate,
            buffer,
            trail: Vec::new(),
            attempts: 0,
        })
    }

    pub(crate) async fn run(mut self) -> Result<Response<ProxyBody>, BoxError> {
        let mut queue: VecDeque<Arc<Endpoint>> = self
            .plan
            .candidates
            .iter()
            .map(|c| c.endpoint.clone())
            .collect();
        let mut per_model: Vec<(Arc<str>, u32)> = Vec::new();
        let mut soonest_retry: Option<Duration> = None;
        let mut retries = 0u32;
        let mut budget_exhausted = false;

        'candidates: while let Some(endpoint) = queue.pop_front() {
            let mut same_retries_left = self.retry.same_endpoint_retries;
            let mut waited_retry_after = false;
            loop {
                let used = per_model
                    .iter()
                    .find(|(m, _)| *m == endpoint.model)
                    .map_or(0, |(_, n)| *n);
                if used >= self.retry.max_attempts {
                    continue 'candidates;
                }
                if self.attempts > 0
                    && !self.budget.withdraw(
                        Instant::now(),
                        self.retry.budget_ratio,
                        self.retry.budget_min_per_s,
                    )
                {
                    budget_exhausted = true;
                    for o in self.observers.iter() {
                        o.retry_budget_refused();
                    }
                    break 'candidates;
                }
                if self.deadline.is_some_and(|d| Instant::now() >= d) {
                    break 'candidates;
                }
                let verdict = self.attempt(&endpoint, None).await;
                match verdict {
                    Verdict::Skipped { retry_in, why } => {
                        soonest_retry = min_opt(soonest_retry, retry_in);
                        self.trail.push(AttemptSummary {
                            attempt: 0,
                            endpoint: endpoint.id.to_string(),
                            provider: endpoint.provider.id.to_string(),
                            model: endpoint.model.to_string(),
                            outcome: "skipped",
                            status: None,
                            latency_ms: 0,
                            detail: why,
                        });
                        continue 'candidates;
                    }
                    Verdict::Committed {
                        held,
                        source,
                        agg,
                        meta,
                        served,
                        parts,
                    } => {
                        let committed = Committed::new(self, held, source, agg, meta);
                        let mut resp = Response::from_parts(parts, committed.into_body());
                        resp.extensions_mut().insert(served);
                        return Ok(resp);
                    }
                    Verdict::Complete(resp) => return Ok(resp),
                    Verdict::Fatal(e) => return Err(e),
                    Verdict::Failed {
                        class,
                        status: _,
                        retry_after,
                        detail: _,
                        response,
                    } => {
                        match per_model.iter_mut().find(|(m, _)| *m == endpoint.model) {
                            Some((_, n)) => *n += 1,
                            None => per_model.push((endpoint.model.clone(), 1)),
                        }
                        match class {
                            Class::ConnectFailed | Class::ServerError if same_retries_left > 0 => {
                                same_retries_left -= 1;
                                self.backoff(retries).await;
                                retries += 1;
                                continue;
                            }
                            Class::RateLimited => {
                                // Model identity is worth a short wait: another provider of the
                                // same model first, then Retry-After on this one, then move on.
                                if let Some(pos) =
                                    queue.iter().position(|e| e.model == endpoint.model)
                                {
                                    if let Some(next) = queue.remove(pos) {
                                        queue.push_front(next);
                                    }
                                    queue.push_back(endpoint.clone());
                                    continue 'candidates;
                                }
                                if let Some(wait) = retry_after
                                    && !waited_retry_after
                                    && wait <= self.retry.max_retry_after_wait
                                    && self.fits_deadline(wait)
                                {
                                    waited_retry_after = true;
                                    tokio::time::sleep(wait).await;
                                    continue;
                                }
                                continue 'candidates;
                            }
                            Class::ContextLength => {
                                let window = self.context_length(&endpoint.model);
                                queue.retain(|e| self.context_length(&e.model) > window);
                                if queue.is_empty() {
                                    return self.pass_through(response);
                                }
                                continue 'candidates;
                            }
                            Class::ContentPolicy | Class::ClientError => {
                                return self.pass_through(response);
                            }
                            _ => continue 'candidates,
                        }
                    }
                }
            }
        }

        if self.trail.iter().all(|a| a.attempt == 0) {
            // Nothing was sent. If budgets refused it, that is the caller's answer (402).
            if let Some(e) = self.budget_refusal {
                return Err(e);
            }
            return Err(Failure::boxed(NoHealthyEndpoint {
                skipped: self.trail,
                retry_in: soonest_retry,
            }));
        }
        Err(Failure::boxed(ProvidersExhausted {
            trail: self.trail,
            budget_exhausted,
        }))
    }

    /// One attempt at `endpoint`, up to its commit point. `prefill` continues a cut answer.
    pub(crate) async fn attempt(
        &mut self,
        endpoint: &Arc<Endpoint>,
        prefill: Option<String>,
    ) -> Verdict {
        let mut extensions = self.parts.extensions.clone();
        extensions.insert(endpoint.clone());
        if let Some(d) = self.deadline {
            extensions.insert(Deadline(d));
        }
        let continuing = prefill.is_some();
        // The worst case is reserved before the first upstream byte, at this endpoint's prices.
        let mut reservation = None;
        let mut max_tokens = None;
        if let Some(guard) = self.guard.clone() {
            self.reservations += 1;
            let price = AttemptPrice {
                model: endpoint.model.clone(),
                endpoint: endpoint.id.clone(),
                pricing: endpoint.pricing,
                max_output_tokens: endpoint.max_output_tokens,
            };
            match guard.reserve(self.reservations, &price).await {
                Ok(cap) => {
                    reservation = Some(self.reservations);
                    max_tokens = cap;
                }
                Err(e) => {
                    let skipped = Failure::find(&*e).is_some_and(|f| f.get().skipped());
                    if !skipped {
                        return Verdict::Fatal(e);
                    }
                    let why = e.to_string();
                    if let Some(f) = Failure::find(&*e) {
                        self.skipped(endpoint, f.get().code());
                    }
                    self.budget_refusal.get_or_insert(e);
                    return Verdict::Skipped {
                        retry_in: None,
                        why,
                    };
                }
            }
        }
        // The upstream adapter folds the answer into a sink from the parse each chunk gets
        // there: a whole body in place of the stream for a non-streaming caller, alongside
        // it for a streaming one. A continuation is folded into the answer it continues.
        let sink = (!continuing && (self.aggregate || self.parsed.stream())).then(|| {
            let agg = self.aggregator(endpoint);
            let sink = if self.aggregate {
                AggregateSink::new(agg)
            } else {
                AggregateSink::tap(agg)
            };
            extensions.insert(sink.clone());
            sink
        });
        if self.aggregate || continuing || max_tokens.is_some() {
            // Compat, inside, merges its per-endpoint edits into these.
            extensions.insert(BodyEdits {
                force_stream: self.aggregate,
                prefill,
                max_tokens,
                ..BodyEdits::default()
            });
        }
        let mut req = Request::new(self.parsed.clone());
        *req.headers_mut() = self.parts.headers.clone();
        *req.uri_mut() = self.parts.uri.clone();
        *req.method_mut() = self.parts.method.clone();
        *req.extensions_mut() = extensions;

        let sent_at = Instant::now();
        let attempt_no = self.attempts + 1;
        let op = self.parsed.operation().as_str();
        let span = tracing::info_span!(
            target: "switchyard",
            "attempt",
            otel.name = %format_args!("{op} {}", endpoint.upstream_model),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = op,
            gen_ai.provider.name = &*endpoint.provider.id,
            gen_ai.request.model = &*endpoint.upstream_model,
            gen_ai.request.max_tokens = self.parsed.max_tokens().and_then(|n| i64::try_from(n).ok()),
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            switchyard.endpoint = &*endpoint.id,
            switchyard.attempt = i64::from(attempt_no),
            switchyard.outcome = tracing::field::Empty,
            switchyard.fallback_reason = self.last_class.map(Class::as_str),
            switchyard.cost_usd = tracing::field::Empty,
            switchyard.usage_estimated = tracing::field::Empty,
            switchyard.ttft_ms = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let mut meta = AttemptMeta {
            endpoint: endpoint.clone(),
            attempt: attempt_no,
            sent_at,
            ttft: None,
            reservation,
            span: span.clone(),
            sink,
        };
        let result = match self.inner.clone().ready_oneshot().await {
            Ok(svc) => svc.oneshot(req).instrument(span).await,
            Err(e) => Err(e),
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                if let Some(f) = Failure::find(&*e)
                    && f.get().skipped()
                {
                    // Not sent: the reservation is released.
                    self.release(&meta).await;
                    self.skipped(endpoint, f.get().code());
                    return Verdict::Skipped {
                        retry_in: f.get().retry_after(),
                        why: f.get().to_string(),
                    };
                }
                // The request's own deadline, not the endpoint's fault: nothing to report.
                if is_deadline(&e) {
                    self.release(&meta).await;
                    return Verdict::Fatal(e);
                }
                self.count_attempt(attempt_no);
                let class = class_of(&e);
                let v = Verdict::Failed {
                    class,
                    status: None,
                    retry_after: None,
                    detail: e.to_string(),
                    response: None,
                };
                self.finish(&meta, &v).await;
                return v;
            }
        };
        self.count_attempt(attempt_no);
        let verdict = self.evaluate(resp, &mut meta, continuing).await;
        match &verdict {
            Verdict::Committed { .. } => {}
            Verdict::Fatal(_) => self.release(&meta).await,
            _ => self.finish(&meta, &verdict).await,
        }
        verdict
    }

    /// An attempt was sent: counted here and in the request's notes (for a failed request's
    /// access log and span, which carry no `Served`).
    fn count_attempt(&mut self, attempt_no: u32) {
        self.attempts = attempt_no;
        if let Some(notes) = self.parts.extensions.get::<switchyard_core::Notes>() {
            notes.update(|n| n.attempts = attempt_no);
        }
    }

    async fn release(&mut self, meta: &AttemptMeta) {
        if let (Some(guard), Some(r)) = (&self.guard, meta.reservation) {
            guard.settle(r, 0.0, false).await;
        }
    }

    /// Reads the response up to its commit point (or to its end, when aggregating or
    /// buffering) and decides what it was.
    async fn evaluate(
        &mut self,
        resp: Response<ProxyBody>,
        meta: &mut AttemptMeta,
        continuing: bool,
    ) -> Verdict {
        let status = resp.status();
        let (mut parts, body) = resp.into_parts();
        let mut served = parts
            .extensions
            .remove::<Served>()
            .unwrap_or_else(|| Served {
                endpoint: meta.endpoint.id.clone(),
                provider: meta.endpoint.provider.id.clone(),
                model: meta.endpoint.model.clone(),
                upstream_model: meta.endpoint.upstream_model.clone(),
                attempts: meta.attempt,
                usage: None,
            });
        served.attempts = meta.attempt;

        if !status.is_success() {
            let bytes = body
                .as_full()
                .map(bytes::Bytes::copy_from_slice)
                .unwrap_or_default();
            let v = switchyard_wire::classify_response(status.as_u16(), &parts.headers, &bytes);
            let detail = error_detail(status.as_u16(), &bytes);
            let mut original = Response::from_parts(parts, ProxyBody::full(bytes));
            original.extensions_mut().insert(served);
            return Verdict::Failed {
                class: v.class,
                status: Some(status.as_u16()),
                retry_after: v.retry_after,
                detail,
                response: Some(original),
            };
        }

        let mut source = match body.into_events() {
            Ok(source) => source,
            Err(full) => {
                // A buffered 2xx: embeddings, or an upstream that ignored `stream`.
                meta.ttft = Some(meta.sent_at.elapsed());
                let mut resp = Response::from_parts(parts, full);
                resp.extensions_mut().insert(served);
                return Verdict::Complete(resp);
            }
        };

        let op = self.parsed.operation();
        let mut agg = match &meta.sink {
            Some(sink) if sink.attached() => Agg::Sink(sink.clone()),
            _ => Agg::Local(Box::new(self.aggregator(&meta.endpoint))),
        };
        let mut held: VecDeque<Event> = VecDeque::new();
        let read_all = (self.aggregate || self.buffer) && !continuing;
        let mut saw_done = false;
        loop {
            match poll_fn(|cx| source.as_mut().poll_event(cx)).await {
                Some(Ok(ev)) => match ev.kind {
                    EventKind::Error if agg.output_events() == 0 || read_all => {
                        let data = sse_data(&ev.bytes);
                        return Verdict::Failed {
                            class: switchyard_wire::classify_error_event(data),
                            status: Some(status.as_u16()),
                            retry_after: None,
                            detail: redacted(
                                &meta.endpoint,
                                String::from_utf8_lossy(data).into_owned(),
                            ),
                            response: None,
                        };
                    }
                    EventKind::Done => {
                        saw_done = true;
                        held.push_back(ev);
                        break;
                    }
                    kind => {
                        if let Err(e) = agg.push(&ev) {
                            return Verdict::Failed {
                                class: Class::Malformed,
                                status: Some(status.as_u16()),
                                retry_after: None,
                                detail: e.to_string(),
                                response: None,
                            };
                        }
                        if kind == EventKind::Usage
                            && let Some(u) = ev.usage
                        {
                            served.usage = Some(u);
                        }
                        // An aggregated answer is built from `agg` alone: its events are
                        // never replayed, so they are not kept.
                        if !(self.aggregate && read_all) {
                            held.push_back(ev);
                        }
                        // A chunk that only says why the answer stopped, with nothing before it,
                        // is the start of an empty completion, not its commit point.
                        let finish_only = agg.is_empty() && agg.has_finish_reason();
                        if kind == EventKind::Output && meta.ttft.is_none() && !finish_only {
                            meta.ttft = Some(meta.sent_at.elapsed());
                            if !read_all {
                                return Verdict::Committed {
                                    held,
                                    source,
                                    agg,
                                    meta: meta.clone(),
                                    served,
                                    parts,
                                };
                            }
                        }
                    }
                },
                Some(Err(e)) => {
                    if is_deadline(&e) {
                        return Verdict::Fatal(e);
                    }
                    let class = class_of(&e);
                    return Verdict::Failed {
                        class,
                        status: Some(status.as_u16()),
                        retry_after: None,
                        detail: e.to_string(),
                        response: None,
                    };
                }
                None => break,
            }
        }

        if agg.output_events() == 0 || agg.is_empty() {
            return Verdict::Failed {
                class: if saw_done || agg.has_finish_reason() {
                    Class::EmptyCompletion
                } else {
                    Class::ResetAfterWrite
                },
                status: Some(status.as_u16()),
                retry_after: None,
                detail: "the upstream answered with no content and no tool call".into(),
                response: None,
            };
        }
        if !saw_done && !agg.has_finish_reason() {
            return Verdict::Failed {
                class: Class::ResetAfterWrite,
                status: Some(status.as_u16()),
                retry_after: None,
                detail: "the upstream closed the stream before the answer was complete".into(),
                response: None,
            };
        }
        if served.usage.is_none() && agg.usage().is_none() {
            served.usage = Some(self.estimated_usage(meta, agg.output_events()));
        }
        if self.aggregate {
            return match agg.into_aggregator(op).finish() {
                Ok(done) => {
                    served.usage = done.usage.or(served.usage);
                    parts
                        .headers
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    parts.headers.remove(http::header::CACHE_CONTROL);
                    let mut resp = Response::from_parts(parts, ProxyBody::full(done.body));
                    resp.extensions_mut().insert(served);
                    Verdict::Complete(resp)
                }
                Err(e) => Verdict::Failed {
                    class: Class::Malformed,
                    status: Some(status.as_u16()),
                    retry_after: None,
                    detail: e.to_string(),
                    response: None,
                },
            };
        }
        // Buffered, or a stream that ended within its first read: replay what was held.
        if !saw_done {
            held.push_back(done_event());
        }
        let mut resp = Response::from_parts(parts, ProxyBody::events(Replay(held)));
        resp.extensions_mut().insert(served);
        Verdict::Complete(resp)
    }

    /// Tells every observer how the attempt went, adds it to the trail, and settles its
    /// reservation: a complete answer is charged its reported usage (estimated if the
    /// upstream reported none); a failed attempt, which gave the caller nothing, is not.
    pub(crate) fn finish<'a>(
        &'a mut self,
        meta: &'a AttemptMeta,
        verdict: &Verdict,
    ) -> impl Future<Output = ()> + Send + 'a
    where
        S: Send,
    {
        // Everything is read out of the verdict first: it may hold a stream, which must not be
        // borrowed across the settlement's await.
        let outcome = self.outcome(meta, verdict);
        async move {
            if let Some(o) = outcome {
                self.report(
                    meta,
                    o.class,
                    o.status,
                    o.retry_after,
                    o.detail,
                    o.usage,
                    o.charge,
                )
                .await;
            }
        }
    }

    fn outcome(&self, meta: &AttemptMeta, verdict: &Verdict) -> Option<Outcome> {
        let (class, status, retry_after, detail) = match verdict {
            Verdict::Failed {
                class,
                status,
                retry_after,
                detail,
                ..
            } => (*class, *status, *retry_after, detail.clone()),
            Verdict::Complete(resp) => (
                Class::Success,
                Some(resp.status().as_u16()),
                None,
                String::new(),
            ),
            Verdict::Committed { .. } | Verdict::Skipped { .. } | Verdict::Fatal(_) => return None,
        };
        let (usage, charge) = match verdict {
            Verdict::Complete(resp) => {
                let usage = resp.extensions().get::<Served>().and_then(|s| s.usage);
                let charge = match usage {
                    Some(u) if u.estimated => Charge::Estimated(u.cost),
                    Some(u) => Charge::Reported(u.cost),
                    None => Charge::Estimated(self.estimate(meta, 0)),
                };
                (usage, charge)
            }
            _ => (None, Charge::Nothing),
        };
        Some(Outcome {
            class,
            status,
            retry_after,
            detail,
            usage,
            charge,
        })
    }

    /// The report and the settlement of one attempt.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn report(
        &mut self,
        meta: &AttemptMeta,
        class: Class,
        status: Option<u16>,
        retry_after: Option<Duration>,
        detail: String,
        usage: Option<switchyard_core::Usage>,
        charge: Charge,
    ) {
        if let (Some(guard), Some(r)) = (&self.guard, meta.reservation) {
            let (cost, estimated) = charge.amount();
            guard.settle(r, cost, estimated).await;
        }
        self.record(meta, class, status, retry_after, detail, usage);
    }

    fn pass_through(
        self,
        response: Option<Response<ProxyBody>>,
    ) -> Result<Response<ProxyBody>, BoxError> {
        match response {
            Some(r) => Ok(r),
            None => Err(Failure::boxed(ProvidersExhausted {
                trail: self.trail,
                budget_exhausted: false,
            })),
        }
    }

    fn context_length(&self, model: &str) -> u64 {
        self.parts
            .extensions
            .get::<Arc<Snapshot>>()
            .and_then(|s| s.model(model))
            .and_then(|m| m.context_length)
            .unwrap_or(0)
    }

    pub(crate) fn fits_deadline(&self, wait: Duration) -> bool {
        self.deadline.is_none_or(|d| Instant::now() + wait < d)
    }

    /// Full jitter: a random wait in `[0, min(max, base * 2^n)]`, never past the deadline.
    async fn backoff(&mut self, n: u32) {
        let cap = self
            .retry
            .backoff_base
            .saturating_mul(1u32 << n.min(16))
            .min(self.retry.backoff_max);
        let wait = cap.mul_f64(fastrand::f64());
        if self.fits_deadline(wait) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The verdict an error stands for; an error that says nothing came from the connection
/// after the request was sent.
pub(crate) fn class_of(e: &BoxError) -> Class {
    Failure::find(&**e)
        .and_then(|f| f.get().class())
        .unwrap_or(Class::ResetAfterWrite)
}

impl<S> Exec<S> {
    /// What an attempt probably cost when the upstream reported no usage: the prompt
    /// estimate plus the output seen so far, at the endpoint's prices (never zero once
    /// output reached the caller).
    pub(crate) fn estimate(&self, meta: &AttemptMeta, output_tokens: u64) -> f64 {
        meta.endpoint
            .pricing
            .cost(self.parsed.estimated_prompt_tokens(), output_tokens)
    }

    /// A fresh aggregate of one attempt's answer, rewritten for the caller (served model,
    /// provider and cost). A whole-body answer always carries usage, as OpenAI's does.
    fn aggregator(&self, endpoint: &Endpoint) -> Aggregator {
        let rewrite = Rewrite {
            model: endpoint.model.clone(),
            provider: endpoint.provider.id.clone(),
            upstream_model: endpoint.upstream_model.clone(),
            pricing: endpoint.pricing,
            client_wants_usage: true,
        };
        Aggregator::new(
            self.parsed.operation(),
            self.aggregate || self.parsed.client_wants_usage(),
        )
        .with_rewrite(&rewrite)
    }

    /// Tells the observers that `endpoint` was skipped without a call, and why.
    fn skipped(&self, endpoint: &Endpoint, reason: &'static str) {
        let skip = switchyard_core::SkipReport {
            request_id: self.request_id.as_deref(),
            endpoint: &endpoint.id,
            provider: &endpoint.provider.id,
            model: &endpoint.model,
            reason,
        };
        for o in self.observers.iter() {
            o.attempt_skipped(&skip);
        }
    }

    /// Usage to report when the upstream reported none: marked estimated.
    pub(crate) fn estimated_usage(
        &self,
        meta: &AttemptMeta,
        output_tokens: u64,
    ) -> switchyard_core::Usage {
        let prompt_tokens = self.parsed.estimated_prompt_tokens();
        switchyard_core::Usage {
            prompt_tokens,
            completion_tokens: output_tokens,
            cost: meta.endpoint.pricing.cost(prompt_tokens, output_tokens),
            estimated: true,
        }
    }

    fn record(
        &mut self,
        meta: &AttemptMeta,
        class: Class,
        status: Option<u16>,
        retry_after: Option<Duration>,
        detail: String,
        usage: Option<switchyard_core::Usage>,
    ) {
        let ended_at = Instant::now();
        let report = AttemptReport {
            request_id: self.request_id.clone(),
            endpoint: meta.endpoint.id.clone(),
            provider: meta.endpoint.provider.id.clone(),
            model: meta.endpoint.model.clone(),
            attempt: meta.attempt,
            class,
            status,
            sent_at: meta.sent_at,
            ttft: meta.ttft,
            ended_at,
            usage,
            retry_after,
        };
        for o in self.observers.iter() {
            o.observe(&report);
        }
        self.last_class = Some(class);
        let span = &meta.span;
        span.record("switchyard.outcome", class.as_str());
        if let Some(s) = status {
            span.record("http.response.status_code", i64::from(s));
        }
        if let Some(t) = meta.ttft {
            span.record(
                "switchyard.ttft_ms",
                i64::try_from(t.as_millis()).unwrap_or(i64::MAX),
            );
        }
        if let Some(u) = &usage {
            span.record(
                "gen_ai.usage.input_tokens",
                i64::try_from(u.prompt_tokens).unwrap_or(i64::MAX),
            );
            span.record(
                "gen_ai.usage.output_tokens",
                i64::try_from(u.completion_tokens).unwrap_or(i64::MAX),
            );
            span.record("switchyard.cost_usd", u.cost);
            span.record("switchyard.usage_estimated", u.estimated);
            span.record("gen_ai.response.model", &*meta.endpoint.upstream_model);
        }
        if class == Class::Success {
            span.record("otel.status_code", "ok");
        } else {
            span.record("otel.status_code", "error");
            span.record("error.type", class.as_str());
        }
        if class != Class::Success {
            tracing::debug!(
                endpoint = %meta.endpoint.id,
                attempt = meta.attempt,
                class = class.as_str(),
                status,
                detail = %detail,
                "attempt failed"
            );
        }
        self.trail.push(AttemptSummary {
            attempt: meta.attempt,
            endpoint: meta.endpoint.id.to_string(),
            provider: meta.endpoint.provider.id.to_string(),
            model: meta.endpoint.model.to_string(),
            outcome: class.as_str(),
            status,
            latency_ms: u64::try_from(ended_at.saturating_duration_since(meta.sent_at).as_millis())
                .unwrap_or(u64::MAX),
            detail,
        });
    }

    /// Reports an attempt that the client abandoned; settles it without waiting.
    pub(crate) fn abandon(
        &mut self,
        meta: &AttemptMeta,
        usage: Option<switchyard_core::Usage>,
        charge: Charge,
    ) {
        if let (Some(guard), Some(r)) = (&self.guard, meta.reservation) {
            let (cost, estimated) = charge.amount();
            let fut = guard.settle(r, cost, estimated);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(fut);
            }
        }
        self.record(
            meta,
            Class::Cancelled,
            Some(200),
            None,
            "the client went away".into(),
            usage,
        );
    }
}

/// The request's own deadline passed (the timeout layers' `deadline_exceeded`).
pub(crate) fn is_deadline(e: &BoxError) -> bool {
    Failure::find(&**e).is_some_and(|f| f.get().code() == "deadline_exceeded")
}

/// The JSON of an SSE event (`data: ...\n\n`).
pub(crate) fn sse_data(bytes: &[u8]) -> &[u8] {
    let s = bytes
        .strip_prefix(b"data: ")
        .or_else(|| bytes.strip_prefix(b"data:"))
        .unwrap_or(bytes);
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &s[..end]
}

pub(crate) fn done_event() -> Event {
    Event {
        bytes: bytes::Bytes::from_static(b"data: [DONE]\n\n"),
        kind: EventKind::Done,
        usage: None,
    }
}

/// `text` without the endpoint's provider key, should the provider have echoed it.
pub(crate) fn redacted(endpoint: &Endpoint, text: String) -> String {
    match &endpoint.provider.api_key {
        Some(key) if !key.expose().is_empty() && text.contains(key.expose()) => {
            text.replace(key.expose(), "[redacted]")
        }
        _ => text,
    }
}

fn error_detail(status: u16, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or(v["message"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    format!("HTTP {status}: {msg}")
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A source with nothing more to give, in place of one that failed.
pub(crate) fn ended() -> Source {
    Box::pin(Replay(VecDeque::new()))
}

/// Events already read, handed out in order.
struct Replay(VecDeque<Event>);

impl EventSource for Replay {
    fn poll_event(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Event, BoxError>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}
