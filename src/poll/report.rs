//! What a run looks like on Gitea: a commit status on the PR head and one PR comment,
//! both derived from the runner's `results.json` (and `report.md` at the end).
//!
//! [`Observed::read`] reads what the runner left; everything else here is a pure
//! decision: [`view`] (what the run looks like now), [`wanted`] (which status and
//! comment body that asks for, given what the ledger says was last posted) and the
//! texts themselves. The service posts only what [`wanted`] returns.
use super::gitea::StatusOption;
use super::ledger::RunRecord;
use crate::results::{Cause, Results, RunStatus, TierStatus, table};
use chrono::{DateTime, Utc};
use sha2::Digest;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How long a finished `results.json` may wait for its `report.md` (the runner writes
/// it right after) before the run is reported without it.
const REPORT_MD_GRACE: Duration = Duration::from_secs(30);

/// What the runner has left in its run directory, as the reporter sees it.
#[derive(Debug, Default)]
pub struct Observed {
    pub results: Option<Results>,
    /// `results.json` is there but cannot be parsed: why.
    pub unreadable: Option<String>,
    /// Time since `results.json` was last written (zero when there is none).
    pub results_age: Duration,
    /// The runner's final `report.md`, read once the results say the run finished.
    pub report_md: Option<String>,
}

impl Observed {
    pub fn read(run_dir: &Path) -> Observed {
        let results_path = run_dir.join("results.json");
        let mut observed = Observed {
            results_age: age(&results_path),
            ..Observed::default()
        };
        if let Ok(bytes) = std::fs::read(&results_path) {
            match serde_json::from_slice::<Results>(&bytes) {
                Ok(r) => observed.results = Some(r),
                Err(e) => observed.unreadable = Some(e.to_string()),
            }
        }
        if observed.results.as_ref().is_some_and(Results::finished) {
            observed.report_md = std::fs::read_to_string(run_dir.join("report.md")).ok();
        }
        observed
    }
}

fn age(path: &Path) -> Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// What run `rec` looks like at `now`, given what its runner left (`observed`), the
/// start timeout, and whether its runner is still alive (asked only when it matters:
/// it may cost a `systemctl` call).
pub fn view<'a>(
    rec: &RunRecord,
    observed: &'a Observed,
    timeout: Duration,
    now: DateTime<Utc>,
    mut runner_alive: impl FnMut() -> bool,
) -> View<'a> {
    let since = |t: &Option<String>| {
        t.as_deref()
            .and_then(super::gitea::parse_time)
            .map(|t| (now - t).to_std().unwrap_or_default())
            .unwrap_or_default()
    };
    match &observed.results {
        Some(r) if r.finished() || observed.results_age <= timeout || runner_alive() => {
            View::Results(r)
        }
        Some(_) => View::Lost("runner stopped without finishing its results".into()),
        None if rec.launched_at.is_none() => {
            if since(&rec.requested_at) > timeout {
                View::Lost(format!(
                    "runner could not be started within {}s",
                    timeout.as_secs()
                ))
            } else {
                View::Starting
            }
        }
        None => {
            if since(&rec.launched_at) > timeout && !runner_alive() {
                View::Lost(match &observed.unreadable {
                    Some(e) => format!("the runner's results.json is unreadable: {e}"),
                    None => format!(
                        "runner did not start/produce results within {}s",
                        timeout.as_secs()
                    ),
                })
            } else {
                View::Starting
            }
        }
    }
}

/// Whether `view` is the run's last word: nothing will change after it is posted.
pub fn is_final(view: &View) -> bool {
    match view {
        View::Lost(_) => true,
        View::Results(r) => r.finished(),
        View::Starting => false,
    }
}

/// A commit status to post, and the key the ledger keeps to know it was posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub status: StatusOption,
    pub key: String,
}

/// A PR comment body to post (or edit in), and the digest the ledger keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentUpdate {
    pub body: String,
    pub digest: String,
}

/// What one run asks of Gitea now: only what differs from what was last posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub state: &'static str,
    pub status: Option<StatusUpdate>,
    /// `None` when the run has no pull request or the body is unchanged.
    pub comment: Option<CommentUpdate>,
    /// This is the final report: once posted, the run is done.
    pub finished: bool,
}

