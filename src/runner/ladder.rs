//! The level ladder: install, upgrade, backup, restore, custom. A failed or skipped
//! tier stops the climb and the tiers above it are `not_run` (a badge never claims
//! what was not tested). `docs/levels.md` describes each tier.
//!
//! Every decision here is made on what the [`Engine`] answers, so unit tests with a
//! scripted engine cover them in milliseconds; the swarm tests run the real one.
use super::backupbot::{self, Backup};
use super::compose;
use super::engine::{self, Engine};
use super::prereq;
use super::probe::{self, DataProbe};
use super::run::{Run, Tested};
use super::swarm::{self, Unhealthy};
use crate::process::{Cmd, Exit, StopReason};
use crate::reap::{self, Leftover};
use crate::results::{Cause, TestCaseResult, Tier, TierResult, TierStatus};
use chrono::Utc;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a tier ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Passed,
    Failed { cause: Cause, reason: String },
    Skipped { reason: String },
}

fn fail(cause: Cause, reason: impl Into<String>) -> End {
    End::Failed {
        cause,
        reason: reason.into(),
    }
}

/// An engine error in a step whose failure is cc-ci's or the host's, not the recipe's.
fn blame(cause: Cause) -> impl Fn(engine::Error) -> End {
    move |e| fail(cause, e.to_string())
}

/// What the teardown funnel found.
#[derive(Debug, Clone, Default)]
pub struct Teardown {
    /// What abra's teardown left behind (then removed directly).
    pub missed: Vec<Leftover>,
    /// What is still there after direct removal.
    pub left: Vec<Leftover>,
    /// Why the engine could not be asked what is left (then nothing is known clean).
    pub unverified: Option<String>,
}

impl Teardown {
    pub fn clean(&self) -> bool {
        self.left.is_empty() && self.unverified.is_none()
    }
}

/// What the restore tier writes after the backup, and must not find after the restore.
const CHANGED: &str = "changed-after-backup";
/// One climb of one run.
pub struct Ladder<'a> {
    run: &'a Run,
    engine: &'a dyn Engine,
    tested: &'a Tested,
    /// Deploys the plan expected so far.
    budget: Cell<u32>,
    tests: RefCell<Vec<TestCaseResult>>,
    /// The data probe, once decided (`Err`: there is none, and why).
    probe: RefCell<Option<Result<DataProbe, String>>>,
}

