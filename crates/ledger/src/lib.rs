//! Spend ledger backends for budgets (DESIGN.md §4 "Budgets"): where reservations and
//! settlements of USD spend are kept, behind `switchyard_core::Ledger`.
//!
//! The budget layer (`crates/budget`) sits in front of every upstream attempt: it computes the
//! budget windows that apply (`Charge { key, cap, ttl_secs }`, keys like
//! `team-a:daily:2026-11-21`) and a reservation id per attempt (`<request-id>#<attempt>`), and
//! calls a [`Ledger`](switchyard_core::Ledger) from this crate. This crate knows nothing of
//! policy, prices or windows' calendars: it checks caps atomically and counts.
//!
//! Three backends:
//! - [`EmbeddedLedger`] (default): an append-only log file with checksummed records, replayed
//!   into memory on open, compacted into a snapshot in the background. Every reservation and
//!   settlement is handed to the kernel with one `write(2)` before the call returns, so a
//!   kill -9 loses nothing; a group-commit thread `fdatasync`s the file at most every
//!   `sync_interval` (50 ms) when it is dirty, so a power loss loses at most that window and
//!   the hot path never waits for a disk flush. Why not SQLite or redb: both make durability a
//!   property of a transaction, so each reserve would be a commit (an fsync, or in SQLite's WAL
//!   mode with `synchronous=NORMAL` still a transaction and a WAL append per operation, plus
//!   checkpoints on the hot path), or we would batch operations in memory and lose them on
//!   kill -9. What a ledger needs is exactly "append one record; flush a little later", which
//!   an owned log file gives with one syscall per operation and no dependency.
//! - [`RedisLedger`]: budgets shared across replicas; reserve and settle are Lua scripts (one
//!   round trip, atomic), every call has a timeout, and an unreachable server is
//!   `LedgerError::Unavailable` (the budget layer decides to fail open or closed).
//! - [`MemoryLedger`]: the same semantics in memory only, for tests and `--ledger none`.
//!
//! Amounts are kept as integer nano-dollars in every backend (see `amount.rs`), so caps
//! compare exactly and a settled reservation leaves nothing behind in `reserved`.
//!
//! What this crate does not do: decide which budgets apply, estimate costs, or choose between
//! failing open and closed when the store is unavailable.

mod amount;
mod embedded;
mod memory;
mod redis_ledger;
mod state;

#[cfg(test)]
mod conformance;

pub use embedded::{EmbeddedLedger, LedgerOptions};
pub use memory::MemoryLedger;
pub use redis_ledger::{RedisLedger, RedisLedgerError, RedisOptions};

/// How many settled ids a ledger remembers to recognise replayed reservations.
pub(crate) const DEFAULT_SETTLED_IDS: usize = 100_000;

/// Wall-clock Unix milliseconds: windows end at calendar times, so not a monotonic clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
