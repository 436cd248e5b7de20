//! What [`init`](crate::init) sets up, read from the environment (the OpenTelemetry SDK's
//! standard variables plus Switchyard's own) or built in code.

use std::fmt;
use std::time::Duration;

use crate::error::TelemetryError;

/// The log level filter used when neither `SWITCHYARD_LOG` nor `RUST_LOG` is set.
pub const DEFAULT_LOG_FILTER: &str = "info";
/// `service.name` when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "switchyard";
/// How often metrics are pushed over OTLP when `OTEL_METRIC_EXPORT_INTERVAL` is not set
/// (the SDK's default, 60 s).
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(60);
/// Time one export may take when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set (the SDK's default).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything [`init`](crate::init) needs.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// `tracing-subscriber` `EnvFilter` directives for the log output, e.g. `info` or
    /// `switchyard_fallback=debug,info`.
    pub log_filter: String,
    pub log_format: LogFormat,
    /// OTLP export; `None` exports nothing (logs and `/metrics` still work).
    pub otlp: Option<OtlpConfig>,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human text on a terminal, JSON lines otherwise (a log collector is reading).
    #[default]
    Auto,
    Json,
    Human,
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc`: the endpoint is used as is (e.g. `http://127.0.0.1:4317`).
    #[default]
    Grpc,
    /// `http/protobuf`: `/v1/traces` and `/v1/metrics` are appended to a generic endpoint
    /// (e.g. `http://127.0.0.1:4318`).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The `OTEL_EXPORTER_OTLP_PROTOCOL` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Which traces are recorded (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    /// Keep this fraction (0.0 to 1.0) of traces, decided by trace id.
    TraceIdRatio(f64),
    /// Follow the caller's sampled flag when a `traceparent` came in; else always on.
    #[default]
    ParentBasedAlwaysOn,
    /// Follow the caller's sampled flag when a `traceparent` came in; else never.
    ParentBasedAlwaysOff,
    /// Follow the caller's sampled flag when a `traceparent` came in; else this fraction.
    ParentBasedTraceIdRatio(f64),
}

/// Where and how spans (and metrics) are exported.
#[derive(Clone)]
pub struct OtlpConfig {
    pub protocol: OtlpProtocol,
    /// Full URL spans go to (for HTTP, including `/v1/traces`).
    pub traces_endpoint: String,
    /// Full URL metrics go to (for HTTP, including `/v1/metrics`); `None` exports no metrics.
    pub metrics_endpoint: Option<String>,
    /// Sent with every export (e.g. a collector's API key): never printed, see the `Debug`
    /// impl.
    pub headers: Vec<(String, String)>,
    /// `service.name` of the resource.
    pub service_name: String,
    pub sampler: SamplerConfig,
    /// How often metrics are pushed.
    pub metrics_interval: Duration,
    /// Time one export may take.
    pub timeout: Duration,
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Export headers routinely carry credentials: names only.
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, _)| format!("{k}=[redacted]"))
            .collect();
        f.debug_struct("OtlpConfig")
            .field("protocol", &self.protocol)
            .field("traces_endpoint", &self.traces_endpoint)
            .field("metrics_endpoint", &self.metrics_endpoint)
            .field("headers", &headers)
            .field("service_name", &self.service_name)
            .field("sampler", &self.sampler)
            .field("metrics_interval", &self.metrics_interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_filter: DEFAULT_LOG_FILTER.to_string(),
            log_format: LogFormat::Auto,
            otlp: None,
        }
    }
}

