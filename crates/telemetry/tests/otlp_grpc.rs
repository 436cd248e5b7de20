//! `init()` pointed at a real OTLP receiver over gRPC (runs when `SWITCHYARD_TEST_PYTHON`
//! names the test venv's interpreter, as `scripts/test` sets it). One test per file: `init`
//! installs the process's global subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use switchyard_telemetry::{OtlpProtocol, TelemetryConfig, init};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_a_real_receiver_over_grpc() {
    let Some(python) = support::python() else {
        eprintln!("SWITCHYARD_TEST_PYTHON not set: skipped");
        return;
    };
    let receiver = support::Receiver::start(&python);
    let endpoint = format!("http://127.0.0.1:{}", receiver.grpc);
    let cfg = TelemetryConfig::from_lookup(|var| match var {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_SERVICE_NAME" => Some("switchyard-test".into()),
        "SWITCHYARD_LOG" => Some("warn".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(cfg.otlp.as_ref().unwrap().protocol, OtlpProtocol::Grpc);
    let telemetry = init(cfg).unwrap();
    assert!(telemetry.subscriber_installed());
    assert!(telemetry.traces_enabled() && telemetry.otlp_metrics_enabled());

    let traceparent = support::one_request(&telemetry);
    telemetry.shutdown().await.unwrap();

    let records = receiver.wait_for(support::complete).await;
    support::check(&records, "grpc", &traceparent);
}
