//! The CI configuration: one TOML file, one struct, one loader.
//!
//! The NixOS module renders this file from its `settings`; `docs/configuration.md`
//! documents every key. Per-recipe files live beside it under `recipes/<recipe>/`
//! (see [`crate::meta`]). Unknown keys are errors with a did-you-mean hint.
use serde::Deserialize;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/cc-ci/cc-ci.toml";

/// Where systemd puts a unit's credentials (`LoadCredential=`) for its processes.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] crate::strict::Error),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{key} = {name:?} names a systemd credential, but $CREDENTIALS_DIRECTORY is unset: \
         run cc-ci through its unit, which loads it with LoadCredential={name}:/etc/cc-ci/credentials/{name}, \
         or set {key} to an absolute path"
    )]
    NoCredentialsDirectory { key: &'static str, name: PathBuf },
    #[error("cannot list the recipe CI files in {0}: {1}")]
    ListRecipes(PathBuf, #[source] std::io::Error),
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
    /// `[webhook]`: optional push path; absent means off.
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub report: ReportConfig,
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
    /// `[runner.confine]`: how a recipe's own tests are confined.
    pub confine: crate::confine::Config,
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
            confine: crate::confine::Config::default(),
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
    /// Base URL of the Gitea instance, e.g. `https://git.example.org`.
    pub url: String,
    /// File holding the API token; never logged. A bare name (`gitea-token`) is a
    /// systemd credential in `$CREDENTIALS_DIRECTORY`: use [`GiteaConfig::token_path`].
    pub token_file: PathBuf,
    /// The bot's login: its own comments never trigger.
    pub bot_user: String,
    /// Timeout of one HTTP request (connect + response), in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

fn default_timeout_s() -> u64 {
    15
}

impl GiteaConfig {
    /// The file holding the API token (see [`credential_path`]).
    pub fn token_path(&self) -> Result<PathBuf, Error> {
        credential_path(
            "gitea.token_file",
            &self.token_file,
            credentials_directory(),
        )
    }
}

/// `[trigger]`: who may start runs, with what comment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerConfig {
    /// A comment triggers when one of its lines, trimmed, is exactly this.
    pub command: String,
    /// Members of this org may trigger (`GET /orgs/{org}/members/{user}` = 204).
    pub org: Option<String>,
    /// These logins may trigger even if they are not members.
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
    /// Seconds between the starts of two poll cycles.
    pub interval_s: u64,
    /// How far back the first cycle of a newly enrolled repo looks, in seconds.
    pub lookback_s: u64,
    /// A launched run with no results.json and no live runner after this many
    /// seconds is reported as `error`.
    pub start_timeout_s: u64,
    /// How a cycle finds repos with new comments (see [`DiscoveryMode`]).
    pub discovery: DiscoveryMode,
    /// With `search` or `notifications`: list every repo every this many cycles (a
    /// sweep; catches comment edits). Read through [`PollConfig::sweep_every`].
    pub sweep_every: Option<u64>,
    /// With `notifications`: ask the issue search every this many cycles (catches what
    /// notifications miss). Read through [`PollConfig::search_every`].
    pub search_every: Option<u64>,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval_s: 30,
            lookback_s: 600,
            start_timeout_s: 600,
            discovery: DiscoveryMode::Notifications,
            sweep_every: None,
            search_every: None,
        }
    }
}

impl PollConfig {
    /// Cycles between two sweeps: 10 with `search`, 2880 (a day at 30 s) with
    /// `notifications`, unless set; every cycle is one with `per-repo`.
    pub fn sweep_every(&self) -> u64 {
        match self.discovery {
            DiscoveryMode::PerRepo => 1,
            DiscoveryMode::Search => self.sweep_every.unwrap_or(10),
            DiscoveryMode::Notifications => self.sweep_every.unwrap_or(2880),
        }
    }

