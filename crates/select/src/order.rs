//! Ordering the endpoints that passed the hard filters: explicit `order`, `sort`, the
//! price-weighted default, `preferred_*` thresholds. Works on borrowed endpoints; nothing here
//! formats strings.

use std::cmp::Ordering;
use std::sync::Arc;

use switchyard_health::{EndpointHealth, Percentiles, Quantile, Summary};
use switchyard_policy::{Endpoint, ProviderPrefs, SortBy, Threshold};
use tokio::time::Instant;

use crate::filter::names_endpoint;

/// Prices below this (USD per million tokens, prompt + completion) count as this for the
/// default balancing weight `1 / price²`, so a free endpoint gets a very large but finite
/// weight instead of a division by zero.
pub const PRICE_EPSILON: f64 = 0.001;

/// One endpoint that passed the filters, on its way to becoming a candidate.
#[derive(Debug)]
pub(crate) struct Slot<'s> {
    pub ep: &'s Arc<Endpoint>,
    /// Position of its model in the fallback order.
    pub model_pos: usize,
    pub health: Option<Arc<EndpointHealth>>,
    pub summary: Option<Arc<Summary>>,
    pub why: &'static str,
    pub score: Option<f64>,
    outage: Option<bool>,
}

impl<'s> Slot<'s> {
    pub(crate) fn new(ep: &'s Arc<Endpoint>, model_pos: usize) -> Self {
        Self {
            ep,
            model_pos,
            health: None,
            summary: None,
            why: "fallback",
            score: None,
            outage: None,
        }
    }

    /// The ordering price: prompt + completion, USD per million tokens.
    pub(crate) fn price(&self) -> f64 {
        self.ep.pricing.prompt + self.ep.pricing.completion
    }

    /// Whether the endpoint had a recent outage; asked once per slot.
    pub(crate) fn outage(&mut self, now: Instant) -> bool {
        match self.outage {
            Some(o) => o,
            None => {
                let o = self.health.as_ref().is_some_and(|h| h.recent_outage(now));
                self.outage = Some(o);
                o
            }
        }
    }

