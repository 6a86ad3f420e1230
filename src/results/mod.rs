//! `results.json`: the run's machine-readable outcome (schema in
//! `docs/results-schema.json`, version [`SCHEMA_VERSION`]). Rewritten atomically after
//! every tier so the poller can report progress; final when `status` is not `running`.
pub mod table;
pub mod tier;

pub use tier::{Tier, TierResult, TierStatus, level};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The ladder is being climbed.
    Running,
    /// The run completed (whatever level it reached).
    Completed,
    /// The run could not be carried out (see `error`).
    Error,
}

/// Why something failed: the class decides who has to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// The recipe is at fault (task exits, unhealthy, data lost, test failed).
    Recipe,
    /// The host is at fault (address pools, tasks stuck in `New`, image pull, engine).
    Infrastructure,
    /// A bound ran out (convergence wait, test timeout, the run's deadline).
    Timeout,
    /// The run was stopped (SIGTERM / `systemctl stop`).
    Cancelled,
    /// cc-ci itself failed.
    Harness,
    /// The compose policy refused what the recipe asks of the host; nothing deployed.
    Policy,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Recipe => "recipe",
            Cause::Infrastructure => "infrastructure",
            Cause::Timeout => "timeout",
            Cause::Cancelled => "cancelled",
            Cause::Harness => "harness",
            Cause::Policy => "policy",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deploys {
    pub count: u32,
    pub budget: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invariants {
    pub clean_teardown: bool,
    pub no_secret_leak: bool,
    pub deploy_budget_ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    pub schema_version: u32,
    pub run_id: String,
    pub recipe: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub pr: Option<u64>,
    pub app_domain: String,
    pub upgrade_base: Option<String>,
    pub status: RunStatus,
    pub level: u8,
    /// The cause of the first failure, if any.
    pub cause: Option<Cause>,
    /// Why the run could not be carried out (status `error`).
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub tiers: Vec<TierResult>,
    pub deploys: Deploys,
    pub invariants: Invariants,
    /// What abra's teardown left and cc-ci removed directly (empty when clean).
    pub leaks: Vec<String>,
    /// Why the engine could not be asked what the teardown left (then
    /// `clean_teardown` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown_error: Option<String>,
    /// What the recipe's own tests were confined by (present once one ran); under
    /// `runner.confine.allow_unconfined` it says which steps were missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<crate::confine::Enforcement>,
}

/// One custom test's outcome, for JUnit.
#[derive(Debug, Clone)]
pub struct TestCaseResult {
    pub name: String,
    pub passed: bool,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub message: String,
}

impl Invariants {
    /// The names of the invariants that do not hold.
    pub fn broken(&self) -> Vec<&'static str> {
        [
            ("clean_teardown", self.clean_teardown),
            ("no_secret_leak", self.no_secret_leak),
            ("deploy_budget_ok", self.deploy_budget_ok),
        ]
        .into_iter()
        .filter(|(_, holds)| !holds)
        .map(|(name, _)| name)
        .collect()
    }
}

impl From<crate::process::StopReason> for Cause {
    fn from(reason: crate::process::StopReason) -> Cause {
        match reason {
            crate::process::StopReason::Cancelled => Cause::Cancelled,
            crate::process::StopReason::Deadline => Cause::Timeout,
        }
    }
}

impl Results {
    /// A run that has just started: no tiers yet, invariants not yet disproved.
    pub fn start(
        run_id: &str,
        recipe: &str,
        git_ref: &str,
        sha: Option<&str>,
        pr: Option<u64>,
        app_domain: &str,
    ) -> Results {
        Results {
            schema_version: SCHEMA_VERSION,
            run_id: run_id.to_string(),
            recipe: recipe.to_string(),
            git_ref: git_ref.to_string(),
            sha: sha.unwrap_or_default().to_string(),
            pr,
            app_domain: app_domain.to_string(),
            upgrade_base: None,
            status: RunStatus::Running,
            level: 0,
            cause: None,
            error: None,
            started_at: Utc::now(),
            finished_at: None,
            tiers: Vec::new(),
            deploys: Deploys {
                count: 0,
                budget: 0,
            },
            invariants: Invariants {
                clean_teardown: true,
                no_secret_leak: true,
                deploy_budget_ok: true,
            },
            leaks: Vec::new(),
            teardown_error: None,
            confinement: None,
        }
    }

    /// Final: the runner will not write these results again.
    pub fn finished(&self) -> bool {
        self.status != RunStatus::Running
    }

    pub fn cancelled(&self) -> bool {
        self.cause == Some(Cause::Cancelled)
    }

    /// The run could not be carried out: say why, mark it finished and write it to
    /// `path` as best it can (a full disk may refuse even that).
    pub fn record_error(&mut self, message: String, path: &Path) {
        self.status = RunStatus::Error;
        self.error = Some(message);
        self.finished_at.get_or_insert_with(Utc::now);
        let _ = self.write(path);
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).expect("results serialise");
        json.push(b'\n');
        crate::atomic::write(path, &json)
    }
}
