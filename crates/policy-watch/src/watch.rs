//! Noticing that the policy file changed: a directory watch (inotify and friends, through
//! `notify`) with a debounce, plus a periodic poll that compares a fingerprint of the file.
//!
//! The watch is on the file's DIRECTORY, not on the file: editors and config tools replace the
//! file by renaming a new one over it, and Kubernetes ConfigMaps swap a `..data` symlink while
//! `policy.json` stays a symlink to `..data/policy.json`. A watch on the file itself follows the
//! old inode and goes deaf after the first such swap.
//!
//! Events only say "look now". What decides whether the policy is reloaded is the fingerprint
//! of the resolved file (mtime, device and inode, size, sha256 of the content): the callback
//! runs only when it differs from the one seen at the previous callback. The poll compares the
//! same fingerprint, so a change is still seen where inotify is missing, exhausted, or blind
//! (a symlink target outside the directory, network file systems).
//!
//! This module does not parse or swap anything: the callback does (the binary passes a closure
//! that calls `Shared::reload()`, which calls [`crate::PolicyStore::reload`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};

/// How the watcher looks for changes.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Quiet time after the last file-system event before the file is checked (default
    /// 200 ms), so that one write, which raises several events, costs one reload. A stream of
    /// events that never goes quiet is still checked after ten times this long.
    pub debounce: Duration,
    /// How often the file is checked with no event at all (default 5 s). Also how often a
    /// lost directory watch is re-armed.
    pub poll_interval: Duration,
    /// Use the platform's file-system notifications (default true). With `false` only the
    /// poll runs.
    pub use_notify: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(200),
            poll_interval: Duration::from_secs(5),
            use_notify: true,
        }
    }
}

/// Why a watcher could not be started. Notifications being unavailable is not one of them:
/// the watcher then polls (see [`WatchHandle::notify_active`]).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path ends in `/`, `..` or is empty, so there is no file name to watch for.
    #[error("policy path \"{}\" has no file name", .0.display())]
    NoFileName(PathBuf),
    /// The directory that holds the file is missing or not a directory.
    #[error("cannot watch directory \"{}\": {source}", dir.display())]
    Directory { dir: PathBuf, source: io::Error },
    /// The watcher thread could not be started.
    #[error("cannot start the policy watcher thread: {0}")]
    Spawn(io::Error),
}

/// A running watcher. Dropping it stops the watch and joins its thread (waiting for a
/// callback in progress to return).
#[derive(Debug)]
pub struct WatchHandle {
    stop: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    state: Arc<State>,
}

impl WatchHandle {
    /// Whether file-system notifications are armed now. False when disabled by
    /// [`WatchOptions::use_notify`], or when the platform refused (the poll still runs, and
    /// the watch is retried every poll interval).
    pub fn notify_active(&self) -> bool {
        self.state.notify_active.load(Ordering::Acquire)
    }

    /// How many times the callback has been called.
    pub fn changes(&self) -> u64 {
        self.state.changes.load(Ordering::Acquire)
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            // Dropped from inside the callback: joining ourselves would never return.
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    notify_active: AtomicBool,
    changes: AtomicU64,
    /// Fingerprints taken after the baseline (tests use it to see that reads do not loop).
    checks: AtomicU64,
}

#[derive(Debug)]
enum Msg {
    Fs(notify::Result<notify::Event>),
    Stop,
}

/// Watches the policy file at `path` and calls `on_change` (on the watcher's own thread)
/// each time the file's fingerprint differs from the one seen at the previous call.
///
/// The fingerprint at the time of this call is the baseline, so call it right after the
/// initial load. A deleted or unreadable file is a change too (the reload then fails and the
/// last good policy stays); so is its return. `on_change` should be quick to return and must
/// not block on the handle being dropped.
///
/// In the binary: `spawn_watcher(path, Arc::new(move || { let _ = shared.reload(); }),
/// WatchOptions::default())`, keeping the handle alive for as long as the server runs.
pub fn spawn_watcher(
    path: PathBuf,
    on_change: Arc<dyn Fn() + Send + Sync>,
    opts: WatchOptions,
) -> Result<WatchHandle, WatchError> {
    let Some(file_name) = path.file_name().map(OsStr::to_os_string) else {
        return Err(WatchError::NoFileName(path));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // notify reports absolute paths; ours must compare equal to them.
    let dir = std::path::absolute(&dir).map_err(|source| WatchError::Directory {
        dir: dir.clone(),
        source,
    })?;
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(WatchError::Directory {
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                dir,
            });
        }
        Err(source) => return Err(WatchError::Directory { dir, source }),
    }
    let file = dir.join(&file_name);

