//! Prometheus metrics (one registry, OpenMetrics text for `/metrics`) and, when OTLP is
//! configured, the GenAI client metrics of the OpenTelemetry semantic conventions.
//!
//! Labels are ids from the policy (provider, model, route, budget), an attempt's `Class`, or
//! `&'static str` codes — never strings a client sent. Each id dimension is also capped (see
//! [`MAX_LABEL_VALUES`]), so a mistake elsewhere cannot grow a family without bound.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use switchyard_core::{AttemptObserver, AttemptReport, Class, SkipReport, Usage};

use crate::labels::{Dimension, Label, status_class};
use crate::spans::fields;

/// Content type of [`Metrics::encode`]'s output (the Prometheus text format).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of [`Metrics::encode_openmetrics`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Distinct values kept per id dimension (providers, models, routes, budgets); further
/// values are counted under `other`.
pub const MAX_LABEL_VALUES: usize = 512;
/// Requests whose last attempt is remembered to tell retries from fallbacks.
const LAST_ATTEMPTS: usize = 4096;

/// Request duration buckets, seconds: 10 ms to the 600 s default total timeout.
const DURATION_BUCKETS: [f64; 16] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Time-to-first-token buckets, seconds.
const TTFT_BUCKETS: [f64; 13] = [
    0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];
/// `gen_ai.client.operation.duration` boundaries from the semantic conventions.
const GENAI_DURATION_BOUNDARIES: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// `gen_ai.client.token.usage` boundaries from the semantic conventions.
const GENAI_TOKEN_BOUNDARIES: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Label,
    operation: Label,
    status_class: Label,
    outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Label,
    operation: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    provider: Label,
    model: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: Label,
    model: Label,
    class: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    provider: Label,
    model: Label,
    reason: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    reason: Label,
    kind: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: Label,
    model: Label,
    direction: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    provider: Label,
    model: Label,
    to: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: Label,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type UsdCounter = Counter<f64, AtomicU64>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

/// A circuit breaker's phase, as the `switchyard_breaker_state` gauge encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn value(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }

    /// From the breaker crate's `Phase::as_str` spelling.
    pub fn from_phase(phase: &str) -> Option<Self> {
        match phase {
            "closed" => Some(Self::Closed),
            "half_open" => Some(Self::HalfOpen),
            "open" => Some(Self::Open),
            _ => None,
        }
    }
}

/// How one proxied request ended, for [`Metrics::request_finished`].
#[derive(Clone, Copy, Debug)]
pub struct RequestDone<'a> {
    /// `x-switchyard-request-id`, to forget the request's retry/fallback bookkeeping.
    pub request_id: Option<&'a str>,
    /// `chat`, `text_completion`, `embeddings` ([`GenAiOperation::as_str`](crate::GenAiOperation::as_str)).
    pub operation: &'static str,
    /// Policy route id, if a route matched.
    pub route: Option<&'a str>,
    /// HTTP status returned to the client.
    pub status: u16,
    /// `ok` for an answer, else the low-cardinality error code `respond` chose
    /// (e.g. `budget_exceeded`).
    pub outcome: &'static str,
    /// From the request's arrival to the end of its response body.
    pub duration: Duration,
    /// From arrival to the first output byte sent to the client, for answers.
    pub ttft: Option<Duration>,
    /// Provider id that served, if any.
    pub provider: Option<&'a str>,
    /// Policy model id that served, if any.
    pub model: Option<&'a str>,
    /// What the served answer used.
    pub usage: Option<Usage>,
}

/// The OpenTelemetry GenAI client instruments.
struct GenAi {
    duration: opentelemetry::metrics::Histogram<f64>,
    tokens: opentelemetry::metrics::Histogram<u64>,
}

/// Remembers each in-flight request's last attempt, to tell a retry of the same endpoint
/// from a fallback to another, and why.
struct Last {
    seq: u64,
    endpoint: Arc<str>,
    model: Arc<str>,
    class: Class,
}

#[derive(Default)]
struct LastAttempts {
    map: HashMap<Arc<str>, Last>,
    order: VecDeque<(Arc<str>, u64)>,
    seq: u64,
}

impl LastAttempts {
    /// Records `report` as the request's last attempt; returns the one before it.
    fn swap(
        &mut self,
        id: &Arc<str>,
        report: &AttemptReport,
    ) -> Option<(Arc<str>, Arc<str>, Class)> {
        self.seq += 1;
        let seq = self.seq;
        let prev = self.map.insert(
            id.clone(),
            Last {
                seq,
                endpoint: report.endpoint.clone(),
                model: report.model.clone(),
                class: report.class,
            },
        );
        self.order.push_back((id.clone(), seq));
        while self.order.len() > LAST_ATTEMPTS {
            if let Some((old, s)) = self.order.pop_front()
                && self.map.get(&old).is_some_and(|l| l.seq == s)
            {
                self.map.remove(&old);
            }
        }
        prev.map(|l| (l.endpoint, l.model, l.class))
    }

