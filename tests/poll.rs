//! Integration tests of the poller against the Gitea test double (127.0.0.1 only):
//! triggers, authorization, exactly-once, launch, reporting, webhook, systemd
//! notify, SIGTERM, and every fault the issue lists.
mod support;

use ccci::config::Config;
use ccci::poll::service::Poller;
use ccci::request::RunRequest;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use support::gitea_double::{FaultKind, GiteaDouble};

const TOKEN: &str = "tok-0123456789abcdef";
const BOT: &str = "cc-ci-bot";
const SHA: &str = "3f9a1c0000000000000000000000000000000001";

struct Setup {
    dir: tempfile::TempDir,
    gitea: GiteaDouble,
    config: PathBuf,
}

impl Setup {
    fn new(repos: &[&str], extra: &str) -> Setup {
        Self::with_url(repos, extra, None)
    }

    /// A setup whose `[poll]` has `discovery = "<mode>"` (merged into `extra`'s `[poll]`).
    fn in_mode(mode: &str, repos: &[&str], extra: &str) -> Setup {
        Self::new(repos, &with_discovery(mode, extra))
    }

    fn with_url(repos: &[&str], extra: &str, url: Option<&str>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let gitea = GiteaDouble::start(TOKEN, BOT);
        gitea.add_member("coop-cloud", "alice");
        for r in repos {
            gitea.add_repo(r);
        }
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        let d = dir.path().display();
        let mut toml = format!(
            r#"[gitea]
url = "{url}"
token_file = "{d}/token"
bot_user = "{BOT}"
timeout_s = 2

[trigger]
org = "coop-cloud"
allow = ["friend"]

[launch]
kind = "command"
command = ["/bin/sh", "-c", "echo \"$0\" >> {d}/launched"]

[state]
dir = "{d}/state"

[report]
base_url = "https://ci.example.org/runs"

{extra}
"#,
            url = url.unwrap_or(&gitea.url),
        );
        for r in repos {
            let recipe = r.rsplit('/').next().unwrap();
            toml.push_str(&format!(
                "[[repos]]\nrepo = \"{r}\"\nrecipe = \"{recipe}\"\n\n"
            ));
        }
        let config = dir.path().join("cc-ci.toml");
        std::fs::write(&config, toml).unwrap();
        Setup { dir, gitea, config }
    }

    fn poller(&self) -> Poller {
        let cfg = Config::load(&self.config).unwrap();
        Poller::new(cfg, Arc::new(AtomicBool::new(false))).unwrap()
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn requests(&self) -> Vec<RunRequest> {
        let dir = self.state().join("requests");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return vec![];
        };
        let mut v: Vec<RunRequest> = rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| RunRequest::load(&p).unwrap())
            .collect();
        v.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        v
    }

    /// Lines the launch command appended (request paths), after the children ran.
    fn launched(&self, expect: usize) -> Vec<String> {
        let path = self.dir.path().join("launched");
        wait_for(|| read_lines(&path).len() >= expect, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(100));
        read_lines(&path)
    }

    fn run_dir(&self, run_id: &str) -> PathBuf {
        let d = self.state().join("runs").join(run_id);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn bin(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cc-ci"));
        c.arg("poll").arg("--config").arg(&self.config);
        c.env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("LISTEN_FDS");
        c
    }
}

/// `extra` config lines with `discovery = "<mode>"` in their `[poll]` table.
fn with_discovery(mode: &str, extra: &str) -> String {
    let line = format!("discovery = \"{mode}\"\n");
    if extra.contains("[poll]\n") {
        extra.replacen("[poll]\n", &format!("[poll]\n{line}"), 1)
    } else {
        format!("[poll]\n{line}\n{extra}")
    }
}

/// A test run once per discovery mode, as `<name>::per_repo`, `<name>::search` and
/// `<name>::notifications`: what it asserts holds whichever way comments are found.
macro_rules! in_every_mode {
    (fn $name:ident($mode:ident) $body:block) => {
        mod $name {
            use super::*;

            fn run($mode: &str) $body

            #[test]
            fn per_repo() {
                run("per-repo")
            }

            #[test]
            fn search() {
                run("search")
            }

            #[test]
            fn notifications() {
                run("notifications")
            }
        }
    };
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_for(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn results(
    status: &str,
    level: u8,
    cause: Option<&str>,
    tiers: &[(&str, &str, Option<&str>)],
) -> String {
    let tiers: Vec<serde_json::Value> = tiers
        .iter()
        .map(|(n, s, c)| serde_json::json!({"name": n, "status": s, "started_at": null, "duration_s": 1.5, "cause": c, "reason": null}))
        .collect();
    serde_json::json!({
        "schema_version": 1, "run_id": "x", "recipe": "ghost", "ref": "refs/pull/7/head", "sha": SHA, "pr": 7,
        "app_domain": "ghost.ci.example.org", "upgrade_base": "1.0.0+1.0", "leaks": [],
        "status": status, "level": level, "cause": cause, "error": null,
        "started_at": "2026-11-25T12:00:00Z", "finished_at": null, "tiers": tiers,
        "deploys": {"count": 1, "budget": 1},
        "invariants": {"clean_teardown": true, "no_secret_leak": true, "deploy_budget_ok": true}
    })
    .to_string()
}

// ---------------------------------------------------------------- triggers

in_every_mode!(fn member_trigger_starts_exactly_one_run_and_reports_pending(mode) {
    let s = Setup::in_mode(mode, &["recipe-maintainers/ghost"], "");
    s.gitea.add_pull("recipe-maintainers/ghost", 7, SHA);
    let id = s.gitea.comment(
        "recipe-maintainers/ghost",
        7,
        "alice",
        "looks good\n!testme\n",
    );
    let mut p = s.poller();
    let stats = p.cycle();
    assert_eq!(stats.triggers, 1);

    let reqs = s.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.repo, "recipe-maintainers/ghost");
    assert_eq!(r.recipe, "ghost");
    assert_eq!(r.pr, Some(7));
    assert_eq!(r.sha, SHA);
    assert_eq!(r.git_ref, "refs/pull/7/head");
    assert_eq!(
        r.clone_url,
        format!("{}/recipe-maintainers/ghost.git", s.gitea.url)
    );
    assert_eq!(r.comment_id, Some(id));
    assert_eq!(r.requested_by, "alice");
    assert!(ccci::runid::is_valid(&r.run_id));

    let launched = s.launched(1);
    assert_eq!(
        launched,
        vec![
            s.state()
                .join("requests")
                .join(format!("{}.json", r.run_id))
                .display()
                .to_string()
        ]
    );

    let st = s.gitea.statuses();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].state, "pending");
    assert_eq!(st[0].sha, SHA);
    assert_eq!(st[0].context, "cc-ci");
    assert_eq!(
        st[0].target_url,
        format!("https://ci.example.org/runs/{}/", r.run_id)
    );
    let bot = s.gitea.comments_by("recipe-maintainers/ghost", BOT);
    assert_eq!(bot.len(), 1, "one PR comment per run");
    assert!(bot[0].body.contains(&r.run_id));

    // Later cycles and a restart: nothing new.
    p.cycle();
    p.cycle();
    drop(p);
    let mut p = s.poller();
    p.cycle();
    assert_eq!(s.requests().len(), 1);
    assert_eq!(s.launched(1).len(), 1);
    assert_eq!(
        s.gitea.comments_by("recipe-maintainers/ghost", BOT).len(),
        1
    );
    assert_eq!(s.gitea.statuses().len(), 1);
});

in_every_mode!(fn second_trigger_on_same_pr_queues_and_says_so(mode) {
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "");
    s.gitea.add_pull(repo, 7, SHA);
    s.gitea.comment(repo, 7, "alice", "!testme");
    let mut p = s.poller();
    p.cycle();
    s.gitea.comment(repo, 7, "alice", "!testme");
    p.cycle();
    let mut reqs = s.requests();
    reqs.sort_by_key(|r| r.comment_id);
    assert_eq!(
        reqs.len(),
        2,
        "each comment is its own run; the runner's lock serializes them"
    );
    let bot = s.gitea.comments_by(repo, BOT);
    assert_eq!(bot.len(), 2);
    assert!(
        bot[1]
            .body
            .contains(&format!("queued behind run `{}`", reqs[0].run_id)),
        "{}",
        bot[1].body
    );
});

