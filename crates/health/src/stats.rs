use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::endpoint::{Outcome, Sample};

/// A snapshot of one endpoint's statistics over the rolling window.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Attempts in the window (Neutral outcomes excluded).
    pub samples: u32,
    /// Failed attempts in the window.
    pub failures: u32,
    /// `failures / samples`, 0 when there are no samples.
    pub error_rate: f64,
    /// Time to first token in seconds, over successful streamed attempts.
    pub ttft: Option<Percentiles>,
    /// Attempt latency in seconds, over successful attempts.
    pub latency: Option<Percentiles>,
    /// Output tokens per second of generation time (`output_tokens / (latency - ttft)`), over
    /// successful attempts that reported tokens.
    pub throughput: Option<Percentiles>,
    /// Failures since the last success (not limited to the window).
    pub consecutive_failures: u32,
}

/// Nearest-rank percentiles of a set of values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p99: f64,
}

/// One of the percentiles kept in [`Percentiles`] (OpenRouter's `preferred_*` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quantile {
    P50,
    P75,
    P90,
    P99,
}

impl Quantile {
    /// The quantile in thousandths, so nearest ranks are computed without float rounding.
    fn per_mille(self) -> usize {
        match self {
            Self::P50 => 500,
            Self::P75 => 750,
            Self::P90 => 900,
            Self::P99 => 990,
        }
    }
}

impl Percentiles {
    /// The value at quantile `q`.
    pub fn get(&self, q: Quantile) -> f64 {
        match q {
            Quantile::P50 => self.p50,
            Quantile::P75 => self.p75,
            Quantile::P90 => self.p90,
            Quantile::P99 => self.p99,
        }
    }

