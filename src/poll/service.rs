//! The poll loop: one cycle every `poll.interval_s` (discover → list → handle triggers
//! → launch → report), webhook events handled between cycles, and systemd's side of
//! it (READY, STATUS, WATCHDOG, STOPPING), stopping cleanly on SIGTERM. Which repos a
//! cycle lists is [`super::discovery`]'s call, what a listing does is in
//! [`super::comments`], the trigger pipeline in [`super::triggers`], and what to post
//! about a run is decided in [`super::report`]; this module posts it.
use super::discovery::Discovery;
use super::gitea::{self, Client, Token};
use super::heartbeat::Heartbeat;
use super::launch::Launcher;
use super::ledger::{self, Ledger, RunRecord};
use super::report::{self, Observed};
use super::triggers::HandleError;
use super::webhook::Event;
use crate::config::{Config, GiteaConfig};
use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Reasons the poller refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the config has no [gitea] section; the poller needs url, token_file and bot_user")]
    NoGitea,
    #[error("cannot read the gitea token file {0}: {1}")]
    TokenUnreadable(PathBuf, std::io::Error),
    #[error("the gitea token file {0} is empty")]
    TokenEmpty(PathBuf),
    #[error(transparent)]
    State(#[from] ledger::Error),
    #[error(transparent)]
    Credential(#[from] crate::config::Error),
}

/// Cost of one cycle, for logs and the benchmark.
#[derive(Debug, Clone, Copy, Default)]
pub struct CycleStats {
    pub requests: u64,
    pub elapsed: Duration,
    pub triggers: u64,
}

/// Read a secret file (token, webhook secret): trimmed, must not be empty.
pub fn read_secret(path: &Path) -> Result<String, StartError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StartError::TokenUnreadable(path.to_owned(), e))?;
    let value = text.trim().to_string();
    if value.is_empty() {
        return Err(StartError::TokenEmpty(path.to_owned()));
    }
    Ok(value)
}

/// The poller's state; its methods are split by concept over the sibling modules.
pub struct Poller {
    pub(super) config: Config,
    pub(super) gitea: GiteaConfig,
    pub(super) client: Client,
    pub(super) ledger: Ledger,
    pub(super) launcher: Launcher,
    discovery: Discovery,
    heartbeat: Heartbeat,
    /// No Gitea requests before this instant (429 with a long `Retry-After`).
    pub(super) backoff_until: Option<Instant>,
    pub(super) recovered: bool,
}

/// Consecutive unreachable repos after which a cycle ends early.
const MAX_UNREACHABLE_IN_A_ROW: u32 = 3;

