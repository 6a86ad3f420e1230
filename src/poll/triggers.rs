//! What happens to a trigger comment, whichever path brought it (a listing or the
//! webhook): authorize → dedupe → check the pull request → write the run request →
//! record → launch; a refusal gets one reply. Also the launch end of crash recovery:
//! every request without a launch record gets one, and every unlaunched run is
//! launched unless its runner already started.
use super::auth::{self, Decision};
use super::gitea;
use super::ledger::{self, Outcome, RunRecord};
use super::report;
use super::service::Poller;
use super::trigger;
use super::webhook::Event;
use crate::config::RepoConfig;
use crate::request::RunRequest;
use chrono::Utc;
use std::time::Instant;

/// Why handling one comment stopped; the comment is retried on a later cycle.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Gitea(#[from] gitea::Error),
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
}

impl Poller {
    /// Whether a comment by `login` can start a run at all: never the bot's own, never
    /// one without a user (a server's ghost cannot be authorized, and would hold the
    /// cursor), whichever path (poll or webhook) brought it.
    pub(super) fn may_trigger(&self, login: &str) -> bool {
        !login.is_empty() && !self.is_bot(login)
    }

    pub(super) fn is_bot(&self, login: &str) -> bool {
        login.eq_ignore_ascii_case(&self.gitea.bot_user)
    }

    /// A webhook event: same filters and pipeline as a polled comment.
    pub fn handle_event(&mut self, ev: Event) {
        if self.backoff_until.is_some_and(|t| Instant::now() < t) {
            tracing::info!(repo = %ev.repo, pr = ev.pr, comment_id = ev.comment_id,
                "webhook: gitea is rate limiting; the poll will handle this comment later");
            return;
        }
        let Some(repo) = self
            .config
            .repos
            .iter()
            .find(|r| r.repo.eq_ignore_ascii_case(&ev.repo))
            .cloned()
        else {
            tracing::info!(repo = %ev.repo, comment_id = ev.comment_id, "webhook: repo not enrolled, ignored");
            return;
        };
        if !self.may_trigger(&ev.user)
            || !trigger::is_trigger(&ev.body, &self.config.trigger.command)
        {
            return;
        }
        if self.ledger.handled(ev.comment_id).is_some() {
            tracing::info!(repo = %repo.repo, pr = ev.pr, comment_id = ev.comment_id, "webhook: comment already handled");
            return;
        }
        match self.handle_trigger(&repo, ev.comment_id, ev.pr, &ev.user) {
            Ok(()) => self.report_all(),
            Err(e) => tracing::error!(repo = %repo.repo, pr = ev.pr, comment_id = ev.comment_id,
                "webhook trigger not handled now (the poll will retry): {e}"),
        }
    }

