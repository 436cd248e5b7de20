//! The `/metrics` text read by an independent parser: the official Python client's
//! (`prometheus_client.parser`), from the test venv (runs when `SWITCHYARD_TEST_PYTHON` is
//! set).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchyard_core::{AttemptObserver, AttemptReport, Class, Usage};
use switchyard_telemetry::{BreakerState, Metrics, RequestDone};

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;

fn populated() -> Metrics {
    let m = Metrics::new();
    let sent_at = tokio::time::Instant::now();
    for (attempt, provider, class) in [
        (1, "p1", Class::ServerError),
        (2, "p1", Class::ServerError),
        (3, "p2", Class::Success),
    ] {
        m.observe(&AttemptReport {
            request_id: Some(Arc::from("r")),
            endpoint: Arc::from(format!("{provider}/m")),
            provider: Arc::from(provider),
            model: Arc::from("m"),
            attempt,
            class,
            status: Some(200),
            sent_at,
            ttft: Some(Duration::from_millis(30)),
            ended_at: sent_at + Duration::from_millis(60),
            usage: (class == Class::Success).then_some(Usage {
                prompt_tokens: 7,
                completion_tokens: 9,
                cost: 0.25,
                estimated: false,
            }),
            retry_after: None,
        });
    }
    let _in_flight = m.request_started();
    m.request_finished(&RequestDone {
        request_id: Some("r"),
        operation: "chat",
        route: Some("route \"quoted\""),
        status: 200,
        outcome: "ok",
        duration: Duration::from_millis(70),
        ttft: Some(Duration::from_millis(35)),
        provider: Some("p2"),
        model: Some("m"),
        usage: None,
    });
    m.breaker_state("p1", "m", BreakerState::Open);
    m.budget_spent("daily", 0.25);
    m.budget_rejected("daily");
    m.policy_reloaded(7);
    m.policy_reload_failed();
    m.retry_budget_refused();
    m
}

#[test]
fn the_python_client_parses_every_family() {
    let Some(python) = std::env::var_os("SWITCHYARD_TEST_PYTHON") else {
        eprintln!("SWITCHYARD_TEST_PYTHON not set: skipped");
        return;
    };
    let text = populated().encode();
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "parser failed on:\n{text}");
    let families: Value = serde_json::from_slice(&out.stdout).unwrap();
    let families = families.as_object().unwrap();
    let expect = [
        ("switchyard_requests", "counter"),
        ("switchyard_requests_in_flight", "gauge"),
        ("switchyard_request_duration_seconds", "histogram"),
        ("switchyard_request_ttft_seconds", "histogram"),
        ("switchyard_attempts", "counter"),
        ("switchyard_attempt_duration_seconds", "histogram"),
        ("switchyard_attempt_ttft_seconds", "histogram"),
        ("switchyard_fallbacks", "counter"),
        ("switchyard_retries", "counter"),
        ("switchyard_retry_budget_refusals", "counter"),
        ("switchyard_breaker_state", "gauge"),
        ("switchyard_breaker_transitions", "counter"),
        ("switchyard_tokens", "counter"),
        ("switchyard_cost_usd", "counter"),
        ("switchyard_budget_spend_usd", "counter"),
        ("switchyard_budget_rejections", "counter"),
        ("switchyard_policy_reloads", "counter"),
        ("switchyard_policy_generation", "gauge"),
    ];
    assert_eq!(families.len(), expect.len(), "{families:#?}");
    for (name, kind) in expect {
        let f = families
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {families:#?}"));
        assert_eq!(f["type"], kind, "{name}");
    }
    // A label value with quotes survives the round trip.
    let requests = &families["switchyard_requests"]["samples"][0];
    assert_eq!(requests[1]["route"], "route \"quoted\"");
    assert_eq!(requests[2], 1.0);
    let fallbacks = &families["switchyard_fallbacks"]["samples"][0];
    assert_eq!(fallbacks[1]["reason"], "server_error");
    assert_eq!(fallbacks[1]["kind"], "provider");
    let generation = &families["switchyard_policy_generation"]["samples"][0];
    assert_eq!(generation[2], 7.0);
}
