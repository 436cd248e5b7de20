/// Why telemetry could not be set up or flushed. Messages name variables and header names,
/// never header values (they carry collector credentials).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A configuration variable has a value that cannot be used.
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    /// The log filter directives do not parse.
    #[error("log filter `{filter}`: {reason}")]
    LogFilter { filter: String, reason: String },
    /// OTLP export was asked for outside a tokio runtime; the exporters' connections live on it.
    #[error("OTLP export needs a tokio runtime: call init() from inside one")]
    NoRuntime,
    /// The OTLP exporter could not be built.
    #[error("OTLP {signal} exporter: {reason}")]
    Exporter {
        signal: &'static str,
        reason: String,
    },
    /// Flushing or shutting down the exporters failed (buffered data may be lost).
    #[error("telemetry shutdown: {0}")]
    Shutdown(String),
}

impl TelemetryError {
    pub(crate) fn invalid(var: &'static str, reason: String) -> Self {
        Self::Invalid { var, reason }
    }
}