/// Where a run is shown on Gitea.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The run page (`<report.base_url>/<run-id>/`), if there is one.
    pub run_url: Option<&'a str>,
    /// The commit status context.
    pub context: &'a str,
    /// An earlier unfinished run of the same pull request (it holds the app's lock).
    pub queued_behind: Option<&'a str>,
}

/// The status and comment that `view` asks for, leaving out what `rec` says was posted
/// already; `None` while a finished run's `report.md` is still being written.
pub fn wanted(rec: &RunRecord, view: &View, observed: &Observed, to: Target) -> Option<Wanted> {
    let finished = is_final(view);
    // A run that could not be carried out (or whose runner died) never writes one.
    let report_coming = matches!(view, View::Results(r) if r.status != RunStatus::Error);
    if finished
        && observed.report_md.is_none()
        && report_coming
        && observed.results_age < REPORT_MD_GRACE
    {
        return None;
    }
    let (state, description) = commit_status(view);
    let key = format!("{state}|{description}");
    let status = (rec.last_status.as_deref() != Some(&key)).then(|| StatusUpdate {
        status: StatusOption {
            state: state.into(),
            target_url: to.run_url.unwrap_or_default().to_string(),
            description,
            context: to.context.to_string(),
        },
        key,
    });
    let comment = rec.pr.and_then(|_| {
        let body = comment_body(
            &rec.run_id,
            &rec.sha,
            view,
            observed.report_md.as_deref(),
            to.run_url,
            to.queued_behind,
        );
        let digest = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        (rec.last_body.as_deref() != Some(&digest)).then_some(CommentUpdate { body, digest })
    });
    Some(Wanted {
        state,
        status,
        comment,
        finished,
    })
}

/// The earliest other unfinished run of the same pull request that was requested before
/// `rec`, if any: it holds the app's lock, so `rec` waits for it.
pub fn queued_behind<'a>(open: &'a [RunRecord], rec: &RunRecord) -> Option<&'a str> {
    open.iter()
        .find(|o| o.repo == rec.repo && o.pr == rec.pr && earlier(o, rec))
        .map(|o| o.run_id.as_str())
}

/// Whether run `a` was requested before run `b` (run ids order only to the second;
/// Gitea comment ids increase).
fn earlier(a: &RunRecord, b: &RunRecord) -> bool {
    match (a.comment_id, b.comment_id) {
        (Some(x), Some(y)) => x < y,
        _ => a.run_id < b.run_id,
    }
}

/// A marker in every comment the bot posts about a run, so a comment created just
/// before a crash is recognised (and reused) instead of duplicated.
pub fn run_marker(run_id: &str) -> String {
    format!("<!-- cc-ci run={run_id} -->")
}

/// The marker of a refusal reply to comment `comment_id`.
pub fn refusal_marker(comment_id: u64) -> String {
    format!("<!-- cc-ci refused={comment_id} -->")
}

/// The run id named by a run marker in `body`, if any.
pub fn marked_run(body: &str) -> Option<&str> {
    let rest = body.split("<!-- cc-ci run=").nth(1)?;
    rest.split_once(" -->").map(|(id, _)| id)
}

/// The comment id named by a refusal marker in `body`, if any.
pub fn marked_refusal(body: &str) -> Option<u64> {
    let rest = body.split("<!-- cc-ci refused=").nth(1)?;
    rest.split_once(" -->").and_then(|(id, _)| id.parse().ok())
}

/// What the run looks like now, from the reporter's point of view.
#[derive(Debug, Clone)]
pub enum View<'a> {
    /// Launched, no results yet.
    Starting,
    Results(&'a Results),
    /// No runner and no results after the start timeout (or a runner that vanished).
    Lost(String),
}

