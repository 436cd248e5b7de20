//! The recent requests behind `GET /api/v1/generation?id=ID`: who was tried, who served,
//! what it used and cost, in the shape of OpenRouter's generation endpoint.
//!
//! Bounded twice: by entries (oldest inserted go first) and by an estimate of the bytes the
//! entries hold; every stored string and list is capped, and ids, providers, models and
//! endpoints of attempts share the policy's `Arc<str>`s.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::mem::size_of;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchyard_core::{AttemptObserver, AttemptReport, Class, SkipReport, Usage};

use crate::labels::truncate;

/// Entries kept by [`GenerationStore::default`].
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Estimated bytes kept by [`GenerationStore::default`].
pub const DEFAULT_MAX_BYTES: usize = 32 << 20;
/// Longest request id, route, model or provider name kept, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest exclusion reason kept, in bytes.
pub const MAX_REASON_BYTES: usize = 200;
/// Attempts kept per request (later ones are only counted).
pub const MAX_ATTEMPTS: usize = 16;
/// Exclusions kept per request.
pub const MAX_EXCLUDED: usize = 32;
/// Requested models kept per request.
pub const MAX_MODELS: usize = 16;

/// How a request ended, for [`GenerationStore::finish`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GenerationDone<'a> {
    /// HTTP status returned to the client.
    pub status: u16,
    /// Provider id that served.
    pub provider: Option<&'a str>,
    /// Policy model id that served.
    pub model: Option<&'a str>,
    /// The upstream's own model name.
    pub upstream_model: Option<&'a str>,
    /// Usage of the served answer.
    pub usage: Option<Usage>,
    /// USD charged to the caller, when it differs from `usage.cost`.
    pub cost: Option<f64>,
    /// From arrival to the end of the response.
    pub duration: Duration,
    /// From arrival to the first output sent to the client.
    pub ttft: Option<Duration>,
}

struct AttemptEntry {
    attempt: u32,
    provider: Arc<str>,
    model: Arc<str>,
    endpoint: Arc<str>,
    class: Class,
    status: Option<u16>,
    latency: Duration,
    ttft: Option<Duration>,
    usage: Option<Usage>,
}

struct Finish {
    status: u16,
    provider: Option<Box<str>>,
    model: Option<Box<str>>,
    upstream_model: Option<Box<str>>,
    usage: Option<Usage>,
    cost: Option<f64>,
    duration: Duration,
    ttft: Option<Duration>,
}

struct Record {
    created: SystemTime,
    route: Option<Box<str>>,
    models: Vec<Box<str>>,
    excluded: Vec<(Box<str>, Box<str>)>,
    excluded_dropped: usize,
    attempts: Vec<AttemptEntry>,
    attempts_dropped: usize,
    /// Candidates skipped without a call while the request ran (endpoint id, reason code).
    skipped: Vec<(Arc<str>, &'static str)>,
    finish: Option<Finish>,
}

impl Record {
    fn new() -> Self {
        Self {
            created: SystemTime::now(),
            route: None,
            models: Vec::new(),
            excluded: Vec::new(),
            excluded_dropped: 0,
            attempts: Vec::new(),
            attempts_dropped: 0,
            skipped: Vec::new(),
            finish: None,
        }
    }

