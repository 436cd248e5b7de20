//! The embedded ledger's files and recovery.
//!
//! Beside the log `PATH` live `PATH.snap` (the latest snapshot), `PATH.snap.tmp` (a snapshot
//! being written), `PATH.next-<generation>` (a log being rotated in) and `PATH.lock` (held by
//! the process that has the ledger open). Every log starts with a header naming its
//! generation; a snapshot of generation `g` holds everything in logs below `g`. Recovery
//! therefore loads the snapshot and replays, in generation order, every log at or above its
//! generation — whichever step of a compaction a crash interrupted.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Record, Snapshot};
use crate::state::{Open, State, Window};

/// Where the ledger's files are.
#[derive(Clone, Debug)]
pub(crate) struct Paths {
    pub(crate) log: PathBuf,
    pub(crate) snap: PathBuf,
    pub(crate) snap_tmp: PathBuf,
    pub(crate) lock: PathBuf,
    pub(crate) dir: PathBuf,
    file_name: OsString,
}

impl Paths {
    pub(crate) fn new(log: &Path) -> io::Result<Self> {
        let file_name = log
            .file_name()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("ledger path {} names no file", log.display()),
                )
            })?
            .to_owned();
        let dir = match log.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let sibling = |suffix: &str| {
            let mut name = file_name.clone();
            name.push(suffix);
            dir.join(name)
        };
        Ok(Self {
            log: dir.join(&file_name),
            snap: sibling(".snap"),
            snap_tmp: sibling(".snap.tmp"),
            lock: sibling(".lock"),
            dir: dir.clone(),
            file_name,
        })
    }

    /// The name a log of `generation` is created under before it is renamed to the log path.
    pub(crate) fn next(&self, generation: u64) -> PathBuf {
        let mut name = self.file_name.clone();
        name.push(format!(".next-{generation}"));
        self.dir.join(name)
    }

    /// Logs being rotated in, with their generation from the file name.
    fn pending(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let mut prefix = self.file_name.clone();
        prefix.push(".next-");
        let prefix = prefix.to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            if let Ok(generation) = rest.parse::<u64>() {
                found.push((generation, entry.path()));
            }
        }
        Ok(found)
    }
}

/// Makes renames and file creations in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Creates the log of `generation` at `path` (append mode) with its header written and made
/// durable, directory entry included, so records appended to it are as durable as its
/// `fdatasync`s. Returns the file and its length.
pub(crate) fn create_log(
    dir: &Path,
    path: &Path,
    generation: u64,
    now_ms: u64,
) -> io::Result<(File, u64)> {
    // A leftover of a compaction that failed before it swapped this file in; it was never used.
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)?;
    let mut header = Vec::new();
    record::encode(
        &Record::Header {
            generation,
            t: now_ms,
        },
        &mut header,
    )
    .map_err(io::Error::other)?;
    file.write_all(&header)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok((file, header.len() as u64))
}

/// Writes `snapshot` to the temporary name, flushes it, and renames it over the snapshot.
pub(crate) fn write_snapshot(paths: &Paths, snapshot: &Snapshot) -> io::Result<()> {
    let mut bytes = Vec::new();
    record::encode(snapshot, &mut bytes).map_err(io::Error::other)?;
    let mut file = File::create(&paths.snap_tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&paths.snap_tmp, &paths.snap)?;
    sync_dir(&paths.dir)
}

/// The snapshot taken from `state`, with logs of `generation` and later after it.
pub(crate) fn snapshot_of(state: &State, generation: u64, now_ms: u64) -> Snapshot {
    Snapshot {
        generation,
        t: now_ms,
        windows: state
            .windows
            .iter()
            .map(|(k, w)| (k.clone(), w.spent, w.reserved, w.expires_ms))
            .collect(),
        open: state
            .open
            .iter()
            .map(|(id, o)| (id.clone(), o.amount, o.keys.clone()))
            .collect(),
        settled: state.settled_ids().cloned().collect(),
    }
}

/// Reads the snapshot, if there is one. A snapshot is only ever renamed into place complete
/// and flushed, so a damaged one is an error, never silently skipped (that would under-count).
fn read_snapshot(path: &Path) -> io::Result<Option<Snapshot>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let line = bytes
        .strip_suffix(b"\n")
        .and_then(record::unframe)
        .ok_or_else(|| invalid(format!("ledger snapshot {} is damaged", path.display())))?;
    serde_json::from_slice(line)
        .map(Some)
        .map_err(|e| invalid(format!("ledger snapshot {}: {e}", path.display())))
}

