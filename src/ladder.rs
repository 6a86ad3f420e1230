//! The level ladder: install, upgrade, backup, restore, custom. The level is the
//! number of tiers passed in order from the bottom; a failed or skipped tier stops the
//! climb and the tiers above it are `not_run` (a badge never claims what was not
//! tested). `docs/levels.md` describes each tier.
use crate::abra::Abra;
use crate::meta::RecipeMeta;
use crate::process::{Cmd, Executor, Exit, StopReason};
use crate::recipe::Checkout;
use crate::results::{Cause, TierResult, TierStatus};
use crate::swarm;
use chrono::Utc;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const TIERS: [&str; 5] = ["install", "upgrade", "backup", "restore", "custom"];

/// The level: tiers passed in order from the bottom.
pub fn level(tiers: &[TierResult]) -> u8 {
    tiers
        .iter()
        .take_while(|t| t.status == TierStatus::Passed)
        .count() as u8
}

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

/// What the teardown funnel found.
#[derive(Debug, Clone)]
pub struct Teardown {
    /// What abra's teardown left behind (then removed directly).
    pub missed: Vec<String>,
    /// What is still there after direct removal (empty: clean).
    pub left: Vec<String>,
}

/// One custom test's outcome, for JUnit.
#[derive(Debug, Clone)]
pub struct TestCaseResult {
    pub name: String,
    pub passed: bool,
    pub started_at: chrono::DateTime<Utc>,
    pub duration: Duration,
    pub message: String,
}

/// Everything the tiers need.
pub struct Ladder<'a> {
    pub exec: &'a Executor,
    pub abra: Abra<'a>,
    pub checkout: Checkout,
    pub sha: String,
    pub upgrade_base: Option<String>,
    pub stack: String,
    pub meta: RecipeMeta,
    /// CI-side recipe dir: meta, `compose.ccci.yml`, hooks, `tests/`.
    pub ci_dir: PathBuf,
    /// The hook and test environment contract.
    pub env: Vec<(String, String)>,
    pub artifacts: PathBuf,
    pub scratch: PathBuf,
    pub run_id: String,
    /// Deploys the plan expected so far.
    pub budget: Cell<u32>,
    pub tests: RefCell<Vec<TestCaseResult>>,
    marker: RefCell<Option<(String, String)>>,
}

/// A service's spec labels.
type Labels = std::collections::BTreeMap<String, String>;

const OVERLAY: &str = "compose.ccci.yml";
const MARKER: &str = ".ccci-marker";

