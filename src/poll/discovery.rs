//! Which enrolled repos a cycle lists the comments of (`poll.discovery`).
//!
//! - `per-repo`: every repo, every cycle.
//! - `search`: one issue search for pull requests updated since the last search names
//!   the repos to list; every `sweep_every` cycles, and whenever the search fails,
//!   every repo (a sweep).
//! - `notifications` (the default): the bot watches every enrolled repo (at start) and
//!   is subscribed to every pull request it learns of; each cycle reads its
//!   notification threads once (`GET /notifications?since=`) and lists the repos whose
//!   pull requests changed. What notifications miss (work-in-progress pull requests
//!   the bot was not yet subscribed to, edits, dropped queue items) the issue search
//!   catches every `search_every` cycles and a sweep every `sweep_every` cycles. When
//!   Gitea refuses notifications for good (the token lacks `read:notification`, the
//!   bot may not watch, no such endpoint), discovery falls back to `search`, says why
//!   in the log and in the unit's status, and carries on.
//!
//! Whatever the mode, a listed repo is read from its own cursor (see
//! [`super::comments`]), so discovery decides only how soon a comment is seen, never
//! whether it is handled once. A repo named by any source stays due until one listing
//! of it succeeds: a sweep cut short, or a listing that failed, carries over to the
//! next cycle.
use super::comments::Listing;
use super::gitea::{self, Client};
use super::heartbeat::Heartbeat;
use crate::config::{DiscoveryMode, PollConfig, RepoConfig};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap, HashSet};

/// How far behind the newest update the issue search looks again (indexer lag).
const SEARCH_MARGIN_S: i64 = 60;
/// How far behind Gitea's clock at the last read the next notifications read starts:
/// a thread stamped just before a read may be committed just after it.
const NOTIFY_MARGIN_S: i64 = 60;

pub struct Discovery {
    poll: PollConfig,
    /// The mode in use: the configured one, or `search` after a fallback.
    mode: DiscoveryMode,
    /// Why notifications are not used although configured.
    fallback: Option<String>,
    bot: String,
    /// Cycles planned so far.
    cycles: u64,
    /// The `since` of the next issue search.
    search_cursor: Option<DateTime<Utc>>,
    /// Search hits acted on (repo lowercase, index).
    search_seen: Seen<(String, u64)>,
    /// Repos (lowercase `owner/name`) to list until one listing of them succeeds.
    due: HashSet<String>,
    notify: Notifications,
}

/// What the `notifications` mode keeps between cycles.
#[derive(Default)]
struct Notifications {
    /// Set up: the watch requests were sent.
    started: bool,
    /// Enrolled repos not watched yet (a watch failed for a passing reason): retried,
    /// and listed every cycle meanwhile.
    unwatched: BTreeSet<String>,
    /// The `since` of the next read.
    since: Option<DateTime<Utc>>,
    /// Threads acted on, by id.
    seen: Seen<u64>,
    /// Pull requests the bot is subscribed to (repo lowercase, index).
    subscribed: HashSet<(String, u64)>,
    /// Gitea refused a subscription for good: not asked again.
    subscribe_refused: bool,
}

impl Discovery {
    pub fn new(poll: &PollConfig, bot: &str) -> Discovery {
        Discovery {
            poll: poll.clone(),
            mode: poll.discovery,
            fallback: None,
            bot: bot.to_string(),
            cycles: 0,
            search_cursor: None,
            search_seen: Seen::default(),
            due: HashSet::new(),
            notify: Notifications::default(),
        }
    }

    /// The mode in use, and why it is not the configured one, for the unit's status.
    pub fn describe(&self) -> String {
        match &self.fallback {
            Some(why) => format!("discovery: search (notifications unavailable: {why})"),
            None => format!("discovery: {}", self.mode.as_str()),
        }
    }

