//! The load generator: open loop at a fixed rate (latency measured from each request's
//! scheduled send time, so a slow server cannot hide its queueing by slowing the sender),
//! closed loop over N connections for maximum throughput, streams with per-chunk timing,
//! and a set of long-lived idle streams held open for memory measurements.
//!
//! Clients are hyper-util's pooled client with keep-alive and TCP_NODELAY. Every loop is
//! bounded in time and in requests in flight.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;

use super::sse::{self, Splitter};
use super::stats::Samples;
use super::ticker;

/// The generator's client.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled client with TCP_NODELAY. Idle connections are dropped after 5 s, before the
/// proxy's own 10 s header-read timeout can close one just as it is reused.
pub fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build(http)
}

/// Where requests go and the headers they carry.
#[derive(Clone, Debug)]
pub struct Target {
    uri: Uri,
    headers: HeaderMap,
}

impl Target {
    /// `POST http://addr{path}` with a JSON body, a bearer key and a budget tag.
    pub fn new(addr: SocketAddr, path: &str, key: &str, tag: &str) -> Result<Self, String> {
        let uri: Uri = format!("http://{addr}{path}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let bearer = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|e| e.to_string())?;
        headers.insert(header::AUTHORIZATION, bearer);
        headers.insert(
            HeaderName::from_static("x-switchyard-tag"),
            HeaderValue::from_str(tag).map_err(|e| e.to_string())?,
        );
        Ok(Self { uri, headers })
    }

    fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// How hard and how long a loop may push.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// The measured window.
    pub duration: Duration,
    /// Requests in flight at most; an open loop that reaches it waits, and the wait counts
    /// in the latency of every late request.
    pub max_in_flight: usize,
    /// Per request, after which it counts as an error.
    pub timeout: Duration,
}

/// What one load point measured.
#[derive(Debug, Default)]
pub struct Point {
    /// Successful requests' latencies.
    pub latency: Samples,
    pub ok: u64,
    pub errors: u64,
    /// Scheduled requests never sent because the loop fell too far behind.
    pub not_sent: u64,
    /// From the first scheduled send to the last completion.
    pub elapsed: Duration,
    /// The first failure, as an example.
    pub first_error: Option<String>,
}

impl Point {
    /// Completed requests per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    fn record(&mut self, result: Result<Duration, String>) {
        match result {
            Ok(latency) => {
                self.ok += 1;
                self.latency.push(latency);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, mut other: Point) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latency.append(&mut other.latency);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One request: a 200 whose whole body arrived within the timeout.
async fn exchange(client: &HttpClient, target: &Target, body: Bytes) -> Result<(), String> {
    let resp = client
        .request(target.request(body))
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        return Err(format!("status {status}: {head}"));
    }
    if bytes.is_empty() {
        return Err("empty body".into());
    }
    Ok(())
}

async fn timed<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
}

/// The `i`-th send time of a loop starting at `start` at `rate` per second.
pub fn schedule(start: Instant, rate: f64, i: u64) -> Instant {
    start + Duration::from_secs_f64(i as f64 / rate)
}

/// Runs `job(scheduled_time)` at `rate` per second for `bounds.duration`. The dispatcher is
/// a blocking thread sleeping to each send time (tokio's 1 ms timer wheel would batch sends
/// and add up to a millisecond to every latency); jobs run on the runtime. Returns how many
/// scheduled jobs were never started because the loop fell behind by more than `slack`.
pub async fn dispatch<F, Fut>(rate: f64, bounds: Bounds, slack: Duration, job: F) -> u64
where
    F: Fn(Instant) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let total = (rate * bounds.duration.as_secs_f64()).round() as u64;
    let start = Instant::now() + Duration::from_millis(5);
    let give_up = start + bounds.duration + slack;
    let counter = in_flight.clone();
    let max = bounds.max_in_flight.max(1);
    let dispatcher = tokio::task::spawn_blocking(move || {
        for i in 0..total {
            let at = schedule(start, rate, i);
            loop {
                let now = Instant::now();
                if now > give_up {
                    return total - i;
                }
                if at > now {
                    std::thread::sleep(at - now);
                } else if counter.load(Ordering::Acquire) >= max {
                    std::thread::sleep(Duration::from_micros(100));
                } else {
                    break;
                }
            }
            counter.fetch_add(1, Ordering::AcqRel);
            let guard = InFlight(counter.clone());
            let fut = job(at);
            handle.spawn(async move {
                let _guard = guard;
                fut.await;
            });
        }
        0
    });
    let not_sent = dispatcher.await.unwrap_or(total);
    // Every job carries its own timeout; this only bounds a job that ignores it.
    let drain_until = Instant::now() + bounds.timeout + Duration::from_secs(1);
    while in_flight.load(Ordering::Acquire) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    not_sent
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Open loop: `rate` requests per second, bodies taken in turn.
pub async fn open_loop(
    client: &HttpClient,
    target: &Target,
    bodies: &[Bytes],
    rate: f64,
    bounds: Bounds,
) -> Point {
    let tally = Arc::new(Mutex::new(Point::default()));
    let next = Arc::new(AtomicU64::new(0));
    let bodies: Arc<[Bytes]> = bodies.into();
    let started = Instant::now();
    let job = {
        let (client, target, tally) = (client.clone(), target.clone(), tally.clone());
        move |at: Instant| {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            let body = bodies[i % bodies.len().max(1)].clone();
            let (client, target, tally) = (client.clone(), target.clone(), tally.clone());
            async move {
                let result = timed(bounds.timeout, exchange(&client, &target, body)).await;
                let result = result.map(|()| at.elapsed());
                lock(&tally).record(result);
            }
        }
    };
    let not_sent = dispatch(rate, bounds, Duration::from_secs(2), job).await;
    let mut point = std::mem::take(&mut *lock(&tally));
    point.not_sent = not_sent;
    point.elapsed = started.elapsed();
    point
}

/// Closed loop: `conns` workers each send the next request as soon as the previous one
/// completed, for `bounds.duration`.
pub async fn closed_loop(
    client: &HttpClient,
    target: &Target,
    bodies: &[Bytes],
    conns: usize,
    bounds: Bounds,
) -> Point {
    let start = Instant::now();
    let end = start + bounds.duration;
    let mut workers = JoinSet::new();
    for w in 0..conns {
        let (client, target) = (client.clone(), target.clone());
        let bodies: Vec<Bytes> = bodies.to_vec();
        workers.spawn(async move {
            let mut point = Point::default();
            let mut i = w;
            while Instant::now() < end {
                let body = bodies[i % bodies.len().max(1)].clone();
                i += 1;
                let t0 = Instant::now();
                let result = timed(bounds.timeout, exchange(&client, &target, body)).await;
                point.record(result.map(|()| t0.elapsed()));
            }
            point
        });
    }
    let mut total = Point::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(point) = done {
            total.merge(point);
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Exactly `total` requests over `conns` workers, each sent as soon as the worker's previous
/// one completed (a profile needs a known request count, not a duration).
pub async fn count_loop(
    client: &HttpClient,
    target: &Target,
    bodies: &[Bytes],
    conns: usize,
    total: u64,
    timeout: Duration,
) -> Point {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..conns.max(1) {
        let (client, target, next) = (client.clone(), target.clone(), next.clone());
        let bodies: Vec<Bytes> = bodies.to_vec();
        workers.spawn(async move {
            let mut point = Point::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return point;
                }
                let body = bodies[i as usize % bodies.len().max(1)].clone();
                let t0 = Instant::now();
                let result = timed(timeout, exchange(&client, &target, body)).await;
                point.record(result.map(|()| t0.elapsed()));
            }
        });
    }
    let mut sum = Point::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(point) = done {
            sum.merge(point);
        }
    }
    sum.elapsed = start.elapsed();
    sum
}

