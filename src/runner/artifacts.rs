//! What a finished run publishes in its artifact dir: junit.xml, badge.svg,
//! report.md, timing.json, and results.json last, after the scan of every artifact for
//! secret values (its verdict goes into results.json, report.md and the badge).
use super::run::Run;
use crate::redact::Masker;
use crate::results::{
    Results, RunStatus, TestCaseResult, TierStatus,
    table::{self, DETAIL_MAX as MESSAGE_MAX},
};
use crate::text;
use anyhow::Context;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Write every artifact of a completed run, then print the summary. When they cannot
/// be written (a full disk, most likely), results.json is set to `error` with the
/// reason instead of being left saying `running`.
pub fn publish(run: &Run, tests: &[TestCaseResult]) -> anyhow::Result<()> {
    let timing = run.exec.timing();
    let written = crate::atomic::write(
        &run.artifacts.join("timing.json"),
        self::timing(&timing, run.started.elapsed()).as_bytes(),
    )
    .with_context(|| run.cannot_write("timing.json"))
    .and_then(|()| write_final(run, tests));
    run.progress().finish();
    if let Err(err) = written {
        run.exec.note(&format!("error: {err:#}"));
        let mut results = run.results();
        results.record_error(
            format!("the run's artifacts could not be written: {err:#}"),
            &run.results_path(),
        );
        return Err(err);
    }
    print_summary(&run.results(), &run.results_path());
    Ok(())
}