in_every_mode!(fn failing_pr_lookup_does_not_block_other_triggers_and_is_retried(mode) {
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "");
    s.gitea.add_pull(repo, 1, SHA);
    s.gitea.add_pull(repo, 2, SHA);
    s.gitea.comment(repo, 1, "alice", "!testme");
    s.gitea.comment(repo, 2, "alice", "!testme");
    s.gitea
        .fault("/repos/o/r/pulls/1", FaultKind::Status(500), 1);
    let mut p = s.poller();
    p.cycle();
    assert_eq!(
        s.requests().iter().map(|r| r.pr).collect::<Vec<_>>(),
        vec![Some(2)]
    );
    p.cycle();
    assert_eq!(s.requests().len(), 2);
});

#[test]
fn non_triggers_do_not_start_runs() {
    let repo = "o/r";
    let s = Setup::in_mode("per-repo", &[repo], "");
    s.gitea.add_pull(repo, 1, SHA);
    s.gitea.comment_at(
        repo,
        2,
        false,
        "alice",
        "!testme",
        support::gitea_double::now_secs(),
    ); // an issue
    s.gitea.comment(repo, 1, "alice", "> !testme\nquoted");
    s.gitea.comment(repo, 1, "alice", "```\n!testme\n```");
    s.gitea.comment(repo, 1, "alice", "please !testme");
    s.gitea.comment(repo, 1, BOT, "!testme");
    let mut p = s.poller();
    assert_eq!(p.cycle().triggers, 0);
    assert!(s.requests().is_empty());
    assert!(s.gitea.statuses().is_empty());
    // No PR was even looked at, no membership asked.
    assert!(
        s.gitea.log().iter().all(|l| l.contains("/issues/comments")),
        "{:?}",
        s.gitea.log()
    );
}

in_every_mode!(fn old_comments_before_enrollment_lookback_are_ignored(mode) {
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "[poll]\nlookback_s = 60\n");
    s.gitea.add_pull(repo, 1, SHA);
    let old = support::gitea_double::now_secs() - chrono::Duration::hours(2);
    s.gitea.comment_at(repo, 1, true, "alice", "!testme", old);
    s.poller().cycle();
    assert!(s.requests().is_empty());
});

in_every_mode!(fn unauthorized_trigger_gets_one_reply_and_no_run(mode) {
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "");
    s.gitea.add_pull(repo, 3, SHA);
    let id = s.gitea.comment(repo, 3, "mallory", "!testme");
    let mut p = s.poller();
    p.cycle();
    p.cycle();
    drop(p);
    s.poller().cycle();
    assert!(s.requests().is_empty());
    assert!(s.gitea.statuses().is_empty());
    let replies = s.gitea.comments_by(repo, BOT);
    assert_eq!(replies.len(), 1, "exactly one reply");
    assert!(replies[0].body.contains("@mallory"));
    assert!(replies[0].body.contains(&format!("refused={id}")));
    assert_eq!(replies[0].pr, Some(3));
});

in_every_mode!(fn allowlisted_non_member_may_trigger(mode) {
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "");
    s.gitea.add_pull(repo, 3, SHA);
    s.gitea.comment(repo, 3, "Friend", "!testme");
    s.poller().cycle();
    assert_eq!(s.requests().len(), 1);
    assert_eq!(s.requests()[0].requested_by, "Friend");
});

in_every_mode!(fn bot_outside_org_sees_303_and_denies(mode) {
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "");
    s.gitea.state.lock().unwrap().bot_in_org = false;
    s.gitea.add_pull(repo, 3, SHA);
    s.gitea.comment(repo, 3, "alice", "!testme");
    s.poller().cycle();
    assert!(
        s.requests().is_empty(),
        "303 is not membership and is not followed"
    );
    assert!(!s.gitea.log().iter().any(|l| l.contains("public_members")));
});

in_every_mode!(fn pages_through_all_comments_with_explicit_page_and_limit(mode) {
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "");
    s.gitea.add_pull(repo, 1, SHA);
    for i in 0..120 {
        s.gitea.comment(repo, 1, "bob", &format!("chatter {i}"));
    }
    s.gitea.comment(repo, 1, "alice", "!testme");
    let mut p = s.poller();
    let stats = p.cycle();
    assert_eq!(stats.triggers, 1);
    let lists: Vec<String> = s
        .gitea
        .log()
        .into_iter()
        .filter(|l| l.contains("/issues/comments"))
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    for (i, l) in lists.iter().enumerate() {
        assert!(
            l.contains(&format!("page={}", i + 1))
                && l.contains("limit=50")
                && l.contains("since="),
            "{l}"
        );
    }
    assert_eq!(s.requests().len(), 1);
});

in_every_mode!(fn pages_shorter_than_asked_for_are_not_taken_for_the_last(mode) {
    // An instance with `[api] MAX_RESPONSE_ITEMS = 20` answers `limit=50` with 20 items.
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "");
    s.gitea.state.lock().unwrap().max_response_items = 20;
    s.gitea.add_pull(repo, 1, SHA);
    for i in 0..45 {
        s.gitea.comment(repo, 1, "bob", &format!("chatter {i}"));
    }
    s.gitea.comment(repo, 1, "alice", "!testme");
    let mut p = s.poller();
    let stats = p.cycle();
    assert_eq!(stats.triggers, 1, "{:?}", s.gitea.log());
    let lists = s
        .gitea
        .log()
        .into_iter()
        .filter(|l| l.contains("/issues/comments?"))
        .count();
    assert_eq!(lists, 3, "46 comments at 20 a page: {:?}", s.gitea.log());
    assert_eq!(s.requests().len(), 1);
});

#[test]
fn idle_cycle_costs_one_request_per_repo_and_resumes_from_cursor() {
    let repos = ["o/a", "o/b", "o/c"];
    let s = Setup::in_mode("per-repo", &repos, "");
    for r in repos {
        s.gitea.add_pull(r, 1, SHA);
        s.gitea.comment(r, 1, "bob", "hello");
    }
    let mut p = s.poller();
    p.cycle();
    let before = s.gitea.requests();
    let stats = p.cycle();
    assert_eq!(s.gitea.requests() - before, 3);
    assert_eq!(stats.requests, 3);
    // The cursor is the newest comment's updated time, persisted across restarts.
    let cursors: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state().join("poller/cursors.json")).unwrap())
            .unwrap();
    assert!(cursors["o/a"].as_str().unwrap().ends_with('Z'));
    // A comment arriving later is seen.
    s.gitea.comment("o/b", 1, "alice", "!testme");
    assert_eq!(p.cycle().triggers, 1);
    assert_eq!(s.requests()[0].repo, "o/b");
}

#[test]
fn search_discovery_costs_one_request_when_idle_and_misses_nothing() {
    let repos = ["o/a", "o/b", "o/c", "o/d"];
    let s = Setup::new(&repos, "[poll]\ndiscovery = \"search\"\nsweep_every = 3\n");
    for r in repos {
        s.gitea.add_pull(r, 1, SHA);
    }
    let old = support::gitea_double::now_secs() - chrono::Duration::hours(1);
    let edited = s.gitea.comment_at("o/d", 1, true, "alice", "draft", old);
    // Make the PRs look old (as if untouched for an hour).
    for r in repos {
        s.gitea
            .state
            .lock()
            .unwrap()
            .repos
            .get_mut(r)
            .unwrap()
            .pulls
            .get_mut(&1)
            .unwrap()
            .updated = old;
    }
    let mut p = s.poller();
    assert_eq!(p.cycle().requests, 4, "cycle 0 is a sweep");
    let idle = p.cycle();
    assert_eq!(
        idle.requests,
        1,
        "an idle search cycle is one request: {:?}",
        s.gitea.log()
    );
    // A new comment bumps its PR: found by the next search, only o/c is listed.
    s.gitea.comment("o/c", 1, "alice", "!testme");
    let n = s.gitea.requests();
    let found = p.cycle();
    assert_eq!(found.triggers, 1);
    let log = s.gitea.log();
    let listed: Vec<&String> = log[n..]
        .iter()
        .filter(|l| l.contains("/issues/comments"))
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].contains("/repos/o/c/"));
    // An edit does not bump the PR: the search misses it, the sweep (cycle 3) finds it.
    {
        let mut st = s.gitea.state.lock().unwrap();
        let c = st
            .repos
            .get_mut("o/d")
            .unwrap()
            .comments
            .iter_mut()
            .find(|c| c.id == edited)
            .unwrap();
        c.body = "!testme".into();
        c.updated = support::gitea_double::now_secs();
    }
    let swept = p.cycle();
    assert_eq!(swept.triggers, 1, "the sweep lists every repo");
    assert_eq!(s.requests().len(), 2);
    let idle = p.cycle();
    assert!(
        idle.requests <= 3,
        "search plus the recently bumped repos: {}",
        idle.requests
    );
}

