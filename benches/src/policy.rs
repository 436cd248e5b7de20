//! The small policy the stack benchmarks run under, compiled the way a reload compiles it.

use std::path::Path;
use std::sync::Arc;

use switchyard_policy::{Compiled, Env, Format};
use switchyard_policy_watch::PolicyStore;

use crate::FixtureError;

/// The API key every `{"env": ...}` reference resolves to.
pub const BENCH_KEY: &str = "sk-bench-0000000000000000";

/// Two providers on a loopback port nothing listens on (the benchmarks never open a socket)
/// and two models with two endpoints each.
pub const POLICY_JSON: &str = r#"{
    "providers": {
        "acme": {
            "api": "openai", "base_url": "http://127.0.0.1:9/v1",
            "api_key": {"env": "ACME_API_KEY"}, "data_collection": "deny",
            "allow_private_network": true
        },
        "backup": {
            "api": "openai", "base_url": "http://127.0.0.1:9/backup/v1",
            "api_key": {"env": "BACKUP_API_KEY"}, "allow_private_network": true
        }
    },
    "models": {
        "fast-chat": {
            "aliases": ["chat"],
            "context_length": 128000,
            "endpoints": [
                {"provider": "acme", "upstream_model": "gpt-4o-mini-2024-07-18",
                 "pricing": {"prompt": 0.15, "completion": 0.6},
                 "max_output_tokens": 16384,
                 "supported_parameters": ["tools", "tool_choice", "temperature", "max_tokens"]},
                {"provider": "backup", "upstream_model": "fast-chat-v2",
                 "pricing": {"prompt": 0.2, "completion": 0.8}}
            ]
        },
        "smart-chat": {
            "context_length": 200000,
            "endpoints": [
                {"provider": "backup", "upstream_model": "smart-chat-v1",
                 "pricing": {"prompt": 2.5, "completion": 10}},
                {"provider": "acme", "upstream_model": "gpt-4o-2024-08-06",
                 "pricing": {"prompt": 2.5, "completion": 10}}
            ]
        }
    },
    "defaults": {
        "timeouts": {"connect": "5s", "first_token": "10s", "idle": "10s", "total": "600s"}
    }
}"#;

/// An environment where every variable is [`BENCH_KEY`] and no file exists, so compiling
/// the policy needs neither real secrets nor the file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct BenchEnv;

impl Env for BenchEnv {
    fn var(&self, _name: &str) -> Option<String> {
        Some(BENCH_KEY.to_owned())
    }

    fn read_file(&self, _path: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::ErrorKind::NotFound.into())
    }
}

/// [`POLICY_JSON`] compiled under [`BenchEnv`].
pub fn policy() -> Result<Compiled, FixtureError> {
    switchyard_policy::compile(POLICY_JSON, Format::Json, Path::new("."), &BenchEnv).map_err(
        |diagnostics| {
            FixtureError::Policy(
                diagnostics
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        },
    )
}

/// A live policy store holding [`policy`], as `switchyard run` builds one.
pub fn policy_store() -> Result<Arc<PolicyStore>, FixtureError> {
    Ok(PolicyStore::fixed(policy()?, "benches"))
}
