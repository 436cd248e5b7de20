//! The floor: the least a reverse proxy can do on this stack. It accepts HTTP/1.1, forwards
//! each request's bytes unchanged (bar hop-by-hop headers) to one fixed upstream through a
//! pooled hyper-util client, and streams the response back, with TCP_NODELAY on both sides.
//! No parsing, no routing, no accounting: what Switchyard adds on top of this is its cost.
//!
//! The harness runs it as a child process (`load floor`), like the real proxy, so its memory
//! and CPU are measured the same way.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The floor's upstream client.
pub type FloorClient = Client<HttpConnector, Incoming>;

/// The floor's response body: the upstream's, or a short 502.
pub type FloorBody = Either<Incoming, Full<Bytes>>;

/// A pooled client configured as Switchyard's upstream client is for plain HTTP: TCP_NODELAY,
/// keep-alive probes, up to 256 idle connections per upstream.
pub fn client() -> FloorClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(http)
}

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1). The
/// framing headers stay: hyper frames the forwarded body by them.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// `uri` re-aimed at `upstream`, path and query kept.
pub fn upstream_uri(upstream: SocketAddr, uri: &Uri) -> Result<Uri, http::Error> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder()
        .scheme("http")
        .authority(upstream.to_string())
        .path_and_query(path)
        .build()
}

/// Forwards one request.
pub async fn forward(
    client: FloorClient,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<FloorBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    parts.uri = match upstream_uri(upstream, &parts.uri) {
        Ok(uri) => uri,
        Err(_) => return Ok(bad_gateway()),
    };
    strip_hop_by_hop(&mut parts.headers);
    // The client writes the upstream's own Host.
    parts.headers.remove(header::HOST);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<FloorBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        b"floor: upstream failed\n",
    ))));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

/// Serves `listener`, forwarding everything to `upstream`, until the task is dropped.
pub async fn serve(listener: TcpListener, upstream: SocketAddr, client: FloorClient) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // Out of descriptors: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| forward(client.clone(), upstream, req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use http::header::HeaderName;
    use http_body_util::BodyExt;
    use switchyard_sim::{Behavior, Sim, SimConfig};

    use super::*;

    /// A header nobody sends, to see that unknown headers pass untouched.
    const PROBE_HEADER: HeaderName = HeaderName::from_static("x-floor-probe");

    #[test]
    fn uri_is_reaimed_with_path_and_query() {
        let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let uri: Uri = "/v1/chat/completions?x=1".parse().unwrap();
        assert_eq!(
            upstream_uri(up, &uri).unwrap().to_string(),
            "http://127.0.0.1:9/v1/chat/completions?x=1"
        );
        let uri: Uri = "http://proxy:4000".parse().unwrap();
        assert_eq!(
            upstream_uri(up, &uri).unwrap().to_string(),
            "http://127.0.0.1:9/"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert("content-length", "3".parse().unwrap());
        h.insert(PROBE_HEADER, "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.get("connection").is_none() && h.get("keep-alive").is_none());
        assert!(h.get("content-length").is_some() && h.get(PROBE_HEADER).is_some());
    }

    async fn floor_in_front_of(upstream: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, upstream, client()));
        addr
    }

    #[tokio::test]
    async fn forwards_requests_and_streams_to_the_sim() {
        let sim = Sim::start(
            SimConfig::named("up")
                .api_key("k")
                .default_behavior(Behavior::ok().chunks(3)),
        )
        .await
        .unwrap();
        let floor = floor_in_front_of(sim.addr()).await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        for stream in [false, true] {
            let body = format!(
                r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
            );
            let req = Request::post(format!("http://{floor}/v1/chat/completions"))
                .header("authorization", "Bearer k")
                .header("connection", "keep-alive")
                .header(PROBE_HEADER, "yes")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&bytes);
            if stream {
                assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
            } else {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(v["object"], "chat.completion");
            }
        }
        let calls = sim.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].header("x-floor-probe"), Some("yes"));
        assert_eq!(calls[0].header("connection"), None);
        assert_eq!(
            calls[0].header("host"),
            Some(sim.addr().to_string().as_str())
        );
        assert!(calls[1].stream);
    }

    #[tokio::test]
    async fn unreachable_upstream_is_a_502() {
        // A port nothing listens on: bind, note it, close.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let floor = floor_in_front_of(dead).await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let req = Request::get(format!("http://{floor}/v1/models"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    }
}
