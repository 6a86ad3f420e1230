//! A run: built once from the command line or a run request plus the config, then
//! taken by every stage. It knows what is tested (recipe, ref, PR), where the run's
//! files go (artifacts, scratch, `ABRA_DIR`), its app (domain, stack), its recipe's
//! CI meta, and how its children run (the executor with its deadline and secrets).
use super::abra::Abra;
use super::engine::Real;
use super::policy;
use super::recipe::{self, Checkout};
use super::swarm;
use crate::cli::RunArgs;
use crate::config::{self, Config};
use crate::docker::{self, Docker};
use crate::lock::{self, DomainLock};
use crate::meta::{self, RecipeMeta};
use crate::process::{Executor, Stop};
use crate::progress::Progress;
use crate::reap;
use crate::redact;
use crate::request::RunRequest;
use crate::results::{Cause, Results};
use crate::runid;
use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// One run of the ladder.
pub struct Run {
    pub id: String,
    pub recipe: String,
    /// Clone source: a local path or the request's clone URL.
    pub source: String,
    pub git_ref: String,
    /// The exact commit, when a run request names it.
    pub requested_sha: Option<String>,
    pub pr: Option<u64>,
    /// `<recipe>[-pr<N>].<runner.domain>`: runs that share it share its lock.
    pub domain: String,
    pub stack: String,
    pub config: Config,
    pub meta: RecipeMeta,
    /// CI-side files of the recipe: meta, overlay, hooks, tests.
    pub ci_dir: PathBuf,
    /// The pinned abra.
    pub abra: PathBuf,
    /// Artifacts: results.json, run.log, junit.xml... (`<state.dir>/runs/<run-id>`).
    pub artifacts: PathBuf,
    /// Volatile scratch: `ABRA_DIR`, the deploy record, the test snapshot.
    pub scratch: PathBuf,
    pub exec: Executor,
    pub started: Instant,
    results: RefCell<Results>,
    /// The scratch dir's mark, locked while this run lives.
    _alive: std::fs::File,
}

/// What the checkout stage resolved: the commit tested and the release it upgrades from.
#[derive(Debug, Clone)]
pub struct Tested {
    pub sha: String,
    pub upgrade_base: String,
    pub upgrade_base_commit: String,
}

/// What to test, from the command line or a run request.
struct Target {
    run_id: String,
    recipe: String,
    source: String,
    git_ref: String,
    sha: Option<String>,
    pr: Option<u64>,
}

/// The app domain: the same recipe and PR share it (and so its lock); other PRs and
/// recipes run in parallel.
pub fn app_domain(recipe: &str, pr: Option<u64>, base: &str) -> String {
    match pr {
        Some(n) => format!("{recipe}-pr{n}.{base}"),
        None => format!("{recipe}.{base}"),
    }
}

