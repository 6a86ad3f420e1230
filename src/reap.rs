//! What a run leaves behind and how it is removed: the swarm objects of its app's
//! stack, and its scratch dir (`ABRA_DIR`, recipe checkout, test snapshot).
//!
//! One module for every path that removes them: the runner's teardown funnel, the
//! runner's reap of an earlier dead run of its app (before it deploys), and the
//! janitor. Whether a run is alive is decided by locks only ([`crate::lock::probe`]
//! for the app, [`scratch_state`] for a scratch dir), never by what a file says.
use crate::docker::{self, Docker, Kind, Object};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One object a run left on the engine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Leftover {
    pub kind: Kind,
    pub name: String,
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// How long removal waits for what is still in use: the volumes of a removed stack
/// stay "in use" until its tasks' containers are gone, which takes seconds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Whether `object` belongs to `stack`: the stack itself, an object whose stack label
/// names it, or one without a label named `<stack>_…` (abra's secrets, services,
/// whose listing cannot show labels).
pub fn belongs(object: &Object, stack: &str) -> bool {
    match (&object.kind, &object.stack) {
        (Kind::Stack, _) => object.name == stack,
        (_, Some(label)) => label == stack,
        (_, None) => object
            .name
            .strip_prefix(stack)
            .is_some_and(|rest| rest.starts_with('_')),
    }
}

/// Everything of each of `stacks` on the engine, with one listing per kind however
/// many stacks are asked about. Stacks with nothing left are absent from the map.
pub fn find_all(
    docker: &dyn Docker,
    stacks: &[String],
) -> docker::Result<BTreeMap<String, Vec<Leftover>>> {
    let mut found: BTreeMap<String, Vec<Leftover>> = BTreeMap::new();
    for kind in Kind::ALL {
        for object in docker.objects(kind)? {
            if let Some(stack) = stacks.iter().find(|s| belongs(&object, s)) {
                found.entry(stack.clone()).or_default().push(Leftover {
                    kind,
                    name: object.name,
                });
            }
        }
    }
    Ok(found)
}

/// Everything of `stack` on the engine.
pub fn find(docker: &dyn Docker, stack: &str) -> docker::Result<Vec<Leftover>> {
    Ok(find_all(docker, &[stack.to_string()])?
        .remove(stack)
        .unwrap_or_default())
}

/// Remove everything of `stack`, directly through the engine: the stack first (which
/// takes its services, networks, secrets and configs), then each object left, again
/// until nothing is left or `patience` runs out. Returns what could not be removed.
pub fn remove(
    docker: &dyn Docker,
    stack: &str,
    patience: Duration,
) -> docker::Result<Vec<Leftover>> {
    let until = docker.now() + patience;
    loop {
        let left = find(docker, stack)?;
        if left.is_empty() || docker.now() >= until {
            return Ok(left);
        }
        for item in &left {
            // Refusals (in use, already gone) are expected while the stack goes
            // away; what is really stuck is still found when patience runs out.
            let _ = docker.remove(item.kind, &item.name);
        }
        docker.wait(Duration::from_millis(500));
    }
}

/// The file in a run's scratch dir naming its app domain, locked by the run for as
/// long as it lives.
pub const SCRATCH_MARK: &str = "domain";

/// Mark `scratch` as the dir of a live run of `domain`: lock its mark first, then
/// write the domain (so a mark with content and no lock is a dead run's). Held for
/// the life of the returned file.
pub fn mark_scratch(scratch: &Path, domain: &str) -> std::io::Result<File> {
    let mut file = File::create(scratch.join(SCRATCH_MARK))?;
    file.lock()?;
    file.write_all(domain.as_bytes())?;
    Ok(file)
}

/// What a scratch dir's mark says about its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScratchState {
    /// Its run holds the mark's lock.
    Live,
    /// Nobody holds the lock and the domain was written: its run is gone.
    Dead { domain: String },
    /// Nobody holds the lock and nothing was written yet: a run between creating
    /// and locking its mark (or one that died there: reaped once it is old).
    Unmarked,
}

/// Empty marks older than this belong to runs that died before writing them.
const UNMARKED_GRACE: Duration = Duration::from_secs(600);

/// The state of the scratch dir `dir` (non-blocking: a probe of the mark's lock).
pub fn scratch_state(dir: &Path) -> ScratchState {
    let Ok(file) = File::open(dir.join(SCRATCH_MARK)) else {
        return ScratchState::Unmarked;
    };
    if file.try_lock_shared().is_err() {
        return ScratchState::Live;
    }
    let domain = std::fs::read_to_string(dir.join(SCRATCH_MARK)).unwrap_or_default();
    if domain.is_empty() {
        ScratchState::Unmarked
    } else {
        ScratchState::Dead { domain }
    }
}

