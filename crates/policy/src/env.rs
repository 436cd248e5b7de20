use std::path::Path;

/// Where compilation reads API keys and CA files from. Tests substitute a fake so they need
/// neither real environment variables nor real files.
pub trait Env {
    /// The value of environment variable `name`, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;
    /// The whole contents of the file at `path`.
    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// The real process environment and file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemEnv;

impl Env for SystemEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn system_env_reads_files_and_missing_vars() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(SystemEnv.read_file(&f).unwrap(), b"abc");
        assert!(SystemEnv.read_file(&dir.path().join("missing")).is_err());
        assert_eq!(
            SystemEnv.var("SWITCHYARD_POLICY_TEST_SURELY_UNSET_VARIABLE"),
            None
        );
        // PATH is set in every environment the tests run in.
        assert!(SystemEnv.var("PATH").is_some());
    }
}