/// What the streams of one streaming point measured.
#[derive(Debug, Default)]
pub struct StreamPoint {
    /// Scheduled send to the first chunk with text.
    pub ttft: Samples,
    /// Per chunk: arrival at the client minus the ticker's emission stamp.
    pub chunk_latency: Samples,
    /// Between consecutive text chunks, at the client.
    pub client_gap: Samples,
    /// Between consecutive text chunks, at the source (difference of emission stamps).
    pub source_gap: Samples,
    pub ok: u64,
    pub errors: u64,
    pub not_sent: u64,
    pub chunks: u64,
    pub first_error: Option<String>,
}

/// The timings of one stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StreamTimes {
    /// Arrival of the first text chunk, in [`ticker::stamp`] units.
    pub first_at: Option<u64>,
    pub chunk_latency: Vec<u64>,
    pub client_gap: Vec<u64>,
    pub source_gap: Vec<u64>,
    pub chunks: u64,
    /// Whether `data: [DONE]` arrived.
    pub done: bool,
    last: Option<(u64, Option<u64>)>,
}

impl StreamTimes {
    /// Accounts one event that arrived at `now` (a [`ticker::stamp`]).
    pub fn event(&mut self, event: &[u8], now: u64) {
        if sse::data(event).is_some_and(|d| d.trim() == "[DONE]") {
            self.done = true;
            return;
        }
        let Some(text) = sse::content(event) else {
            return;
        };
        self.chunks += 1;
        self.first_at.get_or_insert(now);
        let emitted = sse::stamp_of(&text);
        if let Some(emitted) = emitted {
            self.chunk_latency.push(now.saturating_sub(emitted));
        }
        if let Some((prev_now, prev_emitted)) = self.last {
            self.client_gap.push(now.saturating_sub(prev_now));
            if let (Some(e), Some(p)) = (emitted, prev_emitted) {
                self.source_gap.push(e.saturating_sub(p));
            }
        }
        self.last = Some((now, emitted));
    }
}

