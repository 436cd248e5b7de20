//! [`init`]: the log subscriber, the OpenTelemetry pipelines when OTLP is configured, and
//! the [`Telemetry`] handle that flushes them.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{
    MetricExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tokio::runtime::Handle;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::filter::{self, FilterExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, OtlpConfig, OtlpProtocol, SamplerConfig, TelemetryConfig};
use crate::error::TelemetryError;
use crate::metrics::Metrics;
use crate::spans::TARGET;

/// The instrumentation scope of Switchyard's tracer and meter.
pub const SCOPE: &str = "switchyard";

/// What [`init`] set up. Keep it for the process's life and call [`shutdown`] at exit so
/// buffered spans and metrics are exported.
///
/// [`shutdown`]: Telemetry::shutdown
pub struct Telemetry {
    metrics: Arc<Metrics>,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    installed: bool,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.tracer_provider.is_some())
            .field("otlp_metrics", &self.meter_provider.is_some())
            .field("installed", &self.installed)
            .finish()
    }
}

impl Telemetry {
    /// The process's metrics (recording GenAI metrics over OTLP too when that is on).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether spans are exported over OTLP.
    pub fn traces_enabled(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Whether metrics are exported over OTLP.
    pub fn otlp_metrics_enabled(&self) -> bool {
        self.meter_provider.is_some()
    }

    /// False when another global subscriber was already installed (tests that start several
    /// servers in one process): logs and spans then go to that one.
    pub fn subscriber_installed(&self) -> bool {
        self.installed
    }

    /// Exports everything buffered now.
    pub async fn flush(&self) -> Result<(), TelemetryError> {
        each_provider(
            self.tracer_provider.clone(),
            self.meter_provider.clone(),
            SdkTracerProvider::force_flush,
            SdkMeterProvider::force_flush,
        )
        .await
    }

    /// Exports everything buffered and stops the exporters.
    pub async fn shutdown(self) -> Result<(), TelemetryError> {
        each_provider(
            self.tracer_provider,
            self.meter_provider,
            SdkTracerProvider::shutdown,
            SdkMeterProvider::shutdown,
        )
        .await
    }
}

/// Runs `on_traces` and `on_metrics` on whichever providers are set, off the runtime, and
/// joins their errors.
async fn each_provider(
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    on_traces: fn(&SdkTracerProvider) -> OTelSdkResult,
    on_metrics: fn(&SdkMeterProvider) -> OTelSdkResult,
) -> Result<(), TelemetryError> {
    off_runtime(move || {
        let mut errors = Vec::new();
        if let Some(tp) = tracer_provider
            && let Err(e) = on_traces(&tp)
        {
            errors.push(format!("traces: {e}"));
        }
        if let Some(mp) = meter_provider
            && let Err(e) = on_metrics(&mp)
        {
            errors.push(format!("metrics: {e}"));
        }
        joined(errors)
    })
    .await
}

fn joined(errors: Vec<String>) -> Result<(), TelemetryError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(TelemetryError::Shutdown(errors.join("; ")))
    }
}

/// Runs a blocking flush where it cannot stall the runtime: the SDK's export threads wait
/// for the exporters' connections, which live on the runtime's workers (a current-thread
/// runtime would otherwise deadlock).
async fn off_runtime(
    work: impl FnOnce() -> Result<(), TelemetryError> + Send + 'static,
) -> Result<(), TelemetryError> {
    if Handle::try_current().is_ok() {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| TelemetryError::Shutdown(e.to_string()))?
    } else {
        work()
    }
}

