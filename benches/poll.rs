//! The poller against the Gitea test double on 127.0.0.1. Run with
//! `cargo bench --bench poll`; the numbers go in `docs/perf.md`.
//!
//! 1. Cost of idle cycles (no new comments), for 1, 50 and 500 enrolled repos in each
//!    discovery mode: HTTP requests per cycle (counted by the double and by the
//!    client), amortized over the catch-up period (the issue search every 20 cycles
//!    with `notifications`, the sweep every 10 with `search`) and over the sweep
//!    period (2880 cycles with `notifications`), and wall time per cycle.
//! 2. Time from a `!testme` comment to its run request, `notifications` against
//!    `per-repo`, with the poll loop running for real (`Poller::run`). Time is scaled
//!    down 30×: a 1 s interval for the default 30 s, and the double holds each
//!    notification in its queue for 67 ms for Gitea's ~2 s.
#[path = "../tests/support/gitea_double.rs"]
mod gitea_double;

use ccci::config::Config;
use ccci::poll::service::Poller;
use gitea_double::GiteaDouble;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [1, 50, 500];
/// Gitea's notification queue delay (~2 s) on the bench's 1/30 time scale.
const QUEUE_DELAY: Duration = Duration::from_millis(67);
/// Comments timed per mode and size.
const SAMPLES: usize = 8;

