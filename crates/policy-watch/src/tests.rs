#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use http::Request;
use switchyard_policy::Snapshot;
use tower::{Layer, ServiceExt, service_fn};

use crate::{PinPolicyLayer, PolicyStore};

pub(crate) fn policy(price: f64) -> String {
    format!(
        r#"{{"providers": {{"p": {{"api": "openai", "base_url": "https://api.example.com/v1"}}}},
            "models": {{"m": {{"endpoints": [{{"provider": "p", "pricing": {{"prompt": {price}, "completion": 1}}}}]}}}}}}"#
    )
}

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("policy.json");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn reload_swaps_only_valid_policies_and_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &policy(1.0));
    let store = PolicyStore::from_file(switchyard_policy::load_file(&path).unwrap(), &path);
    let first = store.load();
    assert_eq!(store.status().generation, 1);

    // A broken file: refused, old snapshot in force, error recorded with its field path.
    std::fs::write(
        &path,
        policy(1.0).replace("\"p\", \"pricing\"", "\"q\", \"pricing\""),
    )
    .unwrap();
    let errs = store.reload().unwrap_err();
    assert!(!errs.is_empty());
    assert!(Arc::ptr_eq(&first, &store.load()));
    let status = store.status_json();
    assert_eq!(status["generation"], 1);
    let messages = status["last_error"]["messages"].as_array().unwrap();
    assert!(
        messages.iter().any(|m| m
            .as_str()
            .unwrap()
            .contains("models.m.endpoints[0].provider")),
        "{messages:?}"
    );

    // Truncated and empty files: refused too.
    std::fs::write(&path, &policy(1.0)[..40]).unwrap();
    assert!(store.reload().is_err());
    std::fs::write(&path, "").unwrap();
    assert!(store.reload().is_err());
    assert!(Arc::ptr_eq(&first, &store.load()));

    // The next valid write is picked up and clears the error.
    std::fs::write(&path, policy(2.0)).unwrap();
    assert_eq!(store.reload().unwrap(), 2);
    assert!(!Arc::ptr_eq(&first, &store.load()));
    assert!(store.status_json()["last_error"].is_null());
    assert_eq!(
        store.load().endpoints()[0].pricing.prompt,
        2.0,
        "new prices in force"
    );
}

#[test]
fn identical_content_is_not_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &policy(1.0));
    let store = PolicyStore::from_file(switchyard_policy::load_file(&path).unwrap(), &path);
    assert_eq!(store.reload().unwrap(), 1);
    assert_eq!(store.status().generation, 1);
}

#[test]
fn deleted_file_keeps_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &policy(1.0));
    let store = PolicyStore::from_file(switchyard_policy::load_file(&path).unwrap(), &path);
    std::fs::remove_file(&path).unwrap();
    assert!(store.reload().is_err());
    assert_eq!(store.load().models().len(), 1);
    assert!(store.status().last_error.is_some());
}

#[tokio::test]
async fn pin_policy_puts_the_current_snapshot_in_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &policy(1.0));
    let store = PolicyStore::from_file(switchyard_policy::load_file(&path).unwrap(), &path);
    let svc = PinPolicyLayer::new(store.clone()).layer(service_fn(|req: Request<()>| async move {
        let snap = req.extensions().get::<Arc<Snapshot>>().cloned();
        Ok::<_, std::convert::Infallible>(snap)
    }));
    let pinned = svc.oneshot(Request::new(())).await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&pinned, &store.load()));
}

#[test]
fn reloads_are_counted_and_shown_in_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &policy(1.0));
    let store = PolicyStore::from_file(switchyard_policy::load_file(&path).unwrap(), &path);
    assert_eq!(store.counters(), (0, 0));
    let status = store.status_json();
    assert_eq!(status["reloads_total"], 0);
    assert_eq!(status["reload_failures_total"], 0);

    // Identical content: a successful reload, not a new generation.
    assert_eq!(store.reload().unwrap(), 1);
    std::fs::write(&path, "{").unwrap();
    assert!(store.reload().is_err());
    std::fs::remove_file(&path).unwrap();
    assert!(store.reload().is_err());
    assert_eq!(store.counters(), (1, 2));
    let status = store.status_json();
    assert_eq!(status["reloads_total"], 1);
    assert_eq!(status["reload_failures_total"], 2);
    let messages = status["last_error"]["messages"].as_array().unwrap();
    assert!(
        messages[0]
            .as_str()
            .unwrap()
            .contains("cannot read policy file"),
        "{messages:?}"
    );

    std::fs::write(&path, policy(2.0)).unwrap();
    assert_eq!(store.reload().unwrap(), 2);
    assert_eq!(store.counters(), (2, 2));
    let status = store.status_json();
    assert_eq!(status["generation"], 2);
    assert_eq!(status["reloads_total"], 2);
    assert!(status["last_error"].is_null());

    // Direct installs are not reloads.
    store.install(switchyard_policy::load_file(&path).unwrap());
    assert_eq!(store.counters(), (2, 2));
}

#[test]
fn a_store_without_a_file_counts_reloads_as_no_ops() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &policy(1.0));
    let store = PolicyStore::fixed(switchyard_policy::load_file(&path).unwrap(), "fixed");
    assert_eq!(store.reload().unwrap(), 1);
    assert_eq!(store.counters(), (1, 0));
}