    /// Sorts `values` in place and takes nearest-rank percentiles; `None` when empty.
    fn of(values: &mut [f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(f64::total_cmp);
        let at = |q: Quantile| {
            // Nearest rank: the smallest value with at least q of the values at or below it.
            let rank = (values.len() * q.per_mille()).div_ceil(1000).max(1);
            values.get(rank - 1).copied().unwrap_or_default()
        };
        Some(Self {
            p50: at(Quantile::P50),
            p75: at(Quantile::P75),
            p90: at(Quantile::P90),
            p99: at(Quantile::P99),
        })
    }
}

/// Whether a sample that ended at `at` lies within `window` before `now`.
pub(crate) fn within(now: Instant, at: Instant, window: Duration) -> bool {
    now.saturating_duration_since(at) < window
}

/// Computes a summary of the samples within `window` before `now`. `scratch` is reused between
/// calls so a refresh does not allocate once it has grown.
pub(crate) fn summarize(
    ring: &VecDeque<Sample>,
    consecutive_failures: u32,
    now: Instant,
    window: Duration,
    scratch: &mut Vec<f64>,
) -> Summary {
    let recent = || ring.iter().filter(move |s| within(now, s.at, window));
    let successes = || recent().filter(|s| s.outcome == Outcome::Success);

    let (mut samples, mut failures) = (0u32, 0u32);
    for s in recent() {
        match s.outcome {
            Outcome::Success => samples = samples.saturating_add(1),
            Outcome::Failure => {
                samples = samples.saturating_add(1);
                failures = failures.saturating_add(1);
            }
            // Never stored, but if one were it would count nowhere.
            Outcome::Neutral => {}
        }
    }
    let error_rate = if samples == 0 {
        0.0
    } else {
        f64::from(failures) / f64::from(samples)
    };

    let mut percentiles = |values: &mut dyn Iterator<Item = f64>| {
        scratch.clear();
        scratch.extend(values);
        Percentiles::of(scratch)
    };
    let ttft = percentiles(&mut successes().filter_map(|s| s.ttft.map(|d| d.as_secs_f64())));
    let latency = percentiles(&mut successes().map(|s| s.latency.as_secs_f64()));
    let throughput = percentiles(&mut successes().filter_map(throughput));

    Summary {
        samples,
        failures,
        error_rate,
        ttft,
        latency,
        throughput,
        consecutive_failures,
    }
}

/// Output tokens per second of generation. A buffered response has no TTFT, so all of its
/// latency counts as generation; an attempt with no tokens or no measurable generation time
/// says nothing about throughput.
fn throughput(s: &Sample) -> Option<f64> {
    let tokens = s.output_tokens.filter(|&t| t > 0)?;
    let generation = s.latency.checked_sub(s.ttft.unwrap_or_default())?;
    if generation.is_zero() {
        return None;
    }
    Some(tokens as f64 / generation.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn nearest_rank_of_one_to_hundred() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(
            p,
            Some(Percentiles {
                p50: 50.0,
                p75: 75.0,
                p90: 90.0,
                p99: 99.0
            })
        );
    }

    #[test]
    fn nearest_rank_of_small_sets() {
        let mut one = vec![7.5];
        let p = Percentiles::of(&mut one);
        assert_eq!(p.map(|p| (p.p50, p.p99)), Some((7.5, 7.5)));

        // ranks: p50 -> ceil(2) = 2nd, p75 -> ceil(3) = 3rd, p90/p99 -> 4th.
        let mut four = vec![4.0, 1.0, 3.0, 2.0];
        let p = Percentiles::of(&mut four);
        assert_eq!(
            p,
            Some(Percentiles {
                p50: 2.0,
                p75: 3.0,
                p90: 4.0,
                p99: 4.0
            })
        );

        // ranks out of 10: p50 -> 5th, p75 -> ceil(7.5) = 8th, p90 -> 9th, p99 -> 10th.
        let mut ten: Vec<f64> = (1..=10).map(f64::from).collect();
        let p = Percentiles::of(&mut ten);
        assert_eq!(
            p,
            Some(Percentiles {
                p50: 5.0,
                p75: 8.0,
                p90: 9.0,
                p99: 10.0
            })
        );
        assert_eq!(Percentiles::of(&mut []), None);
    }

    #[test]
    fn get_reads_each_quantile() {
        let p = Percentiles {
            p50: 1.0,
            p75: 2.0,
            p90: 3.0,
            p99: 4.0,
        };
        assert_eq!(p.get(Quantile::P50), 1.0);
        assert_eq!(p.get(Quantile::P75), 2.0);
        assert_eq!(p.get(Quantile::P90), 3.0);
        assert_eq!(p.get(Quantile::P99), 4.0);
    }

    fn success(at: Instant, ttft: Option<u64>, latency: u64, tokens: Option<u64>) -> Sample {
        Sample {
            at,
            outcome: Outcome::Success,
            ttft: ttft.map(Duration::from_millis),
            latency: Duration::from_millis(latency),
            output_tokens: tokens,
        }
    }

    #[test]
    fn throughput_uses_generation_time() {
        let now = Instant::now();
        // 100 tokens over 2 s of generation (2.5 s latency - 0.5 s TTFT) = 50 tok/s.
        assert_eq!(
            throughput(&success(now, Some(500), 2500, Some(100))),
            Some(50.0)
        );
        // Buffered: all of the latency is generation.
        assert_eq!(throughput(&success(now, None, 2000, Some(100))), Some(50.0));
        assert_eq!(throughput(&success(now, Some(500), 2500, None)), None);
        assert_eq!(throughput(&success(now, Some(500), 2500, Some(0))), None);
        assert_eq!(throughput(&success(now, Some(500), 500, Some(10))), None);
        assert_eq!(throughput(&success(now, Some(600), 500, Some(10))), None);
    }

    #[test]
    fn summarize_counts_only_the_window_and_successes_for_timings() {
        let now = Instant::now() + Duration::from_secs(1000);
        let window = Duration::from_secs(60);
        let old = now - Duration::from_secs(61);
        let fresh = now - Duration::from_secs(1);
        let mut ring = VecDeque::new();
        ring.push_back(success(old, Some(9000), 9000, Some(1)));
        ring.push_back(success(fresh, Some(100), 1100, Some(50)));
        ring.push_back(success(fresh, None, 300, None));
        ring.push_back(Sample {
            at: fresh,
            outcome: Outcome::Failure,
            ttft: Some(Duration::from_millis(1)),
            latency: Duration::from_millis(2),
            output_tokens: Some(1000),
        });
        let s = summarize(&ring, 1, now, window, &mut Vec::new());
        assert_eq!((s.samples, s.failures), (3, 1));
        assert!(close(s.error_rate, 1.0 / 3.0), "{}", s.error_rate);
        assert_eq!(s.consecutive_failures, 1);
        let ttft = s.ttft.map(|p| (p.p50, p.p99));
        assert_eq!(ttft, Some((0.1, 0.1)));
        let latency = s.latency.map(|p| (p.p50, p.p99));
        assert_eq!(latency, Some((0.3, 1.1)));
        let tput = s.throughput.map(|p| (p.p50, p.p99));
        assert_eq!(tput, Some((50.0, 50.0)));
    }

    #[test]
    fn summarize_of_nothing_is_empty() {
        let s = summarize(
            &VecDeque::new(),
            0,
            Instant::now(),
            Duration::from_secs(1),
            &mut Vec::new(),
        );
        assert_eq!((s.samples, s.failures, s.error_rate), (0, 0, 0.0));
        assert!(s.ttft.is_none() && s.latency.is_none() && s.throughput.is_none());
    }
}