impl Run {
    /// Check everything a run needs before it can log (config, target, output dir,
    /// meta, abra, scratch dir), then open its log. From the moment the artifact dir
    /// exists, an error is recorded in results.json too.
    pub fn open(args: &RunArgs) -> anyhow::Result<Run> {
        let config = load_config(args.config.as_deref())?;
        let target = target(args, &config)?;
        let artifacts = args
            .output
            .clone()
            .unwrap_or_else(|| config.state.dir.join("runs").join(&target.run_id));
        // A run request runs once: a second start of the same request (a unit
        // restarted by hand, a poller relaunching after a crash) must not deploy again.
        if (args.request.is_some() || args.instance.is_some())
            && artifacts.join("results.json").exists()
        {
            bail!(
                "run {} already ran (results in {}); a run request runs once; comment the \
                 trigger again for a new run",
                target.run_id,
                artifacts.display()
            );
        }
        writable_dir(&artifacts)?;
        let artifacts = artifacts.canonicalize()?;
        let domain = app_domain(&target.recipe, target.pr, &config.runner.domain);
        let mut results = Results::start(
            &target.run_id,
            &target.recipe,
            &target.git_ref,
            target.sha.as_deref(),
            target.pr,
            &domain,
        );
        let results_path = artifacts.join("results.json");
        let opened = (|| {
            let ci_dir = config.recipe_ci_dir(&target.recipe);
            let meta = load_meta(&ci_dir)?;
            let abra = abra_binary(&config.runner.abra)?;
            let scratch = config.state.runtime_dir.join("runs").join(&target.run_id);
            std::fs::create_dir_all(&scratch).with_context(|| {
                format!("cannot create the run's scratch dir {}", scratch.display())
            })?;
            // The recipe's tests run as another user: they must be able to pass
            // through cc-ci's own dirs down to their snapshot and scratch (landlock,
            // not the mode bits, keeps them out of everything else).
            let runtime = &config.state.runtime_dir;
            for dir in [runtime.clone(), runtime.join("runs"), scratch.clone()] {
                crate::confine::identity::make_traversable(&dir).with_context(|| {
                    format!("cannot let the test user traverse {}", dir.display())
                })?;
            }
            // Locked for as long as this process lives: the janitor and later runs of
            // the app reap the dir only once nobody holds it.
            let alive = reap::mark_scratch(&scratch, &domain).with_context(|| {
                format!(
                    "cannot write to the run's scratch dir {}",
                    scratch.display()
                )
            })?;
            let exec = executor(&config, &artifacts)?;
            anyhow::Ok((ci_dir, meta, abra, scratch, alive, exec))
        })();
        let (ci_dir, meta, abra, scratch, alive, exec) = match opened {
            Ok(o) => o,
            Err(err) => {
                // The run dir exists: say there why the run could not start (the
                // poller reports it), not only in the journal.
                results.record_error(format!("{err:#}"), &results_path);
                return Err(err);
            }
        };
        let run = Run {
            id: target.run_id,
            recipe: target.recipe,
            source: target.source,
            git_ref: target.git_ref,
            requested_sha: target.sha,
            pr: target.pr,
            stack: swarm::stack_name(&domain),
            domain,
            config,
            meta,
            ci_dir,
            abra,
            artifacts,
            scratch,
            exec,
            started: Instant::now(),
            results: RefCell::new(results),
            _alive: alive,
        };
        run.exec.note(&format!(
            "cc-ci run {} of {} ({}) as {}",
            run.id, run.recipe, run.git_ref, run.domain
        ));
        // Written before anything is locked or deployed: whatever this run will leave
        // on the swarm is then traceable to it (the janitor reads the app domain here).
        run.record(|_| ())
            .with_context(|| run.cannot_write("results.json"))
            .map_err(|e| run.fail(e))?;
        Ok(run)
    }

    /// What to say when a file of the run's artifact dir cannot be written: its path,
    /// and the fix (a full disk is the usual reason).
    pub fn cannot_write(&self, name: &str) -> String {
        format!(
            "cannot write {}; make room under {} (is the disk full?) and run again",
            self.artifacts.join(name).display(),
            self.artifacts.parent().unwrap_or(&self.artifacts).display()
        )
    }

    pub fn results_path(&self) -> PathBuf {
        self.artifacts.join("results.json")
    }

    pub fn abra_dir(&self) -> PathBuf {
        self.scratch.join("abra")
    }

    pub fn deploys_file(&self) -> PathBuf {
        self.scratch.join("deploys")
    }

    pub fn progress(&self) -> Progress {
        self.exec.progress()
    }

    /// Change the results and write results.json.
    pub fn record(&self, change: impl FnOnce(&mut Results)) -> std::io::Result<()> {
        let mut results = self.results.borrow_mut();
        change(&mut results);
        results.write(&self.results_path())
    }

    /// Change the results without writing them (yet).
    pub fn amend(&self, change: impl FnOnce(&mut Results)) {
        change(&mut self.results.borrow_mut());
    }

    /// A copy of the results as they stand.
    pub fn results(&self) -> Results {
        self.results.borrow().clone()
    }

    /// The run could not be carried out: record why (no tier ran, so no tier's cause
    /// applies, unless the run was stopped or the compose policy refused it), drop the
    /// scratch dir, hand the error on.
    pub fn fail(&self, err: anyhow::Error) -> anyhow::Error {
        self.progress().finish();
        self.exec.note(&format!("error: {err:#}"));
        let refused = matches!(
            err.downcast_ref::<policy::Error>(),
            Some(policy::Error::Refused(_))
        );
        let cause = match self.exec.stop.check() {
            Some(stop) => Some(Cause::from(stop)),
            None => refused.then_some(Cause::Policy),
        };
        let mut results = self.results.borrow_mut();
        results.cause = cause;
        results.record_error(format!("{err:#}"), &self.results_path());
        let _ = std::fs::remove_dir_all(&self.scratch);
        err
    }