    let (tx, rx) = mpsc::channel();
    let state = Arc::new(State::default());
    // Arm the watch and take the baseline before returning, so that a write made right after
    // this call is never mistaken for the starting point.
    let mut notifier = Notifier {
        enabled: opts.use_notify,
        dir: dir.clone(),
        tx: tx.clone(),
        watcher: None,
        dir_id: None,
        warned: false,
        state: state.clone(),
    };
    notifier.ensure();
    let baseline = Fingerprint::of(&file);

    let worker = Worker {
        file,
        dir,
        file_name,
        debounce: opts.debounce,
        max_delay: opts.debounce.saturating_mul(10),
        poll_interval: opts.poll_interval.max(Duration::from_millis(10)),
        on_change,
        state: state.clone(),
        notifier,
        last: baseline,
    };
    let thread = thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || worker.run(&rx))
        .map_err(WatchError::Spawn)?;
    Ok(WatchHandle {
        stop: tx,
        thread: Some(thread),
        state,
    })
}

/// Owns the notify watcher, re-arming it when it could not be created or when the directory
/// it watched was replaced (its inotify watch died with the old directory).
struct Notifier {
    enabled: bool,
    dir: PathBuf,
    tx: mpsc::Sender<Msg>,
    watcher: Option<RecommendedWatcher>,
    dir_id: Option<FileId>,
    warned: bool,
    state: Arc<State>,
}

impl Notifier {
    fn ensure(&mut self) {
        if !self.enabled {
            return;
        }
        let id = std::fs::metadata(&self.dir).ok().map(|m| FileId::of(&m));
        if self.watcher.is_some() && id.is_some() && id == self.dir_id {
            return;
        }
        // Dropping the old watcher stops its thread before a new one starts.
        self.watcher = None;
        self.dir_id = None;
        self.state.notify_active.store(false, Ordering::Release);
        if id.is_none() {
            return;
        }
        let tx = self.tx.clone();
        let armed = notify::recommended_watcher(move |res| {
            let _ = tx.send(Msg::Fs(res));
        })
        .and_then(|mut w| {
            w.watch(&self.dir, RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match armed {
            Ok(w) => {
                if self.warned {
                    tracing::info!(dir = %self.dir.display(), "policy directory watch restored");
                    self.warned = false;
                }
                self.watcher = Some(w);
                self.dir_id = id;
                self.state.notify_active.store(true, Ordering::Release);
            }
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(
                    dir = %self.dir.display(),
                    error = %e,
                    "cannot watch the policy directory; polling only"
                );
            }
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "policy directory watch still unavailable");
            }
        }
    }
}

struct Worker {
    file: PathBuf,
    dir: PathBuf,
    file_name: std::ffi::OsString,
    debounce: Duration,
    max_delay: Duration,
    poll_interval: Duration,
    on_change: Arc<dyn Fn() + Send + Sync>,
    state: Arc<State>,
    notifier: Notifier,
    last: Fingerprint,
}

/// A burst of events being waited out: when it started, and when to check.
#[derive(Clone, Copy)]
struct Pending {
    first: Instant,
    due: Instant,
}