    fn measured(&self, by: Metric) -> Option<&Percentiles> {
        let s = self.summary.as_deref()?;
        match by {
            Metric::Throughput => s.throughput.as_ref(),
            Metric::Latency => s.ttft.as_ref(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    /// Tokens per second, higher is better.
    Throughput,
    /// Time to first token in seconds, lower is better.
    Latency,
}

/// What the ordering needs from the preferences.
#[derive(Debug)]
pub(crate) struct Rules<'a> {
    pub order: Option<&'a [String]>,
    pub sort: Option<SortBy>,
    pub min_throughput: Option<Threshold>,
    pub max_latency: Option<Threshold>,
}

impl<'a> Rules<'a> {
    pub(crate) fn new(prefs: &'a ProviderPrefs) -> Self {
        Self {
            order: prefs.order.as_deref().filter(|o| !o.is_empty()),
            sort: prefs.sort.and_then(|s| s.by()),
            min_throughput: prefs.preferred_min_throughput,
            max_latency: prefs.preferred_max_latency,
        }
    }

    /// Whether any rule reads the live summaries (so they are loaded once, up front).
    pub(crate) fn needs_summaries(&self) -> bool {
        matches!(self.sort, Some(SortBy::Throughput | SortBy::Latency))
            || self.min_throughput.is_some()
            || self.max_latency.is_some()
    }

    /// Whether ordering reads live health at all: only an explicit price sort does not.
    pub(crate) fn reads_health(&self) -> bool {
        self.sort != Some(SortBy::Price) || self.needs_summaries()
    }

    /// Orders one group (one model's endpoints, or all of them): the `order` providers first,
    /// then the rest by `sort`, or by ascending price when `order` is set without `sort`
    /// (OpenRouter turns balancing off then), or by the price-weighted default.
    pub(crate) fn order_group(
        &self,
        slots: &mut [Slot<'_>],
        now: Instant,
        unit: &mut dyn FnMut() -> f64,
    ) {
        let mut listed = 0;
        if let Some(order) = self.order {
            let rank = |s: &Slot<'_>| {
                order
                    .iter()
                    .position(|p| names_endpoint(p, s.ep))
                    .unwrap_or(usize::MAX)
            };
            slots.sort_by_cached_key(rank);
            listed = slots.iter().take_while(|s| rank(s) != usize::MAX).count();
            for s in &mut slots[..listed] {
                s.why = "order";
                s.score = None;
            }
        }
        let rest = &mut slots[listed..];
        match self.sort {
            Some(SortBy::Price) => by_price(rest),
            Some(SortBy::Throughput) => by_metric(rest, Metric::Throughput),
            Some(SortBy::Latency) => by_metric(rest, Metric::Latency),
            None if self.order.is_some() => by_price_outage_last(rest, now),
            None => balanced(rest, now, unit),
        }
    }

    /// Moves every endpoint measured outside a `preferred_*` threshold behind all the others,
    /// keeping relative order on both sides; an endpoint without measurements stays put.
    pub(crate) fn push_down_below_preferred(&self, slots: &mut [Slot<'_>]) {
        if self.min_throughput.is_none() && self.max_latency.is_none() {
            return;
        }
        let fails = |s: &Slot<'_>| {
            let slow = self.min_throughput.is_some_and(|t| {
                s.measured(Metric::Throughput)
                    .is_some_and(|p| cutoffs(t).any(|(q, v)| p.get(q) < v))
            });
            let late = self.max_latency.is_some_and(|t| {
                s.measured(Metric::Latency)
                    .is_some_and(|p| cutoffs(t).any(|(q, v)| p.get(q) > v))
            });
            slow || late
        };
        // A stable sort on a boolean is a stable partition.
        slots.sort_by_cached_key(|s| fails(s));
        for s in slots.iter_mut().rev() {
            if !fails(s) {
                break;
            }
            s.why = "below_preferred";
        }
    }
}

/// The cutoffs a threshold sets: a plain number is p50.
fn cutoffs(t: Threshold) -> impl Iterator<Item = (Quantile, f64)> {
    let all = match t {
        Threshold::Value(v) => [Some(v), None, None, None],
        Threshold::Percentiles { p50, p75, p90, p99 } => [p50, p75, p90, p99],
    };
    [Quantile::P50, Quantile::P75, Quantile::P90, Quantile::P99]
        .into_iter()
        .zip(all)
        .filter_map(|(q, v)| v.map(|v| (q, v)))
}

fn by_price(slots: &mut [Slot<'_>]) {
    for s in slots.iter_mut() {
        s.why = "price";
        s.score = Some(s.price());
    }
    slots.sort_by(|a, b| cmp_score(a, b));
}

fn cmp_score(a: &Slot<'_>, b: &Slot<'_>) -> Ordering {
    a.score.unwrap_or(0.0).total_cmp(&b.score.unwrap_or(0.0))
}

/// Sorts by the measured p50; endpoints with no measurement get the median of the measured
/// ones (a neutral prior: neither favoured nor punished for being new).
fn by_metric(slots: &mut [Slot<'_>], by: Metric) {
    let mut known: Vec<f64> = slots
        .iter()
        .filter_map(|s| s.measured(by).map(|p| p.p50))
        .collect();
    known.sort_by(f64::total_cmp);
    let prior = match known.len() {
        0 => None,
        n if n % 2 == 1 => Some(known[n / 2]),
        n => Some((known[n / 2 - 1] + known[n / 2]) / 2.0),
    };
    let why = match by {
        Metric::Throughput => "throughput",
        Metric::Latency => "latency",
    };
    for s in slots.iter_mut() {
        s.why = why;
        s.score = s.measured(by).map(|p| p.p50).or(prior);
    }
    match by {
        Metric::Throughput => slots.sort_by(|a, b| cmp_score(b, a)),
        Metric::Latency => slots.sort_by(|a, b| cmp_score(a, b)),
    }
}

fn by_price_outage_last(slots: &mut [Slot<'_>], now: Instant) {
    for s in slots.iter_mut() {
        let outage = s.outage(now);
        s.why = if outage { "outage" } else { "price" };
        s.score = Some(s.price());
    }
    slots.sort_by(|a, b| a.outage.cmp(&b.outage).then_with(|| cmp_score(a, b)));
}

/// OpenRouter's default: endpoints with a recent outage last; among the others the first is
/// drawn at random with weight `1 / price²`, and the rest follow cheapest first.
fn balanced(slots: &mut [Slot<'_>], now: Instant, unit: &mut dyn FnMut() -> f64) {
    by_price_outage_last(slots, now);
    let stable = slots.iter().take_while(|s| s.outage == Some(false)).count();
    let pool = &mut slots[..stable];
    if pool.is_empty() {
        return;
    }
    let weight = |s: &Slot<'_>| {
        let p = s.price().max(PRICE_EPSILON);
        1.0 / (p * p)
    };
    let total: f64 = pool.iter().map(weight).sum();
    let target = unit() * total;
    let mut acc = 0.0;
    let mut pick = pool.len() - 1;
    for (i, s) in pool.iter().enumerate() {
        acc += weight(s);
        if target < acc {
            pick = i;
            break;
        }
    }
    let share = weight(&pool[pick]) / total;
    pool[..=pick].rotate_right(1);
    pool[0].why = "weighted";
    pool[0].score = Some(share);
}
