//! Cost of one idle poll cycle (no new comments) against the Gitea test double on
//! 127.0.0.1, for 1, 50 and 500 enrolled repos: HTTP requests per cycle (counted by
//! the double and by the client) and wall time per cycle. Run with
//! `cargo bench --bench poll`; the numbers go in `docs/perf.md`.
#[path = "../tests/support/gitea_double.rs"]
mod gitea_double;

use ccci::config::Config;
use ccci::poll::service::Poller;
use gitea_double::GiteaDouble;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const CYCLES: usize = 20;

fn main() {
    println!(
        "| discovery | repos | requests/cycle (double) | requests/cycle (client) | cycle time median | cycle time max |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for discovery in ["per-repo", "search"] {
        for n in [1usize, 50, 500] {
            let (reqs_double, reqs_client, median, max) = measure(n, discovery);
            println!(
                "| {discovery} | {n} | {reqs_double:.2} | {reqs_client:.2} | {:.2} ms | {:.2} ms |",
                median.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            );
        }
    }
}

/// Idle cycles after a warm-up sweep; with `search`, every 10th cycle is a sweep, so
/// the average includes them (20 cycles = 18 searches + 2 sweeps).
fn measure(n: usize, discovery: &str) -> (f64, f64, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let gitea = GiteaDouble::start("bench-token", "cc-ci-bot");
    std::fs::write(dir.path().join("token"), "bench-token").unwrap();
    let d = dir.path().display();
    let mut toml = format!(
        "[gitea]\nurl = \"{}\"\ntoken_file = \"{d}/token\"\nbot_user = \"cc-ci-bot\"\n\n\
         [launch]\nkind = \"command\"\ncommand = [\"/bin/true\"]\n\n[state]\ndir = \"{d}/state\"\n\n\
         [poll]\ndiscovery = \"{discovery}\"\nsweep_every = 10\n\n",
        gitea.url
    );
    for i in 0..n {
        let repo = format!("recipes/r{i}");
        gitea.add_repo(&repo);
        gitea.add_pull(&repo, 1, &"a".repeat(40));
        // One old comment per repo: each listing returns the boundary comment again
        // (`since` is inclusive), as in production.
        let old = gitea_double::now_secs() - chrono::Duration::hours(1);
        gitea.comment_at(&repo, 1, true, "someone", "looks good", old);
        // Untouched for an hour: the issue search has nothing to report.
        gitea
            .state
            .lock()
            .unwrap()
            .repos
            .get_mut(&repo)
            .unwrap()
            .pulls
            .get_mut(&1)
            .unwrap()
            .updated = old;
        toml.push_str(&format!(
            "[[repos]]\nrepo = \"{repo}\"\nrecipe = \"r{i}\"\n\n"
        ));
    }
    let path = dir.path().join("cc-ci.toml");
    std::fs::write(&path, toml.replace("[poll]", "[poll]\nlookback_s = 7200")).unwrap();
    let config = Config::load(&path).unwrap();
    let mut poller = Poller::new(config, Arc::new(AtomicBool::new(false))).unwrap();
    poller.cycle(); // warm-up: sets the cursors, opens connections
    let before = gitea.requests();
    let mut times = Vec::new();
    let mut client = 0;
    for _ in 0..CYCLES {
        let stats = poller.cycle();
        client += stats.requests;
        times.push(stats.elapsed);
    }
    let double = (gitea.requests() - before) as f64 / CYCLES as f64;
    times.sort();
    (
        double,
        client as f64 / CYCLES as f64,
        times[CYCLES / 2],
        times[CYCLES - 1],
    )
}
