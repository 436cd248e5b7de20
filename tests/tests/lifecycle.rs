//! Process lifecycle: client disconnects, SIGTERM drains, CLI validation, the demo.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use switchyard_sim::{Behavior, Outcome, Sim, SimConfig, expected_text};
use switchyard_tests::{Proxy, binary, client, endpoint, send, sim_provider, sse_data};

fn policy(sim: &Sim) -> Value {
    json!({
        "providers": { "alpha": sim_provider(sim, None) },
        "models": { "m": { "endpoints": [ endpoint("alpha", "alpha-m", 1.0, 2.0) ] } }
    })
}

fn stream_request(proxy: &Proxy) -> http::Request<Full<Bytes>> {
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "go"}]});
    http::Request::post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_mid_stream_closes_the_upstream_within_a_second() {
    let sim = Sim::start(SimConfig {
        name: "alpha".into(),
        default: Behavior::ok()
            .chunks(200)
            .chunk_delay(Duration::from_millis(50)),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let proxy = Proxy::start(&policy(&sim));

    let resp = client().request(stream_request(&proxy)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // Read until some content has arrived, then walk away.
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data:").count() < 3 {
        let frame = body.frame().await.unwrap().unwrap();
        if let Some(d) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(d));
        }
    }
    drop(body);
    let dropped_at = Instant::now();

    let seq = sim.calls()[0].seq;
    let outcome = sim.wait_outcome(seq, Duration::from_secs(1)).await;
    let waited = dropped_at.elapsed();
    match outcome {
        Some(Outcome::ClientGone { chunks, .. }) => {
            assert!(
                chunks < 200,
                "the upstream stream ran to the end ({chunks} chunks)"
            );
        }
        other => panic!(
            "upstream not closed within 1 s of the client leaving: {other:?} after {waited:?}"
        ),
    }
    assert!(waited <= Duration::from_secs(1), "{waited:?}");
    // The proxy is unharmed.
    let r = send("GET", &proxy.admin_url("/healthz"), &[], Vec::new()).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_inflight_stream_finish_then_exits_zero() {
    let behavior = Behavior::ok()
        .chunks(20)
        .chunk_delay(Duration::from_millis(100));
    let sim = Sim::start(SimConfig {
        name: "alpha".into(),
        default: behavior.clone(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut proxy = Proxy::start(&policy(&sim));

    let resp = client().request(stream_request(&proxy)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut raw = Vec::new();
    // First event in hand, then SIGTERM.
    let frame = body.frame().await.unwrap().unwrap();
    raw.extend_from_slice(frame.data_ref().unwrap());
    proxy.signal("TERM");

    // While draining: not ready, and no new connections are accepted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = send("GET", &proxy.admin_url("/readyz"), &[], Vec::new()).await;
    assert_eq!(ready.status, 503);
    assert!(
        std::net::TcpStream::connect(proxy.addr).is_err(),
        "still accepting while draining"
    );

    while let Some(frame) = body.frame().await {
        let frame = frame.expect("stream broken by shutdown");
        if let Some(d) = frame.data_ref() {
            raw.extend_from_slice(d);
        }
    }
    let events = sse_data(&raw);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, expected_text("alpha", &behavior));

    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("did not exit after draining");
    assert!(status.success(), "{status:?}");
}

#[test]
fn check_prints_the_field_path_of_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({
            "providers": { "p": { "api": "openai", "base_url": "https://api.example.com/v1" } },
            "models": {
                "a": { "endpoints": [
                    { "provider": "nope", "pricing": { "prompt": 1, "completion": 1 } },
                    { "provider": "p", "pricing": { "prompt": -1, "completion": 1 } }
                ] }
            }
        }))
        .unwrap(),
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("models.a.endpoints[0].provider"),
        "{stderr}"
    );
    assert!(
        stderr.contains("models.a.endpoints[1].pricing.prompt"),
        "{stderr}"
    );

    std::fs::write(&file, r#"{"providers": {}, "models": {}, "bogus": 1}"#).unwrap();
    let out = Command::new(binary())
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

#[test]
fn check_accepts_yaml_and_reports_counts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(
        &file,
        "providers:\n  p:\n    api: openai\n    base_url: https://api.example.com/v1\nmodels:\n  a:\n    endpoints:\n      - provider: p\n        pricing: {prompt: 1, completion: 2}\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 models"));
}

#[test]
fn run_refuses_an_invalid_policy_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, "{ not json").unwrap();
    // Exit code 2 and the diagnostic, without ever logging that it listens.
    let out = Command::new(binary())
        .args(["run", "--policy"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid policy"), "{stderr}");
    assert!(!stderr.contains("switchyard listening"), "{stderr}");
}

/// Runs the demo's tour on free ports with `SWITCHYARD_LOG` set to `log` (or no log filter
/// at all); asserts it succeeded and returns its stdout and stderr.
fn demo_tour(log: Option<&str>) -> (String, String) {
    let mut cmd = Command::new(binary());
    cmd.args([
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--exit-after-tour",
    ])
    .env_remove("RUST_LOG");
    match log {
        Some(filter) => cmd.env("SWITCHYARD_LOG", filter),
        None => cmd.env_remove("SWITCHYARD_LOG"),
    };
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn demo_hides_access_lines_unless_a_log_filter_is_set() {
    let (stdout, stderr) = demo_tour(None);
    assert!(stdout.contains("access lines hidden"), "{stdout}");
    assert!(!stderr.contains("switchyard::access"), "{stderr}");
    // Other information still shows: where the proxy listens.
    assert!(stderr.contains("switchyard listening"), "{stderr}");
}

#[test]
fn demo_tour_runs_without_any_key_or_network() {
    let (stdout, stderr) = demo_tour(Some("info"));
    // The user's own log filter is honoured: one access line per request of the tour.
    assert!(
        stderr.matches("switchyard::access").count() >= 20,
        "{stderr}"
    );
    assert!(!stdout.contains("access lines hidden"), "{stdout}");
    // Step 2: two failures on flaky (one same-endpoint retry), then steady serves.
    assert!(
        stdout.contains(
            "served by provider=steady model=demo-chat (upstream model steady-chat-v1), attempts=3"
        ),
        "{stdout}"
    );
    // Step 3: the slow endpoint misses the first-token timeout; pricey serves.
    assert!(
        stdout.contains("served by provider=pricey after 1."),
        "{stdout}"
    );
    assert!(stdout.contains("404"), "{stdout}");
}
