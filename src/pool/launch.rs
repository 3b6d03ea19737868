use serde::Deserialize;

/// How a pool starts its worker processes.
///
/// * `Spawn` (the default): every worker is a fresh `python -m pyvisor_worker` that imports its
///   preload list itself. Simple, and a fresh interpreter every time.
/// * `Template`: the pool starts one template process that imports `preload` (then the pool's
///   [`PoolConfig::preload`](crate::PoolConfig::preload)) once, and forks every worker from it.
///   A worker that imports dspy starts in milliseconds instead of seconds and shares the
///   template's memory copy-on-write. Only modules that start no threads may be preloaded
///   (forking a process with threads is unsafe): the template checks and refuses to start
///   otherwise. While the template is not ready (starting, restarting after a crash), workers
///   are spawned instead. See `docs/architecture.md`, "Launch modes".
///
/// In a TOML file: `launch = "spawn"`, or `launch = { template = { preload = ["dspy"] } }`.
///
/// # Examples
///
/// ```
/// use pyvisor::{LaunchMode, PoolConfig};
///
/// let cfg = PoolConfig::new("triage").launch(LaunchMode::template(["dspy"]));
/// assert_eq!(cfg.launch.template_preload(), Some(&["dspy".to_string()][..]));
/// assert_eq!(PoolConfig::new("plain").launch, LaunchMode::Spawn);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum LaunchMode {
    /// Start each worker as a new Python process.
    #[default]
    Spawn,
    /// Fork each worker from a template process that imported `preload` once.
    Template {
        /// Modules the template imports before it forks (in this order, before the pool's own
        /// preload list).
        #[serde(default)]
        preload: Vec<String>,
    },
}

impl LaunchMode {
    /// Template mode preloading `modules`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mode = pyvisor::LaunchMode::template(["numpy", "dspy"]);
    /// assert!(mode.template_preload().is_some());
    /// ```
    pub fn template<I: IntoIterator<Item = S>, S: Into<String>>(modules: I) -> Self {
        LaunchMode::Template {
            preload: modules.into_iter().map(Into::into).collect(),
        }
    }

    /// The template's preload list, `None` in spawn mode.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(pyvisor::LaunchMode::Spawn.template_preload(), None);
    /// ```
    pub fn template_preload(&self) -> Option<&[String]> {
        match self {
            LaunchMode::Spawn => None,
            LaunchMode::Template { preload } => Some(preload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LaunchMode;
    use crate::PoolConfig;

    #[test]
    fn both_modes_read_from_toml() {
        let spawn: PoolConfig = toml::from_str("name = \"a\"\nlaunch = \"spawn\"").unwrap();
        assert_eq!(spawn.launch, LaunchMode::Spawn);
        let template: PoolConfig =
            toml::from_str("name = \"b\"\nlaunch = { template = { preload = [\"dspy\"] } }")
                .unwrap();
        assert_eq!(template.launch, LaunchMode::template(["dspy"]));
        let bad = toml::from_str::<PoolConfig>("name = \"c\"\nlaunch = \"fork\"");
        assert!(bad.is_err());
    }
}