    /// The repos this cycle lists, in config order. An error only for a rate limit:
    /// the cycle then pauses all requests.
    pub fn plan(
        &mut self,
        client: &Client,
        all: &[RepoConfig],
        heartbeat: &mut Heartbeat,
    ) -> gitea::Result<Vec<RepoConfig>> {
        let cycle = self.cycles;
        self.cycles += 1;
        let enrolled: HashSet<String> = all.iter().map(|r| key(&r.repo)).collect();
        // Notifications failed this cycle: the issue search stands in.
        let mut stand_in = false;
        if self.mode == DiscoveryMode::Notifications {
            if !self.notify.started {
                self.notify.started = true;
                self.notify.unwatched = enrolled.iter().cloned().collect();
            }
            self.watch(client, heartbeat)?;
        }
        // (Watching may have fallen back to search.)
        if self.mode == DiscoveryMode::Notifications {
            match self.read_notifications(client, &enrolled) {
                Ok(()) => {}
                Err(e) if e.retry_after().is_some() => return Err(e),
                Err(e) if matches!(e.status(), Some(403 | 404)) => {
                    self.fall_back(notifications_refused(&e))
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot read notifications (the issue search stands in this cycle): {e}"
                    );
                    stand_in = true;
                }
            }
            self.due.extend(self.notify.unwatched.iter().cloned());
        }
        let search = match self.mode {
            DiscoveryMode::PerRepo => false,
            DiscoveryMode::Search => true,
            DiscoveryMode::Notifications => {
                stand_in || cycle.is_multiple_of(self.poll.search_every())
            }
        };
        if cycle.is_multiple_of(self.poll.sweep_every()) {
            // A sweep: the search restarts from now (minus the margin).
            self.search_cursor = Some(now(client) - chrono::Duration::seconds(SEARCH_MARGIN_S));
            self.due.extend(enrolled.iter().cloned());
        } else if search {
            match self.search(client, &enrolled) {
                Ok(()) => {}
                Err(e) if e.retry_after().is_some() => return Err(e),
                Err(e) => {
                    tracing::warn!("issue search failed, listing every repo this cycle: {e}");
                    self.due.extend(enrolled.iter().cloned());
                }
            }
        }
        Ok(all
            .iter()
            .filter(|r| self.due.contains(&key(&r.repo)))
            .cloned()
            .collect())
    }

    /// One listing of `repo` went through: it is no longer due unless the listing left
    /// a comment for later; the pull requests it named get the bot's subscription.
    pub fn listed(
        &mut self,
        client: &Client,
        repo: &RepoConfig,
        listing: &Listing,
    ) -> gitea::Result<()> {
        if listing.complete {
            self.due.remove(&key(&repo.repo));
        }
        for &pr in &listing.pulls {
            self.subscribe(client, &repo.repo, pr)?;
        }
        Ok(())
    }

    /// A listing of `repo` failed: retried next cycle, unless Gitea's answer will not
    /// change by asking again (a repo that does not exist waits for the next sweep).
    pub fn failed(&mut self, repo: &RepoConfig, e: &gitea::Error) {
        if e.is_permanent() {
            self.due.remove(&key(&repo.repo));
        }
    }

    fn fall_back(&mut self, why: String) {
        tracing::error!(
            "notifications discovery is unavailable; falling back to discovery = \"search\": {why}"
        );
        self.poll.discovery = DiscoveryMode::Search;
        self.mode = DiscoveryMode::Search;
        self.notify.unwatched.clear();
        self.fallback = Some(why);
    }

    /// Watch the repos not watched yet. A 404 is a repo that does not exist (or the bot
    /// cannot see): said, and left to the sweeps; a 403 means the bot may not watch at
    /// all: fall back. Anything else is retried next cycle.
    fn watch(&mut self, client: &Client, heartbeat: &mut Heartbeat) -> gitea::Result<()> {
        for repo in self.notify.unwatched.clone() {
            if heartbeat.stopping() {
                return Ok(());
            }
            heartbeat.beat();
            match client.watch(&repo) {
                Ok(()) => {}
                Err(e) if e.retry_after().is_some() => return Err(e),
                Err(e) if e.status() == Some(404) => tracing::error!(repo = %repo,
                    "cannot watch the enrolled repo: it does not exist or the bot cannot see it; fix its name in [[repos]] or give the bot read access: {e}"),
                Err(e) if e.status() == Some(403) => {
                    self.fall_back(format!(
                        "the bot may not watch {repo}: {e}; give its token the write:repository scope (commit statuses need it too) and restart, or set poll.discovery = \"search\""
                    ));
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(repo = %repo,
                        "cannot watch the repo yet (retried next cycle; listed every cycle meanwhile): {e}");
                    if e.is_transport() {
                        return Ok(());
                    }
                    continue;
                }
            }
            // Listed once more now: what came before the watch notified nobody.
            self.notify.unwatched.remove(&repo);
            self.due.insert(repo);
        }
        Ok(())
    }

    /// Read the notification threads updated since the last read (all pages): every
    /// enrolled repo with a pull request thread that moved becomes due, and the bot
    /// subscribes to that pull request.
    fn read_notifications(
        &mut self,
        client: &Client,
        enrolled: &HashSet<String>,
    ) -> gitea::Result<()> {
        let since = self
            .notify
            .since
            .unwrap_or_else(|| now(client) - chrono::Duration::seconds(NOTIFY_MARGIN_S));
        let since_param = gitea::since(since);
        let (threads, read_at) =
            read_stamped(client, |page| client.notifications(&since_param, page))?;
        let mut pulls = Vec::new();
        for t in &threads {
            let Some((repo, index)) = t.pull() else {
                continue;
            };
            let Some(updated) = gitea::parse_time(&t.updated_at) else {
                continue;
            };
            let repo_key = key(repo);
            if !enrolled.contains(&repo_key) || !self.notify.seen.news(t.id, updated, read_at) {
                continue;
            }
            self.due.insert(repo_key);
            if t.subject.as_ref().is_some_and(|s| s.state == "open") {
                pulls.push((repo.to_string(), index));
            }
        }
        let next = read_at - chrono::Duration::seconds(NOTIFY_MARGIN_S);
        self.notify.seen.forget_before(next);
        self.notify.since = Some(next);
        for (repo, index) in pulls {
            self.subscribe(client, &repo, index)?;
        }
        Ok(())
    }

    /// Subscribe the bot to a pull request it learnt of (once): its comments then
    /// notify the bot also while its title says work in progress, which skips watchers.
    fn subscribe(&mut self, client: &Client, repo: &str, index: u64) -> gitea::Result<()> {
        if self.mode != DiscoveryMode::Notifications || self.notify.subscribe_refused {
            return Ok(());
        }
        let id = (key(repo), index);
        if self.notify.subscribed.contains(&id) {
            return Ok(());
        }
        match client.subscribe(repo, index, &self.bot) {
            Ok(()) => {
                self.notify.subscribed.insert(id);
            }
            Err(e) if e.retry_after().is_some() => return Err(e),
            Err(e) if e.status() == Some(403) => {
                tracing::error!(repo = %repo, pr = index,
                    "gitea refuses to subscribe the bot to pull requests, so comments on work-in-progress ones are found only by the issue search (every poll.search_every cycles); give the bot's token the write:issue scope (its comments need it too): {e}");
                self.notify.subscribe_refused = true;
            }
            Err(e) => tracing::warn!(repo = %repo, pr = index,
                "cannot subscribe the bot to the pull request (retried when it is seen again): {e}"),
        }
        Ok(())
    }

    /// Ask the issue search which pull requests were updated since its cursor (all
    /// pages): their enrolled repos become due, and the bot subscribes to the open
    /// ones. Moves the cursor to the newest hit minus the margin.
    fn search(&mut self, client: &Client, enrolled: &HashSet<String>) -> gitea::Result<()> {
        let since = gitea::since(self.search_cursor.unwrap_or_else(|| {
            now(client) - chrono::Duration::seconds(self.poll.lookback_s as i64)
        }));
        let (hits, read_at) = read_stamped(client, |page| client.search_pulls(&since, page))?;
        let mut newest: Option<DateTime<Utc>> = None;
        let mut pulls = Vec::new();
        for h in hits {
            let Some(updated) = gitea::parse_time(&h.updated_at) else {
                continue;
            };
            newest = Some(newest.map_or(updated, |x| x.max(updated)));
            if let Some(r) = h.repository
                && enrolled.contains(&key(&r.full_name))
                && self
                    .search_seen
                    .news((key(&r.full_name), h.number), updated, read_at)
            {
                self.due.insert(key(&r.full_name));
                if h.state == "open" {
                    pulls.push((r.full_name, h.number));
                }
            }
        }
        // Keep a margin behind the newest hit: the issue indexer may lag behind.
        if let Some(t) = newest {
            let c = t - chrono::Duration::seconds(SEARCH_MARGIN_S);
            let cursor = self.search_cursor.map_or(c, |old| old.max(c));
            self.search_cursor = Some(cursor);
            self.search_seen.forget_before(cursor);
        }
        for (repo, index) in pulls {
            self.subscribe(client, &repo, index)?;
        }
        Ok(())
    }
}

