//! The janitor, `cc-ci janitor`: removes what runs that are gone left behind (killed,
//! crashed, cut off by a reboot): their swarm objects, scratch dirs (with their
//! `ABRA_DIR`), stale lock files, and it marks their results.json as `error` so the
//! poller reports them instead of leaving a commit status pending.
//!
//! A thin command over [`crate::reap`] and [`crate::lock`]: liveness is decided by
//! locks only, and an app's objects are removed only while the janitor holds the app's
//! lock, so a run that starts during the scan waits instead of losing its deploy.
//! Only apps cc-ci itself recorded (a run's results.json, lock or scratch dir) are
//! considered: a stack deployed by hand on the same swarm is never touched. The
//! decision table is in `docs/concurrency.md`.
use crate::cli::JanitorArgs;
use crate::config::Config;
use crate::docker::{self, Docker};
use crate::lock::{self, DomainLock, Probe};
use crate::process::{Executor, Stop};
use crate::progress::Progress;
use crate::reap::{self, Leftover, ScratchState};
use crate::results::{Results, RunStatus};
use crate::runner::swarm::stack_name;
use anyhow::Context;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the janitor does about one thing.
#[derive(Debug)]
pub enum Action {
    /// Remove an app's objects from the swarm (holding its lock).
    RemoveObjects {
        domain: String,
        objects: Vec<Leftover>,
    },
    /// Remove a lock file nobody holds (holding it).
    RemoveLock { domain: String },
    /// Remove a dead run's scratch dir (`ABRA_DIR`, checkout, test snapshot).
    RemoveScratch { dir: PathBuf },
    /// Record in a run's results.json that its runner died.
    MarkDead { results: PathBuf, run_id: String },
    /// Leave alone (a live run's, or one that is starting).
    Keep { what: String },
}

/// One row of the janitor's table: what, why, and (for an app) the lock held while
/// acting on it.
#[derive(Debug)]
pub struct Decision {
    pub action: Action,
    pub why: String,
    lock: Option<DomainLock>,
}

/// Why a dead run's results.json is set to `error`.
pub const DIED: &str = "the runner died before it finished (killed, crashed, or the host \
                        restarted); the janitor removed what it left";

/// The apps cc-ci recorded: from runs' results.json (persistent), lock files and
/// scratch marks (volatile).
fn known_domains(config: &Config) -> BTreeSet<String> {
    let mut domains = BTreeSet::new();
    for (_, results) in run_results(&config.state.dir.join("runs")) {
        domains.insert(results.app_domain);
    }
    let locks = config.state.runtime_dir.join("locks");
    for entry in std::fs::read_dir(&locks).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(domain) = name.strip_suffix(".lock") {
            domains.insert(domain.to_string());
        }
    }
    let scratch = config.state.runtime_dir.join("runs");
    for entry in std::fs::read_dir(&scratch).into_iter().flatten().flatten() {
        if let Ok(domain) = std::fs::read_to_string(entry.path().join(reap::SCRATCH_MARK)) {
            domains.insert(domain);
        }
    }
    domains.retain(|d| !d.is_empty() && !d.contains('/'));
    domains
}