/// The scratch dirs under `runs_dir` whose runs are gone, with their app domains
/// (`None`: the run died before writing its mark). `except` is never listed (the
/// caller's own run).
pub fn dead_scratch(runs_dir: &Path, except: Option<&str>) -> Vec<(PathBuf, Option<String>)> {
    let mut dead = Vec::new();
    for entry in std::fs::read_dir(runs_dir).into_iter().flatten().flatten() {
        let dir = entry.path();
        if !dir.is_dir() || except.is_some_and(|own| entry.file_name() == own) {
            continue;
        }
        match scratch_state(&dir) {
            ScratchState::Live => {}
            ScratchState::Dead { domain } => dead.push((dir, Some(domain))),
            ScratchState::Unmarked => {
                let old = std::fs::metadata(&dir)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > UNMARKED_GRACE);
                if old {
                    dead.push((dir, None));
                }
            }
        }
    }
    dead.sort();
    dead
}

#[cfg(test)]
pub(crate) mod scripted {
    //! A scripted engine for unit tests of reap and ladder decisions: objects live in
    //! memory, time is virtual, and every call is recorded.
    use crate::docker::{self, Docker, Kind, Network, Object, Task};
    use crate::process::{Exit, Output};
    use std::cell::{Cell, RefCell};
    use std::collections::{BTreeMap, VecDeque};
    use std::time::{Duration, Instant};

    pub struct ScriptedDocker {
        pub objects: RefCell<Vec<Object>>,
        /// Objects that refuse removal this many more times (in use).
        pub stuck: RefCell<BTreeMap<String, u32>>,
        /// Objects that never go away.
        pub permanent: RefCell<Vec<String>>,
        /// Successive answers of `health`, then `health_after` (`None`: healthy).
        pub health: RefCell<VecDeque<Option<String>>>,
        pub health_after: RefCell<Option<String>>,
        pub tasks: RefCell<Vec<Task>>,
        /// Files inside containers, keyed by (service, path).
        pub files: RefCell<BTreeMap<(String, String), String>>,
        /// Services with no running container.
        pub no_container: RefCell<Vec<String>>,
        pub calls: RefCell<Vec<String>>,
        pub fail_check: RefCell<Option<String>>,
        start: Instant,
        clock: Cell<Duration>,
    }

    impl Default for ScriptedDocker {
        fn default() -> Self {
            ScriptedDocker {
                objects: RefCell::default(),
                stuck: RefCell::default(),
                permanent: RefCell::default(),
                health: RefCell::default(),
                health_after: RefCell::default(),
                tasks: RefCell::default(),
                files: RefCell::default(),
                no_container: RefCell::default(),
                calls: RefCell::default(),
                fail_check: RefCell::default(),
                start: Instant::now(),
                clock: Cell::new(Duration::ZERO),
            }
        }
    }

    impl ScriptedDocker {
        pub fn add(&self, kind: Kind, name: &str, stack: Option<&str>) {
            self.objects.borrow_mut().push(Object {
                kind,
                name: name.into(),
                stack: stack.map(String::from),
            });
        }

        /// What is on the engine, as `kind name`.
        pub fn listing(&self) -> Vec<String> {
            self.objects
                .borrow()
                .iter()
                .map(|o| format!("{} {}", o.kind, o.name))
                .collect()
        }

        pub fn called(&self, prefix: &str) -> usize {
            self.calls
                .borrow()
                .iter()
                .filter(|c| c.starts_with(prefix))
                .count()
        }

        pub fn elapsed(&self) -> Duration {
            self.clock.get()
        }

        fn log(&self, call: String) {
            self.calls.borrow_mut().push(call);
        }

        fn service_of(container: &str) -> String {
            container.trim_start_matches("container-").to_string()
        }
    }

    fn ok(stdout: &str) -> Output {
        Output {
            exit: Exit::Success,
            stdout: stdout.as_bytes().to_vec(),
            stderr: String::new(),
        }
    }

    impl Docker for ScriptedDocker {
        fn check(&self) -> docker::Result<()> {
            match self.fail_check.borrow().clone() {
                Some(state) => Err(docker::Error::SwarmInactive(state)),
                None => Ok(()),
            }
        }

        fn objects(&self, kind: Kind) -> docker::Result<Vec<Object>> {
            self.log(format!("objects {kind}"));
            Ok(self
                .objects
                .borrow()
                .iter()
                .filter(|o| o.kind == kind)
                .cloned()
                .collect())
        }

