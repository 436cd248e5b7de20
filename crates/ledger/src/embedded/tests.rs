#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use tempfile::TempDir;

use super::*;
use crate::conformance::{self, assert_totals, charge, totals};

fn options() -> LedgerOptions {
    LedgerOptions {
        sync_interval: Duration::from_millis(10),
        ..LedgerOptions::default()
    }
}

fn log_path(dir: &TempDir) -> PathBuf {
    dir.path().join("spend.log")
}

fn open(dir: &TempDir) -> EmbeddedLedger {
    EmbeddedLedger::open(log_path(dir), options()).unwrap()
}

fn log_len(dir: &TempDir) -> u64 {
    fs::metadata(log_path(dir)).unwrap().len()
}

fn generation(ledger: &EmbeddedLedger) -> u64 {
    ledger.inner.lock().generation
}

/// Three reservations on window `k` (cap 10): `a` settled at 0.25, `b` settled at 1.5, `c`
/// (2.0) left open.
async fn write_history(ledger: &EmbeddedLedger) {
    let charges = [charge("k", 10.0)];
    ledger.reserve("a", &charges, 1.0).await.unwrap();
    ledger.settle("a", 0.25).await.unwrap();
    ledger.reserve("b", &charges, 3.0).await.unwrap();
    ledger.settle("b", 1.5).await.unwrap();
    ledger.reserve("c", &charges, 2.0).await.unwrap();
}

/// After a restart: `c` was open, so it counts as spent in full; replays change nothing.
async fn assert_history_after_restart(ledger: &EmbeddedLedger) {
    assert_totals(totals(ledger, "k").await, 3.75, 0.0);
    let charges = [charge("k", 10.0)];
    for id in ["a", "b", "c"] {
        ledger.reserve(id, &charges, 1.0).await.unwrap();
        ledger.settle(id, 9.0).await.unwrap();
    }
    assert_totals(totals(ledger, "k").await, 3.75, 0.0);
}

#[tokio::test]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    conformance::run_all(|| {
        let path = dir
            .path()
            .join(format!("ledger-{}", n.fetch_add(1, Ordering::Relaxed)))
            .join("spend.log");
        async move { EmbeddedLedger::open(path, options()).unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_reservations_one_fits() {
    let dir = tempfile::tempdir().unwrap();
    conformance::one_of_fifty_fits(Arc::new(open(&dir))).await;
    // And the winner is the only reservation on disk.
    let reopened = {
        // `one_of_fifty_fits` dropped its Arc: the ledger is shut down.
        open(&dir)
    };
    assert_totals(totals(&reopened, "race").await, 0.6, 0.0);
}

#[tokio::test]
async fn state_survives_shutdown_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    write_history(&ledger).await;
    ledger.shutdown().unwrap();
    drop(ledger);
    let ledger = open(&dir);
    assert_history_after_restart(&ledger).await;
    // Twice: the open-time snapshot must not double anything.
    drop(ledger);
    assert_history_after_restart(&open(&dir)).await;
}

#[tokio::test]
async fn kill_without_shutdown_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open(
        log_path(&dir),
        LedgerOptions {
            // No group commit before the kill: only the write(2)s stand.
            sync_interval: Duration::from_secs(3600),
            ..LedgerOptions::default()
        },
    )
    .unwrap();
    write_history(&ledger).await;
    assert_eq!(ledger.inner.syncs.load(Ordering::Relaxed), 0);
    ledger.kill();
    assert_history_after_restart(&open(&dir)).await;
}

