//! The whole `!testme` path on this machine: the Gitea TEST DOUBLE serves a pull
//! request and a maintainer's comment; the real poller (`cc-ci poll`) sees it,
//! authorizes, writes the run request and launches the real runner (`cc-ci run
//! --request`), which climbs the ladder on the real swarm with the abra TEST DOUBLE;
//! the poller then reports the result back: commit status and one PR comment.
mod support;

use std::time::{Duration, Instant};
use support::gitea_double::GiteaDouble;
use support::*;

const TOKEN: &str = "tok-pipeline-0123456789";

#[test]
fn testme_comment_runs_the_ladder_and_reports_back() {
    let setup = Setup::new("t-pipeline");
    let repo = recipe_copy("hello", setup.dir.path());
    let git = |args: &[&str]| git(&repo, args);
    let sha = git(&["rev-parse", "HEAD"]);
    git(&["update-ref", "refs/pull/5/head", &sha]);

    let gitea = GiteaDouble::start(TOKEN, "cc-ci-bot");
    gitea.add_repo("recipe-maintainers/hello");
    gitea.set_clone_url("recipe-maintainers/hello", repo.to_str().unwrap());
    gitea.add_pull("recipe-maintainers/hello", 5, &sha);
    gitea.add_member("coop-cloud", "alice");
    let token = setup.dir.path().join("gitea-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();

    // One config for both: the runner part written by Setup, the poller part here.
    let mut config = std::fs::read_to_string(setup.config()).unwrap();
    config.push_str(&format!(
        r#"
[gitea]
url = "{url}"
token_file = {token:?}
bot_user = "cc-ci-bot"

[trigger]
org = "coop-cloud"

[poll]
interval_s = 1

[launch]
kind = "command"
command = [{bin:?}, "run", "--config", {cfg:?}, "--request"]

[report]
base_url = "https://ci.example.org/runs"

[[repos]]
repo = "recipe-maintainers/hello"
recipe = "hello"
"#,
        url = gitea.url,
        bin = BIN,
        cfg = setup.config(),
    ));
    std::fs::write(setup.config(), config).unwrap();

    let mut poller = std::process::Command::new(BIN)
        .args(["poll", "--config"])
        .arg(setup.config())
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The comment arrives after the poller has started (it ignores old comments).
    std::thread::sleep(Duration::from_secs(2));
    gitea.comment(
        "recipe-maintainers/hello",
        5,
        "alice",
        "looks good\n!testme",
    );

    let start = Instant::now();
    let final_status = loop {
        let statuses = gitea.statuses();
        if let Some(s) = statuses.iter().find(|s| s.state != "pending") {
            break s.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no final status; statuses: {:?}",
            statuses
                .iter()
                .map(|s| (&s.state, &s.description))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(poller.id() as i32, libc::SIGTERM) };
    poller.wait().unwrap();

    let statuses = gitea.statuses();
    assert_eq!(
        statuses.first().unwrap().state,
        "pending",
        "pending at launch"
    );
    assert_eq!(
        final_status.state, "success",
        "{}",
        final_status.description
    );
    assert_eq!(final_status.sha, sha);
    assert!(
        final_status.description.contains("5/5"),
        "{}",
        final_status.description
    );
    assert!(
        final_status
            .target_url
            .starts_with("https://ci.example.org/runs/"),
        "{}",
        final_status.target_url
    );

    // One bot comment on the PR, edited in place into the final report.
    let comments = gitea.comments_by("recipe-maintainers/hello", "cc-ci-bot");
    assert_eq!(
        comments.len(),
        1,
        "{:?}",
        comments.iter().map(|c| &c.body).collect::<Vec<_>>()
    );
    let body = &comments[0].body;
    assert!(body.contains("reached level 5/5"), "{body}");
    assert!(body.contains("| install | ✅ passed"), "{body}");
    assert!(
        !body.contains("{run_url}") && !body.contains("{badge_url}"),
        "placeholders filled: {body}"
    );
    assert!(body.contains("](https://ci.example.org/runs/"), "{body}");

    // The run the poller started is the one whose results say level 5.
    let runs: Vec<_> = std::fs::read_dir(setup.dir.path().join("state/runs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1);
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(runs[0].path().join("results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(results["level"], 5);
    assert_eq!(results["sha"], sha.as_str());
    assert_eq!(results["pr"], 5);
    assert!(
        gitea.state.lock().unwrap().bad_auth.is_empty(),
        "the token was always sent right"
    );
    assert_nothing_left(&setup.stack("hello-pr5"));
}
