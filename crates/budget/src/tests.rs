#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use jiff::Timestamp;
use serde_json::json;
use switchyard_core::{
    AttemptPrice, BoxFuture, Charge, Failure, Ledger, LedgerError, Pricing, SpendGuard, Totals,
};
use switchyard_policy::{Env, Plan, Snapshot};
use switchyard_wire::{Operation, ParsedRequest};
use tower::{Layer, ServiceExt, service_fn};

use crate::{BudgetLayer, Budgets, Clock};

/// An open reservation: the windows it charges and its amount.
type Reservation = (Vec<Arc<str>>, f64);

/// A plain in-memory ledger with the trait's semantics, enough to test the guard.
#[derive(Default)]
struct TestLedger {
    totals: Mutex<HashMap<Arc<str>, Totals>>,
    open: Mutex<HashMap<String, Reservation>>,
    down: std::sync::atomic::AtomicBool,
}

impl Ledger for TestLedger {
    fn reserve<'a>(
        &'a self,
        id: &'a str,
        charges: &'a [Charge],
        amount: f64,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(LedgerError::Unavailable("down".into()));
            }
            let mut t = self.totals.lock().unwrap();
            for c in charges {
                let x = t.get(&c.key).copied().unwrap_or_default();
                if x.spent + x.reserved + amount > c.cap + 1e-12 {
                    return Err(LedgerError::Exceeded {
                        key: c.key.clone(),
                        spent: x.spent,
                        reserved: x.reserved,
                        cap: c.cap,
                    });
                }
            }
            for c in charges {
                t.entry(c.key.clone()).or_default().reserved += amount;
            }
            self.open.lock().unwrap().insert(
                id.into(),
                (charges.iter().map(|c| c.key.clone()).collect(), amount),
            );
            Ok(())
        })
    }
    fn settle<'a>(&'a self, id: &'a str, actual: f64) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            if let Some((keys, amount)) = self.open.lock().unwrap().remove(id) {
                let mut t = self.totals.lock().unwrap();
                for k in keys {
                    let e = t.entry(k).or_default();
                    e.reserved -= amount;
                    e.spent += actual;
                }
            }
            Ok(())
        })
    }
    fn totals<'a>(
        &'a self,
        keys: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<Vec<Totals>, LedgerError>> {
        Box::pin(async move {
            let t = self.totals.lock().unwrap();
            Ok(keys
                .iter()
                .map(|k| t.get(k).copied().unwrap_or_default())
                .collect())
        })
    }
}

struct TestClock(Mutex<Timestamp>);
impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, p: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            p.display().to_string(),
        ))
    }
}

fn snapshot(budgets: serde_json::Value, fit: bool) -> Arc<Snapshot> {
    let policy = json!({
        "providers": {"p": {"api": "openai", "base_url": "https://p.example.com/v1"}},
        "models": {
            "m": {"endpoints": [{"provider": "p", "pricing": {"prompt": 1.0, "completion": 10.0}, "max_output_tokens": 1000}]},
            "n": {"endpoints": [{"provider": "p", "upstream_model": "n", "pricing": {"prompt": 1.0, "completion": 1.0}}]}
        },
        "routes": {"r": {"match_models": ["m"], "fit_to_budget": fit}},
        "budgets": budgets
    });
    Arc::new(
        switchyard_policy::compile(
            &policy.to_string(),
            switchyard_policy::Format::Json,
            Path::new("."),
            &NoEnv,
        )
        .unwrap()
        .snapshot,
    )
}

struct Fixture {
    ledger: Arc<TestLedger>,
    clock: Arc<TestClock>,
    budgets: Arc<Budgets>,
}

fn fixture(at: &str) -> Fixture {
    let ledger = Arc::new(TestLedger::default());
    let clock = Arc::new(TestClock(Mutex::new(at.parse().unwrap())));
    let budgets = Arc::new(Budgets::new(ledger.clone(), clock.clone(), false));
    Fixture {
        ledger,
        clock,
        budgets,
    }
}

