//! [`RedisLedger`]: budgets shared by every replica through one Redis.
//!
//! Layout under the prefix (default `switchyard:`):
//! - `win:<key>`: hash `{spent, reserved}` of a budget window, integer nano-dollars, with the
//!   window's remaining time as its TTL (reset on each reservation from the budget layer's
//!   `ttl_secs`, which counts down to the window's end);
//! - `res:<id>`: hash of an open reservation, `{amount, n, k1..kn}` (the full window keys),
//!   expiring after `reservation_ttl`;
//! - `done:<id>`: marker of a settled reservation, expiring after `reservation_ttl`.
//!
//! Reserve and settle are Lua scripts: one round trip each, atomic because Redis runs a script
//! to completion before any other command. Amounts are integer nano-dollars moved with
//! `HINCRBY`, never `HINCRBYFLOAT`: Lua 5.1 numbers are doubles, exact for integers below 2^53,
//! which `amount.rs` guarantees for every amount and cap; the scripts compare those doubles and
//! pass the decimal strings through to `HINCRBY` untouched (Redis's own number-to-string
//! conversion of Lua numbers may switch to exponent notation).
//!
//! A reservation whose owner crashed is never settled: its `res:` hash expires and its amount
//! stays in the windows' `reserved` until the windows end (over-count, never under-count).
//! The settle script reads window names from the reservation hash, which Redis Cluster does
//! not allow; use a standalone Redis (or one shard) for budgets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use switchyard_core::{BoxFuture, Charge, Ledger, LedgerError, Totals};

use crate::amount;

const RESERVE: &str = r"
-- KEYS[1] reservation hash, KEYS[2] settled marker, KEYS[3..] budget windows.
-- ARGV[1] amount (integer nano-dollars), ARGV[2] reservation TTL (s),
-- then for each window: its cap (integer nano-dollars) and its TTL (s).
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return {'replay'}
end
local amount = tonumber(ARGV[1])
for i = 3, #KEYS do
  local cap = tonumber(ARGV[2 * i - 3])
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local spent = tonumber(v[1]) or 0
  local reserved = tonumber(v[2]) or 0
  if spent + reserved + amount > cap then
    return {'exceeded', tostring(i - 2), v[1] or '0', v[2] or '0'}
  end
end
local n = 0
local seen = {}
for i = 3, #KEYS do
  if not seen[KEYS[i]] then
    seen[KEYS[i]] = true
    n = n + 1
    redis.call('HINCRBY', KEYS[i], 'reserved', ARGV[1])
    redis.call('EXPIRE', KEYS[i], ARGV[2 * i - 2])
    redis.call('HSET', KEYS[1], 'k' .. n, KEYS[i])
  end
end
redis.call('HSET', KEYS[1], 'amount', ARGV[1], 'n', tostring(n))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {'ok'}
";

const SETTLE: &str = r"
-- KEYS[1] reservation hash, KEYS[2] settled marker.
-- ARGV[1] actual (integer nano-dollars; empty: settle at the reserved amount),
-- ARGV[2] settled marker TTL (s).
local amount = redis.call('HGET', KEYS[1], 'amount')
if not amount or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local actual = ARGV[1]
if actual == '' then
  actual = amount
end
local n = tonumber(redis.call('HGET', KEYS[1], 'n')) or 0
for i = 1, n do
  local key = redis.call('HGET', KEYS[1], 'k' .. i)
  -- A window that expired meanwhile has ended: there is nothing to move, and HINCRBY would
  -- bring it back without a TTL.
  if key and redis.call('EXISTS', key) == 1 then
    if amount ~= '0' then
      redis.call('HINCRBY', key, 'reserved', '-' .. amount)
    end
    redis.call('HINCRBY', key, 'spent', actual)
  end
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
return 1
";

/// Settings of a [`RedisLedger`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// Prepended to every Redis key, so several deployments can share one Redis.
    /// Default `switchyard:`.
    pub prefix: String,
    /// Limit on every call, connecting included; past it the call is
    /// `LedgerError::Unavailable`. Default 1 s.
    pub timeout: Duration,
    /// How long an open reservation and a settled marker are kept: longer than any request
    /// can last. Default 1 hour.
    pub reservation_ttl: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "switchyard:".to_owned(),
            timeout: Duration::from_secs(1),
            reservation_ttl: Duration::from_secs(3600),
        }
    }
}

/// Why a [`RedisLedger`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RedisLedgerError {
    /// The URL is not a Redis URL (`redis://[user:password@]host[:port][/db]`).
    #[error("invalid Redis URL: {0}")]
    Url(String),
    /// The connection manager spawns a task: create the ledger inside a Tokio runtime.
    #[error("the Redis ledger must be created inside a Tokio runtime")]
    NoRuntime,
    /// The client refused the configuration.
    #[error("cannot set up the Redis client: {0}")]
    Setup(String),
}

/// The spend ledger in Redis, shared by replicas (see the module docs for the key layout).
///
/// Connects lazily and reconnects by itself; while Redis is unreachable every call fails
/// within `timeout` with `LedgerError::Unavailable`.
pub struct RedisLedger {
    conn: ConnectionManager,
    options: RedisOptions,
    reserve: Script,
    settle: Script,
}