    /// The engine must be there, then the app's lock is taken (a second run of the
    /// same app queues here), then whatever dead runs of the app left is reaped.
    pub fn lock(&self) -> anyhow::Result<DomainLock> {
        self.progress().stage("checking docker and the swarm");
        let docker = docker::Cli { exec: &self.exec };
        docker.check()?;
        // State is keyed by run id (scratch, artifacts): nothing shared is touched
        // before the lock, so a waiting run cannot disturb the holder.
        self.progress()
            .stage(&format!("waiting for the lock of {}", self.domain));
        let waited = Instant::now();
        let lock = lock::acquire(
            &lock::lock_path(&self.config.state.runtime_dir.join("locks"), &self.domain),
            &self.id,
            Duration::from_secs(self.config.runner.lock_timeout_s),
            |holder| {
                self.exec.note(&format!(
                    "{} is locked by run {holder}: waiting (queued)",
                    self.domain
                ))
            },
            || self.exec.stop.check().is_some(),
        )?;
        self.exec.add_waiting(waited.elapsed());
        self.reap_dead_runs(&docker)?;
        Ok(lock)
    }

    /// Holding the app's lock proves no live run owns it: anything of its stack on
    /// the swarm is an orphan of a run that died without tearing down (kill -9, a
    /// reboot), and so are the scratch dirs of the app's dead runs.
    fn reap_dead_runs(&self, docker: &dyn Docker) -> anyhow::Result<()> {
        let orphans = reap::find(docker, &self.stack)?;
        if !orphans.is_empty() {
            let names: Vec<String> = orphans.iter().map(ToString::to_string).collect();
            self.exec.note(&format!(
                "reaping what an earlier run of {} left (it died or could not tear down): {}",
                self.domain,
                names.join(", ")
            ));
            let left = reap::remove(docker, &self.stack, reap::PATIENCE)?;
            if !left.is_empty() {
                let names: Vec<String> = left.iter().map(ToString::to_string).collect();
                bail!(
                    "{} still has {} on the swarm and it cannot be removed; remove it by hand \
                     (docs/runbook.md, \"Orphans\") and run again",
                    self.domain,
                    names.join(", ")
                );
            }
        }
        let runs_dir = self.config.state.runtime_dir.join("runs");
        for (dir, domain) in reap::dead_scratch(&runs_dir, Some(&self.id)) {
            if domain.as_deref() == Some(self.domain.as_str()) {
                self.exec.note(&format!(
                    "removing the scratch dir of a dead run of {}: {}",
                    self.domain,
                    dir.display()
                ));
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        Ok(())
    }

    /// Clone the recipe into the run's `ABRA_DIR`, resolve the commit tested and the
    /// release it upgrades from, and record both.
    pub fn checkout(&self) -> anyhow::Result<(Checkout, Tested)> {
        self.progress().stage("checking out the recipe");
        let checkout = Checkout::clone(
            &self.exec,
            &self.recipe,
            &self.source,
            &self.abra_dir().join("recipes").join(&self.recipe),
            Some(&self.git_ref),
        )?;
        let sha = checkout.resolve(self.requested_sha.as_deref().unwrap_or(&self.git_ref))?;
        let meta_path = self.ci_dir.join(meta::FILE_NAME);
        let upgrade_base = checkout.upgrade_base(
            &sha,
            &self.git_ref,
            self.meta.UPGRADE_BASE_VERSION.as_deref(),
            &meta_path,
        )?;
        let upgrade_base_commit = checkout.resolve(&upgrade_base)?;
        self.exec
            .note(&format!("testing {sha}; upgrade base {upgrade_base}"));
        self.check_policy(
            &checkout,
            &[
                (&sha, "the tested commit"),
                (&upgrade_base_commit, &upgrade_base),
            ],
        )?;
        self.record(|r| {
            r.sha = sha.clone();
            r.upgrade_base = Some(upgrade_base.clone());
        })
        .with_context(|| self.cannot_write("results.json"))?;
        Ok((
            checkout,
            Tested {
                sha,
                upgrade_base,
                upgrade_base_commit,
            },
        ))
    }

    /// The compose policy, before anything is deployed: every compose file at each of
    /// `commits` and the CI overlay. A refusal names each service, setting and the
    /// meta key that would allow it.
    fn check_policy(&self, checkout: &Checkout, commits: &[(&str, &str)]) -> anyhow::Result<()> {
        let allowed = |service: &str, token: &str| self.meta.allows(service, token);
        let mut refused = Vec::new();
        for (commit, name) in commits {
            for (file, text) in checkout.compose_files(commit)? {
                refused.extend(policy::check(&format!("{file} at {name}"), &text, allowed)?);
            }
        }
        let overlay = self.ci_dir.join(super::engine::OVERLAY);
        if let Ok(text) = std::fs::read_to_string(&overlay) {
            refused.extend(policy::check(
                &overlay.display().to_string(),
                &text,
                allowed,
            )?);
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(policy::Error::Refused(refused).into())
    }

    /// The production engine for this run's app.
    pub fn engine(&self, checkout: Checkout, tested: &Tested) -> Real<'_> {
        let env = self.contract_env(&checkout, tested);
        Real {
            exec: &self.exec,
            docker: docker::Cli { exec: &self.exec },
            abra: Abra {
                exec: &self.exec,
                bin: self.abra.clone(),
                abra_dir: self.abra_dir(),
                server: self.config.runner.server.clone(),
                domain: self.domain.clone(),
                deploys_file: self.deploys_file(),
                env,
            },
            checkout,
            confine: self.config.runner.confine.clone(),
            scope: self.confine_scope(),
            confinement: Default::default(),
        }
    }

    /// What the confinement of the recipe's tests covers: they read their snapshot,
    /// write their JUnit reports, and see nothing of the CI's state, credentials or
    /// config, nor of other runs.
    fn confine_scope(&self) -> crate::confine::Scope {
        let runner = &self.config.runner;
        let mut hidden = vec![
            self.config.state.dir.clone(),
            self.config.state.runtime_dir.clone(),
            self.config.dir.clone(),
        ];
        hidden.extend(runner.secrets_dirs.iter().cloned());
        if let Some(g) = &self.config.gitea {
            hidden.extend(g.token_path().ok());
        }
        if let Some(w) = &self.config.webhook {
            hidden.extend(w.secret_path().ok());
        }
        crate::confine::Scope {
            label: self.id.clone(),
            stack: self.stack.clone(),
            dir: self.scratch.join("confine"),
            readable: vec![self.scratch.join("recipe-tests")],
            writable: Vec::new(),
            hidden,
        }
    }

    /// The environment contract for abra, hooks and tests (documented once, in
    /// `docs/enroll-recipe.md`).
    fn contract_env(&self, checkout: &Checkout, tested: &Tested) -> Vec<(String, String)> {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            ("CCCI_RUN_ID".into(), self.id.clone()),
            ("CCCI_RECIPE".into(), self.recipe.clone()),
            ("CCCI_REF".into(), self.git_ref.clone()),
            ("CCCI_SHA".into(), tested.sha.clone()),
            (
                "CCCI_PR".into(),
                self.pr.map(|n| n.to_string()).unwrap_or_default(),
            ),
            ("CCCI_UPGRADE_BASE".into(), tested.upgrade_base.clone()),
            ("CCCI_APP_DOMAIN".into(), self.domain.clone()),
            ("CCCI_STACK_NAME".into(), self.stack.clone()),
            ("CCCI_APP_URL".into(), format!("https://{}", self.domain)),
            ("CCCI_SERVER".into(), self.config.runner.server.clone()),
            ("CCCI_RUN_DIR".into(), s(&self.artifacts)),
            ("CCCI_STATE_DIR".into(), s(&self.scratch)),
            ("CCCI_DEPLOYS_FILE".into(), s(&self.deploys_file())),
            ("CCCI_RECIPE_DIR".into(), s(&checkout.dir)),
            ("CCCI_ABRA".into(), s(&self.abra)),
            ("ABRA_DIR".into(), s(&self.abra_dir())),
        ]
    }
}

fn target(args: &RunArgs, config: &Config) -> anyhow::Result<Target> {
    let requests = config.state.dir.join("requests");
    let instance_request = args
        .instance
        .as_ref()
        .map(|name| requests.join(format!("{name}.json")))
        .filter(|p| p.is_file());
    if let Some(path) = args.request.as_ref().or(instance_request.as_ref()) {
        let req = RunRequest::load(path)?;
        recipe::validate_name(&req.recipe)?;
        return Ok(Target {
            run_id: req.run_id,
            recipe: req.recipe,
            source: req.clone_url,
            git_ref: req.git_ref,
            sha: Some(req.sha),
            pr: req.pr,
        });
    }
    if let Some(name) = args.instance.as_deref().filter(|n| n.contains('/')) {
        // `systemctl start cc-ci-runner@no-backup` reaches us as `no/backup`: %I
        // unescapes '-' to '/'.
        bail!(
            "instance {name:?} is neither a run request in {} nor a recipe name: systemd \
             turns '-' in an instance name into '/'; start the unit as \
             cc-ci-runner@$(systemd-escape {}).service",
            requests.display(),
            name.replace('/', "-")
        );
    }
    let arg = args
        .recipe
        .as_deref()
        .or(args.instance.as_deref())
        .expect("clap requires RECIPE without --request or --instance");
    let (recipe, path) = recipe::resolve(arg, &config.runner.recipes_dir)?;
    Ok(Target {
        run_id: runid::new_run_id(Utc::now()),
        recipe,
        source: path.to_string_lossy().into_owned(),
        git_ref: args.git_ref.clone().unwrap_or_else(|| "HEAD".into()),
        sha: None,
        pr: args.pr,
    })
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if Path::new(config::DEFAULT_PATH).exists() => {
            Ok(Config::load(Path::new(config::DEFAULT_PATH))?)
        }
        None => Ok(Config::defaults(PathBuf::from("/etc/cc-ci"))),
    }
}