    fn forget(&mut self, id: &str) {
        self.map.remove(id);
    }
}

/// Every Switchyard metric. Share one behind an `Arc`: it is an [`AttemptObserver`] for the
/// fallback executor, and the request path calls its request-level methods.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge<i64, AtomicI64>,
    request_duration: HistogramFamily<RouteLabels>,
    request_ttft: HistogramFamily<RouteLabels>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_duration: HistogramFamily<EndpointLabels>,
    attempt_ttft: HistogramFamily<EndpointLabels>,
    fallbacks: Family<FallbackLabels, Counter>,
    retries: Family<EndpointLabels, Counter>,
    retry_budget_refusals: Counter,
    skipped: Family<SkipLabels, Counter>,
    breaker_state: Family<EndpointLabels, Gauge<i64, AtomicI64>>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<EndpointLabels, UsdCounter>,
    budget_spend: Family<BudgetLabels, UsdCounter>,
    budget_rejections: Family<BudgetLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    generation: Gauge<i64, AtomicI64>,
    providers: Dimension,
    models: Dimension,
    routes: Dimension,
    budgets: Dimension,
    last: Mutex<LastAttempts>,
    genai: Option<GenAi>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("otel", &self.genai.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Prometheus metrics only.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// Prometheus metrics, plus `gen_ai.client.operation.duration` and
    /// `gen_ai.client.token.usage` recorded on `meter` (exported over OTLP).
    pub fn with_meter(meter: &Meter) -> Self {
        let duration = meter
            .f64_histogram("gen_ai.client.operation.duration")
            .with_unit("s")
            .with_description("GenAI operation duration")
            .with_boundaries(GENAI_DURATION_BOUNDARIES.to_vec())
            .build();
        let tokens = meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("Number of input and output tokens used")
            .with_boundaries(GENAI_TOKEN_BOUNDARIES.to_vec())
            .build();
        Self::build(Some(GenAi { duration, tokens }))
    }

    fn build(genai: Option<GenAi>) -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Proxied requests that finished, by route, operation, HTTP status class and outcome",
            requests.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "requests_in_flight",
            "Proxied requests being served now",
            in_flight.clone(),
        );
        let request_duration =
            HistogramFamily::<RouteLabels>::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to the end of its response, in seconds",
            Unit::Seconds,
            request_duration.clone(),
        );
        let request_ttft = HistogramFamily::<RouteLabels>::new_with_constructor(ttft_histogram);
        registry.register_with_unit(
            "request_ttft",
            "Time from a request's arrival to the first output sent to the client, in seconds",
            Unit::Seconds,
            request_ttft.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "attempts",
            "Upstream attempts, by provider, model and verdict class",
            attempts.clone(),
        );
        let attempt_duration =
            HistogramFamily::<EndpointLabels>::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "attempt_duration",
            "Time from sending an upstream attempt to its end, in seconds",
            Unit::Seconds,
            attempt_duration.clone(),
        );
        let attempt_ttft = HistogramFamily::<EndpointLabels>::new_with_constructor(ttft_histogram);
        registry.register_with_unit(
            "attempt_ttft",
            "Time from sending an upstream attempt to its first output event, in seconds",
            Unit::Seconds,
            attempt_ttft.clone(),
        );
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "fallbacks",
            "Moves to another endpoint after a failed attempt, by the failure's class and whether the model changed (kind=model) or only the provider (kind=provider)",
            fallbacks.clone(),
        );
        let retries = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "retries",
            "Attempts that retried the same endpoint as the attempt before",
            retries.clone(),
        );
        let skipped = Family::<SkipLabels, Counter>::default();
        registry.register(
            "attempts_skipped",
            "Candidates skipped without a call: open breaker, cooldown, in-flight limit or budget",
            skipped.clone(),
        );
        let retry_budget_refusals = Counter::default();
        registry.register(
            "retry_budget_refusals",
            "Retries or fallbacks not made because the retry budget was spent",
            retry_budget_refusals.clone(),
        );
        let breaker_state = Family::<EndpointLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "breaker_state",
            "Circuit breaker phase per endpoint: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        let breaker_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "breaker_transitions",
            "Circuit breaker phase changes per endpoint, by the phase entered",
            breaker_transitions.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens used by upstream attempts (as reported, or estimated when not), in tokens, by direction input or output",
            tokens.clone(),
        );
        let cost = Family::<EndpointLabels, UsdCounter>::default();
        registry.register(
            "cost_usd",
            "Cost of upstream attempts at the policy's prices, in US dollars",
            cost.clone(),
        );
        let budget_spend = Family::<BudgetLabels, UsdCounter>::default();
        registry.register(
            "budget_spend_usd",
            "Spend settled against each budget, in US dollars",
            budget_spend.clone(),
        );
        let budget_rejections = Family::<BudgetLabels, Counter>::default();
        registry.register(
            "budget_rejections",
            "Requests or attempts refused because a budget would be exceeded",
            budget_rejections.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads, by result ok or failed",
            reloads.clone(),
        );
        let generation = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "policy_generation",
            "Generation number of the policy in force",
            generation.clone(),
        );
        Self {
            registry,
            requests,
            in_flight,
            request_duration,
            request_ttft,
            attempts,
            attempt_duration,
            attempt_ttft,
            fallbacks,
            retries,
            retry_budget_refusals,
            skipped,
            breaker_state,
            breaker_transitions,
            tokens,
            cost,
            budget_spend,
            budget_rejections,
            reloads,
            generation,
            providers: Dimension::new(MAX_LABEL_VALUES),
            models: Dimension::new(MAX_LABEL_VALUES),
            routes: Dimension::new(MAX_LABEL_VALUES),
            budgets: Dimension::new(MAX_LABEL_VALUES),
            last: Mutex::new(LastAttempts::default()),
            genai,
        }
    }

    /// The registry in the Prometheus text format (serve it with [`CONTENT_TYPE`]): what
    /// every scraper and `promtool check metrics` read.
    pub fn encode(&self) -> String {
        prometheus_text(&self.encode_openmetrics())
    }

    /// The registry in the OpenMetrics text format (serve it with
    /// [`OPENMETRICS_CONTENT_TYPE`] to a scraper whose `Accept` asks for it).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a label that could not be encoded would only
        // shorten the output.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn request_started(&self) -> InFlightGuard {
        self.in_flight.inc();
        InFlightGuard {
            gauge: self.in_flight.clone(),
        }
    }

    /// Records a finished request: count, duration, TTFT, and the GenAI OTLP metrics.
    pub fn request_finished(&self, done: &RequestDone<'_>) {
        let route = self.routes.label_opt(done.route);
        let operation = Label::fixed(done.operation);
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                operation: operation.clone(),
                status_class: Label::fixed(status_class(done.status)),
                outcome: Label::fixed(done.outcome),
            })
            .inc();
        let rl = RouteLabels { route, operation };
        self.request_duration
            .get_or_create(&rl)
            .observe(done.duration.as_secs_f64());
        if let Some(t) = done.ttft {
            self.request_ttft
                .get_or_create(&rl)
                .observe(t.as_secs_f64());
        }
        if let Some(id) = done.request_id {
            self.last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(id);
        }
        if let Some(g) = &self.genai {
            let model = self.models.label_opt(done.model);
            let provider = self.providers.label_opt(done.provider);
            let mut attrs = vec![
                KeyValue::new(fields::GEN_AI_OPERATION_NAME, done.operation),
                KeyValue::new(fields::GEN_AI_PROVIDER_NAME, provider.as_str().to_string()),
                KeyValue::new(fields::GEN_AI_REQUEST_MODEL, model.as_str().to_string()),
            ];
            if done.status >= 400 {
                attrs.push(KeyValue::new(fields::ERROR_TYPE, done.outcome));
            }
            g.duration.record(done.duration.as_secs_f64(), &attrs);
            if let Some(u) = &done.usage {
                attrs.push(KeyValue::new(fields::GEN_AI_TOKEN_TYPE, "input"));
                g.tokens.record(u.prompt_tokens, &attrs);
                if let Some(last) = attrs.last_mut() {
                    *last = KeyValue::new(fields::GEN_AI_TOKEN_TYPE, "output");
                }
                g.tokens.record(u.completion_tokens, &attrs);
            }
        }
    }

    /// A retry or fallback was not made: the retry budget was spent.
    pub fn retry_budget_refused(&self) {
        self.retry_budget_refusals.inc();
    }

    /// An endpoint's breaker phase as last seen; a change from the previous value counts as
    /// a transition (endpoints start closed).
    pub fn breaker_state(&self, provider: &str, model: &str, state: BreakerState) {
        let labels = EndpointLabels {
            provider: self.providers.label(provider),
            model: self.models.label(model),
        };
        let before = self.breaker_state.get_or_create(&labels).set(state.value());
        if before != state.value() {
            self.breaker_transitions
                .get_or_create(&TransitionLabels {
                    provider: labels.provider,
                    model: labels.model,
                    to: Label::fixed(state.as_str()),
                })
                .inc();
        }
    }

    /// Spend settled against a budget, in USD.
    pub fn budget_spent(&self, budget: &str, usd: f64) {
        if usd.is_finite() && usd > 0.0 {
            self.budget_spend
                .get_or_create(&BudgetLabels {
                    budget: self.budgets.label(budget),
                })
                .inc_by(usd);
        }
    }

    /// A request or attempt refused by a budget.
    pub fn budget_rejected(&self, budget: &str) {
        self.budget_rejections
            .get_or_create(&BudgetLabels {
                budget: self.budgets.label(budget),
            })
            .inc();
    }

    /// A policy reload took effect.
    pub fn policy_reloaded(&self, generation: u64) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: Label::fixed("ok"),
            })
            .inc();
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// A policy reload was refused (the last good policy stays).
    pub fn policy_reload_failed(&self) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: Label::fixed("failed"),
            })
            .inc();
    }
}