/// Sets up logging, and OTLP export of spans and metrics when `cfg.otlp` is set (which
/// needs a tokio runtime: call it from inside one). Installs the W3C trace-context
/// propagator. A second call in the same process keeps the first subscriber (see
/// [`Telemetry::subscriber_installed`]).
pub fn init(cfg: TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = log_filter(&cfg.log_filter)?;
    let tty = std::io::stderr().is_terminal();
    let json = match cfg.log_format {
        LogFormat::Auto => !tty,
        LogFormat::Json => true,
        LogFormat::Human => false,
    };
    let (tracer_provider, meter_provider) = match &cfg.otlp {
        Some(otlp) => {
            let handle = Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
            let _entered = handle.enter();
            let resource = Resource::builder()
                .with_service_name(otlp.service_name.clone())
                .build();
            let tp = SdkTracerProvider::builder()
                .with_batch_exporter(span_exporter(otlp, &handle)?)
                .with_sampler(sampler(otlp.sampler))
                .with_resource(resource.clone())
                .build();
            let mp = match &otlp.metrics_endpoint {
                Some(endpoint) => Some(
                    SdkMeterProvider::builder()
                        .with_reader(
                            PeriodicReader::builder(metric_exporter(otlp, endpoint, &handle)?)
                                .with_interval(otlp.metrics_interval)
                                .build(),
                        )
                        .with_resource(resource)
                        .build(),
                ),
                None => None,
            };
            (Some(tp), mp)
        }
        None => (None, None),
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(tp) = &tracer_provider {
        opentelemetry::global::set_tracer_provider(tp.clone());
    }
    let metrics = Arc::new(match &meter_provider {
        Some(mp) => Metrics::with_meter(&mp.meter(SCOPE)),
        None => Metrics::new(),
    });
    let tracer = tracer_provider.as_ref().map(|tp| tp.tracer(SCOPE));
    let installed = subscriber(filter, json, tty, std::io::stderr, tracer)
        .try_init()
        .is_ok();
    Ok(Telemetry {
        metrics,
        tracer_provider,
        meter_provider,
        installed,
    })
}

pub(crate) fn log_filter(directives: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(directives).map_err(|e| TelemetryError::LogFilter {
        filter: directives.to_string(),
        reason: e.to_string(),
    })
}

/// The subscriber: log lines filtered by `filter`, and, with a tracer, every `switchyard*`
/// span and event at `INFO` or above as OpenTelemetry spans — whatever the log level, so
/// quieting logs never drops traces.
pub(crate) fn subscriber<W>(
    filter: EnvFilter,
    json: bool,
    ansi: bool,
    writer: W,
    tracer: Option<SdkTracer>,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    // Log lines are events only. Letting the log layer see spans makes it keep every span's
    // fields as formatted text and re-format them on each `Span::record` — the biggest CPU
    // cost per request in the profile (benches/FINDINGS.md); every log line that matters
    // (the access line above all) carries its own fields.
    let events_only = filter.and(filter::filter_fn(|meta| meta.is_event()));
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    layers.push(if json {
        fmt.event_format(crate::jsonlog::JsonLines)
            .with_filter(events_only)
            .boxed()
    } else {
        fmt.with_ansi(ansi).with_filter(events_only).boxed()
    });
    if let Some(tracer) = tracer {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_target(false)
                .with_level(false)
                .with_filter(Targets::new().with_target(TARGET, Level::INFO))
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers)
}

fn sampler(s: SamplerConfig) -> Sampler {
    match s {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerConfig::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerConfig::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

fn header_map(headers: &[(String, String)]) -> HashMap<String, String> {
    headers.iter().cloned().collect()
}

fn metadata(headers: &[(String, String)]) -> MetadataMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        // Validated when the configuration was read; anything else is skipped, not printed.
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            map.insert(k, v);
        }
    }
    MetadataMap::from_headers(map)
}

