//! [`EmbeddedLedger`]: the default ledger, an append-only log file of our own.
//!
//! One `std::sync::Mutex` guards the in-memory state and the log file together, held only for
//! check-and-append: a reserve checks every window, hands ONE record to the kernel with one
//! `write(2)`, then applies it, so concurrent callers are serialized and what a caller was told
//! is already in the page cache (safe from kill -9). The lock is never held across an await:
//! the trait's futures are ready when returned. Two background threads do the slow parts:
//! - group commit: every `sync_interval`, if anything was appended, `fdatasync` the log (the
//!   lock is only taken to read the dirty flag);
//! - compaction: when the log passes `compact_after_bytes` (or every `compact_interval` if it
//!   has records), swap in a fresh log under the lock together with a clone of the state, then
//!   off the lock write the clone as the snapshot (temp file, fsync, rename) and rename the new
//!   log over the old one. Windows that have ended are dropped then.
//!
//! If a write or an `fdatasync` fails, the ledger stops accepting operations
//! (`LedgerError::Unavailable`): after a failed `fdatasync` the kernel may have dropped the
//! pages, and the file no longer says what callers were told.

mod files;
mod record;

use std::borrow::Cow;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use switchyard_core::{BoxFuture, Charge, Ledger, LedgerError, Totals};

use self::files::Paths;
use self::record::Record;
use crate::state::{State, Verdict};
use crate::{DEFAULT_SETTLED_IDS, amount, now_ms};

/// Tuning of an [`EmbeddedLedger`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerOptions {
    /// Longest time an appended record waits for its `fdatasync` (the power-loss window).
    /// Default 50 ms.
    pub sync_interval: Duration,
    /// Log size, in bytes, that starts a compaction. Default 64 MiB.
    pub compact_after_bytes: u64,
    /// Compaction also runs this often when the log has any records, so ended windows leave
    /// memory even on a quiet proxy. Default 10 minutes.
    pub compact_interval: Duration,
    /// How many settled ids are remembered so that a replayed reserve stays a no-op.
    /// Default 100,000.
    pub settled_ids: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            sync_interval: Duration::from_millis(50),
            compact_after_bytes: 64 << 20,
            compact_interval: Duration::from_secs(600),
            settled_ids: DEFAULT_SETTLED_IDS,
        }
    }
}

/// The durable spend ledger: an append-only, checksummed log file replayed into memory on
/// open, with group commit and background compaction (see the module docs).
///
/// Opening replays the latest snapshot and the logs after it; records torn by a crash are
/// ignored, and reservations left open by a crash are counted as spent. Only one process may
/// have a ledger open (`PATH.lock`).
pub struct EmbeddedLedger {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner {
    paths: Paths,
    options: LedgerOptions,
    locked: Mutex<Locked>,
    signal: Mutex<Signal>,
    wake: Condvar,
    /// One compaction at a time (background thread or [`EmbeddedLedger::compact`]).
    compacting: Mutex<()>,
    lock_file: Mutex<Option<File>>,
    syncs: AtomicU64,
}

/// What the one mutex guards: the state and the log it is written to.
struct Locked {
    state: State,
    /// `None` once shut down or failed.
    log: Option<Arc<File>>,
    /// Why the ledger stopped accepting operations.
    stopped: Option<String>,
    /// Length of the log file: where a failed append is cut back to.
    len: u64,
    header_len: u64,
    generation: u64,
    /// Appended since the last `fdatasync`.
    dirty: bool,
    compact_requested: bool,
}

/// Steps of a compaction, to stop after in crash tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum Stage {
    /// The new log is swapped in; no snapshot yet.
    Swapped,
    /// The snapshot is in place; the new log is not yet renamed over the old one.
    Snapshotted,
}

#[derive(Debug, Default)]
struct Signal {
    stop: bool,
    compact: bool,
}