    /// Roughly the heap and inline bytes this record holds (the attempts' shared strings
    /// belong to the policy and are not counted).
    fn weight(&self, id: &str) -> usize {
        let opt = |s: &Option<Box<str>>| s.as_ref().map_or(0, |s| s.len());
        size_of::<Self>()
            + id.len()
            + size_of::<Arc<str>>() * 2
            + opt(&self.route)
            + self
                .models
                .iter()
                .map(|m| m.len() + size_of::<Box<str>>())
                .sum::<usize>()
            + self
                .excluded
                .iter()
                .map(|(e, r)| e.len() + r.len() + 2 * size_of::<Box<str>>())
                .sum::<usize>()
            + self.attempts.capacity() * size_of::<AttemptEntry>()
            + self.skipped.capacity() * size_of::<(Arc<str>, &'static str)>()
            + self.finish.as_ref().map_or(0, |f| {
                size_of::<Finish>() + opt(&f.provider) + opt(&f.model) + opt(&f.upstream_model)
            })
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<Arc<str>, Record>,
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

/// Recent requests by id, fed by the request path ([`record_request`], [`finish`]) and by
/// the fallback executor's attempt reports (it is an [`AttemptObserver`]).
///
/// [`record_request`]: GenerationStore::record_request
/// [`finish`]: GenerationStore::finish
pub struct GenerationStore {
    capacity: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl fmt::Debug for GenerationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerationStore")
            .field("capacity", &self.capacity)
            .field("max_bytes", &self.max_bytes)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for GenerationStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_MAX_BYTES)
    }
}

fn boxed(s: &str, max: usize) -> Box<str> {
    Box::from(truncate(s, max))
}

impl GenerationStore {
    /// A store of at most `capacity` requests and about `max_bytes` bytes.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Requests held now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to the request's record, creating it if needed, and keeps the bounds.
    fn with_record(&self, id: &str, f: impl FnOnce(&mut Record)) {
        let id = truncate(id, MAX_NAME_BYTES);
        if id.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let before = match inner.map.get(id) {
            Some(r) => r.weight(id),
            None => {
                let key: Arc<str> = Arc::from(id);
                inner.order.push_back(key.clone());
                inner.map.insert(key, Record::new());
                0
            }
        };
        if let Some(r) = inner.map.get_mut(id) {
            f(r);
            inner.bytes = inner.bytes.saturating_sub(before) + r.weight(id);
        }
        while inner.map.len() > self.capacity || inner.bytes > self.max_bytes {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(r) = inner.map.remove(&old) {
                inner.bytes = inner.bytes.saturating_sub(r.weight(&old));
            }
        }
    }

    /// What the request asked for and which endpoints the plan left out (endpoint id,
    /// reason). Takes plain strings so this crate stays independent of the policy types.
    pub fn record_request(
        &self,
        request_id: &str,
        route: Option<&str>,
        models: &[&str],
        exclusions: &[(&str, &str)],
    ) {
        self.with_record(request_id, |r| {
            r.route = route.map(|s| boxed(s, MAX_NAME_BYTES));
            r.models = models
                .iter()
                .take(MAX_MODELS)
                .map(|m| boxed(m, MAX_NAME_BYTES))
                .collect();
            r.excluded = exclusions
                .iter()
                .take(MAX_EXCLUDED)
                .map(|(e, why)| (boxed(e, MAX_NAME_BYTES), boxed(why, MAX_REASON_BYTES)))
                .collect();
            r.excluded_dropped = exclusions.len().saturating_sub(MAX_EXCLUDED);
        });
    }

    /// How the request ended. A later call replaces an earlier one (a stream's usage is
    /// known only at its end).
    pub fn finish(&self, request_id: &str, done: &GenerationDone<'_>) {
        self.with_record(request_id, |r| {
            r.finish = Some(Finish {
                status: done.status,
                provider: done.provider.map(|s| boxed(s, MAX_NAME_BYTES)),
                model: done.model.map(|s| boxed(s, MAX_NAME_BYTES)),
                upstream_model: done.upstream_model.map(|s| boxed(s, MAX_NAME_BYTES)),
                usage: done.usage,
                cost: done.cost,
                duration: done.duration,
                ttft: done.ttft,
            });
        });
    }