fn main() {
    println!("## Idle cycles\n");
    println!(
        "| discovery | repos | requests/cycle over the catch-up period (double) | (client) | requests/cycle over the sweep period | cycle time median | cycle time max |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for mode in ["per-repo", "search", "notifications"] {
        for n in SIZES {
            let c = idle_cost(n, mode);
            println!(
                "| {mode} | {n} | {:.3} | {:.3} | {:.3} | {:.2} ms | {:.2} ms |",
                c.catch_up_double,
                c.catch_up_client,
                c.sweep_period,
                ms(c.median),
                ms(c.max)
            );
        }
    }
    println!("\n## Comment to run request (1 s interval, {QUEUE_DELAY:?} queue delay)\n");
    println!(
        "| repos | per-repo mean | median | max | notifications mean | median | max | ratio (mean) | ratio (median) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in [50, 500] {
        let base = latencies(n, "per-repo");
        let notif = latencies(n, "notifications");
        println!(
            "| {n} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} | {:.2} |",
            ms(base.mean),
            ms(base.median),
            ms(base.max),
            ms(notif.mean),
            ms(notif.median),
            ms(notif.max),
            notif.mean.as_secs_f64() / base.mean.as_secs_f64(),
            notif.median.as_secs_f64() / base.median.as_secs_f64()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `n` enrolled repos, each with pull request 1 and one comment an hour old (every
/// listing returns it again: `since` is inclusive), untouched for an hour (the issue
/// search names nothing); alice may trigger. Returns the config path.
fn setup(dir: &Path, gitea: &GiteaDouble, n: usize, poll: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("token"), "bench-token").unwrap();
    gitea.add_member("coop-cloud", "alice");
    let d = dir.display();
    let mut toml = format!(
        "[gitea]\nurl = \"{}\"\ntoken_file = \"{d}/token\"\nbot_user = \"cc-ci-bot\"\n\n\
         [trigger]\norg = \"coop-cloud\"\n\n\
         [launch]\nkind = \"command\"\ncommand = [\"/bin/true\"]\n\n[state]\ndir = \"{d}/state\"\n\n\
         [poll]\nlookback_s = 7200\n{poll}\n\n",
        gitea.url
    );
    let old = gitea_double::now_secs() - chrono::Duration::hours(1);
    for i in 0..n {
        let repo = format!("recipes/r{i}");
        gitea.add_repo(&repo);
        gitea.add_pull(&repo, 1, &"a".repeat(40));
        gitea.comment_at(&repo, 1, true, "someone", "looks good", old);
        let mut st = gitea.state.lock().unwrap();
        st.repos
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
    let path = dir.join("cc-ci.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The `[poll]` lines of a mode, with its periods spelled out.
fn poll_lines(mode: &str) -> String {
    match mode {
        "per-repo" => "discovery = \"per-repo\"".into(),
        "search" => "discovery = \"search\"\nsweep_every = 10".into(),
        _ => "discovery = \"notifications\"\nsearch_every = 20\nsweep_every = 2880".into(),
    }
}

struct Cost {
    catch_up_double: f64,
    catch_up_client: f64,
    sweep_period: f64,
    median: Duration,
    max: Duration,
}

/// Idle cycles after the start (cycle 0: watching, subscribing, the first sweep):
/// cycles 1..=P where P is the sweep period, so exactly one sweep is counted; the
/// catch-up figure counts cycles 1..=20 (one issue search with `notifications`,
/// two sweeps with `search`, twenty listings of every repo with `per-repo`).
fn idle_cost(n: usize, mode: &str) -> Cost {
    let dir = tempfile::tempdir().unwrap();
    let gitea = GiteaDouble::start("bench-token", "cc-ci-bot");
    let path = setup(dir.path(), &gitea, n, &poll_lines(mode));
    let config = Config::load(&path).unwrap();
    let period = config.poll.sweep_every().max(20) as usize;
    let mut poller = Poller::new(config, Arc::new(AtomicBool::new(false))).unwrap();
    poller.cycle();
    let before = gitea.requests();
    let mut times = Vec::new();
    let mut client = 0;
    let mut at_20 = (0, 0);
    for cycle in 1..=period {
        let stats = poller.cycle();
        client += stats.requests as usize;
        times.push(stats.elapsed);
        if cycle == 20 {
            at_20 = (gitea.requests() - before, client);
        }
    }
    let total = gitea.requests() - before;
    assert_eq!(client, total, "the double and the client count the same");
    times.sort();
    Cost {
        catch_up_double: at_20.0 as f64 / 20.0,
        catch_up_client: at_20.1 as f64 / 20.0,
        sweep_period: total as f64 / period as f64,
        median: times[times.len() / 2],
        max: times[times.len() - 1],
    }
}

struct Latency {
    mean: Duration,
    median: Duration,
    max: Duration,
}

/// Comments on pull request 1 of repos 0, 1, … while the poll loop runs: the time
/// from each comment to its run request on disk. The comments come at phases spread
/// over the interval (golden-ratio steps), the same for every mode.
fn latencies(n: usize, mode: &str) -> Latency {
    let dir = tempfile::tempdir().unwrap();
    let gitea = GiteaDouble::start("bench-token", "cc-ci-bot");
    gitea.state.lock().unwrap().notify_delay = QUEUE_DELAY;
    let lines = format!("interval_s = 1\n{}", poll_lines(mode));
    let path = setup(dir.path(), &gitea, n, &lines);
    let config = Config::load(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut poller = Poller::new(config, stop.clone()).unwrap();
    let looping = std::thread::spawn(move || poller.run(false, None));
    let requests = dir.path().join("state/requests");
    // Past the start (watching, subscribing, the first sweep).
    let last = format!("/repos/recipes/r{}/issues/comments?", n - 1);
    let started = Instant::now();
    while !gitea.log().iter().any(|l| l.contains(&last)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{mode}: no start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut times = Vec::new();
    for k in 0..SAMPLES {
        let phase = (k as f64 * 0.618_034).fract();
        std::thread::sleep(Duration::from_secs_f64(1.0 + phase));
        let before = count(&requests);
        let repo = format!("recipes/r{}", k % n);
        gitea.comment(&repo, 1, "alice", "!testme");
        let t = Instant::now();
        while count(&requests) == before {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{mode}: no run request"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        times.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    looping.join().unwrap();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    times.sort();
    Latency {
        mean,
        median: times[times.len() / 2],
        max: times[times.len() - 1],
    }
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}