impl Worker {
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        let mut pending: Option<Pending> = None;
        let mut next_poll = Instant::now() + self.poll_interval;
        loop {
            let wake = pending.map_or(next_poll, |p| p.due.min(next_poll));
            let timeout = wake.saturating_duration_since(Instant::now());
            let nudged = match rx.recv_timeout(timeout) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Fs(Ok(event))) => is_relevant(&event, &self.dir, &self.file_name),
                Ok(Msg::Fs(Err(e))) => {
                    // An overflow or a backend error may hide a change: look anyway.
                    tracing::debug!(error = %e, "policy watch error");
                    true
                }
                Err(RecvTimeoutError::Timeout) => false,
            };
            let now = Instant::now();
            if nudged {
                pending = Some(match pending {
                    None => Pending {
                        first: now,
                        due: now + self.debounce,
                    },
                    // Trailing debounce, but never later than max_delay after the first event.
                    Some(p) => Pending {
                        first: p.first,
                        due: (now + self.debounce).min(p.first + self.max_delay),
                    },
                });
            }
            if pending.is_some_and(|p| now >= p.due) {
                pending = None;
                // The event may have been the directory itself going away: re-arm now
                // rather than a poll interval later.
                self.notifier.ensure();
                self.check("event");
            }
            if now >= next_poll {
                next_poll = now + self.poll_interval;
                self.notifier.ensure();
                self.check("poll");
            }
        }
    }

    fn check(&mut self, trigger: &'static str) {
        self.state.checks.fetch_add(1, Ordering::AcqRel);
        let now = Fingerprint::of(&self.file);
        if now == self.last {
            return;
        }
        tracing::info!(trigger, path = %self.file.display(), "policy file changed; reloading");
        self.last = now;
        self.state.changes.fetch_add(1, Ordering::AcqRel);
        // A panicking callback must not end the watch: the next change deserves its reload.
        if catch_unwind(AssertUnwindSafe(|| (self.on_change)())).is_err() {
            tracing::error!("policy reload callback panicked; still watching");
        }
    }
}

/// Whether an event in the watched directory may have changed what `file_name` resolves to.
fn is_relevant(event: &notify::Event, dir: &Path, file_name: &OsStr) -> bool {
    if event.need_rescan() {
        return true;
    }
    match event.kind {
        // Our own reads (and the reload's) open and close the file: reacting to those
        // would check forever.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    event.paths.iter().any(|p| {
        if p == dir {
            return true;
        }
        match p.file_name() {
            Some(name) if name == file_name => true,
            // Kubernetes' atomic writer: `..data`, `..data_tmp`, `..<timestamp>` dirs.
            Some(name) if name.as_encoded_bytes().starts_with(b"..") => true,
            // The file may resolve through any symlink beside it.
            Some(_) => std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()),
            None => true,
        }
    })
}

/// Identity of a file: a swap to a new file (rename, symlink flip) changes it even when the
/// content and mtime do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    #[cfg(not(unix))]
    fn of(_meta: &std::fs::Metadata) -> Self {
        Self { dev: 0, ino: 0 }
    }
}

/// What the watcher compares: everything that can differ when the policy text does.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fingerprint {
    Readable {
        modified: Option<SystemTime>,
        id: FileId,
        len: u64,
        sha256: [u8; 32],
    },
    /// Missing, a directory, no permission...: the kind, so that one failure turning into
    /// another (or back into a file) is a change.
    Unreadable(io::ErrorKind),
}

impl Fingerprint {
    /// Fingerprints the file `path` resolves to. Metadata and content come from one open
    /// descriptor, so both describe the same file even while it is being swapped.
    fn of(path: &Path) -> Self {
        match Self::read(path) {
            Ok(fp) => fp,
            Err(e) => Self::Unreadable(e.kind()),
        }
    }

    fn read(path: &Path) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let mut hasher = Sha256::new();
        let mut buf = [0u8; 8192];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Self::Readable {
            modified: meta.modified().ok(),
            id: FileId::of(&meta),
            len: meta.len(),
            sha256: hasher.finalize().into(),
        })
    }
}

#[cfg(test)]
mod tests;
