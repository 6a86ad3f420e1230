//! The seam between the ladder's decisions and the world: everything a run does to
//! its app (through abra), its recipe checkout (git) and the engine (docker), and the
//! CI-side hooks and tests it starts. [`Real`] is production; the ladder's unit tests
//! script an engine of their own and run in milliseconds.
use super::abra::{self, Abra};
use super::compose::{self, Compose};
use super::recipe::{self, Checkout};
use super::swarm;
use crate::docker::{self, Docker};
use crate::process::{self, Cmd, Executor, Output};
use crate::results::Tier;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Abra(#[from] abra::Error),
    #[error(transparent)]
    Docker(#[from] docker::Error),
    #[error(transparent)]
    Recipe(#[from] recipe::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Compose(#[from] compose::Error),
    #[error("cannot copy {0} into the recipe checkout: {1}")]
    Overlay(PathBuf, #[source] std::io::Error),
    #[error("cannot confine the recipe's tests: {0}")]
    Confine(#[from] crate::confine::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What the ladder asks of the world for one run's app.
pub trait Engine {
    /// The Docker engine the app runs on.
    fn docker(&self) -> &dyn Docker;
    /// Put the recipe's working tree at `commit`: what a chaos deploy deploys.
    fn checkout(&self, commit: &str) -> Result<()>;
    /// Copy the recipe's `tests/` at `commit` into `dest/tests/`; false if it has none.
    fn snapshot_tests(&self, commit: &str, dest: &Path) -> Result<bool>;
    /// `abra app new` for the run's domain.
    fn new_app(&self) -> Result<()>;
    /// Set `KEY=value` lines in the app's env file.
    fn set_app_env(&self, vars: &[(String, String)]) -> Result<()>;
    /// Copy the CI-side compose overlay into the checkout and add it to the app's
    /// `COMPOSE_FILE`.
    fn add_overlay(&self, overlay: &Path) -> Result<()>;
    /// `abra app secret generate`: the values are masked from then on.
    fn generate_secrets(&self) -> Result<usize>;
    /// The app's compose files as they deploy now (the checkout's, by the app's env).
    fn compose(&self) -> Result<Compose>;
    /// One deploy, recorded in the run's deploy file before it is issued.
    fn deploy(&self, tier: Tier, version: &str, force: bool) -> Result<()>;
    /// Deploys recorded in the run's deploy file (by the runner and by hooks).
    fn deploys_recorded(&self) -> u32;
    fn backup(&self) -> Result<()>;
    fn restore(&self) -> Result<()>;
    fn undeploy(&self) -> Result<()>;
    /// `abra app rm`: volumes, secrets and the env file.
    fn remove_app(&self) -> Result<()>;
    /// Whether the app's env file exists (abra knows the app).
    fn app_exists(&self) -> bool;
    /// Run a CI hook or a CI-side test (the operator's) with the run's environment
    /// contract.
    fn run(&self, cmd: Cmd) -> Result<Output>;
    /// Run a test the recipe ships (pull-request code) the same way, but confined:
    /// unprivileged, without capabilities, under landlock, in the run's cgroup, and
    /// reaching the engine only through the run's endpoint (`crate::confine`).
    /// Its JUnit report (`CCCI_JUNIT_FILE`, in the test's own scratch dir) is copied to
    /// `junit` afterwards.
    fn run_untrusted(&self, cmd: Cmd, name: &str, junit: &Path) -> Result<Output>;
    /// What the untrusted tests were confined by, once one ran.
    fn confinement(&self) -> Option<crate::confine::Enforcement>;
}

/// Production: the pinned abra, the run's checkout and the `docker` CLI, all through
/// the run's executor. Hooks and tests get the environment contract abra gets.
pub struct Real<'a> {
    pub exec: &'a Executor,
    pub docker: docker::Cli<'a>,
    pub abra: Abra<'a>,
    pub checkout: Checkout,
    pub confine: crate::confine::Config,
    /// What the run's confinement covers; started at the first untrusted test.
    pub scope: crate::confine::Scope,
    pub confinement: std::cell::RefCell<Option<crate::confine::Confinement>>,
}

/// The compose overlay's name inside the checkout.
pub const OVERLAY: &str = "compose.ccci.yml";

impl Engine for Real<'_> {
    fn docker(&self) -> &dyn Docker {
        &self.docker
    }

    fn checkout(&self, commit: &str) -> Result<()> {
        Ok(self.checkout.checkout(commit)?)
    }

    fn snapshot_tests(&self, commit: &str, dest: &Path) -> Result<bool> {
        Ok(self.checkout.snapshot_tests(commit, dest)?)
    }

    fn new_app(&self) -> Result<()> {
        Ok(self.abra.new_app(&self.checkout.recipe)?)
    }

    fn set_app_env(&self, vars: &[(String, String)]) -> Result<()> {
        Ok(self.abra.set_env(vars)?)
    }

    fn add_overlay(&self, overlay: &Path) -> Result<()> {
        std::fs::copy(overlay, self.checkout.dir.join(OVERLAY))
            .map_err(|e| Error::Overlay(overlay.to_owned(), e))?;
        Ok(self.abra.add_compose_file(OVERLAY)?)
    }

    fn generate_secrets(&self) -> Result<usize> {
        Ok(self.abra.generate_secrets()?)
    }

    fn compose(&self) -> Result<Compose> {
        Ok(Compose::of_app(
            &self.checkout.dir,
            &self.abra.env_file(),
            &swarm::stack_name(&self.abra.domain),
        )?)
    }

    fn deploy(&self, tier: Tier, version: &str, force: bool) -> Result<()> {
        Ok(self.abra.deploy(tier.as_str(), version, force)?)
    }

    fn deploys_recorded(&self) -> u32 {
        abra::count_deploys(&self.abra.deploys_file)
    }

    fn backup(&self) -> Result<()> {
        Ok(self.abra.backup()?)
    }

    fn restore(&self) -> Result<()> {
        Ok(self.abra.restore()?)
    }

    fn undeploy(&self) -> Result<()> {
        Ok(self.abra.undeploy()?)
    }

    fn remove_app(&self) -> Result<()> {
        Ok(self.abra.remove()?)
    }

    fn app_exists(&self) -> bool {
        self.abra.env_file().exists()
    }

    fn run(&self, cmd: Cmd) -> Result<Output> {
        Ok(self.exec.run(cmd.envs(&self.abra.env))?)
    }

    fn run_untrusted(&self, cmd: Cmd, name: &str, junit: &Path) -> Result<Output> {
        let mut slot = self.confinement.borrow_mut();
        if slot.is_none() {
            let started = crate::confine::Confinement::start(&self.confine, self.scope.clone())?;
            self.exec.note(&started.enforcement().summary());
            *slot = Some(started);
        }
        let confinement = slot.as_ref().expect("started above");
        let confined = confinement.test(name)?;
        let report = confined.scratch().join("junit.xml");
        let out = self.exec.run(
            cmd.envs(&self.abra.env)
                .env("CCCI_JUNIT_FILE", &report)
                .confined(confined),
        );
        if report.is_file() {
            let _ = std::fs::copy(&report, junit);
        }
        for line in confinement.endpoint().take_log() {
            self.exec.note(&line);
        }
        confinement.reap();
        Ok(out?)
    }

    fn confinement(&self) -> Option<crate::confine::Enforcement> {
        self.confinement
            .borrow()
            .as_ref()
            .map(|c| c.enforcement().clone())
    }
}

#[cfg(test)]
pub(crate) mod scripted {
    //! A scripted engine for the ladder's unit tests: a recipe with one service `app`
    //! whose volume `data` is mounted at `/data`, on the scripted Docker of
    //! [`crate::reap`] (reached through [`ScriptedHost`], which adds what the
    //! containers hold). Each operation can be told to fail; deploys, backups and
    //! restores act on in-memory state the way abra and backupbot would on a real
    //! swarm.
    use super::{Engine, Error, Result};
    use crate::docker::{self, Docker, Kind, Network, Object, Task};
    use crate::process::{Cmd, Exit, Output};
    use crate::reap::scripted::ScriptedDocker;
    use crate::results::Tier;
    use crate::runner::abra;
    use crate::runner::compose::{self, Compose, Mount, MountKind};
    use std::cell::{Cell, RefCell};
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// How a scripted operation fails.
    #[derive(Debug, Clone)]
    pub enum Failure {
        /// abra exits 1 with this stderr.
        Abra(String),
        /// abra prints output that is not its machine format.
        Format,
        /// git cannot do it.
        Git,
        /// The compose files cannot be read.
        Compose(String),
        /// The app's env file cannot be read (line 3).
        Env(String),
    }

    /// The scripted Docker plus what the app's containers hold: directories, and a
    /// row store that understands the data probe commands of the tests
    /// (`… insert "$1"` records `$1`, `… select` prints the rows).
    #[derive(Default)]
    pub struct ScriptedHost {
        pub inner: ScriptedDocker,
        /// Paths that are directories in every container.
        pub dirs: RefCell<BTreeSet<String>>,
        /// Rows of each service's store.
        pub rows: RefCell<BTreeMap<String, Vec<String>>>,
        /// The insert command does not store anything.
        pub forgetful_store: Cell<bool>,
    }

    impl std::ops::Deref for ScriptedHost {
        type Target = ScriptedDocker;
        fn deref(&self) -> &ScriptedDocker {
            &self.inner
        }
    }

    fn ok(stdout: String) -> Output {
        Output {
            exit: Exit::Success,
            stdout: stdout.into_bytes(),
            stderr: String::new(),
        }
    }

    impl Docker for ScriptedHost {
        fn check(&self) -> docker::Result<()> {
            self.inner.check()
        }
        fn objects(&self, kind: Kind) -> docker::Result<Vec<Object>> {
            self.inner.objects(kind)
        }
        fn remove(&self, kind: Kind, name: &str) -> docker::Result<()> {
            self.inner.remove(kind, name)
        }
        fn services(&self, stack: &str) -> docker::Result<Vec<String>> {
            self.inner.services(stack)
        }
        fn network(&self, name: &str) -> docker::Result<Option<Network>> {
            self.inner.network(name)
        }
        fn health(&self, stack: &str) -> docker::Result<Option<String>> {
            self.inner.health(stack)
        }
        fn tasks(&self, service: &str) -> docker::Result<(String, Vec<Task>)> {
            self.inner.tasks(service)
        }
        fn service_logs(&self, service: &str) -> docker::Result<String> {
            self.inner.service_logs(service)
        }
        fn container(&self, stack: &str, service: &str) -> docker::Result<Option<String>> {
            self.inner.container(stack, service)
        }
        fn exec(&self, container: &str, argv: &[&str]) -> docker::Result<Output> {
            let service = container.trim_start_matches("container-").to_string();
            let script = match argv {
                ["sh", "-c", script, ..] => *script,
                _ => return self.inner.exec(container, argv),
            };
            if script == crate::runner::probe::PATH_KIND {
                self.inner.exec(container, argv)?;
                let path = argv.get(4).copied().unwrap_or_default();
                let kind = if self.dirs.borrow().contains(path) {
                    "dir"
                } else if self
                    .inner
                    .files
                    .borrow()
                    .contains_key(&(service, path.to_string()))
                {
                    "file"
                } else {
                    "none"
                };
                return Ok(ok(format!("{kind}\n")));
            }
            if script.contains("insert") {
                self.inner.exec(container, argv)?;
                if !self.forgetful_store.get() {
                    let value = argv.get(4).copied().unwrap_or_default();
                    self.rows
                        .borrow_mut()
                        .entry(service)
                        .or_default()
                        .push(value.to_string());
                }
                return Ok(ok(String::new()));
            }
            if script.contains("select") {
                self.inner.exec(container, argv)?;
                let rows = self
                    .rows
                    .borrow()
                    .get(&service)
                    .cloned()
                    .unwrap_or_default();
                return Ok(ok(rows.iter().map(|r| format!("{r}\n")).collect()));
            }
            self.inner.exec(container, argv)
        }
        fn wait(&self, d: Duration) {
            self.inner.wait(d)
        }
        fn now(&self) -> Instant {
            self.inner.now()
        }
    }

    /// What a backup holds: the containers' files and the stores' rows.
    type Snapshot = (
        BTreeMap<(String, String), String>,
        BTreeMap<String, Vec<String>>,
    );

    pub struct ScriptedEngine {
        pub docker: ScriptedHost,
        pub stack: String,
        /// Service labels (`deploy.labels`) of the service `app`.
        pub labels: RefCell<BTreeMap<String, String>>,
        /// Mounts of the service `app`.
        pub mounts: RefCell<Vec<Mount>>,
        /// More of the compose model: other services, top-level networks...
        pub more: RefCell<Compose>,
        /// Operation name → how it fails (once per call, every call).
        pub failures: RefCell<BTreeMap<&'static str, Failure>>,
        /// A deploy with this commit checked out breaks the data (an upgrade that
        /// loses it).
        pub loses_data_at: RefCell<Option<String>>,
        /// `restore` succeeds but brings nothing back.
        pub restore_is_a_noop: Cell<bool>,
        /// The recipe ships `tests/` at the tested commit.
        pub ships_tests: Cell<bool>,
        /// Exit of each test or hook, by file name (default: success).
        pub exits: RefCell<BTreeMap<String, Exit>>,
        /// An extra deploy a hook records (a hook that deploys without counting).
        pub extra_deploys: Cell<u32>,
        pub checked_out: RefCell<Option<String>>,
        pub app: Cell<bool>,
        pub deploys: Cell<u32>,
        pub env: RefCell<Vec<(String, String)>>,
        pub overlays: RefCell<Vec<String>>,
        backups: RefCell<Snapshot>,
        pub ran: RefCell<Vec<String>>,
        /// Tests run confined (the recipe's own).
        pub untrusted: Cell<u32>,
    }

    impl ScriptedEngine {
        pub fn new(stack: &str) -> ScriptedEngine {
            let labels = [
                ("backupbot.backup", "true"),
                ("backupbot.backup.path", "/data"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let docker = ScriptedHost::default();
            docker.dirs.borrow_mut().insert("/data".into());
            ScriptedEngine {
                docker,
                stack: stack.into(),
                labels: RefCell::new(labels),
                mounts: RefCell::new(vec![Mount {
                    kind: MountKind::Volume,
                    source: Some("data".into()),
                    target: "/data".into(),
                    read_only: false,
                }]),
                more: RefCell::default(),
                failures: RefCell::default(),
                loses_data_at: RefCell::default(),
                restore_is_a_noop: Cell::new(false),
                ships_tests: Cell::new(false),
                exits: RefCell::default(),
                extra_deploys: Cell::new(0),
                checked_out: RefCell::default(),
                app: Cell::new(false),
                deploys: Cell::new(0),
                env: RefCell::default(),
                overlays: RefCell::default(),
                backups: RefCell::default(),
                ran: RefCell::default(),
                untrusted: Cell::new(0),
            }
        }

        pub fn fail(&self, op: &'static str, how: Failure) {
            self.failures.borrow_mut().insert(op, how);
        }

        /// The engine's tasks report these states (for diagnostics and causes).
        pub fn tasks(&self, lines: &[&str]) {
            *self.docker.tasks.borrow_mut() = lines.iter().map(|l| Task::parse(l)).collect();
        }

        /// `health` answers these problems first (then healthy).
        pub fn unhealthy(&self, problems: &[&str]) {
            self.docker
                .health
                .borrow_mut()
                .extend(problems.iter().map(|p| Some(p.to_string())));
        }

        fn check(&self, op: &'static str) -> Result<()> {
            match self.failures.borrow().get(op) {
                None => Ok(()),
                Some(Failure::Abra(stderr)) => Err(Error::Abra(abra::Error::Failed {
                    command: op.into(),
                    exit: Exit::Code(1),
                    stderr: stderr.clone(),
                })),
                Some(Failure::Format) => Err(Error::Abra(abra::Error::Format {
                    command: op.into(),
                    detail: "no JSON array".into(),
                })),
                Some(Failure::Git) => Err(Error::Recipe(crate::runner::recipe::Error::Git {
                    args: op.into(),
                    dir: "/co".into(),
                    stderr: "fatal: bad object".into(),
                })),
                Some(Failure::Compose(detail)) => Err(Error::Compose(compose::Error::Yaml {
                    path: "compose.yml".into(),
                    detail: detail.clone(),
                })),
                Some(Failure::Env(detail)) => Err(Error::Compose(compose::Error::Env(
                    crate::runner::envfile::Error::Syntax {
                        path: "app.env".into(),
                        line: 3,
                        detail: detail.clone(),
                    },
                ))),
            }
        }

        fn app_service(&self) -> String {
            format!("{}_app", self.stack)
        }

        fn clear_data(&self) {
            self.docker.files.borrow_mut().clear();
            self.docker.rows.borrow_mut().clear();
        }
    }

    impl Engine for ScriptedEngine {
        fn docker(&self) -> &dyn Docker {
            &self.docker
        }

        fn checkout(&self, commit: &str) -> Result<()> {
            self.check("checkout")?;
            *self.checked_out.borrow_mut() = Some(commit.into());
            Ok(())
        }

        fn snapshot_tests(&self, _commit: &str, dest: &Path) -> Result<bool> {
            self.check("snapshot")?;
            if self.ships_tests.get() {
                let dir = dest.join("tests");
                std::fs::create_dir_all(&dir).unwrap();
                let file = dir.join("01-recipe.sh");
                std::fs::write(&file, "#!/bin/sh\n").unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            Ok(self.ships_tests.get())
        }

        fn new_app(&self) -> Result<()> {
            self.check("new_app")?;
            self.app.set(true);
            Ok(())
        }

        fn set_app_env(&self, vars: &[(String, String)]) -> Result<()> {
            self.check("set_app_env")?;
            self.env.borrow_mut().extend(vars.iter().cloned());
            Ok(())
        }

        fn add_overlay(&self, overlay: &Path) -> Result<()> {
            self.overlays
                .borrow_mut()
                .push(overlay.to_string_lossy().into_owned());
            Ok(())
        }

        fn generate_secrets(&self) -> Result<usize> {
            self.check("generate_secrets")?;
            self.docker
                .add(Kind::Secret, &format!("{}_admin_v1", self.stack), None);
            Ok(1)
        }

        fn compose(&self) -> Result<Compose> {
            self.check("compose")?;
            let mut c = self.more.borrow().clone();
            let app = c.services.entry("app".into()).or_default();
            app.deploy.labels = self.labels.borrow().clone();
            app.volumes = self.mounts.borrow().clone();
            Ok(c)
        }

        fn deploy(&self, _tier: Tier, _version: &str, _force: bool) -> Result<()> {
            self.deploys.set(self.deploys.get() + 1);
            self.check("deploy")?;
            let d = &self.docker;
            if !d
                .listing()
                .iter()
                .any(|o| o == &format!("stack {}", self.stack))
            {
                d.add(Kind::Stack, &self.stack, None);
                d.add(Kind::Service, &self.app_service(), Some(&self.stack));
                d.add(
                    Kind::Network,
                    &format!("{}_default", self.stack),
                    Some(&self.stack),
                );
            }
            if !d.listing().iter().any(|o| o.starts_with("volume")) {
                d.add(
                    Kind::Volume,
                    &format!("{}_data", self.stack),
                    Some(&self.stack),
                );
            }
            if *self.loses_data_at.borrow() == *self.checked_out.borrow() {
                self.clear_data();
            }
            Ok(())
        }

        fn deploys_recorded(&self) -> u32 {
            self.deploys.get() + self.extra_deploys.get()
        }

        fn backup(&self) -> Result<()> {
            self.check("backup")?;
            *self.backups.borrow_mut() = (
                self.docker.files.borrow().clone(),
                self.docker.rows.borrow().clone(),
            );
            Ok(())
        }

        fn restore(&self) -> Result<()> {
            self.check("restore")?;
            if !self.restore_is_a_noop.get() {
                let (files, rows) = self.backups.borrow().clone();
                *self.docker.files.borrow_mut() = files;
                *self.docker.rows.borrow_mut() = rows;
            }
            Ok(())
        }

        fn undeploy(&self) -> Result<()> {
            self.check("undeploy")?;
            self.docker.remove(Kind::Stack, &self.stack)?;
            Ok(())
        }

        fn remove_app(&self) -> Result<()> {
            self.check("remove_app")?;
            for o in self.docker.listing() {
                let (kind, name) = o.split_once(' ').unwrap();
                if matches!(kind, "volume" | "secret") && name.starts_with(&self.stack) {
                    let kind = if kind == "volume" {
                        Kind::Volume
                    } else {
                        Kind::Secret
                    };
                    self.docker.remove(kind, name)?;
                }
            }
            self.clear_data();
            self.app.set(false);
            Ok(())
        }

        fn app_exists(&self) -> bool {
            self.app.get()
        }

        fn run_untrusted(&self, cmd: Cmd, _name: &str, _junit: &Path) -> Result<Output> {
            self.untrusted.set(self.untrusted.get() + 1);
            self.run(cmd)
        }

        fn confinement(&self) -> Option<crate::confine::Enforcement> {
            None
        }

        fn run(&self, cmd: Cmd) -> Result<Output> {
            let name = cmd.file_name();
            self.ran.borrow_mut().push(name.clone());
            let exit = self
                .exits
                .borrow()
                .get(&name)
                .cloned()
                .unwrap_or(Exit::Success);
            Ok(Output {
                exit,
                stdout: Vec::new(),
                stderr: String::new(),
            })
        }
    }
}
