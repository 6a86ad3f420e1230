//! The ladder's vocabulary: the five tiers, how each ended, and the level they add up
//! to. One spelling of each, used by results.json, report.md, the terminal summary,
//! JUnit and the poller's comments.
use super::Cause;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A rung of the ladder, bottom first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Install,
    Upgrade,
    Backup,
    Restore,
    Custom,
}

impl Tier {
    /// Every tier, in the order the ladder climbs them.
    pub const ALL: [Tier; 5] = [
        Tier::Install,
        Tier::Upgrade,
        Tier::Backup,
        Tier::Restore,
        Tier::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Install => "install",
            Tier::Upgrade => "upgrade",
            Tier::Backup => "backup",
            Tier::Restore => "restore",
            Tier::Custom => "custom",
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Tier, String> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a tier (install, upgrade, backup, restore, custom)")
            })
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierStatus {
    Pending,
    Running,
    Passed,
    Failed,
    Skipped,
    NotRun,
}

impl TierStatus {
    /// How people read it (reports, the terminal, comments).
    pub fn label(self) -> &'static str {
        match self {
            TierStatus::Pending => "pending",
            TierStatus::Running => "running",
            TierStatus::Passed => "passed",
            TierStatus::Failed => "failed",
            TierStatus::Skipped => "skipped",
            TierStatus::NotRun => "not run",
        }
    }

    /// The symbol Markdown reports put before the label.
    pub fn symbol(self) -> &'static str {
        match self {
            TierStatus::Passed => "✅",
            TierStatus::Failed => "❌",
            TierStatus::Skipped => "⏭️",
            TierStatus::Running => "⏳",
            TierStatus::NotRun | TierStatus::Pending => "⬜",
        }
    }
}

/// One tier of one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TierResult {
    pub name: Tier,
    pub status: TierStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_s: Option<f64>,
    pub cause: Option<Cause>,
    /// One line saying why the tier failed or was skipped.
    pub reason: Option<String>,
}

impl TierResult {
    /// A tier the climb has not reached yet.
    pub fn pending(tier: Tier) -> TierResult {
        TierResult {
            name: tier,
            status: TierStatus::Pending,
            started_at: None,
            duration_s: None,
            cause: None,
            reason: None,
        }
    }
}

/// The level: tiers passed in order from the bottom. A pass above a failure or a skip
/// does not count (a badge never claims what was not tested).
pub fn level(tiers: &[TierResult]) -> u8 {
    tiers
        .iter()
        .take_while(|t| t.status == TierStatus::Passed)
        .count() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(statuses: [TierStatus; 5]) -> Vec<TierResult> {
        Tier::ALL
            .iter()
            .zip(statuses)
            .map(|(&t, s)| TierResult {
                status: s,
                ..TierResult::pending(t)
            })
            .collect()
    }

    #[test]
    fn level_counts_passed_from_the_bottom() {
        use TierStatus::*;
        assert_eq!(level(&with([Passed, Passed, Passed, Passed, Passed])), 5);
        assert_eq!(level(&with([Passed, Failed, NotRun, NotRun, NotRun])), 1);
        assert_eq!(level(&with([Passed, Passed, Skipped, NotRun, NotRun])), 2);
        assert_eq!(level(&with([Failed, NotRun, NotRun, NotRun, NotRun])), 0);
        // A pass above a skip does not count.
        assert_eq!(level(&with([Passed, Skipped, Passed, Passed, Passed])), 1);
    }

    #[test]
    fn tiers_serialise_as_their_names() {
        for t in Tier::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(serde_json::to_value(TierStatus::NotRun).unwrap(), "not_run");
    }
}
