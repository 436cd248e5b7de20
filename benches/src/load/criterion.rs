//! The micro-benchmark table: criterion's own estimates (`target/criterion/**/new/`), with
//! each proxy number set against the direct-call baseline of the same group where there is
//! one.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

/// One benchmark's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub group: String,
    pub function: String,
    /// Median time per iteration, in nanoseconds.
    pub median_ns: f64,
    /// Elements per iteration, when the benchmark declares them.
    pub elements: Option<u64>,
    /// Bytes per iteration, when the benchmark declares them.
    pub bytes: Option<u64>,
}

/// Reads one benchmark directory's `new/benchmark.json` and `new/estimates.json`.
pub fn read_row(dir: &Path) -> Option<Row> {
    let bench: Value =
        serde_json::from_slice(&std::fs::read(dir.join("new/benchmark.json")).ok()?).ok()?;
    let est: Value =
        serde_json::from_slice(&std::fs::read(dir.join("new/estimates.json")).ok()?).ok()?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut function = text(&bench, "function_id").unwrap_or_default();
    if let Some(value) = text(&bench, "value_str") {
        function = format!("{function}/{value}");
    }
    Some(Row {
        group: text(&bench, "group_id")?,
        function,
        median_ns: est.pointer("/median/point_estimate")?.as_f64()?,
        elements: bench
            .pointer("/throughput/Elements")
            .and_then(Value::as_u64),
        bytes: bench.pointer("/throughput/Bytes").and_then(Value::as_u64),
    })
}

/// Every benchmark under `root` whose estimates were written at or after `since` (so
/// results of benchmarks that no longer exist are left out), sorted by group and name.
pub fn collect(root: &Path, since: Option<SystemTime>) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let estimates = dir.join("new/estimates.json");
        if estimates.is_file() {
            let fresh = match since {
                Some(t) => std::fs::metadata(&estimates)?.modified()? >= t,
                None => true,
            };
            if fresh && let Some(row) = read_row(&dir) {
                rows.push(row);
            }
            continue;
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            // criterion's report/, and base/ and change/ copies of old runs.
            if entry.file_type()?.is_dir() && name != "report" && name != "base" && name != "change"
            {
                stack.push(entry.path());
            }
        }
    }
    rows.sort_by(|a, b| (&a.group, &a.function).cmp(&(&b.group, &b.function)));
    Ok(rows)
}

/// A duration in ns as the table shows it.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| group | benchmark | median | per element | vs `direct` |\n|---|---|---:|---:|---:|\n",
    );
    for r in rows {
        let per = r
            .elements
            .filter(|&n| n > 1)
            .map_or_else(|| "".to_owned(), |n| fmt_ns(r.median_ns / n as f64));
        let direct = rows
            .iter()
            .find(|d| d.group == r.group && d.function == "direct")
            .filter(|d| d.function != r.function && d.median_ns > 0.0);
        let ratio = direct.map_or_else(String::new, |d| {
            format!("{:.2}×", r.median_ns / d.median_ns)
        });
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.group,
            r.function,
            fmt_ns(r.median_ns),
            per,
            ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn write_bench(root: &Path, group: &str, function: &str, median: f64, elements: Option<u64>) {
        let dir = root.join(group).join(function).join("new");
        std::fs::create_dir_all(&dir).unwrap();
        let throughput = elements.map_or(Value::Null, |n| serde_json::json!({"Elements": n}));
        std::fs::write(
            dir.join("benchmark.json"),
            serde_json::json!({"group_id": group, "function_id": function, "value_str": null, "throughput": throughput}).to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.join("estimates.json"),
            serde_json::json!({"median": {"point_estimate": median}, "mean": {"point_estimate": median * 1.1}}).to_string(),
        )
        .unwrap();
    }

    #[test]
    fn collects_rows_and_ratios_against_direct() {
        let root = tempfile::tempdir().unwrap();
        write_bench(root.path(), "stack_stream", "direct", 100_000.0, Some(200));
        write_bench(root.path(), "stack_stream", "proxy", 250_000.0, Some(200));
        write_bench(root.path(), "request", "parse", 850.0, None);
        std::fs::create_dir_all(root.path().join("report")).unwrap();
        let rows = collect(root.path(), None).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].group, "request");
        assert_eq!(rows[2].function, "proxy");
        assert_eq!(rows[2].elements, Some(200));
        let md = markdown(&rows);
        assert!(md.contains("| request | parse | 850 ns |  |  |"), "{md}");
        assert!(
            md.contains("| stack_stream | proxy | 250.00 µs | 1.25 µs | 2.50× |"),
            "{md}"
        );
        assert!(
            md.contains("| stack_stream | direct | 100.00 µs | 500 ns |  |"),
            "{md}"
        );
    }

    #[test]
    fn stale_results_are_left_out() {
        let root = tempfile::tempdir().unwrap();
        write_bench(root.path(), "old", "gone", 1.0, None);
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(collect(root.path(), Some(later)).unwrap().is_empty());
        assert_eq!(
            collect(root.path(), Some(SystemTime::UNIX_EPOCH))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(fmt_ns(2_500_000.0), "2.50 ms");
    }
}