    /// The request as `{"data": {...}}`, OpenRouter's generation shape plus Switchyard's
    /// attempt trail; `None` when it is unknown or was evicted.
    pub fn get(&self, id: &str) -> Option<Value> {
        let inner = self.lock();
        let r = inner.map.get(id)?;
        Some(json!({ "data": render(id, r) }))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn finite(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn render(id: &str, r: &Record) -> Value {
    let since_epoch = r.created.duration_since(UNIX_EPOCH).unwrap_or_default();
    let created_at = i64::try_from(since_epoch.as_millis())
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_string());
    let attempts: Vec<Value> = r
        .attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "provider": &*a.provider,
                "model": &*a.model,
                "endpoint": &*a.endpoint,
                "class": a.class.as_str(),
                "status": a.status,
                "latency_ms": millis(a.latency),
                "ttft_ms": a.ttft.map(millis),
                "tokens": a.usage.map(|u| json!({
                    "prompt": u.prompt_tokens,
                    "completion": u.completion_tokens,
                })),
                "cost": a.usage.map(|u| finite(u.cost)),
                "estimated": a.usage.is_some_and(|u| u.estimated),
            })
        })
        .collect();
    let excluded: Vec<Value> = r
        .excluded
        .iter()
        .map(|(e, why)| json!({ "endpoint": &**e, "reason": &**why }))
        .collect();
    let f = r.finish.as_ref();
    let usage = f.and_then(|f| f.usage);
    let cost = f.and_then(|f| f.cost.or(f.usage.map(|u| u.cost)));
    json!({
        "id": id,
        "created_at": created_at,
        "created": since_epoch.as_secs(),
        "state": if f.is_some() { "completed" } else { "in_progress" },
        "route": r.route.as_deref(),
        "models": r.models.iter().map(|m| &**m).collect::<Vec<_>>(),
        "model": f.and_then(|f| f.model.as_deref()),
        "provider_name": f.and_then(|f| f.provider.as_deref()),
        "upstream_model": f.and_then(|f| f.upstream_model.as_deref()),
        "status": f.map(|f| f.status),
        "latency": f.map(|f| millis(f.duration)),
        "ttft_ms": f.and_then(|f| f.ttft.map(millis)),
        "tokens_prompt": usage.map(|u| u.prompt_tokens),
        "tokens_completion": usage.map(|u| u.completion_tokens),
        "total_cost": cost.map(finite),
        "usage": cost.map(finite),
        "estimated": usage.is_some_and(|u| u.estimated),
        "num_attempts": r.attempts.len() + r.attempts_dropped,
        "attempts": attempts,
        "excluded": excluded,
        "excluded_dropped": r.excluded_dropped,
        "skipped": r
            .skipped
            .iter()
            .map(|(e, why)| json!({ "endpoint": &**e, "reason": why }))
            .collect::<Vec<_>>(),
    })
}

impl AttemptObserver for GenerationStore {
    fn observe(&self, report: &AttemptReport) {
        let Some(id) = &report.request_id else {
            return;
        };
        self.with_record(id, |r| {
            if r.attempts.len() >= MAX_ATTEMPTS {
                r.attempts_dropped += 1;
                return;
            }
            r.attempts.push(AttemptEntry {
                attempt: report.attempt,
                provider: report.provider.clone(),
                model: report.model.clone(),
                endpoint: report.endpoint.clone(),
                class: report.class,
                status: report.status,
                latency: report.ended_at.saturating_duration_since(report.sent_at),
                ttft: report.ttft,
                usage: report.usage,
            });
        });
    }

