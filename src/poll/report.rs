//! What a run looks like on Gitea: a commit status on the PR head and one PR comment,
//! both derived from the runner's `results.json` (and `report.md` at the end).
//!
//! Pure functions from results to the wanted status and comment body; the service
//! posts only what changed since the last cycle.
use crate::results::{Cause, Results, RunStatus, TierStatus, table};

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
}
