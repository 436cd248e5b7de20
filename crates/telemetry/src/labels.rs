//! Label values with a hard bound on cardinality: ids come from the policy, but a metric
//! family must stay small even if a caller manages to get an unexpected string through.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// The label value that stands for every value beyond a dimension's cap.
pub const OVERFLOW: &str = "other";
/// The label value for "not known" (no route, no served provider).
pub const NONE: &str = "none";
/// Longest label value kept, in bytes (cut at a character boundary).
pub const MAX_LABEL_BYTES: usize = 96;

/// One label value, cheap to clone and hash; fixed codes need no allocation.
#[derive(Clone, Debug)]
pub(crate) enum Label {
    Fixed(&'static str),
    Shared(Arc<str>),
}

impl Label {
    pub(crate) fn fixed(s: &'static str) -> Self {
        Self::Fixed(s)
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Fixed(s) => s,
            Self::Shared(s) => s,
        }
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Label {}

impl std::hash::Hash for Label {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

/// The values seen so far in one label dimension (provider, model, route, budget).
#[derive(Debug)]
pub(crate) struct Dimension {
    cap: usize,
    seen: Mutex<HashSet<Arc<str>>>,
    overflow: Label,
}

impl Dimension {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: Mutex::new(HashSet::new()),
            overflow: Label::fixed(OVERFLOW),
        }
    }

    /// The label for `value`: itself (shortened) while the dimension has room, else
    /// [`OVERFLOW`].
    pub(crate) fn label(&self, value: &str) -> Label {
        let value = truncate(value, MAX_LABEL_BYTES);
        if value.is_empty() {
            return Label::fixed(NONE);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = seen.get(value) {
            return Label::Shared(v.clone());
        }
        if seen.len() >= self.cap {
            return self.overflow.clone();
        }
        let v: Arc<str> = Arc::from(value);
        seen.insert(v.clone());
        Label::Shared(v)
    }

    pub(crate) fn label_opt(&self, value: Option<&str>) -> Label {
        match value {
            Some(v) => self.label(v),
            None => Label::fixed(NONE),
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `2xx`, `4xx`, ...: the status class label.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => OVERFLOW,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimension_caps_distinct_values() {
        let d = Dimension::new(3);
        assert_eq!(d.label("a").as_str(), "a");
        assert_eq!(d.label("b").as_str(), "b");
        assert_eq!(d.label("c").as_str(), "c");
        assert_eq!(d.label("d").as_str(), OVERFLOW);
        // Known values keep their label after the cap is reached.
        assert_eq!(d.label("a").as_str(), "a");
        assert_eq!(d.label("").as_str(), NONE);
        assert_eq!(d.label_opt(None).as_str(), NONE);
    }

    #[test]
    fn long_values_are_cut_at_a_char_boundary() {
        let d = Dimension::new(10);
        let long = "é".repeat(100);
        let l = d.label(&long);
        assert!(l.as_str().len() <= MAX_LABEL_BYTES);
        assert!(l.as_str().chars().all(|c| c == 'é'));
        assert_eq!(truncate("abc", 2), "ab");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(504), "5xx");
        assert_eq!(status_class(0), OVERFLOW);
    }
}
