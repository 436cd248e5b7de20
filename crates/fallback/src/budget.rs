//! The retry budget: retries may add at most `ratio` of the request rate, with a floor of
//! `min_per_s`, over a sliding window — so an outage cannot multiply the load on providers
//! (tower's `TpsBudget` idea, with one-second buckets).

use std::sync::Mutex;
use tokio::time::Instant;

const BUCKETS: usize = 10;

/// Shared by every request of the process; survives policy reloads.
#[derive(Debug)]
pub struct RetryBudget {
    inner: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    origin: Instant,
    /// The newest second (since `origin`) seen; its bucket is `current % BUCKETS`.
    current: u64,
    deposits: [u32; BUCKETS],
    withdrawals: [u32; BUCKETS],
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryBudget {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Window {
                origin: Instant::now(),
                current: 0,
                deposits: [0; BUCKETS],
                withdrawals: [0; BUCKETS],
            }),
        }
    }

    /// A request arrived: it earns a fraction of a retry.
    pub fn deposit(&self, now: Instant) {
        let mut w = self.lock();
        let i = w.advance(now);
        w.deposits[i] = w.deposits[i].saturating_add(1);
    }

    /// Takes one retry if the budget allows it (`ratio` of the requests in the window, at
    /// least `min_per_s` per second of the window).
    pub fn withdraw(&self, now: Instant, ratio: f64, min_per_s: f64) -> bool {
        let mut w = self.lock();
        let i = w.advance(now);
        let deposits: u32 = w.deposits.iter().sum();
        let withdrawals: u32 = w.withdrawals.iter().sum();
        let allowed = (f64::from(deposits) * ratio).max(min_per_s * BUCKETS as f64);
        if f64::from(withdrawals) + 1.0 <= allowed {
            w.withdrawals[i] = w.withdrawals[i].saturating_add(1);
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Window {
    /// Moves the window to `now`, clearing the buckets of seconds that fell out of it;
    /// returns the bucket for `now`.
    fn advance(&mut self, now: Instant) -> usize {
        let sec = now.saturating_duration_since(self.origin).as_secs();
        if sec > self.current {
            let stale = (sec - self.current).min(BUCKETS as u64);
            for k in 0..stale {
                let idx = ((sec - k) % BUCKETS as u64) as usize;
                self.deposits[idx] = 0;
                self.withdrawals[idx] = 0;
            }
            self.current = sec;
        }
        (self.current % BUCKETS as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn floor_allows_min_per_s_over_the_window() {
        let b = RetryBudget::new();
        let now = Instant::now();
        // No traffic: the floor alone, 1/s over 10 s.
        let granted = (0..20).filter(|_| b.withdraw(now, 0.2, 1.0)).count();
        assert_eq!(granted, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_of_requests_beyond_the_floor() {
        let b = RetryBudget::new();
        let now = Instant::now();
        for _ in 0..1000 {
            b.deposit(now);
        }
        let granted = (0..1000).filter(|_| b.withdraw(now, 0.2, 1.0)).count();
        assert_eq!(granted, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn old_buckets_expire() {
        let b = RetryBudget::new();
        let t0 = Instant::now();
        assert_eq!((0..20).filter(|_| b.withdraw(t0, 0.2, 1.0)).count(), 10);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.withdraw(Instant::now(), 0.2, 1.0), "window still full");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            (0..20)
                .filter(|_| b.withdraw(Instant::now(), 0.2, 1.0))
                .count(),
            10
        );
    }
}