impl TelemetryConfig {
    /// Reads the process environment: `SWITCHYARD_LOG` (or `RUST_LOG`),
    /// `SWITCHYARD_LOG_FORMAT` (`json` or `human`), and the OpenTelemetry variables
    /// `OTEL_SDK_DISABLED`, `OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER[_ARG]`,
    /// `OTEL_METRICS_EXPORTER`, `OTEL_METRIC_EXPORT_INTERVAL`. OTLP is on only when an
    /// endpoint variable is set.
    pub fn from_env() -> Result<Self, TelemetryError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), with variables looked up by `var` (tests, or a
    /// config file that overrides the environment). Empty values count as unset.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let log_filter = get("SWITCHYARD_LOG")
            .or_else(|| get("RUST_LOG"))
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_string());
        let log_format = match get("SWITCHYARD_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("auto") => LogFormat::Auto,
            Some("json") => LogFormat::Json,
            Some("human" | "text") => LogFormat::Human,
            Some(other) => {
                return Err(TelemetryError::invalid(
                    "SWITCHYARD_LOG_FORMAT",
                    format!("`{other}` is not one of auto, json, human"),
                ));
            }
        };
        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        let otlp = if disabled {
            None
        } else {
            otlp_from_lookup(&get)?
        };
        Ok(Self {
            log_filter,
            log_format,
            otlp,
        })
    }
}

