//! The Switchyard policy: the file's schema, its validation, and the compiled [`Snapshot`]
//! the request path reads.
//!
//! [`compile`] turns policy text (JSON, or YAML) into an immutable [`Snapshot`] with every
//! lookup precomputed: providers, models by id or alias, endpoints by stable id, routes by id
//! and by matched model, defaults with the built-in values filled in, and budgets. Validation
//! reports every problem it finds at once, each with the field path it concerns
//! (`models.gpt-4o.endpoints[1].provider`), so `switchyard check` and a failed reload can show
//! them all. API keys and CA files named by the policy are read here, through [`Env`].
//!
//! `policy-watch` calls [`load_file`] on every reload and swaps the result in; the `PinPolicy`
//! layer hands one snapshot to each request. [`ProviderPrefs`] is also the type the request
//! parser reads OpenRouter's `provider` object into.
//!
//! This crate does not watch files, hold state that outlives a reload (breakers, budgets and
//! statistics live in registries keyed by the ids defined here), make network calls, or
//! enforce anything: it only describes what the layers enforce. Host names that merely
//! resolve to private addresses are the upstream's to refuse, at connect time.

mod compile;
mod diag;
mod env;
mod net;
mod outline;
mod plan;
mod prefs;
mod schema;
mod settings;
mod snapshot;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use diag::{Diagnostic, Severity};
pub use env::{Env, SystemEnv};
pub use net::is_private_ip;
pub use plan::{Candidate, Exclusion, ExclusionReason, Plan};
pub use prefs::{
    DataCollection, MaxPrice, ProviderPrefs, SortBy, SortOptions, SortPartition, SortSpec,
    Threshold,
};
pub use settings::{Breaker, Defaults, Limits, Retry, RetryOverrides, TimeoutOverrides, Timeouts};
pub use snapshot::{Api, Budget, BudgetScope, Endpoint, Model, Provider, Route, Secret, Snapshot};

/// The syntax of a policy file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// `.yaml` / `.yml` (any case) is YAML; anything else is JSON.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") => {
                Format::Yaml
            }
            _ => Format::Json,
        }
    }
}

/// A successfully compiled policy and the warnings found on the way.
#[derive(Debug)]
pub struct Compiled {
    pub snapshot: Snapshot,
    pub warnings: Vec<Diagnostic>,
}

/// Compiles policy text. Relative key and CA file paths resolve against `base_dir`; keys and
/// files are read through `env` and nothing else is touched, so the same inputs always give
/// the same result. On failure the list holds every error found, and any warnings.
pub fn compile(
    text: &str,
    format: Format,
    base_dir: &Path,
    env: &dyn Env,
) -> Result<Compiled, Vec<Diagnostic>> {
    compile::compile(text, format, base_dir, env)
}

/// Reads and compiles the policy file at `path` with the real environment; the format comes
/// from the extension and relative paths inside resolve against the file's directory.
pub fn load_file(path: &Path) -> Result<Compiled, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::error(
            "",
            format!("cannot read policy file \"{}\": {e}", path.display()),
        )]
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    compile(&text, Format::from_path(path), base_dir, &SystemEnv)
}
