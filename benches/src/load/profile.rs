//! Reading a callgrind profile: instructions per function (self cost), calls per callee, and
//! the shares of the allocator and of locking, to show whether the hot path is allocation-
//! or lock-heavy.
//!
//! The format (valgrind's "Callgrind Format Specification"): `fn=` sets the function that
//! following cost lines belong to; `cfn=` names a callee and the next `calls=` line counts
//! calls to it, and the cost line right after `calls=` is the call's inclusive cost, which is
//! not the caller's own. Names may be compressed: `(id) name` defines, `(id)` refers.

use std::collections::HashMap;

/// A parsed profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Total instructions (`summary:`/`totals:`, else the sum of self costs).
    pub total: u64,
    /// Instructions executed in each function itself.
    pub self_cost: HashMap<String, u64>,
    /// Calls made to each function.
    pub calls: HashMap<String, u64>,
    /// Instructions executed in calls each function made (to functions other than itself).
    pub callee_cost: HashMap<String, u64>,
}

impl Profile {
    /// Instructions in a function and everything it called. Recursion through other
    /// functions is counted more than once, as in `callgrind_annotate --inclusive=yes`.
    pub fn inclusive(&self, name: &str) -> u64 {
        self.self_cost.get(name).copied().unwrap_or(0)
            + self.callee_cost.get(name).copied().unwrap_or(0)
    }
}

/// Strips the `::h0123456789abcdef` hash of legacy Rust symbols.
pub fn clean_name(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

/// Resolves `(id) name` / `(id)` / `name` against the compression table.
fn resolve(spec: &str, table: &mut HashMap<String, String>) -> String {
    let spec = spec.trim();
    if let Some(rest) = spec.strip_prefix('(')
        && let Some((id, name)) = rest.split_once(')')
    {
        let name = name.trim();
        if name.is_empty() {
            return table.get(id).cloned().unwrap_or_default();
        }
        let name = clean_name(name).to_owned();
        table.insert(id.to_owned(), name.clone());
        return name;
    }
    clean_name(spec).to_owned()
}

/// The first event's count in a cost line (`<position> <Ir> ...`), where positions may be
/// absolute, relative (`+n`, `-n`) or `*`.
fn cost_of(line: &str) -> Option<u64> {
    let mut parts = line.split_whitespace();
    let pos = parts.next()?;
    if !pos
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'+' || b == b'-' || b == b'*' || b == b'x')
    {
        return None;
    }
    Some(parts.next().and_then(|c| c.parse().ok()).unwrap_or(0))
}

/// Parses a callgrind output file.
pub fn parse(text: &str) -> Profile {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut p = Profile::default();
    let mut current = String::new();
    let mut callee = String::new();
    let mut after_calls = false;
    let mut declared_total = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("fn=") {
            current = resolve(rest, &mut names);
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            callee = resolve(rest, &mut names);
        } else if let Some(rest) = line.strip_prefix("calls=") {
            let n: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            *p.calls.entry(callee.clone()).or_default() += n;
            after_calls = true;
        } else if let Some(rest) = line
            .strip_prefix("summary:")
            .or_else(|| line.strip_prefix("totals:"))
        {
            // A dump after `callgrind_control -i on` can say `summary: 0` beside the real
            // `totals:`; the larger one is the profile's.
            let n: Option<u64> = rest.split_whitespace().next().and_then(|c| c.parse().ok());
            declared_total = declared_total.max(n);
        } else if let Some(cost) = cost_of(line) {
            if after_calls {
                after_calls = false;
                if callee != current {
                    *p.callee_cost.entry(current.clone()).or_default() += cost;
                }
            } else {
                *p.self_cost.entry(current.clone()).or_default() += cost;
            }
        }
    }
    p.total = declared_total
        .filter(|&n| n > 0)
        .unwrap_or_else(|| p.self_cost.values().sum());
    p
}

/// Function names that are the allocator's own work.
pub fn is_alloc(name: &str) -> bool {
    const ALLOC: [&str; 12] = [
        "malloc",
        "free",
        "realloc",
        "calloc",
        "_int_malloc",
        "_int_free",
        "_int_realloc",
        "malloc_consolidate",
        "cfree",
        "memalign",
        "_int_memalign",
        "posix_memalign",
    ];
    ALLOC.contains(&name)
        || name.starts_with("__libc_malloc")
        || name.starts_with("__libc_free")
        || name.starts_with("__libc_realloc")
        || name.starts_with("tcache_")
        || name.contains("__rust_alloc")
        || name.contains("__rust_dealloc")
        || name.contains("__rust_realloc")
}