/// Every readable results.json under `runs_dir`, with its path.
fn run_results(runs_dir: &Path) -> Vec<(PathBuf, Results)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(runs_dir).into_iter().flatten().flatten() {
        let path = entry.path().join("results.json");
        if let Some(r) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Results>(&b).ok())
        {
            out.push((path, r));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Decide, for everything cc-ci recorded, what to do. Apps to act on come back with
/// their lock held (taken by the probe), so no run of theirs can start until the
/// decisions are applied or dropped. The swarm part needs `docker`; without it only
/// files are decided.
pub fn decide(config: &Config, docker: Option<&dyn Docker>) -> anyhow::Result<Vec<Decision>> {
    let mut decisions = decide_apps(config, docker)?;
    let scratch_dir = config.state.runtime_dir.join("runs");
    decisions.extend(decide_scratch(&scratch_dir));
    decisions.extend(decide_results(&config.state.dir.join("runs"), &scratch_dir));
    Ok(decisions)
}

fn keep(what: String, why: String) -> Decision {
    Decision {
        action: Action::Keep { what },
        why,
        lock: None,
    }
}

/// Rows 1 to 7: each recorded app's swarm objects and lock file.
fn decide_apps(config: &Config, docker: Option<&dyn Docker>) -> anyhow::Result<Vec<Decision>> {
    let mut decisions = Vec::new();
    let locks_dir = config.state.runtime_dir.join("locks");
    let domains: Vec<String> = known_domains(config).into_iter().collect();
    let stacks: Vec<String> = domains.iter().map(|d| stack_name(d)).collect();
    let found = match docker {
        Some(d) => reap::find_all(d, &stacks).context("listing the swarm's objects")?,
        None => Default::default(),
    };
    for (domain, stack) in domains.iter().zip(&stacks) {
        let objects = found.get(stack).cloned().unwrap_or_default();
        let path = lock::lock_path(&locks_dir, domain);
        let had_file = path.exists();
        if objects.is_empty() && !had_file {
            continue;
        }
        let live = |holder: String| {
            keep(
                format!("app {domain}"),
                format!("run {holder} holds its lock (live)"),
            )
        };
        let lock = match lock::probe(&path)? {
            Probe::Held { holder } => {
                decisions.push(live(holder));
                continue;
            }
            Probe::Taken(lock) => lock,
            // No lock file: take one, so that no run of the app starts meanwhile.
            Probe::Absent => {
                match lock::acquire(&path, "janitor", Duration::ZERO, |_| {}, || false) {
                    Ok(lock) => lock,
                    Err(lock::Error::Timeout { holder, .. }) => {
                        decisions.push(live(holder));
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if !objects.is_empty() {
            decisions.push(Decision {
                action: Action::RemoveObjects {
                    domain: domain.clone(),
                    objects,
                },
                why: "no run holds the app's lock (its run is gone)".into(),
                lock: None,
            });
        }
        decisions.push(Decision {
            action: Action::RemoveLock {
                domain: domain.clone(),
            },
            why: if had_file {
                "no run holds it (stale)".into()
            } else {
                "taken by the janitor while it removes the app's objects".into()
            },
            lock: Some(lock),
        });
    }
    Ok(decisions)
}

/// Rows 8 to 11: scratch dirs (with their `ABRA_DIR`) of runs that are gone.
fn decide_scratch(scratch_dir: &Path) -> Vec<Decision> {
    reap::dead_scratch(scratch_dir, None)
        .into_iter()
        .map(|(dir, domain)| Decision {
            action: Action::RemoveScratch { dir },
            why: match domain {
                Some(d) => format!("its run of {d} holds no lock (gone)"),
                None => "never marked by its run, and older than 10 minutes".into(),
            },
            lock: None,
        })
        .collect()
}

/// Rows 12 and 13: results.json that say `running`, whose runner may be gone.
fn decide_results(runs_dir: &Path, scratch_dir: &Path) -> Vec<Decision> {
    run_results(runs_dir)
        .into_iter()
        .filter(|(_, r)| r.status == RunStatus::Running)
        .map(
            |(path, results)| match reap::scratch_state(&scratch_dir.join(&results.run_id)) {
                ScratchState::Live => keep(
                    format!("run {}", results.run_id),
                    "its runner is alive".into(),
                ),
                _ => Decision {
                    action: Action::MarkDead {
                        results: path,
                        run_id: results.run_id,
                    },
                    why: "results.json says running but its runner holds no lock".into(),
                    lock: None,
                },
            },
        )
        .collect()
}

/// Carry out one decision; what it could not do comes back as an error message.
fn apply(decision: Decision, docker: Option<&dyn Docker>) -> Result<(), String> {
    match decision.action {
        Action::RemoveObjects { domain, .. } => {
            let docker = docker.ok_or("the engine is not available")?;
            let left = reap::remove(docker, &stack_name(&domain), reap::PATIENCE)
                .map_err(|e| e.to_string())?;
            if !left.is_empty() {
                let names: Vec<String> = left.iter().map(ToString::to_string).collect();
                return Err(format!("still there: {}", names.join(", ")));
            }
            Ok(())
        }
        Action::RemoveLock { .. } => match decision.lock {
            Some(lock) => lock.remove_file().map_err(|e| e.to_string()),
            None => Ok(()),
        },
        Action::RemoveScratch { dir } => std::fs::remove_dir_all(&dir).map_err(|e| e.to_string()),
        Action::MarkDead { results, .. } => {
            let mut r: Results = std::fs::read(&results)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or("results.json is no longer readable")?;
            if r.status != RunStatus::Running {
                return Ok(()); // finished meanwhile
            }
            r.status = RunStatus::Error;
            r.error = Some(DIED.into());
            r.invariants.clean_teardown = false;
            r.finished_at = Some(chrono::Utc::now());
            r.write(&results).map_err(|e| e.to_string())
        }
        Action::Keep { .. } => Ok(()),
    }
}

impl Action {
    fn describe(&self) -> (String, String) {
        match self {
            Action::RemoveObjects { domain, objects } => {
                let names: Vec<String> = objects.iter().map(ToString::to_string).collect();
                ("remove".into(), format!("{domain}: {}", names.join(", ")))
            }
            Action::RemoveLock { domain } => ("remove".into(), format!("lock of {domain}")),
            Action::RemoveScratch { dir } => {
                ("remove".into(), format!("scratch dir {}", dir.display()))
            }
            Action::MarkDead { run_id, .. } => ("mark".into(), format!("run {run_id} as error")),
            Action::Keep { what } => ("keep".into(), what.clone()),
        }
    }
}

/// `cc-ci janitor`: decide, then act (or only print, with `--dry-run`). Exits 1 when
/// the engine cannot be asked or something could not be removed, naming it.
pub fn main(args: JanitorArgs) -> anyhow::Result<i32> {
    let config = Config::load(&args.config).with_context(|| {
        format!(
            "the janitor cannot read its config {}; fix it (`cc-ci check-config --config {}`) \
             or pass --config FILE",
            args.config.display(),
            args.config.display()
        )
    })?;
    let started = Instant::now();
    let exec = executor()?;
    let cli = docker::Cli { exec: &exec };
    let engine_error = cli.check().err();
    let docker: Option<&dyn Docker> = match &engine_error {
        None => Some(&cli),
        Some(_) => None,
    };
    let decisions = decide(&config, docker)?;
    let mut out = std::io::stdout().lock();
    let mut failed = Vec::new();
    let verb = if args.dry_run { "would " } else { "" };
    for decision in decisions {
        let (action, what) = decision.action.describe();
        let why = decision.why.clone();
        let result = if args.dry_run || action == "keep" {
            Ok(())
        } else {
            apply(decision, docker)
        };
        let done = if action == "keep" {
            "keep".to_string()
        } else {
            format!("{verb}{action}")
        };
        match result {
            Ok(()) => {
                let _ = writeln!(out, "{done:<13} {what}  ({why})");
            }
            Err(e) => {
                let _ = writeln!(out, "{:<13} {what}  ({e})", "FAILED");
                failed.push(format!("{what}: {e}"));
            }
        }
    }
    let _ = writeln!(
        out,
        "janitor: done in {:.2} s{}",
        started.elapsed().as_secs_f64(),
        if args.dry_run {
            " (dry run: nothing removed)"
        } else {
            ""
        }
    );
    if let Some(e) = engine_error {
        anyhow::bail!(
            "{e}; the janitor looked only at files and removed nothing from the swarm \
             (start the engine, then run `systemctl start cc-ci-janitor`)"
        );
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "could not remove: {}; see docs/runbook.md (\"Orphans\")",
            failed.join("; ")
        );
    }
    Ok(crate::cli::EXIT_OK)
}

/// An executor for the janitor's docker commands: their notes go to stderr (the
/// journal under systemd), ten minutes at most, stopped by SIGTERM.
fn executor() -> anyhow::Result<Executor> {
    use std::os::fd::AsFd;
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, std::sync::Arc::clone(&cancel))
        .context("installing signal handlers")?;
    let log = std::fs::File::from(
        std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stderr")?,
    );
    Ok(Executor::new(
        Stop {
            cancel,
            deadline: Instant::now() + Duration::from_secs(600),
        },
        log,
        Progress::stderr(false),
        Vec::new(),
        crate::redact::DEFAULT_MIN_LEN,
    ))
}

#[cfg(test)]
mod tests {
    //! One test per row of the decision table in `docs/concurrency.md`.
    use super::*;
    use crate::docker::Kind;
    use crate::reap::scripted::ScriptedDocker;

    const DOMAIN: &str = "hello.ci.localhost";
    const STACK: &str = "hello_ci_localhost";

    struct Host {
        dir: tempfile::TempDir,
        config: Config,
        docker: ScriptedDocker,
    }

    impl Host {
        fn new() -> Host {
            let dir = tempfile::tempdir().unwrap();
            let mut config = Config::defaults(dir.path().to_path_buf());
            config.state.dir = dir.path().join("state");
            config.state.runtime_dir = dir.path().join("run");
            for d in ["state/runs", "run/runs", "run/locks"] {
                std::fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            Host {
                dir,
                config,
                docker: ScriptedDocker::default(),
            }
        }

        /// A run of `domain` recorded in results.json with `status`.
        fn run(&self, id: &str, domain: &str, status: RunStatus) -> PathBuf {
            let mut r = Results::start(id, "hello", "HEAD", None, None, domain);
            r.status = status;
            let dir = self.config.state.dir.join("runs").join(id);
            std::fs::create_dir_all(&dir).unwrap();
            r.write(&dir.join("results.json")).unwrap();
            dir.join("results.json")
        }

        fn scratch(&self, id: &str) -> PathBuf {
            let d = self.config.state.runtime_dir.join("runs").join(id);
            std::fs::create_dir_all(&d).unwrap();
            d
        }

        fn lock_path(&self, domain: &str) -> PathBuf {
            lock::lock_path(&self.config.state.runtime_dir.join("locks"), domain)
        }

        /// The stack of a run that died on the swarm.
        fn leftovers(&self, stack: &str) {
            self.docker.add(Kind::Stack, stack, None);
            self.docker
                .add(Kind::Service, &format!("{stack}_app"), Some(stack));
            self.docker
                .add(Kind::Volume, &format!("{stack}_data"), Some(stack));
            self.docker
                .add(Kind::Secret, &format!("{stack}_admin_v1"), None);
        }

        fn decide(&self) -> Vec<Decision> {
            decide(&self.config, Some(&self.docker)).unwrap()
        }

        fn janitor(&self) -> Vec<String> {
            let mut rows = Vec::new();
            for d in self.decide() {
                let (action, what) = d.action.describe();
                apply(d, Some(&self.docker)).unwrap();
                rows.push(format!("{action} {what}"));
            }
            rows
        }
    }

    #[test]
    fn row_1_an_app_whose_lock_a_live_run_holds_is_kept() {
        let h = Host::new();
        h.run("r1", DOMAIN, RunStatus::Running);
        h.leftovers(STACK);
        let _live =
            lock::acquire(&h.lock_path(DOMAIN), "r1", Duration::ZERO, |_| {}, || false).unwrap();
        let _scratch = reap::mark_scratch(&h.scratch("r1"), DOMAIN).unwrap();
        let rows = h.janitor();
        assert_eq!(
            rows,
            [format!("keep app {DOMAIN}"), "keep run r1".to_string()]
        );
        assert_eq!(h.docker.listing().len(), 4, "nothing of a live run removed");
        assert!(h.lock_path(DOMAIN).exists());
    }

    #[test]
    fn row_2_a_dead_runs_objects_and_stale_lock_are_removed() {
        let h = Host::new();
        h.run("r1", DOMAIN, RunStatus::Completed);
        h.leftovers(STACK);
        std::fs::write(h.lock_path(DOMAIN), "r1 4242\n").unwrap();
        let rows = h.janitor();
        assert!(
            rows[0].starts_with(&format!("remove {DOMAIN}: stack {STACK}")),
            "{rows:?}"
        );
        assert_eq!(rows[1], format!("remove lock of {DOMAIN}"));
        assert!(h.docker.listing().is_empty());
        assert!(!h.lock_path(DOMAIN).exists());
    }

    #[test]
    fn row_3_without_a_lock_file_the_janitor_takes_the_lock_while_it_removes() {
        let h = Host::new();
        h.run("r1", DOMAIN, RunStatus::Completed); // after a reboot: /run is empty
        h.leftovers(STACK);
        let decisions = h.decide();
        // While the decisions are held, a run of the app cannot take its lock.
        let err = lock::acquire(
            &h.lock_path(DOMAIN),
            "r2",
            Duration::from_millis(50),
            |_| {},
            || false,
        )
        .unwrap_err();
        assert!(matches!(err, lock::Error::Timeout { ref holder, .. } if holder == "janitor"));
        for d in decisions {
            apply(d, Some(&h.docker)).unwrap();
        }
        assert!(h.docker.listing().is_empty());
        assert!(!h.lock_path(DOMAIN).exists());
    }

    #[test]
    fn row_4_a_lock_file_replaced_while_probed_is_probed_again() {
        let h = Host::new();
        h.run("r1", DOMAIN, RunStatus::Completed);
        h.leftovers(STACK);
        let path = h.lock_path(DOMAIN);
        std::fs::write(&path, "dead 1\n").unwrap();
        // Replaced between the janitor's open and its lock by a new run's file,
        // which that run holds: the janitor must see the holder, not the old file.
        let mut new_holder = None;
        let probe = lock::probe_with(&path, || {
            if new_holder.is_none() {
                std::fs::remove_file(&path).unwrap();
                new_holder =
                    Some(lock::acquire(&path, "r2", Duration::ZERO, |_| {}, || false).unwrap());
            }
        })
        .unwrap();
        assert!(
            matches!(probe, Probe::Held { ref holder } if holder == "r2"),
            "{probe:?}"
        );
        // The whole janitor, with r2 holding the new file: nothing is removed.
        let rows = h.janitor();
        assert_eq!(rows, [format!("keep app {DOMAIN}")]);
        assert_eq!(h.docker.listing().len(), 4);
    }

    #[test]
    fn row_5_a_stack_cc_ci_did_not_make_is_never_touched() {
        let h = Host::new();
        h.leftovers("traefik_example_org");
        h.docker.add(Kind::Stack, "gateway", None);
        assert!(h.janitor().is_empty());
        assert_eq!(h.docker.listing().len(), 5);
    }

    #[test]
    fn row_6_a_stale_lock_without_objects_is_removed() {
        let h = Host::new();
        std::fs::write(h.lock_path(DOMAIN), "r1 1\n").unwrap();
        assert_eq!(h.janitor(), [format!("remove lock of {DOMAIN}")]);
        assert!(!h.lock_path(DOMAIN).exists());
    }

    #[test]
    fn row_7_a_held_lock_without_objects_is_kept() {
        let h = Host::new();
        let _queued =
            lock::acquire(&h.lock_path(DOMAIN), "r1", Duration::ZERO, |_| {}, || false).unwrap();
        assert_eq!(h.janitor(), [format!("keep app {DOMAIN}")]);
        assert!(h.lock_path(DOMAIN).exists());
    }

    #[test]
    fn rows_8_to_11_scratch_dirs_go_only_when_their_run_is_gone() {
        let h = Host::new();
        let live = h.scratch("r-live");
        let _held = reap::mark_scratch(&live, DOMAIN).unwrap();
        let dead = h.scratch("r-dead");
        drop(reap::mark_scratch(&dead, DOMAIN).unwrap());
        std::fs::create_dir_all(dead.join("abra/recipes")).unwrap();
        let starting = h.scratch("r-starting");
        std::fs::write(starting.join(reap::SCRATCH_MARK), "").unwrap();
        let _ = h.janitor();
        assert!(live.exists(), "row 8: a live run's");
        assert!(!dead.exists(), "row 9: a dead run's, with its ABRA_DIR");
        assert!(starting.exists(), "row 10: a starting run's");
        // Row 11: an unmarked dir older than the grace period.
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(&starting)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let _ = h.janitor();
        assert!(!starting.exists(), "row 11: unmarked for an hour");
    }

    #[test]
    fn rows_12_13_results_of_a_dead_runner_are_marked_error() {
        let h = Host::new();
        let live = h.run("r-live", "a.ci.localhost", RunStatus::Running);
        let _held = reap::mark_scratch(&h.scratch("r-live"), "a.ci.localhost").unwrap();
        let dead = h.run("r-dead", "b.ci.localhost", RunStatus::Running);
        let done = h.run("r-done", "c.ci.localhost", RunStatus::Completed);
        let rows = h.janitor();
        assert!(rows.contains(&"keep run r-live".to_string()), "{rows:?}");
        assert!(
            rows.contains(&"mark run r-dead as error".to_string()),
            "{rows:?}"
        );
        let read =
            |p: &Path| -> Results { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
        assert_eq!(read(&live).status, RunStatus::Running);
        let r = read(&dead);
        assert_eq!(r.status, RunStatus::Error);
        assert_eq!(r.error.as_deref(), Some(DIED));
        assert!(!r.invariants.clean_teardown);
        assert_eq!(read(&done).status, RunStatus::Completed);
    }

    #[test]
    fn without_the_engine_only_files_are_decided() {
        let h = Host::new();
        h.run("r1", DOMAIN, RunStatus::Running);
        h.leftovers(STACK);
        let decisions = decide(&h.config, None).unwrap();
        assert!(
            decisions
                .iter()
                .all(|d| !matches!(d.action, Action::RemoveObjects { .. }))
        );
        assert!(
            decisions
                .iter()
                .any(|d| matches!(d.action, Action::MarkDead { .. }))
        );
        let _ = &h.dir;
    }

    #[test]
    fn twenty_dead_apps_cost_one_listing_per_kind() {
        let h = Host::new();
        for i in 0..20 {
            let domain = format!("r{i}.ci.localhost");
            h.run(&format!("run{i}"), &domain, RunStatus::Completed);
            h.leftovers(&stack_name(&domain));
        }
        let decisions = h.decide();
        assert_eq!(
            decisions
                .iter()
                .filter(|d| matches!(d.action, Action::RemoveObjects { .. }))
                .count(),
            20
        );
        assert_eq!(h.docker.called("objects"), Kind::ALL.len());
    }
}
