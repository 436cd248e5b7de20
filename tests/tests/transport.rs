//! Transports end to end: TLS upstreams trusted through a provider's own CA (and refused
//! without it), HTTP/2 negotiated to the upstream by ALPN, and h2c on the proxy listener.
//!
//! The sim speaks plain HTTP/1.1 and h2c, so the TLS tests put a TLS-terminating relay in front
//! of it: it accepts TLS with a leaf certificate signed by a throwaway CA, records how each
//! handshake went (ALPN protocol, SNI, or the failure), and copies the decrypted bytes to the
//! sim. When ALPN settles on `h2`, those bytes are HTTP/2 with prior knowledge, which the sim
//! accepts as h2c.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use switchyard_sim::{Behavior, Sim, SimConfig, expected_text, fingerprint};
use switchyard_tests::{Answer, Proxy, endpoint, post_json, sim_provider, sse_data};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

const UPSTREAM_KEY: &str = "sk-upstream-tls-7";
const CA_FILE: &str = "upstream-ca.pem";
/// Bound on waiting for an event the test expects; never reached when things work.
const WAIT: Duration = Duration::from_secs(5);

/// A throwaway CA and a `localhost` / `127.0.0.1` server certificate it signed.
struct TestPki {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    leaf_key: PrivatePkcs8KeyDer<'static>,
}

impl TestPki {
    fn new() -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "switchyard transport test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

        TestPki {
            ca_pem: ca.pem(),
            leaf: leaf.der().clone(),
            leaf_key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        }
    }

    /// A server that offers `h2` first, then `http/1.1`, like a real provider's edge.
    fn acceptor(&self) -> TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![self.leaf.clone()],
            PrivateKeyDer::Pkcs8(self.leaf_key.clone_key()),
        )
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

/// How one TLS handshake at the relay went.
#[derive(Clone, Debug, PartialEq)]
enum Handshake {
    Done {
        alpn: Option<String>,
        sni: Option<String>,
    },
    Failed(String),
}

/// TLS in front of a sim: terminates TLS on `127.0.0.1:0`, copies plaintext both ways.
struct TlsRelay {
    addr: SocketAddr,
    handshakes: mpsc::UnboundedReceiver<Handshake>,
    task: JoinHandle<()>,
}

impl TlsRelay {
    async fn start(pki: &TestPki, upstream: SocketAddr) -> TlsRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = pki.acceptor();
        let (tx, handshakes) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // Owned by this task, so aborting the relay also ends every relayed connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                connections.spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            let _ = tx.send(Handshake::Failed(e.to_string()));
                            return;
                        }
                    };
                    let (_, session) = tls.get_ref();
                    let _ = tx.send(Handshake::Done {
                        alpn: session
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                        sni: session.server_name().map(str::to_owned),
                    });
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    // Ends when either side closes; errors are just the other side going away.
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
                // Reap finished connections so the set does not grow for the test's lifetime.
                while connections.try_join_next().is_some() {}
            }
        });
        TlsRelay {
            addr,
            handshakes,
            task,
        }
    }

    /// `https://localhost:PORT/v1`: the name the leaf certificate carries.
    fn base_url(&self) -> String {
        format!("https://localhost:{}/v1", self.addr.port())
    }

    async fn next_handshake(&mut self) -> Handshake {
        tokio::time::timeout(WAIT, self.handshakes.recv())
            .await
            .expect("no TLS handshake reached the relay")
            .expect("relay stopped")
    }

    /// Handshakes recorded but not yet taken with `next_handshake`.
    fn more_handshakes(&mut self) -> Vec<Handshake> {
        let mut out = Vec::new();
        while let Ok(h) = self.handshakes.try_recv() {
            out.push(h);
        }
        out
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_provider(relay: &TlsRelay, ca_file: Option<&str>) -> Value {
    let mut p = json!({
        "api": "openai",
        "base_url": relay.base_url(),
        "allow_private_network": true,
        "api_key": { "env": "TLS_KEY" },
    });
    if let Some(file) = ca_file {
        p["ca_file"] = json!(file);
    }
    p
}

fn chat(model: &str, stream: bool) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Is this line encrypted?"}],
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// The concatenated `delta.content` of an SSE chat stream, and its usage chunk.
fn stream_text(body: &[u8]) -> (String, Option<Value>) {
    let events = sse_data(body);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let mut text = String::new();
    let mut usage = None;
    for data in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(data).unwrap();
        if let Some(s) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(s);
        }
        if chunk["usage"].is_object() {
            usage = Some(chunk["usage"].clone());
        }
    }
    (text, usage)
}

