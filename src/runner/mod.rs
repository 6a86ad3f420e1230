//! The runner, `cc-ci run`: one run from arguments to artifacts, as a list of stages
//! that each take the [`Run`]. Everything that can be checked before a deploy is
//! checked first (bad input deploys nothing); once the ladder starts, the teardown
//! funnel runs on every path: success, failure, cancel, deadline, panic.
pub mod abra;
pub mod artifacts;
pub mod backupbot;
pub mod compose;
pub mod engine;
pub mod envfile;
pub mod ladder;
pub mod policy;
pub mod prereq;
pub mod probe;
pub mod recipe;
pub mod run;
pub mod swarm;

use crate::cli::RunArgs;
use crate::results::{Cause, Deploys, RunStatus, TierStatus, level};
use engine::Engine;
use ladder::{Ladder, Teardown};
use run::Run;

pub fn main(args: RunArgs) -> anyhow::Result<i32> {
    let run = Run::open(&args)?;
    let prepared = run
        .lock()
        .and_then(|lock| run.checkout().map(|checkout| (lock, checkout)));
    let (lock, (checkout, tested)) = prepared.map_err(|e| run.fail(e))?;
    let engine = run.engine(checkout, &tested);
    let ladder = Ladder::new(&run, &engine, &tested);
    climb(&run, &ladder);
    run.progress().stage("teardown");
    let teardown = ladder.teardown();
    settle(&run, &ladder, &engine, &teardown);
    let tests = ladder.tests();
    drop(ladder);
    // The confinement (its cgroup, endpoint and test dirs) goes before the scratch
    // dir it lives in, and the lock only once the app is gone.
    drop(engine);
    drop(lock);
    let _ = std::fs::remove_dir_all(&run.scratch);
    artifacts::publish(&run, &tests)?;
    Ok(crate::cli::EXIT_OK)
}

/// Climb the ladder, recording every change; a panic fails the tier that was running
/// (cause harness) and the run goes on to its teardown.
fn climb(run: &Run, ladder: &Ladder) {
    let climbed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ladder.climb(|tiers| {
            let _ = run.record(|r| {
                r.tiers = tiers.to_vec();
                r.level = level(tiers);
            });
        })
    }));
    let _ = run.record(|r| match climbed {
        Ok(tiers) => r.tiers = tiers,
        Err(_) => {
            run.exec
                .note("error: the runner panicked during the climb (harness bug); tearing down");
            for t in r.tiers.iter_mut() {
                if matches!(t.status, TierStatus::Running | TierStatus::Pending) {
                    t.status = TierStatus::Failed;
                    t.cause = Some(Cause::Harness);
                    t.reason = Some("the runner panicked".into());
                }
            }
        }
    });
}

/// The run's outcome once the teardown is done: level, cause, deploys against the
/// budget, and whether the teardown was clean. Written by [`artifacts::publish`]
/// after the other artifacts, so a finished results.json always has its report.
fn settle(run: &Run, ladder: &Ladder, engine: &dyn Engine, teardown: &Teardown) {
    let deploys = Deploys {
        count: engine.deploys_recorded(),
        budget: ladder.budget(),
    };
    if deploys.count != deploys.budget {
        run.exec.note(&format!(
            "deploy budget mismatch: {} deploys recorded in {}, {} planned",
            deploys.count,
            run.deploys_file().display(),
            deploys.budget
        ));
    }
    run.amend(|r| {
        r.invariants.clean_teardown = teardown.clean();
        r.leaks = teardown.missed.iter().map(ToString::to_string).collect();
        r.teardown_error = teardown.unverified.clone();
        r.confinement = engine.confinement();
        r.invariants.deploy_budget_ok = deploys.count == deploys.budget;
        r.deploys = deploys;
        r.level = level(&r.tiers);
        r.cause = r.tiers.iter().find_map(|t| t.cause);
        r.status = RunStatus::Completed;
        r.finished_at = Some(chrono::Utc::now());
    });
}