fn otlp_from_lookup(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpConfig>, TelemetryError> {
    let generic = get("OTEL_EXPORTER_OTLP_ENDPOINT");
    let traces = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if generic.is_none() && traces.is_none() {
        return Ok(None);
    }
    let (protocol_var, protocol) = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(p) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(p)),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            get("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ),
    };
    let protocol = match protocol.as_deref().map(str::trim) {
        None | Some("grpc") => OtlpProtocol::Grpc,
        Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
        Some(other) => {
            return Err(TelemetryError::invalid(
                protocol_var,
                format!("`{other}` is not supported: use grpc or http/protobuf"),
            ));
        }
    };
    let signal_endpoint = |specific: Option<String>, specific_var: &'static str, path: &str| {
        match (specific, &generic) {
            // A signal's own endpoint is used as is, for both transports (OTel spec).
            (Some(url), _) => check_url(specific_var, url.trim()).map(Some),
            (None, Some(base)) => {
                let base = check_url("OTEL_EXPORTER_OTLP_ENDPOINT", base.trim())?;
                Ok(Some(match protocol {
                    OtlpProtocol::Grpc => base,
                    OtlpProtocol::HttpProtobuf => format!("{}{path}", base.trim_end_matches('/')),
                }))
            }
            (None, None) => Ok(None),
        }
    };
    let traces_endpoint =
        signal_endpoint(traces, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces")?.ok_or_else(
            || TelemetryError::invalid("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "missing".into()),
        )?;
    let metrics_off = get("OTEL_METRICS_EXPORTER").is_some_and(|v| v.trim() == "none");
    let metrics_endpoint = if metrics_off {
        None
    } else {
        signal_endpoint(
            get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "/v1/metrics",
        )?
    };
    let mut headers = Vec::new();
    for var in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some(raw) = get(var) {
            for (k, v) in parse_headers(var, &raw)? {
                // The signal's own headers win over the generic ones.
                headers.retain(|(old, _): &(String, String)| !old.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
        }
    }
    let service_name = get("OTEL_SERVICE_NAME")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    let sampler = parse_sampler(
        get("OTEL_TRACES_SAMPLER").as_deref(),
        get("OTEL_TRACES_SAMPLER_ARG").as_deref(),
    )?;
    let metrics_interval =
        millis_var(get, "OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_METRICS_INTERVAL)?;
    let timeout = millis_var(get, "OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_EXPORT_TIMEOUT)?;
    Ok(Some(OtlpConfig {
        protocol,
        traces_endpoint,
        metrics_endpoint,
        headers,
        service_name,
        sampler,
        metrics_interval,
        timeout,
    }))
}

/// A positive number of milliseconds, as the OTel variables spell durations.
fn millis_var(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: Duration,
) -> Result<Duration, TelemetryError> {
    match get(var) {
        None => Ok(default),
        Some(ms) => match ms.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(TelemetryError::invalid(
                var,
                format!("`{ms}` is not a positive number of milliseconds"),
            )),
        },
    }
}

/// Only plain `http://` is built in: Switchyard exports to a collector beside it (same pod
/// or host), and TLS to a remote collector is that collector's job.
fn check_url(var: &'static str, url: &str) -> Result<String, TelemetryError> {
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Ok(url.to_string()),
        Ok(uri) if uri.scheme_str() == Some("https") => Err(TelemetryError::invalid(
            var,
            format!("`{url}`: https is not supported; export to a local collector over http://"),
        )),
        _ => Err(TelemetryError::invalid(
            var,
            format!("`{url}` is not an http:// URL"),
        )),
    }
}

/// `key=value,key2=value2`, values percent-encoded (W3C baggage style, as the OTel spec
/// says). Error messages name the variable and the pair's position, never a value.
pub(crate) fn parse_headers(
    var: &'static str,
    raw: &str,
) -> Result<Vec<(String, String)>, TelemetryError> {
    let mut out = Vec::new();
    for (i, pair) in raw.split(',').enumerate() {
        if pair.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = pair.split_once('=') else {
            return Err(TelemetryError::invalid(
                var,
                format!("entry {} is not key=value", i + 1),
            ));
        };
        let key = k.trim().to_ascii_lowercase();
        let value = percent_decode(v.trim()).ok_or_else(|| {
            TelemetryError::invalid(
                var,
                format!("the value of `{key}` is not valid percent-encoded UTF-8"),
            )
        })?;
        if http::HeaderName::from_bytes(key.as_bytes()).is_err() {
            return Err(TelemetryError::invalid(
                var,
                format!("entry {} has an invalid header name", i + 1),
            ));
        }
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(TelemetryError::invalid(
                var,
                format!("the value of `{key}` is not a valid header value"),
            ));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_sampler(name: Option<&str>, arg: Option<&str>) -> Result<SamplerConfig, TelemetryError> {
    let ratio = || -> Result<f64, TelemetryError> {
        match arg.map(str::trim) {
            None => Ok(1.0),
            Some(a) => match a.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(TelemetryError::invalid(
                    "OTEL_TRACES_SAMPLER_ARG",
                    format!("`{a}` is not a ratio between 0 and 1"),
                )),
            },
        }
    };
    Ok(match name.map(str::trim) {
        None | Some("parentbased_always_on") => SamplerConfig::ParentBasedAlwaysOn,
        Some("always_on") => SamplerConfig::AlwaysOn,
        Some("always_off") => SamplerConfig::AlwaysOff,
        Some("traceidratio") => SamplerConfig::TraceIdRatio(ratio()?),
        Some("parentbased_always_off") => SamplerConfig::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => SamplerConfig::ParentBasedTraceIdRatio(ratio()?),
        Some(other) => {
            return Err(TelemetryError::invalid(
                "OTEL_TRACES_SAMPLER",
                format!("`{other}` is not a supported sampler"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<TelemetryConfig, TelemetryError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TelemetryConfig::from_lookup(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_without_any_variable() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.log_filter, "info");
        assert_eq!(c.log_format, LogFormat::Auto);
        assert!(c.otlp.is_none());
    }

    #[test]
    fn switchyard_log_wins_over_rust_log() {
        let c = cfg(&[("RUST_LOG", "debug"), ("SWITCHYARD_LOG", "warn")]).unwrap();
        assert_eq!(c.log_filter, "warn");
        let c = cfg(&[("RUST_LOG", "debug"), ("SWITCHYARD_LOG", "")]).unwrap();
        assert_eq!(c.log_filter, "debug");
    }

    #[test]
    fn log_format_override() {
        assert_eq!(
            cfg(&[("SWITCHYARD_LOG_FORMAT", "json")])
                .unwrap()
                .log_format,
            LogFormat::Json
        );
        assert!(cfg(&[("SWITCHYARD_LOG_FORMAT", "xml")]).is_err());
    }

    #[test]
    fn grpc_is_the_default_and_uses_the_endpoint_as_is() {
        let c = cfg(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")]).unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.protocol, OtlpProtocol::Grpc);
        assert_eq!(o.traces_endpoint, "http://127.0.0.1:4317");
        assert_eq!(o.metrics_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(o.service_name, "switchyard");
        assert_eq!(o.sampler, SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(o.metrics_interval, DEFAULT_METRICS_INTERVAL);
    }

    #[test]
    fn http_appends_signal_paths_to_the_generic_endpoint_only() {
        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(o.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(
            o.metrics_endpoint.as_deref(),
            Some("http://collector:4318/v1/metrics")
        );

        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.traces_endpoint, "http://c:4318/custom");
        // Only the traces endpoint was given: no metrics export.
        assert_eq!(o.metrics_endpoint, None);
    }

    #[test]
    fn traces_protocol_wins_and_json_is_refused() {
        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        assert_eq!(c.otlp.unwrap().protocol, OtlpProtocol::HttpProtobuf);
        let e = cfg(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
    }

    #[test]
    fn disabled_sdk_and_disabled_metrics() {
        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ])
        .unwrap();
        assert!(c.otlp.is_none());
        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ])
        .unwrap();
        assert_eq!(c.otlp.unwrap().metrics_endpoint, None);
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for bad in ["collector:4317", "https://c:4317", "not a url"] {
            let e = cfg(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)]).unwrap_err();
            assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
        }
    }

    #[test]
    fn headers_are_parsed_decoded_and_overridden_per_signal() {
        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Api-Key=abc%20def, x-team = blue",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=red"),
        ])
        .unwrap();
        let h = c.otlp.unwrap().headers;
        assert_eq!(
            h,
            vec![
                ("api-key".to_string(), "abc def".to_string()),
                ("x-team".to_string(), "red".to_string()),
            ]
        );
    }

    #[test]
    fn header_errors_never_show_values() {
        let e =
            parse_headers("OTEL_EXPORTER_OTLP_HEADERS", "authorization=sk-secret%zz").unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains("sk-secret"), "{text}");
        assert!(text.contains("authorization"), "{text}");
        let e = parse_headers("OTEL_EXPORTER_OTLP_HEADERS", "sk-secret-no-equals").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("sk-secret"));
        let e = parse_headers(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=line%0Abreak-sk-secret",
        )
        .unwrap_err();
        assert!(!format!("{e} {e:?}").contains("sk-secret"));
    }

    #[test]
    fn samplers() {
        let s = |n: Option<&str>, a: Option<&str>| parse_sampler(n, a);
        assert_eq!(s(None, None).unwrap(), SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(
            s(Some("always_off"), None).unwrap(),
            SamplerConfig::AlwaysOff
        );
        assert_eq!(s(Some("always_on"), None).unwrap(), SamplerConfig::AlwaysOn);
        assert_eq!(
            s(Some("traceidratio"), Some("0.25")).unwrap(),
            SamplerConfig::TraceIdRatio(0.25)
        );
        assert_eq!(
            s(Some("parentbased_traceidratio"), None).unwrap(),
            SamplerConfig::ParentBasedTraceIdRatio(1.0)
        );
        assert_eq!(
            s(Some("parentbased_always_off"), None).unwrap(),
            SamplerConfig::ParentBasedAlwaysOff
        );
        assert!(s(Some("traceidratio"), Some("2")).is_err());
        assert!(s(Some("jaeger_remote"), None).is_err());
    }

    #[test]
    fn service_name_and_interval() {
        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SERVICE_NAME", "edge-proxy"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ])
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.service_name, "edge-proxy");
        assert_eq!(o.metrics_interval, Duration::from_millis(500));
        assert_eq!(o.timeout, DEFAULT_EXPORT_TIMEOUT);
        assert!(
            cfg(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
            ])
            .is_err()
        );
    }
}