#[tokio::test]
async fn torn_final_record_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    write_history(&ledger).await;
    ledger.kill();
    // Cut the last record (reserve `c`) short, as a crash mid-write would.
    let len = log_len(&dir);
    let file = fs::OpenOptions::new()
        .write(true)
        .open(log_path(&dir))
        .unwrap();
    file.set_len(len - 5).unwrap();
    drop(file);

    let ledger = open(&dir);
    // `c` never happened: only the settled spend remains.
    assert_totals(totals(&ledger, "k").await, 1.75, 0.0);
    // The torn bytes do not swallow what comes next.
    let charges = [charge("k", 10.0)];
    ledger.reserve("d", &charges, 1.0).await.unwrap();
    ledger.settle("d", 0.5).await.unwrap();
    ledger.kill();
    let ledger = open(&dir);
    assert_totals(totals(&ledger, "k").await, 2.25, 0.0);
}

#[tokio::test]
async fn damaged_record_in_the_middle_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let charges = [charge("k", 10.0)];
    ledger.reserve("a", &charges, 1.0).await.unwrap();
    ledger.reserve("b", &charges, 2.0).await.unwrap();
    ledger.settle("b", 0.5).await.unwrap();
    ledger.kill();

    let mut bytes = fs::read(log_path(&dir)).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let line_a = text
        .lines()
        .position(|l| l.contains(r#""id":"a""#))
        .unwrap();
    let offset: usize = text.lines().take(line_a).map(|l| l.len() + 1).sum();
    bytes[offset + 20] ^= 0x20;
    fs::write(log_path(&dir), bytes).unwrap();

    let ledger = open(&dir);
    // `a` is lost (its record is unreadable), `b` after it still counts.
    assert_totals(totals(&ledger, "k").await, 0.5, 0.0);
}

#[tokio::test]
async fn damaged_snapshot_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    write_history(&ledger).await;
    ledger.shutdown().unwrap();
    drop(ledger);
    let snap = dir.path().join("spend.log.snap");
    let mut bytes = fs::read(&snap).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&snap, bytes).unwrap();
    let err = EmbeddedLedger::open(log_path(&dir), options()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[test]
fn a_second_open_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir);
    let err = EmbeddedLedger::open(log_path(&dir), options()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    drop(first);
    EmbeddedLedger::open(log_path(&dir), options()).unwrap();
}

#[test]
fn a_path_without_a_file_name_is_refused() {
    let err = EmbeddedLedger::open("/", options()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}

#[tokio::test]
async fn creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("spend.log");
    let ledger = EmbeddedLedger::open(&path, options()).unwrap();
    ledger.reserve("r", &[charge("k", 1.0)], 0.5).await.unwrap();
    assert_eq!(ledger.path(), path);
    assert!(path.exists());
}

const CHILD_ENV: &str = "SWITCHYARD_LEDGER_CRASH_CHILD";

/// Runs twice: as the test, it re-runs this test binary as a child with `CHILD_ENV` set; as
/// the child, it writes to the ledger and aborts (no unwinding, no Drop, no fdatasync).
#[test]
fn child_process_abort_loses_nothing() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        let ledger = EmbeddedLedger::open(
            PathBuf::from(path),
            LedgerOptions {
                sync_interval: Duration::from_secs(3600),
                ..LedgerOptions::default()
            },
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(write_history(&ledger));
        std::process::abort();
    }

    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "embedded::tests::child_process_abort_loses_nothing",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, log_path(&dir))
        .status()
        .unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(6),
            "the child must die of SIGABRT: {status:?}"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(assert_history_after_restart(&open(&dir)));
}