/// Runs the layer once and hands back the guard it installed.
async fn guard(
    f: &Fixture,
    snap: &Arc<Snapshot>,
    body: serde_json::Value,
    tag: Option<&str>,
) -> Option<Arc<dyn SpendGuard>> {
    let svc = BudgetLayer::new(f.budgets.clone()).layer(service_fn(
        |req: Request<Arc<ParsedRequest>>| async move {
            Ok::<_, std::convert::Infallible>(
                req.extensions().get::<Arc<dyn SpendGuard>>().cloned(),
            )
        },
    ));
    let parsed =
        ParsedRequest::parse(Operation::ChatCompletions, Bytes::from(body.to_string())).unwrap();
    let mut req = Request::new(Arc::new(parsed));
    req.headers_mut()
        .insert("x-switchyard-request-id", "gen-test".parse().unwrap());
    if let Some(t) = tag {
        req.headers_mut()
            .insert("x-switchyard-tag", t.parse().unwrap());
    }
    req.extensions_mut().insert(snap.clone());
    let route = snap.route("r").cloned();
    req.extensions_mut().insert(Arc::new(Plan {
        route,
        ..Plan::default()
    }));
    svc.oneshot(req).await.unwrap()
}

fn price(snap: &Snapshot, model: &str) -> AttemptPrice {
    let ep = &snap.model(model).unwrap().endpoints[0];
    AttemptPrice {
        model: ep.model.clone(),
        endpoint: ep.id.clone(),
        pricing: ep.pricing,
        max_output_tokens: ep.max_output_tokens,
    }
}

fn chat(max_tokens: u64) -> serde_json::Value {
    // 400 bytes of messages: an estimate of 100 prompt tokens.
    json!({"model": "m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "x".repeat(360)}]})
}

async fn daily_totals(f: &Fixture, key: &str) -> Totals {
    f.ledger.totals(&[Arc::from(key)]).await.unwrap()[0]
}

#[tokio::test]
async fn no_budgets_no_guard() {
    let f = fixture("2026-11-21T12:00:00Z");
    let snap = snapshot(json!([]), false);
    assert!(guard(&f, &snap, chat(10), None).await.is_none());
}

#[tokio::test]
async fn reserves_the_worst_case_then_settles_the_actual_cost() {
    let f = fixture("2026-11-21T12:00:00Z");
    let snap = snapshot(
        json!([{"id": "all", "scope": "global", "daily_usd": 1.0}]),
        false,
    );
    let g = guard(&f, &snap, chat(500), None).await.unwrap();
    let p = price(&snap, "m");
    assert_eq!(g.reserve(1, &p).await.unwrap(), None);
    let want = Pricing {
        prompt: 1.0,
        completion: 10.0,
        request: 0.0,
    };
    let prompt = ParsedRequest::parse(
        Operation::ChatCompletions,
        Bytes::from(chat(500).to_string()),
    )
    .unwrap()
    .estimated_prompt_tokens();
    let worst = want.cost(prompt, 500);
    let t = daily_totals(&f, "all:daily:2026-11-21").await;
    assert!((t.reserved - worst).abs() < 1e-12, "{t:?} vs {worst}");
    g.settle(1, 0.0012, false).await;
    let t = daily_totals(&f, "all:daily:2026-11-21").await;
    assert!(
        t.reserved.abs() < 1e-12 && (t.spent - 0.0012).abs() < 1e-12,
        "{t:?}"
    );
    // Settling twice changes nothing.
    g.settle(1, 5.0, false).await;
    assert!((daily_totals(&f, "all:daily:2026-11-21").await.spent - 0.0012).abs() < 1e-12);
}

#[tokio::test]
async fn a_reservation_that_does_not_fit_is_402_until_midnight() {
    let f = fixture("2026-11-21T22:00:00Z");
    let snap = snapshot(
        json!([{"id": "team", "scope": {"tag": "team-a"}, "daily_usd": 0.001}]),
        false,
    );
    let g = guard(&f, &snap, chat(500), Some("team-a")).await.unwrap();
    let err = g.reserve(1, &price(&snap, "m")).await.unwrap_err();
    let e = Failure::find(&*err).unwrap().get();
    assert_eq!(e.status(), 402);
    assert_eq!(e.code(), "budget_exceeded");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2 * 3600)));
    let meta = e.metadata().unwrap();
    assert_eq!(meta["budget"], "team");
    assert_eq!(meta["window"], "daily");
    assert!(e.to_string().contains("team"));
    // Another tag is not covered by that budget.
    let other = guard(&f, &snap, chat(500), Some("team-b")).await.unwrap();
    assert_eq!(other.reserve(1, &price(&snap, "m")).await.unwrap(), None);
}