impl EmbeddedLedger {
    /// Opens (or creates) the ledger whose log is at `path`, replays it, and starts the group
    /// commit and compaction threads. Fails if another process has it open or if its snapshot
    /// or a log header is damaged (refusing beats silently under-counting spend).
    pub fn open(path: impl AsRef<Path>, options: LedgerOptions) -> io::Result<Self> {
        let paths = Paths::new(path.as_ref())?;
        fs::create_dir_all(&paths.dir)?;
        let lock_file = files::lock(&paths)?;
        let (state, recovered) = files::recover(&paths, options.settled_ids)?;

        // Start from a snapshot of what was recovered and an empty log, so the next open
        // replays nothing twice and no torn tail sits in the log we append to.
        let generation = recovered.generation + 1;
        let now = now_ms();
        files::write_snapshot(&paths, &files::snapshot_of(&state, generation, now))?;
        let next = paths.next(generation);
        let (log, header_len) = files::create_log(&paths.dir, &next, generation, now)?;
        fs::rename(&next, &paths.log)?;
        files::sync_dir(&paths.dir)?;
        files::remove_stale(&paths, generation);
        tracing::info!(
            ledger = %paths.log.display(),
            windows = state.windows.len(),
            records = recovered.records,
            damaged = recovered.damaged,
            torn_bytes = recovered.torn_bytes,
            closed_reservations = recovered.closed,
            "spend ledger opened"
        );

        let inner = Arc::new(Inner {
            paths,
            options,
            locked: Mutex::new(Locked {
                state,
                log: Some(Arc::new(log)),
                stopped: None,
                len: header_len,
                header_len,
                generation,
                dirty: false,
                compact_requested: false,
            }),
            signal: Mutex::new(Signal::default()),
            wake: Condvar::new(),
            compacting: Mutex::new(()),
            lock_file: Mutex::new(Some(lock_file)),
            syncs: AtomicU64::new(0),
        });
        let ledger = Self {
            inner: inner.clone(),
            threads: Mutex::new(Vec::new()),
        };
        let sync = inner.clone();
        let compact = inner;
        let handles = [
            std::thread::Builder::new()
                .name("ledger-sync".into())
                .spawn(move || sync.sync_loop())?,
            std::thread::Builder::new()
                .name("ledger-compact".into())
                .spawn(move || compact.compact_loop())?,
        ];
        lock(&ledger.threads).extend(handles);
        Ok(ledger)
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.inner.paths.log
    }

    /// Compacts now: snapshot the state, start a fresh log, drop ended windows. The background
    /// thread does this by itself; this is for tests and operators.
    pub fn compact(&self) -> io::Result<()> {
        self.inner.compact()
    }

    /// Stops the background threads, `fdatasync`s the log one last time and releases the
    /// ledger. Later operations return `LedgerError::Unavailable`. Idempotent; `Drop` calls it.
    pub fn shutdown(&self) -> io::Result<()> {
        self.stop_threads();
        let log = {
            let mut locked = self.inner.lock();
            locked
                .stopped
                .get_or_insert_with(|| "the spend ledger is shut down".to_owned());
            locked.log.take()
        };
        let synced = match log {
            Some(log) => log.sync_data(),
            None => Ok(()),
        };
        lock(&self.inner.lock_file).take();
        synced
    }

    fn stop_threads(&self) {
        lock(&self.inner.signal).stop = true;
        self.inner.wake.notify_all();
        let handles = std::mem::take(&mut *lock(&self.threads));
        for handle in handles {
            // A panicked background thread has nothing left to clean up.
            let _ = handle.join();
        }
    }

    fn reserve_now(&self, id: &str, charges: &[Charge], usd: f64) -> Result<(), LedgerError> {
        let amount = amount::amount(usd);
        let t = now_ms();
        // Encoded before taking the lock: it depends on nothing the lock guards.
        let mut bytes = Vec::with_capacity(96 + id.len() + charges.len() * 48);
        let record = Record::Reserve {
            t,
            id: Cow::Borrowed(id),
            a: amount,
            c: charges
                .iter()
                .map(|c| (Cow::Borrowed(&*c.key), c.ttl_secs))
                .collect(),
        };
        encode(&record, &mut bytes)?;

        let compact = {
            let mut locked = self.inner.lock();
            locked.writable()?;
            if locked.state.check_reserve(id, charges, amount)? == Verdict::Replay {
                return Ok(());
            }
            locked.append(&bytes)?;
            let pairs = charges.iter().map(|c| (&*c.key, c.ttl_secs));
            locked.state.apply_reserve(id, pairs, amount, t);
            locked.wants_compaction(self.inner.options.compact_after_bytes)
        };
        if compact {
            self.inner.request_compaction();
        }
        Ok(())
    }

