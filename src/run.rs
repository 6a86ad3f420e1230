//! `cc-ci run`: one run from arguments to artifacts. Everything that can be checked
//! before a deploy is checked first (bad input deploys nothing); once the ladder
//! starts, the teardown funnel runs on every path: success, failure, cancel,
//! deadline, panic.
use crate::abra::{self, Abra};
use crate::artifacts;
use crate::cli::RunArgs;
use crate::config::{self, Config};
use crate::ladder::{self, Ladder};
use crate::lock;
use crate::meta::RecipeMeta;
use crate::process::{Executor, Stop};
use crate::progress::Progress;
use crate::recipe::{self, Checkout};
use crate::redact;
use crate::request::RunRequest;
use crate::results::{Cause, Deploys, Results, RunStatus, TierStatus};
use crate::runid;
use crate::swarm;
use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// What to test, from the command line or a run request.
struct Target {
    run_id: String,
    recipe: String,
    /// Clone source: a local path or the request's clone URL.
    source: String,
    git_ref: String,
    /// The exact commit, when the request names it.
    sha: Option<String>,
    pr: Option<u64>,
}

fn target(args: &RunArgs, config: &Config) -> anyhow::Result<Target> {
    let instance_request = args
        .instance
        .as_ref()
        .map(|name| {
            config
                .state
                .dir
                .join("requests")
                .join(format!("{name}.json"))
        })
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
            config.state.dir.join("requests").display(),
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

/// The app domain: the same recipe and PR share it (and so its lock); other PRs and
/// recipes run in parallel.
pub fn app_domain(recipe: &str, pr: Option<u64>, base: &str) -> String {
    match pr {
        Some(n) => format!("{recipe}-pr{n}.{base}"),
        None => format!("{recipe}.{base}"),
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
        .map_err(|e| anyhow!("{}: {e}", ci_dir.join(crate::meta::FILE_NAME).display()))?;
    Ok(meta)
}

/// The CI's own credentials named in the config (the Gitea token, the webhook
/// secret), masked in every run too: a recipe's hook or test runs as the runner's user
/// and could print them. One the runner cannot read is not masked; neither can its
/// children read it.
fn ci_credentials(config: &Config) -> Vec<Vec<u8>> {
    let files = [
        config.gitea.as_ref().map(|g| g.token_file.as_path()),
        config.webhook.as_ref().map(|w| w.secret_file.as_path()),
    ];
    files
        .into_iter()
        .flatten()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|v| v.trim().as_bytes().to_vec())
        .filter(|v| !v.is_empty())
        .collect()
}

/// What a run needs before it can log anything: its scratch dir (marked and locked as
/// this run's), signal handlers, the secrets to mask, `run.log` and the executor.
/// Returns the scratch dir, the lock that marks it alive, the executor and progress.
fn open_run(
    config: &Config,
    run_id: &str,
    domain: &str,
    artifacts_dir: &Path,
) -> anyhow::Result<(PathBuf, std::fs::File, Executor, Progress)> {
    let scratch = config.state.runtime_dir.join("runs").join(run_id);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create the run's scratch dir {}", scratch.display()))?;
    // Which app this scratch dir belongs to, locked for as long as this process lives:
    // a later run of the same app reaps the dir only if it can take that lock (the run
    // died without cleaning up), never while this run waits for or holds the app.
    let alive = mark_scratch(&scratch, domain).with_context(|| {
        format!(
            "cannot write to the run's scratch dir {}",
            scratch.display()
        )
    })?;
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
    let log_path = artifacts_dir.join("run.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let progress = Progress::stderr(true);
    let exec = Executor::new(
        stop,
        log,
        progress.clone(),
        secrets,
        redact::DEFAULT_MIN_LEN,
    );
    Ok((scratch, alive, exec, progress))
}

pub fn main(args: RunArgs) -> anyhow::Result<i32> {
    let wall = Instant::now();
    let config = load_config(args.config.as_deref())?;
    let target = target(&args, &config)?;
    let ci_dir = config.recipe_ci_dir(&target.recipe);
    let artifacts_dir = args
        .output
        .clone()
        .unwrap_or_else(|| config.state.dir.join("runs").join(&target.run_id));
    // A run request runs once: a second start of the same request (a unit restarted
    // by hand, a poller relaunching after a crash) must not deploy again.
    if (args.request.is_some() || args.instance.is_some())
        && artifacts_dir.join("results.json").exists()
    {
        bail!(
            "run {} already ran (results in {}); a run request runs once; comment the trigger \
             again for a new run",
            target.run_id,
            artifacts_dir.display()
        );
    }
    writable_dir(&artifacts_dir)?;
    let artifacts_dir = artifacts_dir.canonicalize()?;
    let domain = app_domain(&target.recipe, target.pr, &config.runner.domain);
    let results_path = artifacts_dir.join("results.json");
    let mut results = Results::start(
        &target.run_id,
        &target.recipe,
        &target.git_ref,
        target.sha.as_deref(),
        target.pr,
        &domain,
    );
    let opened = load_meta(&ci_dir).and_then(|meta| {
        open_run(&config, &target.run_id, &domain, &artifacts_dir).map(|o| (meta, o))
    });
    let (meta, (scratch, _alive, exec, progress)) = match opened {
        Ok(o) => o,
        Err(err) => {
            // The run dir exists: say there why the run could not start (the poller
            // reports it), not only in the journal.
            results.record_error(format!("{err:#}"), &results_path);
            return Err(err);
        }
    };

    exec.note(&format!(
        "cc-ci run {} of {} ({}) as {domain}",
        target.run_id, target.recipe, target.git_ref
    ));

    // Everything before the first deploy: on error, record it and deploy nothing.
    let prepared = prepare(
        &config,
        &target,
        &meta,
        &exec,
        &domain,
        &scratch,
        &results_path,
        &mut results,
    );
    let (lock, checkout, abra_bin) = match prepared {
        Ok(p) => p,
        Err(err) => {
            progress.finish();
            exec.note(&format!("error: {err:#}"));
            // The message says what was wrong (bad input, no docker, lock timeout);
            // no tier ran, so no tier's cause applies, unless the run was stopped.
            results.cause = exec.stop.check().map(Cause::from);
            results.record_error(format!("{err:#}"), &results_path);
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(err);
        }
    };

    let deploys_file = scratch.join("deploys");
    let env = contract_env(
        &target,
        &results,
        &domain,
        &config,
        &artifacts_dir,
        &scratch,
        &deploys_file,
        &checkout,
        &abra_bin,
    );
    let abra = Abra {
        exec: &exec,
        bin: abra_bin,
        abra_dir: scratch.join("abra"),
        server: config.runner.server.clone(),
        domain: domain.clone(),
        deploys_file: deploys_file.clone(),
        env: env.clone(),
    };
    let ladder = Ladder::new(
        &exec,
        abra,
        checkout,
        results.sha.clone(),
        results.upgrade_base.clone(),
        meta,
        ci_dir,
        env,
        artifacts_dir.clone(),
        scratch.clone(),
        target.run_id.clone(),
    );

    let climbed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ladder.climb(|tiers| {
            results.tiers = tiers.to_vec();
            results.level = ladder::level(tiers);
            let _ = results.write(&results_path);
        })
    }));
    if let Ok(tiers) = climbed {
        results.tiers = tiers;
    } else {
        exec.note("error: the runner panicked during the climb (harness bug); tearing down");
        for t in results.tiers.iter_mut() {
            if matches!(t.status, TierStatus::Running | TierStatus::Pending) {
                t.status = TierStatus::Failed;
                t.cause = Some(Cause::Harness);
                t.reason = Some("the runner panicked".into());
            }
        }
    }

    // The teardown funnel: the same on every path.
    progress.stage("teardown");
    let teardown = ladder.teardown();
    results.invariants.clean_teardown = teardown.left.is_empty();
    results.leaks = teardown.missed;

    let timing = exec.timing();
    results.deploys = Deploys {
        count: abra::count_deploys(&deploys_file),
        budget: ladder.budget.get(),
    };
    results.invariants.deploy_budget_ok = results.deploys.count == results.deploys.budget;
    if !results.invariants.deploy_budget_ok {
        exec.note(&format!(
            "deploy budget mismatch: {} deploys recorded in {}, {} planned",
            results.deploys.count,
            deploys_file.display(),
            results.deploys.budget
        ));
    }
    results.level = ladder::level(&results.tiers);
    results.cause = results.tiers.iter().find_map(|t| t.cause);
    results.status = RunStatus::Completed;
    results.finished_at = Some(Utc::now());
    let tests = ladder.tests.borrow().clone();
    drop(ladder);
    drop(lock);
    let _ = std::fs::remove_dir_all(&scratch);

    let written = artifacts::write_atomic(
        &artifacts_dir.join("timing.json"),
        artifacts::timing(&timing, wall.elapsed()).as_bytes(),
    )
    .context("writing timing.json")
    .and_then(|()| {
        write_final_artifacts(&exec, &mut results, &tests, &artifacts_dir, &results_path)
    });
    if let Err(err) = written {
        // A full disk, most likely: results.json must not be left saying `running`.
        progress.finish();
        exec.note(&format!("error: {err:#}"));
        results.record_error(
            format!("the run's artifacts could not be written: {err:#}"),
            &results_path,
        );
        return Err(err);
    }
    progress.finish();
    print_summary(&results, &results_path);
    Ok(crate::cli::EXIT_OK)
}