#[tokio::test]
async fn compaction_keeps_state_and_shrinks_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let charges = [charge("day", 1e6), charge("month", 1e6)];
    for i in 0..500 {
        let id = format!("req-{i}#0");
        ledger.reserve(&id, &charges, 0.01).await.unwrap();
        ledger.settle(&id, 0.002).await.unwrap();
    }
    ledger.reserve("still-open", &charges, 0.5).await.unwrap();
    let before = log_len(&dir);
    assert!(before > 50_000, "log is {before} bytes");
    let generation_before = generation(&ledger);

    ledger.compact().unwrap();
    let after = log_len(&dir);
    assert!(after < 200, "log is {after} bytes after compaction");
    assert_eq!(generation(&ledger), generation_before + 1);
    assert_totals(totals(&ledger, "day").await, 1.0, 0.5);
    assert_totals(totals(&ledger, "month").await, 1.0, 0.5);
    // Open reservations stay open across a compaction, and replays stay replays.
    ledger.settle("still-open", 0.25).await.unwrap();
    ledger.reserve("req-7#0", &charges, 0.01).await.unwrap();
    assert_totals(totals(&ledger, "day").await, 1.25, 0.0);
    // Nothing is left of the rotation but the log, the snapshot and the lock.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["spend.log", "spend.log.lock", "spend.log.snap"]);

    ledger.kill();
    let ledger = open(&dir);
    assert_totals(totals(&ledger, "day").await, 1.25, 0.0);
    ledger.reserve("req-3#0", &charges, 0.01).await.unwrap();
    assert_totals(totals(&ledger, "day").await, 1.25, 0.0);
}

#[tokio::test]
async fn compaction_drops_ended_windows() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let ended = Charge {
        key: Arc::from("yesterday"),
        cap: 10.0,
        ttl_secs: 0,
    };
    let ended_but_open = Charge {
        key: Arc::from("yesterday-open"),
        cap: 10.0,
        ttl_secs: 0,
    };
    ledger
        .reserve("a", &[ended, charge("today", 10.0)], 1.0)
        .await
        .unwrap();
    ledger.settle("a", 0.5).await.unwrap();
    ledger.reserve("b", &[ended_but_open], 1.0).await.unwrap();
    ledger.compact().unwrap();
    {
        let locked = ledger.inner.lock();
        assert!(!locked.state.windows.contains_key("yesterday"));
        assert!(locked.state.windows.contains_key("yesterday-open"));
        assert!(locked.state.windows.contains_key("today"));
    }
    assert_totals(totals(&ledger, "yesterday").await, 0.0, 0.0);
    assert_totals(totals(&ledger, "today").await, 0.5, 0.0);
    ledger.kill();
    // Not in the snapshot either.
    let snapshot = fs::read_to_string(dir.path().join("spend.log.snap")).unwrap();
    assert!(!snapshot.contains("\"yesterday\""), "{snapshot}");
    let ledger = open(&dir);
    assert_totals(totals(&ledger, "yesterday-open").await, 1.0, 0.0);
}

#[tokio::test]
async fn background_compaction_starts_past_the_size_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open(
        log_path(&dir),
        LedgerOptions {
            compact_after_bytes: 4096,
            ..options()
        },
    )
    .unwrap();
    let start = generation(&ledger);
    let charges = [charge("k", 1e6)];
    for i in 0..100 {
        let id = format!("r{i}");
        ledger.reserve(&id, &charges, 0.01).await.unwrap();
        ledger.settle(&id, 0.01).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation(&ledger) == start {
        assert!(Instant::now() < deadline, "no compaction happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_totals(totals(&ledger, "k").await, 1.0, 0.0);
    ledger.kill();
    assert_totals(totals(&open(&dir), "k").await, 1.0, 0.0);
}

#[tokio::test]
async fn periodic_compaction_runs_when_the_log_has_records() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = EmbeddedLedger::open(
        log_path(&dir),
        LedgerOptions {
            compact_interval: Duration::from_millis(20),
            ..options()
        },
    )
    .unwrap();
    let start = generation(&ledger);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(generation(&ledger), start, "an empty log is not compacted");
    ledger.reserve("r", &[charge("k", 1.0)], 0.5).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation(&ledger) == start {
        assert!(Instant::now() < deadline, "no compaction happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn crash_during_compaction(stage: Stage) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let charges = [charge("k", 10.0)];
    ledger.reserve("a", &charges, 1.0).await.unwrap();
    ledger.settle("a", 0.25).await.unwrap();
    ledger.reserve("b", &charges, 3.0).await.unwrap();
    ledger.inner.compact_until(Some(stage)).unwrap();
    // These land in the new log, which is still at its `.next-N` name.
    ledger.settle("b", 1.5).await.unwrap();
    ledger.reserve("c", &charges, 2.0).await.unwrap();
    ledger.kill();
    let ledger = open(&dir);
    assert_history_after_restart(&ledger).await;
    // Recovery cleaned up: one log, one snapshot.
    assert!(
        !dir.path()
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().contains(".next-") })
    );
    drop(ledger);
    assert_history_after_restart(&open(&dir)).await;
}

#[tokio::test]
async fn crash_after_the_log_swap_loses_nothing() {
    crash_during_compaction(Stage::Swapped).await;
}

#[tokio::test]
async fn crash_after_the_snapshot_loses_nothing() {
    crash_during_compaction(Stage::Snapshotted).await;
}

#[tokio::test]
async fn a_compaction_after_an_interrupted_one_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let charges = [charge("k", 10.0)];
    ledger.reserve("a", &charges, 1.0).await.unwrap();
    ledger.inner.compact_until(Some(Stage::Swapped)).unwrap();
    ledger.settle("a", 0.5).await.unwrap();
    ledger.compact().unwrap();
    ledger.reserve("b", &charges, 1.0).await.unwrap();
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["spend.log", "spend.log.lock", "spend.log.snap"]);
    ledger.kill();
    assert_totals(totals(&open(&dir), "k").await, 1.5, 0.0);
}

