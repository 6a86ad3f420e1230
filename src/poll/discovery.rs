//! Which enrolled repos a cycle lists the comments of (`poll.discovery`).
//!
//! - `per-repo`: every repo, every cycle.
//! - `search`: one issue search for pull requests updated since the last search names
//!   the repos to list; every `sweep_every` cycles, and whenever the search fails,
//!   every repo (a sweep).
//!
//! Whatever the mode, a listed repo is read from its own cursor (see
//! [`super::comments`]), so discovery decides only how soon a comment is seen, never
//! whether it is handled once.
use super::gitea::{self, Client};
use crate::config::{DiscoveryMode, PollConfig, RepoConfig};
use chrono::{DateTime, Utc};
use std::collections::HashSet;

/// How far behind the newest update the issue search looks again (indexer lag).
const SEARCH_MARGIN_S: i64 = 60;

pub struct Discovery {
    mode: DiscoveryMode,
    sweep_every: u64,
    lookback_s: u64,
    /// Cycles planned so far.
    cycles: u64,
    /// `search`: the `since` of the next issue search.
    search_cursor: Option<DateTime<Utc>>,
}

impl Discovery {
    pub fn new(poll: &PollConfig) -> Discovery {
        Discovery {
            mode: poll.discovery,
            sweep_every: poll.sweep_every,
            lookback_s: poll.lookback_s,
            cycles: 0,
            search_cursor: None,
        }
    }

    /// The repos this cycle lists. An error only for a rate limit: the cycle then
    /// pauses all requests.
    pub fn plan(&mut self, client: &Client, all: &[RepoConfig]) -> gitea::Result<Vec<RepoConfig>> {
        let cycle = self.cycles;
        self.cycles += 1;
        if self.mode == DiscoveryMode::PerRepo || cycle.is_multiple_of(self.sweep_every) {
            // A sweep: the search cursor restarts from now (minus the margin).
            self.search_cursor = Some(Utc::now() - chrono::Duration::seconds(SEARCH_MARGIN_S));
            return Ok(all.to_vec());
        }
        match self.search(client) {
            Ok(names) => Ok(all
                .iter()
                .filter(|r| names.contains(&r.repo.to_ascii_lowercase()))
                .cloned()
                .collect()),
            Err(e) if e.retry_after().is_some() => Err(e),
            Err(e) => {
                tracing::warn!("issue search failed, listing every repo this cycle: {e}");
                Ok(all.to_vec())
            }
        }
    }

    /// The repos (lowercase `owner/name`) with pull requests updated since the search
    /// cursor, all pages; moves the cursor to the newest hit minus the margin.
    fn search(&mut self, client: &Client) -> gitea::Result<HashSet<String>> {
        let since = gitea::since(
            self.search_cursor
                .unwrap_or_else(|| Utc::now() - chrono::Duration::seconds(self.lookback_s as i64)),
        );
        let mut names = HashSet::new();
        let mut newest: Option<DateTime<Utc>> = None;
        let mut page = 1;
        let mut received = 0;
        loop {
            let (hits, total) = client.search_pulls(&since, page)?;
            let n = hits.len();
            received += n;
            for h in hits {
                if let Some(r) = h.repository {
                    names.insert(r.full_name.to_ascii_lowercase());
                }
                if let Some(t) = gitea::parse_time(&h.updated_at) {
                    newest = Some(newest.map_or(t, |x| x.max(t)));
                }
            }
            if gitea::last_page(n, received, total) {
                break;
            }
            page += 1;
        }
        // Keep a margin behind the newest hit: the issue indexer may lag behind.
        if let Some(t) = newest {
            let c = t - chrono::Duration::seconds(SEARCH_MARGIN_S);
            self.search_cursor = Some(self.search_cursor.map_or(c, |old| old.max(c)));
        }
        Ok(names)
    }
}