impl Poller {
    pub fn new(config: Config, stop: Arc<AtomicBool>) -> Result<Poller, StartError> {
        let gitea = config.gitea.clone().ok_or(StartError::NoGitea)?;
        let token = read_secret(&gitea.token_path()?)?;
        let ledger = Ledger::open(&config.state.dir)?;
        let client = Client::new(
            &gitea.url,
            Token::new(token),
            Duration::from_secs(gitea.timeout_s),
        );
        let launcher = Launcher::new(config.launch.clone());
        let discovery = Discovery::new(&config.poll, &gitea.bot_user);
        Ok(Poller {
            config,
            gitea,
            client,
            ledger,
            launcher,
            discovery,
            heartbeat: Heartbeat::new(stop),
            backoff_until: None,
            recovered: false,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn stopping(&self) -> bool {
        self.heartbeat.stopping()
    }

    /// Tell the watchdog we are alive (at most once per third of its interval).
    pub(super) fn tick(&mut self) {
        self.heartbeat.beat();
    }

    /// Checks at start that only warn: the bot should be able to see org members.
    pub fn check_bot(&self) {
        let Some(org) = &self.config.trigger.org else {
            return;
        };
        match self.client.membership(org, &self.gitea.bot_user) {
            Ok(gitea::Membership::Member) => {}
            Ok(_) => tracing::warn!(
                org = %org,
                bot = %self.gitea.bot_user,
                "the bot is not a member of the trigger org: Gitea hides private members from it, so they cannot trigger"
            ),
            Err(e) => tracing::warn!("cannot check the bot's org membership: {e}"),
        }
    }

    /// Serve until SIGTERM (or after one cycle with `once`). Webhook events arrive on
    /// `events` and are handled between cycles, immediately.
    pub fn run(&mut self, once: bool, mut events: Option<Receiver<Event>>) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        loop {
            let started = Instant::now();
            let stats = self.cycle();
            let status = format!(
                "last cycle: {} requests in {} ms, {} triggers; {}",
                stats.requests,
                stats.elapsed.as_millis(),
                stats.triggers,
                self.discovery.describe()
            );
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status)]);
            if once || self.stopping() {
                break;
            }
            let mut next = started + Duration::from_secs(self.config.poll.interval_s);
            if let Some(until) = self.backoff_until {
                next = next.max(until);
            }
            while !self.stopping() {
                self.tick();
                let now = Instant::now();
                if now >= next {
                    break;
                }
                let wait = (next - now).min(Duration::from_millis(250));
                match events.as_ref().map(|rx| rx.recv_timeout(wait)) {
                    Some(Ok(event)) => self.handle_event(event),
                    Some(Err(RecvTimeoutError::Timeout)) => {}
                    Some(Err(RecvTimeoutError::Disconnected)) => events = None,
                    None => std::thread::sleep(wait),
                }
            }
            if self.stopping() {
                break;
            }
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        tracing::info!("poller stopped");
    }

    /// One poll cycle over all enrolled repos, then retries and reporting.
    pub fn cycle(&mut self) -> CycleStats {
        let started = Instant::now();
        let before = self.client.request_count();
        let mut triggers = 0;
        if !self.recovered {
            self.recover();
        }
        let backing_off = self.backoff_until.is_some_and(|t| Instant::now() < t);
        if backing_off {
            tracing::info!("rate limited: skipping this cycle's gitea requests");
        } else {
            self.backoff_until = None;
            let plan = self
                .discovery
                .plan(&self.client, &self.config.repos, &mut self.heartbeat);
            let repos = match plan {
                Ok(repos) => repos,
                Err(e) => {
                    self.pause(&e);
                    Vec::new()
                }
            };
            // Gitea down or hanging: after a few unreachable repos in a row, end the
            // cycle instead of waiting out a timeout for every repo (nothing is lost:
            // cursors did not move).
            let mut unreachable = 0;
            for repo in &repos {
                if unreachable >= MAX_UNREACHABLE_IN_A_ROW {
                    tracing::error!(
                        "gitea unreachable for {unreachable} repos in a row; ending this cycle"
                    );
                    break;
                }
                if self.stopping() {
                    tracing::info!("stop requested: ending the cycle early");
                    break;
                }
                self.tick();
                let listed = self.list_repo(repo).and_then(|listing| {
                    triggers += listing.triggers;
                    self.discovery.listed(&self.client, repo, &listing)
                });
                match listed {
                    Ok(()) => unreachable = 0,
                    Err(e) => {
                        self.discovery.failed(repo, &e);
                        if e.is_transport() {
                            unreachable += 1;
                        } else {
                            unreachable = 0;
                        }
                        if e.retry_after().is_some() {
                            self.pause(&e);
                            break;
                        }
                        match e.status() {
                            Some(404) => tracing::error!(repo = %repo.repo,
                                "enrolled repo does not exist or the bot cannot see it: {e}"),
                            _ => tracing::error!(repo = %repo.repo, "cannot poll: {e}"),
                        }
                    }
                }
            }
        }
        // Launching needs no Gitea: also while rate limited.
        if !self.stopping() {
            self.launch_pending();
        }
        if !self.stopping() && self.backoff_until.is_none_or(|t| Instant::now() >= t) {
            self.retry_replies();
            self.report_all();
        }
        self.launcher.reap();
        let stats = CycleStats {
            requests: self.client.request_count() - before,
            elapsed: started.elapsed(),
            triggers,
        };
        tracing::debug!(
            requests = stats.requests,
            elapsed_ms = stats.elapsed.as_millis() as u64,
            "cycle done"
        );
        stats
    }

