use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use switchyard_policy::{Compiled, Diagnostic, Snapshot};

/// Why the last reload was refused.
#[derive(Clone, Debug)]
pub struct ReloadError {
    pub at: SystemTime,
    /// One line per diagnostic, each with its field path.
    pub messages: Vec<String>,
}

/// What `/admin/policy` shows about the policy in force.
#[derive(Clone, Debug)]
pub struct PolicyStatus {
    /// 1 for the policy loaded at start, +1 for every successful reload.
    pub generation: u64,
    pub sha256: String,
    pub loaded_at: SystemTime,
    /// The file the policy came from, or a label such as `embedded demo policy`.
    pub source: String,
    pub warnings: Vec<String>,
    /// Set when the newest reload failed; cleared by the next successful one.
    pub last_error: Option<ReloadError>,
}

/// The policy in force and its status, both swapped atomically.
#[derive(Debug)]
pub struct PolicyStore {
    snapshot: ArcSwap<Snapshot>,
    status: ArcSwap<PolicyStatus>,
    path: Option<PathBuf>,
    /// Calls of [`PolicyStore::reload`] that ended with a policy in force (changed or not).
    reloads_ok: AtomicU64,
    /// Calls of [`PolicyStore::reload`] that were refused.
    reloads_failed: AtomicU64,
}

impl PolicyStore {
    /// A store whose policy came from `path` (reloadable from it).
    pub fn from_file(compiled: Compiled, path: &Path) -> Arc<Self> {
        Self::build(
            compiled,
            path.display().to_string(),
            Some(path.to_path_buf()),
        )
    }

    /// A store for a policy that has no file (embedded defaults, tests).
    pub fn fixed(compiled: Compiled, label: &str) -> Arc<Self> {
        Self::build(compiled, label.to_string(), None)
    }

    fn build(compiled: Compiled, source: String, path: Option<PathBuf>) -> Arc<Self> {
        let status = PolicyStatus {
            generation: 1,
            sha256: compiled.snapshot.sha256().to_string(),
            loaded_at: SystemTime::now(),
            source,
            warnings: compiled.warnings.iter().map(ToString::to_string).collect(),
            last_error: None,
        };
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(compiled.snapshot),
            status: ArcSwap::from_pointee(status),
            path,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    /// The snapshot in force now. Callers keep the `Arc` for the whole request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn status(&self) -> Arc<PolicyStatus> {
        self.status.load_full()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Puts a compiled policy in force. Identical content is not a new generation.
    pub fn install(&self, compiled: Compiled) -> u64 {
        let old = self.status.load();
        if compiled.snapshot.sha256() == old.sha256 {
            if old.last_error.is_some() {
                let mut st = (**old).clone();
                st.last_error = None;
                self.status.store(Arc::new(st));
            }
            return old.generation;
        }
        let generation = old.generation + 1;
        let status = PolicyStatus {
            generation,
            sha256: compiled.snapshot.sha256().to_string(),
            loaded_at: SystemTime::now(),
            source: old.source.clone(),
            warnings: compiled.warnings.iter().map(ToString::to_string).collect(),
            last_error: None,
        };
        // Snapshot first: a reader that sees the new generation must also find its policy.
        self.snapshot.store(Arc::new(compiled.snapshot));
        self.status.store(Arc::new(status));
        tracing::info!(generation, "policy reloaded");
        generation
    }

    /// Keeps the policy in force and records why a reload was refused.
    pub fn reject(&self, diagnostics: &[Diagnostic]) {
        let messages: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        for m in &messages {
            tracing::warn!(error = %m, "policy reload refused; keeping the last good policy");
        }
        let mut st = (**self.status.load()).clone();
        st.last_error = Some(ReloadError {
            at: SystemTime::now(),
            messages,
        });
        self.status.store(Arc::new(st));
    }

    /// Reads, validates and compiles the policy file again; swaps only if all of that works.
    /// Returns the generation in force afterwards.
    ///
    /// A missing, unreadable, truncated or invalid file is refused like any other error: the
    /// last good policy stays in force. Every call is counted in [`PolicyStore::counters`].
    pub fn reload(&self) -> Result<u64, Vec<Diagnostic>> {
        let Some(path) = self.path.as_deref() else {
            self.reloads_ok.fetch_add(1, Ordering::Release);
            return Ok(self.status.load().generation);
        };
        match switchyard_policy::load_file(path) {
            Ok(compiled) => {
                let generation = self.install(compiled);
                self.reloads_ok.fetch_add(1, Ordering::Release);
                Ok(generation)
            }
            Err(diags) => {
                self.reject(&diags);
                self.reloads_failed.fetch_add(1, Ordering::Release);
                Err(diags)
            }
        }
    }

    /// `(reloads that succeeded, reloads that were refused)` since start, for metrics.
    ///
    /// Counts calls of [`PolicyStore::reload`] only: a reload of identical content counts as
    /// a success without a new generation; direct [`PolicyStore::install`] calls are not
    /// counted.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Acquire),
            self.reloads_failed.load(Ordering::Acquire),
        )
    }

    /// The body of `GET /admin/policy`.
    pub fn status_json(&self) -> Value {
        let st = self.status.load();
        let snap = self.snapshot.load();
        let (reloads, failures) = self.counters();
        json!({
            "generation": st.generation,
            "sha256": st.sha256,
            "loaded_at": humantime::format_rfc3339_millis(st.loaded_at).to_string(),
            "source": st.source,
            "providers": snap.providers().len(),
            "models": snap.models().len(),
            "endpoints": snap.endpoints().len(),
            "routes": snap.routes().len(),
            "warnings": st.warnings,
            "reloads_total": reloads,
            "reload_failures_total": failures,
            "last_error": st.last_error.as_ref().map(|e| json!({
                "at": humantime::format_rfc3339_millis(e.at).to_string(),
                "messages": e.messages,
            })),
        })
    }
}
