//! The JSON log line: one object per event, written straight into one buffer.
//!
//! The same shape as tracing-subscriber's flattened JSON format (`timestamp`, `level`, the
//! event's fields with `message` among them, `target`), without its cost: that formatter
//! collects every field into a map of `serde_json::Value`s before writing any, which made the
//! access line one of the larger costs per request (benches/FINDINGS.md).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats each event as one line of JSON.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        // Microseconds, as tracing-subscriber's own timer writes them.
        write!(line, "{:.6}", jiff::Timestamp::now())?;
        line.push_str("\",\"level\":\"");
        line.push_str(event.metadata().level().as_str());
        line.push('"');
        event.record(&mut Fields {
            line: &mut line,
            scratch: String::new(),
        });
        line.push_str(",\"target\":");
        push_json_str(&mut line, event.metadata().target());
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Appends `,"name":value` for each field.
struct Fields<'a> {
    line: &'a mut String,
    /// Reused for values written with `Debug`, which are escaped after formatting.
    scratch: String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        push_json_str(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.line, "{value}");
        } else {
            // JSON has no NaN or infinity; serde_json writes these as null too.
            self.line.push_str("null");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.line, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.scratch.clear();
        let _ = write!(self.scratch, "{value}");
        self.key(field);
        push_json_str(self.line, &self.scratch);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        self.key(field);
        push_json_str(self.line, &self.scratch);
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut rest = s;
    // Every byte that needs escaping is ASCII, so a byte scan finds them on char boundaries.
    while let Some(at) = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < b' ')
    {
        out.push_str(&rest[..at]);
        let c = rest.as_bytes()[at];
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{c:04x}");
            }
        }
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::Value;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn lines(buf: &Buf) -> Vec<String> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn json_strings_are_escaped() {
        for s in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "line\nbreak\r\t",
            "\u{1}\u{1f}",
            "café ☃",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s, "{out}");
        }
    }

    /// Each event is one JSON object with the keys tracing-subscriber's flattened JSON format
    /// writes, every value with its JSON type.
    #[test]
    fn one_json_object_per_event_with_typed_fields() {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .with_writer(buf.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let models = vec!["a\"b", "c"];
            let err = io::Error::other("disk \"full\"");
            tracing::info!(
                target: "switchyard::access",
                request_id = "r-1",
                attempts = 3u64,
                delta = -2i64,
                cost_usd = 0.25f64,
                nan = f64::NAN,
                estimated = true,
                missing = None::<u64>,
                models = ?models,
                error = &err as &(dyn std::error::Error + 'static),
                "request {}", "done"
            );
            tracing::warn!("second\nline");
        });
        let lines = lines(&buf);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "switchyard::access");
        assert_eq!(v["message"], "request done");
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(v["attempts"], 3);
        assert_eq!(v["delta"], -2);
        assert_eq!(v["cost_usd"], 0.25);
        assert_eq!(v["nan"], Value::Null);
        assert_eq!(v["estimated"], true);
        assert!(v.get("missing").is_none(), "{v}");
        assert_eq!(v["models"], r#"["a\"b", "c"]"#);
        assert_eq!(v["error"], "disk \"full\"");
        let ts = v["timestamp"].as_str().unwrap();
        let parsed: jiff::Timestamp = ts.parse().unwrap();
        let age = jiff::Timestamp::now().duration_since(parsed);
        assert!(age.as_secs() < 60, "{ts}");
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-01-01T00:00:00.000000Z".len(),
            "{ts}"
        );
        let w: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(w["level"], "WARN");
        assert_eq!(w["message"], "second\nline");
    }
}
