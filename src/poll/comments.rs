//! Reading a repo's new comments: list them from the repo's cursor (every page), adopt
//! the markers in the bot's own comments, hand each trigger to the pipeline
//! ([`super::triggers`]), then move the cursor past what was handled.
use super::gitea::{self, Comment};
use super::report;
use super::service::Poller;
use super::trigger;
use super::triggers::HandleError;
use crate::config::RepoConfig;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// What one listing of a repo found.
#[derive(Debug, Default)]
pub struct Listing {
    /// New trigger comments.
    pub triggers: u64,
    /// The pull requests its comments are on.
    pub pulls: BTreeSet<u64>,
    /// Every comment was handled and the cursor moved past them all; `false` when a
    /// trigger is to be retried or a stop cut the listing short.
    pub complete: bool,
}

impl Poller {
    /// List comments updated since the repo's cursor (all pages), act on triggers,
    /// then advance the cursor past what was handled.
    pub(super) fn list_repo(&mut self, repo: &RepoConfig) -> gitea::Result<Listing> {
        let since = match self.ledger.cursor(&repo.repo) {
            Some(s) => s.to_string(),
            None => gitea::since(
                Utc::now() - chrono::Duration::seconds(self.config.poll.lookback_s as i64),
            ),
        };
        let comments: Vec<Comment> = gitea::all_pages(|page| match page > 1 && self.stopping() {
            // Stopping: no more pages; nothing below is handled (see the loop).
            true => Ok((Vec::new(), None)),
            false => self.client.list_comments(&repo.repo, &since, page),
        })?;
        // The bot's own comments carry markers: adopt them first (crash recovery).
        let bot: Vec<&Comment> = comments.iter().filter(|c| self.is_bot(c.login())).collect();
        for c in bot {
            self.adopt_marker(c);
        }
        let mut listing = Listing {
            pulls: comments.iter().filter_map(Comment::pr_index).collect(),
            ..Listing::default()
        };
        let mut newest = gitea::parse_time(&since);
        // The cursor may not pass a comment whose handling failed: it is listed again.
        let mut hold: Option<DateTime<Utc>> = None;
        for c in &comments {
            if self.stopping() {
                return Ok(listing);
            }
            let updated = gitea::parse_time(&c.updated_at);
            if self.may_trigger(c.login())
                && self.ledger.handled(c.id).is_none()
                && let Some(pr) = c.pr_index()
                && trigger::is_trigger(&c.body, &self.config.trigger.command)
            {
                listing.triggers += 1;
                match self.handle_trigger(repo, c.id, pr, c.login()) {
                    Ok(()) => {}
                    // Gitea unreachable or rate limiting: stop this repo.
                    Err(HandleError::Gitea(
                        e @ (gitea::Error::Transport { .. } | gitea::Error::RateLimited { .. }),
                    )) => return Err(e),
                    // Anything else is about this comment: retry it next cycle,
                    // and go on with the others.
                    Err(e) => {
                        tracing::error!(repo = %repo.repo, pr, comment_id = c.id,
                                    "cannot handle the trigger (retrying next cycle): {e}");
                        if let Some(t) = updated {
                            hold = Some(hold.map_or(t, |h| h.min(t)));
                        }
                    }
                }
            }
            if let Some(t) = updated {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
        if let Some(h) = hold {
            newest = Some(newest.map_or(h, |n| n.min(h)));
        }
        listing.complete = hold.is_none();
        let cursor = newest.map(gitea::since).unwrap_or(since);
        if let Err(e) = self.ledger.set_cursor(&repo.repo, &cursor) {
            tracing::error!(repo = %repo.repo, "cannot save cursor: {e}");
            listing.complete = false;
        }
        Ok(listing)
    }

    /// A bot comment posted just before a crash: its marker says which refusal or run
    /// it belongs to, so it is recorded instead of posted again.
    fn adopt_marker(&mut self, c: &Comment) {
        if let Some(id) = report::marked_refusal(&c.body)
            && let Some(mut o) = self.ledger.outcome(id)
            && !o.replied
        {
            o.replied = true;
            if let Err(e) = self.ledger.record_outcome(&o) {
                tracing::error!(comment_id = id, "{e}");
            }
        }
        if let Some(run_id) = report::marked_run(&c.body)
            && let Some(mut rec) = self.ledger.record(run_id)
            && rec.status_comment_id.is_none()
        {
            tracing::info!(run_id = %run_id, "adopting the run's PR comment {}", c.id);
            rec.status_comment_id = Some(c.id);
            if let Err(e) = self.ledger.save_record(&rec) {
                tracing::error!(run_id = %run_id, "{e}");
            }
        }
    }
}
