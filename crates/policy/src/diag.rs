use std::fmt;

/// How bad a [`Diagnostic`] is: errors reject the policy, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

/// One problem found in a policy file, located by its field path
/// (`models.gpt-4o.endpoints[1].provider`; empty for the whole file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{severity}: {path}{sep}{message}", sep = if path.is_empty() { "" } else { ": " })]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    /// An error at `path`.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
        }
    }

    /// A warning at `path`.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
        }
    }

    /// True for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_path() {
        let d = Diagnostic::error(
            "models.gpt-4o.endpoints[1].provider",
            "unknown provider \"foo\"",
        );
        assert_eq!(
            d.to_string(),
            "error: models.gpt-4o.endpoints[1].provider: unknown provider \"foo\""
        );
        assert_eq!(
            Diagnostic::error("", "expected value at line 1 column 1").to_string(),
            "error: expected value at line 1 column 1"
        );
        assert_eq!(
            Diagnostic::warning("providers.a", "unused").to_string(),
            "warning: providers.a: unused"
        );
    }

    #[test]
    fn severity_helpers() {
        assert!(Diagnostic::error("", "x").is_error());
        assert!(!Diagnostic::warning("", "x").is_error());
    }
}