/// The commit status state and description for `view`.
pub fn commit_status(view: &View) -> (&'static str, String) {
    match view {
        View::Starting => ("pending", "run requested, waiting for the runner".into()),
        View::Lost(why) => ("error", crate::text::plain_line(why, 120)),
        View::Results(r) => {
            let level = format!("level {}/5", r.level);
            if !r.finished() {
                return ("pending", format!("running, {level} so far"));
            }
            if r.cancelled() {
                return ("error", format!("cancelled, {level}"));
            }
            if r.cause == Some(Cause::Policy) {
                // The pull request asks the host for what the operator did not allow.
                return (
                    "failure",
                    "refused by the compose policy, nothing deployed".into(),
                );
            }
            let tier_failed = r.tiers.iter().any(|t| t.status == TierStatus::Failed);
            let broken = r.invariants.broken();
            if r.status == RunStatus::Completed && !tier_failed && broken.is_empty() {
                return ("success", format!("passed, {level}"));
            }
            let recipe_failure = r.status == RunStatus::Completed
                && broken.is_empty()
                && r.tiers
                    .iter()
                    .any(|t| t.status == TierStatus::Failed && t.cause == Some(Cause::Recipe));
            if recipe_failure {
                return ("failure", format!("recipe failed, {level}"));
            }
            let why = if r.status == RunStatus::Error {
                "run could not be carried out".to_string()
            } else if !broken.is_empty() {
                format!("invariant broken: {}", broken.join(", "))
            } else {
                format!("{} failure", r.cause.map_or("unknown", Cause::as_str))
            };
            ("error", format!("{why}, {level}"))
        }
    }
}

/// The PR comment body for `view`. `report_md` is the runner's final report (used
/// verbatim once the run finished), `run_url` the run page.
pub fn comment_body(
    run_id: &str,
    sha: &str,
    view: &View,
    report_md: Option<&str>,
    run_url: Option<&str>,
    queued_behind: Option<&str>,
) -> String {
    let short = &sha[..sha.len().min(10)];
    let mut body = String::new();
    let mut links_done = false;
    match view {
        View::Starting => match queued_behind {
            Some(other) => body.push_str(&format!(
                "**cc-ci** run `{run_id}` requested for `{short}`: queued behind run `{other}` of this pull request (one deploy of an app at a time).\n"
            )),
            None => body.push_str(&format!(
                "**cc-ci** run `{run_id}` requested for `{short}`: waiting for the runner.\n"
            )),
        },
        View::Lost(why) => {
            body.push_str(&format!("**cc-ci** run `{run_id}` for `{short}`: **error**: {why}.\n"));
        }
        View::Results(r) => {
            if r.finished() && r.cancelled() {
                body.push_str(&format!("**cc-ci** run `{run_id}` for `{short}` was **cancelled**.\n\n"));
            }
            match (r.finished(), report_md) {
                (true, Some(md)) => {
                    body.push_str(fill_links(md, run_url).trim_end());
                    body.push('\n');
                    // The runner's own report links the run page and badge already.
                    links_done = md.contains("{run_url}");
                }
                _ => {
                    let what = if r.finished() { "finished" } else { "running" };
                    body.push_str(&format!(
                        "**cc-ci** run `{run_id}` for `{short}`: {what}, level {}/5\n\n",
                        r.level
                    ));
                    body.push_str(&table::render(&r.tiers, table::Style::Markdown));
                    if let Some(e) = &r.error {
                        body.push_str(&format!("\nerror: {}\n", crate::text::md_code(e, 500)));
                    }
                }
            }
        }
    }
    if let Some(url) = run_url.filter(|_| !links_done) {
        let finished = matches!(view, View::Results(r) if r.finished());
        if finished {
            body.push_str(&format!(
                "\n[![cc-ci level]({url}badge.svg)]({url}) [run page and log]({url})\n"
            ));
        } else {
            body.push_str(&format!("\n[run page and log]({url})\n"));
        }
    }
    body.push('\n');
    body.push_str(&run_marker(run_id));
    body
}

