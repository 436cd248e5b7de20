#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Real files in a temp dir, real inotify. Each test waits at most [`LIMIT`] for an outcome.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, Flag, ModifyKind};
use notify::{Event, EventKind};

use super::{Fingerprint, WatchError, WatchHandle, WatchOptions, is_relevant, spawn_watcher};
use crate::PolicyStore;
use crate::tests::policy;

const LIMIT: Duration = Duration::from_secs(2);

/// Short debounce; a poll so slow that anything seen within a test was seen by notify.
fn notify_only() -> WatchOptions {
    WatchOptions {
        debounce: Duration::from_millis(50),
        poll_interval: Duration::from_secs(60),
        use_notify: true,
    }
}

fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + LIMIT;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        sleep(Duration::from_millis(10));
    }
    cond()
}

/// A store loaded from `path` and a watcher whose callback reloads it.
struct Rig {
    store: Arc<PolicyStore>,
    handle: WatchHandle,
}

impl Rig {
    fn new(path: &Path, opts: WatchOptions) -> Self {
        let store = PolicyStore::from_file(switchyard_policy::load_file(path).unwrap(), path);
        let s = store.clone();
        let on_change = Arc::new(move || {
            let _ = s.reload();
        });
        let handle = spawn_watcher(path.to_path_buf(), on_change, opts).unwrap();
        Self { store, handle }
    }

    fn generation(&self) -> u64 {
        self.store.status().generation
    }

    fn price(&self) -> f64 {
        self.store.load().endpoints()[0].pricing.prompt
    }

    fn failures(&self) -> u64 {
        self.store.counters().1
    }

    fn wait_generation(&self, generation: u64) {
        assert!(
            wait_until(|| self.generation() == generation),
            "generation {} never became {generation}; status {}",
            self.generation(),
            self.store.status_json()
        );
    }

    fn wait_failures(&self, at_least: u64) {
        assert!(
            wait_until(|| self.failures() >= at_least),
            "failures stayed {}; status {}",
            self.failures(),
            self.store.status_json()
        );
    }

    fn last_error(&self) -> String {
        self.store.status_json()["last_error"]["messages"].to_string()
    }
}

fn policy_file(dir: &Path, price: f64) -> PathBuf {
    let path = dir.join("policy.json");
    fs::write(&path, policy(price)).unwrap();
    path
}

#[test]
fn in_place_write_is_reloaded_and_a_truncated_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let rig = Rig::new(&path, notify_only());
    assert!(rig.handle.notify_active());

    fs::write(&path, policy(2.0)).unwrap();
    rig.wait_generation(2);
    assert_eq!(rig.price(), 2.0);

    // Half-written: refused, the last good policy stays, the error is shown.
    let failures = rig.failures();
    fs::write(&path, &policy(3.0)[..40]).unwrap();
    rig.wait_failures(failures + 1);
    assert_eq!(rig.generation(), 2);
    assert_eq!(rig.price(), 2.0);
    assert_ne!(rig.last_error(), "null");

    // The next valid write is picked up and clears the error.
    fs::write(&path, policy(3.0)).unwrap();
    rig.wait_generation(3);
    assert_eq!(rig.price(), 3.0);
    assert!(rig.store.status_json()["last_error"].is_null());
}

#[test]
fn rename_over_the_file_is_reloaded_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let rig = Rig::new(&path, notify_only());

    // A watch on the file itself would follow the first inode and miss the second rename.
    for (price, generation) in [(2.0, 2), (3.0, 3)] {
        let tmp = dir.path().join(".policy.json.tmp");
        fs::write(&tmp, policy(price)).unwrap();
        fs::rename(&tmp, &path).unwrap();
        rig.wait_generation(generation);
        assert_eq!(rig.price(), price);
    }
    assert_eq!(rig.failures(), 0);
}