fn span_exporter(otlp: &OtlpConfig, handle: &Handle) -> Result<SpanExporter, TelemetryError> {
    let built = match otlp.protocol {
        OtlpProtocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(otlp.traces_endpoint.clone())
            .with_protocol(Protocol::Grpc)
            .with_timeout(otlp.timeout)
            .with_metadata(metadata(&otlp.headers))
            .build(),
        OtlpProtocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_endpoint(otlp.traces_endpoint.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(otlp.timeout)
            .with_headers(header_map(&otlp.headers))
            .with_http_client(OnRuntime::new(otlp, handle))
            .build(),
    };
    built.map_err(|e| TelemetryError::Exporter {
        signal: "traces",
        reason: e.to_string(),
    })
}

fn metric_exporter(
    otlp: &OtlpConfig,
    endpoint: &str,
    handle: &Handle,
) -> Result<MetricExporter, TelemetryError> {
    let built = match otlp.protocol {
        OtlpProtocol::Grpc => MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.to_string())
            .with_protocol(Protocol::Grpc)
            .with_timeout(otlp.timeout)
            .with_metadata(metadata(&otlp.headers))
            .build(),
        OtlpProtocol::HttpProtobuf => MetricExporter::builder()
            .with_http()
            .with_endpoint(endpoint.to_string())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(otlp.timeout)
            .with_headers(header_map(&otlp.headers))
            .with_http_client(OnRuntime::new(otlp, handle))
            .build(),
    };
    built.map_err(|e| TelemetryError::Exporter {
        signal: "metrics",
        reason: e.to_string(),
    })
}

/// The hyper client, run on the tokio runtime: the SDK exports from its own threads, where
/// hyper's connections and timers have no reactor.
#[derive(Debug)]
struct OnRuntime {
    client: opentelemetry_http::hyper::HyperClient,
    handle: Handle,
}

impl OnRuntime {
    fn new(otlp: &OtlpConfig, handle: &Handle) -> Self {
        Self {
            client: opentelemetry_http::hyper::HyperClient::with_default_connector(
                otlp.timeout,
                None,
            ),
            handle: handle.clone(),
        }
    }
}

impl HttpClient for OnRuntime {
    // The expansion of the trait's `async fn` (it is declared with `async_trait`).
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let task = self
            .handle
            .spawn(async move { client.send_bytes(request).await });
        Box::pin(async move {
            match task.await {
                Ok(result) => result,
                Err(e) => Err(Box::new(e) as HttpError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::fmt;
    use std::io;
    use std::sync::Mutex;
    use std::time::Duration;

    use http::{HeaderMap, HeaderValue};
    use opentelemetry::trace::{SpanKind, Status};
    use opentelemetry::{Array, Value};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
    use switchyard_core::{AttemptReport, Class, Usage};
    use tokio::time::Instant;

    use super::*;
    use crate::config::OtlpConfig;
    use crate::fields;
    use crate::propagation::{continue_trace, inject_context};
    use crate::spans::{
        AttemptSpanStart, GenAiOperation, RequestSpanEnd, RequestSpanStart, attempt_span,
        record_attempt, record_finish_reasons, record_request_end, request_span,
    };

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT_SPAN: &str = "00f067aa0ba902b7";

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// Like the policy crate's `Secret`: both formatting traits print a placeholder.
    struct Secret(&'static str);

    impl fmt::Debug for Secret {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("[redacted]")
        }
    }

    impl fmt::Display for Secret {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("[redacted]")
        }
    }

    fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn pipeline(
        log_filter_directives: &str,
        json: bool,
    ) -> (
        InMemorySpanExporter,
        SdkTracerProvider,
        Captured,
        impl tracing::Subscriber + Send + Sync,
    ) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let logs = Captured::default();
        let sub = subscriber(
            log_filter(log_filter_directives).unwrap(),
            json,
            false,
            logs.clone(),
            Some(provider.tracer("test")),
        );
        (exporter, provider, logs, sub)
    }

    fn report(class: Class) -> AttemptReport {
        let sent_at = Instant::now();
        AttemptReport {
            request_id: Some(Arc::from("req-1")),
            endpoint: Arc::from("azure/gpt-4o"),
            provider: Arc::from("azure"),
            model: Arc::from("gpt-4o"),
            attempt: 2,
            class,
            status: Some(200),
            sent_at,
            ttft: Some(Duration::from_millis(150)),
            ended_at: sent_at + Duration::from_millis(700),
            usage: Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 34,
                cost: 0.0042,
                estimated: false,
            }),
            retry_after: None,
        }
    }

