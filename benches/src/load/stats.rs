//! Latency samples and their percentiles.

use std::time::Duration;

/// Latencies in nanoseconds. Percentiles are nearest-rank over every sample: a run holds at
/// most a few hundred thousand of them, so exact beats a histogram's buckets here.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    nanos: Vec<u64>,
    sorted: bool,
}

/// The percentiles the report shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.push_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds one sample given in nanoseconds.
    pub fn push_nanos(&mut self, nanos: u64) {
        self.nanos.push(nanos);
        self.sorted = false;
    }

    /// Moves every sample of `other` into this set.
    pub fn append(&mut self, other: &mut Samples) {
        self.nanos.append(&mut other.nanos);
        self.sorted = false;
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// How many samples are strictly above `limit`.
    pub fn count_above(&self, limit: Duration) -> usize {
        let limit = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.iter().filter(|&&n| n > limit).count()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.nanos.sort_unstable();
            self.sorted = true;
        }
    }

    /// The nearest-rank quantile `q` (0 < q <= 1): the smallest sample with at least
    /// `q` of all samples at or below it. `None` when there are no samples.
    pub fn quantile(&mut self, q: f64) -> Option<Duration> {
        self.sort();
        let n = self.nanos.len();
        if n == 0 {
            return None;
        }
        // Rounding guards against 0.999 * 1000 = 998.999…
        let rank = ((q.clamp(0.0, 1.0) * n as f64) - 1e-9).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        self.nanos.get(index).map(|&n| Duration::from_nanos(n))
    }

    /// The percentiles of the report, `None` when there are no samples.
    pub fn summary(&mut self) -> Option<Summary> {
        Some(Summary {
            count: self.len(),
            p50: self.quantile(0.50)?,
            p90: self.quantile(0.90)?,
            p99: self.quantile(0.99)?,
            p999: self.quantile(0.999)?,
            max: self.quantile(1.0)?,
        })
    }
}

/// `a - b` in microseconds, signed: an "added latency" can come out slightly negative when
/// the proxy's cost is below the run's noise, and the report shows that rather than hide it.
pub fn added_us(a: Duration, b: Duration) -> f64 {
    (a.as_nanos() as f64 - b.as_nanos() as f64) / 1_000.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        // 1..=1000 ms in reverse, so sorting matters.
        for n in (1..=1000).rev() {
            s.push(ms(n));
        }
        let sum = s.summary().unwrap();
        assert_eq!(sum.count, 1000);
        assert_eq!(sum.p50, ms(500));
        assert_eq!(sum.p90, ms(900));
        assert_eq!(sum.p99, ms(990));
        assert_eq!(sum.p999, ms(999));
        assert_eq!(sum.max, ms(1000));
    }

    #[test]
    fn small_sets_round_up() {
        let mut s = Samples::default();
        for n in [30, 10, 20] {
            s.push(ms(n));
        }
        assert_eq!(s.quantile(0.5), Some(ms(20)));
        assert_eq!(s.quantile(0.34), Some(ms(20)));
        assert_eq!(s.quantile(0.33), Some(ms(10)));
        assert_eq!(s.quantile(0.99), Some(ms(30)));
        assert_eq!(s.quantile(0.0), Some(ms(10)));
    }

    #[test]
    fn empty_has_no_summary_and_append_merges() {
        let mut s = Samples::default();
        assert!(s.summary().is_none());
        assert_eq!(s.len(), 0);
        let mut other = Samples::default();
        other.push(ms(7));
        other.push(ms(40));
        s.push(ms(1));
        s.quantile(0.5);
        s.append(&mut other);
        assert_eq!(other.len(), 0);
        assert_eq!(s.len(), 3);
        // The merged set is re-sorted before the next quantile.
        assert_eq!(s.quantile(1.0), Some(ms(40)));
        assert_eq!(s.quantile(0.5), Some(ms(7)));
        assert_eq!(s.count_above(ms(30)), 1);
        assert_eq!(s.count_above(ms(40)), 0);
    }

    #[test]
    fn added_latency_is_signed_microseconds() {
        assert!((added_us(ms(3), ms(1)) - 2000.0).abs() < 1e-9);
        assert!(
            (added_us(Duration::from_micros(90), Duration::from_micros(100)) + 10.0).abs() < 1e-9
        );
    }
}