/// What a source (notification threads, search hits) named and was acted on, with the
/// update time acted on: read again (the `since` of the next read keeps a margin), it
/// names nothing new unless it moved.
struct Seen<K> {
    acted_on: HashMap<K, DateTime<Utc>>,
}

impl<K> Default for Seen<K> {
    fn default() -> Self {
        Seen {
            acted_on: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq> Seen<K> {
    /// Whether `item`, updated at `updated`, is news; remembered unless it was stamped
    /// in the very second of the read at `read_at` (Gitea's clock, whole seconds): it
    /// may move again within that second without its update time changing, so it is
    /// news again on the next read.
    fn news(&mut self, item: K, updated: DateTime<Utc>, read_at: DateTime<Utc>) -> bool {
        if self.acted_on.get(&item) == Some(&updated) {
            return false;
        }
        if updated < read_at {
            self.acted_on.insert(item, updated);
        }
        true
    }

    /// Forget what was updated before `t`: the next read starts there.
    fn forget_before(&mut self, t: DateTime<Utc>) {
        self.acted_on.retain(|_, u| *u >= t);
    }
}

/// Repos compare case-insensitively, as Gitea's names do.
fn key(repo: &str) -> String {
    repo.to_ascii_lowercase()
}

/// Every item of a paged read, and Gitea's clock when it answered the first page:
/// what is stamped after that is for the next read.
fn read_stamped<T>(
    client: &Client,
    mut page_of: impl FnMut(usize) -> gitea::Result<(Vec<T>, Option<u64>)>,
) -> gitea::Result<(Vec<T>, DateTime<Utc>)> {
    let mut read_at = None;
    let items = gitea::all_pages(|page| {
        let answer = page_of(page);
        read_at = read_at.or_else(|| client.server_time());
        answer
    })?;
    Ok((items, read_at.unwrap_or_else(Utc::now)))
}

/// Gitea's clock when known (its last answer's `Date`), else ours.
fn now(client: &Client) -> DateTime<Utc> {
    client.server_time().unwrap_or_else(Utc::now)
}

/// Why a refused notifications read means falling back, and the fix.
fn notifications_refused(e: &gitea::Error) -> String {
    match e.status() {
        Some(404) => format!(
            "this gitea has no notifications API ({e}); upgrade gitea, or set poll.discovery = \"search\""
        ),
        _ => format!(
            "gitea refuses to list the bot's notifications ({e}); give the bot's token the read:notification scope and restart, or set poll.discovery = \"search\""
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        gitea::parse_time(s).unwrap()
    }

    #[test]
    fn seen_names_an_item_once_per_update_and_not_in_the_second_of_the_read() {
        let mut seen = Seen::default();
        let t = at("2026-01-01T00:00:10Z");
        // Read in the second it was stamped: news now and on the next read.
        assert!(seen.news(1, t, at("2026-01-01T00:00:10Z")));
        assert!(seen.news(1, t, at("2026-01-01T00:00:11Z")));
        // From then on it names nothing new, until it moves.
        assert!(!seen.news(1, t, at("2026-01-01T00:00:12Z")));
        let moved = at("2026-01-01T00:00:20Z");
        assert!(seen.news(1, moved, at("2026-01-01T00:00:30Z")));
        assert!(!seen.news(1, moved, at("2026-01-01T00:00:31Z")));
        seen.forget_before(at("2026-01-01T00:00:21Z"));
        assert!(seen.news(1, moved, at("2026-01-01T00:00:32Z")), "forgotten");
    }
}
