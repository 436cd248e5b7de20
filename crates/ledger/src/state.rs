//! The in-memory ledger state the embedded and memory backends share: per window spent and
//! reserved nano-dollars, open reservations, and a bounded memory of settled ids.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use switchyard_core::{Charge, LedgerError, Totals};

use crate::amount;

/// One budget window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) spent: i64,
    pub(crate) reserved: i64,
    /// Unix milliseconds when the window ends: its first use plus its `ttl_secs`.
    pub(crate) expires_ms: u64,
}

/// An open reservation: the windows it was charged to and how much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Open {
    pub(crate) keys: Vec<Arc<str>>,
    pub(crate) amount: i64,
}

/// What a reservation check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The id is open or was settled: a replay, nothing to do.
    Replay,
    /// Every window has room: record and apply it.
    Fits,
}

/// Windows, open reservations and recently settled ids.
#[derive(Clone, Debug)]
pub(crate) struct State {
    pub(crate) windows: HashMap<Arc<str>, Window>,
    pub(crate) open: HashMap<Arc<str>, Open>,
    settled: Settled,
}

impl State {
    /// An empty state that remembers at most `settled_ids` settled ids.
    pub(crate) fn new(settled_ids: usize) -> Self {
        Self {
            windows: HashMap::new(),
            open: HashMap::new(),
            settled: Settled::new(settled_ids),
        }
    }

    /// Decides whether reservation `id` of `amount` nano-dollars fits every charge, without
    /// changing anything (so the embedded ledger can write the record before applying it).
    pub(crate) fn check_reserve(
        &self,
        id: &str,
        charges: &[Charge],
        amount: i64,
    ) -> Result<Verdict, LedgerError> {
        if self.open.contains_key(id) || self.settled.contains(id) {
            return Ok(Verdict::Replay);
        }
        for charge in charges {
            let cap = amount::cap(charge.cap);
            let window = self.windows.get(&*charge.key).copied().unwrap_or_default();
            // A key listed twice is charged once (see `apply_reserve`), so each check alone is right.
            let needed = window
                .spent
                .saturating_add(window.reserved)
                .saturating_add(amount);
            if needed > cap {
                return Err(LedgerError::Exceeded {
                    key: charge.key.clone(),
                    spent: amount::usd(window.spent),
                    reserved: amount::usd(window.reserved),
                    cap: charge.cap,
                });
            }
        }
        Ok(Verdict::Fits)
    }

    /// Applies a reservation that was checked (or is being replayed from the log). A key listed
    /// twice is charged once. A window ends at the latest `now_ms + ttl_secs` it was given:
    /// the budget layer's `ttl_secs` counts down to the window's end, so that is its first use
    /// plus its ttl, and a key reused past its end is not dropped while still in use.
    pub(crate) fn apply_reserve<'c>(
        &mut self,
        id: &str,
        charges: impl IntoIterator<Item = (&'c str, u64)>,
        amount: i64,
        now_ms: u64,
    ) {
        if self.open.contains_key(id) || self.settled.contains(id) {
            return;
        }
        let mut keys: Vec<Arc<str>> = Vec::new();
        for (key, ttl_secs) in charges {
            if keys.iter().any(|k| &**k == key) {
                continue;
            }
            let key: Arc<str> = match self.windows.get_key_value(key) {
                Some((k, _)) => k.clone(),
                None => {
                    let k: Arc<str> = Arc::from(key);
                    self.windows.insert(k.clone(), Window::default());
                    k
                }
            };
            if let Some(window) = self.windows.get_mut(&key) {
                window.reserved = window.reserved.saturating_add(amount);
                let ends = now_ms.saturating_add(ttl_secs.saturating_mul(1000));
                window.expires_ms = window.expires_ms.max(ends);
            }
            keys.push(key);
        }
        self.open.insert(Arc::from(id), Open { keys, amount });
    }

    /// The reserved amount of open reservation `id`, if it is open.
    pub(crate) fn open_amount(&self, id: &str) -> Option<i64> {
        self.open.get(id).map(|open| open.amount)
    }

    /// Settles open reservation `id`: its amount leaves `reserved` and `actual` joins `spent`
    /// on every window it was charged to. Unknown and already settled ids are ignored.
    pub(crate) fn apply_settle(&mut self, id: &str, actual: i64) {
        let Some((id, open)) = self.open.remove_entry(id) else {
            return;
        };
        for key in &open.keys {
            if let Some(window) = self.windows.get_mut(key) {
                window.reserved = window.reserved.saturating_sub(open.amount).max(0);
                window.spent = window.spent.saturating_add(actual);
            }
        }
        self.settled.insert(id);
    }