        fn remove(&self, kind: Kind, name: &str) -> docker::Result<()> {
            self.log(format!("remove {kind} {name}"));
            let refuse = |why: &str| docker::Error::Docker {
                args: format!("{kind} rm {name}"),
                stderr: why.into(),
            };
            if self.permanent.borrow().iter().any(|p| p == name) {
                return Err(refuse("permission denied"));
            }
            if let Some(n) = self.stuck.borrow_mut().get_mut(name).filter(|n| **n > 0) {
                *n -= 1;
                return Err(refuse("volume is in use"));
            }
            let mut objects = self.objects.borrow_mut();
            objects.retain(|o| !(o.kind == kind && o.name == name));
            if kind == Kind::Stack {
                // `docker stack rm` takes what the stack deployed, not volumes.
                let permanent = self.permanent.borrow();
                objects.retain(|o| {
                    o.stack.as_deref() != Some(name)
                        || matches!(o.kind, Kind::Volume | Kind::Container)
                        || permanent.contains(&o.name)
                });
            }
            Ok(())
        }

        fn services(&self, stack: &str) -> docker::Result<Vec<String>> {
            Ok(self
                .objects
                .borrow()
                .iter()
                .filter(|o| o.kind == Kind::Service && o.stack.as_deref() == Some(stack))
                .map(|o| o.name.clone())
                .collect())
        }

        /// Every network of the scripted engine is a swarm-scoped overlay.
        fn network(&self, name: &str) -> docker::Result<Option<Network>> {
            Ok(self
                .objects
                .borrow()
                .iter()
                .any(|o| o.kind == Kind::Network && o.name == name)
                .then(|| {
                    // The engine's own local networks keep their names as drivers.
                    let (scope, driver) = match name {
                        "host" | "bridge" => ("local", name),
                        _ => ("swarm", "overlay"),
                    };
                    Network {
                        name: name.to_string(),
                        scope: scope.into(),
                        driver: driver.into(),
                    }
                }))
        }

        fn health(&self, _stack: &str) -> docker::Result<Option<String>> {
            self.log("health".into());
            let next = self.health.borrow_mut().pop_front();
            Ok(next.unwrap_or_else(|| self.health_after.borrow().clone()))
        }

        fn tasks(&self, service: &str) -> docker::Result<(String, Vec<Task>)> {
            Ok((format!("tasks of {service}\n"), self.tasks.borrow().clone()))
        }

        fn service_logs(&self, service: &str) -> docker::Result<String> {
            Ok(format!("logs of {service}\n"))
        }

        fn container(&self, _stack: &str, service: &str) -> docker::Result<Option<String>> {
            if self.no_container.borrow().iter().any(|s| s == service) {
                return Ok(None);
            }
            Ok(Some(format!("container-{service}")))
        }

        /// Understands the ladder's marker scripts (`printf %s "$1" > "$2"` and
        /// `cat "$1"`) against an in-memory file per container.
        fn exec(&self, container: &str, argv: &[&str]) -> docker::Result<Output> {
            self.log(format!("exec {container} {}", argv.join(" ")));
            let service = Self::service_of(container);
            match argv {
                ["sh", "-c", script, "sh", value, path] if script.starts_with("printf") => {
                    self.files
                        .borrow_mut()
                        .insert((service, path.to_string()), value.to_string());
                    Ok(ok(""))
                }
                ["sh", "-c", script, "sh", path] if script.starts_with("cat") => {
                    match self.files.borrow().get(&(service, path.to_string())) {
                        Some(v) => Ok(ok(v)),
                        None => Ok(Output {
                            exit: Exit::Code(1),
                            stdout: Vec::new(),
                            stderr: format!("cat: can't open '{path}'"),
                        }),
                    }
                }
                _ => Ok(ok("")),
            }
        }

        fn wait(&self, d: Duration) {
            self.clock.set(self.clock.get() + d);
        }