#[tokio::test]
async fn group_commit_syncs_only_when_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let syncs = || ledger.inner.syncs.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(syncs(), 0, "nothing appended, nothing to sync");

    let charges = [charge("k", 1e6)];
    for i in 0..2000 {
        let id = format!("r{i}");
        ledger.reserve(&id, &charges, 0.01).await.unwrap();
        ledger.settle(&id, 0.01).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while ledger.inner.lock().dirty || syncs() == 0 {
        assert!(Instant::now() < deadline, "the log was never synced");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A sync that had already taken the dirty flag may still be finishing: let it land
    // (two intervals) before counting, so a busy machine cannot make this flaky.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_burst = syncs();
    assert!(
        after_burst < 400,
        "4000 appends took {after_burst} fdatasyncs: not grouped"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(syncs(), after_burst, "idle ledger kept syncing");
}

#[tokio::test]
async fn operations_after_shutdown_are_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let charges = [charge("k", 10.0)];
    ledger.reserve("a", &charges, 1.0).await.unwrap();
    ledger.shutdown().unwrap();
    ledger.shutdown().unwrap();
    assert!(matches!(
        ledger.reserve("b", &charges, 1.0).await,
        Err(LedgerError::Unavailable(_))
    ));
    assert!(matches!(
        ledger.settle("a", 1.0).await,
        Err(LedgerError::Unavailable(_))
    ));
    assert!(ledger.compact().is_err());
    // What callers were told stays readable.
    assert_totals(totals(&ledger, "k").await, 0.0, 1.0);
    // And the lock is released.
    drop(open(&dir));
}

#[test]
fn log_records_are_one_checksummed_json_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        ledger
            .reserve("req-1#0", &[charge("team-a:daily:2026-11-21", 5.0)], 0.5)
            .await
            .unwrap();
        ledger.settle("req-1#0", 0.125).await.unwrap();
    });
    let text = fs::read_to_string(log_path(&dir)).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_slice(record::unframe(line.as_bytes()).unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{text}");
    assert_eq!(records[0]["op"], "log");
    assert_eq!(records[1]["op"], "r");
    assert_eq!(records[1]["id"], "req-1#0");
    assert_eq!(records[1]["a"], 500_000_000);
    assert_eq!(records[1]["c"][0][0], "team-a:daily:2026-11-21");
    assert_eq!(records[1]["c"][0][1], 3600);
    assert_eq!(records[2]["op"], "s");
    assert_eq!(records[2]["a"], 125_000_000);
    assert!(records[2]["t"].as_u64().unwrap() > 1_600_000_000_000);
}