/// Publishes `text` the way Kubernetes' atomic writer updates a ConfigMap volume: a new
/// timestamped directory, then a `..data` symlink renamed over the old one.
fn configmap_publish(dir: &Path, stamp: &str, text: &str) {
    let ts = dir.join(stamp);
    fs::create_dir(&ts).unwrap();
    fs::write(ts.join("policy.json"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    symlink(stamp, &tmp).unwrap();
    fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[test]
fn configmap_data_swaps_are_reloaded_every_time() {
    let dir = tempfile::tempdir().unwrap();
    configmap_publish(dir.path(), "..2026_11_21_1", &policy(1.0));
    let path = dir.path().join("policy.json");
    symlink("..data/policy.json", &path).unwrap();
    let rig = Rig::new(&path, notify_only());

    let stamps = ["..2026_11_21_1", "..2026_11_21_2", "..2026_11_21_3"];
    for (i, pair) in stamps.windows(2).enumerate() {
        let price = 2.0 + i as f64;
        configmap_publish(dir.path(), pair[1], &policy(price));
        fs::remove_dir_all(dir.path().join(pair[0])).unwrap();
        rig.wait_generation(2 + i as u64);
        assert_eq!(rig.price(), price);
    }
    assert!(
        fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn many_rapid_writes_become_one_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let debounce = Duration::from_millis(300);
    let rig = Rig::new(
        &path,
        WatchOptions {
            debounce,
            ..notify_only()
        },
    );

    let started = Instant::now();
    for i in 0..30 {
        fs::write(&path, policy(10.0 + f64::from(i))).unwrap();
    }
    let burst = started.elapsed();
    rig.wait_generation(2);
    // Anything still queued would fire within a debounce of the last event.
    sleep(debounce * 2);
    assert_eq!(rig.price(), 39.0);
    if burst < debounce / 2 {
        assert_eq!(rig.handle.changes(), 1, "burst took {burst:?}");
        assert_eq!(rig.store.counters(), (1, 0));
    } else {
        // The machine stalled mid-burst: still far fewer reloads than writes.
        assert!(rig.handle.changes() <= 3, "burst took {burst:?}");
    }
    assert_eq!(rig.generation(), 2);
}

#[test]
fn a_deleted_file_keeps_the_policy_until_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let rig = Rig::new(&path, notify_only());

    fs::remove_file(&path).unwrap();
    rig.wait_failures(1);
    assert_eq!(rig.generation(), 1);
    assert_eq!(rig.store.load().models().len(), 1);
    assert!(
        rig.last_error().contains("cannot read policy file"),
        "{}",
        rig.last_error()
    );

    fs::write(&path, policy(2.0)).unwrap();
    rig.wait_generation(2);
    assert!(rig.store.status_json()["last_error"].is_null());
}

#[test]
fn an_unreadable_file_keeps_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let rig = Rig::new(&path, notify_only());

    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    // Root (CI containers) reads through mode 000, so there the file is still readable and
    // unchanged: not a change at all. `a_directory_in_place_of_the_file...` covers the
    // unreadable case for root.
    let blocked = fs::File::open(&path).is_err();
    if blocked {
        rig.wait_failures(1);
        assert!(
            rig.last_error().contains("ermission denied"),
            "{}",
            rig.last_error()
        );
    } else {
        sleep(Duration::from_millis(300));
        assert_eq!(
            rig.handle.changes(),
            0,
            "chmod alone is not a content change"
        );
        assert_eq!(rig.failures(), 0);
    }
    assert_eq!(rig.generation(), 1);

    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    if blocked {
        // Readable again with the same content: the error clears, no new generation.
        assert!(wait_until(
            || rig.store.status_json()["last_error"].is_null()
        ));
        assert_eq!(rig.generation(), 1);
    }
    fs::write(&path, policy(2.0)).unwrap();
    rig.wait_generation(2);
}

#[test]
fn a_directory_in_place_of_the_file_is_refused_then_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let rig = Rig::new(&path, notify_only());

    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    rig.wait_failures(1);
    assert!(wait_until(|| rig.last_error().contains("irectory")));
    assert_eq!(rig.generation(), 1);
    assert_eq!(rig.price(), 1.0);

    fs::remove_dir(&path).unwrap();
    fs::write(&path, policy(2.0)).unwrap();
    rig.wait_generation(2);
    assert_eq!(rig.price(), 2.0);
}

#[test]
fn poll_alone_sees_a_change_even_with_the_same_size_and_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let rig = Rig::new(
        &path,
        WatchOptions {
            debounce: Duration::from_millis(50),
            poll_interval: Duration::from_millis(100),
            use_notify: false,
        },
    );
    assert!(!rig.handle.notify_active());

    // Same length, same inode, mtime put back: only the content hash can tell.
    assert_eq!(policy(1.0).len(), policy(2.0).len());
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut &file, policy(2.0).as_bytes()).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);

    rig.wait_generation(2);
    assert_eq!(rig.price(), 2.0);
}