#[test]
fn search_failure_falls_back_to_listing_every_repo() {
    let s = Setup::new(&["o/a", "o/b"], "[poll]\ndiscovery = \"search\"\n");
    s.gitea.add_pull("o/b", 1, SHA);
    let mut p = s.poller();
    p.cycle();
    s.gitea
        .fault("/repos/issues/search", FaultKind::Status(500), 1);
    s.gitea.comment("o/b", 1, "alice", "!testme");
    let stats = p.cycle();
    // search (failed) + 2 listings + membership + PR + status + PR comment
    assert_eq!(stats.requests, 1 + 2 + 1 + 1 + 2, "{:?}", s.gitea.log());
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn edited_comment_that_now_triggers_is_seen() {
    let repo = "o/r";
    let s = Setup::in_mode("per-repo", &[repo], "");
    s.gitea.add_pull(repo, 1, SHA);
    let id = s.gitea.comment(repo, 1, "alice", "draft");
    let mut p = s.poller();
    p.cycle();
    std::thread::sleep(Duration::from_millis(1100));
    {
        let mut st = s.gitea.state.lock().unwrap();
        let c = st
            .repos
            .get_mut(repo)
            .unwrap()
            .comments
            .iter_mut()
            .find(|c| c.id == id)
            .unwrap();
        c.body = "!testme".into();
        c.updated = support::gitea_double::now_secs();
    }
    p.cycle();
    assert_eq!(s.requests().len(), 1);
}

// ---------------------------------------------------------------- notifications discovery

/// Requests the double received from index `from` on.
fn log_from(s: &Setup, from: usize) -> Vec<String> {
    s.gitea.log()[from..].to_vec()
}

/// The bot's notification threads on pull request `pr` of `repo`.
fn bot_threads(s: &Setup, repo: &str, pr: u64) -> Vec<support::gitea_double::StoredThread> {
    s.gitea
        .threads()
        .into_iter()
        .filter(|t| t.repo == repo && t.issue == pr)
        .collect()
}

/// Make the pull requests of `repos` look untouched for an hour (the issue search
/// names nothing).
fn age_pulls(s: &Setup, repos: &[&str]) {
    let old = support::gitea_double::now_secs() - chrono::Duration::hours(1);
    let mut st = s.gitea.state.lock().unwrap();
    for r in repos {
        for p in st.repos.get_mut(*r).unwrap().pulls.values_mut() {
            p.updated = old;
        }
    }
}

#[test]
fn notifications_idle_cycle_is_one_request_and_a_thread_names_the_repo_to_list() {
    let repos = ["o/a", "o/b", "o/c"];
    let s = Setup::in_mode("notifications", &repos, "[poll]\nsearch_every = 100\n");
    for r in repos {
        s.gitea.add_pull(r, 1, SHA);
        s.gitea.comment(r, 1, "bob", "hello");
    }
    let mut p = s.poller();
    p.cycle();
    let watched = s.gitea.state.lock().unwrap().watchers.clone();
    for r in repos {
        assert!(
            watched.contains(&(BOT.to_string(), r.to_string())),
            "{r} watched"
        );
    }
    let from = s.gitea.requests();
    let idle = p.cycle();
    let log = log_from(&s, from);
    assert_eq!(idle.requests, 1, "{log:?}");
    assert!(
        log[0].starts_with("GET /api/v1/notifications?all=true&limit=50&page=1&since=")
            && log[0].ends_with("&subject-type=pull"),
        "{log:?}"
    );

    let id = s.gitea.comment("o/b", 1, "alice", "!testme");
    let from = s.gitea.requests();
    assert_eq!(p.cycle().triggers, 1);
    let listed: Vec<String> = log_from(&s, from)
        .into_iter()
        .filter(|l| l.contains("/issues/comments?"))
        .collect();
    assert_eq!(listed.len(), 1, "only the repo of the thread: {listed:?}");
    assert!(listed[0].contains("/repos/o/b/"), "{listed:?}");
    assert_eq!(s.requests()[0].comment_id, Some(id));
    // The bot's own run comment on that pull request notified everyone but the bot.
    let threads = bot_threads(&s, "o/b", 1);
    assert_eq!(threads.len(), 1);
    let first = threads[0].updated;

    // One thread per (user, pull request): a second comment moves it.
    std::thread::sleep(Duration::from_millis(1100));
    let id2 = s.gitea.comment("o/b", 1, "alice", "!testme");
    assert_eq!(p.cycle().triggers, 1);
    let threads = bot_threads(&s, "o/b", 1);
    assert_eq!(threads.len(), 1, "still one thread");
    assert!(threads[0].updated > first, "its updated_at moved");
    assert!(s.requests().iter().any(|r| r.comment_id == Some(id2)));

    // Read again, the thread names nothing new: back to one request a cycle (a thread
    // stamped in the second of a read is looked at once more, then remembered).
    std::thread::sleep(Duration::from_millis(1100));
    p.cycle();
    assert_eq!(p.cycle().requests, 1, "{:?}", s.gitea.log());
    assert_eq!(s.requests().len(), 2);
}

#[test]
fn work_in_progress_pull_requests_are_found_by_the_search_then_subscribed_to() {
    let repo = "o/r";
    let s = Setup::in_mode("notifications", &[repo], "[poll]\nsearch_every = 3\n");
    // Opened before the bot watched, titled work in progress.
    s.gitea
        .add_pull_by(repo, 5, SHA, "carol", "WIP: next version");
    let mut p = s.poller();
    p.cycle();
    // A comment on it notifies the watchers not at all (WIP) and the bot is neither
    // subscribed nor a participant: cycles 1 and 2 see nothing.
    s.gitea.comment(repo, 5, "bob", "looks good so far");
    assert_eq!(p.cycle().requests, 1);
    assert_eq!(p.cycle().requests, 1);
    assert!(bot_threads(&s, repo, 5).is_empty());
    // Cycle 3: the issue search names it; the bot subscribes to it.
    p.cycle();
    let subscribe = format!("PUT /api/v1/repos/{repo}/issues/5/subscriptions/{BOT}");
    assert!(s.gitea.log().contains(&subscribe), "{:?}", s.gitea.log());
    // Now a trigger on it reaches the bot as a subscriber: found on the next cycle.
    s.gitea.comment(repo, 5, "alice", "!testme");
    assert_eq!(p.cycle().triggers, 1);
    assert_eq!(s.requests()[0].pr, Some(5));

    // Opened while watched, even as WIP, it notifies the watchers (Gitea's
    // NewPullRequest ignores the title): subscribed at once, its comments found at once.
    s.gitea.add_pull_by(repo, 6, SHA, "carol", "[WIP] more");
    p.cycle();
    s.gitea.comment(repo, 6, "alice", "!testme");
    assert_eq!(p.cycle().triggers, 1);
    let prs: Vec<Option<u64>> = s.requests().iter().map(|r| r.pr).collect();
    assert!(prs.len() == 2 && prs.contains(&Some(6)), "{prs:?}");
    // Each pull request is subscribed to once.
    let log = s.gitea.log();
    for pr in [5, 6] {
        let put = format!("PUT /api/v1/repos/{repo}/issues/{pr}/subscriptions/{BOT}");
        assert_eq!(log.iter().filter(|l| **l == put).count(), 1, "{log:?}");
    }
}

#[test]
fn an_edit_that_makes_a_trigger_is_found_by_the_next_sweep() {
    let repo = "o/r";
    let s = Setup::in_mode(
        "notifications",
        &[repo],
        "[poll]\nsearch_every = 2\nsweep_every = 4\nlookback_s = 7200\n",
    );
    s.gitea.add_pull(repo, 1, SHA);
    let old = support::gitea_double::now_secs() - chrono::Duration::hours(1);
    let id = s.gitea.comment_at(repo, 1, true, "alice", "draft", old);
    age_pulls(&s, &[repo]);
    let mut p = s.poller();
    assert_eq!(p.cycle().triggers, 0);
    // An edit notifies nobody and does not bump the pull request: neither the
    // notifications nor the issue search (cycle 2) name it.
    s.gitea.edit_comment(repo, id, "!testme");
    for cycle in 1..=3 {
        assert_eq!(p.cycle().triggers, 0, "cycle {cycle}");
    }
    assert!(
        s.gitea
            .log()
            .iter()
            .any(|l| l.contains("/repos/issues/search"))
    );
    assert_eq!(p.cycle().triggers, 1, "cycle 4 is a sweep");
    assert_eq!(s.requests()[0].comment_id, Some(id));
}

#[test]
fn a_dropped_notification_is_caught_by_the_issue_search() {
    let repo = "o/r";
    let s = Setup::in_mode("notifications", &[repo], "[poll]\nsearch_every = 3\n");
    s.gitea.add_pull(repo, 1, SHA);
    let mut p = s.poller();
    p.cycle();
    s.gitea.state.lock().unwrap().drop_notifications = 1;
    s.gitea.comment(repo, 1, "alice", "!testme");
    assert!(bot_threads(&s, repo, 1).is_empty(), "the queue dropped it");
    assert_eq!(p.cycle().triggers, 0);
    assert_eq!(p.cycle().triggers, 0);
    assert_eq!(p.cycle().triggers, 1, "cycle 3 searches");
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn a_late_notification_is_seen_once_it_arrives() {
    let repo = "o/r";
    let s = Setup::in_mode("notifications", &[repo], "[poll]\nsearch_every = 100\n");
    s.gitea.state.lock().unwrap().notify_delay = Duration::from_millis(1500);
    s.gitea.add_pull(repo, 1, SHA);
    let mut p = s.poller();
    p.cycle();
    s.gitea.comment(repo, 1, "alice", "!testme");
    let early = p.cycle();
    assert_eq!(
        (early.requests, early.triggers),
        (1, 0),
        "still in gitea's queue"
    );
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(p.cycle().triggers, 1);
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn inline_code_comments_never_trigger() {
    let repo = "o/r";
    let s = Setup::in_mode(
        "notifications",
        &[repo],
        "[poll]\nsearch_every = 2\nsweep_every = 3\n",
    );
    s.gitea.add_pull(repo, 1, SHA);
    let mut p = s.poller();
    p.cycle();
    // A lone inline code comment notifies only whom it mentions, and no listing
    // returns it: whatever finds its pull request, it starts nothing.
    s.gitea.code_comment(repo, 1, "alice", "!testme");
    assert!(bot_threads(&s, repo, 1).is_empty());
    s.gitea
        .code_comment(repo, 1, "alice", "@cc-ci-bot\n!testme");
    assert_eq!(bot_threads(&s, repo, 1).len(), 1, "the mention notifies");
    for _ in 1..=3 {
        assert_eq!(p.cycle().triggers, 0);
    }
    assert!(s.requests().is_empty());
}

#[test]
fn a_repo_not_watched_yet_is_listed_every_cycle_until_it_is() {
    let s = Setup::in_mode(
        "notifications",
        &["o/a", "o/b"],
        "[poll]\nsearch_every = 100\n",
    );
    s.gitea.fault(
        "PUT /api/v1/repos/o/a/subscription",
        FaultKind::Status(502),
        1,
    );
    let mut p = s.poller();
    p.cycle();
    // Watched on the second try, and listed once more for what came before the watch.
    s.gitea.add_pull("o/a", 1, SHA);
    s.gitea.comment("o/a", 1, "alice", "!testme");
    let from = s.gitea.requests();
    let retry = p.cycle();
    let log = log_from(&s, from);
    assert_eq!(retry.triggers, 1, "{log:?}");
    assert_eq!(log[0], "PUT /api/v1/repos/o/a/subscription");
    assert!(
        log.iter()
            .any(|l| l.contains("/repos/o/a/issues/comments?"))
    );
    p.cycle();
    assert_eq!(p.cycle().requests, 1);
}

#[test]
fn failing_notifications_let_the_search_stand_in_and_lose_nothing() {
    let repo = "o/r";
    let s = Setup::in_mode("notifications", &[repo], "[poll]\nsearch_every = 100\n");
    s.gitea.add_pull(repo, 1, SHA);
    let mut p = s.poller();
    p.cycle();
    s.gitea
        .fault("GET /api/v1/notifications", FaultKind::Status(500), 1);
    s.gitea.comment(repo, 1, "alice", "!testme");
    let from = s.gitea.requests();
    assert_eq!(p.cycle().triggers, 1);
    assert!(
        log_from(&s, from)
            .iter()
            .any(|l| l.contains("/repos/issues/search")),
        "the search stood in"
    );
    // The next read starts where the failed one would have: the thread is read once.
    std::thread::sleep(Duration::from_millis(1100));
    p.cycle();
    assert_eq!(p.cycle().requests, 1);
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn a_rate_limited_notifications_read_pauses_all_requests() {
    let s = Setup::in_mode("notifications", &["o/r"], "");
    let mut p = s.poller();
    p.cycle();
    s.gitea
        .fault("GET /api/v1/notifications", FaultKind::RateLimit(120), 1);
    assert_eq!(p.cycle().requests, 1, "stops at the 429");
    assert_eq!(p.cycle().requests, 0, "no requests while Retry-After runs");
}

#[test]
fn notification_threads_are_paged_to_the_end() {
    // An instance with `[api] MAX_RESPONSE_ITEMS = 20`: 45 threads come in 3 pages.
    let repo = "o/r";
    let s = Setup::in_mode("notifications", &[repo], "[poll]\nsearch_every = 100\n");
    s.gitea.state.lock().unwrap().max_response_items = 20;
    for pr in 1..=45 {
        s.gitea.add_pull(repo, pr, SHA);
    }
    let mut p = s.poller();
    p.cycle();
    for pr in 1..=45 {
        s.gitea.comment(repo, pr, "bob", "hello");
    }
    s.gitea.comment(repo, 45, "alice", "!testme");
    let from = s.gitea.requests();
    assert_eq!(p.cycle().triggers, 1);
    let reads: Vec<String> = log_from(&s, from)
        .into_iter()
        .filter(|l| l.starts_with("GET /api/v1/notifications"))
        .collect();
    assert_eq!(reads.len(), 3, "{reads:?}");
    for (i, r) in reads.iter().enumerate() {
        assert!(r.contains(&format!("page={}", i + 1)), "{r}");
    }
    let subscribed = s.gitea.state.lock().unwrap().subscribers.len();
    assert_eq!(subscribed, 45, "every pull request a thread named");
}

/// `[poll]` lines, a token or server fault, and what the log must say.
type Refusal = (
    &'static str,
    fn(&mut support::gitea_double::State),
    &'static str,
);

#[test]
fn refused_notifications_fall_back_to_search_naming_the_fix() {
    let cases: [Refusal; 3] = [
        (
            "token without read:notification",
            |st| {
                st.missing_scopes.insert("read:notification".into());
            },
            "read:notification scope",
        ),
        (
            "server without the notifications API",
            |st| st.notifications_api = false,
            "no notifications API",
        ),
        (
            "bot may not watch",
            |st| {
                st.missing_scopes.insert("write:repository".into());
            },
            "write:repository scope",
        ),
    ];
    for (what, fault, fix) in cases {
        let repo = "o/r";
        let s = Setup::in_mode("notifications", &[repo], "");
        fault(&mut s.gitea.state.lock().unwrap());
        s.gitea.add_pull(repo, 1, SHA);
        s.gitea.comment(repo, 1, "alice", "!testme");
        let out = s.bin().arg("--once").output().unwrap();
        assert!(out.status.success(), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("falling back to discovery = \"search\"") && err.contains(fix),
            "{what}: {err}"
        );
        assert_eq!(s.requests().len(), 1, "{what}: the start sweep still works");
        // Then an idle cycle is one issue search (once the search has named the pull
        // request its comments bumped).
        let mut p = s.poller();
        p.cycle();
        p.cycle();
        std::thread::sleep(Duration::from_millis(1100));
        p.cycle();
        let from = s.gitea.requests();
        assert_eq!(p.cycle().requests, 1, "{what}: {:?}", s.gitea.log());
        assert!(
            log_from(&s, from)[0].starts_with("GET /api/v1/repos/issues/search"),
            "{what}"
        );
    }
}

#[test]
fn a_fallback_shows_in_the_unit_status() {
    let s = Setup::in_mode("notifications", &["o/r"], "[poll]\ninterval_s = 3600\n");
    s.gitea
        .state
        .lock()
        .unwrap()
        .missing_scopes
        .insert("read:notification".into());
    let notify = Notify::new(s.dir.path());
    let mut child = s
        .bin()
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = notify.line_containing("STATUS=", Duration::from_secs(10));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let status = status.expect("a STATUS= line");
    assert!(
        status.contains("discovery: search (notifications unavailable:")
            && status.contains("read:notification"),
        "{status}"
    );
}

#[test]
fn crash_between_request_and_launch_of_a_notified_trigger_launches_exactly_once() {
    let repo = "o/r";
    let s = Setup::in_mode(
        "notifications",
        &[repo],
        "[poll]\ninterval_s = 1\nsearch_every = 100\n",
    );
    s.gitea.add_pull(repo, 1, SHA);
    let mut child = s
        .bin()
        .env("CCCI_POLL_CRASH_AFTER_REQUEST", "1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(
        || s.gitea
            .log()
            .iter()
            .any(|l| l.contains("/issues/comments?")),
        Duration::from_secs(10)
    ));
    // After the start sweep: only the notification can bring this comment in time.
    let id = s.gitea.comment(repo, 1, "alice", "!testme");
    assert!(wait_for(
        || child.try_wait().unwrap().is_some(),
        Duration::from_secs(10)
    ));
    assert!(!child.wait().unwrap().success(), "the fault hook aborts");
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1, "the request was written before the crash");
    assert_eq!(reqs[0].comment_id, Some(id));
    assert!(read_lines(&s.dir.path().join("launched")).is_empty());

    let out = s.bin().arg("--once").output().unwrap();
    assert!(out.status.success());
    let launched = s.launched(1);
    assert_eq!(launched.len(), 1);
    assert!(launched[0].ends_with(&format!("{}.json", reqs[0].run_id)));
    let out = s.bin().arg("--once").output().unwrap();
    assert!(out.status.success());
    assert_eq!(s.launched(1).len(), 1);
    assert_eq!(s.requests().len(), 1);
}

// ---------------------------------------------------------------- exactly once

in_every_mode!(fn crash_between_request_and_launch_launches_exactly_once(mode) {
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "");
    s.gitea.add_pull(repo, 1, SHA);
    let id = s.gitea.comment(repo, 1, "alice", "!testme");
    let out = s
        .bin()
        .arg("--once")
        .env("CCCI_POLL_CRASH_AFTER_REQUEST", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault hook aborts the process");
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1, "the request was written before the crash");
    assert!(
        read_lines(&s.dir.path().join("launched")).is_empty(),
        "not launched before the crash"
    );

    let out = s.bin().arg("--once").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let launched = s.launched(1);
    assert_eq!(launched.len(), 1);
    assert!(launched[0].ends_with(&format!("{}.json", reqs[0].run_id)));
    assert_eq!(s.requests().len(), 1, "no second request for comment {id}");

    let out = s.bin().arg("--once").output().unwrap();
    assert!(out.status.success());
    assert_eq!(s.launched(1).len(), 1);
});

in_every_mode!(fn crash_after_launch_before_bookkeeping_does_not_launch_again(mode) {
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "");
    s.gitea.add_pull(repo, 1, SHA);
    let id = s.gitea.comment(repo, 1, "alice", "!testme");
    // As if: request written, runner started (it made its run dir), poller died.
    let req = RunRequest {
        run_id: "20261125T120301Z-3f9a1c".into(),
        repo: repo.into(),
        recipe: "r".into(),
        pr: Some(1),
        sha: SHA.into(),
        git_ref: "refs/pull/1/head".into(),
        clone_url: "x".into(),
        comment_id: Some(id),
        requested_by: "alice".into(),
        requested_at: "2026-11-25T12:03:01Z".into(),
    };
    std::fs::create_dir_all(s.state().join("requests")).unwrap();
    req.store(&s.state().join("requests")).unwrap();
    s.run_dir(&req.run_id);
    s.poller().cycle();
    assert_eq!(s.requests().len(), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(read_lines(&s.dir.path().join("launched")).is_empty());
    assert_eq!(s.gitea.statuses().len(), 1, "but it is reported");
});

// ---------------------------------------------------------------- reporting

/// `!testme` by a member on PR 7 of `o/r`, one cycle: the run is requested and
/// launched. Returns the setup, the poller, the run id and the run's directory.
fn triggered_run(extra_config: &str) -> (Setup, Poller, String, PathBuf) {
    let s = Setup::new(&["o/r"], extra_config);
    s.gitea.add_pull("o/r", 7, SHA);
    s.gitea.comment("o/r", 7, "alice", "!testme");
    let mut p = s.poller();
    p.cycle();
    let run_id = s.requests()[0].run_id.clone();
    let dir = s.run_dir(&run_id);
    (s, p, run_id, dir)
}

#[test]
fn progress_then_final_report_edits_one_comment() {
    let repo = "o/r";
    let (s, mut p, run_id, dir) = triggered_run("");

    std::fs::write(
        dir.join("results.json"),
        results(
            "running",
            1,
            None,
            &[("install", "passed", None), ("upgrade", "running", None)],
        ),
    )
    .unwrap();
    p.cycle();
    let bot = s.gitea.comments_by(repo, BOT);
    assert_eq!(bot.len(), 1);
    assert!(
        bot[0].body.contains("| install | ✅ passed |"),
        "{}",
        bot[0].body
    );
    assert!(bot[0].body.contains("| upgrade | ⏳ running |"));
    assert_eq!(s.gitea.statuses().last().unwrap().state, "pending");

    std::fs::write(
        dir.join("report.md"),
        "## cc-ci: ghost level 3/5\n\n| tier | result |\n|---|---|\n| install | passed |\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("results.json"),
        results(
            "completed",
            3,
            None,
            &[
                ("install", "passed", None),
                ("upgrade", "passed", None),
                ("backup", "passed", None),
            ],
        ),
    )
    .unwrap();
    p.cycle();
    let bot = s.gitea.comments_by(repo, BOT);
    assert_eq!(bot.len(), 1, "edited in place, never a second comment");
    assert!(
        bot[0].body.starts_with("## cc-ci: ghost level 3/5"),
        "{}",
        bot[0].body
    );
    assert!(
        bot[0]
            .body
            .contains(&format!("https://ci.example.org/runs/{run_id}/badge.svg"))
    );
    let last = s.gitea.statuses().last().unwrap().clone();
    assert_eq!(last.state, "success");
    assert!(
        last.description.contains("level 3/5"),
        "{}",
        last.description
    );
    assert_eq!(
        last.target_url,
        format!("https://ci.example.org/runs/{run_id}/")
    );

    let n = s.gitea.requests();
    p.cycle();
    assert_eq!(
        s.gitea.requests() - n,
        1,
        "a finished run costs nothing more"
    );
}

fn finish_with(
    status: &str,
    cause: Option<&str>,
    tiers: &[(&str, &str, Option<&str>)],
) -> (String, String, String) {
    let repo = "o/r";
    let (s, mut p, _, dir) = triggered_run("");
    std::fs::write(dir.join("report.md"), "report\n").unwrap();
    std::fs::write(dir.join("results.json"), results(status, 1, cause, tiers)).unwrap();
    p.cycle();
    let last = s.gitea.statuses().last().unwrap().clone();
    let body = s.gitea.comments_by(repo, BOT)[0].body.clone();
    (last.state, last.description, body)
}

#[test]
fn recipe_failure_is_failure() {
    let (state, desc, _) = finish_with(
        "completed",
        Some("recipe"),
        &[
            ("install", "passed", None),
            ("upgrade", "failed", Some("recipe")),
        ],
    );
    assert_eq!(state, "failure");
    assert!(desc.contains("level 1/5"));
}

#[test]
fn infrastructure_failure_is_error() {
    let (state, _, _) = finish_with(
        "completed",
        Some("infrastructure"),
        &[("install", "failed", Some("infrastructure"))],
    );
    assert_eq!(state, "error");
}

#[test]
fn cancelled_run_says_so() {
    let (state, desc, body) = finish_with(
        "completed",
        Some("cancelled"),
        &[("install", "passed", None), ("upgrade", "not_run", None)],
    );
    assert_eq!(state, "error");
    assert!(desc.contains("cancelled"), "{desc}");
    assert!(body.contains("cancelled"), "{body}");
}

#[test]
fn runner_that_never_produces_results_is_reported_as_error() {
    let repo = "o/r";
    let s = Setup::new(&[repo], "[poll]\nstart_timeout_s = 2\n");
    s.gitea.add_pull(repo, 7, SHA);
    s.gitea.comment(repo, 7, "alice", "!testme");
    let mut p = s.poller();
    p.cycle();
    s.launched(1);
    assert_eq!(s.gitea.statuses().last().unwrap().state, "pending");
    std::thread::sleep(Duration::from_millis(2300));
    p.cycle();
    let last = s.gitea.statuses().last().unwrap().clone();
    assert_eq!(last.state, "error");
    assert!(
        last.description.contains("did not start"),
        "{}",
        last.description
    );
    let body = &s.gitea.comments_by(repo, BOT)[0].body;
    assert!(body.contains("did not start"), "{body}");
}

#[test]
fn unreadable_results_of_a_gone_runner_are_reported_as_such() {
    let (s, mut p, _, dir) = triggered_run("[poll]\nstart_timeout_s = 2\n");
    std::fs::write(
        dir.join("results.json"),
        "{\"schema_version\": 1, \"status\": \"runn",
    )
    .unwrap();
    p.cycle();
    assert_eq!(s.gitea.statuses().last().unwrap().state, "pending");
    std::thread::sleep(Duration::from_millis(2300));
    p.cycle();
    let last = s.gitea.statuses().last().unwrap().clone();
    assert_eq!(last.state, "error");
    assert!(
        last.description.contains("results.json is unreadable"),
        "{}",
        last.description
    );
}

#[test]
fn launch_that_keeps_failing_is_retried_then_reported_as_error() {
    let repo = "o/r";
    let s = Setup::new(&[repo], "[poll]\nstart_timeout_s = 2\n");
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace(
            "command = [\"/bin/sh\"",
            "command = [\"/nonexistent/runner\"",
        ),
    )
    .unwrap();
    s.gitea.add_pull(repo, 7, SHA);
    s.gitea.comment(repo, 7, "alice", "!testme");
    let mut p = s.poller();
    p.cycle();
    assert_eq!(s.requests().len(), 1, "the request is kept");
    assert_eq!(s.gitea.statuses().last().unwrap().state, "pending");
    std::thread::sleep(Duration::from_millis(2300));
    p.cycle();
    let last = s.gitea.statuses().last().unwrap().clone();
    assert_eq!(last.state, "error");
    assert!(
        last.description.contains("could not be started"),
        "{}",
        last.description
    );
    assert_eq!(s.requests().len(), 1);
}

