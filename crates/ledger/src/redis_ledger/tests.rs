//! Against a real `redis-server` started per test on a free loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::*;
use crate::conformance::{self, assert_totals, charge, totals};

const SKIP_ENV: &str = "SWITCHYARD_SKIP_REDIS";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` child process, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server, or returns `None` when `redis-server` is missing and
    /// `SWITCHYARD_SKIP_REDIS=1` says that is fine. Missing otherwise fails the test.
    fn start() -> Option<Self> {
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
                    eprintln!("redis-server not found; skipping ({SKIP_ENV}=1)");
                    return None;
                }
                panic!(
                    "redis-server is not on PATH: the Redis ledger tests need a real server. \
                     Install the Debian package `redis-server` (CI does), or set \
                     {SKIP_ENV}=1 to skip these tests."
                );
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ledger(server: &RedisServer, prefix: &str) -> RedisLedger {
    RedisLedger::new(
        &server.url(),
        RedisOptions {
            prefix: prefix.to_owned(),
            ..RedisOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn conformance_suite() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let n = AtomicUsize::new(0);
    // One server, a fresh prefix per case: the cases cannot see each other's keys.
    conformance::run_all(|| {
        let prefix = format!("t{}:", n.fetch_add(1, Ordering::Relaxed));
        let ledger = ledger(&server, &prefix);
        async move { ledger }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_reservations_one_fits() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    conformance::one_of_fifty_fits(Arc::new(ledger(&server, "race:"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_budget() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = ledger(&server, "shared:");
    let b = ledger(&server, "shared:");
    let charges = [charge("team:daily", 1.0)];
    a.reserve("a#0", &charges, 0.75).await.unwrap();
    assert!(matches!(
        b.reserve("b#0", &charges, 0.5).await,
        Err(LedgerError::Exceeded { .. })
    ));
    // A settlement through one replica is seen, and replayed, by the other.
    b.settle("a#0", 0.25).await.unwrap();
    a.settle("a#0", 0.9).await.unwrap();
    b.reserve("b#0", &charges, 0.5).await.unwrap();
    assert_totals(totals(&a, "team:daily").await, 0.25, 0.5);
    // Another prefix is another deployment.
    let other = ledger(&server, "other:");
    assert_totals(totals(&other, "team:daily").await, 0.0, 0.0);
}

#[tokio::test]
async fn keys_carry_the_prefix_and_ttls() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ledger = RedisLedger::new(
        &server.url(),
        RedisOptions {
            prefix: "sy:".to_owned(),
            reservation_ttl: Duration::from_secs(120),
            ..RedisOptions::default()
        },
    )
    .unwrap();
    let mut raw = server.raw().await;
    let window = Charge {
        key: Arc::from("team:daily:2026-11-21"),
        cap: 5.0,
        ttl_secs: 600,
    };
    ledger
        .reserve("req#0", std::slice::from_ref(&window), 1.5)
        .await
        .unwrap();

    let win_ttl: i64 = redis::cmd("TTL")
        .arg("sy:win:team:daily:2026-11-21")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!((590..=600).contains(&win_ttl), "window TTL {win_ttl}");
    let res_ttl: i64 = redis::cmd("TTL")
        .arg("sy:res:req#0")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!((110..=120).contains(&res_ttl), "reservation TTL {res_ttl}");
    let reserved: i64 = redis::cmd("HGET")
        .arg("sy:win:team:daily:2026-11-21")
        .arg("reserved")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(reserved, 1_500_000_000, "integer nano-dollars");

    ledger.settle("req#0", 0.5).await.unwrap();
    let res_exists: i64 = redis::cmd("EXISTS")
        .arg("sy:res:req#0")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(res_exists, 0);
    let done_ttl: i64 = redis::cmd("TTL")
        .arg("sy:done:req#0")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        (110..=120).contains(&done_ttl),
        "settled marker TTL {done_ttl}"
    );
    let hash: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg("sy:win:team:daily:2026-11-21")
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut hash = hash;
    hash.sort();
    assert_eq!(
        hash,
        [
            ("reserved".to_owned(), 0),
            ("spent".to_owned(), 500_000_000)
        ]
    );
}

#[tokio::test]
async fn settle_does_not_revive_an_ended_window() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ledger = ledger(&server, "end:");
    let mut raw = server.raw().await;
    ledger
        .reserve("r", &[charge("gone", 5.0), charge("kept", 5.0)], 1.0)
        .await
        .unwrap();
    // The window ends (its key expires) while the request is in flight.
    let _: i64 = redis::cmd("DEL")
        .arg("end:win:gone")
        .query_async(&mut raw)
        .await
        .unwrap();
    ledger.settle("r", 0.5).await.unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg("end:win:gone")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    assert_totals(totals(&ledger, "kept").await, 0.5, 0.0);
}

#[tokio::test]
async fn zero_ttl_does_not_delete_the_window() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ledger = ledger(&server, "z:");
    let ending = Charge {
        key: Arc::from("last-second"),
        cap: 5.0,
        ttl_secs: 0,
    };
    ledger.reserve("r", &[ending], 1.0).await.unwrap();
    assert_totals(totals(&ledger, "last-second").await, 0.0, 1.0);
}

#[tokio::test]
async fn unreachable_redis_is_unavailable_within_the_timeout() {
    // Checked so the failure below is about the ledger, not about a missing server binary.
    let Some(_server) = RedisServer::start() else {
        return;
    };
    let port = free_port();
    let ledger = RedisLedger::new(
        &format!("redis://127.0.0.1:{port}/"),
        RedisOptions {
            timeout: Duration::from_millis(300),
            ..RedisOptions::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let charges = [charge("k", 1.0)];
    assert!(matches!(
        ledger.reserve("r", &charges, 0.5).await,
        Err(LedgerError::Unavailable(_))
    ));
    assert!(matches!(
        ledger.settle("r", 0.5).await,
        Err(LedgerError::Unavailable(_))
    ));
    assert!(matches!(
        ledger.totals(&[Arc::from("k")]).await,
        Err(LedgerError::Unavailable(_))
    ));
    assert!(matches!(
        ledger.ping().await,
        Err(LedgerError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "four calls took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reconnects_when_redis_comes_back() {
    let port = free_port();
    let ledger = RedisLedger::new(
        &format!("redis://127.0.0.1:{port}/"),
        RedisOptions {
            timeout: Duration::from_millis(300),
            ..RedisOptions::default()
        },
    )
    .unwrap();
    let charges = [charge("k", 1.0)];
    assert!(matches!(
        ledger.reserve("r", &charges, 0.5).await,
        Err(LedgerError::Unavailable(_))
    ));
    let Some(_server) = RedisServer::start_on(port) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ledger.reserve("r", &charges, 0.5).await {
            Ok(()) => break,
            Err(LedgerError::Unavailable(why)) => {
                assert!(Instant::now() < deadline, "never reconnected: {why}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    ledger.ping().await.unwrap();
    assert_totals(totals(&ledger, "k").await, 0.0, 0.5);
}

#[test]
fn construction_needs_a_runtime_and_a_valid_url() {
    assert!(matches!(
        RedisLedger::new("redis://127.0.0.1:1/", RedisOptions::default()),
        Err(RedisLedgerError::NoRuntime)
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    assert!(matches!(
        RedisLedger::new("not a url", RedisOptions::default()),
        Err(RedisLedgerError::Url(_))
    ));
}
