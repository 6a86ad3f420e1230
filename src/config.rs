//! The CI configuration: one TOML file, one struct, one loader.
//!
//! The NixOS module renders this file from its `settings`; `docs/configuration.md`
//! documents every key. Per-recipe files live beside it under `recipes/<recipe>/`
//! (see [`crate::meta`]). Unknown keys are errors with a did-you-mean hint.
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/cc-ci/cc-ci.toml";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] crate::strict::Error),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub runner: RunnerConfig,
    #[serde(default)]
    pub state: StateConfig,
    pub gitea: Option<GiteaConfig>,
    #[serde(default)]
    pub trigger: TriggerConfig,
    #[serde(default)]
    pub poll: PollConfig,
    #[serde(default)]
    pub repos: Vec<RepoConfig>,
    #[serde(default)]
    pub launch: LaunchConfig,
    /// Directory holding the config file; per-recipe CI files live in `<dir>/recipes/`.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// `[runner]`: how runs deploy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// The pinned abra binary.
    pub abra: PathBuf,
    /// Where recipe names resolve to git repositories (`<recipes_dir>/<recipe>`).
    pub recipes_dir: PathBuf,
    /// The abra server name apps are created on.
    pub server: String,
    /// Apps get the domain `<recipe>[-pr<N>].<domain>`.
    pub domain: String,
    /// Hard deadline of one run, in minutes; on expiry the run is torn down (cause timeout).
    pub deadline_min: u64,
    /// How long a run waits for the per-app-domain lock before giving up, in seconds.
    pub lock_timeout_s: u64,
    /// Directories whose files are CI credentials: their values are masked in all output.
    pub secrets_dirs: Vec<PathBuf>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            abra: PathBuf::from("abra"),
            recipes_dir: PathBuf::from("/var/lib/cc-ci/recipes"),
            server: "default".into(),
            domain: "ci.localhost".into(),
            deadline_min: 60,
            lock_timeout_s: 3600,
            secrets_dirs: Vec::new(),
        }
    }
}

/// `[state]`: where runs keep their files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Persistent state: run artifacts (`runs/<run-id>/`), run requests, poller state.
    pub dir: PathBuf,
    /// Volatile state (lost at reboot): locks and per-run scratch (`ABRA_DIR`).
    pub runtime_dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("/var/lib/cc-ci"),
            runtime_dir: PathBuf::from("/run/cc-ci"),
        }
    }
}

/// `[gitea]`: the forge the poller watches and reports to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiteaConfig {
    pub url: String,
    pub token_file: PathBuf,
    pub bot_user: String,
}

/// `[trigger]`: who may start runs, with what comment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerConfig {
    pub command: String,
    pub org: Option<String>,
    pub allow: Vec<String>,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            command: "!testme".into(),
            org: None,
            allow: Vec::new(),
        }
    }
}

/// `[poll]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    pub interval_s: u64,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig { interval_s: 30 }
    }
}

/// `[[repos]]`: one enrolled recipe repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub repo: String,
    pub recipe: String,
}

/// `[launch]`: how the poller starts a run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaunchConfig {
    pub kind: LaunchKind,
    pub command: Vec<String>,
}

impl Default for LaunchConfig {
    fn default() -> Self {
        LaunchConfig {
            kind: LaunchKind::Systemd,
            command: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LaunchKind {
    Systemd,
    Command,
}

impl Config {
    /// Load and check the config at `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let mut config: Config = crate::strict::load_toml(path)?;
        config.dir = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        config.check(path)?;
        Ok(config)
    }

    /// The built-in defaults, for `cc-ci run` without a config file.
    pub fn defaults(dir: PathBuf) -> Config {
        let mut config: Config = toml::from_str("").expect("empty config parses");
        config.dir = dir;
        config
    }

    fn check(&self, path: &Path) -> Result<(), Error> {
        let invalid = |message: String| Error::Invalid {
            path: path.to_owned(),
            message,
        };
        if self.runner.deadline_min == 0 {
            return Err(invalid("runner.deadline_min must be at least 1".into()));
        }
        if self.runner.domain.is_empty() || self.runner.domain.contains('/') {
            return Err(invalid(format!(
                "runner.domain {:?} is not a domain; set e.g. domain = \"ci.example.org\"",
                self.runner.domain
            )));
        }
        if self.launch.kind == LaunchKind::Command && self.launch.command.is_empty() {
            return Err(invalid(
                "launch.kind = \"command\" needs launch.command = [\"argv\", ...]".into(),
            ));
        }
        Ok(())
    }

    /// The CI-side directory of one recipe: meta, overlay, hooks, tests.
    pub fn recipe_ci_dir(&self, recipe: &str) -> PathBuf {
        self.dir.join("recipes").join(recipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_nearest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[runner]\ndeadline_mins = 5\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("deadline_mins"), "{err}");
        assert!(err.contains("did you mean `deadline_min`?"), "{err}");
    }

    #[test]
    fn defaults_are_valid_and_dir_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.runner.deadline_min, 60);
        assert_eq!(c.dir, dir.path().canonicalize().unwrap());
        assert_eq!(c.recipe_ci_dir("hello"), c.dir.join("recipes/hello"));
    }
}