/// The runner's `report.md` links to the run page and badge through the placeholders
/// `{run_url}` and `{badge_url}`: filled from the run page's address, or the lines
/// holding them dropped when there is no public run page (`report.base_url` unset).
fn fill_links(md: &str, run_url: Option<&str>) -> String {
    match run_url {
        Some(url) => md
            .replace("{run_url}", url)
            .replace("{badge_url}", &format!("{url}badge.svg")),
        None => md
            .lines()
            .filter(|l| !l.contains("{run_url}") && !l.contains("{badge_url}"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_links_are_filled_or_dropped() {
        let md = "table\n[run page]({run_url}) · ![badge]({badge_url})\n";
        let filled = super::fill_links(md, Some("https://ci.example.org/runs/r1/"));
        assert!(
            filled.contains("[run page](https://ci.example.org/runs/r1/)"),
            "{filled}"
        );
        assert!(
            filled.contains("(https://ci.example.org/runs/r1/badge.svg)"),
            "{filled}"
        );
        assert_eq!(super::fill_links(md, None), "table");
    }

    use super::*;

    /// Results of a run at level 2 with `tiers` as `(name, status, cause)`.
    fn base(
        status: RunStatus,
        cause: Option<Cause>,
        tiers: &[(&str, TierStatus, Option<Cause>)],
    ) -> Results {
        let mut r = Results::start(
            "r1",
            "ghost",
            "refs/pull/7/head",
            None,
            Some(7),
            "ghost.ci.example.org",
        );
        r.status = status;
        r.level = 2;
        r.cause = cause;
        r.tiers = tiers
            .iter()
            .map(|&(name, status, cause)| crate::results::TierResult {
                name: name.parse().unwrap(),
                status,
                started_at: None,
                duration_s: Some(1.0),
                cause,
                reason: None,
            })
            .collect();
        r
    }

    #[test]
    fn a_policy_refusal_is_the_pull_requests_failure() {
        let mut r = base(RunStatus::Error, Some(Cause::Policy), &[]);
        r.level = 0;
        assert_eq!(
            commit_status(&View::Results(&r)),
            (
                "failure",
                "refused by the compose policy, nothing deployed".into()
            )
        );
    }

    #[test]
    fn maps_results_to_commit_status() {
        use Cause::*;
        use RunStatus::*;
        use TierStatus::*;
        let passed = [("install", Passed, None), ("upgrade", Passed, None)];
        let r = base(Completed, None, &passed);
        assert_eq!(
            commit_status(&View::Results(&r)),
            ("success", "passed, level 2/5".into())
        );

        let failed = [("install", Passed, None), ("upgrade", Failed, Some(Recipe))];
        let r = base(Completed, Some(Recipe), &failed);
        assert_eq!(commit_status(&View::Results(&r)).0, "failure");

        let infra = [("install", Failed, Some(Infrastructure))];
        let r = base(Completed, Some(Infrastructure), &infra);
        assert_eq!(commit_status(&View::Results(&r)).0, "error");

        let r = base(Completed, Some(Cancelled), &passed);
        let (state, desc) = commit_status(&View::Results(&r));
        assert_eq!(state, "error");
        assert!(
            desc.contains("cancelled") && desc.contains("level 2/5"),
            "{desc}"
        );

        let r = base(Error, Some(Harness), &[]);
        assert_eq!(commit_status(&View::Results(&r)).0, "error");

        let r = base(RunStatus::Running, None, &passed);
        assert_eq!(commit_status(&View::Results(&r)).0, "pending");

        let mut r = base(Completed, None, &passed);
        r.invariants.clean_teardown = false;
        let (state, desc) = commit_status(&View::Results(&r));
        assert_eq!(state, "error");
        assert!(desc.contains("clean_teardown"), "{desc}");
    }

    #[test]
    fn final_body_is_report_verbatim_with_badge_and_marker() {
        let r = base(RunStatus::Completed, None, &[]);
        let body = comment_body(
            "20260101T000000Z-aaaaaa",
            &"a".repeat(40),
            &View::Results(&r),
            Some("| tier | status |\n|---|---|\n"),
            Some("https://ci.example.org/runs/20260101T000000Z-aaaaaa/"),
            None,
        );
        assert!(body.starts_with("| tier | status |\n|---|---|\n"), "{body}");
        assert!(body.contains("badge.svg"));
        assert_eq!(marked_run(&body), Some("20260101T000000Z-aaaaaa"));
    }

    #[test]
    fn starting_body_says_when_queued() {
        let b = comment_body(
            "r2",
            &"b".repeat(40),
            &View::Starting,
            None,
            None,
            Some("r1"),
        );
        assert!(b.contains("queued behind run `r1`"), "{b}");
        let b = comment_body("r2", &"b".repeat(40), &View::Starting, None, None, None);
        assert!(!b.contains("queued"), "{b}");
    }

    #[test]
    fn markers_round_trip() {
        assert_eq!(
            marked_refusal(&format!("no\n{}", refusal_marker(77))),
            Some(77)
        );
        assert_eq!(marked_refusal("nothing"), None);
        assert_eq!(marked_run("x"), None);
    }

    fn record(run_id: &str, comment_id: u64) -> RunRecord {
        RunRecord {
            run_id: run_id.into(),
            repo: "o/r".into(),
            pr: Some(7),
            sha: "a".repeat(40),
            comment_id: Some(comment_id),
            requested_at: Some("2026-01-01T00:00:00.000Z".into()),
            launched_at: Some("2026-01-01T00:00:01.000Z".into()),
            ..RunRecord::default()
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        super::super::gitea::parse_time(s).unwrap()
    }

    const TIMEOUT: Duration = Duration::from_secs(600);

    #[test]
    fn a_running_run_is_lost_only_when_stale_and_its_runner_is_gone() {
        let rec = record("r1", 1);
        let running = Observed {
            results: Some(base(RunStatus::Running, None, &[])),
            results_age: Duration::from_secs(5),
            ..Observed::default()
        };
        let now = at("2026-01-01T01:00:00Z");
        let mut asked = 0;
        let v = view(&rec, &running, TIMEOUT, now, || {
            asked += 1;
            false
        });
        assert!(matches!(v, View::Results(_)));
        assert_eq!(asked, 0, "a fresh results.json needs no liveness check");
        let stale = Observed {
            results_age: Duration::from_secs(601),
            ..running
        };
        assert!(matches!(
            view(&rec, &stale, TIMEOUT, now, || true),
            View::Results(_)
        ));
        assert!(matches!(
            view(&rec, &stale, TIMEOUT, now, || false),
            View::Lost(why) if why.contains("without finishing")
        ));
    }

    #[test]
    fn no_results_is_starting_until_the_timeout() {
        let mut rec = record("r1", 1);
        let none = Observed::default();
        let soon = at("2026-01-01T00:05:00Z");
        let late = at("2026-01-01T00:20:00Z");
        assert!(matches!(
            view(&rec, &none, TIMEOUT, soon, || false),
            View::Starting
        ));
        assert!(matches!(
            view(&rec, &none, TIMEOUT, late, || true),
            View::Starting
        ));
        assert!(matches!(
            view(&rec, &none, TIMEOUT, late, || false),
            View::Lost(why) if why.contains("did not start/produce results")
        ));
        let unreadable = Observed {
            unreadable: Some("expected value".into()),
            ..Observed::default()
        };
        assert!(matches!(
            view(&rec, &unreadable, TIMEOUT, late, || false),
            View::Lost(why) if why.contains("unreadable: expected value")
        ));
        rec.launched_at = None;
        assert!(matches!(
            view(&rec, &none, TIMEOUT, late, || true),
            View::Lost(why) if why.contains("could not be started within 600s")
        ));
    }

    #[test]
    fn wanted_leaves_out_what_was_posted_and_waits_for_report_md() {
        let target = Target {
            run_url: Some("https://ci.example.org/runs/r1/"),
            context: "cc-ci",
            queued_behind: None,
        };
        let mut rec = record("r1", 1);
        let none = Observed::default();
        let w = wanted(&rec, &View::Starting, &none, target).unwrap();
        let status = w.status.unwrap();
        assert_eq!(status.status.state, "pending");
        assert_eq!(status.status.target_url, "https://ci.example.org/runs/r1/");
        let comment = w.comment.unwrap();
        assert!(!w.finished);
        rec.last_status = Some(status.key);
        rec.last_body = Some(comment.digest);
        let again = wanted(&rec, &View::Starting, &none, target).unwrap();
        assert_eq!(
            (again.status, again.comment),
            (None, None),
            "nothing changed"
        );

        let done = Observed {
            results: Some(base(RunStatus::Completed, None, &[])),
            results_age: Duration::from_secs(1),
            ..Observed::default()
        };
        let v = View::Results(done.results.as_ref().unwrap());
        assert_eq!(
            wanted(&rec, &v, &done, target),
            None,
            "report.md is on its way"
        );
        let old = Observed {
            results_age: Duration::from_secs(31),
            ..done
        };
        let v = View::Results(old.results.as_ref().unwrap());
        let w = wanted(&rec, &v, &old, target).unwrap();
        assert!(w.finished);
        assert_eq!(w.state, "success");
        rec.pr = None;
        assert_eq!(wanted(&rec, &v, &old, target).unwrap().comment, None);
    }

    #[test]
    fn a_run_queues_behind_the_earlier_comment_of_its_pull_request() {
        let open = [record("r2", 5), record("r1", 9), record("r3", 3)];
        let mut other_pr = record("r0", 1);
        other_pr.pr = Some(8);
        let all = [vec![other_pr], open.to_vec()].concat();
        assert_eq!(queued_behind(&all, &open[0]), Some("r3"));
        assert_eq!(queued_behind(&all, &open[2]), None);
    }
}
