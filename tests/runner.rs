//! The runner end to end: `cc-ci run` as a real process, the abra test double on the
//! real swarm, the example recipes built from scratch. Every swarm test ends by
//! checking that nothing of its app is left on the engine.
mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;

fn assert_schema_valid(results: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("docs/results-schema.json")).unwrap(),
    )
    .unwrap();
    let validator =
        jsonschema::validator_for(&schema).expect("docs/results-schema.json is a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(results)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "results.json does not match docs/results-schema.json: {errors:#?}"
    );
}

#[test]
fn hello_climbs_to_level_5() {
    let setup = Setup::new("t-hello");
    let out = setup.run(&["hello"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_schema_valid(&r);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["level"], 5, "{}", out.describe());
    for t in ["install", "upgrade", "backup", "restore", "custom"] {
        assert_eq!(tier(&r, t)["status"], "passed", "{t}: {}", out.describe());
    }
    assert_eq!(r["upgrade_base"], "1.1.0+1.1");
    assert_eq!(r["deploys"], serde_json::json!({"count": 3, "budget": 3}));
    assert_eq!(
        r["invariants"],
        serde_json::json!({"clean_teardown": true, "no_secret_leak": true, "deploy_budget_ok": true})
    );
    assert_eq!(r["sha"].as_str().unwrap().len(), 40);

    // The output ends with the table, the level, and `results: <absolute path>`.
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[lines.len() - 2], "level: 5");
    assert!(out.results_path().is_absolute());

    let dir = out.run_dir();
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.starts_with("<?xml"), "{junit}");
    assert_eq!(
        junit.matches("<testcase").count(),
        5 + 2,
        "five tiers and two custom tests: {junit}"
    );
    assert!(junit.contains("timestamp=\"20"), "real timestamps: {junit}");
    assert!(!junit.contains("<failure"), "{junit}");
    let badge = std::fs::read_to_string(dir.join("badge.svg")).unwrap();
    assert!(
        badge.contains("level 5/5") && badge.contains("#4c1"),
        "{badge}"
    );
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("| install | ✅ passed"), "{report}");
    assert!(report.contains("reached level 5/5"), "{report}");
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap();
    assert!(
        log.contains("data written at the base version survived the upgrade"),
        "{log}"
    );
    assert!(log.contains("back to the backed-up state"), "{log}");
    // The generated secret appears in the machine output of `secret generate`, masked.
    assert!(log.contains(r#""value":"[MASKED]""#), "{log}");
    assert_nothing_left(&setup.stack("hello"));
}

#[test]
fn broken_upgrade_stops_at_level_1_with_cause_recipe() {
    let setup = Setup::new("t-broken");
    let out = setup.run(&["broken-upgrade"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_schema_valid(&r);
    assert_eq!(r["level"], 1, "{}", out.describe());
    assert_eq!(tier(&r, "install")["status"], "passed");
    let upgrade = tier(&r, "upgrade");
    assert_eq!(upgrade["status"], "failed");
    assert_eq!(upgrade["cause"], "recipe", "{upgrade}");
    assert_eq!(r["cause"], "recipe");
    for t in ["backup", "restore", "custom"] {
        assert_eq!(tier(&r, t)["status"], "not_run");
    }
    // The diagnostics that explain it are in the artifacts.
    let diag = std::fs::read_to_string(out.run_dir().join("diagnostics/upgrade.txt")).unwrap();
    assert!(diag.contains("docker service ps --no-trunc"), "{diag}");
    assert!(
        diag.contains("migration from format v1 failed"),
        "last log lines of the failing service: {diag}"
    );
    assert_eq!(r["invariants"]["clean_teardown"], true);
    assert_eq!(r["deploys"], serde_json::json!({"count": 3, "budget": 3}));
    assert_nothing_left(&setup.stack("broken-upgrade"));
}

#[test]
fn no_backup_skips_backup_at_level_2() {
    let setup = Setup::new("t-nobackup");
    let out = setup.run(&["no-backup"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_schema_valid(&r);
    assert_eq!(r["level"], 2, "{}", out.describe());
    assert_eq!(tier(&r, "upgrade")["status"], "passed");
    let backup = tier(&r, "backup");
    assert_eq!(backup["status"], "skipped");
    assert!(
        backup["reason"]
            .as_str()
            .unwrap()
            .contains("backupbot.backup=true")
    );
    assert_eq!(tier(&r, "restore")["status"], "not_run");
    assert_eq!(r["cause"], Value::Null);
    let badge = std::fs::read_to_string(out.run_dir().join("badge.svg")).unwrap();
    assert!(badge.contains("level 2/5"));
    assert_nothing_left(&setup.stack("no-backup"));
}

#[test]
fn compose_that_fails_to_deploy_is_level_0_and_leaves_nothing() {
    let setup = Setup::new("t-badcompose");
    let repo = recipe_copy("hello", setup.dir.path());
    // A service that references a secret that is never created: the deploy fails.
    let compose = std::fs::read_to_string(repo.join("compose.yml")).unwrap();
    let broken = compose.replace(
        "_admin_password_${SECRET_ADMIN_PASSWORD_VERSION}",
        "_missing_secret_v9",
    );
    assert_ne!(compose, broken);
    std::fs::write(repo.join("compose.yml"), broken).unwrap();
    commit_all(&repo, "break the compose file");
    let out = setup.run(&[repo.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_eq!(r["level"], 0);
    let install = tier(&r, "install");
    assert_eq!(install["status"], "failed");
    assert_eq!(install["cause"], "recipe", "{install}");
    assert!(
        install["reason"].as_str().unwrap().contains("deploy"),
        "{install}"
    );
    assert_eq!(r["invariants"]["clean_teardown"], true);
    assert_nothing_left(&setup.stack("hello"));
}

#[test]
fn secrets_in_hook_output_are_masked_everywhere() {
    let setup = Setup::with_runner("t-mask", "secrets_dirs = [\"CREDS\"]");
    // A CI credential (class A) and the app's generated secret (class B) both printed
    // by a hook, in plain and base64 form.
    let creds = setup.dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("gitea-token"), "tok-1234567890abcdef\n").unwrap();
    // The poller's Gitea token, named only by [gitea] token_file, is masked too.
    let poller_token = setup.dir.path().join("poller-token");
    std::fs::write(&poller_token, "poller-tok-0987654321\n").unwrap();
    let config = std::fs::read_to_string(setup.config())
        .unwrap()
        .replace("CREDS", creds.to_str().unwrap())
        + &format!(
            "\n[gitea]\nurl = \"http://127.0.0.1:9\"\ntoken_file = \"{}\"\nbot_user = \"cc-ci-bot\"\n",
            poller_token.display()
        );
    std::fs::write(setup.config(), config).unwrap();
    setup.write_hook(
        "hello",
        "install_steps.sh",
        r#"set -eu
c=$(docker ps -q --filter "label=com.docker.swarm.service.name=${CCCI_STACK_NAME}_app" | head -n1)
pw=$(docker exec "$c" cat /run/secrets/admin_password)
echo "the admin password is $pw"
half=$(printf %s "$pw" | cut -c1-10); rest=$(printf %s "$pw" | cut -c11-)
printf 'split: %s' "$half"; sleep 0.3; printf '%s\n' "$rest"
echo "token: $(cat CREDS_DIR/gitea-token)"
echo "poller token: $(cat POLLER_TOKEN)"
echo "$pw" > PLANTED
"#
        .replace("CREDS_DIR", creds.to_str().unwrap())
        .replace("POLLER_TOKEN", poller_token.to_str().unwrap())
        .replace(
            "PLANTED",
            setup.dir.path().join("planted-secret").to_str().unwrap(),
        )
        .as_str(),
    );
    let out = setup.run(&["hello"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    let log = std::fs::read_to_string(out.run_dir().join("run.log")).unwrap();
    assert!(log.contains("the admin password is [MASKED]"), "{log}");
    assert!(log.contains("token: [MASKED]"), "{log}");
    assert!(
        log.contains("split: [MASKED]\n"),
        "a value split across two writes: {log}"
    );
    assert!(log.contains("poller token: [MASKED]"), "{log}");
    assert!(!log.contains("tok-1234567890abcdef"));
    assert!(!log.contains("poller-tok-0987654321"));
    assert_eq!(
        r["invariants"]["no_secret_leak"],
        true,
        "{}",
        out.describe()
    );
    assert!(
        !out.stdout.contains("tok-1234567890abcdef")
            && !out.stderr.contains("tok-1234567890abcdef")
    );
    // The app's password itself (kept aside by the hook, outside the run's dirs) is in
    // no artifact, nor in what cc-ci printed (the journal, under systemd).
    let password = std::fs::read_to_string(setup.dir.path().join("planted-secret")).unwrap();
    let password = password.trim();
    assert!(password.len() >= 8);
    assert!(!out.stdout.contains(password) && !out.stderr.contains(password));
    assert!(
        out.stderr.contains("the admin password is [MASKED]"),
        "{}",
        out.stderr
    );
    for entry in std::fs::read_dir(out.run_dir()).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(password),
                "{}",
                entry.path().display()
            );
        }
    }
    assert_nothing_left(&setup.stack("hello"));
}

#[test]
fn an_artifact_written_around_the_filter_sets_no_secret_leak_false() {
    let setup = Setup::new("t-leak");
    // The hook bypasses the redactor on purpose: it writes the app secret straight
    // into the run's artifact dir. The post-run scan must catch it.
    setup.write_hook(
        "hello",
        "install_steps.sh",
        r#"set -eu
c=$(docker ps -q --filter "label=com.docker.swarm.service.name=${CCCI_STACK_NAME}_app" | head -n1)
docker exec "$c" cat /run/secrets/admin_password > "$CCCI_RUN_DIR/leaked.txt"
"#,
    );
    let out = setup.run(&["hello"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_eq!(
        r["invariants"]["no_secret_leak"],
        false,
        "{}",
        out.describe()
    );
    let report = std::fs::read_to_string(out.run_dir().join("report.md")).unwrap();
    assert!(report.contains("no secret leak ❌"), "{report}");
    assert_nothing_left(&setup.stack("hello"));
}

/// Two real runner processes of the same recipe and PR (so the same app domain) at
/// once. The second waits for the per-domain lock and neither disturbs the other.
///
/// Why this is the regression test of the older system's bug: there, the deploy
/// counter and other state files were keyed by app domain in a shared /tmp, and the
/// second run wrote its preamble state *before* blocking on the lock, resetting the
/// first run's counter (a false count) and later deleting its files. Here all state
/// is keyed by run id (`<runtime_dir>/runs/<run-id>/deploys`, handed to children as
/// CCCI_DEPLOYS_FILE). Were it keyed by domain, the two runs would append to one file
/// and each would count 6 deploys against its budget of 3 (or, with a truncating
/// preamble, fewer): `deploys.count == 3` and `deploy_budget_ok` below would fail.
#[test]
fn same_domain_runs_queue_on_the_lock_and_keep_their_own_state() {
    let setup = Setup::new("t-lock");
    let first = setup
        .command(&["hello", "--pr", "7"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the first take the lock before the second starts.
    std::thread::sleep(Duration::from_secs(3));
    let second_started = Instant::now();
    let second = setup.command(&["hello", "--pr", "7"]).output().unwrap();
    let second_took = second_started.elapsed();
    let first = RunOutput::from(first.wait_with_output().unwrap());
    let second = RunOutput::from(second);
    assert_eq!(first.code, Some(0), "{}", first.describe());
    assert_eq!(second.code, Some(0), "{}", second.describe());
    let (r1, r2) = (first.results(), second.results());
    assert_ne!(r1["run_id"], r2["run_id"]);
    assert_ne!(first.run_dir(), second.run_dir());
    assert_eq!(r1["app_domain"], r2["app_domain"]);
    for r in [&r1, &r2] {
        assert_eq!(r["level"], 5, "{r}");
        assert_eq!(
            r["deploys"],
            serde_json::json!({"count": 3, "budget": 3}),
            "{r}"
        );
        assert_eq!(r["invariants"]["deploy_budget_ok"], true);
        assert_eq!(r["invariants"]["clean_teardown"], true);
    }
    // The second waited: it says so, and its ladder began after the first finished.
    let log2 = std::fs::read_to_string(second.run_dir().join("run.log")).unwrap();
    assert!(
        log2.contains(&format!(
            "is locked by run {}",
            r1["run_id"].as_str().unwrap()
        )),
        "{log2}"
    );
    let first_end: chrono::DateTime<chrono::Utc> =
        r1["finished_at"].as_str().unwrap().parse().unwrap();
    let second_install: chrono::DateTime<chrono::Utc> = tier(&r2, "install")["started_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        second_install >= first_end - chrono::Duration::seconds(2),
        "second began before the first ended"
    );
    assert!(second_took > Duration::from_secs(10));
    // Neither run's files were touched by the other.
    for out in [&first, &second] {
        for f in [
            "results.json",
            "junit.xml",
            "badge.svg",
            "report.md",
            "run.log",
        ] {
            assert!(out.run_dir().join(f).is_file(), "{f}");
        }
    }
    assert_nothing_left(&setup.stack("hello-pr7"));
}

#[test]
fn sigterm_cancels_the_run_and_tears_down() {
    let setup = Setup::new("t-cancel");
    setup.write_hook(
        "hello",
        "install_steps.sh",
        "echo hook started; sleep 301\n",
    );
    let child = setup
        .command(&["hello"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Wait until the app is deployed and the hook runs.
    let state = setup.dir.path().join("state/runs");
    let start = Instant::now();
    loop {
        let log = std::fs::read_dir(&state)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .and_then(|e| std::fs::read_to_string(e.path().join("run.log")).ok())
            .unwrap_or_default();
        if log.contains("hook started") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the hook never started: {log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = RunOutput::from(child.wait_with_output().unwrap());
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    let install = tier(&r, "install");
    assert_eq!(install["status"], "failed");
    assert_eq!(install["cause"], "cancelled", "{install}");
    assert_eq!(r["cause"], "cancelled");
    assert_eq!(tier(&r, "upgrade")["status"], "not_run");
    assert_eq!(r["invariants"]["clean_teardown"], true);
    // The hook's `sleep` died with its process group. (Each test that looks for its
    // hook's sleep uses a duration no other test uses: they run in parallel.)
    let sleepers = std::process::Command::new("pgrep")
        .args(["-f", "sleep 301"])
        .output()
        .unwrap();
    assert!(
        sleepers.stdout.is_empty(),
        "the hook's children outlived the cancel"
    );
    assert_nothing_left(&setup.stack("hello"));
}

#[test]
fn the_deadline_stops_the_run_with_cause_timeout() {
    let setup = Setup::with_runner("t-deadline", "deadline_min = 1");
    setup.write_hook(
        "hello",
        "install_steps.sh",
        "echo waiting forever; sleep 600\n",
    );
    let started = Instant::now();
    let out = setup.run(&["hello"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        started.elapsed() < Duration::from_secs(150),
        "took {:?}",
        started.elapsed()
    );
    let r = out.results();
    assert_eq!(
        tier(&r, "install")["cause"],
        "timeout",
        "{}",
        out.describe()
    );
    assert_eq!(r["invariants"]["clean_teardown"], true);
    assert_nothing_left(&setup.stack("hello"));
}

// ---- bad input: a clear error naming the thing and the fix; nothing deployed ----

fn assert_error(out: &RunOutput, needles: &[&str]) {
    assert_eq!(out.code, Some(1), "{}", out.describe());
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "stderr lacks {n:?}: {}",
            out.describe()
        );
    }
}

#[test]
fn missing_recipe_is_named() {
    let setup = Setup::new("t-bad1");
    let out = setup.run(&["nosuchrecipe"]);
    assert_error(&out, &["recipe \"nosuchrecipe\" not found", "recipes_dir"]);
    // `systemctl start cc-ci-runner@nosuchrecipe`: no request of that name, so a recipe.
    let out = setup.run(&["--instance", "nosuchrecipe"]);
    assert_error(&out, &["recipe \"nosuchrecipe\" not found"]);
}

#[test]
fn recipe_names_with_path_tricks_are_refused() {
    let setup = Setup::new("t-bad2");
    for name in ["../hello", "a/b", ".."] {
        let out = setup.run(&[name]);
        assert_error(&out, &["is not valid", "no path separators"]);
    }
    // `systemctl start cc-ci-runner@no-backup`: %I hands over `no/backup`.
    let out = setup.run(&["--instance", "no/backup"]);
    assert_error(&out, &["systemd-escape no-backup"]);
}

#[test]
fn unknown_ref_is_named_and_nothing_deployed() {
    let setup = Setup::new("t-bad3");
    let out = setup.run(&["hello", "--ref", "no-such-branch"]);
    assert_error(&out, &["ref \"no-such-branch\" not found"]);
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::fs::read_dir(setup.dir.path().join("state/runs"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path()
                .join("results.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(results["status"], "error");
    assert_eq!(
        results["cause"],
        Value::Null,
        "bad input is no tier's failure"
    );
    assert!(
        results["error"]
            .as_str()
            .unwrap()
            .contains("no-such-branch")
    );
    assert_nothing_left(&setup.stack("hello"));
}

#[test]
fn no_release_below_the_ref_names_the_fix() {
    let setup = Setup::new("t-bad4");
    let out = setup.run(&["hello", "--ref", "1.0.0+1.0"]);
    assert_error(
        &out,
        &["no release tag below 1.0.0+1.0", "UPGRADE_BASE_VERSION"],
    );
    assert_nothing_left(&setup.stack("hello"));
}

#[test]
fn pinned_upgrade_base_must_be_a_tag() {
    let setup = Setup::new("t-bad5");
    std::fs::write(
        setup.ci_dir("hello").join("meta.toml"),
        "UPGRADE_BASE_VERSION = \"9.9.9+9\"\n",
    )
    .unwrap();
    let out = setup.run(&["hello"]);
    assert_error(
        &out,
        &["UPGRADE_BASE_VERSION \"9.9.9+9\" is not a tag", "meta.toml"],
    );
}

#[test]
fn meta_typo_suggests_the_key() {
    let setup = Setup::new("t-bad6");
    std::fs::write(
        setup.ci_dir("hello").join("meta.toml"),
        "UPGRADE_BASE_VERSON = \"1.0.0+1.0\"\n",
    )
    .unwrap();
    let output = tempfile::tempdir().unwrap();
    let out = setup.run(&["hello", "--output", output.path().to_str().unwrap()]);
    assert_error(
        &out,
        &[
            "meta.toml",
            "UPGRADE_BASE_VERSON",
            "did you mean `UPGRADE_BASE_VERSION`?",
        ],
    );
    // The run dir says why too (the poller reports it on the pull request).
    let results: Value =
        serde_json::from_slice(&std::fs::read(output.path().join("results.json")).unwrap())
            .unwrap();
    assert_schema_valid(&results);
    assert_eq!(results["status"], "error");
    assert!(
        results["error"]
            .as_str()
            .unwrap()
            .contains("did you mean `UPGRADE_BASE_VERSION`?"),
        "{results}"
    );
}

#[test]
fn config_typo_suggests_the_key() {
    let setup = Setup::new("t-bad7");
    let text = std::fs::read_to_string(setup.config())
        .unwrap()
        .replace("recipes_dir", "recipe_dir");
    std::fs::write(setup.config(), text).unwrap();
    let out = setup.run(&["hello"]);
    assert_error(&out, &["cc-ci.toml", "did you mean `recipes_dir`?"]);
}

#[test]
fn unwritable_output_dir_is_named() {
    let setup = Setup::new("t-bad8");
    let file = setup.dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let output = file.join("out");
    let out = setup.run(&["hello", "--output", output.to_str().unwrap()]);
    assert_error(&out, &["output dir", "--output"]);
}

#[test]
fn docker_not_running_is_named() {
    let setup = Setup::new("t-bad9");
    let out = RunOutput::from(
        setup
            .command(&["hello"])
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap(),
    );
    assert_error(&out, &["docker is not available", "start it"]);
}

#[test]
fn missing_abra_is_named() {
    let setup = Setup::new("t-bad10");
    let text = std::fs::read_to_string(setup.config())
        .unwrap()
        .replace(abra_double().to_str().unwrap(), "/nonexistent/abra");
    std::fs::write(setup.config(), text).unwrap();
    let out = setup.run(&["hello"]);
    assert_error(
        &out,
        &["abra binary /nonexistent/abra not found", "runner.abra"],
    );
}

#[test]
fn exit_codes_are_pinned() {
    assert_eq!(ccci::cli::EXIT_OK, 0);
    assert_eq!(ccci::cli::EXIT_ERROR, 1);
    let out = std::process::Command::new(BIN)
        .args(["run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors are clap's 2");
}

/// The poller's path: a run request names the commit commented on; the runner tests
/// exactly that commit even if the PR head moved since (a peer CI complaint: "the
/// commit built is the head at processing time").
#[test]
fn a_run_request_tests_the_commented_commit() {
    let setup = Setup::new("t-request");
    let repo = recipe_copy("hello", setup.dir.path());
    let git = |args: &[&str]| git(&repo, args);
    let commented = git(&["rev-parse", "HEAD"]);
    git(&["update-ref", "refs/pull/3/head", &commented]);
    // The PR head moves on after the comment, to a commit that would not deploy.
    std::fs::write(repo.join("compose.yml"), "this: is: not: compose\n").unwrap();
    commit_all(&repo, "later push");
    let later = git(&["rev-parse", "HEAD"]);
    git(&["update-ref", "refs/pull/3/head", &later]);

    let run_id = "20261125T000000Z-abc123";
    let requests = setup.dir.path().join("state/requests");
    std::fs::create_dir_all(&requests).unwrap();
    let request = serde_json::json!({
        "run_id": run_id, "repo": "recipe-maintainers/hello", "recipe": "hello", "pr": 3,
        "sha": commented, "ref": "refs/pull/3/head", "clone_url": repo.to_str().unwrap(),
        "comment_id": 42, "requested_by": "maintainer", "requested_at": "2026-11-25T00:00:00Z"
    });
    std::fs::write(requests.join(format!("{run_id}.json")), request.to_string()).unwrap();
    // As the unit does it: the instance name is the run id.
    let out = setup.run(&["--instance", run_id]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_eq!(r["run_id"], run_id);
    assert_eq!(r["sha"], commented.as_str());
    assert_eq!(r["pr"], 3);
    assert_eq!(r["app_domain"], "hello-pr3.t-request.localhost");
    assert_eq!(r["level"], 5, "{}", out.describe());
    assert_eq!(
        out.run_dir(),
        setup
            .dir
            .path()
            .join("state/runs")
            .join(run_id)
            .canonicalize()
            .unwrap()
    );
    // The same request again does not run again.
    let again = setup.run(&["--instance", run_id]);
    assert_error(&again, &["already ran", "runs once"]);
    assert_eq!(
        out.results()["level"],
        5,
        "the first run's results are untouched"
    );
    assert_nothing_left(&setup.stack("hello-pr3"));
}

/// A real fault on the way in: the recipe's git host accepts the connection and
/// never answers. The clone runs under the run's executor, so a cancel stops it and
/// the run records why, instead of hanging until someone kills the unit.
#[test]
fn a_hanging_clone_is_stopped_by_a_cancel_and_recorded() {
    let setup = Setup::new("t-hang");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/recipe-maintainers/hello.git",
        listener.local_addr().unwrap()
    );
    // Accept and hold connections open without a byte of answer.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let run_id = "20261125T000000Z-hang01";
    let requests = setup.dir.path().join("state/requests");
    std::fs::create_dir_all(&requests).unwrap();
    let request = serde_json::json!({
        "run_id": run_id, "repo": "recipe-maintainers/hello", "recipe": "hello", "pr": 4,
        "sha": "0123456789012345678901234567890123456789", "ref": "refs/pull/4/head",
        "clone_url": url, "comment_id": 43, "requested_by": "maintainer",
        "requested_at": "2026-11-25T00:00:00Z"
    });
    std::fs::write(requests.join(format!("{run_id}.json")), request.to_string()).unwrap();
    let mut child = setup
        .command(&["--instance", run_id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "the clone hangs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = Instant::now();
    let out = RunOutput::from(child.wait_with_output().unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped promptly"
    );
    assert_eq!(out.code, Some(1), "{}", out.describe());
    let results: Value = serde_json::from_slice(
        &std::fs::read(
            setup
                .dir
                .path()
                .join("state/runs")
                .join(run_id)
                .join("results.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(results["status"], "error", "{results}");
    assert_eq!(results["cause"], "cancelled", "{results}");
    let log = std::fs::read_to_string(
        setup
            .dir
            .path()
            .join("state/runs")
            .join(run_id)
            .join("run.log"),
    )
    .unwrap();
    assert!(log.contains("git -C"), "the clone is in run.log: {log}");
    assert!(
        std::process::Command::new("pgrep")
            .args(["-f", &url])
            .output()
            .unwrap()
            .stdout
            .is_empty(),
        "no git left behind"
    );
}

#[test]
fn inactive_swarm_is_named_with_the_fix() {
    let setup = Setup::new("t-bad11");
    // A one-line shim answers `docker info` as an engine outside a swarm would; leaving
    // the real swarm here would break the swarm tests running beside this one.
    let shim = setup.dir.path().join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    std::fs::write(shim.join("docker"), "#!/bin/sh\necho inactive\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(shim.join("docker"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
    let out = RunOutput::from(
        setup
            .command(&["hello"])
            .env("PATH", path)
            .output()
            .unwrap(),
    );
    assert_error(&out, &["not in an active swarm", "docker swarm init"]);
}

/// A runner killed with SIGKILL mid-run cannot tear down. Its children die with it
/// (PDEATHSIG) and the next run of the same app, once it holds the lock (which proves
/// the dead run is gone), reaps the orphaned stack before deploying.
#[test]
fn after_kill_9_the_next_run_reaps_the_orphans() {
    let setup = Setup::new("t-kill9");
    setup.write_hook(
        "hello",
        "install_steps.sh",
        "echo hook started; sleep 302\n",
    );
    let mut child = setup
        .command(&["hello"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stack = setup.stack("hello");
    let start = Instant::now();
    while leftovers(&stack).iter().all(|l| !l.starts_with("service")) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the app never deployed"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let sleepers = std::process::Command::new("pgrep")
        .args(["-f", "sleep 302"])
        .output()
        .unwrap();
    assert!(
        sleepers.stdout.is_empty(),
        "children outlived the runner (PDEATHSIG)"
    );
    assert!(
        !leftovers(&stack).is_empty(),
        "a SIGKILLed runner cannot have torn down"
    );
    let dead_scratch: Vec<_> = std::fs::read_dir(setup.dir.path().join("run/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dead_scratch.len(), 1, "the dead run's scratch dir is left");

    std::fs::remove_file(setup.ci_dir("hello").join("install_steps.sh")).unwrap();
    let out = setup.run(&["hello"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let log = std::fs::read_to_string(out.run_dir().join("run.log")).unwrap();
    assert!(
        log.contains("reaping what an earlier run of hello.t-kill9.localhost left"),
        "{log}"
    );
    assert_eq!(out.results()["level"], 5, "{}", out.describe());
    assert!(
        !dead_scratch[0].exists(),
        "the dead run's scratch dir was reaped"
    );
    assert_nothing_left(&stack);
}

/// The CI-side recipe files: a `compose.ccci.yml` overlay, `APP_ENV` from meta, the
/// `setup_custom_tests.sh` hook, CI-side tests, and a test whose JUnit report has a
/// failure although it exits 0 (the report counts).
#[test]
fn ci_side_overlay_env_hooks_and_junit_reports_count() {
    let setup = Setup::new("t-ciside");
    let ci = setup.ci_dir("hello");
    std::fs::write(
        ci.join("compose.ccci.yml"),
        "version: \"3.8\"\nservices:\n  app:\n    environment:\n      - CCCI_OVERLAY=applied\n      - FROM_APP_ENV=${FROM_APP_ENV}\n",
    )
    .unwrap();
    std::fs::write(
        ci.join("meta.toml"),
        "APP_ENV = { FROM_APP_ENV = \"set-by-meta\" }\n",
    )
    .unwrap();
    setup.write_hook(
        "hello",
        "setup_custom_tests.sh",
        "touch \"$CCCI_STATE_DIR/setup-done\"\n",
    );
    setup.write_hook(
        "hello",
        "tests/20-overlay.sh",
        r#"#!/bin/sh
set -eu
test -f "$CCCI_STATE_DIR/setup-done"
c=$(docker ps -q --filter "label=com.docker.swarm.service.name=${CCCI_STACK_NAME}_app" | head -n1)
docker exec "$c" env | grep -qx CCCI_OVERLAY=applied
docker exec "$c" env | grep -qx FROM_APP_ENV=set-by-meta
echo overlay and APP_ENV applied
"#,
    );
    setup.write_hook(
        "hello",
        "tests/30-junit.sh",
        r#"#!/bin/sh
cat > "$CCCI_JUNIT_FILE" <<XML
<?xml version="1.0"?>
<testsuite name="x" tests="2"><testcase name="ok"/><testcase name="bad"><failure message="nope"/></testcase></testsuite>
XML
exit 0
"#,
    );
    let out = setup.run(&["hello"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_eq!(r["level"], 4, "{}", out.describe());
    let custom = tier(&r, "custom");
    assert_eq!(custom["status"], "failed");
    assert_eq!(custom["cause"], "recipe");
    assert!(
        custom["reason"]
            .as_str()
            .unwrap()
            .contains("ci/30-junit.sh"),
        "{custom}"
    );
    let junit = std::fs::read_to_string(out.run_dir().join("junit.xml")).unwrap();
    assert!(junit.contains("name=\"ci/20-overlay.sh\""), "{junit}");
    assert_eq!(
        junit.matches("<failure").count(),
        2,
        "the custom tier and ci/30-junit.sh: {junit}"
    );
    let log = std::fs::read_to_string(out.run_dir().join("run.log")).unwrap();
    assert!(log.contains("overlay and APP_ENV applied"), "{log}");
    assert_nothing_left(&setup.stack("hello"));
}

#[test]
fn lock_timeout_names_the_holder_and_the_knob() {
    let setup = Setup::with_runner("t-locktimeout", "lock_timeout_s = 1");
    let locks = setup.dir.path().join("run/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let path = locks.join("hello.t-locktimeout.localhost.lock");
    let mut held = std::fs::File::create(&path).unwrap();
    held.lock().unwrap();
    use std::io::Write;
    writeln!(held, "other-run 1").unwrap();
    let out = setup.run(&["hello"]);
    assert_error(
        &out,
        &["timed out", "held by run other-run", "lock_timeout_s"],
    );
    assert_nothing_left(&setup.stack("hello"));
}

/// An image that is not on the host (and cannot be pulled) is the host's problem,
/// not the recipe's: cause `infrastructure`, with the task error in the diagnostics.
#[test]
fn a_missing_image_is_an_infrastructure_failure() {
    let setup = Setup::new("t-noimage");
    let repo = recipe_copy("hello", setup.dir.path());
    let compose = std::fs::read_to_string(repo.join("compose.yml")).unwrap();
    std::fs::write(
        repo.join("compose.yml"),
        compose.replace("ccci-example/hello:head", "ccci-example/hello:not-built"),
    )
    .unwrap();
    commit_all(&repo, "an image that does not exist");
    let out = setup.run(&[repo.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    let install = tier(&r, "install");
    assert_eq!(install["status"], "failed");
    assert_eq!(install["cause"], "infrastructure", "{install}");
    let diag = std::fs::read_to_string(out.run_dir().join("diagnostics/install.txt")).unwrap();
    assert!(diag.to_lowercase().contains("no such image"), "{diag}");
    assert_nothing_left(&setup.stack("hello"));
}

/// A closed stderr (journald restarted, `| head` gone) must not stop a run: with
/// eprintln! the runner would panic mid-teardown and leave the app on the swarm.
#[test]
fn a_closed_stderr_does_not_stop_the_run_or_its_teardown() {
    let setup = Setup::new("t-epipe");
    let mut child = setup
        .command(&["no-backup"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reader goes away at once
    let out = RunOutput::from(child.wait_with_output().unwrap());
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert_eq!(out.results()["level"], 2, "{}", out.describe());
    assert_nothing_left(&setup.stack("no-backup"));
}

/// The gateway's network every Co-op Cloud server has; the host setup creates it
/// (`ccci_ensure_swarm`). Created here too if missing (idempotent), never removed.
fn ensure_proxy_network() {
    let present = std::process::Command::new("docker")
        .args(["network", "inspect", "proxy", "--format", "{{.Scope}}"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&present.stdout).trim() == "swarm" {
        return;
    }
    let out = std::process::Command::new("docker")
        .args([
            "network",
            "create",
            "--driver",
            "overlay",
            "--attachable",
            "proxy",
        ])
        .output()
        .unwrap();
    let again = std::process::Command::new("docker")
        .args(["network", "inspect", "proxy", "--format", "{{.Scope}}"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "swarm",
        "cannot create the overlay network proxy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_log(out: &RunOutput) -> String {
    std::fs::read_to_string(out.run_dir().join("run.log")).unwrap()
}

fn assert_logged(log: &str, lines: &[&str]) {
    for line in lines {
        assert!(log.contains(line), "run.log lacks {line:?}:\n{log}");
    }
}

/// A recipe with a database in the shapes published recipes use: compose files
/// switched on with `COMPOSE_FILE="$COMPOSE_FILE:…"`, merge keys, an internal network,
/// a dump file written by a backup pre-hook; the data checks run the CI side's
/// commands in the database, so a row proves the upgrade, backup and restore.
#[test]
fn guestbook_with_its_database_climbs_to_level_5() {
    let setup = Setup::new("t-guestbook");
    let out = setup.run(&["guestbook"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_schema_valid(&r);
    assert_eq!(r["level"], 5, "{}", out.describe());
    assert_eq!(r["deploys"], serde_json::json!({"count": 3, "budget": 3}));
    let log = run_log(&out);
    assert!(
        log.contains("(compose.yml:compose.rowdb.yml:compose.ccci.yml)"),
        "every compose file of COMPOSE_FILE, the overlay last: {log}"
    );
    assert_logged(
        &log,
        &[
            "data checks use the data DATA_READ_CMD reads in service db",
            "running backupbot.backup.pre-hook in ",
            "backing up guestbook_t-guestbook_localhost_db: /var/lib/rowdb/backup.sql",
            "rowdb: restored ",
            "data written at the base version survived the upgrade",
            "data changed after the backup is back to the backed-up state",
            "PASS: a wrong password is denied",
        ],
    );
    assert_eq!(r["invariants"]["clean_teardown"], true);
    assert_nothing_left(&setup.stack("guestbook"));
}

/// Without the operator's probe commands a dump file cannot prove that data survives:
/// the data checks are skipped with the reason, never passed, never the recipe's fault.
#[test]
fn a_database_without_probe_commands_skips_its_data_checks_with_the_reason() {
    let setup = Setup::new("t-gbnoprobe");
    std::fs::write(
        setup.ci_dir("guestbook").join("meta.toml"),
        "CONVERGE_TIMEOUT_S = 90\n",
    )
    .unwrap();
    let out = setup.run(&["guestbook"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_eq!(r["level"], 3, "{}", out.describe());
    assert_eq!(r["cause"], Value::Null, "{}", out.describe());
    let restore = tier(&r, "restore");
    assert_eq!(restore["status"], "skipped");
    let reason = restore["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "the backed-up path /var/lib/rowdb/backup.sql of service db \
             (backupbot.backup.volumes.rowdb.path)"
        ),
        "{reason}"
    );
    assert!(reason.contains("pre-hook \"rowdb dump\""), "{reason}");
    assert!(
        reason.contains("DATA_WRITE_CMD and DATA_READ_CMD"),
        "{reason}"
    );
    assert!(!run_log(&out).contains(".ccci-marker"));
    assert_nothing_left(&setup.stack("guestbook"));
}

/// The real shape (external `proxy` network, traefik labels, a golang-templated config
/// versioned by abra.sh, an external versioned secret, backupbot labels, annotated
/// `<semver>+<upstream>` tags).
#[test]
fn website_in_the_shape_of_real_recipes_climbs_to_level_5() {
    ensure_proxy_network();
    let setup = Setup::new("t-website");
    let out = setup.run(&["website"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_schema_valid(&r);
    assert_eq!(r["level"], 5, "{}", out.describe());
    assert_eq!(r["upgrade_base"], "1.1.0+2.5.0");
    let log = run_log(&out);
    assert_logged(
        &log,
        &[
            "Creating config website_t-website_localhost_site_page_v2",
            "the compose files use variables the app's env does not set (empty): EXTRA_DOMAINS",
            "PASS: the template was rendered for this app",
            "PASS: on the proxy network",
        ],
    );
    assert_eq!(r["invariants"]["clean_teardown"], true);
    assert_nothing_left(&setup.stack("website"));
}

/// A network the host lacks is the host's fault: named with the command that creates
/// it, nothing deployed; a local-scoped one is named too.
#[test]
fn a_missing_external_network_is_the_hosts_fault_and_nothing_is_deployed() {
    let setup = Setup::new("t-nonet");
    let repo = recipe_copy("website", setup.dir.path());
    let compose = std::fs::read_to_string(repo.join("compose.yml")).unwrap();
    let missing = format!("ccci-t-nonet-{}", std::process::id());
    let changed = compose.replace(
        "  proxy:\n    external: true\n",
        &format!("  proxy:\n    external: true\n    name: {missing}\n"),
    );
    assert_ne!(compose, changed);
    std::fs::write(repo.join("compose.yml"), changed).unwrap();
    commit_all(&repo, "a network no host has");
    let out = setup.run(&[repo.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_eq!(r["level"], 0);
    let install = tier(&r, "install");
    assert_eq!(install["status"], "failed");
    assert_eq!(install["cause"], "infrastructure", "{install}");
    let reason = install["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "nothing deployed: the host has no network \"{missing}\""
        )),
        "{reason}"
    );
    assert!(
        reason.contains(&format!(
            "docker network create --driver overlay --attachable {missing}"
        )),
        "{reason}"
    );
    assert_eq!(r["deploys"], serde_json::json!({"count": 0, "budget": 0}));
    assert!(!run_log(&out).contains("docker stack deploy"));
    assert_nothing_left(&setup.stack("website"));

    // A local network of that name is no better: a swarm stack cannot join it.
    let local = std::process::Command::new("docker")
        .args(["network", "create", "--driver", "bridge", &missing])
        .output()
        .unwrap();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    let out = setup.run(&[repo.to_str().unwrap()]);
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", &missing])
        .output();
    let r = out.results();
    let install = tier(&r, "install");
    assert_eq!(install["cause"], "infrastructure", "{install}");
    assert!(
        install["reason"]
            .as_str()
            .unwrap()
            .contains("exists but is local-scoped (driver bridge)"),
        "{install}"
    );
    assert_nothing_left(&setup.stack("website"));
}

/// An env file cc-ci (and so its abra double) cannot read is cc-ci's failure, said as
/// such, before anything is deployed.
#[test]
fn an_env_file_cc_ci_cannot_read_is_a_harness_failure_and_nothing_is_deployed() {
    let setup = Setup::new("t-badenv");
    let repo = recipe_copy("hello", setup.dir.path());
    let sample = std::fs::read_to_string(repo.join(".env.sample")).unwrap();
    std::fs::write(
        repo.join(".env.sample"),
        format!("{sample}GREETING=\"never closed\n"),
    )
    .unwrap();
    commit_all(&repo, "an unterminated quote");
    let out = setup.run(&[repo.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    let install = tier(&r, "install");
    assert_eq!(install["status"], "failed");
    assert_eq!(install["cause"], "harness", "{install}");
    let reason = install["reason"].as_str().unwrap();
    assert!(
        reason.contains("cc-ci could not read the app's env file as abra reads it"),
        "{reason}"
    );
    assert!(reason.contains("unterminated quoted value"), "{reason}");
    assert_eq!(r["deploys"]["count"], 0);
    assert_nothing_left(&setup.stack("hello"));
}
