//! [`MemoryLedger`]: the ledger semantics with nothing written anywhere.

use std::sync::{Arc, Mutex, MutexGuard};

use switchyard_core::{BoxFuture, Charge, Ledger, LedgerError, Totals};

use crate::amount;
use crate::state::{State, Verdict};
use crate::{DEFAULT_SETTLED_IDS, now_ms};

/// A ledger kept only in memory: for tests and for setups that want budgets enforced per
/// process without durability. Spend is lost when the process exits.
#[derive(Debug)]
pub struct MemoryLedger {
    state: Mutex<State>,
}

impl MemoryLedger {
    /// An empty ledger remembering the last 100,000 settled ids.
    pub fn new() -> Self {
        Self::with_settled_ids(DEFAULT_SETTLED_IDS)
    }

    /// An empty ledger remembering the last `settled_ids` settled ids (for replay detection).
    pub fn with_settled_ids(settled_ids: usize) -> Self {
        Self {
            state: Mutex::new(State::new(settled_ids)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement a panicking holder could have run, so
        // a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reserve_now(&self, id: &str, charges: &[Charge], usd: f64) -> Result<(), LedgerError> {
        let amount = amount::amount(usd);
        let mut state = self.lock();
        if state.check_reserve(id, charges, amount)? == Verdict::Fits {
            let pairs = charges.iter().map(|c| (&*c.key, c.ttl_secs));
            state.apply_reserve(id, pairs, amount, now_ms());
        }
        Ok(())
    }

    fn settle_now(&self, id: &str, usd: f64) {
        let mut state = self.lock();
        if let Some(reserved) = state.open_amount(id) {
            state.apply_settle(id, amount::actual(usd, reserved));
        }
    }

    /// Drops windows that have ended and hold no open reservation.
    pub fn expire(&self) {
        self.lock().expire(now_ms());
    }
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger for MemoryLedger {
    fn reserve<'a>(
        &'a self,
        id: &'a str,
        charges: &'a [Charge],
        amount: f64,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        let result = self.reserve_now(id, charges, amount);
        Box::pin(std::future::ready(result))
    }

    fn settle<'a>(&'a self, id: &'a str, actual: f64) -> BoxFuture<'a, Result<(), LedgerError>> {
        self.settle_now(id, actual);
        Box::pin(std::future::ready(Ok(())))
    }

    fn totals<'a>(
        &'a self,
        keys: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<Vec<Totals>, LedgerError>> {
        let totals = self.lock().totals(keys);
        Box::pin(std::future::ready(Ok(totals)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn conformance_suite() {
        conformance::run_all(|| async { MemoryLedger::new() }).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_concurrent_reservations_one_fits() {
        conformance::one_of_fifty_fits(Arc::new(MemoryLedger::new())).await;
    }

    #[tokio::test]
    async fn expire_drops_ended_windows() {
        let ledger = MemoryLedger::new();
        let charges = [Charge {
            key: Arc::from("gone"),
            cap: 1.0,
            ttl_secs: 0,
        }];
        ledger.reserve("r1", &charges, 0.5).await.ok();
        ledger.settle("r1", 0.25).await.ok();
        let keys = [Arc::from("gone")];
        assert_eq!(
            ledger.totals(&keys).await.ok().map(|t| t[0].spent),
            Some(0.25)
        );
        ledger.expire();
        assert_eq!(
            ledger.totals(&keys).await.ok(),
            Some(vec![Totals::default()])
        );
    }
}
