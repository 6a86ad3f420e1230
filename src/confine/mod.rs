//! Confinement of pull-request code: a recipe's tests run as an unprivileged user in
//! the run's cgroup, with no capabilities, `no_new_privs` and landlock, and reach the
//! Docker engine only through the run's endpoint, which answers for the run's stack
//! alone. Threat model and what remains exposed: `docs/security.md`, "Confinement of
//! pull-request code".
//!
//! The steps run in the child between fork and exec, in this fixed order (the code
//! in [`Confined::apply`] follows it line by line):
//!
//! 1. own process group and PDEATHSIG (the test dies with the runner, even by SIGKILL);
//! 2. the run's cgroup ([`cgroup`]): the test cannot outlive the run or escape its
//!    limits, and the runner kills what it leaves behind;
//! 3. the unprivileged identity ([`identity`]): capabilities kept across the switch
//!    only long enough for step 4, supplementary groups dropped, then setgid and
//!    setuid; PDEATHSIG set again (a credential change clears it) and the child gives
//!    up if the runner died meanwhile;
//! 4. capabilities ([`capabilities`]): bounding, ambient, inheritable, permitted and
//!    effective sets emptied with the `caps` crate;
//! 5. `no_new_privs`: a setuid binary cannot give privileges back;
//! 6. landlock ([`landlock`]) with the crate's best-effort ABI: the system read-only
//!    except hidden paths, the test's scratch dir and the run's writable dirs
//!    read-write, signals and abstract sockets scoped to the test;
//! 7. exec.
//!
//! Everything that can fail for a reason of the host (not root, no landlock, no
//! cgroup v2) is probed once in [`Confinement::start`]: the run fails closed there
//! with an error naming each missing step, unless the operator's `allow_unconfined`
//! says to go on, and [`Enforcement`] then records what was missing for the results.
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod capabilities;
pub mod cgroup;
pub mod endpoint;
pub mod identity;
pub mod landlock;

/// `[runner.confine]`: how a recipe's tests are confined.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The uid tests run as: never 0, never the owner of the engine's socket.
    pub uid: u32,
    /// The gid tests run as: never 0, never the group of the engine's socket (the
    /// `docker` group). Supplementary groups are always dropped.
    pub gid: u32,
    /// Whether `docker exec --user root` (or `0`) is let through the endpoint.
    pub exec_as_root: bool,
    /// Where a step cannot be applied on this host, run the tests anyway with the
    /// steps that can be, and say so in the results. Off: the run fails.
    pub allow_unconfined: bool,
    /// The Docker engine's socket, which the endpoint forwards to.
    pub engine_socket: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            uid: 65534,
            gid: 65534,
            exec_as_root: false,
            allow_unconfined: false,
            engine_socket: PathBuf::from("/var/run/docker.sock"),
        }
    }
}

/// What one run's confinement covers: given by the runner.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Names the run's cgroup (`cc-ci-tests.<label>`); the run id.
    pub label: String,
    /// The run's stack (`com.docker.stack.namespace`): all the endpoint answers for.
    pub stack: String,
    /// A directory of the runner's for this run: the endpoint's socket and the
    /// tests' scratch dirs are made in it. Created if missing.
    pub dir: PathBuf,
    /// Read-only for tests beyond the system: the test executables' directories.
    pub readable: Vec<PathBuf>,
    /// Writable for tests besides their scratch dir: the run's test artifacts dir.
    /// Made writable for the test identity (owner) before the first test.
    pub writable: Vec<PathBuf>,
    /// Never readable by tests: credentials, secrets dirs, token files, the poller's
    /// state, the runs' directories. [`ALWAYS_HIDDEN`] and the engine's socket are
    /// added.
    pub hidden: Vec<PathBuf>,
}

/// Hidden from every test whatever the configuration says.
pub const ALWAYS_HIDDEN: &[&str] = &[
    "/run/credentials",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/docker",
    "/run/containerd",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/root",
];

