//! Calendar windows: a day starts at midnight and a month on the 1st, in the budget's time
//! zone (DST-aware), so "daily" means what the finance team means.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// A budget window kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    Daily,
    Monthly,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Monthly => "monthly",
        }
    }
}

/// The window of `kind` that contains `now` in `tz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    /// `2026-11-21` for a day, `2026-11` for a month: part of the ledger key.
    pub label: String,
    /// When the next window starts.
    pub ends_at: Timestamp,
}

pub fn period(kind: WindowKind, now: Timestamp, tz: &TimeZone) -> Period {
    let local = now.to_zoned(tz.clone());
    let date = local.date();
    let (label, next) = match kind {
        WindowKind::Daily => (date.to_string(), date.checked_add(1.day()).unwrap_or(date)),
        WindowKind::Monthly => {
            let first = date.first_of_month();
            (
                format!("{:04}-{:02}", date.year(), date.month()),
                first.checked_add(1.month()).unwrap_or(first),
            )
        }
    };
    Period {
        label,
        ends_at: start_of(next, tz).unwrap_or(now),
    }
}

/// The instant a civil date begins in `tz` (the first valid instant on a DST gap day).
fn start_of(date: Date, tz: &TimeZone) -> Option<Timestamp> {
    let z: Zoned = date.to_zoned(tz.clone()).ok()?;
    Some(z.timestamp())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn utc_days_and_months() {
        let p = period(
            WindowKind::Daily,
            ts("2026-11-21T23:59:59Z"),
            &TimeZone::UTC,
        );
        assert_eq!(p.label, "2026-11-21");
        assert_eq!(p.ends_at, ts("2026-11-22T00:00:00Z"));
        let p = period(
            WindowKind::Monthly,
            ts("2026-12-31T12:00:00Z"),
            &TimeZone::UTC,
        );
        assert_eq!(p.label, "2026-12");
        assert_eq!(p.ends_at, ts("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn local_midnight_decides_the_day() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 23:30 UTC on the 21st is already the 22nd in Berlin (UTC+1 in November).
        let p = period(WindowKind::Daily, ts("2026-11-21T23:30:00Z"), &berlin);
        assert_eq!(p.label, "2026-11-22");
        assert_eq!(p.ends_at, ts("2026-11-22T23:00:00Z"));
        // A DST change day is 23 hours long.
        let p = period(WindowKind::Daily, ts("2026-03-29T12:00:00Z"), &berlin);
        assert_eq!(p.label, "2026-03-29");
        assert_eq!(p.ends_at, ts("2026-03-29T22:00:00Z"));
    }
}