    /// Spent and reserved USD of each key; unknown keys are zero.
    pub(crate) fn totals(&self, keys: &[Arc<str>]) -> Vec<Totals> {
        keys.iter()
            .map(|key| {
                self.windows
                    .get(key)
                    .map(|w| Totals {
                        spent: amount::usd(w.spent),
                        reserved: amount::usd(w.reserved),
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Drops windows that ended at or before `now_ms` and hold no open reservation.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        self.windows
            .retain(|_, w| w.expires_ms > now_ms || w.reserved > 0);
    }

    /// After a crash nobody will settle what was open, and the upstream may have billed it:
    /// count every open reservation as spent in full (over-count, never under-count).
    pub(crate) fn close_open(&mut self) {
        let open = std::mem::take(&mut self.open);
        for (id, open) in open {
            for key in &open.keys {
                if let Some(window) = self.windows.get_mut(key) {
                    window.reserved = window.reserved.saturating_sub(open.amount).max(0);
                    window.spent = window.spent.saturating_add(open.amount);
                }
            }
            self.settled.insert(id);
        }
    }

    /// Settled ids, oldest first.
    pub(crate) fn settled_ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.settled.order.iter()
    }

    /// Remembers `id` as settled (snapshot restore).
    pub(crate) fn remember_settled(&mut self, id: Arc<str>) {
        self.settled.insert(id);
    }
}

/// The last `limit` settled ids, so a replayed reserve of a settled id stays a no-op without
/// the set growing forever.
#[derive(Clone, Debug)]
struct Settled {
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
    limit: usize,
}

impl Settled {
    fn new(limit: usize) -> Self {
        Self {
            order: VecDeque::new(),
            set: HashSet::new(),
            limit,
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: Arc<str>) {
        if self.limit == 0 || !self.set.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.limit {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn charge(key: &str, cap: f64) -> Charge {
        Charge {
            key: Arc::from(key),
            cap,
            ttl_secs: 60,
        }
    }

    fn reserve(
        state: &mut State,
        id: &str,
        charges: &[Charge],
        usd: f64,
    ) -> Result<Verdict, LedgerError> {
        let amount = amount::amount(usd);
        let verdict = state.check_reserve(id, charges, amount)?;
        if verdict == Verdict::Fits {
            let pairs = charges.iter().map(|c| (&*c.key, c.ttl_secs));
            state.apply_reserve(id, pairs, amount, 1_000);
        }
        Ok(verdict)
    }

    #[test]
    fn duplicate_keys_are_charged_once() {
        let mut state = State::new(10);
        let charges = [charge("a", 1.0), charge("a", 1.0)];
        assert_eq!(
            reserve(&mut state, "r1", &charges, 0.6).unwrap(),
            Verdict::Fits
        );
        assert_eq!(state.windows[&*Arc::<str>::from("a")].reserved, 600_000_000);
        assert_eq!(state.open["r1"].keys.len(), 1);
        state.apply_settle("r1", 500_000_000);
        let w = state.windows[&*Arc::<str>::from("a")];
        assert_eq!((w.spent, w.reserved), (500_000_000, 0));
    }

    #[test]
    fn windows_expire_from_first_use_unless_reserved() {
        let mut state = State::new(10);
        state.apply_reserve("r1", [("a", 5)], 10, 1_000);
        // Later uses count down to the same end; an earlier end never shortens it.
        state.apply_reserve("r2", [("a", 3)], 10, 3_000);
        state.apply_reserve("r3", [("b", 5)], 10, 1_000);
        assert_eq!(state.windows[&*Arc::<str>::from("a")].expires_ms, 6_000);
        state.apply_reserve("r4", [("c", 5)], 10, 1_000);
        state.apply_reserve("r5", [("c", 9)], 10, 2_000);
        assert_eq!(state.windows[&*Arc::<str>::from("c")].expires_ms, 11_000);
        state.apply_settle("r4", 1);
        state.apply_settle("r5", 1);
        state.apply_settle("r1", 1);
        state.apply_settle("r2", 1);
        state.expire(6_000);
        assert!(!state.windows.contains_key("a"), "ended and idle");
        assert!(
            state.windows.contains_key("b"),
            "ended but r3 is still open"
        );
        assert!(state.windows.contains_key("c"), "ends later");
        state.apply_settle("r3", 1);
        state.expire(6_000);
        assert_eq!(state.windows.len(), 1);
        state.expire(11_000);
        assert!(state.windows.is_empty());
    }

    #[test]
    fn settled_ids_are_bounded() {
        let mut state = State::new(2);
        for id in ["a", "b", "c"] {
            state.apply_reserve(id, [("k", 60)], 1, 0);
            state.apply_settle(id, 1);
        }
        let ids: Vec<&str> = state.settled_ids().map(|id| &**id).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(state.check_reserve("c", &[], 1).unwrap(), Verdict::Replay);
        // "a" was forgotten: a replay this late is treated as a new reservation.
        assert_eq!(state.check_reserve("a", &[], 1).unwrap(), Verdict::Fits);
    }

    #[test]
    fn close_open_counts_open_reservations_as_spent() {
        let mut state = State::new(10);
        state.apply_reserve("r1", [("a", 60), ("b", 60)], 7, 0);
        state.apply_reserve("r2", [("a", 60)], 3, 0);
        state.apply_settle("r2", 1);
        state.close_open();
        assert!(state.open.is_empty());
        let a = state.windows[&*Arc::<str>::from("a")];
        let b = state.windows[&*Arc::<str>::from("b")];
        assert_eq!((a.spent, a.reserved), (8, 0));
        assert_eq!((b.spent, b.reserved), (7, 0));
        assert_eq!(state.check_reserve("r1", &[], 1).unwrap(), Verdict::Replay);
    }
}
