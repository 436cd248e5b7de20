//! The behaviour every backend must share, run against each of them by their test modules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;

use switchyard_core::{Charge, Ledger, LedgerError, Totals};

pub(crate) fn charge(key: &str, cap: f64) -> Charge {
    Charge {
        key: Arc::from(key),
        cap,
        ttl_secs: 3600,
    }
}

pub(crate) async fn totals(ledger: &dyn Ledger, key: &str) -> Totals {
    ledger.totals(&[Arc::from(key)]).await.unwrap()[0]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[track_caller]
pub(crate) fn assert_totals(t: Totals, spent: f64, reserved: f64) {
    assert!(
        close(t.spent, spent) && close(t.reserved, reserved),
        "expected spent {spent} reserved {reserved}, got {t:?}"
    );
}

/// Runs every case, each against a fresh ledger from `make`.
pub(crate) async fn run_all<L, F, Fut>(make: F)
where
    L: Ledger,
    F: Fn() -> Fut,
    Fut: Future<Output = L>,
{
    reserve_then_settle_moves_the_amount(&make().await).await;
    reserve_is_idempotent(&make().await).await;
    settle_is_idempotent(&make().await).await;
    reserve_after_settle_is_a_replay(&make().await).await;
    multi_key_is_all_or_nothing(&make().await).await;
    totals_keep_order_and_default_to_zero(&make().await).await;
    exact_fit_after_rounding(&make().await).await;
    exceeded_names_the_window(&make().await).await;
    settle_of_unknown_id_is_ignored(&make().await).await;
    settle_may_exceed_the_reservation(&make().await).await;
    non_finite_actual_settles_at_the_reservation(&make().await).await;
    duplicate_keys_are_charged_once(&make().await).await;
    no_charges_always_fit(&make().await).await;
    non_finite_amount_never_fits(&make().await).await;
}

async fn reserve_then_settle_moves_the_amount(ledger: &dyn Ledger) {
    let charges = [charge("team:daily", 10.0), charge("team:monthly", 100.0)];
    ledger.reserve("req-1#0", &charges, 2.5).await.unwrap();
    assert_totals(totals(ledger, "team:daily").await, 0.0, 2.5);
    assert_totals(totals(ledger, "team:monthly").await, 0.0, 2.5);
    ledger.settle("req-1#0", 0.75).await.unwrap();
    assert_totals(totals(ledger, "team:daily").await, 0.75, 0.0);
    assert_totals(totals(ledger, "team:monthly").await, 0.75, 0.0);
}

async fn reserve_is_idempotent(ledger: &dyn Ledger) {
    let charges = [charge("k", 10.0)];
    ledger.reserve("r", &charges, 3.0).await.unwrap();
    ledger.reserve("r", &charges, 3.0).await.unwrap();
    // A replay with other numbers changes nothing either: the first reservation wins.
    ledger.reserve("r", &charges, 9.0).await.unwrap();
    assert_totals(totals(ledger, "k").await, 0.0, 3.0);
    // The cap still sees one reservation, not three.
    ledger.reserve("other", &charges, 7.0).await.unwrap();
    assert_totals(totals(ledger, "k").await, 0.0, 10.0);
}

async fn settle_is_idempotent(ledger: &dyn Ledger) {
    let charges = [charge("k", 10.0)];
    ledger.reserve("r", &charges, 3.0).await.unwrap();
    ledger.settle("r", 1.0).await.unwrap();
    ledger.settle("r", 1.0).await.unwrap();
    ledger.settle("r", 5.0).await.unwrap();
    assert_totals(totals(ledger, "k").await, 1.0, 0.0);
}

async fn reserve_after_settle_is_a_replay(ledger: &dyn Ledger) {
    let charges = [charge("k", 10.0)];
    ledger.reserve("r", &charges, 3.0).await.unwrap();
    ledger.settle("r", 1.0).await.unwrap();
    ledger.reserve("r", &charges, 3.0).await.unwrap();
    assert_totals(totals(ledger, "k").await, 1.0, 0.0);
}

async fn multi_key_is_all_or_nothing(ledger: &dyn Ledger) {
    let roomy = charge("roomy", 100.0);
    let tight = charge("tight", 1.0);
    ledger
        .reserve("fill", std::slice::from_ref(&tight), 0.9)
        .await
        .unwrap();
    let err = ledger
        .reserve("both", &[roomy.clone(), tight.clone()], 0.5)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::Exceeded { key, .. } if &**key == "tight"),
        "{err:?}"
    );
    assert_totals(totals(ledger, "roomy").await, 0.0, 0.0);
    assert_totals(totals(ledger, "tight").await, 0.0, 0.9);
    // The refused id was not recorded: the same id may be reserved once it fits.
    ledger.settle("fill", 0.1).await.unwrap();
    ledger.reserve("both", &[roomy, tight], 0.5).await.unwrap();
    assert_totals(totals(ledger, "roomy").await, 0.0, 0.5);
    assert_totals(totals(ledger, "tight").await, 0.1, 0.5);
}

