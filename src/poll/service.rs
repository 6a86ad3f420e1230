//! The poll loop: cycles over enrolled repos, handles trigger comments from the poll
//! and from the webhook through one pipeline (authorize → dedupe → request → launch),
//! reconciles what Gitea shows with the runs' results, and talks to systemd
//! (READY, WATCHDOG, STOPPING) while stopping cleanly on SIGTERM.
use super::auth::{self, Decision};
use super::gitea::{self, Client, Comment, PAGE_LIMIT, StatusOption, Token};
use super::launch::Launcher;
use super::ledger::{self, Ledger, Outcome, RunRecord};
use super::report::{self, View};
use super::trigger;
use super::webhook::Event;
use crate::config::{Config, Discovery, GiteaConfig, RepoConfig};
use crate::request::RunRequest;
use chrono::{DateTime, SecondsFormat, Utc};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

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
}

/// Why handling one comment stopped; the comment is retried on a later cycle.
#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error(transparent)]
    Gitea(#[from] gitea::Error),
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
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

pub struct Poller {
    config: Config,
    gitea: GiteaConfig,
    client: Client,
    ledger: Ledger,
    launcher: Launcher,
    stop: Arc<AtomicBool>,
    /// No Gitea requests before this instant (429 with a long `Retry-After`).
    backoff_until: Option<Instant>,
    watchdog: Option<Duration>,
    last_ping: Instant,
    recovered: bool,
    cycles: u64,
    /// `discovery = "search"`: the `since` of the next issue search.
    search_cursor: Option<DateTime<Utc>>,
}

/// Consecutive unreachable repos after which a cycle ends early.
const MAX_UNREACHABLE_IN_A_ROW: u32 = 3;

/// How far behind the newest update the issue search looks again (indexer lag).
const SEARCH_MARGIN_S: i64 = 60;

impl Poller {
    pub fn new(config: Config, stop: Arc<AtomicBool>) -> Result<Poller, StartError> {
        let gitea = config.gitea.clone().ok_or(StartError::NoGitea)?;
        let token = read_secret(&gitea.token_file)?;
        let ledger = Ledger::open(&config.state.dir)?;
        let client = Client::new(
            &gitea.url,
            Token::new(token),
            Duration::from_secs(gitea.timeout_s),
        );
        let launcher = Launcher::new(config.launch.clone());
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 3).max(Duration::from_millis(100)));
        Ok(Poller {
            config,
            gitea,
            client,
            ledger,
            launcher,
            stop,
            backoff_until: None,
            watchdog,
            last_ping: Instant::now(),
            recovered: false,
            cycles: 0,
            search_cursor: None,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Tell the watchdog we are alive (at most once per third of its interval).
    fn tick(&mut self) {
        if let Some(every) = self.watchdog
            && self.last_ping.elapsed() >= every
        {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            self.last_ping = Instant::now();
        }
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
                "last cycle: {} requests in {} ms, {} triggers",
                stats.requests,
                stats.elapsed.as_millis(),
                stats.triggers
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
                let rec = record_for(&req);
                if let Err(e) = self.ledger.save_record(&rec) {
                    tracing::error!(run_id = %req.run_id, "{e}");
                }
            }
        }
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
            let repos = self.repos_to_list();
            self.cycles += 1;
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
                match self.poll_repo(repo) {
                    Ok(n) => {
                        triggers += n;
                        unreachable = 0;
                    }
                    Err(e) => {
                        if matches!(e, gitea::Error::Transport { .. }) {
                            unreachable += 1;
                        } else {
                            unreachable = 0;
                        }
                        if let Some(wait) = e.retry_after() {
                            tracing::warn!(repo = %repo.repo, "{e}; pausing gitea requests");
                            self.backoff_until = Some(Instant::now() + wait);
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

    /// The repos whose comments this cycle lists: all of them, or with
    /// `discovery = "search"` only those with recently updated pull requests (and all
    /// of them every `sweep_every` cycles, or when the search fails).
    fn repos_to_list(&mut self) -> Vec<RepoConfig> {
        let all = self.config.repos.clone();
        if self.config.poll.discovery != Discovery::Search
            || self.cycles.is_multiple_of(self.config.poll.sweep_every)
        {
            // A sweep: the search cursor restarts from now (minus the margin).
            self.search_cursor = Some(Utc::now() - chrono::Duration::seconds(SEARCH_MARGIN_S));
            return all;
        }
        let since = rfc3339(self.search_cursor.unwrap_or_else(|| {
            Utc::now() - chrono::Duration::seconds(self.config.poll.lookback_s as i64)
        }));
        let mut names = std::collections::HashSet::new();
        let mut newest: Option<DateTime<Utc>> = None;
        let mut page = 1;
        let mut received = 0;
        loop {
            match self.client.search_pulls(&since, page) {
                Ok((hits, total)) => {
                    let n = hits.len();
                    received += n;
                    for h in hits {
                        if let Some(r) = h.repository {
                            names.insert(r.full_name.to_ascii_lowercase());
                        }
                        if let Some(t) = parse_time(&h.updated_at) {
                            newest = Some(newest.map_or(t, |x| x.max(t)));
                        }
                    }
                    if last_page(n, received, total) {
                        break;
                    }
                    page += 1;
                }
                Err(e) => {
                    if let Some(wait) = e.retry_after() {
                        tracing::warn!("{e}; pausing gitea requests");
                        self.backoff_until = Some(Instant::now() + wait);
                        return Vec::new();
                    }
                    tracing::warn!("issue search failed, listing every repo this cycle: {e}");
                    return all;
                }
            }
        }
        // Keep a margin behind the newest hit: the issue indexer may lag behind.
        if let Some(t) = newest {
            let c = t - chrono::Duration::seconds(SEARCH_MARGIN_S);
            self.search_cursor = Some(self.search_cursor.map_or(c, |old| old.max(c)));
        }
        all.into_iter()
            .filter(|r| names.contains(&r.repo.to_ascii_lowercase()))
            .collect()
    }

    /// List comments updated since the repo's cursor (all pages), act on triggers,
    /// then advance the cursor. Returns the number of new triggers.
    fn poll_repo(&mut self, repo: &RepoConfig) -> gitea::Result<u64> {
        let since = match self.ledger.cursor(&repo.repo) {
            Some(s) => s.to_string(),
            None => {
                rfc3339(Utc::now() - chrono::Duration::seconds(self.config.poll.lookback_s as i64))
            }
        };
        let mut comments: Vec<Comment> = Vec::new();
        let mut page = 1;
        loop {
            let (items, total) = self.client.list_comments(&repo.repo, &since, page)?;
            let n = items.len();
            comments.extend(items);
            if last_page(n, comments.len(), total) || self.stopping() {
                break;
            }
            page += 1;
        }
        // The bot's own comments carry markers: adopt them first (crash recovery).
        let bot: Vec<&Comment> = comments.iter().filter(|c| self.is_bot(c.login())).collect();
        for c in bot {
            self.adopt_marker(c);
        }
        let mut triggers = 0;
        let mut newest = parse_time(&since);
        // The cursor may not pass a comment whose handling failed: it is listed again.
        let mut hold: Option<DateTime<Utc>> = None;
        for c in &comments {
            if self.stopping() {
                return Ok(triggers);
            }
            let updated = parse_time(&c.updated_at);
            if self.may_trigger(c.login())
                && self.ledger.handled(c.id).is_none()
                && let Some(pr) = c.pr_index()
                && trigger::is_trigger(&c.body, &self.config.trigger.command)
            {
                triggers += 1;
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
        let cursor = newest.map(rfc3339).unwrap_or(since);
        if let Err(e) = self.ledger.set_cursor(&repo.repo, &cursor) {
            tracing::error!(repo = %repo.repo, "cannot save cursor: {e}");
        }
        Ok(triggers)
    }

    /// Whether a comment by `login` can start a run at all: never the bot's own, never
    /// one without a user (a server's ghost cannot be authorized, and would hold the
    /// cursor), whichever path (poll or webhook) brought it.
    fn may_trigger(&self, login: &str) -> bool {
        !login.is_empty() && !self.is_bot(login)
    }

    fn is_bot(&self, login: &str) -> bool {
        login.eq_ignore_ascii_case(&self.gitea.bot_user)
    }

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

    /// Authorize, check the PR, write the run request, launch, report.
    fn handle_trigger(
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
            requested_at: record_time(now),
        };
        self.ledger.record_request(&req)?;
        tracing::info!(run_id = %req.run_id, sha = %req.sha, "run requested");
        if std::env::var_os("CCCI_POLL_CRASH_AFTER_REQUEST").is_some() {
            // Fault injection for the integration tests: die between request and launch.
            std::process::abort();
        }
        self.ledger.save_record(&record_for(&req))?;
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
            Ok(_) => {
                o.replied = true;
                if let Err(e) = self.ledger.record_outcome(&o) {
                    tracing::error!(comment_id = o.comment_id, "{e}");
                }
            }
            Err(e) if is_permanent(&e) => {
                tracing::error!(repo = %o.repo, pr, comment_id = o.comment_id,
                    "gitea refuses the refusal reply; giving up: {e}");
                o.replied = true;
                if let Err(e) = self.ledger.record_outcome(&o) {
                    tracing::error!(comment_id = o.comment_id, "{e}");
                }
            }
            Err(e) => tracing::warn!(repo = %o.repo, pr, comment_id = o.comment_id,
                "cannot post the refusal reply (retrying next cycle): {e}"),
        }
    }

    fn retry_replies(&mut self) {
        match self.ledger.unreplied() {
            Ok(list) => {
                for o in list {
                    self.reply_refusal(o);
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// Launch every recorded run not launched yet, unless its runner already started
    /// (its run dir exists: the launch happened before a crash lost the bookkeeping).
    fn launch_pending(&mut self) {
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
            rec.launched_at = Some(record_time(Utc::now()));
            if let Err(e) = self.ledger.save_record(&rec) {
                tracing::error!(run_id = %rec.run_id, "{e}");
            }
        }
    }

    fn report_all(&mut self) {
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
            // An earlier unfinished run of the same pull request holds the app's lock.
            let ahead = records
                .iter()
                .filter(|o| o.repo == rec.repo && o.pr == rec.pr && earlier(o, rec))
                .map(|o| o.run_id.clone())
                .next();
            if let Err(e) = self.report(rec.clone(), ahead.as_deref()) {
                tracing::warn!(run_id = %rec.run_id, repo = %rec.repo, pr = rec.pr, "cannot report (retrying next cycle): {e}");
            }
        }
    }

    /// Bring the commit status and PR comment of one run up to date.
    fn report(
        &mut self,
        mut rec: RunRecord,
        queued_behind: Option<&str>,
    ) -> Result<(), HandleError> {
        let run_dir = self.ledger.runs_dir().join(&rec.run_id);
        let results_path = run_dir.join("results.json");
        let mut unreadable = None;
        let results: Option<crate::results::Results> = match std::fs::read(&results_path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(run_id = %rec.run_id, "unreadable results.json: {e}");
                    unreadable = Some(e.to_string());
                    None
                }
            },
            Err(_) => None,
        };
        let timeout = Duration::from_secs(self.config.poll.start_timeout_s);
        let since_launch = rec
            .launched_at
            .as_deref()
            .and_then(parse_time)
            .map(|t| (Utc::now() - t).to_std().unwrap_or_default())
            .unwrap_or_default();
        let lost;
        let view = match &results {
            Some(r) if !r.finished() => {
                let stale = age(&results_path) > timeout;
                if stale && !self.launcher.is_alive(&rec.run_id) {
                    lost = "runner stopped without finishing its results".to_string();
                    View::Lost(lost)
                } else {
                    View::Results(r)
                }
            }
            Some(r) => View::Results(r),
            None if rec.launched_at.is_none() => {
                let waited = rec
                    .requested_at
                    .as_deref()
                    .and_then(parse_time)
                    .map(|t| (Utc::now() - t).to_std().unwrap_or_default())
                    .unwrap_or_default();
                if waited > timeout {
                    View::Lost(format!(
                        "runner could not be started within {}s",
                        timeout.as_secs()
                    ))
                } else {
                    View::Starting
                }
            }
            None => {
                if since_launch > timeout && !self.launcher.is_alive(&rec.run_id) {
                    View::Lost(match &unreadable {
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
        };
        let finished = match &view {
            View::Lost(_) => true,
            View::Results(r) => r.finished(),
            View::Starting => false,
        };
        let report_md = if finished {
            std::fs::read_to_string(run_dir.join("report.md")).ok()
        } else {
            None
        };
        // The runner writes report.md right after the final results.json: give it a moment.
        if finished
            && report_md.is_none()
            && matches!(view, View::Results(_))
            && age(&results_path) < Duration::from_secs(30)
        {
            return Ok(());
        }
        let run_url = self
            .config
            .report
            .base_url
            .as_ref()
            .map(|b| format!("{}/{}/", b.trim_end_matches('/'), rec.run_id));
        let (state, description) = report::commit_status(&view);
        let key = format!("{state}|{description}");
        if rec.last_status.as_deref() != Some(&key) {
            let status = StatusOption {
                state: state.into(),
                target_url: run_url.clone().unwrap_or_default(),
                description,
                context: self.config.report.context.clone(),
            };
            match self.client.create_status(&rec.repo, &rec.sha, &status) {
                Ok(()) => {
                    tracing::info!(run_id = %rec.run_id, repo = %rec.repo, pr = rec.pr, state, "commit status posted");
                    rec.last_status = Some(key);
                    self.ledger.save_record(&rec)?;
                }
                Err(e) if finished && is_permanent(&e) => {
                    tracing::error!(run_id = %rec.run_id, "giving up on the commit status: {e}");
                    rec.last_status = Some(key);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(pr) = rec.pr {
            let body = report::comment_body(
                &rec.run_id,
                &rec.sha,
                &view,
                report_md.as_deref(),
                run_url.as_deref(),
                queued_behind,
            );
            let digest = hex::encode(sha2::Sha256::digest(body.as_bytes()));
            if rec.last_body.as_deref() != Some(&digest) {
                let result = match rec.status_comment_id {
                    Some(id) => match self.client.edit_comment(&rec.repo, id, &body) {
                        // Someone deleted the comment: post a new one.
                        Err(e) if e.status() == Some(404) => {
                            self.client.create_comment(&rec.repo, pr, &body).map(Some)
                        }
                        other => other.map(|()| None),
                    },
                    None => self.client.create_comment(&rec.repo, pr, &body).map(Some),
                };
                match result {
                    Ok(new_id) => {
                        if let Some(id) = new_id {
                            rec.status_comment_id = Some(id);
                        }
                        rec.last_body = Some(digest);
                        self.ledger.save_record(&rec)?;
                    }
                    Err(e) if finished && is_permanent(&e) => {
                        tracing::error!(run_id = %rec.run_id, "giving up on the PR comment: {e}");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if finished {
            rec.done = true;
            self.ledger.save_record(&rec)?;
            tracing::info!(run_id = %rec.run_id, repo = %rec.repo, pr = rec.pr, state, "final report posted");
        }
        Ok(())
    }
}

/// Whether run `a` was requested before run `b` (run ids order only to the second;
/// Gitea comment ids increase).
fn earlier(a: &RunRecord, b: &RunRecord) -> bool {
    match (a.comment_id, b.comment_id) {
        (Some(x), Some(y)) => x < y,
        _ => a.run_id < b.run_id,
    }
}

/// 4xx other than 429 will not get better by retrying (locked issue, archived repo).
fn is_permanent(e: &gitea::Error) -> bool {
    e.status().is_some_and(|s| (400..500).contains(&s))
}

fn record_for(req: &RunRequest) -> RunRecord {
    RunRecord {
        run_id: req.run_id.clone(),
        repo: req.repo.clone(),
        pr: req.pr,
        sha: req.sha.clone(),
        comment_id: req.comment_id,
        requested_at: Some(req.requested_at.clone()),
        ..RunRecord::default()
    }
}

fn age(path: &Path) -> Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// Whether a page of `n` items is the last, `received` items so far in all, given
/// Gitea's `X-Total-Count`. With a total, count what came: an instance whose
/// `MAX_RESPONSE_ITEMS` is below our `limit` sends full pages shorter than asked for.
/// Without one, a short page is the last.
fn last_page(n: usize, received: usize, total: Option<u64>) -> bool {
    match total {
        Some(t) => n == 0 || received as u64 >= t,
        None => n < PAGE_LIMIT,
    }
}

/// A time for Gitea's `since`/`before` parameters (whole seconds).
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A time for the ledger's own records: milliseconds, so that a start timeout measured
/// from it is not shortened by up to a second of truncation.
fn record_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