async fn stream_exchange(
    client: &HttpClient,
    target: &Target,
    body: Bytes,
) -> Result<StreamTimes, String> {
    let resp = client
        .request(target.request(body))
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    let mut body = resp.into_body();
    let mut splitter = Splitter::default();
    let mut times = StreamTimes::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        let now = ticker::stamp();
        if let Some(data) = frame.data_ref() {
            splitter.push(data, |event| times.event(event, now));
        }
    }
    if !times.done {
        return Err("stream ended without [DONE]".into());
    }
    Ok(times)
}

/// Streams opened at `rate` per second; each is read to its end.
pub async fn streams(
    client: &HttpClient,
    target: &Target,
    body: Bytes,
    rate: f64,
    bounds: Bounds,
) -> StreamPoint {
    let tally = Arc::new(Mutex::new(StreamPoint::default()));
    let job = {
        let (client, target, tally) = (client.clone(), target.clone(), tally.clone());
        move |at: Instant| {
            let (client, target, tally, body) =
                (client.clone(), target.clone(), tally.clone(), body.clone());
            async move {
                // The scheduled time in stamp units, to measure TTFT against it.
                let at_stamp = ticker::stamp()
                    .saturating_sub(u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX));
                let result = timed(bounds.timeout, stream_exchange(&client, &target, body)).await;
                let mut t = lock(&tally);
                match result {
                    Ok(times) => {
                        t.ok += 1;
                        t.chunks += times.chunks;
                        if let Some(first) = times.first_at {
                            t.ttft.push_nanos(first.saturating_sub(at_stamp));
                        }
                        for n in times.chunk_latency {
                            t.chunk_latency.push_nanos(n);
                        }
                        for n in times.client_gap {
                            t.client_gap.push_nanos(n);
                        }
                        for n in times.source_gap {
                            t.source_gap.push_nanos(n);
                        }
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(e);
                    }
                }
            }
        }
    };
    let not_sent = dispatch(rate, bounds, Duration::from_secs(2), job).await;
    let mut point = std::mem::take(&mut *lock(&tally));
    point.not_sent = not_sent;
    point
}

/// Long-lived streams held open; dropping this closes them all.
#[derive(Debug)]
pub struct Held {
    _tasks: JoinSet<()>,
    /// Streams that delivered their first chunk and are still open.
    pub opened: usize,
    /// Streams that failed before their first chunk.
    pub failed: usize,
    /// The first failure, as an example.
    pub first_error: Option<String>,
}

