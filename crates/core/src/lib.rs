//! The vocabulary every Switchyard crate shares.
//!
//! Layer crates never depend on each other; they meet here. This crate holds the error
//! contract that `respond` turns into responses ([`ProxyError`], [`Failure`]), the response
//! body every layer passes outwards ([`ProxyBody`], made of [`Event`]s when streaming), and the
//! small request/response extension types ([`Served`], [`Usage`], [`Pricing`], [`InboundApi`]).
//!
//! It does no IO and holds no state.

mod body;
mod class;
mod error;
mod ext;
mod future;
mod notes;
mod spend;

pub use body::{Event, EventKind, EventSource, ProxyBody};
pub use class::{AttemptObserver, AttemptReport, BreakerEffect, Class, SkipReport};
pub use error::{Failure, ProxyError};
pub use ext::{Deadline, InboundApi, Pricing, Served, Usage};
pub use future::{BoxResponseFuture, ShortCircuit};
pub use notes::{ContextInjector, Notes, RequestNotes};
pub use spend::{
    AttemptPrice, BoxFuture, BudgetEvents, Charge, Ledger, LedgerError, SpendGuard, Totals,
};

/// The error type passed between tower layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
