//! The load harness behind `BENCHMARKS.md`: Switchyard against a direct call and against a
//! bare hyper passthrough ("the floor"), on loopback, in one run.
//!
//! It starts the simulated providers (a child process), a stamping stream source (the
//! ticker, in-process), the floor (a child process) and the real `switchyard` binary with a
//! production-like policy, then measures open-loop latency at fixed rates, closed-loop
//! maximum throughput with CPU per request, streaming TTFT and per-chunk latency, memory
//! idle, under load and with thousands of idle streams, and a callgrind profile. It is not
//! part of the proxy and talks to nothing but 127.0.0.1.

pub mod child;
pub mod children;
pub mod criterion;
pub mod floor;
pub mod loadgen;
pub mod policy;
pub mod procfs;
pub mod profile;
pub mod report;
pub mod run;
pub mod sse;
pub mod stats;
pub mod ticker;