fn restore(snapshot: Snapshot, settled_ids: usize) -> State {
    let mut state = State::new(settled_ids);
    for (key, spent, reserved, expires_ms) in snapshot.windows {
        state.windows.insert(
            key,
            Window {
                spent,
                reserved,
                expires_ms,
            },
        );
    }
    for (id, amount, keys) in snapshot.open {
        state.open.insert(id, Open { keys, amount });
    }
    for id in snapshot.settled {
        state.remember_settled(id);
    }
    state
}

/// What replaying the files found, for the log line at open.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// The highest generation seen in the snapshot or any log.
    pub(crate) generation: u64,
    pub(crate) records: u64,
    /// Complete lines whose checksum or JSON did not hold: skipped.
    pub(crate) damaged: u64,
    /// Bytes after the last complete line of a log: a write torn by a crash.
    pub(crate) torn_bytes: u64,
    /// Reservations open at the crash, now counted as spent.
    pub(crate) closed: u64,
}

/// Rebuilds the state from the snapshot and the logs, and closes every reservation that was
/// open: nobody will settle it, and the upstream may have billed it.
pub(crate) fn recover(paths: &Paths, settled_ids: usize) -> io::Result<(State, Recovered)> {
    let mut found = Recovered::default();
    let (mut state, snap_generation) = match read_snapshot(&paths.snap)? {
        Some(snapshot) => {
            let generation = snapshot.generation;
            (restore(snapshot, settled_ids), generation)
        }
        None => (State::new(settled_ids), 0),
    };
    found.generation = snap_generation;

    let mut logs = Vec::new();
    let mut candidates = paths.pending()?;
    candidates.push((0, paths.log.clone()));
    for (_, path) in candidates {
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let (mut lines, complete) = record::lines(&bytes);
        let Some(first) = lines.next() else {
            // Created, header not complete: a crash before the file was ever used.
            continue;
        };
        let header = record::unframe(first).and_then(|p| serde_json::from_slice(p).ok());
        drop(lines);
        let Some(Record::Header { generation, .. }) = header else {
            return Err(invalid(format!(
                "ledger log {} has a damaged header",
                path.display()
            )));
        };
        logs.push((generation, path, bytes, complete));
    }
    logs.sort_by_key(|(generation, ..)| *generation);

    for (generation, path, bytes, complete) in &logs {
        found.generation = found.generation.max(*generation);
        if *generation < snap_generation {
            continue;
        }
        let torn = (bytes.len() - complete) as u64;
        if torn > 0 {
            tracing::warn!(log = %path.display(), torn_bytes = torn, "ledger log ends in a torn record; ignoring it");
        }
        found.torn_bytes += torn;
        let (lines, _) = record::lines(bytes);
        for line in lines.skip(1) {
            let record = record::unframe(line).and_then(|p| serde_json::from_slice(p).ok());
            match record {
                Some(Record::Reserve { t, id, a, c }) => {
                    let pairs = c.iter().map(|(k, ttl)| (&**k, *ttl));
                    state.apply_reserve(&id, pairs, a, t);
                    found.records += 1;
                }
                Some(Record::Settle { id, a, .. }) => {
                    state.apply_settle(&id, a);
                    found.records += 1;
                }
                Some(Record::Header { .. }) | None => {
                    tracing::warn!(log = %path.display(), "ledger log has a damaged record; skipping it");
                    found.damaged += 1;
                }
            }
        }
    }

    found.closed = state.open.len() as u64;
    state.close_open();
    Ok((state, found))
}

/// Removes logs being rotated in below `generation` (the snapshot of `generation` holds them)
/// and a leftover temporary snapshot. Failing to remove one only costs disk space.
pub(crate) fn remove_stale(paths: &Paths, generation: u64) {
    if let Ok(pending) = paths.pending() {
        for (g, path) in pending {
            if g < generation {
                let _ = fs::remove_file(path);
            }
        }
    }
    let _ = fs::remove_file(&paths.snap_tmp);
}

/// The open file of `path` locked for this process, so two proxies never append to one ledger
/// with two different views of it.
pub(crate) fn lock(paths: &Paths) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&paths.lock)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "ledger {} is open in another process (lock {})",
                paths.log.display(),
                paths.lock.display()
            ),
        )),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}