fn write_final(run: &Run, tests: &[TestCaseResult]) -> anyhow::Result<()> {
    let dir = &run.artifacts;
    let write = |name: &str, text: String| {
        crate::atomic::write(&dir.join(name), text.as_bytes())
            .with_context(|| run.cannot_write(name))
    };
    let results = run.results();
    write("junit.xml", junit(&results, tests))?;
    write("badge.svg", badge(&results))?;
    write("report.md", report(&results))?;
    run.record(|_| ())
        .with_context(|| run.cannot_write("results.json"))?;
    // The leak scan covers every artifact, results.json included; its verdict goes
    // into results.json, report.md and the badge, which are rewritten.
    let hits = scan_for_secrets(dir, &run.exec.masker());
    if !hits.is_empty() {
        let names: Vec<String> = hits.iter().map(|p| p.display().to_string()).collect();
        run.exec.note(&format!(
            "secret values found in artifacts: {}",
            names.join(", ")
        ));
        run.amend(|r| r.invariants.no_secret_leak = false);
        write("report.md", report(&run.results()))?;
    }
    run.record(|_| ())
        .with_context(|| run.cannot_write("results.json"))?;
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
    let _ = write!(
        out,
        "{}",
        table::render(&results.tiers, table::Style::Terminal)
    );
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

/// `junit.xml`: one suite of the five tiers (real timestamps and durations) and one of
/// the custom tests.
pub fn junit(results: &Results, tests: &[TestCaseResult]) -> String {
    let mut report = Report::new(format!("cc-ci {} {}", results.recipe, results.run_id));
    report.set_timestamp(results.started_at);
    let mut ladder = TestSuite::new(format!("{}.ladder", results.recipe));
    ladder.set_timestamp(results.started_at);
    for tier in &results.tiers {
        let mut status = match tier.status {
            TierStatus::Passed => TestCaseStatus::success(),
            TierStatus::Failed => TestCaseStatus::non_success(NonSuccessKind::Failure),
            _ => TestCaseStatus::skipped(),
        };
        let mut message = text::plain_line(tier.reason.as_deref().unwrap_or(""), MESSAGE_MAX);
        if let Some(cause) = tier.cause {
            message = format!("[{}] {message}", cause.as_str());
            status.set_type(cause.as_str());
        }
        if !message.is_empty() {
            status.set_message(message);
        }
        let mut case = TestCase::new(tier.name.as_str(), status);
        case.set_classname(format!("{}.ladder", results.recipe));
        if let Some(t) = tier.started_at {
            case.set_timestamp(t);
        }
        if let Some(d) = tier.duration_s {
            case.set_time(Duration::from_secs_f64(d));
        }
        ladder.add_test_case(case);
    }
    report.add_test_suite(ladder);
    if !tests.is_empty() {
        let mut suite = TestSuite::new(format!("{}.custom", results.recipe));
        for t in tests {
            let mut status = if t.passed {
                TestCaseStatus::success()
            } else {
                TestCaseStatus::non_success(NonSuccessKind::Failure)
            };
            if !t.message.is_empty() {
                status.set_message(text::plain_line(&t.message, MESSAGE_MAX));
            }
            let mut case = TestCase::new(text::plain_line(&t.name, 200), status);
            case.set_classname(format!("{}.custom", results.recipe));
            case.set_timestamp(t.started_at);
            case.set_time(t.duration);
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().expect("a junit report serialises")
}

/// The badge's text and colour: the level, or `error` when the run did not complete.
fn badge_value(results: &Results) -> (String, &'static str) {
    if results.status == RunStatus::Error {
        return ("error".into(), "#9f9f9f");
    }
    let colour = match results.level {
        5 => "#4c1",
        4 => "#97ca00",
        3 => "#a4a61d",
        2 => "#dfb317",
        1 => "#fe7d37",
        _ => "#e05d44",
    };
    (format!("level {}/5", results.level), colour)
}

/// `badge.svg`: a shields-style badge "cc-ci | level N/5".
pub fn badge(results: &Results) -> String {
    let (value, colour) = badge_value(results);
    let label = "cc-ci";
    // Verdana 11px averages ~6.5px per character; shields pads 5px each side.
    let lw = 10 + (label.len() as u32 * 65).div_ceil(10);
    let vw = 10 + (value.len() as u32 * 65).div_ceil(10);
    let w = lw + vw;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{label}: {value}">
<title>{label}: {value}</title>
<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>
<clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath>
<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{colour}"/><rect width="{w}" height="20" fill="url(#s)"/></g>
<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">
<text x="{lx}" y="15" fill="#010101" fill-opacity=".3">{label}</text><text x="{lx}" y="14">{label}</text>
<text x="{vx}" y="15" fill="#010101" fill-opacity=".3">{value}</text><text x="{vx}" y="14">{value}</text>
</g>
</svg>
"##,
        lx = lw / 2,
        vx = lw + vw / 2,
    )
}

fn flag(ok: bool) -> &'static str {
    if ok { "✅" } else { "❌" }
}

/// `report.md`: the PR comment body. `{run_url}` and `{badge_url}` are placeholders
/// the poller fills with the run page's address.
pub fn report(results: &Results) -> String {
    let short = &results.sha[..results.sha.len().min(10)];
    let mut md = format!(
        "### cc-ci: `{}` at `{}` reached level {}/5\n\n",
        results.recipe, short, results.level
    );
    if let Some(err) = &results.error {
        md.push_str(&format!(
            "**The run could not be carried out:** {}\n\n",
            text::md_code(err, MESSAGE_MAX)
        ));
    }
    md.push_str(&table::render(&results.tiers, table::Style::Markdown));
    let inv = &results.invariants;
    md.push_str(&format!(
        "\nDeploys {}/{} {} · clean teardown {} · no secret leak {}\n",
        results.deploys.count,
        results.deploys.budget,
        flag(inv.deploy_budget_ok),
        flag(inv.clean_teardown),
        flag(inv.no_secret_leak)
    ));
    if let Some(cause) = results.cause {
        md.push_str(&format!("\nCause: **{}**\n", cause.as_str()));
    }
    md.push_str(&format!(
        "\n[run page and log]({{run_url}}) · ![badge]({{badge_url}}) · upgrade base `{}` · run `{}`\n",
        results.upgrade_base.as_deref().unwrap_or("none"),
        results.run_id
    ));
    md
}

/// `timing.json`: the run's wall time, the time inside child commands, deliberate
/// waits, and what is left: the runner's own overhead (`benches/runner-overhead.sh`).
pub fn timing(t: &crate::process::Timing, wall: Duration) -> String {
    let overhead = wall.saturating_sub(t.external + t.waiting).as_secs_f64();
    let wall_s = wall.as_secs_f64();
    serde_json::json!({
        "wall_s": wall_s,
        "external_s": t.external.as_secs_f64(),
        "waiting_s": t.waiting.as_secs_f64(),
        "overhead_s": overhead,
        "overhead_pct": 100.0 * overhead / wall_s.max(1e-9),
        "commands": t.commands,
    })
    .to_string()
}

/// Every file under `dir` that contains a secret value (in any masked form).
pub fn scan_for_secrets(dir: &Path, masker: &Masker) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                // An artifact that cannot be read cannot be shown clean.
                Ok(t)
                    if t.is_file()
                        && std::fs::read(&path)
                            .map(|b| masker.contains_secret(&b))
                            .unwrap_or(true) =>
                {
                    hits.push(path);
                }
                _ => {}
            }
        }
    }
    hits.sort();
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Cause, Tier, TierResult};

    /// A failure message from a hostile or merely colourful child: terminal escapes, a
    /// control byte XML forbids, Markdown that would load an image or link elsewhere,
    /// a mention, HTML, a table pipe and a line break.
    const HOSTILE: &str = "\x1b[31mdeploy failed\x1b[0m\x0b ![x](http://tracker.example.org/p.png) \
        [click](http://phish.example.org) @admins <img src=x> a|b\nnext line";

    fn failed_run() -> Results {
        let mut r = Results::start("r1", "hello", "main", Some("abc"), None, "h.example.org");
        r.status = RunStatus::Completed;
        r.error = Some(HOSTILE.into());
        r.tiers = vec![TierResult {
            status: TierStatus::Failed,
            duration_s: Some(1.0),
            cause: Some(Cause::Recipe),
            reason: Some(HOSTILE.into()),
            ..TierResult::pending(Tier::Install)
        }];
        r
    }

    #[test]
    fn child_text_in_report_md_is_shown_not_rendered() {
        let md = report(&failed_run());
        let row = md.lines().find(|l| l.starts_with("| install")).unwrap();
        // One table row of five cells: the pipe inside is escaped.
        assert_eq!(row.matches(" | ").count() + 2, 6, "{row}");
        assert!(
            row.contains("`deploy failed ![x](http://tracker.example.org/p.png) [click](http://phish.example.org) @admins <img src=x> a\\|b next line`"),
            "{row}"
        );
        assert!(!md.contains('\x1b') && !md.contains('\x0b'));
        assert!(md.contains("**The run could not be carried out:** `deploy failed"));
    }

    #[test]
    fn child_text_in_junit_is_valid_xml() {
        let xml = junit(&failed_run(), &[]);
        assert!(
            !xml.chars().any(|c| c.is_control() && !"\t\n\r".contains(c)),
            "{xml:?}"
        );
        assert!(xml.contains("deploy failed"), "{xml}");
    }
}
