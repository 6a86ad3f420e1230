//! Shared fixtures of the runner's integration and swarm tests: the example recipes
//! built once per test binary, a CI config per test (its own app domain, state dirs
//! and CI-side recipe files), and helpers to run the real `cc-ci` binary and inspect
//! the real swarm.
#![allow(dead_code)]

pub mod confine;
pub mod gitea_double;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const BIN: &str = env!("CARGO_BIN_EXE_cc-ci");

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The abra TEST DOUBLE (tests/doubles/abra): abra cannot be installed here.
pub fn abra_double() -> PathBuf {
    repo_root().join("tests/doubles/abra")
}

/// The example recipes as git repositories with release tags, built once.
pub fn recipes() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require_swarm();
        let dir = std::env::temp_dir().join(format!("ccci-test-recipes-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(repo_root().join("examples/build.sh"))
            .arg(&dir)
            .output()
            .expect("run examples/build.sh");
        assert!(
            out.status.success(),
            "examples/build.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// Swarm tests need the real engine: fail loudly (never skip) when it is missing.
pub fn require_swarm() {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .output()
        .expect("docker CLI: run scripts/test, which installs docker.io");
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        state, "active",
        "swarm tests need an active swarm: run scripts/test (as root)"
    );
}

/// A CI setup of one test: config dir with `cc-ci.toml` and `recipes/`, state dirs.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Setup {
    /// `name` makes the app domain `<recipe>.<name>.localhost`, unique per test.
    pub fn new(name: &str) -> Setup {
        Setup::with_runner(name, "")
    }

    pub fn with_runner(name: &str, extra_runner_toml: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        copy_dir(
            &repo_root().join("examples/ci/recipes"),
            &config.join("recipes"),
        );
        let s = Setup {
            dir,
            name: name.to_string(),
        };
        std::fs::write(
            s.config(),
            format!(
                "[runner]\nabra = {:?}\nrecipes_dir = {:?}\ndomain = \"{name}.localhost\"\n{extra_runner_toml}\n\
                 [state]\ndir = {:?}\nruntime_dir = {:?}\n",
                abra_double(),
                recipes(),
                s.dir.path().join("state"),
                s.dir.path().join("run"),
            ),
        )
        .unwrap();
        s
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config/cc-ci.toml")
    }

    /// The CI-side dir of a recipe (meta.toml, hooks, tests/).
    pub fn ci_dir(&self, recipe: &str) -> PathBuf {
        let d = self.dir.path().join("config/recipes").join(recipe);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn write_hook(&self, recipe: &str, file: &str, body: &str) {
        let path = self.ci_dir(recipe).join(file);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::write(&path, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("run").args(args).arg("--config").arg(self.config());
        c
    }

    pub fn run(&self, args: &[&str]) -> RunOutput {
        RunOutput::from(self.command(args).output().expect("run cc-ci"))
    }

    /// The stack name of `<recipe>.<name>.localhost` (abra's derivation).
    pub fn stack(&self, recipe: &str) -> String {
        format!("{recipe}.{}.localhost", self.name).replace('.', "_")
    }
}

pub struct RunOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for RunOutput {
    fn from(o: Output) -> Self {
        RunOutput {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl RunOutput {
    /// The run dir, from the last stdout line `results: <path>`.
    pub fn results_path(&self) -> PathBuf {
        let last = self.stdout.lines().last().unwrap_or_default();
        let path = last.strip_prefix("results: ").unwrap_or_else(|| {
            panic!(
                "last line is not `results: ...`:\n{}\n{}",
                self.stdout, self.stderr
            )
        });
        PathBuf::from(path)
    }

    pub fn results(&self) -> Value {
        let text = std::fs::read_to_string(self.results_path()).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.results_path().parent().unwrap().to_path_buf()
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn tier<'a>(results: &'a Value, name: &str) -> &'a Value {
    results["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()
}

/// Everything of `stack` on the real engine: stacks, services, containers, volumes,
/// secrets, networks, configs.
pub fn leftovers(stack: &str) -> Vec<String> {
    let q = |args: &[&str]| -> Vec<String> {
        let out = Command::new("docker").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    };
    let label = format!("label=com.docker.stack.namespace={stack}");
    let prefix = format!("{stack}_");
    let mut all = Vec::new();
    all.extend(
        q(&["stack", "ls", "--format", "{{.Name}}"])
            .into_iter()
            .filter(|n| n == stack)
            .map(|n| format!("stack {n}")),
    );
    all.extend(
        q(&["service", "ls", "--filter", &label, "--format", "{{.Name}}"])
            .into_iter()
            .map(|n| format!("service {n}")),
    );
    all.extend(
        q(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"])
            .into_iter()
            .map(|n| format!("container {n}")),
    );
    all.extend(
        q(&["volume", "ls", "--format", "{{.Name}}"])
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .map(|n| format!("volume {n}")),
    );
    all.extend(
        q(&["secret", "ls", "--format", "{{.Name}}"])
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .map(|n| format!("secret {n}")),
    );
    all.extend(
        q(&["network", "ls", "--format", "{{.Name}}"])
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .map(|n| format!("network {n}")),
    );
    all.extend(
        q(&["config", "ls", "--format", "{{.Name}}"])
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .map(|n| format!("config {n}")),
    );
    all
}

pub fn assert_nothing_left(stack: &str) {
    let left = leftovers(stack);
    assert!(left.is_empty(), "left on the swarm after the run: {left:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A copy of an example recipe repository that a test may change.
pub fn recipe_copy(recipe: &str, into: &Path) -> PathBuf {
    let dest = into.join(recipe);
    let ok = Command::new("git")
        .args(["clone", "-q"])
        .arg(recipes().join(recipe))
        .arg(&dest)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    dest
}

/// Commit the working tree of `repo` with fixed identities.
pub fn commit_all(repo: &Path, message: &str) {
    for args in [vec!["add", "-A"], vec!["commit", "-q", "-m", message]] {
        let ok = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(&args)
            .env("GIT_AUTHOR_NAME", "test")
            .env("GIT_AUTHOR_EMAIL", "test@example.org")
            .env("GIT_COMMITTER_NAME", "test")
            .env("GIT_COMMITTER_EMAIL", "test@example.org")
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }
}

/// Run git in `repo`; its trimmed stdout.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