impl AttemptObserver for Metrics {
    fn observe(&self, report: &AttemptReport) {
        let provider = self.providers.label(&report.provider);
        let model = self.models.label(&report.model);
        self.attempts
            .get_or_create(&AttemptLabels {
                provider: provider.clone(),
                model: model.clone(),
                class: Label::fixed(report.class.as_str()),
            })
            .inc();
        let ep = EndpointLabels {
            provider: provider.clone(),
            model: model.clone(),
        };
        let took = report.ended_at.saturating_duration_since(report.sent_at);
        self.attempt_duration
            .get_or_create(&ep)
            .observe(took.as_secs_f64());
        if let Some(t) = report.ttft {
            self.attempt_ttft
                .get_or_create(&ep)
                .observe(t.as_secs_f64());
        }
        if let Some(u) = &report.usage {
            for (direction, n) in [("input", u.prompt_tokens), ("output", u.completion_tokens)] {
                if n > 0 {
                    self.tokens
                        .get_or_create(&TokenLabels {
                            provider: provider.clone(),
                            model: model.clone(),
                            direction: Label::fixed(direction),
                        })
                        .inc_by(n);
                }
            }
            if u.cost.is_finite() && u.cost > 0.0 {
                self.cost.get_or_create(&ep).inc_by(u.cost);
            }
        }
        if let Some(id) = &report.request_id {
            let prev = self
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .swap(id, report);
            if let Some((endpoint, prev_model, class)) = prev {
                if endpoint == report.endpoint {
                    self.retries.get_or_create(&ep).inc();
                } else {
                    let kind = if prev_model == report.model {
                        "provider"
                    } else {
                        "model"
                    };
                    self.fallbacks
                        .get_or_create(&FallbackLabels {
                            reason: Label::fixed(class.as_str()),
                            kind: Label::fixed(kind),
                        })
                        .inc();
                }
            }
        }
    }