// ---------------------------------------------------------------- journal

/// A journald to log to: the host's, or, where systemd is not PID 1 (CI), a real
/// `systemd-journald` started for the test; it runs standalone.
fn journald() -> Option<std::process::Child> {
    let socket = Path::new("/run/systemd/journal/socket");
    let up = || {
        std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect(socket))
            .is_ok()
    };
    if up() {
        return None;
    }
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let child = Command::new("/lib/systemd/systemd-journald")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-journald (Debian package systemd; scripts/test installs it)");
    assert!(
        wait_for(up, Duration::from_secs(10)),
        "journald did not start"
    );
    Some(child)
}

/// The journal entries whose field `key` is `value`, as JSON objects.
fn journal_entries(key: &str, value: &str) -> Vec<serde_json::Value> {
    let out = Command::new("journalctl")
        .args(["--no-pager", "-o", "json", &format!("{key}={value}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn under_systemd_the_journal_gets_repo_pr_comment_and_run_id_fields() {
    let journald = journald();
    let repo = "o/journal";
    let s = Setup::new(&[repo], "");
    s.gitea.add_pull(repo, 7, SHA);
    let id = s.gitea.comment(repo, 7, "alice", "!testme");
    // As under systemd: JOURNAL_STREAM says stderr is the journal's.
    let out = s
        .bin()
        .arg("--once")
        .env("JOURNAL_STREAM", "8:1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "logs go to the journal, not stderr");
    let run_id = s.requests()[0].run_id.clone();
    let mut entries = Vec::new();
    wait_for(
        || {
            entries = journal_entries("RUN_ID", &run_id);
            entries.iter().any(|e| e["MESSAGE"] == "runner launched")
        },
        Duration::from_secs(10),
    );
    let launched = entries
        .iter()
        .find(|e| e["MESSAGE"] == "runner launched")
        .unwrap_or_else(|| panic!("no 'runner launched' entry with RUN_ID={run_id}: {entries:?}"));
    assert_eq!(launched["REPO"], repo, "{launched}");
    assert_eq!(launched["PR"], "7", "{launched}");
    assert_eq!(launched["COMMENT_ID"], id.to_string(), "{launched}");
    // tracing-journald maps INFO to 5 (notice), WARN to 4, ERROR to 3.
    assert_eq!(launched["PRIORITY"], "5", "{launched}");
    if let Some(mut j) = journald {
        let _ = j.kill();
        let _ = j.wait();
    }
}

// ---------------------------------------------------------------- launch

#[test]
fn systemd_launch_starts_escaped_template_instance() {
    let repo = "o/r";
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("systemctl");
    let log = dir.path().join("systemctl.log");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&fake)
        .status()
        .unwrap();
    let s = Setup::new(
        &[repo],
        &format!(
            "[launch]\nkind = \"systemd\"\nsystemctl = \"{}\"\n",
            fake.display()
        ),
    );
    // The setup's [launch] comes first; use a config with only the systemd one.
    let text = std::fs::read_to_string(&s.config).unwrap();
    let start = text.find("[launch]\nkind = \"command\"").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    std::fs::write(&s.config, format!("{}{}", &text[..start], &text[end..])).unwrap();
    s.gitea.add_pull(repo, 1, SHA);
    s.gitea.comment(repo, 1, "alice", "!testme");
    s.poller().cycle();
    let run_id = s.requests()[0].run_id.clone();
    let lines = read_lines(&log);
    let escaped = run_id.replace('-', "\\x2d");
    assert_eq!(
        lines[0],
        format!("start --no-block cc-ci-runner@{escaped}.service")
    );
}

// ---------------------------------------------------------------- faults

#[test]
fn gitea_down_is_logged_and_once_exits_zero() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let s = Setup::with_url(&["o/r"], "", Some(&url));
    let out = s.bin().arg("--once").output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach gitea"), "{err}");
    assert!(!err.contains(TOKEN), "the token is never logged");
}

in_every_mode!(fn hanging_gitea_ends_the_cycle_early_and_loses_nothing(mode) {
    let repos: Vec<String> = (0..8).map(|i| format!("o/r{i}")).collect();
    let refs: Vec<&str> = repos.iter().map(String::as_str).collect();
    let s = Setup::in_mode(mode, &refs, "[poll]\nlookback_s = 3600\n");
    s.gitea.add_pull("o/r7", 1, SHA);
    s.gitea.comment("o/r7", 1, "alice", "!testme");
    s.gitea.fault(
        "/issues/comments",
        FaultKind::Delay(Duration::from_secs(3)),
        3,
    );
    let mut p = s.poller();
    let t = Instant::now();
    p.cycle();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "3 timeouts of 2 s, not 8: {:?}",
        t.elapsed()
    );
    assert_eq!(
        s.gitea
            .log()
            .iter()
            .filter(|l| l.contains("/issues/comments"))
            .count(),
        3
    );
    assert!(s.requests().is_empty());
    p.cycle();
    assert_eq!(s.requests().len(), 1, "the next cycle finds the comment");
});

in_every_mode!(fn server_error_on_one_repo_does_not_stop_the_others_and_is_retried(mode) {
    let s = Setup::in_mode(mode, &["o/a", "o/b"], "");
    for r in ["o/a", "o/b"] {
        s.gitea.add_pull(r, 1, SHA);
        s.gitea.comment(r, 1, "alice", "!testme");
    }
    s.gitea
        .fault("/repos/o/a/issues/comments", FaultKind::Status(502), 1);
    let mut p = s.poller();
    p.cycle();
    assert_eq!(
        s.requests()
            .iter()
            .map(|r| r.repo.as_str())
            .collect::<Vec<_>>(),
        vec!["o/b"]
    );
    p.cycle();
    assert_eq!(s.requests().len(), 2);
});

in_every_mode!(fn timeout_is_an_error_for_that_repo_only(mode) {
    let s = Setup::in_mode(mode, &["o/a", "o/b"], "");
    for r in ["o/a", "o/b"] {
        s.gitea.add_pull(r, 1, SHA);
        s.gitea.comment(r, 1, "alice", "!testme");
    }
    s.gitea.fault(
        "/repos/o/a/issues/comments",
        FaultKind::Delay(Duration::from_secs(4)),
        1,
    );
    let mut p = s.poller();
    let t = Instant::now();
    p.cycle();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "timeout_s = 2 bounds the wait"
    );
    assert_eq!(s.requests().len(), 1);
    p.cycle();
    assert_eq!(s.requests().len(), 2);
});