fn assert_unreachable(resp: &Answer, provider: &str) {
    assert_eq!(resp.status, 502, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.header("x-should-retry"), Some("false"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json();
    // Every attempt failed to connect; the trail names the cause.
    assert_eq!(v["error"]["code"], "providers_exhausted", "{v}");
    assert_eq!(v["error"]["type"], "upstream_error", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(provider), "{message}");
    assert!(message.contains("certificate"), "{message}");
    let attempts = v["error"]["metadata"]["attempts"].as_array().unwrap();
    // An untrusted certificate is not retried on the same endpoint: it cannot get better.
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "tls_failed", "{attempts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_upstream_with_its_own_ca_serves_over_h2_negotiated_by_alpn() {
    let behavior = Behavior::ok().chunks(6);
    let sim = Sim::start(
        SimConfig::named("secure")
            .api_key(UPSTREAM_KEY)
            .default_behavior(behavior.clone()),
    )
    .await
    .unwrap();
    let pki = TestPki::new();
    let mut relay = TlsRelay::start(&pki, sim.addr()).await;
    let policy = json!({
        "providers": { "secure": tls_provider(&relay, Some(CA_FILE)) },
        "models": { "chat-tls": { "endpoints": [ endpoint("secure", "secure-v1", 0.5, 1.5) ] } }
    });
    let proxy = Proxy::start_with_files(
        &policy,
        &[("TLS_KEY", UPSTREAM_KEY)],
        &[(CA_FILE, pki.ca_pem.as_bytes())],
    );
    let url = proxy.url("/v1/chat/completions");

    let resp = post_json(&url, &chat("chat-tls", false)).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let v = resp.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        expected_text("secure", &behavior)
    );
    assert_eq!(v["model"], "chat-tls");
    assert_eq!(v["provider"], "secure");
    assert_eq!(v["usage"]["completion_tokens"], 6);
    assert_eq!(resp.header("x-switchyard-provider"), Some("secure"));

    // The proxy verified the leaf against the provider's CA, sent SNI for the base_url's host
    // and asked for HTTP/2, which the relay (preferring h2) granted.
    assert_eq!(
        relay.next_handshake().await,
        Handshake::Done {
            alpn: Some("h2".into()),
            sni: Some("localhost".into()),
        }
    );

    let resp = post_json(&url, &chat("chat-tls", true)).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let (text, usage) = stream_text(&resp.body);
    assert_eq!(text, expected_text("secure", &behavior));
    let usage = usage.expect("usage chunk");
    assert_eq!(usage["completion_tokens"], 6);
    assert!(usage["cost"].as_f64().unwrap() > 0.0);

    // One pooled HTTP/2 connection carried both requests: no second handshake.
    assert_eq!(relay.more_handshakes(), []);

    let calls = sim.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    // The non-streaming request too is streamed from the upstream (and aggregated), so that
    // first-token and idle timeouts protect it.
    for call in &calls {
        assert_eq!(call.path, "/v1/chat/completions");
        assert_eq!(call.model.as_deref(), Some("secure-v1"));
        assert!(call.stream);
        assert_eq!(
            call.header("authorization"),
            Some(fingerprint(&format!("Bearer {UPSTREAM_KEY}")).as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_upstream_without_its_ca_is_unreachable_and_the_ca_stays_per_provider() {
    let behavior = Behavior::ok().chunks(4);
    let sim = Sim::start(
        SimConfig::named("secure")
            .api_key(UPSTREAM_KEY)
            .default_behavior(behavior.clone()),
    )
    .await
    .unwrap();
    let pki = TestPki::new();
    let mut relay = TlsRelay::start(&pki, sim.addr()).await;
    // Two providers in front of the same relay; only one of them trusts its CA.
    let policy = json!({
        "providers": {
            "untrusted": tls_provider(&relay, None),
            "trusted": tls_provider(&relay, Some(CA_FILE)),
        },
        "models": {
            "via-untrusted": { "endpoints": [ endpoint("untrusted", "secure-v1", 0.5, 1.5) ] },
            "via-trusted": { "endpoints": [ endpoint("trusted", "secure-v1", 0.5, 1.5) ] },
        }
    });
    let proxy = Proxy::start_with_files(
        &policy,
        &[("TLS_KEY", UPSTREAM_KEY)],
        &[(CA_FILE, pki.ca_pem.as_bytes())],
    );
    let url = proxy.url("/v1/chat/completions");

    let resp = post_json(&url, &chat("via-untrusted", false)).await;
    assert_unreachable(&resp, "untrusted");
    // The public web roots do not know the CA: the client aborted the handshake.
    let Handshake::Failed(reason) = relay.next_handshake().await else {
        panic!("the handshake with an untrusted certificate succeeded");
    };
    assert!(reason.contains("UnknownCA"), "{reason}");

    // A stream fails the same way, before anything is committed to the client.
    let resp = post_json(&url, &chat("via-untrusted", true)).await;
    assert_unreachable(&resp, "untrusted");
    assert!(matches!(relay.next_handshake().await, Handshake::Failed(_)));
    assert_eq!(sim.call_count(), 0, "plaintext reached the upstream");

    // The other provider's CA is not global: it trusts the same relay...
    let resp = post_json(&url, &chat("via-trusted", false)).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(
        resp.json()["choices"][0]["message"]["content"],
        expected_text("secure", &behavior)
    );
    assert!(matches!(
        relay.next_handshake().await,
        Handshake::Done { .. }
    ));
    assert_eq!(sim.call_count(), 1);

    // ...and its warm connection is never lent to the provider that does not trust it.
    let resp = post_json(&url, &chat("via-untrusted", false)).await;
    assert_unreachable(&resp, "untrusted");
    assert!(matches!(relay.next_handshake().await, Handshake::Failed(_)));
    assert_eq!(sim.call_count(), 1);
}

/// One request on an HTTP/2 connection: (status, version, headers, body).
async fn h2_post(
    mut sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    url: String,
    body: Value,
) -> (http::StatusCode, http::Version, http::HeaderMap, Bytes) {
    sender.ready().await.unwrap();
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.version, parts.headers, bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_client_multiplexes_streaming_and_plain_requests_on_one_connection() {
    const MODELS: usize = 4;
    let texts: Vec<String> = (0..MODELS)
        .map(|i| format!("reply {i} for stream {i} only "))
        .collect();
    let mut config = SimConfig::named("alpha");
    for (i, text) in texts.iter().enumerate() {
        // Streams last about a second, so they are still running while the others arrive;
        // the non-streaming answers are instant (chunk_delay applies to streams only).
        let b = Behavior::ok()
            .text(text.clone())
            .chunk_delay(Duration::from_millis(150));
        config = config.model(format!("up-{i}"), b);
    }
    let sim = Sim::start(config).await.unwrap();
    let models: serde_json::Map<String, Value> = (0..MODELS)
        .map(|i| {
            let ep = endpoint("alpha", &format!("up-{i}"), 1.0, 2.0);
            (format!("m{i}"), json!({ "endpoints": [ep] }))
        })
        .collect();
    let policy = json!({
        "providers": { "alpha": sim_provider(&sim, None) },
        "models": models,
    });
    let proxy = Proxy::start(&policy);
    let url = proxy.url("/v1/chat/completions");

    // Prior knowledge: the very first bytes are the HTTP/2 preface, no upgrade.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);

    // All streams first, and wait until every one has its response headers: then they are
    // all open on the connection at once.
    let mut streams = Vec::new();
    for i in 0..MODELS {
        let mut sender = sender.clone();
        sender.ready().await.unwrap();
        let req = http::Request::post(url.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec(&chat(&format!("m{i}"), true)).unwrap(),
            )))
            .unwrap();
        streams.push(tokio::spawn(sender.send_request(req)));
    }
    let mut stream_bodies = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        let resp = tokio::time::timeout(WAIT, s)
            .await
            .expect("stream headers")
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200, "stream {i}");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(
            resp.headers()["x-switchyard-model"],
            format!("m{i}").as_str()
        );
        stream_bodies.push(resp.into_body());
    }
    let in_flight = sim.calls();
    assert_eq!(in_flight.len(), MODELS);
    assert!(
        in_flight.iter().all(|c| c.stream && c.outcome.is_none()),
        "the streams were not concurrent: {in_flight:?}"
    );

    // Plain requests on the same connection while the streams run.
    let mut plain = JoinSet::new();
    for i in 0..MODELS {
        let fut = h2_post(sender.clone(), url.clone(), chat(&format!("m{i}"), false));
        plain.spawn(async move { (i, fut.await) });
    }
    let mut request_ids = Vec::new();
    while let Some(joined) = plain.join_next().await {
        let (i, (status, version, headers, body)) = joined.unwrap();
        assert_eq!(status, 200, "plain {i}: {}", String::from_utf8_lossy(&body));
        assert_eq!(version, http::Version::HTTP_2);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model"], format!("m{i}"));
        assert_eq!(v["choices"][0]["message"]["content"], texts[i].as_str());
        request_ids.push(
            headers["x-switchyard-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }

    for (i, body) in stream_bodies.into_iter().enumerate() {
        let bytes = tokio::time::timeout(WAIT, body.collect())
            .await
            .expect("stream body")
            .unwrap()
            .to_bytes();
        let (text, usage) = stream_text(&bytes);
        assert_eq!(text, texts[i], "stream {i}");
        assert!(usage.is_some(), "stream {i} has no usage chunk");
    }

    request_ids.sort();
    request_ids.dedup();
    assert_eq!(request_ids.len(), MODELS, "request ids are not distinct");
    let calls = sim.calls();
    assert_eq!(calls.len(), 2 * MODELS);
    for i in 0..MODELS {
        let model = format!("up-{i}");
        let n = calls
            .iter()
            .filter(|c| c.model.as_deref() == Some(model.as_str()))
            .count();
        assert_eq!(n, 2, "{model}");
    }
    // The connection is still healthy after all of that.
    assert!(!conn.is_finished());
    let (status, ..) = h2_post(sender, url, chat("m0", false)).await;
    assert_eq!(status, 200);
}

/// A host name the policy cannot see through is checked where it resolves: `127.1` is not a
/// literal address to the policy (so `check` accepts it) but the system resolver reads it as
/// 127.0.0.1. Without `allow_private_network` the connection is refused before anything is
/// sent — the sim behind it is never called, the error says why, and routing falls back to a
/// provider that may use a private address; with it, the same name is served.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_resolving_to_a_private_address_needs_allow_private_network() {
    let config = |name: &str| SimConfig {
        name: name.into(),
        default: Behavior::ok().chunks(2),
        ..SimConfig::default()
    };
    let hidden = Sim::start(config("hidden")).await.unwrap();
    let open = Sim::start(config("open")).await.unwrap();
    let policy = |allow: bool| {
        json!({
            "providers": {
                "hidden": {
                    "api": "openai",
                    "base_url": format!("http://127.1:{}/v1", hidden.addr().port()),
                    "allow_private_network": allow,
                },
                "open": sim_provider(&open, None),
            },
            "models": { "m": { "endpoints": [
                endpoint("hidden", "m", 1.0, 1.0),
                endpoint("open", "m", 2.0, 2.0),
            ] } },
        })
    };
    let ask = |only: Option<&str>| {
        let mut body = chat("m", false);
        body["provider"] = json!({"order": ["hidden", "open"]});
        if let Some(p) = only {
            body["provider"]["only"] = json!([p]);
        }
        body
    };

    let proxy = Proxy::start(&policy(false));
    let served = post_json(&proxy.url("/v1/chat/completions"), &ask(None)).await;
    assert_eq!(
        served.status,
        200,
        "{}",
        String::from_utf8_lossy(&served.body)
    );
    assert_eq!(served.header("x-switchyard-provider"), Some("open"));
    let refused = post_json(&proxy.url("/v1/chat/completions"), &ask(Some("hidden"))).await;
    assert_eq!(
        refused.status,
        502,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("127.1 resolves only to"), "{message}");
    assert!(message.contains("allow_private_network"), "{message}");
    assert_eq!(
        hidden.call_count(),
        0,
        "nothing may reach the refused address"
    );
    assert_eq!(open.call_count(), 1);
    drop(proxy);

    let proxy = Proxy::start(&policy(true));
    let served = post_json(&proxy.url("/v1/chat/completions"), &ask(None)).await;
    assert_eq!(
        served.status,
        200,
        "{}",
        String::from_utf8_lossy(&served.body)
    );
    assert_eq!(served.header("x-switchyard-provider"), Some("hidden"));
    assert_eq!(hidden.call_count(), 1);
}