/// One confinement step, as named in errors and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Cgroup,
    Identity,
    Capabilities,
    Landlock,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Cgroup => "the run's cgroup",
            Step::Identity => "the unprivileged identity",
            Step::Capabilities => "dropping capabilities",
            Step::Landlock => "landlock",
        })
    }
}

/// A step that cannot be applied on this host, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    pub step: Step,
    pub reason: String,
}

/// What the tests of a run were confined by: data for the results and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    /// Every step applied: false only under `allow_unconfined`.
    pub confined: bool,
    /// Steps that could not be applied (empty when `confined`).
    pub missing: Vec<Missing>,
    pub uid: u32,
    pub gid: u32,
    /// The landlock ABI the kernel offers (`None`: no landlock).
    pub landlock_abi: Option<i32>,
    /// `fully_enforced`, `partially_enforced` (an older ABI: some rights are not
    /// handled) or `not_enforced`.
    pub landlock_status: String,
    /// The run's cgroup, when there is one.
    pub cgroup: Option<PathBuf>,
    /// The endpoint's socket, given to tests as `DOCKER_HOST=unix://…`.
    pub endpoint: PathBuf,
}

impl Enforcement {
    /// One line for run.log.
    pub fn summary(&self) -> String {
        let landlock = match self.landlock_abi {
            Some(abi) => format!(
                "landlock ABI {abi} {}",
                self.landlock_status.replace('_', " ")
            ),
            None => "no landlock".into(),
        };
        let mut s = format!(
            "tests run confined: uid {} gid {}, {landlock}, cgroup {}, Docker endpoint {}",
            self.uid,
            self.gid,
            self.cgroup
                .as_deref()
                .map_or("none".into(), |p| p.display().to_string()),
            self.endpoint.display()
        );
        if !self.confined {
            s = format!("tests run UNCONFINED (allow_unconfined): {s}; missing:");
            for m in &self.missing {
                s.push_str(&format!(" {} ({});", m.step, m.reason));
            }
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("confine: uid and gid of tests must not be 0 (runner.confine.uid = {0}, gid = {1})")]
    RootIdentity(u32, u32),
    #[error(
        "confine: the test identity {0}:{1} can reach the engine socket {2} (its owner or group); \
         set runner.confine.uid/gid to a user outside the docker group"
    )]
    DockerIdentity(u32, u32, PathBuf),
    #[error("confine: cannot inspect the engine socket {0}: {1}")]
    EngineSocket(PathBuf, #[source] io::Error),
    #[error(
        "confine: cannot confine the tests as asked:{}; fix the host, or set \
         runner.confine.allow_unconfined = true to run them unconfined (the results say so)",
        .0.iter().map(|m| format!(" {} ({})", m.step, m.reason)).collect::<String>()
    )]
    CannotConfine(Vec<Missing>),
    #[error("confine: cannot prepare {0}: {1}")]
    PrepareDir(PathBuf, #[source] io::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(transparent)]
    Landlock(#[from] landlock::Error),
    #[error(transparent)]
    Endpoint(#[from] endpoint::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A run's confinement: its cgroup, its endpoint, what the host allows.
pub struct Confinement {
    config: Config,
    scope: Scope,
    hidden: Vec<PathBuf>,
    enforcement: Enforcement,
    cgroup: Option<cgroup::RunCgroup>,
    endpoint: endpoint::Endpoint,
    tests: std::sync::atomic::AtomicU32,
}

impl Confinement {
    /// Probe the host, create the run's cgroup, start the run's Docker endpoint.
    /// Fails closed (naming every missing step) unless `allow_unconfined`.
    pub fn start(config: &Config, scope: Scope) -> Result<Confinement> {
        if config.uid == 0 || config.gid == 0 {
            return Err(Error::RootIdentity(config.uid, config.gid));
        }
        identity::check_not_docker(config.uid, config.gid, &config.engine_socket)?;
        std::fs::create_dir_all(&scope.dir).map_err(|e| Error::PrepareDir(scope.dir.clone(), e))?;
        let mut missing = Vec::new();
        if let Err(reason) = identity::can_switch() {
            missing.push(Missing {
                step: Step::Identity,
                reason,
            });
        }
        if let Err(reason) = capabilities::can_drop() {
            missing.push(Missing {
                step: Step::Capabilities,
                reason,
            });
        }
        let probe = landlock::probe();
        if !probe.enforced() {
            missing.push(Missing {
                step: Step::Landlock,
                reason: probe.describe(),
            });
        }
        let cgroup = match cgroup::RunCgroup::create(&format!("cc-ci-tests.{}", scope.label)) {
            Ok(c) => Some(c),
            Err(e) => {
                missing.push(Missing {
                    step: Step::Cgroup,
                    reason: e.to_string(),
                });
                None
            }
        };
        if !missing.is_empty() && !config.allow_unconfined {
            return Err(Error::CannotConfine(missing));
        }
        let switch = !missing.iter().any(|m| m.step == Step::Identity);
        let (uid, gid) = if switch {
            (config.uid, config.gid)
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        };
        for dir in &scope.writable {
            identity::make_writable(dir, uid, gid)
                .map_err(|e| Error::PrepareDir(dir.clone(), e))?;
        }
        let socket = scope.dir.join("docker.sock");
        let endpoint = endpoint::Endpoint::start(endpoint::Policy {
            socket: socket.clone(),
            engine: config.engine_socket.clone(),
            stack: scope.stack.clone(),
            exec_as_root: config.exec_as_root,
            client_uid: uid,
            cgroup: cgroup.as_ref().map(|c| c.relative().to_path_buf()),
        })?;
        let mut hidden: Vec<PathBuf> = scope.hidden.clone();
        hidden.extend(ALWAYS_HIDDEN.iter().map(PathBuf::from));
        hidden.push(config.engine_socket.clone());
        let enforcement = Enforcement {
            confined: missing.is_empty(),
            missing,
            uid,
            gid,
            landlock_abi: probe.abi,
            landlock_status: probe.status.into(),
            cgroup: cgroup.as_ref().map(|c| c.path().to_path_buf()),
            endpoint: socket,
        };
        Ok(Confinement {
            config: config.clone(),
            scope,
            hidden,
            enforcement,
            cgroup,
            endpoint,
            tests: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// What the tests are confined by (for results.json and run.log).
    pub fn enforcement(&self) -> &Enforcement {
        &self.enforcement
    }

    /// The endpoint's request log: refusals name their rule (for run.log).
    pub fn endpoint(&self) -> &endpoint::Endpoint {
        &self.endpoint
    }

    /// Prepare one test: a fresh scratch dir (its `HOME` and `TMPDIR`) owned by the
    /// test identity, its environment and its landlock ruleset.
    pub fn test(&self, name: &str) -> Result<Confined> {
        let n = self.tests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let scratch = self.scope.dir.join("tests").join(format!("{n:03}-{safe}"));
        let _ = std::fs::remove_dir_all(&scratch);
        let tmp = scratch.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| Error::PrepareDir(tmp.clone(), e))?;
        let (uid, gid) = (self.enforcement.uid, self.enforcement.gid);
        for d in [&scratch, &tmp] {
            identity::make_writable(d, uid, gid).map_err(|e| Error::PrepareDir(d.clone(), e))?;
        }
        // The tests dir itself must be traversable to reach the scratch dir.
        let _ = identity::make_traversable(&self.scope.dir.join("tests"));
        let _ = identity::make_traversable(&self.scope.dir);
        let landlock = if self.applies(Step::Landlock) {
            let mut writable = self.scope.writable.clone();
            writable.push(scratch.clone());
            Some(landlock::ruleset(&landlock::Rules {
                hidden: &self.hidden,
                readable: &self.scope.readable,
                writable: &writable,
                socket: &self.enforcement.endpoint,
            })?)
        } else {
            None
        };
        let env = vec![
            ("HOME".into(), scratch.clone().into_os_string()),
            ("TMPDIR".into(), tmp.into_os_string()),
            (
                "DOCKER_CONFIG".into(),
                scratch.join(".docker").into_os_string(),
            ),
            (
                "DOCKER_HOST".into(),
                format!("unix://{}", self.enforcement.endpoint.display()).into(),
            ),
            (
                "PATH".into(),
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        Ok(Confined {
            scratch,
            env,
            landlock,
            cgroup_procs: match &self.cgroup {
                Some(c) if self.applies(Step::Cgroup) => Some(c.procs_file()?),
                _ => None,
            },
            identity: self
                .applies(Step::Identity)
                .then_some((self.config.uid, self.config.gid)),
            drop_caps: self
                .applies(Step::Capabilities)
                .then(capabilities::Drop::prepare),
        })
    }

    fn applies(&self, step: Step) -> bool {
        !self.enforcement.missing.iter().any(|m| m.step == step)
    }

    /// Kill whatever a test left running in the run's cgroup (a daemon that left the
    /// process group); returns how many processes were killed.
    pub fn reap(&self) -> usize {
        self.cgroup.as_ref().map_or(0, |c| c.kill_all())
    }
}

impl Drop for Confinement {
    fn drop(&mut self) {
        self.reap();
        if let Some(c) = &self.cgroup {
            c.remove();
        }
        let _ = std::fs::remove_dir_all(self.scope.dir.join("tests"));
    }
}

/// One test, prepared: apply it to the `Command` that runs the test.
pub struct Confined {
    scratch: PathBuf,
    env: Vec<(OsString, OsString)>,
    landlock: Option<::landlock::RulesetCreated>,
    cgroup_procs: Option<std::fs::File>,
    identity: Option<(u32, u32)>,
    drop_caps: Option<capabilities::Drop>,
}

impl Confined {
    /// The test's scratch dir (its `HOME`).
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// Make `command` run confined: its environment is replaced by the test's (the
    /// variables set on `command` are kept, `DOCKER_HOST` points at the run's
    /// endpoint, nothing else of the runner's passes) and the steps run between fork
    /// and exec in the documented order. Call it last, after any other `pre_exec`.
    pub fn apply(self, command: &mut Command) {
        let explicit: Vec<(OsString, OsString)> = command
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_os_string(), v.to_os_string())))
            .filter(|(k, _)| !k.to_string_lossy().starts_with("DOCKER_"))
            .collect();
        command.env_clear();
        command.envs(self.env.iter().filter(|(k, _)| k != "DOCKER_HOST").cloned());
        command.envs(explicit);
        command.envs(self.env.iter().filter(|(k, _)| k == "DOCKER_HOST").cloned());
        let parent = nix::unistd::getpid();
        let Confined {
            landlock: mut ruleset,
            cgroup_procs,
            identity,
            drop_caps,
            ..
        } = self;
        let landlock_required = ruleset.is_some();
        // SAFETY: the closure runs in the forked child before exec. It makes only
        // system calls (setpgid, prctl, write, setgroups, setgid, setuid, capset,
        // landlock_*), allocates nothing on its success paths, and touches memory
        // moved into it and owned by the child.
        unsafe {
            command.pre_exec(move || {
                use nix::sys::signal::Signal;
                // 1. Own process group; die with the runner.
                nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // 2. The run's cgroup.
                if let Some(procs) = &cgroup_procs {
                    cgroup::enter(procs)?;
                }
                // 3. The unprivileged identity; PDEATHSIG again (cleared by it).
                if let Some((uid, gid)) = identity {
                    identity::switch(uid, gid, drop_caps.is_some())?;
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                    if nix::unistd::getppid() != parent {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                }
                // 4. Capabilities, every set.
                if let Some(d) = &drop_caps {
                    d.apply()?;
                }
                // 5. no_new_privs.
                nix::sys::prctl::set_no_new_privs()?;
                // 6. Landlock.
                if let Some(r) = ruleset.take() {
                    landlock::restrict(r)?;
                } else if landlock_required {
                    return Err(io::Error::from_raw_os_error(libc::EPERM));
                }
                // 7. exec (by std, right after this closure).
                Ok(())
            });
        }
    }
}
