//! The janitor on the real swarm: it removes what a SIGKILLed run left and marks the
//! run's results as error; it never touches a live run or a stack deployed by hand;
//! bad input (an unreadable config, no engine) is an error naming the thing.
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn janitor(setup: &Setup, extra: &[&str]) -> RunOutput {
    RunOutput::from(
        Command::new(BIN)
            .arg("janitor")
            .arg("--config")
            .arg(setup.config())
            .args(extra)
            .output()
            .unwrap(),
    )
}

/// Start a run of hello whose install hook sleeps, and wait until its app is deployed.
fn run_stuck_in_install(setup: &Setup, sleep: &str) -> Child {
    // What an earlier, failed attempt left would look like this run's app.
    assert_nothing_left(&setup.stack("hello"));
    setup.write_hook("hello", "install_steps.sh", &format!("sleep {sleep}\n"));
    let child = setup
        .command(&["hello"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stack = setup.stack("hello");
    let start = Instant::now();
    // Deployed and running: its container and volume exist.
    while !["service", "container", "volume"]
        .iter()
        .all(|kind| leftovers(&stack).iter().any(|l| l.starts_with(kind)))
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the app never deployed"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    child
}

fn only_run_dir(setup: &Setup) -> std::path::PathBuf {
    let runs: Vec<_> = std::fs::read_dir(setup.dir.path().join("state/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

#[test]
fn after_kill_9_the_janitor_removes_what_the_run_left_and_marks_it_error() {
    let setup = Setup::new("t-jkill");
    let mut child = run_stuck_in_install(&setup, "303");
    child.kill().unwrap(); // SIGKILL: no teardown
    child.wait().unwrap();
    let stack = setup.stack("hello");
    let left = leftovers(&stack);
    assert!(!left.is_empty());
    let run_dir = only_run_dir(&setup);

    // --dry-run: the table, and nothing removed.
    let dry = janitor(&setup, &["--dry-run"]);
    assert_eq!(dry.code, Some(0), "{}", dry.describe());
    assert!(
        dry.stdout.lines().any(|l| l.starts_with("would remove")
            && l.contains(&format!("hello.t-jkill.localhost: stack {stack}"))),
        "{}",
        dry.describe()
    );
    assert!(dry.stdout.contains("(dry run: nothing removed)"));
    let now = leftovers(&stack);
    assert!(
        left.iter().all(|l| now.contains(l)),
        "a dry run removes nothing: {left:?} then {now:?}"
    );

    let out = janitor(&setup, &[]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert_nothing_left(&stack);
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["status"], "error");
    assert!(
        results["error"]
            .as_str()
            .unwrap()
            .starts_with("the runner died before it finished"),
        "{results}"
    );
    let scratch = std::fs::read_dir(setup.dir.path().join("run/runs"))
        .unwrap()
        .count();
    assert_eq!(
        scratch, 0,
        "the dead run's scratch dir (its ABRA_DIR) is removed"
    );
    assert!(
        !setup
            .dir
            .path()
            .join("run/locks/hello.t-jkill.localhost.lock")
            .exists(),
        "the stale lock file is removed"
    );

    // A second janitor finds nothing to do.
    let again = janitor(&setup, &[]);
    assert_eq!(again.code, Some(0), "{}", again.describe());
    assert!(!again.stdout.contains("remove"), "{}", again.stdout);
}

#[test]
fn the_janitor_never_touches_a_live_run_or_a_stack_deployed_by_hand() {
    let setup = Setup::new("t-jlive");
    // A stack deployed by hand on the same swarm (a gateway, say).
    let hand = "handmade_t-jlive";
    let compose = setup.dir.path().join("hand.yml");
    std::fs::write(
        &compose,
        "version: \"3.8\"\nservices:\n  app:\n    image: ccci-example/hello:head\n",
    )
    .unwrap();
    let _ = recipes(); // the images exist
    let deployed = Command::new("docker")
        .args(["stack", "deploy", "--resolve-image", "never", "-c"])
        .arg(&compose)
        .arg(hand)
        .output()
        .unwrap();
    assert!(deployed.status.success(), "{deployed:?}");
    let live = run_stuck_in_install(&setup, "304");
    let stack = setup.stack("hello");
    let before = leftovers(&stack);

    let out = janitor(&setup, &[]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("keep") && l.contains("app hello.t-jlive.localhost")),
        "{}",
        out.stdout
    );
    assert_eq!(
        leftovers(&stack),
        before,
        "nothing of the live run is removed"
    );
    assert!(
        !leftovers(hand).is_empty(),
        "the hand-deployed stack is kept"
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(only_run_dir(&setup).join("results.json")).unwrap())
            .unwrap();
    assert_eq!(
        results["status"], "running",
        "a live run's results are kept"
    );

    // The live run, cancelled, tears itself down.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(live.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_with_timeout(live, Duration::from_secs(180));
    assert_eq!(status, Some(0));
    assert_nothing_left(&stack);
    let _ = Command::new("docker").args(["stack", "rm", hand]).output();
    let start = Instant::now();
    while !leftovers(hand).is_empty() && start.elapsed() < Duration::from_secs(60) {
        for l in leftovers(hand) {
            if let Some(v) = l.strip_prefix("volume ") {
                let _ = Command::new("docker").args(["volume", "rm", v]).output();
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_nothing_left(hand);
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_unreadable_config_is_named_with_the_fix() {
    let setup = Setup::new("t-jconf");
    std::fs::write(setup.config(), "[runner]\ndomian = \"x\"\n").unwrap();
    let out = janitor(&setup, &[]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stderr.contains("cc-ci check-config"), "{}", out.stderr);
    assert!(
        out.stderr.contains("did you mean `domain`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn without_the_engine_the_janitor_removes_only_files_and_says_so() {
    let setup = Setup::new("t-jnoengine");
    // A dead run's scratch dir, as a SIGKILLed runner leaves it.
    let scratch = setup.dir.path().join("run/runs/20261130T000000Z-dead01");
    std::fs::create_dir_all(scratch.join("abra")).unwrap();
    std::fs::write(scratch.join("domain"), "hello.t-jnoengine.localhost").unwrap();
    let out = RunOutput::from(
        Command::new(BIN)
            .args(["janitor", "--config"])
            .arg(setup.config())
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("docker is not available"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("removed nothing from the swarm"),
        "{}",
        out.stderr
    );
    assert!(
        !scratch.exists(),
        "the dead run's scratch dir is still removed"
    );
}