    /// Cycles between two issue searches: 20 (10 minutes at 30 s) with
    /// `notifications` unless set; every cycle with `search`, none with `per-repo`.
    pub fn search_every(&self) -> u64 {
        match self.discovery {
            DiscoveryMode::Notifications => self.search_every.unwrap_or(20),
            _ => 1,
        }
    }

    /// Values that cannot work, and keys that would do nothing in the chosen mode.
    fn check(&self) -> Result<(), String> {
        if self.interval_s == 0 {
            return Err("poll.interval_s must be at least 1".into());
        }
        let mode = self.discovery.as_str();
        for (key, value, applies) in [
            (
                "sweep_every",
                self.sweep_every,
                self.discovery != DiscoveryMode::PerRepo,
            ),
            (
                "search_every",
                self.search_every,
                self.discovery == DiscoveryMode::Notifications,
            ),
        ] {
            match value {
                Some(0) => return Err(format!("poll.{key} must be at least 1")),
                Some(_) if !applies => {
                    return Err(format!(
                        "poll.{key} does nothing with discovery = \"{mode}\"; remove it or choose a discovery it applies to (see docs/configuration.md)"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DiscoveryMode {
    /// One `GET /repos/{o}/{r}/issues/comments?since=` per enrolled repo per cycle.
    PerRepo,
    /// One `GET /repos/issues/search?type=pulls&since=` per cycle, then listings only
    /// for repos it names, plus a full sweep every `sweep_every` cycles.
    Search,
    /// The bot watches every enrolled repo; one `GET /notifications?since=` per cycle,
    /// then listings only for repos whose pull requests changed; the issue search every
    /// `search_every` cycles and a sweep every `sweep_every` cycles catch what
    /// notifications miss.
    Notifications,
}

impl DiscoveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryMode::PerRepo => "per-repo",
            DiscoveryMode::Search => "search",
            DiscoveryMode::Notifications => "notifications",
        }
    }
}

/// `[[repos]]`: one enrolled recipe repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// `owner/name` on Gitea.
    pub repo: String,
    /// The recipe name the runner tests.
    pub recipe: String,
}

/// `[launch]`: how the poller starts a run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaunchConfig {
    pub kind: LaunchKind,
    /// For `kind = "command"`: argv; the request path is appended.
    pub command: Vec<String>,
    /// For `kind = "systemd"`: the `systemctl` binary.
    pub systemctl: PathBuf,
    /// For `kind = "systemd"`: the template unit's prefix (`<unit>@<instance>.service`).
    pub unit: String,
}

impl Default for LaunchConfig {
    fn default() -> Self {
        LaunchConfig {
            kind: LaunchKind::Systemd,
            command: Vec::new(),
            systemctl: PathBuf::from("systemctl"),
            unit: "cc-ci-runner".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LaunchKind {
    Systemd,
    Command,
}

/// `[webhook]`: the optional push path (Gitea `issue_comment` events).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `host:port` to listen on; absent means: use the socket systemd passes
    /// (`cc-ci-hook.socket`, `LISTEN_FDS`).
    pub listen: Option<String>,
    /// File holding the shared HMAC secret; never logged. A bare name is a systemd
    /// credential in `$CREDENTIALS_DIRECTORY`: use [`WebhookConfig::secret_path`].
    pub secret_file: PathBuf,
    /// Larger request bodies are refused with 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}

impl WebhookConfig {
    /// The file holding the webhook's shared secret (see [`credential_path`]).
    pub fn secret_path(&self) -> Result<PathBuf, Error> {
        credential_path(
            "webhook.secret_file",
            &self.secret_file,
            credentials_directory(),
        )
    }
}

/// The process's `$CREDENTIALS_DIRECTORY`, if systemd set one (empty counts as unset).
fn credentials_directory() -> Option<std::ffi::OsString> {
    std::env::var_os(CREDENTIALS_DIRECTORY).filter(|d| !d.is_empty())
}

/// Where the secret that config key `key` names lives. An absolute path is the file
/// itself. A relative one is the name of a systemd credential: the file of that name
/// in `credentials` (`$CREDENTIALS_DIRECTORY`, where systemd puts what the unit's
/// `LoadCredential=<name>:<source>` loaded), so the config never holds the path of a
/// secret on disk and the unit decides where it comes from.
pub fn credential_path(
    key: &'static str,
    value: &Path,
    credentials: Option<impl AsRef<OsStr>>,
) -> Result<PathBuf, Error> {
    if value.is_absolute() {
        return Ok(value.to_owned());
    }
    match credentials {
        Some(dir) => Ok(Path::new(dir.as_ref()).join(value)),
        None => Err(Error::NoCredentialsDirectory {
            key,
            name: value.to_owned(),
        }),
    }
}

/// `[report]`: how results are shown on Gitea.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Public base URL of run pages; a run's page is `<base_url>/<run-id>/`.
    pub base_url: Option<String>,
    /// The commit status context.
    pub context: String,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            base_url: None,
            context: "cc-ci".into(),
        }
    }
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
        config.resolve_credentials(credentials_directory().as_deref());
        Ok(config)
    }

    /// Credential names become the files systemd put in `$CREDENTIALS_DIRECTORY`, so
    /// a reader of `token_file` or `secret_file` gets the file. Without that variable a
    /// name stays a name: the runner, which holds no credentials, needs none; the
    /// poller asks [`GiteaConfig::token_path`], whose error names the fix.
    fn resolve_credentials(&mut self, dir: Option<&OsStr>) {
        if let Some(g) = &mut self.gitea
            && let Ok(p) = credential_path("gitea.token_file", &g.token_file, dir)
        {
            g.token_file = p;
        }
        if let Some(w) = &mut self.webhook
            && let Ok(p) = credential_path("webhook.secret_file", &w.secret_file, dir)
        {
            w.secret_file = p;
        }
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
        if let Some(g) = &self.gitea {
            if !(g.url.starts_with("https://") || g.url.starts_with("http://")) {
                return Err(invalid(format!(
                    "gitea.url {:?} must start with https:// (or http://)",
                    g.url
                )));
            }
            if g.timeout_s == 0 {
                return Err(invalid("gitea.timeout_s must be at least 1".into()));
            }
        }
        self.poll.check().map_err(invalid)?;
        if self.trigger.command.trim().is_empty() {
            return Err(invalid("trigger.command must not be empty".into()));
        }
        for r in &self.repos {
            let ok = r.repo.split('/').count() == 2 && r.repo.split('/').all(|p| !p.is_empty());
            if !ok {
                return Err(invalid(format!(
                    "repos.repo {:?} must be \"owner/name\"",
                    r.repo
                )));
            }
        }
        Ok(())
    }

    /// The CI-side directory of one recipe: meta, overlay, hooks, tests.
    pub fn recipe_ci_dir(&self, recipe: &str) -> PathBuf {
        self.dir.join("recipes").join(recipe)
    }
}

/// `cc-ci check-config`: load the config at `path` with [`Config::load`] and every
/// `recipes/<recipe>/meta.toml` beside it with the one meta loader, as a run would.
/// The NixOS module runs this on the file it renders, so module and binary agree.
pub fn check_file(path: &Path) -> Result<Config, Error> {
    let config = Config::load(path)?;
    let recipes = config.dir.join("recipes");
    let entries = match std::fs::read_dir(&recipes) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(config),
        Err(e) => return Err(Error::ListRecipes(recipes, e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::ListRecipes(recipes.clone(), e))?;
        if entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    for dir in dirs {
        let meta = crate::meta::RecipeMeta::load(&dir)?;
        meta.validate().map_err(|message| Error::Invalid {
            path: dir.join(crate::meta::FILE_NAME),
            message,
        })?;
    }
    Ok(config)
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
    fn poll_keys_that_do_nothing_in_the_mode_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::load(&path)
        };
        let c = load("").unwrap();
        assert_eq!(c.poll.discovery, DiscoveryMode::Notifications);
        assert_eq!((c.poll.search_every(), c.poll.sweep_every()), (20, 2880));
        let c = load("[poll]\ndiscovery = \"search\"\n").unwrap();
        assert_eq!((c.poll.search_every(), c.poll.sweep_every()), (1, 10));
        let c = load("[poll]\nsearch_every = 4\nsweep_every = 100\n").unwrap();
        assert_eq!((c.poll.search_every(), c.poll.sweep_every()), (4, 100));
        let err = load("[poll]\ndiscovery = \"per-repo\"\nsweep_every = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("poll.sweep_every does nothing with discovery = \"per-repo\""),
            "{err}"
        );
        let err = load("[poll]\ndiscovery = \"search\"\nsearch_every = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("poll.search_every does nothing"), "{err}");
        let err = load("[poll]\nsearch_every = 0\n").unwrap_err().to_string();
        assert!(
            err.contains("poll.search_every must be at least 1"),
            "{err}"
        );
        let err = load("[poll]\ndiscovery = \"notification\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("notifications"), "{err}");
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

    #[test]
    fn absolute_credential_path_is_the_file() {
        let p = credential_path("gitea.token_file", Path::new("/etc/t"), None::<&str>);
        assert_eq!(p.unwrap(), PathBuf::from("/etc/t"));
        let p = credential_path("gitea.token_file", Path::new("/etc/t"), Some("/run/c"));
        assert_eq!(p.unwrap(), PathBuf::from("/etc/t"));
    }

    #[test]
    fn credential_name_is_looked_up_in_the_credentials_directory() {
        let p = credential_path(
            "gitea.token_file",
            Path::new("gitea-token"),
            Some("/run/credentials/cc-ci-poller.service"),
        );
        assert_eq!(
            p.unwrap(),
            PathBuf::from("/run/credentials/cc-ci-poller.service/gitea-token")
        );
    }

    #[test]
    fn credential_name_without_credentials_directory_names_the_fix() {
        let err = credential_path(
            "webhook.secret_file",
            Path::new("webhook-secret"),
            None::<&str>,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("webhook.secret_file"), "{err}");
        assert!(err.contains("$CREDENTIALS_DIRECTORY is unset"), "{err}");
        assert!(
            err.contains("LoadCredential=webhook-secret:/etc/cc-ci/credentials/webhook-secret"),
            "{err}"
        );
        assert!(err.contains("absolute path"), "{err}");
    }

    /// A config naming credentials loads with or without `$CREDENTIALS_DIRECTORY`:
    /// with it the names become its files; without it they stay names (the runner
    /// needs none) and the poller's accessor gives the error.
    #[test]
    fn credential_names_resolve_against_the_credentials_directory() {
        let text = "[gitea]\nurl = \"http://127.0.0.1:1\"\ntoken_file = \"gitea-token\"\n\
                    bot_user = \"b\"\n[webhook]\nsecret_file = \"/etc/cc-ci/hook\"\n";
        let parsed: Config = toml::from_str(text).unwrap();

        let mut with = parsed.clone();
        with.resolve_credentials(Some(OsStr::new("/run/credentials/cc-ci-poller.service")));
        let g = with.gitea.unwrap();
        assert_eq!(
            g.token_file,
            PathBuf::from("/run/credentials/cc-ci-poller.service/gitea-token")
        );
        assert_eq!(
            g.token_path().unwrap(),
            g.token_file,
            "resolved once, stays"
        );
        assert_eq!(
            with.webhook.unwrap().secret_file,
            PathBuf::from("/etc/cc-ci/hook")
        );

        let mut without = parsed;
        without.resolve_credentials(None);
        let g = without.gitea.unwrap();
        assert_eq!(g.token_file, PathBuf::from("gitea-token"));
        let err = credential_path("gitea.token_file", &g.token_file, None::<&str>)
            .unwrap_err()
            .to_string();
        assert!(err.contains("LoadCredential=gitea-token:"), "{err}");
    }
}
