//! The tier table: one renderer for report.md, the poller's in-progress comment and
//! the terminal summary, so a tier's status reads the same everywhere.
use super::tier::TierResult;
use crate::text;

/// How much of a tier's reason (often a child's stderr) a table shows; run.log has
/// all of it.
pub const DETAIL_MAX: usize = 500;

/// Where the table goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A GFM table: the status with its symbol, the detail in a code span that
    /// nothing inside can escape (no links, images, HTML or mentions).
    Markdown,
    /// Aligned plain columns for a terminal or the journal.
    Terminal,
}

/// The table of `tiers`, ending with a newline.
pub fn render(tiers: &[TierResult], style: Style) -> String {
    let rows = tiers.iter().map(|t| {
        [
            t.name.as_str().to_string(),
            match style {
                Style::Markdown => format!("{} {}", t.status.symbol(), t.status.label()),
                Style::Terminal => t.status.label().to_string(),
            },
            t.duration_s
                .map(|d| format!("{d:.1} s"))
                .unwrap_or_default(),
            t.cause.map(|c| c.as_str()).unwrap_or_default().to_string(),
            t.reason.clone().unwrap_or_default(),
        ]
    });
    const HEAD: [&str; 5] = ["tier", "status", "duration", "cause", "detail"];
    let mut out = String::new();
    match style {
        Style::Markdown => {
            out.push_str("| tier | status | duration | cause | detail |\n|---|---|---|---|---|\n");
            for [tier, status, duration, cause, detail] in rows {
                let detail = text::md_code(&detail, DETAIL_MAX);
                out.push_str(&format!(
                    "| {tier} | {status} | {duration} | {cause} | {detail} |\n"
                ));
            }
        }
        Style::Terminal => {
            let line = |c: [&str; 5]| {
                format!("{:<8} {:<8} {:>9}  {:<14} {}", c[0], c[1], c[2], c[3], c[4])
                    .trim_end()
                    .to_string()
                    + "\n"
            };
            out.push_str(&line(HEAD));
            for row in rows {
                let detail = text::plain_line(&row[4], DETAIL_MAX);
                out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &detail]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Cause;
    use crate::results::tier::{Tier, TierStatus};

    fn tiers() -> Vec<TierResult> {
        vec![
            TierResult {
                status: TierStatus::Passed,
                duration_s: Some(12.34),
                ..TierResult::pending(Tier::Install)
            },
            TierResult {
                status: TierStatus::Failed,
                cause: Some(Cause::Recipe),
                reason: Some("deploy failed | see [x](http://a)\n\x1b[31mred".into()),
                ..TierResult::pending(Tier::Upgrade)
            },
            TierResult {
                status: TierStatus::NotRun,
                ..TierResult::pending(Tier::Backup)
            },
        ]
    }

    #[test]
    fn markdown_rows_carry_symbol_label_and_a_safe_detail() {
        let md = render(&tiers(), Style::Markdown);
        assert!(
            md.contains("| install | ✅ passed | 12.3 s |  |  |\n"),
            "{md}"
        );
        assert!(
            md.contains(
                "| upgrade | ❌ failed |  | recipe | `deploy failed \\| see [x](http://a) red` |"
            ),
            "{md}"
        );
        assert!(md.contains("| backup | ⬜ not run |"), "{md}");
        assert_eq!(md.lines().count(), 2 + 3);
    }

    #[test]
    fn terminal_rows_use_the_same_labels_without_markup() {
        let t = render(&tiers(), Style::Terminal);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("tier     status"), "{t}");
        assert!(lines[1].starts_with("install  passed      12.3 s"), "{t}");
        assert!(
            lines[2].contains("failed") && lines[2].contains("recipe"),
            "{t}"
        );
        assert!(!t.contains('\x1b') && !t.contains('`'), "{t}");
        assert!(lines[3].starts_with("backup   not run"), "{t}");
    }
}
