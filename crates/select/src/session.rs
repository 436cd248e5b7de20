//! The sticky-session table: which endpoint last served a session, per requested model.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Sessions remembered by default before the least recently used is forgotten.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// A session not served for this long is forgotten by default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);

/// (first requested model id, session id).
type Key = (Arc<str>, Arc<str>);

#[derive(Debug)]
struct Entry {
    endpoint: Arc<str>,
    last_used: Instant,
    /// Position in the recency order.
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    /// Recency order, least recent first: eviction and expiry pop from the front.
    lru: BTreeMap<u64, Key>,
    next_seq: u64,
}

/// Which endpoint served each session, keyed by session id and the request's first model.
///
/// Bounded: past `capacity` the least recently served session is forgotten, and a session not
/// served for `idle` expires. The lock is a plain `std::sync::Mutex`, held for a map operation
/// and never across an `.await`.
#[derive(Debug)]
pub struct SessionTable {
    inner: Mutex<Inner>,
    capacity: usize,
    idle: Duration,
}

impl Default for SessionTable {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_IDLE)
    }
}

impl SessionTable {
    /// A table remembering at most `capacity` sessions (at least one), each for `idle` after
    /// it was last served.
    pub fn new(capacity: usize, idle: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            idle,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock cannot leave the map half-updated in a way
        // that matters here: at worst a stale entry, which expiry removes.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint that last served `session` for `model`, unless it has been idle too long.
    pub fn get(&self, model: &Arc<str>, session: &Arc<str>, now: Instant) -> Option<Arc<str>> {
        let mut inner = self.lock();
        let key = (Arc::clone(model), Arc::clone(session));
        let entry = inner.map.get(&key)?;
        if self.expired(entry.last_used, now) {
            let seq = entry.seq;
            inner.map.remove(&key);
            inner.lru.remove(&seq);
            return None;
        }
        Some(Arc::clone(&entry.endpoint))
    }

    /// Remembers that `endpoint` served `session` for `model` at `now`.
    pub fn record(&self, model: Arc<str>, session: Arc<str>, endpoint: Arc<str>, now: Instant) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let key = (model, session);
        let old = inner.map.insert(
            key.clone(),
            Entry {
                endpoint,
                last_used: now,
                seq,
            },
        );
        if let Some(old) = old {
            inner.lru.remove(&old.seq);
        }
        inner.lru.insert(seq, key);

        // Expired sessions first, then the least recent ones while over capacity; both sit
        // at the front of the recency order.
        while let Some(entry) = inner.lru.first_key_value() {
            let (&seq, key) = entry;
            let evict = inner.map.len() > self.capacity
                || inner
                    .map
                    .get(key)
                    .is_none_or(|e| self.expired(e.last_used, now));
            if !evict {
                break;
            }
            if let Some(key) = inner.lru.remove(&seq) {
                inner.map.remove(&key);
            }
        }
    }

    /// Forgets a session, e.g. when its endpoint is gone.
    pub fn forget(&self, model: &Arc<str>, session: &Arc<str>) {
        let mut inner = self.lock();
        if let Some(e) = inner.map.remove(&(Arc::clone(model), Arc::clone(session))) {
            inner.lru.remove(&e.seq);
        }
    }

    /// Sessions currently remembered (expired ones included until they are next touched).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expired(&self, last_used: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last_used) >= self.idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Arc<str> {
        Arc::from(v)
    }

    #[test]
    fn remembers_per_model_and_session() {
        let t = SessionTable::default();
        let now = Instant::now();
        t.record(s("m1"), s("sess"), s("a/m1"), now);
        t.record(s("m2"), s("sess"), s("b/m2"), now);
        assert_eq!(t.get(&s("m1"), &s("sess"), now).as_deref(), Some("a/m1"));
        assert_eq!(t.get(&s("m2"), &s("sess"), now).as_deref(), Some("b/m2"));
        assert_eq!(t.get(&s("m1"), &s("other"), now), None);
        // A later success on another endpoint replaces the first.
        t.record(s("m1"), s("sess"), s("c/m1"), now);
        assert_eq!(t.get(&s("m1"), &s("sess"), now).as_deref(), Some("c/m1"));
        assert_eq!(t.len(), 2);
        t.forget(&s("m1"), &s("sess"));
        assert_eq!(t.get(&s("m1"), &s("sess"), now), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn evicts_the_least_recently_served() {
        let t = SessionTable::new(3, DEFAULT_IDLE);
        let now = Instant::now();
        for i in 0..3 {
            t.record(s("m"), s(&format!("s{i}")), s("a/m"), now);
        }
        // Serving s0 again makes s1 the least recent.
        t.record(s("m"), s("s0"), s("a/m"), now);
        t.record(s("m"), s("s3"), s("a/m"), now);
        assert_eq!(t.len(), 3);
        assert!(t.get(&s("m"), &s("s1"), now).is_none());
        for kept in ["s0", "s2", "s3"] {
            assert!(t.get(&s("m"), &s(kept), now).is_some(), "{kept}");
        }
        // Bounded however many sessions pass through.
        for i in 0..1000 {
            t.record(s("m"), s(&format!("x{i}")), s("a/m"), now);
        }
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn idle_sessions_expire() {
        let t = SessionTable::new(10, Duration::from_secs(600));
        let start = Instant::now();
        t.record(s("m"), s("old"), s("a/m"), start);
        t.record(s("m"), s("busy"), s("a/m"), start);
        let later = start + Duration::from_secs(599);
        assert!(t.get(&s("m"), &s("old"), later).is_some());
        // Serving refreshes the idle clock.
        t.record(s("m"), s("busy"), s("b/m"), later);
        let expired = start + Duration::from_secs(600);
        assert!(t.get(&s("m"), &s("old"), expired).is_none());
        assert_eq!(t.get(&s("m"), &s("busy"), expired).as_deref(), Some("b/m"));
        // The expired entry was dropped on lookup, not only hidden.
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn recording_sweeps_expired_sessions() {
        let t = SessionTable::new(100, Duration::from_secs(10));
        let start = Instant::now();
        for i in 0..5 {
            t.record(s("m"), s(&format!("s{i}")), s("a/m"), start);
        }
        t.record(s("m"), s("new"), s("a/m"), start + Duration::from_secs(11));
        assert_eq!(t.len(), 1);
    }
}