/// The pinned abra, as configured, resolved on PATH if it is a bare name.
fn abra_binary(configured: &Path) -> anyhow::Result<PathBuf> {
    let found = if configured.components().count() == 1 {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(configured))
            .find(|p| p.is_file())
    } else {
        configured.is_file().then(|| configured.to_path_buf())
    };
    found.ok_or_else(|| {
        anyhow!(
            "abra binary {} not found: set runner.abra to the pinned abra \
             (for tests and scripts/try: the test double tests/doubles/abra)",
            configured.display()
        )
    })
}

fn writable_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "output dir {} cannot be created; pass a writable --output DIR",
            dir.display()
        )
    })?;
    let probe = dir.join(".ccci-write-test");
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "output dir {} is not writable; pass a writable --output DIR",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The recipe's CI meta, loaded and checked.
fn load_meta(ci_dir: &Path) -> anyhow::Result<RecipeMeta> {
    let meta = RecipeMeta::load(ci_dir)?;
    meta.validate()
        .map_err(|e| anyhow!("{}: {e}", ci_dir.join(meta::FILE_NAME).display()))?;
    Ok(meta)
}

/// The CI's own credentials named in the config (the Gitea token, the webhook
/// secret), masked in every run too: a recipe's hook or test runs as the runner's user
/// and could print them. One the runner cannot read is not masked; neither can its
/// children read it.
fn ci_credentials(config: &Config) -> Vec<Vec<u8>> {
    let files = [
        config.gitea.as_ref().and_then(|g| g.token_path().ok()),
        config.webhook.as_ref().and_then(|w| w.secret_path().ok()),
    ];
    files
        .into_iter()
        .flatten()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|v| v.trim().as_bytes().to_vec())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The run's executor: cancelled by SIGTERM/SIGINT, bounded by the deadline, masking