    fn settle_now(&self, id: &str, usd: f64) -> Result<(), LedgerError> {
        let compact = {
            let mut locked = self.inner.lock();
            locked.writable()?;
            let Some(reserved) = locked.state.open_amount(id) else {
                return Ok(());
            };
            let actual = amount::actual(usd, reserved);
            let mut bytes = Vec::with_capacity(64 + id.len());
            let record = Record::Settle {
                t: now_ms(),
                id: Cow::Borrowed(id),
                a: actual,
            };
            encode(&record, &mut bytes)?;
            locked.append(&bytes)?;
            locked.state.apply_settle(id, actual);
            locked.wants_compaction(self.inner.options.compact_after_bytes)
        };
        if compact {
            self.inner.request_compaction();
        }
        Ok(())
    }

    fn totals_now(&self, keys: &[Arc<str>]) -> Result<Vec<Totals>, LedgerError> {
        // Memory holds what callers were told even after a shutdown or a failed write.
        Ok(self.inner.lock().state.totals(keys))
    }

    /// Simulates kill -9 for tests: the threads stop, the files are closed and the lock is
    /// released without any final `fdatasync`.
    #[cfg(test)]
    fn kill(self) {
        self.stop_threads();
        {
            let mut locked = self.inner.lock();
            locked.stopped = Some("killed".to_owned());
            locked.log = None;
        }
        lock(&self.inner.lock_file).take();
    }
}

fn encode(record: &Record<'_>, bytes: &mut Vec<u8>) -> Result<(), LedgerError> {
    record::encode(record, bytes)
        .map_err(|e| LedgerError::Unavailable(format!("cannot encode a ledger record: {e}")))
}