    /// Authorize, check the PR, write the run request, launch.
    pub(super) fn handle_trigger(
        &mut self,
        repo: &RepoConfig,
        comment_id: u64,
        pr: u64,
        user: &str,
    ) -> Result<(), HandleError> {
        if self.ledger.handled(comment_id).is_some() {
            return Ok(());
        }
        let span = tracing::info_span!("trigger", repo = %repo.repo, pr, comment_id, user = %user);
        let _enter = span.enter();
        if auth::authorize(&self.client, &self.config.trigger, user)? == Decision::Denied {
            tracing::info!("trigger by an unauthorized user: refusing");
            let o = Outcome {
                comment_id,
                repo: repo.repo.clone(),
                pr: Some(pr),
                outcome: "refused".into(),
                user: user.to_string(),
                // A deleted ("ghost") account has no login to answer.
                replied: user.is_empty(),
            };
            self.ledger.record_outcome(&o)?;
            if !o.replied {
                self.reply_refusal(o);
            }
            return Ok(());
        }
        let pull = match self.client.get_pull(&repo.repo, pr)? {
            None => {
                tracing::warn!("the pull request no longer exists: no run");
                self.record_skip(repo, comment_id, pr, user, "pr-deleted")?;
                return Ok(());
            }
            Some(p) if p.state != "open" => {
                tracing::info!(state = %p.state, merged = p.merged, "the pull request is not open: no run");
                self.record_skip(repo, comment_id, pr, user, "pr-closed")?;
                return Ok(());
            }
            Some(p) => p,
        };
        let now = Utc::now();
        let clone_url = pull
            .base
            .repo
            .as_ref()
            .map(|r| r.clone_url.clone())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                format!("{}/{}.git", self.gitea.url.trim_end_matches('/'), repo.repo)
            });
        let req = RunRequest {
            run_id: crate::runid::new_run_id(now),
            repo: repo.repo.clone(),
            recipe: repo.recipe.clone(),
            pr: Some(pr),
            sha: pull.head.sha.clone(),
            // The base repo always has the PR's head ref, also for forks since deleted.
            git_ref: format!("refs/pull/{pr}/head"),
            clone_url,
            comment_id: Some(comment_id),
            requested_by: user.to_string(),
            requested_at: ledger::timestamp(now),
        };
        self.ledger.record_request(&req)?;
        tracing::info!(run_id = %req.run_id, sha = %req.sha, "run requested");
        failpoint::crash_after_request();
        self.ledger.save_record(&RunRecord::requested(&req))?;
        self.launch_pending();
        Ok(())
    }

    fn record_skip(
        &mut self,
        repo: &RepoConfig,
        comment_id: u64,
        pr: u64,
        user: &str,
        outcome: &str,
    ) -> Result<(), HandleError> {
        self.ledger.record_outcome(&Outcome {
            comment_id,
            repo: repo.repo.clone(),
            pr: Some(pr),
            outcome: outcome.into(),
            user: user.into(),
            replied: true,
        })?;
        Ok(())
    }

    /// Post the one reply to a refused trigger; recorded once posted, or once Gitea
    /// refuses it for good, else retried next cycle.
    fn reply_refusal(&mut self, mut o: Outcome) {
        let Some(pr) = o.pr else { return };
        let who = match &self.config.trigger.org {
            Some(org) => format!("members of `{org}` and the allowed users"),
            None => "the allowed users".to_string(),
        };
        let body = format!(
            "@{} sorry, only {who} can start cc-ci runs with `{}`.\n\n{}",
            o.user,
            self.config.trigger.command,
            report::refusal_marker(o.comment_id)
        );
        match self.client.create_comment(&o.repo, pr, &body) {
            Ok(_) => {}
            Err(e) if e.is_permanent() => {
                tracing::error!(repo = %o.repo, pr, comment_id = o.comment_id,
                "gitea refuses the refusal reply; giving up: {e}")
            }
            Err(e) => {
                tracing::warn!(repo = %o.repo, pr, comment_id = o.comment_id,
                    "cannot post the refusal reply (retrying next cycle): {e}");
                return;
            }
        }
        o.replied = true;
        if let Err(e) = self.ledger.record_outcome(&o) {
            tracing::error!(comment_id = o.comment_id, "{e}");
        }
    }

    pub(super) fn retry_replies(&mut self) {
        match self.ledger.unreplied() {
            Ok(list) => {
                for o in list {
                    self.reply_refusal(o);
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// After a restart or crash: every run request without a launch record gets one,
    /// so it is launched (unless its runner already left a run dir) on this cycle.
    pub fn recover(&mut self) {
        self.recovered = true;
        let requests = match self.ledger.requests() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot list run requests: {e}");
                return;
            }
        };
        for req in requests {
            if self.ledger.record(&req.run_id).is_none() {
                tracing::warn!(run_id = %req.run_id, repo = %req.repo, comment_id = req.comment_id,
                    "run request without launch record (crash between request and launch): recovering");
                if let Err(e) = self.ledger.save_record(&RunRecord::requested(&req)) {
                    tracing::error!(run_id = %req.run_id, "{e}");
                }
            }
        }
    }

    /// Launch every recorded run not launched yet, unless its runner already started
    /// (its run dir exists: the launch happened before a crash lost the bookkeeping).
    pub(super) fn launch_pending(&mut self) {
        let records = match self.ledger.open_records() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        for mut rec in records.into_iter().filter(|r| r.launched_at.is_none()) {
            let run_dir = self.ledger.runs_dir().join(&rec.run_id);
            if run_dir.exists() {
                tracing::info!(run_id = %rec.run_id, "runner already started before a restart; not launching again");
            } else {
                let request = self
                    .ledger
                    .requests_dir()
                    .join(format!("{}.json", rec.run_id));
                if let Err(e) = self.launcher.launch(&rec.run_id, &request) {
                    tracing::error!(run_id = %rec.run_id, repo = %rec.repo, pr = rec.pr, comment_id = rec.comment_id,
                        "cannot launch the runner (retrying next cycle): {e}");
                    continue;
                }
                tracing::info!(run_id = %rec.run_id, repo = %rec.repo, pr = rec.pr, comment_id = rec.comment_id, "runner launched");
            }
            rec.launched_at = Some(ledger::timestamp(Utc::now()));
            if let Err(e) = self.ledger.save_record(&rec) {
                tracing::error!(run_id = %rec.run_id, "{e}");
            }
        }
    }
}

/// Fault injection for the integration tests, compiled only with the cargo feature
/// `failpoints` (which only the test build turns on): never in a release binary.
mod failpoint {
    /// `CCCI_POLL_CRASH_AFTER_REQUEST` set: die between the run request and its launch
    /// record, as a crash there would.
    #[cfg(feature = "failpoints")]
    pub fn crash_after_request() {
        if std::env::var_os("CCCI_POLL_CRASH_AFTER_REQUEST").is_some() {
            std::process::abort();
        }
    }

    #[cfg(not(feature = "failpoints"))]
    pub fn crash_after_request() {}
}