impl RedisLedger {
    /// A ledger on the Redis at `url`. Does not wait for the server: the first call connects.
    /// Must be called inside a Tokio runtime.
    pub fn new(url: &str, options: RedisOptions) -> Result<Self, RedisLedgerError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisLedgerError::NoRuntime);
        }
        let client = redis::Client::open(url).map_err(|e| RedisLedgerError::Url(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            // Our own timeout bounds each call; reconnecting happens on the next call.
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisLedgerError::Setup(e.to_string()))?;
        Ok(Self {
            conn,
            options,
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
        })
    }

    /// Checks that Redis answers, for readiness probes.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        let mut conn = self.conn.clone();
        let pong: String = self
            .bounded(async move { redis::cmd("PING").query_async(&mut conn).await })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(LedgerError::Unavailable(format!(
                "redis answered PING with {pong:?}"
            )))
        }
    }

    fn window_key(&self, key: &str) -> String {
        format!("{}win:{key}", self.options.prefix)
    }

    fn reservation_keys(&self, id: &str) -> (String, String) {
        let prefix = &self.options.prefix;
        (format!("{prefix}res:{id}"), format!("{prefix}done:{id}"))
    }

    fn ttl_secs(&self) -> u64 {
        self.options.reservation_ttl.as_secs().max(1)
    }

    /// Applies the call timeout and maps every failure to `Unavailable`.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, LedgerError> {
        match tokio::time::timeout(self.options.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(LedgerError::Unavailable(format!("redis: {e}"))),
            Err(_) => Err(LedgerError::Unavailable(format!(
                "redis did not answer within {:?}",
                self.options.timeout
            ))),
        }
    }

    async fn reserve_now(&self, id: &str, charges: &[Charge], usd: f64) -> Result<(), LedgerError> {
        let nanos = amount::amount(usd);
        let (res, done) = self.reservation_keys(id);
        let mut call = self.reserve.prepare_invoke();
        call.key(res).key(done);
        for charge in charges {
            call.key(self.window_key(&charge.key));
        }
        call.arg(nanos.to_string()).arg(self.ttl_secs());
        for charge in charges {
            // EXPIRE 0 would delete the window at once.
            call.arg(amount::cap(charge.cap).to_string())
                .arg(charge.ttl_secs.max(1));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .bounded(async { call.invoke_async(&mut conn).await })
            .await?;
        match reply.first().map(String::as_str) {
            Some("ok" | "replay") => Ok(()),
            Some("exceeded") => Err(exceeded(&reply, charges)),
            _ => Err(LedgerError::Unavailable(format!(
                "unexpected reply from the reserve script: {reply:?}"
            ))),
        }
    }

    async fn settle_now(&self, id: &str, usd: f64) -> Result<(), LedgerError> {
        let (res, done) = self.reservation_keys(id);
        // Non-finite: let the script settle at the reserved amount (see `amount::actual`).
        let actual = if usd.is_finite() {
            amount::amount(usd).to_string()
        } else {
            String::new()
        };
        let mut call = self.settle.prepare_invoke();
        call.key(res).key(done).arg(actual).arg(self.ttl_secs());
        let mut conn = self.conn.clone();
        let _moved: i64 = self
            .bounded(async { call.invoke_async(&mut conn).await })
            .await?;
        Ok(())
    }

    async fn totals_now(&self, keys: &[Arc<str>]) -> Result<Vec<Totals>, LedgerError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HMGET")
                .arg(self.window_key(key))
                .arg("spent")
                .arg("reserved");
        }
        let mut conn = self.conn.clone();
        let rows: Vec<Vec<Option<i64>>> = self
            .bounded(async { pipe.query_async(&mut conn).await })
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Totals {
                spent: amount::usd(row.first().copied().flatten().unwrap_or(0)),
                reserved: amount::usd(row.get(1).copied().flatten().unwrap_or(0)),
            })
            .collect())
    }
}

/// The script's `{'exceeded', index, spent, reserved}` as the error naming the window.
fn exceeded(reply: &[String], charges: &[Charge]) -> LedgerError {
    let charge = reply
        .get(1)
        .and_then(|i| i.parse::<usize>().ok())
        .and_then(|i| charges.get(i.checked_sub(1)?));
    let nanos = |i: usize| {
        reply
            .get(i)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    match charge {
        Some(charge) => LedgerError::Exceeded {
            key: charge.key.clone(),
            spent: amount::usd(nanos(2)),
            reserved: amount::usd(nanos(3)),
            cap: charge.cap,
        },
        None => LedgerError::Unavailable(format!(
            "unexpected reply from the reserve script: {reply:?}"
        )),
    }
}

impl Ledger for RedisLedger {
    fn reserve<'a>(
        &'a self,
        id: &'a str,
        charges: &'a [Charge],
        amount: f64,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(self.reserve_now(id, charges, amount))
    }

    fn settle<'a>(&'a self, id: &'a str, actual: f64) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(self.settle_now(id, actual))
    }

    fn totals<'a>(
        &'a self,
        keys: &'a [Arc<str>],
    ) -> BoxFuture<'a, Result<Vec<Totals>, LedgerError>> {
        Box::pin(self.totals_now(keys))
    }
}

impl fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLedger")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