/// Opens `count` streams at `open_rate` per second and returns once each has delivered its
/// first chunk or failed (or `settle` has passed). The streams keep reading in the
/// background until the returned [`Held`] is dropped.
pub async fn hold_streams(
    client: &HttpClient,
    target: &Target,
    body: Bytes,
    count: usize,
    open_rate: f64,
    settle: Duration,
) -> Held {
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for i in 0..count {
        let at = schedule(start, open_rate, i as u64);
        tokio::time::sleep_until(at.into()).await;
        let (client, target, body) = (client.clone(), target.clone(), body.clone());
        let (opened, failed, first_error) = (opened.clone(), failed.clone(), first_error.clone());
        tasks.spawn(async move {
            let result = hold_one(&client, &target, body, &opened).await;
            if let Err(e) = result {
                failed.fetch_add(1, Ordering::AcqRel);
                lock(&first_error).get_or_insert(e);
            }
        });
    }
    let deadline = Instant::now() + settle;
    while opened.load(Ordering::Acquire) + failed.load(Ordering::Acquire) < count
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_error = lock(&first_error).clone();
    Held {
        _tasks: tasks,
        opened: opened.load(Ordering::Acquire),
        failed: failed.load(Ordering::Acquire),
        first_error,
    }
}

/// One held stream: counts itself open at its first text chunk, then keeps reading. An
/// error after that point is not a failure to open (the stream was measured open).
async fn hold_one(
    client: &HttpClient,
    target: &Target,
    body: Bytes,
    opened: &AtomicUsize,
) -> Result<(), String> {
    let resp = client
        .request(target.request(body))
        .await
        .map_err(|e| format!("request: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut splitter = Splitter::default();
    let mut open = false;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            break;
        };
        if let Some(data) = frame.data_ref() {
            splitter.push(data, |e| open |= sse::content(e).is_some());
        }
        if open {
            opened.fetch_add(1, Ordering::AcqRel);
            // Drain quietly until the stream ends or this task is aborted.
            while let Some(Ok(_)) = body.frame().await {}
            opened.fetch_sub(1, Ordering::AcqRel);
            return Ok(());
        }
    }
    Err("stream ended before its first chunk".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use switchyard_sim::{Behavior, Sim, SimConfig};

    use super::*;
    use crate::load::ticker::{Shape, Ticker};

    const KEY: &str = "sk-test";

    fn body(stream: bool) -> Bytes {
        Bytes::from(format!(
            r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
    }

    fn bounds(ms: u64) -> Bounds {
        Bounds {
            duration: Duration::from_millis(ms),
            max_in_flight: 64,
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn schedule_is_exact() {
        let t0 = Instant::now();
        assert_eq!(schedule(t0, 1000.0, 0), t0);
        assert_eq!(schedule(t0, 1000.0, 1500), t0 + Duration::from_millis(1500));
        assert_eq!(schedule(t0, 4.0, 3), t0 + Duration::from_millis(750));
    }

    #[test]
    fn stream_times_from_events() {
        let mut t = StreamTimes::default();
        let chunk = |s: u64| format!(r#"data: {{"choices":[{{"delta":{{"content":"@{s} "}}}}]}}"#);
        t.event(
            br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            50,
        );
        t.event(chunk(100).as_bytes(), 130);
        t.event(chunk(200).as_bytes(), 260);
        t.event(
            br#"data: {"choices":[{"delta":{"content":"plain "}}]}"#,
            300,
        );
        t.event(b"data: [DONE]", 310);
        assert_eq!(t.first_at, Some(130));
        assert_eq!(t.chunks, 3);
        assert_eq!(t.chunk_latency, [30, 60]);
        assert_eq!(t.client_gap, [130, 40]);
        // The unstamped chunk has no source gap.
        assert_eq!(t.source_gap, [100]);
        assert!(t.done);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_sends_at_the_rate_and_counts_errors() {
        let sim = Sim::start(SimConfig::named("s").api_key(KEY))
            .await
            .unwrap();
        let client = client();
        let target = Target::new(sim.addr(), "/v1/chat/completions", KEY, "t").unwrap();
        let point = open_loop(&client, &target, &[body(false)], 200.0, bounds(500)).await;
        assert_eq!(point.ok, 100, "{:?}", point.first_error);
        assert_eq!((point.errors, point.not_sent), (0, 0));
        assert_eq!(sim.call_count(), 100);
        // 100 requests at 200/s take about half a second, not less.
        assert!(
            point.elapsed >= Duration::from_millis(490),
            "{:?}",
            point.elapsed
        );
        let mut latency = point.latency;
        assert!(latency.quantile(0.5).unwrap() < Duration::from_millis(100));

        let wrong = Target::new(sim.addr(), "/v1/chat/completions", "bad-key", "t").unwrap();
        let point = open_loop(&client, &wrong, &[body(false)], 100.0, bounds(100)).await;
        assert_eq!((point.ok, point.errors), (0, 10));
        assert!(point.first_error.unwrap().contains("401"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_latency_includes_waiting_for_a_slot() {
        // One slot and a 20 ms server: at 200/s every request but the first waits, and
        // that wait must show in the latency (no coordinated omission).
        let sim = Sim::start(
            SimConfig::named("s")
                .default_behavior(Behavior::ok().headers_delay(Duration::from_millis(20))),
        )
        .await
        .unwrap();
        let client = client();
        let target = Target::new(sim.addr(), "/v1/chat/completions", KEY, "t").unwrap();
        let b = Bounds {
            max_in_flight: 1,
            ..bounds(200)
        };
        let mut point = open_loop(&client, &target, &[body(false)], 200.0, b).await;
        assert_eq!(point.ok, 40, "{:?}", point.first_error);
        // The last request was scheduled at ~195 ms but could only start at ~780 ms.
        assert!(point.latency.quantile(1.0).unwrap() > Duration::from_millis(400));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_keeps_n_requests_busy() {
        let sim = Sim::start(
            SimConfig::named("s")
                .default_behavior(Behavior::ok().headers_delay(Duration::from_millis(10))),
        )
        .await
        .unwrap();
        let client = client();
        let target = Target::new(sim.addr(), "/v1/chat/completions", KEY, "t").unwrap();
        let point = closed_loop(&client, &target, &[body(false)], 4, bounds(300)).await;
        // 4 workers x ~300 ms / ~10 ms each.
        assert!((30..=130).contains(&point.ok), "{}", point.ok);
        assert_eq!(point.errors, 0);
        assert!(point.throughput() > 150.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn count_loop_sends_exactly_n() {
        let sim = Sim::start(SimConfig::named("s")).await.unwrap();
        let client = client();
        let target = Target::new(sim.addr(), "/v1/chat/completions", KEY, "t").unwrap();
        let point = count_loop(
            &client,
            &target,
            &[body(false)],
            3,
            25,
            Duration::from_secs(2),
        )
        .await;
        assert_eq!((point.ok, point.errors), (25, 0));
        assert_eq!(sim.call_count(), 25);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_measure_ttft_and_per_chunk_latency() {
        let ticker = Ticker::start(
            1,
            Shape {
                chunks: 5,
                first_token: Duration::from_millis(20),
                gap: Duration::from_millis(5),
            },
        )
        .unwrap();
        let client = client();
        let target = Target::new(ticker.addrs()[0], "/v1/chat/completions", KEY, "t").unwrap();
        let mut p = streams(&client, &target, body(true), 50.0, bounds(200)).await;
        assert_eq!(p.ok, 10, "{:?}", p.first_error);
        assert_eq!(p.chunks, 50);
        assert_eq!(p.chunk_latency.len(), 50);
        assert_eq!(p.client_gap.len(), 40);
        let ttft = p.ttft.quantile(0.5).unwrap();
        assert!(
            ttft >= Duration::from_millis(20) && ttft < Duration::from_millis(200),
            "{ttft:?}"
        );
        assert!(p.chunk_latency.quantile(0.5).unwrap() < Duration::from_millis(20));
        let gap = p.source_gap.quantile(0.5).unwrap();
        assert!(
            gap >= Duration::from_millis(4) && gap < Duration::from_millis(15),
            "{gap:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_streams_stay_open_until_dropped() {
        let sim = Sim::start(SimConfig::named("s").default_behavior(Behavior::ok().stall_after(1)))
            .await
            .unwrap();
        let client = client();
        let target = Target::new(sim.addr(), "/v1/chat/completions", KEY, "t").unwrap();
        let held = hold_streams(
            &client,
            &target,
            body(true),
            20,
            500.0,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            (held.opened, held.failed),
            (20, 0),
            "{:?}",
            held.first_error
        );
        assert_eq!(sim.open_connections(), 20);
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        while sim.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sim.open_connections(), 0);
        let bad = Target::new(sim.addr(), "/nope", KEY, "t").unwrap();
        let held = hold_streams(&client, &bad, body(true), 3, 500.0, Duration::from_secs(5)).await;
        assert_eq!((held.opened, held.failed), (0, 3));
    }
}