in_every_mode!(fn dropped_connection_and_malformed_json_are_retried_next_cycle(mode) {
    let s = Setup::in_mode(mode, &["o/a", "o/b"], "");
    for r in ["o/a", "o/b"] {
        s.gitea.add_pull(r, 1, SHA);
        s.gitea.comment(r, 1, "alice", "!testme");
    }
    s.gitea
        .fault("/repos/o/a/issues/comments", FaultKind::Malformed, 1);
    s.gitea
        .fault("/repos/o/b/issues/comments", FaultKind::Drop, 1);
    let mut p = s.poller();
    p.cycle();
    assert!(s.requests().is_empty());
    p.cycle();
    assert_eq!(s.requests().len(), 2);
});

in_every_mode!(fn rate_limit_with_short_retry_after_is_waited_out(mode) {
    let s = Setup::in_mode(mode, &["o/a"], "");
    s.gitea.add_pull("o/a", 1, SHA);
    s.gitea.comment("o/a", 1, "alice", "!testme");
    s.gitea
        .fault("/repos/o/a/issues/comments", FaultKind::RateLimit(1), 1);
    let t = Instant::now();
    s.poller().cycle();
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(s.requests().len(), 1);
});

#[test]
fn rate_limit_with_long_retry_after_pauses_all_requests() {
    let s = Setup::in_mode("per-repo", &["o/a", "o/b"], "");
    s.gitea
        .fault("/repos/o/a/issues/comments", FaultKind::RateLimit(120), 1);
    let mut p = s.poller();
    p.cycle();
    assert_eq!(s.gitea.requests(), 1, "stops at the 429");
    let stats = p.cycle();
    assert_eq!(stats.requests, 0, "no requests while Retry-After runs");
    assert_eq!(s.gitea.requests(), 1);
}