    /// A rate limit with a long `Retry-After`: no Gitea requests until it has passed.
    fn pause(&mut self, e: &gitea::Error) {
        if let Some(wait) = e.retry_after() {
            tracing::warn!("{e}; pausing gitea requests");
            self.backoff_until = Some(Instant::now() + wait);
        }
    }

    pub(super) fn report_all(&mut self) {
        let records = match self.ledger.open_records() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        for rec in &records {
            if self.stopping() {
                return;
            }
            self.tick();
            let ahead = report::queued_behind(&records, rec);
            if let Err(e) = self.report(rec.clone(), ahead) {
                tracing::warn!(run_id = %rec.run_id, repo = %rec.repo, pr = rec.pr, "cannot report (retrying next cycle): {e}");
            }
        }
    }

    /// Bring the commit status and PR comment of one run up to date: post what
    /// [`report::wanted`] asks for, record each post in the ledger as it succeeds.
    fn report(
        &mut self,
        mut rec: RunRecord,
        queued_behind: Option<&str>,
    ) -> Result<(), HandleError> {
        let observed = Observed::read(&self.ledger.runs_dir().join(&rec.run_id));
        if let Some(e) = &observed.unreadable {
            tracing::warn!(run_id = %rec.run_id, "unreadable results.json: {e}");
        }
        let timeout = Duration::from_secs(self.config.poll.start_timeout_s);
        let launcher = &mut self.launcher;
        let view = report::view(&rec, &observed, timeout, Utc::now(), || {
            launcher.is_alive(&rec.run_id)
        });
        let run_url = self
            .config
            .report
            .base_url
            .as_ref()
            .map(|b| format!("{}/{}/", b.trim_end_matches('/'), rec.run_id));
        let target = report::Target {
            run_url: run_url.as_deref(),
            context: &self.config.report.context,
            queued_behind,
        };
        let Some(wanted) = report::wanted(&rec, &view, &observed, target) else {
            return Ok(());
        };
        if let Some(update) = wanted.status {
            match self
                .client
                .create_status(&rec.repo, &rec.sha, &update.status)
            {
                Ok(()) => {
                    tracing::info!(run_id = %rec.run_id, repo = %rec.repo, pr = rec.pr, state = wanted.state, "commit status posted");
                    rec.last_status = Some(update.key);
                    self.ledger.save_record(&rec)?;
                }
                Err(e) if wanted.finished && e.is_permanent() => {
                    tracing::error!(run_id = %rec.run_id, "giving up on the commit status: {e}");
                    rec.last_status = Some(update.key);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let (Some(update), Some(pr)) = (wanted.comment, rec.pr) {
            let result = match rec.status_comment_id {
                Some(id) => match self.client.edit_comment(&rec.repo, id, &update.body) {
                    // Someone deleted the comment: post a new one.
                    Err(e) if e.status() == Some(404) => self
                        .client
                        .create_comment(&rec.repo, pr, &update.body)
                        .map(Some),
                    other => other.map(|()| None),
                },
                None => self
                    .client
                    .create_comment(&rec.repo, pr, &update.body)
                    .map(Some),
            };
            match result {
                Ok(new_id) => {
                    if let Some(id) = new_id {
                        rec.status_comment_id = Some(id);
                    }
                    rec.last_body = Some(update.digest);
                    self.ledger.save_record(&rec)?;
                }
                Err(e) if wanted.finished && e.is_permanent() => {
                    tracing::error!(run_id = %rec.run_id, "giving up on the PR comment: {e}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        if wanted.finished {
            rec.done = true;
            self.ledger.save_record(&rec)?;
            tracing::info!(run_id = %rec.run_id, repo = %rec.repo, pr = rec.pr, state = wanted.state, "final report posted");
        }
        Ok(())
    }
}
