//! The Switchyard binary: command line, the proxy and admin listeners, graceful shutdown, and
//! the self-contained demo.
//!
//! Process settings (listen addresses, drain timeout) come from flags or `SWITCHYARD_*`
//! environment variables and need a restart to change; routing behaviour comes from the
//! policy file, which is validated in full before any socket is bound.

pub mod admin;
pub mod cli;
pub mod demo;
pub mod explain;
pub mod observe;
pub mod server;