async fn totals_keep_order_and_default_to_zero(ledger: &dyn Ledger) {
    ledger.reserve("r", &[charge("b", 5.0)], 2.0).await.unwrap();
    let keys: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b"), Arc::from("c")];
    let t = ledger.totals(&keys).await.unwrap();
    assert_eq!(t.len(), 3);
    assert_totals(t[0], 0.0, 0.0);
    assert_totals(t[1], 0.0, 2.0);
    assert_totals(t[2], 0.0, 0.0);
    assert!(ledger.totals(&[]).await.unwrap().is_empty());
}

async fn exact_fit_after_rounding(ledger: &dyn Ledger) {
    let charges = [charge("k", 1.0)];
    for i in 0..10 {
        ledger
            .reserve(&format!("r{i}"), &charges, 0.1)
            .await
            .unwrap();
    }
    assert!(ledger.reserve("r10", &charges, 1e-9).await.is_err());
    assert_totals(totals(ledger, "k").await, 0.0, 1.0);
}

async fn exceeded_names_the_window(ledger: &dyn Ledger) {
    let charges = [charge("k", 2.0)];
    ledger.reserve("a", &charges, 0.5).await.unwrap();
    ledger.settle("a", 0.5).await.unwrap();
    ledger.reserve("b", &charges, 1.0).await.unwrap();
    let err = ledger.reserve("c", &charges, 0.75).await.unwrap_err();
    match err {
        LedgerError::Exceeded {
            key,
            spent,
            reserved,
            cap,
        } => {
            assert_eq!(&*key, "k");
            assert!(close(spent, 0.5) && close(reserved, 1.0) && close(cap, 2.0));
        }
        other => panic!("expected Exceeded, got {other:?}"),
    }
}

async fn settle_of_unknown_id_is_ignored(ledger: &dyn Ledger) {
    ledger.reserve("r", &[charge("k", 5.0)], 1.0).await.unwrap();
    ledger.settle("never-reserved", 3.0).await.unwrap();
    assert_totals(totals(ledger, "k").await, 0.0, 1.0);
}

async fn settle_may_exceed_the_reservation(ledger: &dyn Ledger) {
    let charges = [charge("k", 5.0)];
    ledger.reserve("r", &charges, 1.0).await.unwrap();
    ledger.settle("r", 4.5).await.unwrap();
    assert_totals(totals(ledger, "k").await, 4.5, 0.0);
    // What was spent counts against the cap: only 0.5 is left.
    assert!(ledger.reserve("r2", &charges, 0.6).await.is_err());
    ledger.reserve("r3", &charges, 0.5).await.unwrap();
}

async fn non_finite_actual_settles_at_the_reservation(ledger: &dyn Ledger) {
    let charges = [charge("k", 5.0)];
    ledger.reserve("nan", &charges, 1.25).await.unwrap();
    ledger.settle("nan", f64::NAN).await.unwrap();
    ledger.reserve("inf", &charges, 0.5).await.unwrap();
    ledger.settle("inf", f64::INFINITY).await.unwrap();
    ledger.reserve("neg", &charges, 0.5).await.unwrap();
    ledger.settle("neg", -3.0).await.unwrap();
    assert_totals(totals(ledger, "k").await, 1.75, 0.0);
}

async fn duplicate_keys_are_charged_once(ledger: &dyn Ledger) {
    let charges = [charge("k", 1.0), charge("k", 1.0)];
    ledger.reserve("r", &charges, 0.75).await.unwrap();
    assert_totals(totals(ledger, "k").await, 0.0, 0.75);
    ledger.settle("r", 0.5).await.unwrap();
    assert_totals(totals(ledger, "k").await, 0.5, 0.0);
}

async fn no_charges_always_fit(ledger: &dyn Ledger) {
    ledger.reserve("r", &[], 1e6).await.unwrap();
    ledger.settle("r", 1e6).await.unwrap();
}

async fn non_finite_amount_never_fits(ledger: &dyn Ledger) {
    let charges = [charge("k", f64::INFINITY)];
    ledger.reserve("small", &charges, 1.0).await.unwrap();
    assert!(ledger.reserve("nan", &charges, f64::NAN).await.is_err());
    assert!(
        ledger
            .reserve("inf", &charges, f64::INFINITY)
            .await
            .is_err()
    );
    assert_totals(totals(ledger, "k").await, 0.0, 1.0);
}

/// 50 tasks race for one window whose cap fits exactly one reservation: exactly one wins.
pub(crate) async fn one_of_fifty_fits(ledger: Arc<dyn Ledger>) {
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let ledger = ledger.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let charges = [charge("race", 1.0)];
                ledger.reserve(&format!("req-{i}#0"), &charges, 0.6).await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(LedgerError::Exceeded { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_totals(totals(&*ledger, "race").await, 0.0, 0.6);
}