impl<'a> Ladder<'a> {
    pub fn new(run: &'a Run, engine: &'a dyn Engine, tested: &'a Tested) -> Ladder<'a> {
        Ladder {
            run,
            engine,
            tested,
            budget: Cell::new(0),
            tests: RefCell::new(Vec::new()),
            probe: RefCell::new(None),
        }
    }

    /// The deploys the plan issued (each tier's share of the budget).
    pub fn budget(&self) -> u32 {
        self.budget.get()
    }

    /// The custom tests' outcomes, for JUnit.
    pub fn tests(&self) -> Vec<TestCaseResult> {
        self.tests.borrow().clone()
    }

    fn note(&self, line: &str) {
        self.run.exec.note(line);
    }

    /// Climb; `on_change` sees the tier list after every change (for results.json).
    pub fn climb(&self, mut on_change: impl FnMut(&[TierResult])) -> Vec<TierResult> {
        let mut tiers: Vec<TierResult> = Tier::ALL.into_iter().map(TierResult::pending).collect();
        let mut stopped = false;
        for i in 0..tiers.len() {
            if stopped {
                tiers[i].status = TierStatus::NotRun;
                continue;
            }
            let tier = tiers[i].name;
            let started = Instant::now();
            tiers[i].status = TierStatus::Running;
            tiers[i].started_at = Some(Utc::now());
            on_change(&tiers);
            self.run.exec.progress().stage(tier.as_str());
            self.note(&format!("=== tier {tier} ==="));
            let end = match self.run.exec.stop_reason() {
                Some(r) => stopped_end(r, "before the tier started"),
                None => self.stopped_override(self.run_tier(tier)),
            };
            let t = &mut tiers[i];
            t.duration_s = Some((started.elapsed().as_secs_f64() * 100.0).round() / 100.0);
            match end {
                End::Passed => t.status = TierStatus::Passed,
                End::Failed { cause, reason } => {
                    t.status = TierStatus::Failed;
                    t.cause = Some(cause);
                    t.reason = Some(reason);
                    stopped = true;
                }
                End::Skipped { reason } => {
                    t.status = TierStatus::Skipped;
                    t.reason = Some(reason);
                    stopped = true;
                }
            }
            self.note(&format!(
                "=== tier {tier}: {}{} ===",
                t.status.label(),
                t.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
            on_change(&tiers);
        }
        on_change(&tiers);
        tiers
    }

    /// A tier that failed because the run was stopped is classed by the stop.
    fn stopped_override(&self, end: End) -> End {
        match (&end, self.run.exec.stop.check()) {
            (End::Failed { reason, .. }, Some(r)) => stopped_end(r, reason),
            _ => end,
        }
    }

    fn run_tier(&self, tier: Tier) -> End {
        let result = match tier {
            Tier::Install => self.install(),
            Tier::Upgrade => self.upgrade(),
            Tier::Backup => self.backup(),
            Tier::Restore => self.restore(),
            Tier::Custom => self.custom(),
        };
        result.unwrap_or_else(|e| e)
    }

    /// Create the app at `commit` and deploy it, converged and healthy.
    fn create_and_deploy(&self, tier: Tier, commit: &str, version: &str) -> Result<(), End> {
        self.engine
            .checkout(commit)
            .map_err(blame(Cause::Harness))?;
        self.engine.new_app().map_err(blame(Cause::Recipe))?;
        let meta = &self.run.meta;
        if !meta.APP_ENV.is_empty() {
            let vars: Vec<(String, String)> = meta.APP_ENV.clone().into_iter().collect();
            self.engine
                .set_app_env(&vars)
                .map_err(blame(Cause::Harness))?;
        }
        let overlay = self.run.ci_dir.join(engine::OVERLAY);
        if overlay.is_file() {
            self.engine
                .add_overlay(&overlay)
                .map_err(blame(Cause::Harness))?;
        }
        self.check_host()?;
        self.engine.generate_secrets().map_err(|e| {
            // Output cc-ci cannot parse leaves secret values it cannot mask: stop.
            let cause = match e {
                engine::Error::Abra(super::abra::Error::Format { .. }) => Cause::Harness,
                _ => Cause::Recipe,
            };
            fail(cause, e.to_string())
        })?;
        self.deploy(tier, version, false)
    }

    /// One counted deploy, then cc-ci's own convergence and health check.
    fn deploy(&self, tier: Tier, version: &str, force: bool) -> Result<(), End> {
        self.budget.set(self.budget.get() + 1);
        let deployed = self.engine.deploy(tier, version, force);
        let healthy = match &deployed {
            Ok(()) => self.wait_healthy(tier)?,
            Err(_) => Ok(()),
        };
        if deployed.is_ok() && healthy.is_ok() {
            return Ok(());
        }
        let masker = self.run.exec.masker();
        let (text, tasks_cause) =
            match swarm::diagnostics(self.engine.docker(), &self.run.stack, Some(&masker)) {
                Ok(d) => (d.text.clone(), d.cause()),
                Err(e) => (format!("diagnostics unavailable: {e}"), None),
            };
        let file = self.save_diagnostics(tier, &text);
        let (cause, reason) = match (deployed, healthy) {
            (Err(e), _) => {
                // Task states decide; abra's own message (which may quote app log
                // lines) only when there are no tasks to look at.
                let cause = tasks_cause
                    .or_else(|| swarm::classify(&e.to_string()))
                    .unwrap_or(Cause::Recipe);
                (cause, format!("deploy of {version} failed: {e}"))
            }
            (Ok(()), Err(u)) => (u.cause, format!("{version} {}", u.reason)),
            (Ok(()), Ok(())) => unreachable!("returned above"),
        };
        Err(fail(cause, format!("{reason} (diagnostics: {file})")))
    }

    /// Wait for the stack to converge and be healthy, saying so in the run's status.
    fn wait_healthy(&self, tier: Tier) -> Result<Result<(), Unhealthy>, End> {
        let progress = self.run.exec.progress();
        swarm::wait_healthy(
            self.engine.docker(),
            &self.run.stack,
            Duration::from_secs(self.run.meta.converge_timeout_s()),
            || self.run.exec.stop_reason(),
            |waited| {
                progress.status(&format!(
                    "{tier}: waiting for convergence ({} s)",
                    waited.as_secs()
                ))
            },
        )
        .map_err(|e| fail(Cause::Infrastructure, e.to_string()))
    }

    fn save_diagnostics(&self, tier: Tier, text: &str) -> String {
        let dir = self.run.artifacts.join("diagnostics");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{tier}.txt")), text);
        format!("diagnostics/{tier}.txt")
    }

    fn install(&self) -> Result<End, End> {
        self.create_and_deploy(Tier::Install, &self.tested.sha, "tested ref")?;
        self.hook("install_steps.sh", Tier::Install)?;
        Ok(End::Passed)
    }

    fn upgrade(&self) -> Result<End, End> {
        let base = &self.tested.upgrade_base;
        // Start from a fresh app at the base version: the install's app goes first.
        self.remove_app().map_err(|e| {
            fail(
                Cause::Infrastructure,
                format!("removing the install app: {e}"),
            )
        })?;
        self.create_and_deploy(Tier::Upgrade, &self.tested.upgrade_base_commit, base)
            .map_err(|e| reword(e, &format!("the upgrade base {base} did not deploy")))?;
        let probe = self.data_probe()?;
        let written = format!("written-by-{base}");
        if let Some(p) = &probe {
            self.write_data(p, &written, true)?;
        }
        self.engine
            .checkout(&self.tested.sha)
            .map_err(blame(Cause::Harness))?;
        self.deploy(Tier::Upgrade, "tested ref", true)?;
        if let Some(p) = &probe {
            self.expect_data(p, &written, None, "data written before the upgrade")?;
            self.note("data written at the base version survived the upgrade");
        }
        Ok(End::Passed)
    }

    fn backup(&self) -> Result<End, End> {
        if self.backups()?.is_empty() {
            return Ok(End::Skipped {
                reason: format!("no service has the label {}=true", backupbot::BACKUP),
            });
        }
        if let Some(p) = self.data_probe()? {
            self.write_data(&p, &self.backed_up_value(), false)?;
        }
        self.engine.backup().map_err(blame(Cause::Recipe))?;
        Ok(End::Passed)
    }

    fn backed_up_value(&self) -> String {
        format!("backed-up-{}", self.run.id)
    }

    fn restore(&self) -> Result<End, End> {
        let probe = self.data_probe()?;
        if let Some(p) = &probe {
            self.write_data(p, CHANGED, false)?;
        }
        self.engine.restore().map_err(blame(Cause::Recipe))?;
        if let Err(u) = self.wait_healthy(Tier::Restore)? {
            return Err(fail(u.cause, format!("after restore: {}", u.reason)));
        }
        let Some(probe) = probe else {
            let why = self.probe.borrow().clone().and_then(Result::err);
            return Ok(End::Skipped {
                reason: format!(
                    "the restore ran, but its data cannot be checked: {}",
                    why.unwrap_or_default()
                ),
            });
        };
        self.expect_data(
            &probe,
            &self.backed_up_value(),
            Some(CHANGED),
            "data changed after the backup",
        )?;
        self.note("data changed after the backup is back to the backed-up state");
        Ok(End::Passed)
    }

    fn custom(&self) -> Result<End, End> {
        let recipe_tests = self.run.scratch.join("recipe-tests");
        let shipped = self
            .engine
            .snapshot_tests(&self.tested.sha, &recipe_tests)
            .map_err(blame(Cause::Harness))?;
        let mut tests = Vec::new();
        if shipped {
            tests.extend(
                executables(&recipe_tests.join("tests"))
                    .into_iter()
                    .map(|p| ("recipe", p)),
            );
        }
        tests.extend(
            executables(&self.run.ci_dir.join("tests"))
                .into_iter()
                .map(|p| ("ci", p)),
        );
        if tests.is_empty() {
            return Ok(End::Skipped {
                reason:
                    "no executable tests in the recipe's tests/ or the CI's recipes/<recipe>/tests/"
                        .into(),
            });
        }
        self.hook("setup_custom_tests.sh", Tier::Custom)?;
        let junit_dir = self.run.artifacts.join("tests");
        let _ = std::fs::create_dir_all(&junit_dir);
        let mut failed = Vec::new();
        for (origin, path) in tests {
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = format!("{origin}/{file}");
            let junit_file = junit_dir.join(format!("{origin}-{file}.xml"));
            let started_at = Utc::now();
            let start = Instant::now();
            let cmd = Cmd::new(&path)
                .env("CCCI_TIER", Tier::Custom.as_str())
                .dir(path.parent().unwrap_or(Path::new("/")))
                .timeout(Duration::from_secs(self.run.meta.test_timeout_s()));
            // The recipe's own tests are pull-request code: confined (their JUnit
            // report is written in their scratch dir and copied to `junit_file`). The
            // CI's are the operator's. A host that cannot confine fails the tier.
            let out = match origin {
                "recipe" => {
                    self.engine
                        .run_untrusted(cmd, &name, &junit_file)
                        .map_err(|e| match e {
                            engine::Error::Confine(_) => fail(Cause::Infrastructure, e.to_string()),
                            e => fail(Cause::Harness, e.to_string()),
                        })?
                }
                _ => self
                    .engine
                    .run(cmd.env("CCCI_JUNIT_FILE", &junit_file))
                    .map_err(blame(Cause::Harness))?,
            };
            let junit_failures = std::fs::read_to_string(&junit_file)
                .map(|x| x.matches("<failure").count() + x.matches("<error").count())
                .unwrap_or(0);
            let passed = out.exit.success() && junit_failures == 0;
            let message = if passed {
                String::new()
            } else if junit_failures > 0 {
                format!("{junit_failures} failing case(s) in its JUnit report")
            } else {
                out.exit.to_string()
            };
            if !passed {
                failed.push((name.clone(), out.exit.clone(), message.clone()));
            }
            self.tests.borrow_mut().push(TestCaseResult {
                name,
                passed,
                started_at,
                duration: start.elapsed(),
                message,
            });
            if self.run.exec.stop_reason().is_some() {
                break;
            }
        }
        if let Some((name, exit, message)) = failed.first() {
            let cause = if *exit == Exit::TimedOut {
                Cause::Timeout
            } else {
                Cause::Recipe
            };
            return Err(fail(
                cause,
                format!(
                    "{} of the custom tests failed, first {name}: {message}",
                    failed.len()
                ),
            ));
        }
        Ok(End::Passed)
    }

    /// Run a CI-side hook script if the recipe has it.
    fn hook(&self, file: &str, tier: Tier) -> Result<(), End> {
        let path = self.run.ci_dir.join(file);
        if !path.is_file() {
            return Ok(());
        }
        let out = self
            .engine
            .run(
                Cmd::new("bash")
                    .arg(&path)
                    .env("CCCI_TIER", tier.as_str())
                    .dir(&self.run.ci_dir),
            )
            .map_err(blame(Cause::Harness))?;
        if !out.exit.success() {
            return Err(fail(
                Cause::Recipe,
                format!("hook {file} failed ({})", out.exit),
            ));
        }
        Ok(())
    }

    /// The teardown funnel, run once after the climb on every path: abra undeploys
    /// and removes the app; whatever abra left is removed directly (the reap module)
    /// and recorded in `missed`; `left` is what even that could not remove.
    pub fn teardown(&self) -> Teardown {
        self.note("=== teardown ===");
        self.run.exec.begin_teardown();
        if let Err(e) = self.remove_app() {
            self.note(&format!("abra teardown failed: {e}"));
        }
        let docker = self.engine.docker();
        let mut teardown = Teardown::default();
        match reap::find(docker, &self.run.stack) {
            Ok(missed) => teardown.missed = missed,
            Err(e) => teardown.unverified = Some(format!("leak check failed: {e}")),
        }
        if !teardown.missed.is_empty() {
            self.note(&format!(
                "abra's teardown left {}: removing directly",
                list(&teardown.missed)
            ));
            match reap::remove(docker, &self.run.stack, reap::PATIENCE) {
                Ok(left) => teardown.left = left,
                Err(e) => teardown.unverified = Some(format!("direct removal failed: {e}")),
            }
            if !teardown.left.is_empty() {
                self.note(&format!(
                    "still left after direct removal: {}",
                    list(&teardown.left)
                ));
            }
        }
        if let Some(why) = &teardown.unverified {
            self.note(why);
        }
        teardown
    }

    /// Undeploy and remove the app (volumes, secrets, env).
    fn remove_app(&self) -> engine::Result<()> {
        let deployed = self
            .engine
            .docker()
            .services(&self.run.stack)
            .map(|s| !s.is_empty())
            .unwrap_or(true);
        if deployed {
            self.engine.undeploy()?;
        }
        if self.engine.app_exists() {
            self.engine.remove_app()?;
        }
        Ok(())
    }

    /// Before anything is deployed: the host has what the compose files need. An env
    /// file cc-ci cannot read as abra reads it stops here (cc-ci's failure: its abra
    /// double reads it alike); compose files it cannot read are said, and left to the
    /// deploy to decide (docker refuses what is truly broken).
    fn check_host(&self) -> Result<(), End> {
        let compose = match self.engine.compose() {
            Ok(c) => c,
            Err(engine::Error::Compose(compose::Error::Env(e))) => {
                return Err(fail(
                    Cause::Harness,
                    format!(
                        "nothing deployed: cc-ci could not read the app's env file as abra \
                         reads it: {e}"
                    ),
                ));
            }
            Err(e) => {
                self.note(&format!(
                    "host prerequisites not checked: cc-ci could not read the app's compose \
                     files ({e}); the deploy decides"
                ));
                return Ok(());
            }
        };
        if !compose.unset.is_empty() {
            let names: Vec<&str> = compose.unset.iter().map(String::as_str).collect();
            self.note(&format!(
                "the compose files use variables the app's env does not set (empty): {}",
                names.join(", ")
            ));
        }
        let missing = prereq::missing(&compose, self.engine.docker(), &self.run.stack)
            .map_err(|e| fail(Cause::Infrastructure, e.to_string()))?;
        if missing.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
        Err(fail(
            Cause::Infrastructure,
            format!("nothing deployed: {}", list.join("; ")),
        ))
    }

    /// The backed-up services, from the compose files as they deploy now.
    fn backups(&self) -> Result<Vec<Backup>, End> {
        let compose = self.engine.compose().map_err(|e| {
            fail(
                Cause::Harness,
                format!("cc-ci could not read the app's compose files: {e}"),
            )
        })?;
        Ok(backupbot::resolve(&compose))
    }

    /// How the data checks write and read ([`probe::choose`]), decided once per run
    /// on the first deploy that has data (the upgrade base).
    fn data_probe(&self) -> Result<Option<DataProbe>, End> {
        if let Some(p) = self.probe.borrow().clone() {
            return Ok(p.ok());
        }
        let backups = self.backups()?;
        for ignored in backups.iter().flat_map(|b| &b.ignored) {
            self.note(&format!("backupbot label ignored: {ignored}"));
        }
        let chosen = probe::choose(
            &self.run.meta,
            &backups,
            self.engine.docker(),
            &self.run.stack,
        )
        .map_err(|e| self.probe_failure(e, false))?;
        match &chosen {
            Ok(p) => self.note(&format!("data checks use {}", p.describe())),
            Err(why) => self.note(&format!("data checks skipped: {why}")),
        }
        *self.probe.borrow_mut() = Some(chosen.clone());
        Ok(chosen.ok())
    }

    /// Whose fault a failed probe is: the host's when docker fails; the CI config's
    /// when the operator's commands fail the first time they are used (the app was
    /// healthy); else the recipe's.
    fn probe_failure(&self, e: probe::Error, first_use_of_commands: bool) -> End {
        match e {
            probe::Error::Docker(e) => fail(Cause::Infrastructure, e.to_string()),
            probe::Error::Command { .. } if first_use_of_commands => fail(
                Cause::Harness,
                format!(
                    "the data probe of the recipe's meta.toml does not work: {e}; check \
                     DATA_WRITE_CMD and DATA_READ_CMD"
                ),
            ),
            other => fail(Cause::Recipe, other.to_string()),
        }
    }

    /// Write `value` into the app's data. The operator's commands are read back at
    /// their `first` use: a probe that does not work is not the recipe's fault.
    fn write_data(&self, p: &DataProbe, value: &str, first: bool) -> Result<(), End> {
        let docker = self.engine.docker();
        let commands = first && matches!(p, DataProbe::Commands { .. });
        p.write(docker, &self.run.stack, value)
            .map_err(|e| self.probe_failure(e, commands))?;
        if commands {
            let read = p
                .read(docker, &self.run.stack)
                .map_err(|e| self.probe_failure(e, true))?;
            if !read.values.iter().any(|v| v == value) {
                return Err(fail(
                    Cause::Harness,
                    format!(
                        "the data probe of the recipe's meta.toml does not read back what it \
                         wrote: DATA_WRITE_CMD recorded {value:?}, DATA_READ_CMD printed {:?}; \
                         check both commands",
                        read.raw
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The app's data holds `expected`, and not `gone`.
    fn expect_data(
        &self,
        p: &DataProbe,
        expected: &str,
        gone: Option<&str>,
        what: &str,
    ) -> Result<(), End> {
        let read = p
            .read(self.engine.docker(), &self.run.stack)
            .map_err(|e| self.probe_failure(e, false))?;
        if !read.values.iter().any(|v| v == expected) {
            return Err(fail(
                Cause::Recipe,
                format!(
                    "{what} is lost: {} holds {:?}, expected {expected:?}",
                    p.describe(),
                    read.raw
                ),
            ));
        }
        if let Some(g) = gone.filter(|g| read.values.iter().any(|v| v == g)) {
            return Err(fail(
                Cause::Recipe,
                format!(
                    "{what} is not back to its backed-up state: {} holds {:?}, still with \
                     {g:?} written after the backup",
                    p.describe(),
                    read.raw
                ),
            ));
        }
        Ok(())
    }
}

fn list(items: &[Leftover]) -> String {
    items
        .iter()
        .map(Leftover::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn stopped_end(reason: StopReason, context: &str) -> End {
    match reason {
        StopReason::Cancelled => fail(Cause::Cancelled, format!("cancelled ({context})")),
        StopReason::Deadline => fail(
            Cause::Timeout,
            format!("the run's deadline passed ({context})"),
        ),
    }
}

fn reword(end: End, prefix: &str) -> End {
    match end {
        End::Failed { cause, reason } => fail(cause, format!("{prefix}: {reason}")),
        other => other,
    }
}

/// Executable regular files directly in `dir`, sorted by name.
fn executables(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    //! The ladder's decisions on a scripted engine: each tier's pass, fail and skip
    //! rules, the level, every cause class, the deploy budget, the data checks and the
    //! teardown. Milliseconds each; the swarm tests run the same code for real.
    use super::*;
    use crate::docker::Kind;
    use crate::meta::RecipeMeta;
    use crate::process::Exit;
    use crate::runner::engine::scripted::{Failure, ScriptedEngine};
    use Tier::*;
    use TierStatus::*;
    use std::sync::atomic::Ordering;

    struct Case {
        _dir: tempfile::TempDir,
        run: Run,
        engine: ScriptedEngine,
        tested: Tested,
    }

    struct Climb {
        tiers: Vec<TierResult>,
        budget: u32,
        tests: Vec<TestCaseResult>,
        teardown: Teardown,
        log: String,
    }

    impl Climb {
        fn tier(&self, t: Tier) -> &TierResult {
            self.tiers.iter().find(|r| r.name == t).unwrap()
        }
        fn statuses(&self) -> Vec<TierStatus> {
            self.tiers.iter().map(|t| t.status).collect()
        }
        fn level(&self) -> u8 {
            crate::results::level(&self.tiers)
        }
        fn cause(&self, t: Tier) -> Option<Cause> {
            self.tier(t).cause
        }
        fn reason(&self, t: Tier) -> &str {
            self.tier(t).reason.as_deref().unwrap_or("")
        }
    }

    impl Case {
        fn new() -> Case {
            Case::with_meta(RecipeMeta::default())
        }

        fn with_meta(meta: RecipeMeta) -> Case {
            let dir = tempfile::tempdir().unwrap();
            let run = Run::scripted(dir.path(), meta);
            let engine = ScriptedEngine::new(&run.stack);
            let case = Case {
                _dir: dir,
                engine,
                run,
                tested: Tested {
                    sha: "c0ffee".into(),
                    upgrade_base: "1.0.0+1.0".into(),
                    upgrade_base_commit: "ba5e".into(),
                },
            };
            case.ci_file("tests/10-ci.sh");
            case
        }

        /// An executable file in the recipe's CI-side dir.
        fn ci_file(&self, rel: &str) {
            let path = self.run.ci_dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn exit(&self, file: &str, exit: Exit) {
            self.engine.exits.borrow_mut().insert(file.into(), exit);
        }

        fn climb(&self) -> Climb {
            let ladder = Ladder::new(&self.run, &self.engine, &self.tested);
            let tiers = ladder.climb(|_| {});
            let teardown = ladder.teardown();
            Climb {
                tiers,
                budget: ladder.budget(),
                tests: ladder.tests(),
                teardown,
                log: std::fs::read_to_string(self.run.artifacts.join("run.log")).unwrap(),
            }
        }
    }

    #[test]
    fn a_healthy_recipe_reaches_level_5_on_a_budget_of_3() {
        let case = Case::new();
        let c = case.climb();
        assert_eq!(c.statuses(), [Passed; 5]);
        assert_eq!(c.level(), 5);
        assert_eq!(c.budget, 3);
        assert_eq!(case.engine.deploys_recorded(), 3);
        assert!(
            c.log
                .contains("data written at the base version survived the upgrade")
        );
        assert!(c.log.contains("back to the backed-up state"));
        assert_eq!(c.tests.len(), 1);
        assert!(c.teardown.clean() && c.teardown.missed.is_empty());
        assert!(case.engine.docker.listing().is_empty(), "torn down");
    }

    #[test]
    fn install_checks_out_the_tested_commit_and_upgrade_starts_from_the_base() {
        let case = Case::new();
        case.engine
            .fail("undeploy", Failure::Abra("stop here".into()));
        let c = case.climb();
        // The upgrade's removal of the install app failed: infrastructure.
        assert_eq!(c.statuses(), [Passed, Failed, NotRun, NotRun, NotRun]);
        assert_eq!(c.cause(Upgrade), Some(Cause::Infrastructure));
        assert!(c.reason(Upgrade).contains("removing the install app"));
    }

    #[test]
    fn the_upgrade_redeploys_the_tested_commit_over_the_base() {
        let case = Case::new();
        case.climb();
        assert_eq!(case.engine.checked_out.borrow().as_deref(), Some("c0ffee"));
    }

    #[test]
    fn app_creation_failing_is_the_recipes_fault() {
        let case = Case::new();
        case.engine
            .fail("new_app", Failure::Abra("unknown recipe".into()));
        let c = case.climb();
        assert_eq!(c.statuses(), [Failed, NotRun, NotRun, NotRun, NotRun]);
        assert_eq!(c.cause(Install), Some(Cause::Recipe));
        assert_eq!(c.level(), 0);
        assert_eq!(c.budget, 0);
    }

    #[test]
    fn secret_output_cc_ci_cannot_parse_is_a_harness_failure() {
        let case = Case::new();
        case.engine.fail("generate_secrets", Failure::Format);
        let c = case.climb();
        assert_eq!(c.cause(Install), Some(Cause::Harness));
    }

    #[test]
    fn a_checkout_that_fails_is_a_harness_failure() {
        let case = Case::new();
        case.engine.fail("checkout", Failure::Git);
        let c = case.climb();
        assert_eq!(c.cause(Install), Some(Cause::Harness));
        assert!(
            c.reason(Install).contains("bad object"),
            "{}",
            c.reason(Install)
        );
    }

    #[test]
    fn tasks_stuck_pending_make_a_failed_deploy_infrastructure() {
        let case = Case::new();
        case.engine
            .fail("deploy", Failure::Abra("timed out".into()));
        case.engine.docker.add(
            Kind::Service,
            &format!("{}_app", case.run.stack),
            Some(&case.run.stack),
        );
        case.engine.tasks(&["Running\tPending 2 minutes ago\t"]);
        let c = case.climb();
        assert_eq!(c.cause(Install), Some(Cause::Infrastructure));
        assert!(
            c.reason(Install)
                .contains("(diagnostics: diagnostics/install.txt)")
        );
        let text =
            std::fs::read_to_string(case.run.artifacts.join("diagnostics/install.txt")).unwrap();
        assert!(text.contains("tasks of"), "{text}");
    }

    #[test]
    fn failed_tasks_make_a_failed_deploy_the_recipes_fault() {
        let case = Case::new();
        case.engine.fail(
            "deploy",
            Failure::Abra("No such image mentioned in a log".into()),
        );
        case.engine.docker.add(
            Kind::Service,
            &format!("{}_app", case.run.stack),
            Some(&case.run.stack),
        );
        case.engine
            .tasks(&["Shutdown\tFailed 1 second ago\ttask: non-zero exit (1)"]);
        let c = case.climb();
        // Task states decide, not abra's message (which may quote the app's logs).
        assert_eq!(c.cause(Install), Some(Cause::Recipe));
    }

    #[test]
    fn without_tasks_abras_message_decides_the_cause() {
        let case = Case::new();
        case.engine
            .fail("deploy", Failure::Abra("No such image: ccci/x:1".into()));
        let c = case.climb();
        assert_eq!(c.cause(Install), Some(Cause::Infrastructure));
        let case = Case::new();
        case.engine
            .fail("deploy", Failure::Abra("compose file is invalid".into()));
        assert_eq!(case.climb().cause(Install), Some(Cause::Recipe));
    }

    #[test]
    fn never_healthy_is_a_timeout_after_the_converge_timeout() {
        let case = Case::with_meta(RecipeMeta {
            CONVERGE_TIMEOUT_S: Some(30),
            ..Default::default()
        });
        *case.engine.docker.health_after.borrow_mut() =
            Some("container x is Up 1 second (health: starting)".into());
        let c = case.climb();
        assert_eq!(c.cause(Install), Some(Cause::Timeout));
        assert!(
            c.reason(Install).contains("not healthy after 30 s"),
            "{}",
            c.reason(Install)
        );
        let waited = case.engine.docker.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(32),
            "{waited:?}"
        );
    }

    #[test]
    fn unhealthy_with_failing_tasks_is_the_recipes_fault() {
        let case = Case::with_meta(RecipeMeta {
            CONVERGE_TIMEOUT_S: Some(5),
            ..Default::default()
        });
        *case.engine.docker.health_after.borrow_mut() =
            Some("service app has 0/1 replicas running".into());
        case.engine
            .tasks(&["Shutdown\tFailed 1 second ago\ttask: non-zero exit (137)"]);
        case.engine.deploy(Install, "x", false).unwrap(); // the service exists
        let c = case.climb();
        assert_eq!(c.cause(Install), Some(Cause::Recipe));
    }

    #[test]
    fn a_stack_that_converges_late_still_passes() {
        let case = Case::new();
        case.engine
            .unhealthy(&["service app has 0/1 replicas running"; 6]);
        let c = case.climb();
        assert_eq!(c.tier(Install).status, Passed);
        assert_eq!(c.level(), 5);
    }

    #[test]
    fn a_failing_install_hook_fails_install_as_the_recipes_fault() {
        let case = Case::new();
        case.ci_file("install_steps.sh");
        case.exit("install_steps.sh", Exit::Code(2));
        let c = case.climb();
        assert_eq!(c.cause(Install), Some(Cause::Recipe));
        assert_eq!(c.reason(Install), "hook install_steps.sh failed (exit 2)");
    }

    #[test]
    fn app_env_and_the_overlay_are_applied_to_the_app() {
        let mut meta = RecipeMeta::default();
        meta.APP_ENV
            .insert("LETS_ENCRYPT_ENV".into(), "staging".into());
        let case = Case::with_meta(meta);
        case.ci_file(engine::OVERLAY);
        case.climb();
        assert!(
            case.engine
                .env
                .borrow()
                .contains(&("LETS_ENCRYPT_ENV".into(), "staging".into()))
        );
        // Install and the upgrade base each create the app.
        assert_eq!(case.engine.overlays.borrow().len(), 2);
    }

    #[test]
    fn a_base_that_does_not_deploy_is_named() {
        let case = Case::new();
        let c = {
            // Install passes; the next deploy (the base) fails.
            let ladder = Ladder::new(&case.run, &case.engine, &case.tested);
            assert_eq!(ladder.run_tier(Install), End::Passed);
            case.engine
                .fail("deploy", Failure::Abra("bad compose".into()));
            ladder.run_tier(Upgrade)
        };
        match c {
            End::Failed { cause, reason } => {
                assert_eq!(cause, Cause::Recipe);
                assert!(
                    reason.starts_with("the upgrade base 1.0.0+1.0 did not deploy: "),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_lost_by_the_upgrade_fails_it() {
        let case = Case::new();
        *case.engine.loses_data_at.borrow_mut() = Some("c0ffee".into());
        let ladder = Ladder::new(&case.run, &case.engine, &case.tested);
        ladder.run_tier(Install);
        // Install's deploy at c0ffee lost nothing yet (no data); the upgrade's second
        // deploy at c0ffee drops the base's marker.
        match ladder.run_tier(Upgrade) {
            End::Failed { cause, reason } => {
                assert_eq!(cause, Cause::Recipe);
                assert!(
                    reason.contains("data written before the upgrade is lost"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_backup_label_skips_backup_and_stops_at_level_2() {
        let case = Case::new();
        case.engine.labels.borrow_mut().clear();
        let c = case.climb();
        assert_eq!(c.statuses(), [Passed, Passed, Skipped, NotRun, NotRun]);
        assert_eq!(c.level(), 2);
        assert_eq!(
            c.reason(Backup),
            "no service has the label backupbot.backup=true"
        );
        assert!(c.log.contains("data checks skipped"));
    }

    #[test]
    fn a_failing_backup_is_the_recipes_fault() {
        let case = Case::new();
        case.engine
            .fail("backup", Failure::Abra("restic: no repo".into()));
        let c = case.climb();
        assert_eq!(c.statuses(), [Passed, Passed, Failed, NotRun, NotRun]);
        assert_eq!(c.cause(Backup), Some(Cause::Recipe));
    }

    #[test]
    fn a_restore_that_brings_nothing_back_fails_it() {
        let case = Case::new();
        case.engine.restore_is_a_noop.set(true);
        let c = case.climb();
        assert_eq!(c.statuses(), [Passed, Passed, Passed, Failed, NotRun]);
        assert_eq!(c.cause(Restore), Some(Cause::Recipe));
        assert!(
            c.reason(Restore)
                .contains("data changed after the backup is lost")
        );
        assert!(c.reason(Restore).contains("\"changed-after-backup\""));
    }

    #[test]
    fn without_a_data_location_restore_runs_but_is_skipped() {
        let case = Case::new();
        case.engine
            .labels
            .borrow_mut()
            .remove("backupbot.backup.path");
        // No path label and no volume: backupbot backs up nothing of it.
        case.engine.mounts.borrow_mut().clear();
        let c = case.climb();
        assert_eq!(c.statuses(), [Passed, Passed, Passed, Skipped, NotRun]);
        assert!(c.reason(Restore).contains("service app backs up no path"));
        assert!(c.reason(Restore).contains("DATA_SERVICE with DATA_PATH"));
        assert_eq!(
            case.engine.docker.called("exec"),
            0,
            "no marker without a probe"
        );
    }

    #[test]
    fn the_data_probe_of_meta_wins_over_labels() {
        let case = Case::with_meta(RecipeMeta {
            DATA_SERVICE: Some("db".into()),
            DATA_PATH: Some("/var/lib/db/".into()),
            ..Default::default()
        });
        let c = case.climb();
        assert_eq!(c.level(), 5);
        let files = case.engine.docker.calls.borrow().join("\n");
        assert!(files.contains("exec container-db sh -c"), "{files}");
        assert!(files.contains("/var/lib/db/.ccci-marker"), "{files}");
    }

    #[test]
    fn the_data_probe_reads_the_volumes_form_of_the_backup_label() {
        let case = Case::new();
        case.engine
            .labels
            .borrow_mut()
            .remove("backupbot.backup.path");
        // Relative to where the volume is mounted in the service (/data).
        case.engine
            .labels
            .borrow_mut()
            .insert("backupbot.backup.volumes.data.path".into(), "www".into());
        case.engine
            .docker
            .dirs
            .borrow_mut()
            .insert("/data/www".into());
        let c = case.climb();
        assert_eq!(c.level(), 5);
        let calls = case.engine.docker.calls.borrow().join("\n");
        assert!(calls.contains("/data/www/.ccci-marker"), "{calls}");
        assert!(
            c.log
                .contains("data checks use /data/www/.ccci-marker in service app")
        );
    }

    /// A database: its volume path names the dump file its pre-hook writes.
    fn dump_file_case(meta: RecipeMeta) -> Case {
        let case = Case::with_meta(meta);
        let mut labels = case.engine.labels.borrow_mut();
        labels.remove("backupbot.backup.path");
        labels.insert(
            "backupbot.backup.volumes.data.path".into(),
            "backup.sql".into(),
        );
        labels.insert("backupbot.backup.pre-hook".into(), "db dump".into());
        labels.insert("backupbot.restore.post-hook".into(), "db restore".into());
        drop(labels);
        case
    }

    fn commands() -> RecipeMeta {
        RecipeMeta {
            DATA_SERVICE: Some("app".into()),
            DATA_WRITE_CMD: Some("db insert \"$1\"".into()),
            DATA_READ_CMD: Some("db select".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_dump_file_cannot_hold_a_marker_so_the_data_checks_are_skipped_with_the_fix() {
        let case = dump_file_case(RecipeMeta::default());
        let c = case.climb();
        // Never a failure blamed on the recipe, never a pass that proves nothing.
        assert_eq!(c.statuses(), [Passed, Passed, Passed, Skipped, NotRun]);
        assert_eq!(c.level(), 3);
        let reason = c.reason(Restore);
        assert!(
            reason.contains(
                "the backed-up path /data/backup.sql of service app \
                 (backupbot.backup.volumes.data.path) does not exist (yet), which its backup \
                 pre-hook \"db dump\" writes"
            ),
            "{reason}"
        );
        assert!(
            reason.contains("DATA_WRITE_CMD and DATA_READ_CMD"),
            "{reason}"
        );
        let calls = case.engine.docker.calls.borrow().join("\n");
        assert!(!calls.contains(".ccci-marker"), "{calls}");
    }

    #[test]
    fn the_operators_probe_commands_prove_a_row_survives_upgrade_backup_and_restore() {
        let case = dump_file_case(commands());
        let ladder = Ladder::new(&case.run, &case.engine, &case.tested);
        for tier in [Install, Upgrade, Backup, Restore] {
            assert_eq!(ladder.run_tier(tier), End::Passed, "{tier}");
        }
        let log = std::fs::read_to_string(case.run.artifacts.join("run.log")).unwrap();
        assert!(log.contains("data checks use the data DATA_READ_CMD reads in service app"));
        let rows = case.engine.docker.rows.borrow()["app"].clone();
        assert_eq!(
            rows,
            [
                "written-by-1.0.0+1.0".to_string(),
                format!("backed-up-{}", case.run.id)
            ],
            "the row written after the backup is gone after the restore"
        );
        // A restore that brings nothing back leaves the later row: the recipe's fault.
        let case = dump_file_case(commands());
        case.engine.restore_is_a_noop.set(true);
        let c = case.climb();
        assert_eq!(c.cause(Restore), Some(Cause::Recipe));
        assert!(
            c.reason(Restore).contains(
                "data changed after the backup is not back to its backed-up state: the data \
                 DATA_READ_CMD reads in service app holds"
            ),
            "{}",
            c.reason(Restore)
        );
        // An upgrade that loses the rows.
        let case = dump_file_case(commands());
        *case.engine.loses_data_at.borrow_mut() = Some("c0ffee".into());
        let c = case.climb();
        assert_eq!(c.cause(Upgrade), Some(Cause::Recipe));
        assert!(
            c.reason(Upgrade)
                .contains("data written before the upgrade is lost")
        );
    }

    #[test]
    fn probe_commands_that_do_not_work_are_the_ci_configs_fault_not_the_recipes() {
        let case = dump_file_case(commands());
        case.engine.docker.forgetful_store.set(true);
        let c = case.climb();
        assert_eq!(c.statuses(), [Passed, Failed, NotRun, NotRun, NotRun]);
        assert_eq!(c.cause(Upgrade), Some(Cause::Harness));
        assert!(
            c.reason(Upgrade).contains(
                "does not read back what it wrote: DATA_WRITE_CMD recorded \"written-by-1.0.0+1.0\""
            ),
            "{}",
            c.reason(Upgrade)
        );
    }

    #[test]
    fn a_missing_external_network_is_the_hosts_fault_and_nothing_is_deployed() {
        use crate::runner::compose::Network;
        let case = Case::new();
        case.engine.more.borrow_mut().networks.insert(
            "proxy".into(),
            Network {
                external: true,
                ..Default::default()
            },
        );
        let mut app = crate::runner::compose::Service::default();
        app.networks.insert("proxy".into(), Default::default());
        case.engine
            .more
            .borrow_mut()
            .services
            .insert("app".into(), app);
        let c = case.climb();
        assert_eq!(c.statuses(), [Failed, NotRun, NotRun, NotRun, NotRun]);
        assert_eq!(c.cause(Install), Some(Cause::Infrastructure));
        let reason = c.reason(Install);
        assert!(
            reason.starts_with("nothing deployed: the host has no network \"proxy\""),
            "{reason}"
        );
        assert!(
            reason.contains("docker network create --driver overlay --attachable proxy"),
            "{reason}"
        );
        assert_eq!(c.budget, 0);
        assert_eq!(case.engine.deploys_recorded(), 0);
        // With the network there, the same recipe climbs.
        let case2 = Case::new();
        *case2.engine.more.borrow_mut() = case.engine.more.borrow().clone();
        case2.engine.docker.add(Kind::Network, "proxy", None);
        assert_eq!(case2.climb().level(), 5);
    }

    #[test]
    fn compose_files_cc_ci_cannot_read_are_a_harness_failure_never_the_recipes() {
        let case = Case::new();
        case.engine.fail(
            "compose",
            Failure::Compose("a construct cc-ci does not know".into()),
        );
        let c = case.climb();
        // The deploy decides what it can; what needs the model fails as cc-ci's.
        assert_eq!(c.tier(Install).status, Passed);
        assert!(
            c.log
                .contains("host prerequisites not checked: cc-ci could not read")
        );
        assert_eq!(c.cause(Upgrade), Some(Cause::Harness));
        assert!(
            c.reason(Upgrade)
                .contains("cc-ci could not read the app's compose files: compose.yml: not valid YAML: a construct cc-ci does not know"),
            "{}",
            c.reason(Upgrade)
        );
    }

    #[test]
    fn an_env_file_cc_ci_cannot_read_stops_before_the_deploy_as_cc_cis_failure() {
        let case = Case::new();
        case.engine.fail(
            "compose",
            Failure::Env("unterminated quoted value \"x".into()),
        );
        let c = case.climb();
        assert_eq!(c.cause(Install), Some(Cause::Harness));
        assert!(
            c.reason(Install).starts_with(
                "nothing deployed: cc-ci could not read the app's env file as abra reads it: \
                 app.env:3: unterminated quoted value"
            ),
            "{}",
            c.reason(Install)
        );
        assert_eq!(c.budget, 0);
    }

    #[test]
    fn labels_naming_volumes_the_service_lacks_are_noted() {
        let case = Case::new();
        case.engine
            .labels
            .borrow_mut()
            .insert("backupbot.backup.volumes.gone.path".into(), "x".into());
        let c = case.climb();
        assert_eq!(c.level(), 5);
        assert!(c.log.contains(
            "backupbot label ignored: backupbot.backup.volumes.gone.path (service app mounts no volume gone)"
        ));
    }

    #[test]
    fn a_data_service_without_a_running_container_is_the_recipes_fault() {
        let case = Case::new();
        case.engine
            .docker
            .no_container
            .borrow_mut()
            .push("app".into());
        let c = case.climb();
        assert_eq!(c.cause(Upgrade), Some(Cause::Recipe));
        assert_eq!(c.reason(Upgrade), "no running container of service app");
    }

    #[test]
    fn no_tests_anywhere_skips_custom_at_level_4() {
        let case = Case::new();
        std::fs::remove_dir_all(case.run.ci_dir.join("tests")).unwrap();
        let c = case.climb();
        assert_eq!(c.statuses(), [Passed, Passed, Passed, Passed, Skipped]);
        assert_eq!(c.level(), 4);
    }

    #[test]
    fn recipe_tests_run_before_ci_tests_and_a_failure_is_the_recipes() {
        let case = Case::new();
        case.engine.ships_tests.set(true);
        case.exit("01-recipe.sh", Exit::Code(1));
        let c = case.climb();
        assert_eq!(c.cause(Custom), Some(Cause::Recipe));
        assert_eq!(
            c.reason(Custom),
            "1 of the custom tests failed, first recipe/01-recipe.sh: exit 1"
        );
        let names: Vec<&str> = c.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["recipe/01-recipe.sh", "ci/10-ci.sh"]);
        assert_eq!(
            case.engine.untrusted.get(),
            1,
            "only the recipe's test is confined"
        );
        assert_eq!(c.level(), 4);
    }

    #[test]
    fn a_test_that_times_out_is_a_timeout() {
        let case = Case::new();
        case.exit("10-ci.sh", Exit::TimedOut);
        let c = case.climb();
        assert_eq!(c.cause(Custom), Some(Cause::Timeout));
    }

    #[test]
    fn a_junit_report_with_failures_fails_a_test_that_exited_0() {
        let case = Case::new();
        let junit = case.run.artifacts.join("tests/ci-10-ci.sh.xml");
        std::fs::create_dir_all(junit.parent().unwrap()).unwrap();
        std::fs::write(
            &junit,
            "<testsuite><testcase><failure/></testcase></testsuite>",
        )
        .unwrap();
        let c = case.climb();
        assert_eq!(c.cause(Custom), Some(Cause::Recipe));
        assert!(
            c.reason(Custom)
                .contains("1 failing case(s) in its JUnit report")
        );
    }

    #[test]
    fn a_cancelled_run_stops_with_cause_cancelled_and_climbs_no_further() {
        let case = Case::new();
        case.run.exec.stop.cancel.store(true, Ordering::SeqCst);
        let c = case.climb();
        assert_eq!(c.statuses(), [Failed, NotRun, NotRun, NotRun, NotRun]);
        assert_eq!(c.cause(Install), Some(Cause::Cancelled));
        assert_eq!(c.reason(Install), "cancelled (before the tier started)");
        // The teardown still runs after a cancel.
        assert!(c.log.contains("=== teardown ==="));
    }

    #[test]
    fn a_failure_while_cancelled_is_classed_by_the_stop() {
        let case = Case::new();
        case.engine.fail("backup", Failure::Abra("killed".into()));
        // Cancelled during the backup (the flag is set when abra "fails").
        let ladder = Ladder::new(&case.run, &case.engine, &case.tested);
        assert_eq!(ladder.run_tier(Install), End::Passed);
        case.run.exec.stop.cancel.store(true, Ordering::SeqCst);
        let end = ladder.stopped_override(ladder.run_tier(Backup));
        assert!(
            matches!(
                end,
                End::Failed {
                    cause: Cause::Cancelled,
                    ..
                }
            ),
            "{end:?}"
        );
    }

    #[test]
    fn a_passed_deadline_is_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Run::scripted(dir.path(), RecipeMeta::default());
        run.exec.stop.deadline = Instant::now() - Duration::from_secs(1);
        let engine = ScriptedEngine::new(&run.stack);
        let tested = Tested {
            sha: "c0ffee".into(),
            upgrade_base: "1.0.0+1.0".into(),
            upgrade_base_commit: "ba5e".into(),
        };
        let tiers = Ladder::new(&run, &engine, &tested).climb(|_| {});
        assert_eq!(tiers[0].cause, Some(Cause::Timeout));
        assert_eq!(
            tiers[0].reason.as_deref(),
            Some("the run's deadline passed (before the tier started)")
        );
    }

    #[test]
    fn a_hook_that_deploys_without_counting_breaks_the_budget() {
        let case = Case::new();
        case.engine.extra_deploys.set(1);
        let c = case.climb();
        assert_eq!(c.budget, 3);
        assert_eq!(case.engine.deploys_recorded(), 4);
    }

    #[test]
    fn a_failed_install_spends_one_deploy_of_the_budget() {
        let case = Case::new();
        case.engine.unhealthy(&[]);
        case.engine.fail("deploy", Failure::Abra("invalid".into()));
        let c = case.climb();
        assert_eq!(c.budget, 1);
        assert_eq!(case.engine.deploys_recorded(), 1);
    }

    #[test]
    fn what_abra_leaves_is_removed_directly_and_recorded() {
        let case = Case::new();
        case.engine
            .fail("remove_app", Failure::Abra("volume in use".into()));
        let c = case.climb();
        let missed: Vec<String> = c.teardown.missed.iter().map(ToString::to_string).collect();
        assert!(
            missed.contains(&format!("volume {}_data", case.run.stack)),
            "{missed:?}"
        );
        assert!(c.teardown.clean(), "{:?}", c.teardown);
        assert!(case.engine.docker.listing().is_empty());
        assert!(c.log.contains("abra's teardown left"));
    }

    #[test]
    fn what_cannot_be_removed_leaves_the_teardown_unclean() {
        let case = Case::new();
        case.engine.fail("undeploy", Failure::Abra("no".into()));
        let stuck = format!("{}_default", case.run.stack);
        case.engine
            .docker
            .permanent
            .borrow_mut()
            .push(stuck.clone());
        let c = case.climb();
        assert!(!c.teardown.clean());
        assert_eq!(c.teardown.left.len(), 1);
        assert_eq!(c.teardown.left[0].name, stuck);
        assert!(c.log.contains("still left after direct removal"));
    }
}