        fn now(&self) -> Instant {
            self.start + self.clock.get()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scripted::ScriptedDocker;
    use super::*;

    const STACK: &str = "hello_ci_localhost";

    fn engine_with_a_dead_runs_stack() -> ScriptedDocker {
        let d = ScriptedDocker::default();
        d.add(Kind::Stack, STACK, None);
        d.add(Kind::Service, "hello_ci_localhost_app", Some(STACK));
        d.add(Kind::Container, "hello_ci_localhost_app.1.x", Some(STACK));
        d.add(Kind::Volume, "hello_ci_localhost_data", Some(STACK));
        d.add(Kind::Network, "hello_ci_localhost_default", Some(STACK));
        // abra's secrets carry no stack label: found by name.
        d.add(Kind::Secret, "hello_ci_localhost_admin_v1", None);
        d.add(Kind::Config, "hello_ci_localhost_conf_v1", Some(STACK));
        // Another app, a hand-deployed gateway, and a name that only looks alike.
        d.add(Kind::Stack, "other_ci_localhost", None);
        d.add(
            Kind::Volume,
            "other_ci_localhost_data",
            Some("other_ci_localhost"),
        );
        d.add(Kind::Stack, "traefik", None);
        d.add(Kind::Secret, "hello_ci_localhostx_key_v1", None);
        d
    }

    #[test]
    fn find_names_every_kind_of_the_stack_and_nothing_else() {
        let d = engine_with_a_dead_runs_stack();
        let found: Vec<String> = find(&d, STACK)
            .unwrap()
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(
            found,
            [
                "stack hello_ci_localhost",
                "service hello_ci_localhost_app",
                "container hello_ci_localhost_app.1.x",
                "volume hello_ci_localhost_data",
                "network hello_ci_localhost_default",
                "secret hello_ci_localhost_admin_v1",
                "config hello_ci_localhost_conf_v1",
            ]
        );
    }

    #[test]
    fn find_all_lists_each_kind_once_for_many_stacks() {
        let d = engine_with_a_dead_runs_stack();
        let stacks = vec![
            STACK.to_string(),
            "other_ci_localhost".into(),
            "gone".into(),
        ];
        let found = find_all(&d, &stacks).unwrap();
        assert_eq!(found[STACK].len(), 7);
        assert_eq!(found["other_ci_localhost"].len(), 2);
        assert!(!found.contains_key("gone"));
        assert_eq!(d.called("objects"), Kind::ALL.len());
    }

    #[test]
    fn remove_takes_everything_of_the_stack_and_only_it() {
        let d = engine_with_a_dead_runs_stack();
        let left = remove(&d, STACK, PATIENCE).unwrap();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            d.listing(),
            [
                "stack other_ci_localhost",
                "volume other_ci_localhost_data",
                "stack traefik",
                "secret hello_ci_localhostx_key_v1",
            ]
        );
        assert_eq!(d.called("remove stack"), 1);
    }

    #[test]
    fn remove_waits_for_a_volume_still_in_use() {
        let d = engine_with_a_dead_runs_stack();
        d.stuck
            .borrow_mut()
            .insert("hello_ci_localhost_data".into(), 4);
        assert!(remove(&d, STACK, PATIENCE).unwrap().is_empty());
        assert_eq!(d.called("remove volume hello_ci_localhost_data"), 5);
        assert!(d.elapsed() >= Duration::from_secs(2), "{:?}", d.elapsed());
    }

    #[test]
    fn remove_gives_up_after_its_patience_and_names_what_is_left() {
        let d = engine_with_a_dead_runs_stack();
        d.permanent
            .borrow_mut()
            .push("hello_ci_localhost_admin_v1".into());
        let left = remove(&d, STACK, Duration::from_secs(10)).unwrap();
        assert_eq!(
            left,
            vec![Leftover {
                kind: Kind::Secret,
                name: "hello_ci_localhost_admin_v1".into()
            }]
        );
        assert!(d.elapsed() >= Duration::from_secs(10));
        assert!(d.elapsed() < Duration::from_secs(11));
    }

    #[test]
    fn nothing_to_remove_issues_no_removal() {
        let d = ScriptedDocker::default();
        d.add(Kind::Stack, "traefik", None);
        assert!(remove(&d, STACK, PATIENCE).unwrap().is_empty());
        assert_eq!(d.called("remove"), 0);
    }

    #[test]
    fn scratch_of_a_live_run_is_never_dead() {
        let root = tempfile::tempdir().unwrap();
        let mk = |id: &str| {
            let d = root.path().join(id);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let live = mk("r-live");
        let _held = mark_scratch(&live, "hello.ci.localhost").unwrap();
        let dead = mk("r-dead");
        drop(mark_scratch(&dead, "hello.ci.localhost").unwrap());
        let starting = mk("r-starting");
        std::fs::write(starting.join(SCRATCH_MARK), "").unwrap();
        let own = mk("r-own");
        drop(mark_scratch(&own, "hello.ci.localhost").unwrap());

        assert_eq!(scratch_state(&live), ScratchState::Live);
        assert_eq!(
            scratch_state(&dead),
            ScratchState::Dead {
                domain: "hello.ci.localhost".into()
            }
        );
        assert_eq!(scratch_state(&starting), ScratchState::Unmarked);
        assert_eq!(
            dead_scratch(root.path(), Some("r-own")),
            vec![(dead, Some("hello.ci.localhost".to_string()))],
            "a live run, a starting run and the caller's own run are kept"
        );
    }
}