/// Checks and setup before anything is deployed; returns the held lock, the recipe
/// checkout and the abra binary.
#[allow(clippy::too_many_arguments)]
fn prepare(
    config: &Config,
    target: &Target,
    meta: &RecipeMeta,
    exec: &Executor,
    domain: &str,
    scratch: &Path,
    results_path: &Path,
    results: &mut Results,
) -> anyhow::Result<(lock::DomainLock, Checkout, PathBuf)> {
    let abra_bin = abra_binary(&config.runner.abra)?;
    exec.progress().stage("checking docker and the swarm");
    swarm::check_engine(exec)?;

    // State is keyed by run id (scratch, artifacts): nothing shared is touched before
    // the lock, so a waiting run cannot disturb the holder.
    exec.progress()
        .stage(&format!("waiting for the lock of {domain}"));
    let lock_path = lock::lock_path(&config.state.runtime_dir.join("locks"), domain);
    let waited = Instant::now();
    let lock = lock::acquire(
        &lock_path,
        &target.run_id,
        Duration::from_secs(config.runner.lock_timeout_s),
        |holder| {
            exec.note(&format!(
                "{domain} is locked by run {holder}: waiting (queued)"
            ))
        },
        || exec.stop.check().is_some(),
    )?;
    exec.add_waiting(waited.elapsed());

    exec.progress().stage("checking out the recipe");
    let checkout = Checkout::clone(
        exec,
        &target.recipe,
        &target.source,
        &scratch.join("abra").join("recipes").join(&target.recipe),
        Some(&target.git_ref),
    )?;
    let sha = checkout.resolve(target.sha.as_deref().unwrap_or(&target.git_ref))?;
    let meta_path = config
        .recipe_ci_dir(&target.recipe)
        .join(crate::meta::FILE_NAME);
    let base = checkout.upgrade_base(
        &sha,
        &target.git_ref,
        meta.UPGRADE_BASE_VERSION.as_deref(),
        &meta_path,
    )?;
    exec.note(&format!("testing {sha}; upgrade base {base}"));
    results.sha = sha;
    results.upgrade_base = Some(base);
    results
        .write(results_path)
        .context("writing results.json")?;
    // Holding the lock proves no live run owns this app: anything of its stack on the
    // swarm is an orphan of a run that died without tearing down (kill -9, reboot).
    let stack = swarm::stack_name(domain);
    let orphans = swarm::leaks(exec, &stack)?;
    if !orphans.is_empty() {
        exec.note(&format!(
            "reaping what an earlier run of {domain} left (it died or could not tear down): {}",
            orphans.join(", ")
        ));
        let left = swarm::force_clean(exec, &stack)?;
        if !left.is_empty() {
            bail!(
                "{domain} still has {} on the swarm and it cannot be removed; remove it by hand \
                 (docs/runbook.md, \"Orphans\") and run again",
                left.join(", ")
            );
        }
    }
    reap_dead_scratch(
        exec,
        &config.state.runtime_dir.join("runs"),
        domain,
        &target.run_id,
    );
    Ok((lock, checkout, abra_bin))
}

