//! Call recording: every request the sim answers, and how each one ended, so tests can
//! assert call counts and what the proxy did to the upstream connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

/// Header names whose values are recorded only as a [`fingerprint`].
const SECRET_HEADERS: [&str; 4] = ["authorization", "x-api-key", "api-key", "cookie"];

/// One request the sim received (control paths under `/_sim/` are not recorded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Arrival number, from 1, never reused (not even after [`crate::Sim::clear_calls`]).
    pub seq: u64,
    /// Arrival time in milliseconds since the sim started.
    pub at_ms: u64,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// Header names in lower case; secret headers (`authorization`, `x-api-key`, `api-key`,
    /// `cookie`) carry [`fingerprint`] of their whole value instead.
    pub headers: Vec<(String, String)>,
    /// The request body, `Null` when it is not JSON.
    pub body: serde_json::Value,
    /// The body's `model` (or an Azure deployment name from the path).
    pub model: Option<String>,
    /// Whether the body asked for a stream.
    pub stream: bool,
    /// How the call ended; `None` while it is in progress.
    pub outcome: Option<Outcome>,
}

impl Call {
    /// The first recorded value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The whole response was handed to the connection; `chunks` content chunks were sent
    /// (0 for non-content responses such as embeddings).
    Completed { chunks: usize },
    /// The client went away first, after `chunks` content chunks, at `at_ms` since sim start.
    ClientGone { chunks: usize, at_ms: u64 },
    /// The sim aborted the response after `chunks` content chunks (`cut_after`).
    Cut { chunks: usize },
    /// The sim reset the TCP connection without answering (`reset`).
    Reset,
    /// The sim answered with this error status.
    Error { status: u16 },
}

/// `"sha256:"` followed by the first 16 hex digits of the SHA-256 of `secret`: enough to tell
/// which key was sent without recording it.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex = hex::encode(digest);
    format!("sha256:{}", &hex[..16])
}

/// Records headers with secrets replaced by their fingerprint.
pub(crate) fn record_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes());
            let value = if SECRET_HEADERS.contains(&name.as_str()) {
                fingerprint(&value)
            } else {
                value.into_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect()
}

/// The shared call log. A std mutex is enough: it is never held across an await.
#[derive(Debug)]
pub(crate) struct Recorder {
    calls: Mutex<Vec<Call>>,
    next_seq: AtomicU64,
    started: Instant,
    /// Bumped on every finished call so waiters re-check.
    finished: watch::Sender<u64>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            next_seq: AtomicU64::new(1),
            started: Instant::now(),
            finished: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds since the sim started.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Reserves the next arrival number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn push(&self, call: Call) {
        let mut calls = self.lock();
        // Arrival numbers are taken before the body is read, so a slow body may arrive after
        // a later number: keep the log sorted by seq.
        let at = calls.partition_point(|c| c.seq < call.seq);
        calls.insert(at, call);
    }

    /// Sets a call's outcome once; later outcomes for the same call are ignored.
    pub(crate) fn finish(&self, seq: u64, outcome: Outcome) {
        {
            let mut calls = self.lock();
            if let Ok(at) = calls.binary_search_by_key(&seq, |c| c.seq) {
                let call = &mut calls[at];
                if call.outcome.is_none() {
                    call.outcome = Some(outcome);
                }
            }
        }
        self.finished.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.lock().clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn outcome_of(&self, seq: u64) -> Option<Outcome> {
        let calls = self.lock();
        let at = calls.binary_search_by_key(&seq, |c| c.seq).ok()?;
        calls[at].outcome.clone()
    }

    pub(crate) async fn wait_outcome(&self, seq: u64, timeout: Duration) -> Option<Outcome> {
        let mut changed = self.finished.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(outcome) = self.outcome_of(seq) {
                return Some(outcome);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn call(seq: u64) -> Call {
        Call {
            seq,
            at_ms: 0,
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: Vec::new(),
            body: serde_json::Value::Null,
            model: None,
            stream: false,
            outcome: None,
        }
    }

    #[test]
    fn fingerprint_is_prefixed_truncated_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(fingerprint("abc"), "sha256:ba7816bf8f01cfea");
        assert_ne!(fingerprint("Bearer sk-1"), fingerprint("Bearer sk-2"));
        assert_eq!(fingerprint("x").len(), "sha256:".len() + 16);
    }

    #[test]
    fn secret_headers_are_fingerprinted() {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer sk-live".parse().unwrap());
        headers.insert("x-api-key", "k1".parse().unwrap());
        headers.insert("api-key", "k2".parse().unwrap());
        headers.insert("cookie", "session=1".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        let call = Call {
            headers: record_headers(&headers),
            ..call(1)
        };
        assert_eq!(
            call.header("authorization"),
            Some(fingerprint("Bearer sk-live").as_str())
        );
        assert_eq!(call.header("x-api-key"), Some(fingerprint("k1").as_str()));
        assert_eq!(call.header("api-key"), Some(fingerprint("k2").as_str()));
        assert_eq!(
            call.header("cookie"),
            Some(fingerprint("session=1").as_str())
        );
        assert_eq!(call.header("content-type"), Some("application/json"));
        assert!(!format!("{:?}", call.headers).contains("sk-live"));
    }

    #[test]
    fn log_stays_sorted_and_first_outcome_wins() {
        let rec = Recorder::new();
        assert_eq!(rec.next_seq(), 1);
        assert_eq!(rec.next_seq(), 2);
        rec.push(call(2));
        rec.push(call(1));
        assert_eq!(
            rec.calls().iter().map(|c| c.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        rec.finish(2, Outcome::Completed { chunks: 3 });
        rec.finish(2, Outcome::Reset);
        rec.finish(9, Outcome::Reset);
        assert_eq!(
            rec.calls()[1].outcome,
            Some(Outcome::Completed { chunks: 3 })
        );
        assert_eq!(rec.calls()[0].outcome, None);
        assert_eq!(rec.len(), 2);
        rec.clear();
        assert_eq!(rec.len(), 0);
    }

    #[tokio::test]
    async fn wait_outcome_wakes_on_finish_and_times_out() {
        let rec = std::sync::Arc::new(Recorder::new());
        let seq = rec.next_seq();
        rec.push(call(seq));
        assert_eq!(rec.wait_outcome(seq, Duration::from_millis(20)).await, None);
        let waiter = {
            let rec = rec.clone();
            tokio::spawn(async move { rec.wait_outcome(seq, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        rec.finish(seq, Outcome::Error { status: 500 });
        assert_eq!(waiter.await.unwrap(), Some(Outcome::Error { status: 500 }));
    }
}