/// Function names that take, release or wait on a lock.
pub fn is_lock(name: &str) -> bool {
    const LOCK: [&str; 6] = [
        "pthread_mutex_lock",
        "pthread_mutex_unlock",
        "pthread_rwlock_rdlock",
        "pthread_rwlock_wrlock",
        "pthread_rwlock_unlock",
        "__lll_lock_wait",
    ];
    LOCK.contains(&name)
        || name.contains("::sync::mutex::")
        || name.contains("::sync::rwlock::")
        || name.contains("futex::Mutex")
        || name.contains("futex::RwLock")
        || name.contains("parking_lot")
        || name.contains("lock_contended")
}

/// Inclusive share from which a function counts as an outer layer of the request path (the
/// accept loop, the outermost services): listing them says nothing about where time goes.
pub const OUTER: f64 = 0.6;

/// Whether a function belongs to Switchyard or to the instrumentation it runs on every
/// request (tracing, OpenTelemetry, Prometheus).
pub fn is_attributed(name: &str) -> bool {
    [
        "switchyard",
        "tracing_subscriber",
        "opentelemetry",
        "prometheus",
    ]
    .iter()
    .any(|c| name.contains(c))
}

/// What the report shows of a profile of `requests` requests.
#[derive(Clone, Debug, PartialEq)]
pub struct Digest {
    pub requests: u64,
    pub instructions_per_request: f64,
    /// `malloc` + `calloc` + `realloc` calls per request.
    pub allocs_per_request: f64,
    /// Share of all instructions spent in the allocator.
    pub alloc_share: f64,
    /// Share of all instructions spent in lock code.
    pub lock_share: f64,
    /// Calls per request to lock functions.
    pub lock_calls_per_request: f64,
    /// The most expensive functions by self cost: name, instructions per request, share.
    pub top: Vec<(String, f64, f64)>,
    /// Switchyard's and its instrumentation's functions by inclusive cost, leaving out the
    /// outer layers every request runs inside (share of [`OUTER`] or more): name,
    /// instructions per request, share.
    pub top_inclusive: Vec<(String, f64, f64)>,
}

