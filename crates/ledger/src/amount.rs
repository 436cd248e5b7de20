//! USD amounts as integer nano-dollars, the unit every backend stores.
//!
//! Integers make a settlement return `reserved` to exactly zero and make the Redis scripts'
//! arithmetic exact: Lua 5.1 numbers are doubles, exact for integers below 2^53, so every
//! amount, cap and total is clamped to [`MAX_NANOS`] (about $9M, far above any daily or monthly
//! budget). Rounding to the nearest nano-dollar is the cap comparison's epsilon: ten
//! reservations of $0.10 fit a $1.00 cap exactly.

/// Nano-dollars per USD.
const NANOS_PER_USD: f64 = 1e9;

/// The largest amount kept (2^53 - 1 nano-dollars, about $9M): exact as a Lua/JSON number.
pub(crate) const MAX_NANOS: i64 = (1 << 53) - 1;

/// A reservation or settlement amount: negative becomes zero; NaN, infinite and huge amounts
/// become [`MAX_NANOS`] (they fit no cap below $9M).
pub(crate) fn amount(usd: f64) -> i64 {
    if usd.is_nan() {
        return MAX_NANOS;
    }
    clamp((usd * NANOS_PER_USD).round())
}

/// A window's cap: NaN (a policy bug) fails closed as zero; infinite means [`MAX_NANOS`].
pub(crate) fn cap(usd: f64) -> i64 {
    if usd.is_nan() {
        return 0;
    }
    clamp((usd * NANOS_PER_USD).round())
}

/// What a settlement charges: a non-finite `actual` (a usage bug upstream) settles at the
/// reserved worst case rather than at an arbitrary number, so spend is never under-counted.
pub(crate) fn actual(usd: f64, reserved: i64) -> i64 {
    if usd.is_finite() {
        amount(usd)
    } else {
        reserved
    }
}

/// Nano-dollars back to USD.
#[allow(clippy::cast_precision_loss)] // exact: every stored value is below 2^53
pub(crate) fn usd(nanos: i64) -> f64 {
    nanos as f64 / NANOS_PER_USD
}

#[allow(clippy::cast_possible_truncation)] // `as` saturates; the clamp bounds it anyway
fn clamp(rounded: f64) -> i64 {
    if rounded >= MAX_NANOS as f64 {
        MAX_NANOS
    } else if rounded > 0.0 {
        rounded as i64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_the_nearest_nano_dollar() {
        assert_eq!(amount(0.1), 100_000_000);
        assert_eq!(amount(1e-9), 1);
        assert_eq!(amount(0.4e-9), 0);
        assert_eq!(amount(0.6e-9), 1);
        assert_eq!(amount(1.0), 1_000_000_000);
        // 0.1 + 0.2 is 0.30000000000000004 in f64: still 300M nano-dollars.
        assert_eq!(amount(0.1 + 0.2), 300_000_000);
    }

    #[test]
    fn odd_inputs_never_under_count() {
        assert_eq!(amount(-5.0), 0);
        assert_eq!(amount(f64::NAN), MAX_NANOS);
        assert_eq!(amount(f64::INFINITY), MAX_NANOS);
        assert_eq!(amount(f64::NEG_INFINITY), 0);
        assert_eq!(amount(1e300), MAX_NANOS);
        assert_eq!(cap(f64::NAN), 0);
        assert_eq!(cap(f64::INFINITY), MAX_NANOS);
        assert_eq!(cap(-1.0), 0);
        assert_eq!(actual(f64::NAN, 42), 42);
        assert_eq!(actual(f64::INFINITY, 42), 42);
        assert_eq!(actual(2e-9, 42), 2);
    }

    #[test]
    fn converts_back() {
        assert!((usd(amount(12.345_678_901)) - 12.345_678_901).abs() < 1e-12);
        assert_eq!(usd(0), 0.0);
        assert!((usd(MAX_NANOS) - 9_007_199.254_740_99).abs() < 1e-6);
    }
}