#[tokio::test]
async fn the_body_user_is_the_tag_when_no_header_names_one() {
    let f = fixture("2026-11-21T12:00:00Z");
    let snap = snapshot(
        json!([{"id": "u", "scope": {"tag": "alice"}, "daily_usd": 0.0001}]),
        false,
    );
    let mut body = chat(500);
    body["user"] = json!("alice");
    let g = guard(&f, &snap, body, None).await.unwrap();
    assert!(g.reserve(1, &price(&snap, "m")).await.is_err());
}

#[tokio::test]
async fn model_and_route_scopes_apply_only_to_their_attempts() {
    let f = fixture("2026-11-21T12:00:00Z");
    let snap = snapshot(
        json!([
            {"id": "m-only", "scope": {"model": "m"}, "daily_usd": 0.0001},
            {"id": "route", "scope": {"route": "r"}, "monthly_usd": 100.0}
        ]),
        false,
    );
    let g = guard(&f, &snap, chat(500), None).await.unwrap();
    assert!(
        g.reserve(1, &price(&snap, "m")).await.is_err(),
        "model budget applies to m"
    );
    assert!(
        g.reserve(2, &price(&snap, "n")).await.is_ok(),
        "but not to n"
    );
    let t = daily_totals(&f, "route:monthly:2026-11").await;
    assert!(t.reserved > 0.0, "the route's monthly window was charged");
}

#[tokio::test]
async fn per_request_caps_refuse_or_fit() {
    let f = fixture("2026-11-21T12:00:00Z");
    let snap = snapshot(
        json!([{"id": "cap", "scope": "global", "max_cost_usd": 0.001}]),
        false,
    );
    let g = guard(&f, &snap, chat(500), None).await.unwrap();
    let err = g.reserve(1, &price(&snap, "m")).await.unwrap_err();
    assert_eq!(
        Failure::find(&*err).unwrap().get().metadata().unwrap()["window"],
        "request"
    );

    // With fit_to_budget the request is capped instead: 0.001 USD buys (0.001 - 100e-6) / 10e-6 = 90 tokens.
    let snap = snapshot(
        json!([{"id": "cap", "scope": "global", "max_cost_usd": 0.001}]),
        true,
    );
    let g = guard(&f, &snap, chat(500), None).await.unwrap();
    assert_eq!(g.reserve(1, &price(&snap, "m")).await.unwrap(), Some(90));
    // A token ceiling lowers max_tokens.
    let snap = snapshot(
        json!([{"id": "t", "scope": "global", "max_tokens": 64}]),
        false,
    );
    let g = guard(&f, &snap, chat(500), None).await.unwrap();
    assert_eq!(g.reserve(1, &price(&snap, "m")).await.unwrap(), Some(64));
}

#[tokio::test]
async fn fit_to_budget_caps_to_what_the_window_has_left() {
    let f = fixture("2026-11-21T12:00:00Z");
    let snap = snapshot(
        json!([{"id": "d", "scope": "global", "daily_usd": 0.002}]),
        true,
    );
    let g = guard(&f, &snap, chat(500), None).await.unwrap();
    let cap = g.reserve(1, &price(&snap, "m")).await.unwrap().unwrap();
    assert!((16..500).contains(&cap), "{cap}");
    let t = daily_totals(&f, "d:daily:2026-11-21").await;
    assert!(t.reserved <= 0.002 + 1e-12);
}