    #[test]
    fn spans_export_with_schema_attributes_and_the_callers_parent() {
        // Logs at `warn` must not drop traces.
        let (exporter, provider, _logs, sub) = pipeline("warn", true);
        let mut incoming = HeaderMap::new();
        incoming.insert(
            "traceparent",
            HeaderValue::from_str(&format!("00-{TRACE}-{PARENT_SPAN}-01")).unwrap(),
        );
        let mut upstream = HeaderMap::new();
        tracing::subscriber::with_default(sub, || {
            let req = request_span(&RequestSpanStart {
                operation: GenAiOperation::Chat,
                model: "gpt-4o",
                request_id: "req-1",
                route: Some("team-a"),
                max_tokens: Some(256),
            });
            continue_trace(&req, &incoming);
            let entered = req.enter();
            let att = attempt_span(&AttemptSpanStart {
                operation: GenAiOperation::Chat,
                provider: "azure",
                upstream_model: "gpt-4o-2024-08-06",
                endpoint: "azure/gpt-4o",
                attempt: 2,
                fallback_reason: Some(Class::ServerError),
                breaker_state: Some("closed"),
                max_tokens: Some(256),
            });
            {
                let _in_attempt = att.enter();
                inject_context(&mut upstream);
            }
            record_attempt(&att, &report(Class::Success));
            record_finish_reasons(&att, &["stop"]);
            att.record(fields::GEN_AI_RESPONSE_MODEL, "gpt-4o-2024-08-06");
            drop(att);
            record_request_end(
                &req,
                &RequestSpanEnd {
                    status: 200,
                    attempts: 2,
                    provider: Some("azure"),
                    response_model: Some("gpt-4o-2024-08-06"),
                    usage: report(Class::Success).usage,
                    error_type: None,
                },
            );
            drop(entered);
            drop(req);
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 2, "{spans:#?}");
        let req = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Server)
            .unwrap();
        let att = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Client)
            .unwrap();

        // The request span continues the caller's trace.
        assert_eq!(req.name, "chat gpt-4o");
        assert_eq!(req.span_context.trace_id().to_string(), TRACE);
        assert_eq!(req.parent_span_id.to_string(), PARENT_SPAN);
        assert!(req.parent_span_is_remote);
        assert_eq!(req.status, Status::Ok);
        let s = |v: &str| Value::from(v.to_string());
        assert_eq!(attr(req, fields::GEN_AI_OPERATION_NAME), Some(&s("chat")));
        assert_eq!(attr(req, fields::GEN_AI_REQUEST_MODEL), Some(&s("gpt-4o")));
        assert_eq!(
            attr(req, fields::GEN_AI_REQUEST_MAX_TOKENS),
            Some(&Value::I64(256))
        );
        assert_eq!(attr(req, fields::SWITCHYARD_REQUEST_ID), Some(&s("req-1")));
        assert_eq!(attr(req, fields::SWITCHYARD_ROUTE), Some(&s("team-a")));
        assert_eq!(attr(req, fields::SWITCHYARD_ATTEMPTS), Some(&Value::I64(2)));
        assert_eq!(attr(req, fields::GEN_AI_PROVIDER_NAME), Some(&s("azure")));
        assert_eq!(
            attr(req, fields::GEN_AI_RESPONSE_MODEL),
            Some(&s("gpt-4o-2024-08-06"))
        );
        assert_eq!(
            attr(req, fields::HTTP_RESPONSE_STATUS_CODE),
            Some(&Value::I64(200))
        );
        assert_eq!(
            attr(req, fields::GEN_AI_USAGE_INPUT_TOKENS),
            Some(&Value::I64(12))
        );
        // Fields never recorded are not exported, and the otel.* controls are not attributes.
        assert_eq!(attr(req, fields::ERROR_TYPE), None);
        assert_eq!(attr(req, fields::OTEL_NAME), None);
        assert_eq!(attr(req, fields::OTEL_KIND), None);

