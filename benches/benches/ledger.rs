//! Spend ledger throughput: one reserve + settle pair per iteration, as the budget layer does
//! per attempt, against two windows (daily and monthly). The embedded ledger writes each
//! record to a temp file with one `write(2)` and group-commits every 50 ms; the in-memory
//! ledger is the same bookkeeping without the file, the direct call to compare against.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_benches::or_exit;
use switchyard_core::{Charge, Ledger};
use switchyard_ledger::{EmbeddedLedger, LedgerOptions, MemoryLedger};

/// Threads in the contended run: the machine's two cores.
const THREADS: u64 = 2;

fn charges() -> [Charge; 2] {
    let window = |key: &str| Charge {
        key: Arc::from(key),
        cap: f64::INFINITY,
        ttl_secs: 86_400,
    };
    [
        window("team-a:daily:2026-11-21"),
        window("team-a:monthly:2026-11"),
    ]
}

/// The local ledgers answer with ready futures: poll once, no runtime in the measurement.
fn ready<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => or_exit("poll a local ledger", Err("its future was not ready")),
    }
}

/// One attempt's reservation and settlement; counts failures so a run that measured an
/// error path is rejected.
fn pair(ledger: &dyn Ledger, charges: &[Charge], n: u64, failures: &AtomicU64) {
    let id = format!("gen-{n}#0");
    let reserved = ready(ledger.reserve(&id, charges, black_box(0.01)));
    let settled = ready(ledger.settle(&id, black_box(0.002)));
    if reserved.is_err() || settled.is_err() {
        failures.fetch_add(1, Ordering::Relaxed);
    }
}

fn check(what: &str, failures: &AtomicU64) {
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        or_exit::<(), _>(what, Err(format!("{failed} reserve/settle calls failed")));
    }
}

fn ledger(c: &mut Criterion) {
    let dir = or_exit("create a temp dir", tempfile::tempdir());
    let embedded = or_exit(
        "open the embedded ledger",
        EmbeddedLedger::open(dir.path().join("spend.log"), LedgerOptions::default()),
    );
    let memory = MemoryLedger::new();
    let charges = charges();
    let next = AtomicU64::new(0);
    let failures = AtomicU64::new(0);

    let mut g = c.benchmark_group("ledger_reserve_settle");
    g.throughput(Throughput::Elements(1));
    g.bench_function("memory", |b| {
        b.iter(|| {
            pair(
                &memory,
                &charges,
                next.fetch_add(1, Ordering::Relaxed),
                &failures,
            )
        })
    });
    check("memory ledger", &failures);
    g.bench_function("embedded", |b| {
        b.iter(|| {
            pair(
                &embedded,
                &charges,
                next.fetch_add(1, Ordering::Relaxed),
                &failures,
            )
        })
    });
    check("embedded ledger", &failures);
    // Callers on every core contend for the one lock around check-and-append.
    g.bench_function("embedded_2_threads", |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(THREADS);
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        for _ in 0..per_thread {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            pair(&embedded, &charges, n, &failures);
                        }
                    });
                }
            });
            // Report time per pair over all threads, so throughput reads as pairs per second.
            start
                .elapsed()
                .mul_f64(iters as f64 / (per_thread * THREADS) as f64)
        })
    });
    check("embedded ledger, 2 threads", &failures);
    g.finish();
    or_exit("shut the embedded ledger down", embedded.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = ledger
}
criterion_main!(benches);