#[tokio::test]
async fn windows_roll_over_at_local_midnight() {
    let f = fixture("2026-11-21T22:30:00Z");
    let snap = snapshot(
        json!([{"id": "d", "scope": "global", "daily_usd": 0.01, "timezone": "Europe/Berlin"}]),
        false,
    );
    let g = guard(&f, &snap, chat(500), None).await.unwrap();
    g.reserve(1, &price(&snap, "m")).await.unwrap();
    g.settle(1, 0.0095, false).await;
    // Still the 21st in UTC but already the 22nd in Berlin: the key is the Berlin date.
    assert!((daily_totals(&f, "d:daily:2026-11-21").await.spent - 0.0095).abs() < 1e-12);
    let g2 = guard(&f, &snap, chat(500), None).await.unwrap();
    assert!(
        g2.reserve(1, &price(&snap, "m")).await.is_err(),
        "full for the rest of the Berlin day"
    );
    // Midnight in Berlin (23:00 UTC): a fresh window.
    *f.clock.0.lock().unwrap() = "2026-11-21T23:00:01Z".parse().unwrap();
    let g3 = guard(&f, &snap, chat(500), None).await.unwrap();
    assert!(g3.reserve(1, &price(&snap, "m")).await.is_ok());
    assert!(daily_totals(&f, "d:daily:2026-11-22").await.reserved > 0.0);
}

#[tokio::test]
async fn dropped_requests_release_their_reservations() {
    let f = fixture("2026-11-21T12:00:00Z");
    let snap = snapshot(
        json!([{"id": "all", "scope": "global", "daily_usd": 1.0}]),
        false,
    );
    let g = guard(&f, &snap, chat(500), None).await.unwrap();
    g.reserve(1, &price(&snap, "m")).await.unwrap();
    drop(g);
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let t = daily_totals(&f, "all:daily:2026-11-21").await;
    assert!(t.reserved.abs() < 1e-12 && t.spent == 0.0, "{t:?}");
}

#[tokio::test]
async fn an_unreachable_ledger_fails_closed_by_default_and_open_when_asked() {
    let f = fixture("2026-11-21T12:00:00Z");
    f.ledger
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let snap = snapshot(
        json!([{"id": "all", "scope": "global", "daily_usd": 1.0}]),
        false,
    );
    let g = guard(&f, &snap, chat(500), None).await.unwrap();
    let err = g.reserve(1, &price(&snap, "m")).await.unwrap_err();
    assert_eq!(Failure::find(&*err).unwrap().get().status(), 503);

    let open = Fixture {
        budgets: Arc::new(Budgets::new(f.ledger.clone(), f.clock.clone(), true)),
        ..f
    };
    let g = guard(&open, &snap, chat(500), None).await.unwrap();
    assert!(g.reserve(1, &price(&snap, "m")).await.is_ok());
}

#[tokio::test]
async fn status_lists_every_window() {
    let f = fixture("2026-11-21T12:00:00Z");
    let snap = snapshot(
        json!([{"id": "all", "scope": "global", "daily_usd": 1.0, "monthly_usd": 20.0}]),
        false,
    );
    let g = guard(&f, &snap, chat(500), None).await.unwrap();
    g.reserve(1, &price(&snap, "m")).await.unwrap();
    g.settle(1, 0.25, false).await;
    let v = f.budgets.status_json(&snap).await;
    let rows = v["budgets"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["window"], "daily");
    assert_eq!(rows[0]["spent_usd"], 0.25);
    assert_eq!(rows[0]["remaining_usd"], 0.75);
    assert_eq!(rows[1]["period"], "2026-11");
    assert_eq!(rows[0]["resets_at"], "2026-11-22T00:00:00Z");
}