        // The attempt span is the request span's child, in the same trace.
        assert_eq!(att.name, "chat gpt-4o-2024-08-06");
        assert_eq!(att.span_context.trace_id().to_string(), TRACE);
        assert_eq!(att.parent_span_id, req.span_context.span_id());
        assert!(!att.parent_span_is_remote);
        assert_eq!(att.status, Status::Ok);
        assert_eq!(attr(att, fields::GEN_AI_PROVIDER_NAME), Some(&s("azure")));
        assert_eq!(
            attr(att, fields::GEN_AI_REQUEST_MODEL),
            Some(&s("gpt-4o-2024-08-06"))
        );
        assert_eq!(
            attr(att, fields::SWITCHYARD_ENDPOINT),
            Some(&s("azure/gpt-4o"))
        );
        assert_eq!(attr(att, fields::SWITCHYARD_ATTEMPT), Some(&Value::I64(2)));
        assert_eq!(attr(att, fields::SWITCHYARD_OUTCOME), Some(&s("success")));
        assert_eq!(
            attr(att, fields::SWITCHYARD_FALLBACK_REASON),
            Some(&s("server_error"))
        );
        assert_eq!(
            attr(att, fields::SWITCHYARD_BREAKER_STATE),
            Some(&s("closed"))
        );
        assert_eq!(
            attr(att, fields::SWITCHYARD_TTFT_MS),
            Some(&Value::I64(150))
        );
        assert_eq!(
            attr(att, fields::SWITCHYARD_COST_USD),
            Some(&Value::F64(0.0042))
        );
        assert_eq!(
            attr(att, fields::GEN_AI_USAGE_INPUT_TOKENS),
            Some(&Value::I64(12))
        );
        assert_eq!(
            attr(att, fields::GEN_AI_USAGE_OUTPUT_TOKENS),
            Some(&Value::I64(34))
        );
        assert_eq!(
            attr(att, fields::HTTP_RESPONSE_STATUS_CODE),
            Some(&Value::I64(200))
        );
        assert_eq!(
            attr(att, fields::GEN_AI_RESPONSE_FINISH_REASONS),
            Some(&Value::Array(Array::String(vec!["stop".into()])))
        );