/// The file in a run's scratch dir naming its app domain.
const DOMAIN_FILE: &str = "domain";

/// Write `domain` into the scratch dir's domain file and hold a lock on it for the
/// life of the returned file.
fn mark_scratch(scratch: &Path, domain: &str) -> std::io::Result<std::fs::File> {
    let mut file = std::fs::File::create(scratch.join(DOMAIN_FILE))?;
    file.lock()?;
    file.write_all(domain.as_bytes())?;
    Ok(file)
}

/// Remove the scratch dirs of dead runs of `domain`: those whose domain file nobody
/// holds locked (a run waiting for the app's lock holds its own, so it is kept).
fn reap_dead_scratch(exec: &Executor, runs_dir: &Path, domain: &str, own_run_id: &str) {
    for entry in std::fs::read_dir(runs_dir).into_iter().flatten().flatten() {
        let dir = entry.path();
        if entry.file_name() == own_run_id {
            continue;
        }
        let Ok(file) = std::fs::File::open(dir.join(DOMAIN_FILE)) else {
            continue;
        };
        if file.try_lock_shared().is_err() {
            continue; // a live run holds it
        }
        let owner = std::fs::read_to_string(dir.join(DOMAIN_FILE)).unwrap_or_default();
        if owner == domain {
            exec.note(&format!(
                "removing the scratch dir of a dead run of {domain}: {}",
                dir.display()
            ));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The environment contract for hooks, tests and abra (documented once, in
/// `docs/enroll-recipe.md`).
#[allow(clippy::too_many_arguments)]
fn contract_env(
    target: &Target,
    results: &Results,
    domain: &str,
    config: &Config,
    artifacts_dir: &Path,
    scratch: &Path,
    deploys_file: &Path,
    checkout: &Checkout,
    abra_bin: &Path,
) -> Vec<(String, String)> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    vec![
        ("CCCI_RUN_ID".into(), target.run_id.clone()),
        ("CCCI_RECIPE".into(), target.recipe.clone()),
        ("CCCI_REF".into(), target.git_ref.clone()),
        ("CCCI_SHA".into(), results.sha.clone()),
        (
            "CCCI_PR".into(),
            target.pr.map(|n| n.to_string()).unwrap_or_default(),
        ),
        (
            "CCCI_UPGRADE_BASE".into(),
            results.upgrade_base.clone().unwrap_or_default(),
        ),
        ("CCCI_APP_DOMAIN".into(), domain.to_string()),
        ("CCCI_STACK_NAME".into(), swarm::stack_name(domain)),
        ("CCCI_APP_URL".into(), format!("https://{domain}")),
        ("CCCI_SERVER".into(), config.runner.server.clone()),
        ("CCCI_RUN_DIR".into(), s(artifacts_dir)),
        ("CCCI_STATE_DIR".into(), s(scratch)),
        ("CCCI_DEPLOYS_FILE".into(), s(deploys_file)),
        ("CCCI_RECIPE_DIR".into(), s(&checkout.dir)),
        ("CCCI_ABRA".into(), s(abra_bin)),
        ("ABRA_DIR".into(), s(&scratch.join("abra"))),
    ]
}

fn write_final_artifacts(
    exec: &Executor,
    results: &mut Results,
    tests: &[ladder::TestCaseResult],
    dir: &Path,
    results_path: &Path,
) -> anyhow::Result<()> {
    let write = |name: &str, text: String| {
        artifacts::write_atomic(&dir.join(name), text.as_bytes())
            .with_context(|| format!("writing {name}"))
    };
    write("junit.xml", artifacts::junit(results, tests))?;
    write("badge.svg", artifacts::badge(results))?;
    write("report.md", artifacts::report(results))?;
    results.write(results_path)?;
    // The leak scan covers every artifact, results.json included; its verdict goes
    // into results.json, report.md and the badge, which are rewritten.
    let masker = exec.masker();
    let hits = artifacts::scan_for_secrets(dir, &masker);
    results.invariants.no_secret_leak = hits.is_empty();
    if !hits.is_empty() {
        let names: Vec<String> = hits.iter().map(|p| p.display().to_string()).collect();
        exec.note(&format!(
            "secret values found in artifacts: {}",
            names.join(", ")
        ));
        write("report.md", artifacts::report(results))?;
    }
    results.write(results_path)?;
    Ok(())
}

fn print_summary(results: &Results, path: &Path) {
    // Ignore write errors: the run is over and its results are on disk.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "cc-ci run {}: {} at {} (upgrade base {})",
        results.run_id,
        results.recipe,
        &results.sha[..results.sha.len().min(12)],
        results.upgrade_base.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:>9}  {:<14} detail",
        "tier", "status", "duration", "cause"
    );
    for t in &results.tiers {
        let status = serde_json::to_value(t.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:>9}  {:<14} {}",
            t.name,
            status,
            t.duration_s
                .map(|d| format!("{d:.1} s"))
                .unwrap_or_default(),
            t.cause.map(|c| c.as_str()).unwrap_or("-"),
            t.reason.as_deref().unwrap_or("")
        );
    }
    let inv = &results.invariants;
    let _ = writeln!(
        out,
        "deploys {}/{} · clean teardown {} · no secret leak {} · deploy budget {}",
        results.deploys.count,
        results.deploys.budget,
        inv.clean_teardown,
        inv.no_secret_leak,
        inv.deploy_budget_ok
    );
    let _ = writeln!(out, "level: {}", results.level);
    let _ = writeln!(out, "results: {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_runs_scratch_dirs_of_the_same_app_are_reaped() {
        let root = tempfile::tempdir().unwrap();
        let runs = root.path().join("runs");
        let mk = |id: &str| {
            let d = runs.join(id);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        // A live run of the app (waiting for its lock): holds its domain file.
        let waiting = mk("r-waiting");
        let _held = mark_scratch(&waiting, "hello.ci.localhost").unwrap();
        // A dead run of the app, and a dead run of another app.
        let dead = mk("r-dead");
        drop(mark_scratch(&dead, "hello.ci.localhost").unwrap());
        let other = mk("r-other");
        drop(mark_scratch(&other, "other.ci.localhost").unwrap());
        let own = mk("r-own");
        let _own = mark_scratch(&own, "hello.ci.localhost").unwrap();

        let stop = Stop {
            cancel: Arc::new(AtomicBool::new(false)),
            deadline: Instant::now() + Duration::from_secs(60),
        };
        let log = std::fs::File::create(root.path().join("log")).unwrap();
        let exec = Executor::new(stop, log, Progress::stderr(false), vec![], 8);
        reap_dead_scratch(&exec, &runs, "hello.ci.localhost", "r-own");
        assert!(!dead.exists(), "a dead run's dir of the same app is reaped");
        assert!(
            waiting.exists(),
            "a live (waiting) run's dir is never touched"
        );
        assert!(other.exists(), "another app's dir is not ours to reap");
        assert!(own.exists());
    }

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