in_every_mode!(fn deleted_or_closed_pull_request_starts_nothing(mode) {
    let repo = "o/r";
    let s = Setup::in_mode(mode, &[repo], "");
    s.gitea.add_pull(repo, 1, SHA);
    s.gitea.add_pull(repo, 2, SHA);
    s.gitea.delete_pull(repo, 1);
    s.gitea.set_pull_state(repo, 2, "closed");
    s.gitea.comment(repo, 1, "alice", "!testme");
    s.gitea.comment(repo, 2, "alice", "!testme");
    let mut p = s.poller();
    p.cycle();
    p.cycle();
    assert!(s.requests().is_empty());
    let pulls = s
        .gitea
        .log()
        .iter()
        .filter(|l| l.contains("/pulls/"))
        .count();
    assert_eq!(pulls, 2, "each looked at once, then remembered");
});

in_every_mode!(fn missing_enrolled_repo_is_logged_and_others_work(mode) {
    let s = Setup::in_mode(mode,
        &["o/a"],
        "[[repos]]\nrepo = \"o/gone\"\nrecipe = \"gone\"\n",
    );
    s.gitea.add_pull("o/a", 1, SHA);
    s.gitea.comment("o/a", 1, "alice", "!testme");
    let out = s.bin().arg("--once").output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("o/gone") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(s.requests().len(), 1);
});