        // The upstream request carries the attempt span as its parent.
        let tp = upstream.get("traceparent").unwrap().to_str().unwrap();
        assert_eq!(tp, format!("00-{TRACE}-{}-01", att.span_context.span_id()));
    }

    #[test]
    fn a_failed_attempt_is_an_error_span() {
        let (exporter, provider, _logs, sub) = pipeline("info", false);
        tracing::subscriber::with_default(sub, || {
            let att = attempt_span(&AttemptSpanStart {
                operation: GenAiOperation::Embeddings,
                provider: "p",
                upstream_model: "emb",
                endpoint: "p/emb",
                attempt: 1,
                fallback_reason: None,
                breaker_state: None,
                max_tokens: None,
            });
            let mut r = report(Class::FirstTokenTimeout);
            r.usage = None;
            r.status = None;
            record_attempt(&att, &r);
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        let att = &spans[0];
        assert_eq!(att.name, "embeddings emb");
        // No incoming trace: a new root.
        assert_eq!(att.parent_span_id, opentelemetry::trace::SpanId::INVALID);
        assert!(matches!(att.status, Status::Error { .. }));
        assert_eq!(
            attr(att, fields::ERROR_TYPE),
            Some(&Value::from("first_token_timeout".to_string()))
        );
        assert_eq!(attr(att, fields::SWITCHYARD_FALLBACK_REASON), None);
        assert_eq!(attr(att, fields::GEN_AI_USAGE_INPUT_TOKENS), None);
    }

    #[test]
    fn spans_outside_the_switchyard_target_are_not_exported_but_logged() {
        let (exporter, provider, logs, sub) = pipeline("info", true);
        tracing::subscriber::with_default(sub, || {
            let _s = tracing::info_span!(target: "hyper", "conn").entered();
            tracing::info!(target: "hyper", "hello from hyper");
            let _d = tracing::debug_span!(target: "switchyard", "too_detailed").entered();
        });
        provider.force_flush().unwrap();
        assert!(exporter.get_finished_spans().unwrap().is_empty());
        // Other Switchyard crates' module targets share the prefix and are exported.
        let (exporter, provider, _, sub) = pipeline("info", true);
        tracing::subscriber::with_default(sub, || {
            let _s = tracing::info_span!(target: "switchyard_fallback::exec", "attempt").entered();
        });
        provider.force_flush().unwrap();
        assert_eq!(exporter.get_finished_spans().unwrap().len(), 1);
        let text = logs.text();
        assert!(text.contains("hello from hyper"), "{text}");
        // JSON lines.
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    /// Secrets are never formatted: a `Secret`-like value recorded as a span field or log
    /// field shows its placeholder in logs and in exported attributes, and the OTLP
    /// configuration's `Debug` hides header values.
    #[test]
    fn secrets_are_never_formatted() {
        const KEY: &str = "sk-live-abcdef0123456789";
        let (exporter, provider, logs, sub) = pipeline("info", true);
        tracing::subscriber::with_default(sub, || {
            let secret = Secret(KEY);
            let span = tracing::info_span!(
                target: "switchyard",
                "request",
                api_key = %secret,
                api_key_debug = ?secret,
            );
            let _e = span.enter();
            tracing::info!(target: "switchyard", key = %secret, "calling upstream");
            // The value is there to be leaked; only `expose`-like access yields it.
            assert_eq!(secret.0.len(), KEY.len());
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        let exported = format!("{:?}", spans[0]);
        assert!(!exported.contains(KEY), "{exported}");
        assert!(exported.contains("[redacted]"), "{exported}");
        let text = logs.text();
        assert!(!text.contains(KEY), "{text}");
        assert!(text.contains("[redacted]"), "{text}");

        let cfg = OtlpConfig {
            protocol: OtlpProtocol::Grpc,
            traces_endpoint: "http://127.0.0.1:4317".into(),
            metrics_endpoint: None,
            headers: vec![("authorization".into(), format!("Bearer {KEY}"))],
            service_name: "switchyard".into(),
            sampler: SamplerConfig::default(),
            metrics_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        };
        let shown = format!(
            "{cfg:?} {:?}",
            TelemetryConfig {
                otlp: Some(cfg.clone()),
                ..TelemetryConfig::default()
            }
        );
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("authorization=[redacted]"), "{shown}");
    }

    #[test]
    fn a_bad_log_filter_is_an_error() {
        let e = log_filter("switchyard=loud").unwrap_err();
        assert!(e.to_string().contains("switchyard=loud"), "{e}");
    }

    #[test]
    fn otlp_outside_a_runtime_is_an_error_not_a_panic() {
        let cfg = TelemetryConfig {
            otlp: Some(OtlpConfig {
                protocol: OtlpProtocol::Grpc,
                traces_endpoint: "http://127.0.0.1:1".into(),
                metrics_endpoint: None,
                headers: Vec::new(),
                service_name: "t".into(),
                sampler: SamplerConfig::default(),
                metrics_interval: Duration::from_secs(60),
                timeout: Duration::from_secs(1),
            }),
            ..TelemetryConfig::default()
        };
        assert!(matches!(init(cfg), Err(TelemetryError::NoRuntime)));
    }

    #[test]
    fn samplers_map_to_the_sdk() {
        assert!(matches!(
            sampler(SamplerConfig::AlwaysOn),
            Sampler::AlwaysOn
        ));
        assert!(matches!(
            sampler(SamplerConfig::AlwaysOff),
            Sampler::AlwaysOff
        ));
        assert!(matches!(
            sampler(SamplerConfig::TraceIdRatio(0.5)),
            Sampler::TraceIdRatioBased(r) if r == 0.5
        ));
        assert!(matches!(
            sampler(SamplerConfig::ParentBasedAlwaysOn),
            Sampler::ParentBased(_)
        ));
    }

    #[test]
    fn export_headers_become_grpc_metadata() {
        let md = metadata(&[
            ("x-api-key".into(), "k1".into()),
            ("bad header".into(), "v".into()),
        ]);
        assert_eq!(md.get("x-api-key").unwrap(), "k1");
        assert_eq!(md.len(), 1);
    }
}