#[test]
fn poll_covers_a_symlink_target_outside_the_watched_directory() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = policy_file(elsewhere.path(), 1.0);
    let path = dir.path().join("policy.json");
    symlink(&target, &path).unwrap();
    let rig = Rig::new(
        &path,
        WatchOptions {
            poll_interval: Duration::from_millis(150),
            ..notify_only()
        },
    );
    assert!(rig.handle.notify_active());

    // No event reaches the watched directory for this write; the poll must find it.
    fs::write(&target, policy(2.0)).unwrap();
    rig.wait_generation(2);
}

#[test]
fn a_replaced_directory_is_watched_again() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("conf");
    fs::create_dir(&dir).unwrap();
    let path = policy_file(&dir, 1.0);
    let rig = Rig::new(&path, notify_only());

    let fresh = root.path().join("conf.new");
    fs::create_dir(&fresh).unwrap();
    policy_file(&fresh, 2.0);
    fs::rename(&dir, root.path().join("conf.old")).unwrap();
    fs::rename(&fresh, &dir).unwrap();
    rig.wait_generation(2);
    assert!(wait_until(|| rig.handle.notify_active()));

    // The poll is a minute away: only a watch on the new directory can see this.
    fs::write(&path, policy(3.0)).unwrap();
    rig.wait_generation(3);
}

#[test]
fn identical_content_rewritten_is_not_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let rig = Rig::new(&path, notify_only());

    let tmp = dir.path().join("policy.json.new");
    fs::write(&tmp, policy(1.0)).unwrap();
    fs::rename(&tmp, &path).unwrap();
    // A new inode, so the watcher calls back; the store sees the same sha256.
    assert!(wait_until(|| rig.store.counters().0 == 1));
    assert_eq!(rig.generation(), 1);
    assert_eq!(rig.handle.changes(), 1);
}

#[test]
fn unrelated_files_in_the_directory_do_not_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let rig = Rig::new(&path, notify_only());

    fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    fs::write(dir.path().join("other.json"), "{}").unwrap();
    // Reading the file (as every check and reload does) raises events too; they must not
    // make the watcher check again, or it would check forever.
    let _ = fs::read(&path).unwrap();
    sleep(Duration::from_millis(300));
    assert_eq!(rig.handle.state.checks.load(Ordering::SeqCst), 0);
    assert_eq!(rig.handle.changes(), 0);
    assert_eq!(rig.store.counters(), (0, 0));
}

#[test]
fn a_panicking_callback_does_not_end_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let store = PolicyStore::from_file(switchyard_policy::load_file(&path).unwrap(), &path);
    let calls = Arc::new(AtomicUsize::new(0));
    let (s, c) = (store.clone(), calls.clone());
    let on_change = Arc::new(move || {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("first reload blows up");
        }
        let _ = s.reload();
    });
    let _handle = spawn_watcher(path.clone(), on_change, notify_only()).unwrap();

    fs::write(&path, policy(2.0)).unwrap();
    assert!(wait_until(|| calls.load(Ordering::SeqCst) == 1));
    assert_eq!(store.status().generation, 1);

    fs::write(&path, policy(3.0)).unwrap();
    assert!(wait_until(|| store.status().generation == 2));
    assert_eq!(store.load().endpoints()[0].pricing.prompt, 3.0);
}

#[test]
fn dropping_the_handle_stops_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let store = PolicyStore::from_file(switchyard_policy::load_file(&path).unwrap(), &path);
    let marker = Arc::new(());
    let (s, m) = (store.clone(), marker.clone());
    let on_change = Arc::new(move || {
        let _keep = &m;
        let _ = s.reload();
    });
    let handle = spawn_watcher(
        path.clone(),
        on_change,
        WatchOptions {
            poll_interval: Duration::from_millis(50),
            ..notify_only()
        },
    )
    .unwrap();
    assert_eq!(Arc::strong_count(&marker), 2);

    drop(handle);
    // The thread has been joined: the callback it owned is gone.
    assert_eq!(Arc::strong_count(&marker), 1);
    fs::write(&path, policy(2.0)).unwrap();
    sleep(Duration::from_millis(300));
    assert_eq!(store.status().generation, 1);
    assert_eq!(store.counters(), (0, 0));
}