in_every_mode!(fn huge_comment_body_is_handled(mode) {
    let s = Setup::in_mode(mode, &["o/a"], "");
    s.gitea.add_pull("o/a", 1, SHA);
    let mut body = "x".repeat(3 * 1024 * 1024);
    body.push_str("\n!testme\n");
    s.gitea.comment("o/a", 1, "alice", &body);
    s.gitea
        .comment("o/a", 1, "bob", &"y".repeat(2 * 1024 * 1024));
    s.poller().cycle();
    assert_eq!(s.requests().len(), 1);
});

#[test]
fn missing_or_empty_token_file_refuses_to_start_naming_it() {
    let s = Setup::new(&["o/a"], "");
    let token = s.dir.path().join("token");
    std::fs::write(&token, "  \n").unwrap();
    let out = s.bin().arg("--once").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&token.display().to_string()) && err.contains("empty"),
        "{err}"
    );
    std::fs::remove_file(&token).unwrap();
    let out = s.bin().arg("--once").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&token.display().to_string()), "{err}");
    assert_eq!(s.gitea.requests(), 0);
}

#[test]
fn unwritable_state_dir_refuses_to_start() {
    let s = Setup::new(&["o/a"], "");
    // A regular file where the state dir should be: not writable even for root.
    std::fs::write(s.state(), "not a dir").unwrap();
    let out = s.bin().arg("--once").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not writable") && err.contains(&s.state().display().to_string()),
        "{err}"
    );
}

#[test]
fn unknown_config_key_is_an_error_with_suggestion() {
    let s = Setup::new(&["o/a"], "");
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("interval_s", "x");
    std::fs::write(
        &s.config,
        text.replace("[report]", "[poll]\nintervall_s = 3\n\n[report]"),
    )
    .unwrap();
    let out = s.bin().arg("--once").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean `interval_s`?"), "{err}");
}

#[test]
fn redirects_are_not_followed_so_the_token_stays_home() {
    let other = GiteaDouble::start("other-token", BOT);
    other.add_repo("o/a");
    let s = Setup::in_mode("per-repo", &["o/a"], "");
    s.gitea.fault(
        "/repos/o/a/issues/comments",
        FaultKind::Redirect(format!("{}/api/v1/repos/o/a/issues/comments", other.url)),
        1,
    );
    let stats = s.poller().cycle();
    assert_eq!(stats.requests, 1);
    assert_eq!(other.requests(), 0, "the redirect was not followed");
    assert!(other.state.lock().unwrap().bad_auth.is_empty());
}

// ---------------------------------------------------------------- service, webhook, systemd

struct Notify {
    sock: std::os::unix::net::UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn new(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notify { sock, path }
    }
    /// The first notification line containing `part` within `timeout`.
    fn line_containing(&self, part: &str, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < timeout {
            if let Ok(n) = self.sock.recv(&mut buf)
                && let Some(line) = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .find(|l| l.contains(part))
            {
                return Some(line.to_string());
            }
        }
        None
    }

    fn wait_for(&self, what: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < timeout {
            if let Ok(n) = self.sock.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == what)
            {
                return true;
            }
        }
        false
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn post(port: u16, event: &str, signature: Option<&str>, body: &str) -> u16 {
    let header = signature
        .map(|sig| format!("X-Gitea-Signature: {sig}\r\n"))
        .unwrap_or_default();
    post_with(port, event, &header, body)
}

/// POST a webhook with `headers` (whole `Name: value\r\n` lines) added.
fn post_with(port: u16, event: &str, headers: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nX-Gitea-Event: {event}\r\nX-Gitea-Event-Type: pull_request_comment\r\nContent-Length: {}\r\n",
        body.len()
    );
    req.push_str(headers);
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn sign(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Wait for the running poller's first cycle to list `repo`, then have alice comment
/// `!testme` on PR 7 (so only a webhook can tell the poller before the next cycle).
fn comment_after_first_cycle(s: &Setup, repo: &str) -> u64 {
    assert!(wait_for(
        || s.gitea.log().iter().any(|l| l.contains("/issues/comments")),
        Duration::from_secs(5)
    ));
    std::thread::sleep(Duration::from_millis(200));
    s.gitea.comment(repo, 7, "alice", "!testme")
}

/// Gitea's `issue_comment` payload for alice's `!testme` comment `id` on PR 7.
fn testme_event(repo: &str, id: u64) -> String {
    serde_json::json!({
        "action": "created",
        "issue": {"number": 7, "pull_request": {"merged": false}},
        "comment": {"id": id, "body": "!testme", "user": {"login": "alice"}},
        "repository": {"full_name": repo},
        "sender": {"login": "alice"},
        "is_pull": true
    })
    .to_string()
}

/// Start `cc-ci poll` (hourly cycles) with the webhook on a free loopback port, secret
/// `hook-secret-value` and `extra` lines in `[webhook]`; returns once READY=1 is sent.
fn start_webhook_poller(s: &Setup, extra: &str) -> (u16, std::process::Child, Notify) {
    let port = free_port();
    let secret_file = s.dir.path().join("hook-secret");
    std::fs::write(&secret_file, "hook-secret-value\n").unwrap();
    let text = std::fs::read_to_string(&s.config).unwrap();
    let (text, poll) = match text.contains("[poll]\n") {
        true => (
            text.replacen("[poll]\n", "[poll]\ninterval_s = 3600\n", 1),
            "",
        ),
        false => (text, "[poll]\ninterval_s = 3600\n\n"),
    };
    std::fs::write(
        &s.config,
        text.replace(
            "[report]",
            &format!("{poll}[webhook]\nlisten = \"127.0.0.1:{port}\"\nsecret_file = \"{}\"\n{extra}\n[report]", secret_file.display()),
        ),
    )
    .unwrap();
    let notify = Notify::new(s.dir.path());
    let child = s
        .bin()
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(10)),
        "READY=1 sent"
    );
    (port, child, notify)
}