/// Digests a profile of `requests` requests, keeping the `top` costliest functions.
pub fn digest(p: &Profile, requests: u64, top: usize) -> Digest {
    let per = |n: u64| n as f64 / requests.max(1) as f64;
    let share = |n: u64| {
        if p.total == 0 {
            0.0
        } else {
            n as f64 / p.total as f64
        }
    };
    let calls = |name: &str| p.calls.get(name).copied().unwrap_or(0);
    let allocs = calls("malloc") + calls("calloc") + calls("realloc");
    let alloc_cost: u64 = p
        .self_cost
        .iter()
        .filter(|(n, _)| is_alloc(n))
        .map(|(_, c)| c)
        .sum();
    let lock_cost: u64 = p
        .self_cost
        .iter()
        .filter(|(n, _)| is_lock(n))
        .map(|(_, c)| c)
        .sum();
    let lock_calls: u64 = [
        "pthread_mutex_lock",
        "pthread_rwlock_rdlock",
        "pthread_rwlock_wrlock",
    ]
    .iter()
    .map(|n| calls(n))
    .sum();
    let mut ranked: Vec<(&String, &u64)> = p.self_cost.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let mut names: Vec<&String> = p.self_cost.keys().chain(p.callee_cost.keys()).collect();
    names.sort();
    names.dedup();
    let mut inclusive: Vec<(&String, u64)> = names
        .into_iter()
        .filter(|n| is_attributed(n))
        .map(|n| (n, p.inclusive(n)))
        .filter(|&(_, c)| share(c) < OUTER)
        .collect();
    inclusive.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    Digest {
        requests,
        instructions_per_request: per(p.total),
        allocs_per_request: per(allocs),
        alloc_share: share(alloc_cost),
        lock_share: share(lock_cost),
        lock_calls_per_request: per(lock_calls),
        top: ranked
            .into_iter()
            .take(top)
            .map(|(n, &c)| (n.clone(), per(c), share(c)))
            .collect(),
        top_inclusive: inclusive
            .into_iter()
            .take(top)
            .map(|(n, c)| (n.clone(), per(c), share(c)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SAMPLE: &str = "\
# callgrind format
version: 1
creator: callgrind-3.19.0
events: Ir
summary: 0

ob=(1) /usr/bin/switchyard
fl=(1) src/main.rs
fn=(1) switchyard::main::h0123456789abcdef
10 100
+2 50
cob=(2) /usr/lib/libc.so.6
cfi=(2) ???
cfn=(2) malloc
calls=3 0
* 300
fn=(2)
0 300
fn=(3) hyper::proto::h1::role::parse_headers
5 400
cfn=(4) pthread_mutex_lock
calls=2 0
* 40
fn=(4)
0 40
cfn=(2)
calls=1 0
0 100
fn=(5) realloc
0 10
totals: 1000
";

    #[test]
    fn self_costs_exclude_call_costs_and_names_decompress() {
        let p = parse(SAMPLE);
        assert_eq!(p.total, 1000);
        assert_eq!(p.self_cost["switchyard::main"], 150);
        assert_eq!(p.self_cost["malloc"], 300);
        assert_eq!(p.self_cost["hyper::proto::h1::role::parse_headers"], 400);
        assert_eq!(p.self_cost["pthread_mutex_lock"], 40);
        assert_eq!(p.self_cost["realloc"], 10);
        assert_eq!(p.calls["malloc"], 4);
        assert_eq!(p.calls["pthread_mutex_lock"], 2);
        // main: 150 own + 300 in malloc.
        assert_eq!(p.inclusive("switchyard::main"), 450);
        // parse_headers: 400 own + 40 in the lock; the lock's own malloc call is the lock's.
        assert_eq!(p.inclusive("hyper::proto::h1::role::parse_headers"), 440);
        assert_eq!(p.inclusive("pthread_mutex_lock"), 140);
        assert_eq!(p.inclusive("malloc"), 300);
        assert_eq!(p.inclusive("unknown"), 0);
    }

    #[test]
    fn self_recursion_is_not_double_counted() {
        let p = parse("events: Ir\nfn=(1) f\n1 10\ncfn=(1)\ncalls=1 1\n1 10\n");
        assert_eq!(p.inclusive("f"), 10);
    }

    #[test]
    fn digest_per_request_and_shares() {
        let d = digest(&parse(SAMPLE), 2, 2);
        assert_eq!(d.instructions_per_request, 500.0);
        assert_eq!(d.allocs_per_request, 2.0);
        assert!((d.alloc_share - 0.31).abs() < 1e-9);
        assert!((d.lock_share - 0.04).abs() < 1e-9);
        assert_eq!(d.lock_calls_per_request, 1.0);
        assert_eq!(d.top.len(), 2);
        assert_eq!(d.top[0].0, "hyper::proto::h1::role::parse_headers");
        assert_eq!(d.top[0].1, 200.0);
        assert_eq!(d.top[1].0, "malloc");
        // Only switchyard's own functions, by inclusive cost.
        assert_eq!(
            d.top_inclusive,
            [("switchyard::main".to_owned(), 225.0, 0.45)]
        );
        // The outer layer (all of the cost) is left out; instrumentation is listed.
        let p = parse(
            "events: Ir\nfn=(1) switchyard::serve\n1 70\ncfn=(2) tracing_subscriber::x\ncalls=1 1\n1 30\nfn=(2)\n1 30\n",
        );
        let d = digest(&p, 1, 5);
        assert_eq!(
            d.top_inclusive,
            [("tracing_subscriber::x".to_owned(), 30.0, 0.3)]
        );
        assert!(is_attributed("opentelemetry_sdk::x") && !is_attributed("hyper::x"));
    }

    #[test]
    fn totals_fall_back_to_the_sum_and_names_are_cleaned() {
        let p = parse("events: Ir\nfn=a\n1 5\n2 7\n");
        assert_eq!(p.total, 12);
        assert_eq!(clean_name("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(clean_name("a::hello"), "a::hello");
        assert!(is_alloc("malloc") && is_alloc("__rust_alloc") && !is_alloc("mallocator_x"));
        assert!(is_lock(
            "std::sys::sync::mutex::futex::Mutex::lock_contended"
        ));
        assert!(!is_lock("hyper::proto::h1::role::parse_headers"));
    }
}