    fn attempt_skipped(&self, skip: &SkipReport<'_>) {
        let Some(id) = skip.request_id else {
            return;
        };
        self.with_record(id, |r| {
            // As many as attempts are kept: a request can skip each candidate a few times.
            if r.skipped.len() < MAX_ATTEMPTS {
                r.skipped.push((Arc::from(skip.endpoint), skip.reason));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::time::Instant;

    use super::*;

    fn report(id: &str, provider: &str, model: &str, attempt: u32, class: Class) -> AttemptReport {
        let sent_at = Instant::now();
        AttemptReport {
            request_id: Some(Arc::from(id)),
            endpoint: Arc::from(format!("{provider}/{model}")),
            provider: Arc::from(provider),
            model: Arc::from(model),
            attempt,
            class,
            status: Some(if class == Class::Success { 200 } else { 503 }),
            sent_at,
            ttft: (class == Class::Success).then(|| Duration::from_millis(80)),
            ended_at: sent_at + Duration::from_millis(450),
            usage: (class == Class::Success).then_some(Usage {
                prompt_tokens: 12,
                completion_tokens: 34,
                cost: 0.0042,
                estimated: false,
            }),
            retry_after: None,
        }
    }

    #[test]
    fn a_request_is_shaped_like_openrouters_generation() {
        let store = GenerationStore::default();
        store.record_request(
            "gen-1",
            Some("team-a"),
            &["gpt-4o", "claude"],
            &[
                ("slow/gpt-4o", "breaker open"),
                ("cheap/gpt-4o", "max_price"),
            ],
        );
        store.observe(&report("gen-1", "openai", "gpt-4o", 1, Class::ServerError));
        store.observe(&report("gen-1", "azure", "gpt-4o", 2, Class::Success));
        store.finish(
            "gen-1",
            &GenerationDone {
                status: 200,
                provider: Some("azure"),
                model: Some("gpt-4o"),
                upstream_model: Some("gpt-4o-2024-08-06"),
                usage: Some(Usage {
                    prompt_tokens: 12,
                    completion_tokens: 34,
                    cost: 0.0042,
                    estimated: false,
                }),
                cost: None,
                duration: Duration::from_millis(1234),
                ttft: Some(Duration::from_millis(300)),
            },
        );
        let v = store.get("gen-1").unwrap();
        let d = &v["data"];
        assert_eq!(d["id"], "gen-1");
        assert_eq!(d["state"], "completed");
        assert_eq!(d["model"], "gpt-4o");
        assert_eq!(d["provider_name"], "azure");
        assert_eq!(d["upstream_model"], "gpt-4o-2024-08-06");
        assert_eq!(d["route"], "team-a");
        assert_eq!(d["models"], json!(["gpt-4o", "claude"]));
        assert_eq!(d["status"], 200);
        assert_eq!(d["latency"], 1234);
        assert_eq!(d["ttft_ms"], 300);
        assert_eq!(d["tokens_prompt"], 12);
        assert_eq!(d["tokens_completion"], 34);
        assert_eq!(d["total_cost"], 0.0042);
        assert_eq!(d["usage"], 0.0042);
        assert_eq!(d["estimated"], false);
        assert_eq!(d["num_attempts"], 2);
        assert!(d["created"].as_u64().unwrap() > 1_700_000_000);
        let created_at = d["created_at"].as_str().unwrap();
        assert!(
            created_at.ends_with('Z') && created_at.contains('T'),
            "{created_at}"
        );
        assert_eq!(
            d["excluded"],
            json!([
                {"endpoint": "slow/gpt-4o", "reason": "breaker open"},
                {"endpoint": "cheap/gpt-4o", "reason": "max_price"},
            ])
        );
        let a = d["attempts"].as_array().unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0]["provider"], "openai");
        assert_eq!(a[0]["endpoint"], "openai/gpt-4o");
        assert_eq!(a[0]["class"], "server_error");
        assert_eq!(a[0]["status"], 503);
        assert_eq!(a[0]["latency_ms"], 450);
        assert_eq!(a[0]["ttft_ms"], Value::Null);
        assert_eq!(a[0]["tokens"], Value::Null);
        assert_eq!(a[1]["attempt"], 2);
        assert_eq!(a[1]["class"], "success");
        assert_eq!(a[1]["ttft_ms"], 80);
        assert_eq!(a[1]["tokens"], json!({"prompt": 12, "completion": 34}));
        assert_eq!(a[1]["cost"], 0.0042);
    }

    #[test]
    fn in_progress_and_unknown_requests() {
        let store = GenerationStore::default();
        assert!(store.get("nope").is_none());
        store.record_request("r", None, &["m"], &[]);
        let d = &store.get("r").unwrap()["data"];
        assert_eq!(d["state"], "in_progress");
        assert_eq!(d["status"], Value::Null);
        assert_eq!(d["total_cost"], Value::Null);
        assert_eq!(d["attempts"], json!([]));
        // Attempts of a request never recorded still make an entry.
        store.observe(&report("late", "p", "m", 1, Class::Success));
        assert_eq!(store.get("late").unwrap()["data"]["num_attempts"], 1);
        // Reports without an id are ignored.
        let mut r = report("x", "p", "m", 1, Class::Success);
        r.request_id = None;
        store.observe(&r);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn skipped_candidates_are_kept_with_their_reason_and_bounded() {
        let store = GenerationStore::default();
        let skip = |id, endpoint, reason| SkipReport {
            request_id: id,
            endpoint,
            provider: "p",
            model: "m",
            reason,
        };
        store.attempt_skipped(&skip(Some("r"), "p/m", "endpoint_saturated"));
        store.observe(&report("r", "q", "m", 1, Class::Success));
        // The plan's exclusions, recorded at the end, do not replace them.
        store.record_request("r", None, &["m"], &[("z/m", "max_price")]);
        let d = &store.get("r").unwrap()["data"];
        assert_eq!(
            d["skipped"],
            json!([{"endpoint": "p/m", "reason": "endpoint_saturated"}])
        );
        assert_eq!(d["excluded"][0]["endpoint"], "z/m");
        assert_eq!(d["num_attempts"], 1);
        for _ in 0..100 {
            store.attempt_skipped(&skip(Some("r"), "p/m", "breaker_open"));
        }
        let d = &store.get("r").unwrap()["data"];
        assert_eq!(d["skipped"].as_array().unwrap().len(), MAX_ATTEMPTS);
        // Without a request id there is nothing to attach it to.
        store.attempt_skipped(&skip(None, "p/m", "breaker_open"));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn charged_cost_wins_over_usage_cost() {
        let store = GenerationStore::default();
        store.finish(
            "r",
            &GenerationDone {
                status: 200,
                usage: Some(Usage {
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    cost: 1.0,
                    estimated: true,
                }),
                cost: Some(0.5),
                ..GenerationDone::default()
            },
        );
        let d = &store.get("r").unwrap()["data"];
        assert_eq!(d["total_cost"], 0.5);
        assert_eq!(d["estimated"], true);
    }

    #[test]
    fn oldest_inserted_requests_are_evicted_first() {
        let store = GenerationStore::new(3, usize::MAX);
        for id in ["a", "b", "c"] {
            store.record_request(id, None, &[], &[]);
        }
        // Touching `a` does not make it younger: eviction is by insertion.
        store.observe(&report("a", "p", "m", 1, Class::Success));
        store.record_request("d", None, &[], &[]);
        assert_eq!(store.len(), 3);
        assert!(store.get("a").is_none());
        for id in ["b", "c", "d"] {
            assert!(store.get(id).is_some(), "{id}");
        }
        for i in 0..100 {
            store.record_request(&format!("n{i}"), None, &[], &[]);
        }
        assert_eq!(store.len(), 3);
        assert!(store.get("n99").is_some() && store.get("n97").is_some());
    }

    #[test]
    fn default_capacity_holds() {
        let store = GenerationStore::default();
        for i in 0..(DEFAULT_CAPACITY + 50) {
            store.record_request(&format!("req-{i:05}"), Some("r"), &["m"], &[]);
        }
        assert_eq!(store.len(), DEFAULT_CAPACITY);
        assert!(store.get("req-00049").is_none());
        assert!(store.get("req-00050").is_some());
    }

    #[test]
    fn bytes_are_bounded_and_strings_capped() {
        let store = GenerationStore::new(1_000_000, 64 * 1024);
        let long = "y".repeat(5_000);
        let excl: Vec<(&str, &str)> = (0..100).map(|_| (long.as_str(), long.as_str())).collect();
        let models: Vec<&str> = (0..100).map(|_| long.as_str()).collect();
        for i in 0..500 {
            let id = format!("{i}-{long}");
            store.record_request(&id, Some(&long), &models, &excl);
            for n in 0..40 {
                store.observe(&report(&id, "p", "m", n + 1, Class::ServerError));
            }
            assert!(store.bytes() <= 64 * 1024, "{}", store.bytes());
        }
        assert!(store.len() < 500);
        assert!(!store.is_empty());
        // The latest is kept, with every list and string capped.
        let last = format!("499-{long}");
        let v = store.get(truncate(&last, MAX_NAME_BYTES)).unwrap();
        let d = &v["data"];
        assert_eq!(d["id"].as_str().unwrap().len(), MAX_NAME_BYTES);
        assert_eq!(d["route"].as_str().unwrap().len(), MAX_NAME_BYTES);
        assert_eq!(d["models"].as_array().unwrap().len(), MAX_MODELS);
        let excluded = d["excluded"].as_array().unwrap();
        assert_eq!(excluded.len(), MAX_EXCLUDED);
        assert_eq!(
            excluded[0]["reason"].as_str().unwrap().len(),
            MAX_REASON_BYTES
        );
        assert_eq!(d["excluded_dropped"], 100 - MAX_EXCLUDED);
        assert_eq!(d["attempts"].as_array().unwrap().len(), MAX_ATTEMPTS);
        assert_eq!(d["num_attempts"], 40);
    }

    #[test]
    fn byte_accounting_returns_to_zero_when_everything_is_evicted() {
        let store = GenerationStore::new(2, usize::MAX);
        store.record_request("a", Some("route"), &["m1", "m2"], &[("e", "why")]);
        store.observe(&report("a", "p", "m", 1, Class::Success));
        let one = store.bytes();
        assert!(one > 0);
        store.record_request("b", None, &[], &[]);
        store.record_request("c", None, &[], &[]);
        store.record_request("d", None, &[], &[]);
        let small = store.bytes();
        assert!(small < one * 2, "{small} vs {one}");
        // Re-recording the same request replaces its lists rather than growing them.
        for _ in 0..50 {
            store.record_request("d", Some("r"), &["m"], &[("e", "w")]);
        }
        assert!(store.bytes() < one * 2);
    }
}