    fn retry_budget_refused(&self) {
        Metrics::retry_budget_refused(self);
    }

    fn attempt_skipped(&self, skip: &SkipReport<'_>) {
        self.skipped
            .get_or_create(&SkipLabels {
                provider: self.providers.label(skip.provider),
                model: self.models.label(skip.model),
                reason: Label::fixed(skip.reason),
            })
            .inc();
    }
}

impl switchyard_core::BudgetEvents for Metrics {
    fn spent(&self, budget: &str, usd: f64) {
        self.budget_spent(budget, usd);
    }
    fn rejected(&self, budget: &str) {
        self.budget_rejected(budget);
    }
}

/// OpenMetrics text to the Prometheus text format: a counter family's metadata names the
/// `_total` series (OpenMetrics names the family without it), and `UNIT` and `EOF` lines,
/// which the older format lacks, go.
fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Held until the TYPE line says whether the name needs `_total`.
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some((h_name, text)) = help.take() {
                out.push_str(&format!("# HELP {h_name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    gauge: Gauge<i64, AtomicI64>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    use tokio::time::Instant;

    use super::*;

    pub(crate) fn report(
        id: Option<&str>,
        provider: &str,
        model: &str,
        attempt: u32,
        class: Class,
        usage: Option<Usage>,
    ) -> AttemptReport {
        let sent_at = Instant::now();
        AttemptReport {
            request_id: id.map(Arc::from),
            endpoint: Arc::from(format!("{provider}/{model}")),
            provider: Arc::from(provider),
            model: Arc::from(model),
            attempt,
            class,
            status: Some(if class == Class::Success { 200 } else { 503 }),
            sent_at,
            ttft: (class == Class::Success).then(|| Duration::from_millis(120)),
            ended_at: sent_at + Duration::from_millis(900),
            usage,
            retry_after: None,
        }
    }

    fn usage(p: u64, c: u64, cost: f64) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: p,
            completion_tokens: c,
            cost,
            estimated: false,
        })
    }

    /// Samples of the Prometheus text: `name{labels}` -> value. Fails on any line that is
    /// neither HELP, TYPE nor a well-formed sample.
    fn samples(text: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('#') {
                let kind = rest.split_whitespace().next().unwrap_or("");
                assert!(
                    matches!(kind, "HELP" | "TYPE"),
                    "unexpected comment: {line}"
                );
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("switchyard_"), "{line}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            let v: f64 = if value == "+Inf" {
                f64::INFINITY
            } else {
                value.parse().expect(line)
            };
            assert!(out.insert(series.to_string(), v).is_none(), "dup {series}");
        }
        out
    }

    fn get(s: &BTreeMap<String, f64>, series: &str) -> f64 {
        *s.get(series)
            .unwrap_or_else(|| panic!("no {series} in {:#?}", s.keys().collect::<Vec<_>>()))
    }

    #[test]
    fn attempt_counters_move_on_observed_reports() {
        let m = Metrics::new();
        m.observe(&report(
            Some("r1"),
            "openai",
            "gpt",
            1,
            Class::Success,
            usage(100, 20, 0.002),
        ));
        m.observe(&report(
            Some("r2"),
            "openai",
            "gpt",
            1,
            Class::Success,
            usage(50, 5, 0.001),
        ));
        m.observe(&report(
            Some("r3"),
            "anth",
            "claude",
            1,
            Class::ServerError,
            None,
        ));
        let s = samples(&m.encode());
        assert_eq!(
            get(
                &s,
                r#"switchyard_attempts_total{provider="openai",model="gpt",class="success"}"#
            ),
            2.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_attempts_total{provider="anth",model="claude",class="server_error"}"#
            ),
            1.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_tokens_total{provider="openai",model="gpt",direction="input"}"#
            ),
            150.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_tokens_total{provider="openai",model="gpt",direction="output"}"#
            ),
            25.0
        );
        let cost = get(
            &s,
            r#"switchyard_cost_usd_total{provider="openai",model="gpt"}"#,
        );
        assert!((cost - 0.003).abs() < 1e-12, "{cost}");
        assert_eq!(
            get(
                &s,
                r#"switchyard_attempt_duration_seconds_count{provider="openai",model="gpt"}"#
            ),
            2.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_attempt_duration_seconds_bucket{le="1.0",provider="openai",model="gpt"}"#
            ),
            2.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_attempt_duration_seconds_bucket{le="0.5",provider="openai",model="gpt"}"#
            ),
            0.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_attempt_ttft_seconds_count{provider="openai",model="gpt"}"#
            ),
            2.0
        );
        // The failed attempt had no first token.
        assert!(!s.contains_key(
            r#"switchyard_attempt_ttft_seconds_count{provider="anth",model="claude"}"#
        ));
    }

    #[test]
    fn retries_and_fallbacks_are_told_apart() {
        let m = Metrics::new();
        // Same endpoint again: a retry.
        m.observe(&report(
            Some("a"),
            "p1",
            "m1",
            1,
            Class::ConnectFailed,
            None,
        ));
        m.observe(&report(Some("a"), "p1", "m1", 2, Class::ServerError, None));
        // Same model, other provider: a provider fallback because of the server error.
        m.observe(&report(Some("a"), "p2", "m1", 3, Class::RateLimited, None));
        // Other model: a model fallback because of the rate limit.
        m.observe(&report(Some("a"), "p2", "m2", 4, Class::Success, None));
        // Another request's first attempt is neither.
        m.observe(&report(Some("b"), "p2", "m2", 1, Class::Success, None));
        // Without a request id nothing can be told.
        m.observe(&report(None, "p1", "m1", 2, Class::Success, None));
        let s = samples(&m.encode());
        assert_eq!(
            get(&s, r#"switchyard_retries_total{provider="p1",model="m1"}"#),
            1.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_fallbacks_total{reason="server_error",kind="provider"}"#
            ),
            1.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_fallbacks_total{reason="rate_limited",kind="model"}"#
            ),
            1.0
        );
        let total: f64 = s
            .iter()
            .filter(|(k, _)| k.starts_with("switchyard_fallbacks_total"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(total, 2.0);
    }

    #[test]
    fn finishing_a_request_forgets_its_last_attempt() {
        let m = Metrics::new();
        m.observe(&report(Some("x"), "p1", "m1", 1, Class::ServerError, None));
        m.request_finished(&RequestDone {
            request_id: Some("x"),
            operation: "chat",
            route: None,
            status: 502,
            outcome: "providers_exhausted",
            duration: Duration::from_millis(5),
            ttft: None,
            provider: None,
            model: None,
            usage: None,
        });
        assert!(m.last.lock().unwrap().map.is_empty());
        // A reused id starts over: no fallback is counted.
        m.observe(&report(Some("x"), "p2", "m1", 1, Class::Success, None));
        assert!(!m.encode().contains("switchyard_fallbacks_total{"));
    }

    #[test]
    fn last_attempt_memory_is_bounded() {
        let mut l = LastAttempts::default();
        for i in 0..(LAST_ATTEMPTS + 100) {
            let id: Arc<str> = Arc::from(format!("req-{i}"));
            l.swap(&id, &report(Some(&id), "p", "m", 1, Class::Success, None));
        }
        assert_eq!(l.map.len(), LAST_ATTEMPTS);
        assert_eq!(l.order.len(), LAST_ATTEMPTS);
        assert!(!l.map.contains_key("req-0"));
        // Re-recording one id many times keeps one entry and never evicts it early.
        let id: Arc<str> = Arc::from("hot");
        for _ in 0..(LAST_ATTEMPTS * 2) {
            l.swap(&id, &report(Some("hot"), "p", "m", 1, Class::Success, None));
        }
        assert!(l.map.contains_key("hot"));
        assert!(l.order.len() <= LAST_ATTEMPTS);
    }

    #[test]
    fn request_level_metrics() {
        let m = Metrics::new();
        {
            let _a = m.request_started();
            let _b = m.request_started();
            let s = samples(&m.encode());
            assert_eq!(get(&s, "switchyard_requests_in_flight"), 2.0);
        }
        let s = samples(&m.encode());
        assert_eq!(get(&s, "switchyard_requests_in_flight"), 0.0);

        let done = RequestDone {
            request_id: None,
            operation: "chat",
            route: Some("team-a"),
            status: 200,
            outcome: "ok",
            duration: Duration::from_millis(1500),
            ttft: Some(Duration::from_millis(300)),
            provider: Some("p"),
            model: Some("m"),
            usage: usage(1, 2, 0.0),
        };
        m.request_finished(&done);
        m.request_finished(&RequestDone {
            status: 402,
            outcome: "budget_exceeded",
            ttft: None,
            route: None,
            ..done
        });
        let s = samples(&m.encode());
        assert_eq!(
            get(
                &s,
                r#"switchyard_requests_total{route="team-a",operation="chat",status_class="2xx",outcome="ok"}"#
            ),
            1.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_requests_total{route="none",operation="chat",status_class="4xx",outcome="budget_exceeded"}"#
            ),
            1.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_request_duration_seconds_bucket{le="2.5",route="team-a",operation="chat"}"#
            ),
            1.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_request_duration_seconds_bucket{le="1.0",route="team-a",operation="chat"}"#
            ),
            0.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_request_ttft_seconds_count{route="team-a",operation="chat"}"#
            ),
            1.0
        );
        let sum = get(
            &s,
            r#"switchyard_request_ttft_seconds_sum{route="team-a",operation="chat"}"#,
        );
        assert!((sum - 0.3).abs() < 1e-9);
    }

    #[test]
    fn skipped_candidates_are_counted_by_endpoint_and_reason() {
        let m = Metrics::new();
        let obs: &dyn AttemptObserver = &m;
        let skip = |provider, reason| SkipReport {
            request_id: None,
            endpoint: "e",
            provider,
            model: "m",
            reason,
        };
        obs.attempt_skipped(&skip("p", "endpoint_saturated"));
        obs.attempt_skipped(&skip("p", "endpoint_saturated"));
        obs.attempt_skipped(&skip("p", "breaker_open"));
        obs.attempt_skipped(&skip("q", "budget_exceeded"));
        let s = samples(&m.encode());
        let skipped = |labels: &str| {
            get(
                &s,
                &format!("switchyard_attempts_skipped_total{{{labels}}}"),
            )
        };
        assert_eq!(
            skipped(r#"provider="p",model="m",reason="endpoint_saturated""#),
            2.0
        );
        assert_eq!(
            skipped(r#"provider="p",model="m",reason="breaker_open""#),
            1.0
        );
        assert_eq!(
            skipped(r#"provider="q",model="m",reason="budget_exceeded""#),
            1.0
        );
    }

    #[test]
    fn breaker_budget_reload_and_retry_budget_metrics() {
        let m = Metrics::new();
        m.breaker_state("p", "m", BreakerState::Closed);
        m.breaker_state("p", "m", BreakerState::Open);
        m.breaker_state("p", "m", BreakerState::Open);
        m.breaker_state("p", "m", BreakerState::HalfOpen);
        m.breaker_state("p", "m", BreakerState::Closed);
        m.budget_spent("daily", 0.25);
        m.budget_spent("daily", 0.5);
        m.budget_spent("daily", f64::NAN);
        m.budget_spent("daily", -1.0);
        m.budget_rejected("daily");
        m.policy_reloaded(3);
        m.policy_reloaded(4);
        m.policy_reload_failed();
        m.retry_budget_refused();
        let s = samples(&m.encode());
        assert_eq!(
            get(&s, r#"switchyard_breaker_state{provider="p",model="m"}"#),
            0.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_breaker_transitions_total{provider="p",model="m",to="open"}"#
            ),
            1.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_breaker_transitions_total{provider="p",model="m",to="half_open"}"#
            ),
            1.0
        );
        assert_eq!(
            get(
                &s,
                r#"switchyard_breaker_transitions_total{provider="p",model="m",to="closed"}"#
            ),
            1.0
        );
        assert_eq!(
            get(&s, r#"switchyard_budget_spend_usd_total{budget="daily"}"#),
            0.75
        );
        assert_eq!(
            get(&s, r#"switchyard_budget_rejections_total{budget="daily"}"#),
            1.0
        );
        assert_eq!(
            get(&s, r#"switchyard_policy_reloads_total{result="ok"}"#),
            2.0
        );
        assert_eq!(
            get(&s, r#"switchyard_policy_reloads_total{result="failed"}"#),
            1.0
        );
        assert_eq!(get(&s, "switchyard_policy_generation"), 4.0);
        assert_eq!(get(&s, "switchyard_retry_budget_refusals_total"), 1.0);
        assert_eq!(
            BreakerState::from_phase("half_open"),
            Some(BreakerState::HalfOpen)
        );
        assert_eq!(BreakerState::from_phase("weird"), None);
    }

    #[test]
    fn label_sets_stay_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_LABEL_VALUES + 300) {
            let model = format!("model-{i}");
            m.observe(&report(None, "p", &model, 1, Class::Success, None));
            m.request_finished(&RequestDone {
                request_id: None,
                operation: "chat",
                route: Some(&format!("route-{i}")),
                status: 200,
                outcome: "ok",
                duration: Duration::from_millis(1),
                ttft: None,
                provider: None,
                model: None,
                usage: None,
            });
        }
        let s = samples(&m.encode());
        let attempts: Vec<_> = s
            .keys()
            .filter(|k| k.starts_with("switchyard_attempts_total{"))
            .collect();
        assert_eq!(attempts.len(), MAX_LABEL_VALUES + 1, "cap plus `other`");
        assert_eq!(
            get(
                &s,
                r#"switchyard_attempts_total{provider="p",model="other",class="success"}"#
            ),
            300.0
        );
        let requests = s
            .keys()
            .filter(|k| k.starts_with("switchyard_requests_total{"))
            .count();
        assert_eq!(requests, MAX_LABEL_VALUES + 1);
        // A long id is cut, not stored whole.
        let long = "x".repeat(10_000);
        let m = Metrics::new();
        m.budget_rejected(&long);
        assert!(!m.encode().contains(&long));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.budget_rejected("a\"b\\c\nd");
        let text = m.encode();
        assert!(
            text.contains(r#"switchyard_budget_rejections_total{budget="a\"b\\c\nd"} 1"#),
            "{text}"
        );
    }

    /// A registry with a sample in every family.
    fn populated() -> Metrics {
        let m = Metrics::new();
        m.observe(&report(Some("r"), "p", "m", 1, Class::ServerError, None));
        m.observe(&report(Some("r"), "p", "m", 2, Class::ServerError, None));
        m.observe(&report(
            Some("r"),
            "p2",
            "m",
            3,
            Class::Success,
            usage(3, 4, 0.5),
        ));
        let guard = m.request_started();
        m.request_finished(&RequestDone {
            request_id: Some("r"),
            operation: "chat",
            route: Some("rt"),
            status: 200,
            outcome: "ok",
            duration: Duration::from_millis(40),
            ttft: Some(Duration::from_millis(10)),
            provider: Some("p2"),
            model: Some("m"),
            usage: usage(3, 4, 0.5),
        });
        drop(guard);
        m.breaker_state("p", "m", BreakerState::Open);
        m.budget_spent("b", 1.0);
        m.budget_rejected("b");
        m.policy_reloaded(1);
        m.policy_reload_failed();
        m.retry_budget_refused();
        m
    }

    #[test]
    fn every_family_has_help_type_and_conventional_names() {
        let text = populated().encode();
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_string(), kind.to_string());
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                helps.insert(name.to_string(), help.to_string());
            }
        }
        assert_eq!(types.len(), 18, "{types:#?}");
        assert_eq!(
            types.keys().collect::<Vec<_>>(),
            helps.keys().collect::<Vec<_>>()
        );
        for (name, kind) in &types {
            assert!(name.starts_with("switchyard_"), "{name}");
            match kind.as_str() {
                "counter" => assert!(name.ends_with("_total"), "{name}"),
                "histogram" => {
                    assert!(name.ends_with("_seconds"), "{name}");
                    assert!(helps[name].contains("in seconds"), "{name}: unit in help");
                }
                "gauge" => assert!(!name.ends_with("_total"), "{name}"),
                other => panic!("{name}: {other}"),
            }
        }
        assert!(helps["switchyard_cost_usd_total"].contains("US dollars"));
        // Every sample belongs to a declared family.
        for series in samples(&text).keys() {
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
                .unwrap_or(name);
            assert!(types.contains_key(family), "{series}");
        }
    }

    #[test]
    fn openmetrics_and_prometheus_text_carry_the_same_samples() {
        let m = populated();
        let om = m.encode_openmetrics();
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# TYPE switchyard_attempts counter"));
        assert!(om.contains("# UNIT switchyard_request_duration_seconds seconds"));
        let prom = m.encode();
        assert!(!prom.contains("# EOF"));
        assert!(!prom.contains("# UNIT"));
        assert!(prom.contains("# TYPE switchyard_attempts_total counter"));
        assert!(prom.contains("# HELP switchyard_attempts_total Upstream attempts"));
        let strip = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(strip(&om), strip(&prom));
    }

    /// `promtool check metrics` (Prometheus's own parser and linter) accepts the output
    /// without a complaint, when it is installed (Debian's `prometheus`; CI installs it).
    #[test]
    fn promtool_accepts_the_output() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let text = populated().encode();
        let Ok(mut child) = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        else {
            eprintln!("promtool not installed: skipped");
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool: {said}\n{text}");
        assert!(said.trim().is_empty(), "promtool lint: {said}\n{text}");
    }

    #[test]
    fn genai_metrics_are_recorded_on_the_meter() {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let m = Metrics::with_meter(&provider.meter("test"));
        m.request_finished(&RequestDone {
            request_id: None,
            operation: "chat",
            route: None,
            status: 200,
            outcome: "ok",
            duration: Duration::from_millis(250),
            ttft: None,
            provider: Some("openai-main"),
            model: Some("gpt-4o"),
            usage: usage(120, 30, 0.01),
        });
        m.request_finished(&RequestDone {
            request_id: None,
            operation: "chat",
            route: None,
            status: 504,
            outcome: "deadline_exceeded",
            duration: Duration::from_secs(2),
            ttft: None,
            provider: None,
            model: None,
            usage: None,
        });
        provider.force_flush().unwrap();
        let exported = exporter.get_finished_metrics().unwrap();
        let mut seen = BTreeMap::new();
        for rm in &exported {
            for sm in rm.scope_metrics() {
                for metric in sm.metrics() {
                    let points: Vec<Point> = match metric.data() {
                        AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                            .data_points()
                            .map(|p| (attrs(p.attributes()), p.count(), p.sum()))
                            .collect(),
                        AggregatedMetrics::U64(MetricData::Histogram(h)) => h
                            .data_points()
                            .map(|p| (attrs(p.attributes()), p.count(), p.sum() as f64))
                            .collect(),
                        other => panic!("unexpected {other:?}"),
                    };
                    seen.insert(
                        (metric.name().to_string(), metric.unit().to_string()),
                        points,
                    );
                }
            }
        }
        let duration = &seen[&(
            "gen_ai.client.operation.duration".to_string(),
            "s".to_string(),
        )];
        assert_eq!(duration.len(), 2);
        let failed = duration
            .iter()
            .find(|(a, _, _)| a.contains(&("error.type".into(), "deadline_exceeded".into())))
            .expect("an error.type point");
        assert!(
            failed
                .0
                .contains(&("gen_ai.provider.name".into(), "none".into()))
        );
        let ok = duration
            .iter()
            .find(|(a, _, _)| a.contains(&("gen_ai.request.model".into(), "gpt-4o".into())))
            .unwrap();
        assert!(ok.0.contains(&("gen_ai.operation.name".into(), "chat".into())));
        assert!((ok.2 - 0.25).abs() < 1e-9);
        let tokens = &seen[&(
            "gen_ai.client.token.usage".to_string(),
            "{token}".to_string(),
        )];
        let input = tokens
            .iter()
            .find(|(a, _, _)| a.contains(&("gen_ai.token.type".into(), "input".into())))
            .unwrap();
        assert_eq!((input.1, input.2), (1, 120.0));
        let output = tokens
            .iter()
            .find(|(a, _, _)| a.contains(&("gen_ai.token.type".into(), "output".into())))
            .unwrap();
        assert_eq!((output.1, output.2), (1, 30.0));
    }

    /// A histogram point: attributes, count, sum.
    type Point = (Vec<(String, String)>, u64, f64);

    fn attrs<'a>(it: impl Iterator<Item = &'a KeyValue>) -> Vec<(String, String)> {
        it.map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect()
    }
}