#[test]
fn webhook_http_faults_hold_nobody_and_start_nothing() {
    let repo = "o/r";
    let s = Setup::new(&[repo], "");
    s.gitea.add_pull(repo, 7, SHA);
    let (port, mut child, _notify) = start_webhook_poller(&s, "max_body_bytes = 2048\n");
    use std::io::{Read, Write};
    // Drain the poller's log: a full pipe would stall it.
    let mut log = child.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    // A client that sends half a request line and then nothing.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"POST /hook HTT").unwrap();
    // Others are answered meanwhile: a GET, a body over the limit.
    let t = Instant::now();
    let mut get = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    get.write_all(b"GET /hook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    get.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let big = "x".repeat(4096);
    assert_eq!(
        post(
            port,
            "issue_comment",
            Some(&sign("hook-secret-value", &big)),
            &big
        ),
        413
    );
    // A keep-alive client, as Gitea's: it reads the answer by its length.
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    kept.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Requests whose bodies never come hold at most 16 connections; then 503 (the
    // poll still finds the comments), and once they go, requests are served again.
    let stalled: Vec<_> = (0..16)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{")
                .unwrap();
            c
        })
        .collect();
    assert!(
        wait_for(
            || post(port, "issue_comment", None, "{}") == 503,
            Duration::from_secs(5)
        ),
        "the 17th waits for nobody"
    );
    drop(stalled);
    assert!(wait_for(
        || post(port, "issue_comment", None, "{}") == 401,
        Duration::from_secs(5)
    ));
    assert!(s.requests().is_empty());
    drop(slow);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn webhook_checks_signature_and_shares_dedupe_with_poll() {
    let repo = "o/r";
    let s = Setup::in_mode("per-repo", &[repo], "");
    s.gitea.add_pull(repo, 7, SHA);
    let (port, mut child, notify) = start_webhook_poller(&s, "");

    // The comment appears in Gitea only now, after the first (hourly) cycle.
    let id = comment_after_first_cycle(&s, repo);
    let payload = testme_event(repo, id);
    assert_eq!(post(port, "issue_comment", None, &payload), 401);
    assert_eq!(
        post(
            port,
            "issue_comment",
            Some(&sign("wrong", &payload)),
            &payload
        ),
        401
    );
    assert_eq!(
        post(port, "issue_comment", Some(&"0".repeat(64)), &payload),
        401
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.requests().is_empty(), "a bad signature does nothing");
    assert_eq!(
        s.gitea.requests(),
        2,
        "only the first cycle's listing and bot check reached gitea: {:?}",
        s.gitea.log()
    );

    let good = sign("hook-secret-value", &payload);
    assert_eq!(post(port, "issue_comment", Some(&good), &payload), 202);
    assert!(wait_for(|| s.requests().len() == 1, Duration::from_secs(5)));
    // A replay of the same event: deduped.
    assert_eq!(post(port, "issue_comment", Some(&good), &payload), 202);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.requests().len(), 1);

    // Only the GitHub-style header (a proxy kept just that one): checked the same way.
    let id2 = s.gitea.comment(repo, 7, "alice", "!testme");
    let payload2 = testme_event(repo, id2);
    assert_ne!(payload2, payload);
    let bad_hub = format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64));
    assert_eq!(post_with(port, "issue_comment", &bad_hub, &payload2), 401);
    let hub = format!(
        "X-Hub-Signature-256: sha256={}\r\n",
        sign("hook-secret-value", &payload2)
    );
    assert_eq!(post_with(port, "issue_comment", &hub, &payload2), 202);
    assert!(wait_for(|| s.requests().len() == 2, Duration::from_secs(5)));

    // Stop cleanly on SIGTERM.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(notify.wait_for("STOPPING=1", Duration::from_secs(1)));

    // The poll sees the same comments later: still one run each.
    s.poller().cycle();
    assert_eq!(s.requests().len(), 2);
    assert_eq!(s.launched(2).len(), 2);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        !err.contains("hook-secret-value") && !err.contains(TOKEN),
        "{err}"
    );
}

#[test]
fn sigterm_mid_cycle_stops_promptly_and_cleanly() {
    let repos: Vec<String> = (0..6).map(|i| format!("o/r{i}")).collect();
    let refs: Vec<&str> = repos.iter().map(String::as_str).collect();
    let s = Setup::in_mode("per-repo", &refs, "");
    for r in &repos {
        s.gitea.fault(
            &format!("/repos/{r}/issues/comments"),
            FaultKind::Delay(Duration::from_millis(500)),
            1,
        );
    }
    let mut child = s.bin().stderr(Stdio::null()).spawn().unwrap();
    assert!(wait_for(
        || s.gitea.requests() >= 2,
        Duration::from_secs(10)
    ));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(s.gitea.requests() < 6 + 1, "the cycle ended early");
}

#[test]
fn webhook_on_socket_passed_by_systemd() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let repo = "o/r";
    let s = Setup::new(&[repo], "");
    let secret_file = s.dir.path().join("hook-secret");
    std::fs::write(&secret_file, "sock-secret").unwrap();
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace(
            "[report]",
            &format!(
                "[poll]\ninterval_s = 3600\n\n[webhook]\nsecret_file = \"{}\"\n\n[report]",
                secret_file.display()
            ),
        ),
    )
    .unwrap();
    s.gitea.add_pull(repo, 7, SHA);
    // As systemd does for cc-ci-hook.socket: the listening socket is fd 3.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec {} poll --config {}",
            env!("CARGO_BIN_EXE_cc-ci"),
            s.config.display()
        ))
        .env_remove("NOTIFY_SOCKET")
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let id = comment_after_first_cycle(&s, repo);
    let payload = testme_event(repo, id);
    assert_eq!(
        post(
            port,
            "issue_comment",
            Some(&sign("nope", &payload)),
            &payload
        ),
        401
    );
    assert_eq!(
        post(
            port,
            "issue_comment",
            Some(&sign("sock-secret", &payload)),
            &payload
        ),
        202
    );
    let ok = wait_for(|| s.requests().len() == 1, Duration::from_secs(5));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(ok, "the webhook on the inherited socket started the run");
}

#[test]
fn watchdog_is_pinged_when_enabled() {
    let s = Setup::new(&["o/a"], "[poll]\ninterval_s = 1\n");
    let notify = Notify::new(s.dir.path());
    // systemd sets WATCHDOG_PID to the service's pid: exec keeps the shell's.
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "WATCHDOG_PID=$$ exec {} poll --config {}",
            env!("CARGO_BIN_EXE_cc-ci"),
            s.config.display()
        ))
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "600000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ok = notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok);
}

#[test]
fn example_config_loads_with_every_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cc-ci.toml");
    let c = Config::load(&path).unwrap();
    let g = c.gitea.as_ref().unwrap();
    assert_eq!(g.url, "https://git.example.org");
    assert_eq!(c.trigger.org.as_deref(), Some("coop-cloud"));
    assert_eq!(c.repos.len(), 2);
    assert!(
        c.webhook.is_none(),
        "off in the example: the shipped unit has no secret"
    );
    // Its commented [webhook] section is valid once uncommented.
    let text = std::fs::read_to_string(&path).unwrap();
    let on: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if ["[webhook]", "secret_file", "listen", "max_body_bytes"]
                    .iter()
                    .any(|k| rest.starts_with(k)) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cc-ci.toml"), on).unwrap();
    let w = Config::load(&dir.path().join("cc-ci.toml"))
        .unwrap()
        .webhook
        .unwrap();
    assert_eq!(w.listen.as_deref(), Some("127.0.0.1:8089"));
    assert_eq!(c.launch.kind, ccci::config::LaunchKind::Systemd);
    assert_eq!(
        c.report.base_url.as_deref(),
        Some("https://ci.example.org/runs")
    );
}
