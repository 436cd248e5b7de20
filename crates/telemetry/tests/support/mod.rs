//! The real OTLP receiver (`tests/py/otlp_receiver.py`) as a child process, and a request's
//! worth of telemetry to send it.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use switchyard_core::{AttemptObserver, AttemptReport, Class, Usage};
use switchyard_telemetry::spans::{
    AttemptSpanStart, RequestSpanEnd, RequestSpanStart, attempt_span, record_attempt,
    record_finish_reasons, record_request_end, request_span,
};
use switchyard_telemetry::{
    GenAiOperation, RequestDone, Telemetry, continue_trace, inject_context,
};

pub const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// The interpreter of the test venv, when the black-box Python peers are available.
pub fn python() -> Option<OsString> {
    std::env::var_os("SWITCHYARD_TEST_PYTHON")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running receiver; killed when dropped.
pub struct Receiver {
    child: Child,
    pub grpc: u16,
    pub http: u16,
    out: tempfile::NamedTempFile,
}

impl Receiver {
    pub fn start(python: &OsString) -> Self {
        let out = tempfile::NamedTempFile::new().unwrap();
        let script = workspace_root().join("tests/py/otlp_receiver.py");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(out.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("receiver said {line:?}: {e}"));
        let port = |k: &str| u16::try_from(ports[k].as_u64().unwrap()).unwrap();
        Self {
            grpc: port("grpc"),
            http: port("http"),
            child,
            out,
        }
    }

    /// Waits until `done` holds for the received records (JSON lines), or panics.
    pub async fn wait_for(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(self.out.path()).unwrap();
            let records: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if done(&records) {
                return records;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver got only {records:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One proxied request: a request span continuing the caller's trace, one attempt span, and
/// the request-level metrics. Returns the `traceparent` the upstream request would carry.
pub fn one_request(telemetry: &Telemetry) -> String {
    let mut incoming = HeaderMap::new();
    incoming.insert(
        "traceparent",
        HeaderValue::from_str(&format!("00-{TRACE}-{PARENT_SPAN}-01")).unwrap(),
    );
    let usage = Usage {
        prompt_tokens: 12,
        completion_tokens: 34,
        cost: 0.0042,
        estimated: false,
    };
    let req = request_span(&RequestSpanStart {
        operation: GenAiOperation::Chat,
        model: "gpt-4o",
        request_id: "req-otlp",
        route: Some("team-a"),
        max_tokens: None,
    });
    continue_trace(&req, &incoming);
    let mut upstream = HeaderMap::new();
    {
        let _in_request = req.enter();
        let att = attempt_span(&AttemptSpanStart {
            operation: GenAiOperation::Chat,
            provider: "azure",
            upstream_model: "gpt-4o-2024-08-06",
            endpoint: "azure/gpt-4o",
            attempt: 1,
            fallback_reason: None,
            breaker_state: Some("closed"),
            max_tokens: None,
        });
        let _in_attempt = att.enter();
        inject_context(&mut upstream);
        let sent_at = tokio::time::Instant::now();
        let report = AttemptReport {
            request_id: Some(Arc::from("req-otlp")),
            endpoint: Arc::from("azure/gpt-4o"),
            provider: Arc::from("azure"),
            model: Arc::from("gpt-4o"),
            attempt: 1,
            class: Class::Success,
            status: Some(200),
            sent_at,
            ttft: Some(Duration::from_millis(40)),
            ended_at: sent_at + Duration::from_millis(90),
            usage: Some(usage),
            retry_after: None,
        };
        record_attempt(&att, &report);
        record_finish_reasons(&att, &["stop"]);
        telemetry.metrics().observe(&report);
    }
    record_request_end(
        &req,
        &RequestSpanEnd {
            status: 200,
            attempts: 1,
            provider: Some("azure"),
            response_model: Some("gpt-4o-2024-08-06"),
            usage: Some(usage),
            error_type: None,
        },
    );
    drop(req);
    telemetry.metrics().request_finished(&RequestDone {
        request_id: Some("req-otlp"),
        operation: "chat",
        route: Some("team-a"),
        status: 200,
        outcome: "ok",
        duration: Duration::from_millis(95),
        ttft: Some(Duration::from_millis(45)),
        provider: Some("azure"),
        model: Some("gpt-4o"),
        usage: Some(usage),
    });
    upstream
        .get("traceparent")
        .expect("the upstream request carries our trace")
        .to_str()
        .unwrap()
        .to_string()
}

fn spans(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["signal"] == "span").collect()
}

fn metric<'a>(records: &'a [Value], name: &str) -> Option<&'a Value> {
    records
        .iter()
        .find(|r| r["signal"] == "metric" && r["name"] == name)
}

/// Both spans and both GenAI metrics arrived.
pub fn complete(records: &[Value]) -> bool {
    spans(records).len() >= 2
        && metric(records, "gen_ai.client.token.usage").is_some()
        && metric(records, "gen_ai.client.operation.duration").is_some()
}

/// What the receiver got is the request as sent: names, kinds, parentage, attributes.
pub fn check(records: &[Value], transport: &str, upstream_traceparent: &str) {
    let spans = spans(records);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let req = spans
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_SERVER")
        .expect("a server span");
    let att = spans
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .expect("a client span");
    for s in [req, att] {
        assert_eq!(s["transport"], transport);
        assert_eq!(s["service_name"], "switchyard-test");
        assert_eq!(s["scope"], "switchyard");
        assert_eq!(s["trace_id"], TRACE);
        assert_eq!(s["status"], "STATUS_CODE_OK");
    }
    assert_eq!(req["name"], "chat gpt-4o");
    assert_eq!(req["parent_span_id"], PARENT_SPAN);
    let a = &req["attributes"];
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.request.model"], "gpt-4o");
    assert_eq!(a["gen_ai.provider.name"], "azure");
    assert_eq!(a["switchyard.request_id"], "req-otlp");
    assert_eq!(a["switchyard.route"], "team-a");
    assert_eq!(a["switchyard.attempts"], 1);
    assert_eq!(a["http.response.status_code"], 200);

    assert_eq!(att["name"], "chat gpt-4o-2024-08-06");
    assert_eq!(att["parent_span_id"], req["span_id"]);
    let a = &att["attributes"];
    assert_eq!(a["gen_ai.request.model"], "gpt-4o-2024-08-06");
    assert_eq!(a["gen_ai.usage.input_tokens"], 12);
    assert_eq!(a["gen_ai.usage.output_tokens"], 34);
    assert_eq!(
        a["gen_ai.response.finish_reasons"],
        serde_json::json!(["stop"])
    );
    assert_eq!(a["switchyard.endpoint"], "azure/gpt-4o");
    assert_eq!(a["switchyard.attempt"], 1);
    assert_eq!(a["switchyard.outcome"], "success");
    assert_eq!(a["switchyard.ttft_ms"], 40);
    assert_eq!(a["switchyard.breaker_state"], "closed");
    assert_eq!(a["switchyard.cost_usd"], 0.0042);
    assert_eq!(
        upstream_traceparent,
        format!("00-{TRACE}-{}-01", att["span_id"].as_str().unwrap())
    );

    let tokens = metric(records, "gen_ai.client.token.usage").unwrap();
    assert_eq!(tokens["unit"], "{token}");
    assert_eq!(tokens["type"], "histogram");
    let by_type = |t: &str| {
        tokens["points"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["attributes"]["gen_ai.token.type"] == t)
            .unwrap_or_else(|| panic!("no {t} point in {tokens:#?}"))
            .clone()
    };
    let input = by_type("input");
    assert_eq!(input["count"], 1);
    assert_eq!(input["sum"], 12.0);
    assert_eq!(input["attributes"]["gen_ai.request.model"], "gpt-4o");
    assert_eq!(input["attributes"]["gen_ai.provider.name"], "azure");
    assert_eq!(by_type("output")["sum"], 34.0);
    let duration = metric(records, "gen_ai.client.operation.duration").unwrap();
    assert_eq!(duration["unit"], "s");
    let p = &duration["points"][0];
    assert_eq!(p["count"], 1);
    assert!((p["sum"].as_f64().unwrap() - 0.095).abs() < 1e-9, "{p}");
    assert_eq!(p["attributes"]["gen_ai.operation.name"], "chat");
}