/// the CI's secrets into `run.log` in `artifacts`.
fn executor(config: &Config, artifacts: &Path) -> anyhow::Result<Executor> {
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&cancel))
            .context("installing signal handlers")?;
    }
    let stop = Stop {
        cancel,
        deadline: Instant::now() + Duration::from_secs(config.runner.deadline_min * 60),
    };
    let mut secrets = redact::load_secret_dirs(&config.runner.secrets_dirs)?;
    secrets.extend(ci_credentials(config));
    let log_path = artifacts.join("run.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    Ok(Executor::new(
        stop,
        log,
        Progress::stderr(true),
        secrets,
        redact::DEFAULT_MIN_LEN,
    ))
}

#[cfg(test)]
impl Run {
    /// A run for unit tests: files under `dir`, the given meta, no config file.
    pub fn scripted(dir: &Path, meta: RecipeMeta) -> Run {
        let artifacts = dir.join("artifacts");
        let scratch = dir.join("scratch");
        let ci_dir = dir.join("ci");
        for d in [&artifacts, &scratch, &ci_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        let domain = "hello.ci.localhost".to_string();
        let alive = reap::mark_scratch(&scratch, &domain).unwrap();
        Run {
            id: "20261130T120000Z-abcdef".into(),
            recipe: "hello".into(),
            source: dir.join("src").to_string_lossy().into_owned(),
            git_ref: "HEAD".into(),
            requested_sha: None,
            pr: None,
            stack: swarm::stack_name(&domain),
            results: RefCell::new(Results::start(
                "20261130T120000Z-abcdef",
                "hello",
                "HEAD",
                None,
                None,
                &domain,
            )),
            domain,
            config: Config::defaults(dir.to_path_buf()),
            meta,
            ci_dir,
            abra: PathBuf::from("abra"),
            exec: crate::process::test_executor(&artifacts),
            artifacts,
            scratch,
            started: Instant::now(),
            _alive: alive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_share_only_within_recipe_and_pr() {
        assert_eq!(
            app_domain("hello", None, "ci.localhost"),
            "hello.ci.localhost"
        );
        assert_eq!(
            app_domain("hello", Some(7), "ci.localhost"),
            "hello-pr7.ci.localhost"
        );
        assert_ne!(
            app_domain("hello", Some(7), "d"),
            app_domain("hello", Some(8), "d")
        );
    }
}
