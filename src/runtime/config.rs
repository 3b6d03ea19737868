use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;
use crate::pool::PoolConfig;

/// A whole runtime's configuration, as read from a TOML file.
///
/// ```toml
/// python = "/opt/venv/bin/python"   # optional
///
/// [[pools]]
/// name = "triage"
/// size = 2
/// affinity = "strict_queue"
/// call_timeout = "30s"
/// preload = ["dspy"]
/// ```
///
/// # Examples
///
/// ```
/// let cfg = pyvisor::RuntimeConfig::from_toml_str(r#"
///     [[pools]]
///     name = "triage"
///     size = 2
///     affinity = "strict_queue"
///     queue_timeout = "250ms"
/// "#).unwrap();
/// assert_eq!(cfg.pools[0].queue_timeout, std::time::Duration::from_millis(250));
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// The interpreter; discovered when `None` (see [`RuntimeBuilder::python`](crate::RuntimeBuilder::python)).
    pub python: Option<PathBuf>,
    /// The pools.
    pub pools: Vec<PoolConfig>,
}

impl RuntimeConfig {
    /// Parses a configuration from TOML text.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] with the parser's message (unknown keys are refused).
    pub fn from_toml_str(text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// Reads a TOML configuration file.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the file cannot be read or parsed.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = pyvisor::RuntimeConfig::from_file("/nonexistent.toml").unwrap_err();
    /// assert!(matches!(err, pyvisor::Error::Config(_)));
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml_str(&text)
    }
}