impl<'a> Ladder<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        exec: &'a Executor,
        abra: Abra<'a>,
        checkout: Checkout,
        sha: String,
        upgrade_base: Option<String>,
        meta: RecipeMeta,
        ci_dir: PathBuf,
        env: Vec<(String, String)>,
        artifacts: PathBuf,
        scratch: PathBuf,
        run_id: String,
    ) -> Ladder<'a> {
        let stack = swarm::stack_name(&abra.domain);
        Ladder {
            exec,
            abra,
            checkout,
            sha,
            upgrade_base,
            stack,
            meta,
            ci_dir,
            env,
            artifacts,
            scratch,
            run_id,
            budget: Cell::new(0),
            tests: RefCell::new(Vec::new()),
            marker: RefCell::new(None),
        }
    }

    /// Climb; `on_change` sees the tier list after every change (for results.json).
    pub fn climb(&self, mut on_change: impl FnMut(&[TierResult])) -> Vec<TierResult> {
        let mut tiers: Vec<TierResult> = TIERS
            .iter()
            .map(|name| TierResult {
                name: name.to_string(),
                status: TierStatus::Pending,
                started_at: None,
                duration_s: None,
                cause: None,
                reason: None,
            })
            .collect();
        let mut stopped = false;
        for i in 0..tiers.len() {
            if stopped {
                tiers[i].status = TierStatus::NotRun;
                continue;
            }
            let name = TIERS[i];
            let started = Instant::now();
            tiers[i].status = TierStatus::Running;
            tiers[i].started_at = Some(Utc::now());
            on_change(&tiers);
            self.exec.progress().stage(name);
            self.exec.note(&format!("=== tier {name} ==="));
            let end = match self.exec.stop_reason() {
                Some(r) => stopped_end(r, "before the tier started"),
                None => self.run_tier(name),
            };
            let end = self.stopped_override(end);
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
            self.exec.note(&format!(
                "=== tier {name}: {:?}{} ===",
                t.status,
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
        match (&end, self.exec.stop.check()) {
            (End::Failed { reason, .. }, Some(r)) => stopped_end(r, reason),
            _ => end,
        }
    }

    fn run_tier(&self, name: &str) -> End {
        let result = match name {
            "install" => self.install(),
            "upgrade" => self.upgrade(),
            "backup" => self.backup(),
            "restore" => self.restore(),
            "custom" => self.custom(),
            _ => unreachable!("tiers are fixed"),
        };
        result.unwrap_or_else(|e| e)
    }

    /// Create the app at the checked-out version and deploy it, converged and healthy.
    fn create_and_deploy(&self, tier: &str, commit: &str, version: &str) -> Result<(), End> {
        self.checkout
            .checkout(commit)
            .map_err(|e| fail(Cause::Harness, e.to_string()))?;
        let overlay = self.ci_dir.join(OVERLAY);
        if overlay.is_file() {
            std::fs::copy(&overlay, self.checkout.dir.join(OVERLAY)).map_err(|e| {
                fail(
                    Cause::Harness,
                    format!("copying {}: {e}", overlay.display()),
                )
            })?;
        }
        self.abra
            .new_app(&self.checkout.recipe)
            .map_err(|e| fail(Cause::Recipe, e.to_string()))?;
        if !self.meta.APP_ENV.is_empty() {
            let vars: Vec<(String, String)> = self.meta.APP_ENV.clone().into_iter().collect();
            self.abra
                .set_env(&vars)
                .map_err(|e| fail(Cause::Harness, e.to_string()))?;
        }
        if overlay.is_file() {
            self.abra
                .add_compose_file(OVERLAY)
                .map_err(|e| fail(Cause::Harness, e.to_string()))?;
        }
        self.abra.generate_secrets().map_err(|e| {
            // Output cc-ci cannot parse leaves secret values it cannot mask: stop.
            let cause = match e {
                crate::abra::Error::Format { .. } => Cause::Harness,
                _ => Cause::Recipe,
            };
            fail(cause, e.to_string())
        })?;
        self.deploy(tier, version, false)
    }

    /// One counted deploy, then the independent convergence and health check.
    fn deploy(&self, tier: &str, version: &str, force: bool) -> Result<(), End> {
        self.budget.set(self.budget.get() + 1);
        let deployed = self.abra.deploy(tier, version, force);
        let timeout = Duration::from_secs(self.meta.converge_timeout_s());
        let healthy = match &deployed {
            Ok(()) => swarm::wait_healthy(self.exec, &self.stack, timeout)
                .map_err(|e| fail(Cause::Infrastructure, e.to_string()))?,
            Err(_) => Ok(()),
        };
        if deployed.is_ok() && healthy.is_ok() {
            return Ok(());
        }
        let (text, tasks_cause) = match swarm::diagnostics(self.exec, &self.stack) {
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
            (Ok(()), Ok(())) => unreachable!(),
        };
        Err(fail(cause, format!("{reason} (diagnostics: {file})")))
    }

    fn save_diagnostics(&self, tier: &str, text: &str) -> String {
        let dir = self.artifacts.join("diagnostics");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{tier}.txt"));
        let _ = std::fs::write(&path, text);
        format!("diagnostics/{tier}.txt")
    }

    fn install(&self) -> Result<End, End> {
        self.create_and_deploy("install", &self.sha.clone(), "tested ref")?;
        self.hook("install_steps.sh", "install")?;
        Ok(End::Passed)
    }

    fn upgrade(&self) -> Result<End, End> {
        let base = self
            .upgrade_base
            .clone()
            .ok_or_else(|| fail(Cause::Harness, "no upgrade base was resolved"))?;
        // Start from a fresh app at the base version: the install's app goes first.
        self.remove_app().map_err(|e| {
            fail(
                Cause::Infrastructure,
                format!("removing the install app: {e}"),
            )
        })?;
        let base_commit = self
            .checkout
            .resolve(&base)
            .map_err(|e| fail(Cause::Harness, e.to_string()))?;
        self.create_and_deploy("upgrade", &base_commit, &base)
            .map_err(|e| reword(e, &format!("the upgrade base {base} did not deploy")))?;
        let probe = self.data_probe()?;
        if let Some(p) = &probe {
            self.write_marker(p, &format!("written-by-{base}"))?;
        }
        self.checkout
            .checkout(&self.sha)
            .map_err(|e| fail(Cause::Harness, e.to_string()))?;
        self.deploy("upgrade", "tested ref", true)?;
        if let Some(p) = &probe {
            self.expect_marker(
                p,
                &format!("written-by-{base}"),
                "data written before the upgrade",
            )?;
            self.exec
                .note("data written at the base version survived the upgrade");
        }
        Ok(End::Passed)
    }

    fn backup(&self) -> Result<End, End> {
        if self.backup_services()?.is_empty() {
            return Ok(End::Skipped {
                reason: "no service has the label backupbot.backup=true".into(),
            });
        }
        if let Some(p) = self.data_probe()? {
            self.write_marker(&p, &format!("backed-up-{}", self.run_id))?;
        }
        self.abra
            .backup()
            .map_err(|e| fail(Cause::Recipe, e.to_string()))?;
        Ok(End::Passed)
    }

    fn restore(&self) -> Result<End, End> {
        let probe = self.data_probe()?;
        if let Some(p) = &probe {
            self.write_marker(p, "changed-after-backup")?;
        }
        self.abra
            .restore()
            .map_err(|e| fail(Cause::Recipe, e.to_string()))?;
        let timeout = Duration::from_secs(self.meta.converge_timeout_s());
        if let Err(u) = swarm::wait_healthy(self.exec, &self.stack, timeout)
            .map_err(|e| fail(Cause::Infrastructure, e.to_string()))?
        {
            return Err(fail(u.cause, format!("after restore: {}", u.reason)));
        }
        match &probe {
            Some(p) => {
                self.expect_marker(
                    p,
                    &format!("backed-up-{}", self.run_id),
                    "data changed after the backup",
                )?;
                self.exec
                    .note("data changed after the backup is back to the backed-up state");
            }
            None => {
                return Ok(End::Skipped {
                    reason:
                        "no data location to check: set DATA_SERVICE and DATA_PATH in meta.toml"
                            .into(),
                });
            }
        }
        Ok(End::Passed)
    }

    fn custom(&self) -> Result<End, End> {
        let recipe_tests = self.scratch.join("recipe-tests");
        let shipped = self
            .checkout
            .snapshot_tests(&self.sha, &recipe_tests)
            .map_err(|e| fail(Cause::Harness, e.to_string()))?;
        let mut tests = Vec::new();
        if shipped {
            tests.extend(
                executables(&recipe_tests.join("tests"))
                    .into_iter()
                    .map(|p| ("recipe", p)),
            );
        }
        tests.extend(
            executables(&self.ci_dir.join("tests"))
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
        self.hook("setup_custom_tests.sh", "custom")?;
        let junit_dir = self.artifacts.join("tests");
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
            let out = self
                .exec
                .run(
                    Cmd::new(&path)
                        .envs(&self.env)
                        .env("CCCI_TIER", "custom")
                        .env("CCCI_JUNIT_FILE", &junit_file)
                        .dir(path.parent().unwrap_or(Path::new("/")))
                        .timeout(Duration::from_secs(self.meta.test_timeout_s())),
                )
                .map_err(|e| fail(Cause::Harness, e.to_string()))?;
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
            if self.exec.stop_reason().is_some() {
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
    fn hook(&self, file: &str, tier: &str) -> Result<(), End> {
        let path = self.ci_dir.join(file);
        if !path.is_file() {
            return Ok(());
        }
        let out = self
            .exec
            .run(
                Cmd::new("bash")
                    .arg(&path)
                    .envs(&self.env)
                    .env("CCCI_TIER", tier)
                    .dir(&self.ci_dir),
            )
            .map_err(|e| fail(Cause::Harness, e.to_string()))?;
        if !out.exit.success() {
            return Err(fail(
                Cause::Recipe,
                format!("hook {file} failed ({})", out.exit),
            ));
        }
        Ok(())
    }

    /// The teardown funnel, run once after the climb on every path: abra undeploys
    /// and removes the app; whatever abra left is removed directly and recorded in
    /// `missed`; `left` is what even that could not remove.
    pub fn teardown(&self) -> Teardown {
        self.exec.note("=== teardown ===");
        self.exec.begin_teardown();
        if let Err(e) = self.remove_app() {
            self.exec.note(&format!("abra teardown failed: {e}"));
        }
        let unknown = |e: swarm::Error| vec![format!("leak check failed: {e}")];
        let missed = swarm::leaks(self.exec, &self.stack).unwrap_or_else(unknown);
        let mut left = Vec::new();
        if !missed.is_empty() {
            self.exec.note(&format!(
                "abra's teardown left {}: removing directly",
                missed.join(", ")
            ));
            left = swarm::force_clean(self.exec, &self.stack).unwrap_or_else(unknown);
            if !left.is_empty() {
                self.exec.note(&format!(
                    "still left after direct removal: {}",
                    left.join(", ")
                ));
            }
        }
        Teardown { missed, left }
    }

    /// Undeploy and remove the app (volumes, secrets, env).
    fn remove_app(&self) -> Result<(), crate::abra::Error> {
        let deployed = swarm::services(self.exec, &self.stack)
            .map(|s| !s.is_empty())
            .unwrap_or(true);
        if deployed {
            self.abra.undeploy()?;
        }
        if self.abra.env_file().exists() {
            self.abra.remove()?;
        }
        Ok(())
    }

    fn backup_services(&self) -> Result<Vec<(String, Labels)>, End> {
        let services = swarm::services(self.exec, &self.stack)
            .map_err(|e| fail(Cause::Infrastructure, e.to_string()))?;
        let mut out = Vec::new();
        for svc in services {
            let labels = swarm::service_labels(self.exec, &svc)
                .map_err(|e| fail(Cause::Infrastructure, e.to_string()))?;
            if labels.get("backupbot.backup").map(String::as_str) == Some("true") {
                out.push((svc, labels));
            }
        }
        Ok(out)
    }

    /// Where the data checks write: meta's DATA_SERVICE/DATA_PATH, else the first
    /// backed-up path of the first backed-up service.
    fn data_probe(&self) -> Result<Option<(String, String)>, End> {
        if let Some(p) = self.marker.borrow().clone() {
            return Ok(Some(p));
        }
        let probe = match self.meta.data_probe() {
            Some((s, p)) => Some((s.to_string(), p.to_string())),
            None => self
                .backup_services()?
                .into_iter()
                .find_map(|(svc, labels)| {
                    let path = labels.get("backupbot.backup.path").cloned().or_else(|| {
                        labels
                            .iter()
                            .find(|(k, _)| {
                                k.starts_with("backupbot.backup.volumes.") && k.ends_with(".path")
                            })
                            .map(|(_, v)| v.clone())
                    })?;
                    let service = svc
                        .strip_prefix(&format!("{}_", self.stack))
                        .unwrap_or(&svc)
                        .to_string();
                    Some((
                        service,
                        path.split(',').next().unwrap_or("").trim().to_string(),
                    ))
                }),
        };
        if probe.is_none() {
            self.exec.note("no data location known (no backupbot path label, no DATA_SERVICE/DATA_PATH): data checks skipped");
        }
        *self.marker.borrow_mut() = probe.clone();
        Ok(probe)
    }

    fn container(&self, service: &str) -> Result<String, End> {
        swarm::container(self.exec, &self.stack, service)
            .map_err(|e| fail(Cause::Infrastructure, e.to_string()))?
            .ok_or_else(|| {
                fail(
                    Cause::Recipe,
                    format!("no running container of service {service}"),
                )
            })
    }

    fn write_marker(&self, (service, path): &(String, String), value: &str) -> Result<(), End> {
        let c = self.container(service)?;
        let file = format!("{}/{MARKER}", path.trim_end_matches('/'));
        let out = swarm::exec_sh(self.exec, &c, "printf %s \"$1\" > \"$2\"", &[value, &file])
            .map_err(|e| fail(Cause::Infrastructure, e.to_string()))?;
        if !out.exit.success() {
            return Err(fail(
                Cause::Recipe,
                format!(
                    "cannot write {file} in service {service}: {}",
                    out.stderr.trim()
                ),
            ));
        }
        Ok(())
    }

    fn expect_marker(
        &self,
        probe: &(String, String),
        expected: &str,
        what: &str,
    ) -> Result<(), End> {
        let c = self.container(&probe.0)?;
        let file = format!("{}/{MARKER}", probe.1.trim_end_matches('/'));
        let out = swarm::exec_sh(self.exec, &c, "cat \"$1\"", &[&file])
            .map_err(|e| fail(Cause::Infrastructure, e.to_string()))?;
        let found = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.exit.success() || found != expected {
            return Err(fail(
                Cause::Recipe,
                format!(
                    "{what} is lost: {file} in service {} holds {found:?}, expected {expected:?}",
                    probe.0
                ),
            ));
        }
        Ok(())
    }
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
    use super::*;

    fn tier(status: TierStatus) -> TierResult {
        TierResult {
            name: "t".into(),
            status,
            started_at: None,
            duration_s: None,
            cause: None,
            reason: None,
        }
    }

    #[test]
    fn level_counts_passed_from_the_bottom() {
        use TierStatus::*;
        assert_eq!(
            level(&[Passed, Passed, Passed, Passed, Passed].map(tier)),
            5
        );
        assert_eq!(
            level(&[Passed, Failed, NotRun, NotRun, NotRun].map(tier)),
            1
        );
        assert_eq!(
            level(&[Passed, Passed, Skipped, NotRun, NotRun].map(tier)),
            2
        );
        assert_eq!(
            level(&[Failed, NotRun, NotRun, NotRun, NotRun].map(tier)),
            0
        );
        // A pass above a skip does not count.
        assert_eq!(
            level(&[Passed, Skipped, Passed, Passed, Passed].map(tier)),
            1
        );
    }
}
