//! `init()` pointed at a real OTLP receiver over HTTP/protobuf, on a current-thread
//! runtime (runs when `SWITCHYARD_TEST_PYTHON` is set). One test per file: `init` installs
//! the process's global subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use switchyard_telemetry::{OtlpProtocol, TelemetryConfig, init};

#[tokio::test]
async fn spans_and_metrics_reach_a_real_receiver_over_http() {
    let Some(python) = support::python() else {
        eprintln!("SWITCHYARD_TEST_PYTHON not set: skipped");
        return;
    };
    let receiver = support::Receiver::start(&python);
    let endpoint = format!("http://127.0.0.1:{}", receiver.http);
    let cfg = TelemetryConfig::from_lookup(|var| match var {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".into()),
        "OTEL_EXPORTER_OTLP_HEADERS" => Some("x-collector-key=not-logged".into()),
        "OTEL_SERVICE_NAME" => Some("switchyard-test".into()),
        "SWITCHYARD_LOG" => Some("warn".into()),
        _ => None,
    })
    .unwrap();
    let otlp = cfg.otlp.as_ref().unwrap();
    assert_eq!(otlp.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(otlp.traces_endpoint, format!("{endpoint}/v1/traces"));
    let telemetry = init(cfg).unwrap();
    assert!(telemetry.subscriber_installed());

    let traceparent = support::one_request(&telemetry);
    // A flush first: spans reach the receiver while the process goes on.
    telemetry.flush().await.unwrap();
    let records = receiver
        .wait_for(|r| r.iter().filter(|x| x["signal"] == "span").count() >= 2)
        .await;
    assert!(records.iter().all(|r| r["transport"] == "http"));
    telemetry.shutdown().await.unwrap();

    let records = receiver.wait_for(support::complete).await;
    support::check(&records, "http", &traceparent);
}