/// Locks `mutex`, recovering it if a holder panicked: every guarded structure is consistent
/// between statements (appends are applied only after they succeed).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Locked {
    fn writable(&self) -> Result<(), LedgerError> {
        match (&self.log, &self.stopped) {
            (Some(_), None) => Ok(()),
            (_, Some(why)) => Err(LedgerError::Unavailable(why.clone())),
            (None, None) => Err(LedgerError::Unavailable(
                "the spend ledger is closed".to_owned(),
            )),
        }
    }

    /// Hands `bytes` to the kernel in one `write(2)` (O_APPEND). On failure cuts the file
    /// back so the next record does not start inside a partial one.
    fn append(&mut self, bytes: &[u8]) -> Result<(), LedgerError> {
        let Some(log) = self.log.clone() else {
            return Err(LedgerError::Unavailable(
                "the spend ledger is closed".into(),
            ));
        };
        if let Err(e) = (&*log).write_all(bytes) {
            let why = format!("ledger write failed: {e}");
            if let Err(cut) = log.set_len(self.len) {
                self.stop(format!(
                    "{why}; cutting back the partial record failed: {cut}"
                ));
            }
            return Err(LedgerError::Unavailable(why));
        }
        self.len += bytes.len() as u64;
        self.dirty = true;
        Ok(())
    }

    fn stop(&mut self, why: String) {
        tracing::error!(reason = %why, "spend ledger stopped");
        self.stopped.get_or_insert(why);
        self.log = None;
    }

    /// Whether this append should wake the compaction thread (once per compaction).
    fn wants_compaction(&mut self, after_bytes: u64) -> bool {
        if self.len >= after_bytes && !self.compact_requested {
            self.compact_requested = true;
            return true;
        }
        false
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Locked> {
        lock(&self.locked)
    }

    fn request_compaction(&self) {
        lock(&self.signal).compact = true;
        self.wake.notify_all();
    }

    fn sync_loop(&self) {
        let interval = self.options.sync_interval.max(Duration::from_millis(1));
        loop {
            {
                let signal = lock(&self.signal);
                let (signal, _) = self
                    .wake
                    .wait_timeout_while(signal, interval, |s| !s.stop)
                    .unwrap_or_else(|p| p.into_inner());
                if signal.stop {
                    return;
                }
            }
            self.sync_if_dirty();
        }
    }

    /// The group commit: one `fdatasync` for everything appended since the last one.
    fn sync_if_dirty(&self) {
        let log = {
            let mut locked = self.lock();
            if !locked.dirty {
                return;
            }
            locked.dirty = false;
            locked.log.clone()
        };
        let Some(log) = log else { return };
        match log.sync_data() {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.lock().stop(format!("ledger fdatasync failed: {e}")),
        }
    }

    fn compact_loop(&self) {
        let interval = self.options.compact_interval.max(Duration::from_millis(1));
        loop {
            let requested = {
                let signal = lock(&self.signal);
                let (mut signal, _) = self
                    .wake
                    .wait_timeout_while(signal, interval, |s| !s.stop && !s.compact)
                    .unwrap_or_else(|p| p.into_inner());
                if signal.stop {
                    return;
                }
                std::mem::take(&mut signal.compact)
            };
            let has_records = {
                let locked = self.lock();
                locked.len > locked.header_len
            };
            if (requested || has_records)
                && let Err(e) = self.compact()
            {
                // `compact_requested` stays set when the failure came before the swap, so
                // appends do not re-trigger it; the periodic tick retries.
                tracing::warn!(error = %e, ledger = %self.paths.log.display(), "ledger compaction failed");
            }
        }
    }

    fn compact(&self) -> io::Result<()> {
        self.compact_until(None)
    }

    /// Compaction; `crash_after` stops it after a stage, leaving the files as a crash there
    /// would (tests only).
    fn compact_until(&self, crash_after: Option<Stage>) -> io::Result<()> {
        let _one = lock(&self.compacting);
        let generation = {
            let locked = self.lock();
            locked.writable().map_err(io::Error::other)?;
            locked.generation + 1
        };
        let next = self.paths.next(generation);
        let (log, header_len) = files::create_log(&self.paths.dir, &next, generation, now_ms())?;

        // The only part under the lock: drop ended windows, clone the state, swap the log.
        let (snapshot, old) = {
            let mut locked = self.lock();
            if let Err(e) = locked.writable() {
                drop(locked);
                let _ = fs::remove_file(&next);
                return Err(io::Error::other(e));
            }
            let now = now_ms();
            locked.state.expire(now);
            let snapshot = files::snapshot_of(&locked.state, generation, now);
            let old = locked.log.replace(Arc::new(log));
            locked.len = header_len;
            locked.header_len = header_len;
            locked.generation = generation;
            locked.dirty = false;
            locked.compact_requested = false;
            (snapshot, old)
        };

        // Records appended to the old log since its last group commit: make them durable
        // before the snapshot supersedes it (until then, recovery reads the old log).
        if let Some(old) = old
            && let Err(e) = old.sync_data()
        {
            self.lock()
                .stop(format!("ledger fdatasync failed during compaction: {e}"));
            return Err(e);
        }
        if crash_after == Some(Stage::Swapped) {
            return Ok(());
        }
        files::write_snapshot(&self.paths, &snapshot)?;
        if crash_after == Some(Stage::Snapshotted) {
            return Ok(());
        }
        fs::rename(&next, &self.paths.log)?;
        files::sync_dir(&self.paths.dir)?;
        files::remove_stale(&self.paths, generation);
        tracing::debug!(
            ledger = %self.paths.log.display(),
            generation,
            windows = snapshot.windows.len(),
            open = snapshot.open.len(),
            "spend ledger compacted"
        );
        Ok(())
    }
}

impl Ledger for EmbeddedLedger {
    fn reserve<'a>(
        &'a self,
        id: &'a str,
        charges: &'a [Charge],
        amount: f64,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(std::future::ready(self.reserve_now(id, charges, amount)))
    }

    fn settle<'a>(&'a self, id: &'a str, actual: f64) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(std::future::ready(self.settle_now(id, actual)))
    }

    fn totals<'a>(
        &'a self,
        keys: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<Vec<Totals>, LedgerError>> {
        Box::pin(std::future::ready(self.totals_now(keys)))
    }
}

impl Drop for EmbeddedLedger {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, ledger = %self.inner.paths.log.display(), "final ledger fdatasync failed");
        }
    }
}

impl fmt::Debug for EmbeddedLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let locked = self.inner.lock();
        f.debug_struct("EmbeddedLedger")
            .field("path", &self.inner.paths.log)
            .field("options", &self.inner.options)
            .field("generation", &locked.generation)
            .field("log_bytes", &locked.len)
            .field("windows", &locked.state.windows.len())
            .field("open", &locked.state.open.len())
            .field("stopped", &locked.stopped)
            .finish()
    }
}

#[cfg(test)]
mod tests;