#[test]
fn spawn_refuses_paths_it_cannot_watch() {
    let dir = tempfile::tempdir().unwrap();
    let noop: Arc<dyn Fn() + Send + Sync> = Arc::new(|| {});

    let missing = dir.path().join("nope").join("policy.json");
    let err = spawn_watcher(missing, noop.clone(), notify_only()).unwrap_err();
    assert!(matches!(err, WatchError::Directory { .. }), "{err}");

    let file = policy_file(dir.path(), 1.0);
    let err = spawn_watcher(file.join("policy.json"), noop.clone(), notify_only()).unwrap_err();
    assert!(matches!(err, WatchError::Directory { .. }), "{err}");

    let err = spawn_watcher(PathBuf::from("/"), noop.clone(), notify_only()).unwrap_err();
    assert!(matches!(err, WatchError::NoFileName(_)), "{err}");

    // A file that does not exist yet in an existing directory is fine: it may be created.
    let later = dir.path().join("later.json");
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let handle = spawn_watcher(
        later.clone(),
        Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }),
        notify_only(),
    )
    .unwrap();
    fs::write(&later, "{}").unwrap();
    assert!(wait_until(|| calls.load(Ordering::SeqCst) == 1));
    drop(handle);
}

#[test]
fn relevance_filter() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = std::ffi::OsStr::new("policy.json");
    let ev = |kind: EventKind, p: PathBuf| Event::new(kind).add_path(p);
    let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));

    assert!(is_relevant(&ev(data, d.join("policy.json")), d, name));
    assert!(is_relevant(
        &ev(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            d.join("policy.json")
        ),
        d,
        name
    ));
    // Reads (ours, the reload's) must not feed back into more checks.
    for access in [
        AccessKind::Open(AccessMode::Any),
        AccessKind::Close(AccessMode::Read),
        AccessKind::Read,
    ] {
        assert!(!is_relevant(
            &ev(EventKind::Access(access), d.join("policy.json")),
            d,
            name
        ));
    }
    assert!(!is_relevant(&ev(data, d.join("notes.txt")), d, name));
    assert!(is_relevant(
        &ev(EventKind::Create(CreateKind::Any), d.join("..data_tmp")),
        d,
        name
    ));
    assert!(is_relevant(
        &ev(
            EventKind::Create(CreateKind::Folder),
            d.join("..2026_11_21_2")
        ),
        d,
        name
    ));
    symlink("somewhere", d.join("link")).unwrap();
    assert!(is_relevant(&ev(data, d.join("link")), d, name));
    assert!(is_relevant(
        &ev(
            EventKind::Remove(notify::event::RemoveKind::Folder),
            d.to_path_buf()
        ),
        d,
        name
    ));
    assert!(is_relevant(
        &Event::new(EventKind::Other).set_flag(Flag::Rescan),
        d,
        name
    ));
    assert!(!is_relevant(&Event::new(EventKind::Other), d, name));
}

#[test]
fn fingerprint_tells_content_identity_and_failures_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_file(dir.path(), 1.0);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let a = Fingerprint::of(&path);
    assert!(matches!(a, Fingerprint::Readable { .. }));
    assert_eq!(a, Fingerprint::of(&path), "reading does not change it");

    // Same size and mtime, other bytes.
    fs::write(&path, policy(2.0)).unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let b = Fingerprint::of(&path);
    assert_ne!(a, b);

    // Same bytes and mtime, other inode.
    let tmp = dir.path().join("x");
    fs::write(&tmp, policy(2.0)).unwrap();
    fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::rename(&tmp, &path).unwrap();
    assert_ne!(b, Fingerprint::of(&path));

    fs::remove_file(&path).unwrap();
    let missing = Fingerprint::of(&path);
    assert_eq!(
        missing,
        Fingerprint::Unreadable(std::io::ErrorKind::NotFound)
    );
    fs::create_dir(&path).unwrap();
    let directory = Fingerprint::of(&path);
    assert!(matches!(directory, Fingerprint::Unreadable(_)));
    assert_ne!(missing, directory);
}
