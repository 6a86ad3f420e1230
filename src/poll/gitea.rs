//! The Gitea REST API v1 client: exactly the endpoints the poller uses, with Gitea's
//! real response shapes (swagger of v1.25), over `ureq` (rustls for https).
//!
//! Redirects are never followed: the token must not travel to another host, and the
//! org-membership endpoint answers 303 when the bot cannot see private members.
//! The token is sent only in the `Authorization` header and never logged.
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Gitea caps pages at 50 (`MAX_RESPONSE_ITEMS`).
pub const PAGE_LIMIT: usize = 50;
/// Longest `Retry-After` the client waits out inline before giving up the request.
/// (Short, so a SIGTERM during the wait still stops well within `TimeoutStopSec`.)
const MAX_INLINE_RETRY: Duration = Duration::from_secs(10);
/// Largest response body read (huge comment bodies are legal; bodies beyond this are
/// an error for that page, logged, and retried next cycle).
const MAX_BODY: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the message (not a `source`), so logs carry it and the
    // error chain printed by `main` does not repeat it.
    #[error("{what}: cannot reach gitea: {error}")]
    Transport {
        what: String,
        error: Box<ureq::Error>,
    },
    #[error("{what}: gitea answered {status}{detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: rate limited (429), retry after {}s", retry_after.as_secs())]
    RateLimited { what: String, retry_after: Duration },
    #[error("{what}: redirect ({status}) to {location:?} not followed")]
    Redirect {
        what: String,
        status: u16,
        location: String,
    },
    #[error("{what}: malformed response: {error}")]
    Json {
        what: String,
        error: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The wait a rate limit asked for, if this is one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// A 4xx other than 429 will not get better by retrying (locked issue, archived repo).
    pub fn is_permanent(&self) -> bool {
        self.status().is_some_and(|s| (400..500).contains(&s))
    }
    /// Gitea did not answer at all (down, reset, timeout).
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Transport { .. })
    }
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

/// Every item of a paged listing: pages 1, 2, … from `page_of` until [`last_page`]
/// says the last came. Gitea sends no `Link` header on these listings, so paging is by
/// explicit `page` and counting.
pub fn all_pages<T>(
    mut page_of: impl FnMut(usize) -> Result<(Vec<T>, Option<u64>)>,
) -> Result<Vec<T>> {
    let mut items = Vec::new();
    for page in 1.. {
        let (batch, total) = page_of(page)?;
        let n = batch.len();
        items.extend(batch);
        if last_page(n, items.len(), total) {
            break;
        }
    }
    Ok(items)
}

/// A time for Gitea's `since`/`before` parameters (RFC 3339, whole seconds).
pub fn since(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A time as Gitea writes it (RFC 3339), or `None`.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An API token; its `Debug` never shows the value.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(value: String) -> Token {
        Token(value)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub login: String,
}

/// `Comment` from `GET /repos/{o}/{r}/issues/comments`.
#[derive(Debug, Clone, Deserialize)]
pub struct Comment {
    pub id: u64,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub pull_request_url: String,
    #[serde(default)]
    pub issue_url: String,
    pub user: Option<User>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
}

impl Comment {
    /// The PR index when this is a pull-request comment: from `pull_request_url`
    /// (`…/pulls/{N}`), or, when a server leaves both API URLs empty, from `html_url`
    /// (`…/pulls/{N}#issuecomment-{id}`). An issue comment has `issue_url` set.
    pub fn pr_index(&self) -> Option<u64> {
        let url = if !self.pull_request_url.is_empty() {
            self.pull_request_url.as_str()
        } else if self.issue_url.is_empty() {
            self.html_url.split('#').next().unwrap_or("")
        } else {
            return None;
        };
        let url = url.trim_end_matches('/');
        let (rest, last) = url.rsplit_once('/')?;
        if !rest.ends_with("/pulls") {
            return None;
        }
        last.parse().ok()
    }
    pub fn login(&self) -> &str {
        self.user.as_ref().map(|u| u.login.as_str()).unwrap_or("")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub clone_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Branch {
    #[serde(rename = "ref", default)]
    pub git_ref: String,
    pub sha: String,
    pub repo: Option<Repository>,
}

/// `PullRequest` from `GET /repos/{o}/{r}/pulls/{N}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Pull {
    pub number: u64,
    pub state: String,
    #[serde(default)]
    pub merged: bool,
    pub head: Branch,
    pub base: Branch,
}

/// The repository of an `Issue` in search results (`RepositoryMeta`).
#[derive(Debug, Clone, Deserialize)]
pub struct RepositoryMeta {
    #[serde(default)]
    pub full_name: String,
}

/// An `Issue` from `GET /repos/issues/search` (only the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct IssueHit {
    pub number: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub updated_at: String,
    pub repository: Option<RepositoryMeta>,
}

/// The subject of a notification thread (`NotificationSubject`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Subject {
    #[serde(default)]
    pub title: String,
    /// The issue's API URL (`…/repos/{o}/{r}/issues/{N}`, also for pull requests).
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub html_url: String,
    /// `Issue`, `Pull`, `Commit`, `Repository`, `Release`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `open`, `closed`, `merged`.
    #[serde(default)]
    pub state: String,
}

/// A `NotificationThread` from `GET /notifications`: one per (user, issue), its
/// `updated_at` moving on every new event. It names what changed, never which comments.
#[derive(Debug, Clone, Deserialize)]
pub struct Thread {
    pub id: u64,
    pub repository: Option<RepositoryMeta>,
    pub subject: Option<Subject>,
    #[serde(default)]
    pub updated_at: String,
}

impl Thread {
    /// The repo (`owner/name`) and index of the pull request this thread is about, if it
    /// is about one: the index is the last path segment of the subject's API URL (or,
    /// when a server leaves that empty, of its web URL).
    pub fn pull(&self) -> Option<(&str, u64)> {
        let subject = self.subject.as_ref().filter(|s| s.kind == "Pull")?;
        let repo = self.repository.as_ref()?.full_name.as_str();
        let url = if subject.url.is_empty() {
            &subject.html_url
        } else {
            &subject.url
        };
        let index = url.trim_end_matches('/').rsplit('/').next()?.parse().ok()?;
        (!repo.is_empty()).then_some((repo, index))
    }
}

/// `CreateStatusOption`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusOption {
    pub state: String,
    /// Left out when there is no run page (`report.base_url` unset).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_url: String,
    pub description: String,
    pub context: String,
}

/// What `GET /orgs/{org}/members/{user}` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Member,
    NotMember,
    /// 303 to `public_members`: the bot is not in the org and cannot see private members.
    BotCannotSee,
}

pub struct Client {
    agent: ureq::Agent,
    api: String,
    token: Token,
    requests: AtomicU64,
    /// The server's clock: the `Date` of its last answer (Unix seconds; 0 before any).
    server_time: AtomicI64,
}

impl Client {
    pub fn new(base_url: &str, token: Token, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent(concat!("cc-ci/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: config.into(),
            api: format!("{}/api/v1", base_url.trim_end_matches('/')),
            token,
            requests: AtomicU64::new(0),
            server_time: AtomicI64::new(0),
        }
    }

    /// Gitea's clock as of its last answer (its `Date` header), for `since` values that
    /// must not depend on this machine's clock agreeing with the server's.
    pub fn server_time(&self) -> Option<DateTime<Utc>> {
        match self.server_time.load(Ordering::Relaxed) {
            0 => None,
            secs => DateTime::from_timestamp(secs, 0),
        }
    }

    /// HTTP requests sent so far (for the cost benchmark and logs).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// One request; a 429 with a short `Retry-After` is waited out and retried once.
    fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, ureq::http::HeaderMap, Vec<u8>)> {
        let what = format!("{method} {path}");
        let mut retried = false;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let url = format!("{}{}", self.api, path);
            let auth = format!("token {}", self.token.0);
            let result = match (method, body) {
                ("GET", _) => {
                    let mut r = self.agent.get(&url);
                    for (k, v) in query {
                        r = r.query(*k, v);
                    }
                    r.header("Authorization", &auth)
                        .header("Accept", "application/json")
                        .call()
                }
                ("POST" | "PATCH", Some(b)) => {
                    let r = if method == "POST" {
                        self.agent.post(&url)
                    } else {
                        self.agent.patch(&url)
                    };
                    r.header("Authorization", &auth)
                        .header("Accept", "application/json")
                        .header("Content-Type", "application/json")
                        .send(&serde_json::to_vec(b).expect("json serialises")[..])
                }
                ("PUT", None) => self
                    .agent
                    .put(&url)
                    .header("Authorization", &auth)
                    .header("Accept", "application/json")
                    .send_empty(),
                _ => unreachable!("unsupported method {method}"),
            };
            let mut resp = result.map_err(|e| Error::Transport {
                what: what.clone(),
                error: Box::new(e),
            })?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            if let Some(date) = headers
                .get("Date")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            {
                self.server_time.store(date.timestamp(), Ordering::Relaxed);
            }
            if status == 429 {
                let wait = headers
                    .get("Retry-After")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, chrono::Utc::now()))
                    .unwrap_or(Duration::from_secs(60));
                if !retried && wait <= MAX_INLINE_RETRY {
                    tracing::warn!(request = %what, wait_s = wait.as_secs(), "gitea rate limited; waiting");
                    std::thread::sleep(wait);
                    retried = true;
                    continue;
                }
                return Err(Error::RateLimited {
                    what,
                    retry_after: wait,
                });
            }
            if (300..400).contains(&status) {
                let location = headers
                    .get("Location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                return Ok((status, headers, location.into_bytes()));
            }
            let bytes = resp
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_vec()
                .map_err(|e| Error::Transport {
                    what: what.clone(),
                    error: Box::new(e),
                })?;
            return Ok((status, headers, bytes));
        }
    }

    fn expect(&self, what: String, status: u16, ok: &[u16], bytes: &[u8]) -> Result<()> {
        if ok.contains(&status) {
            return Ok(());
        }
        if (300..400).contains(&status) {
            return Err(Error::Redirect {
                what,
                status,
                location: String::from_utf8_lossy(bytes).into_owned(),
            });
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        let detail = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or(text);
        let detail = if detail.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", detail.trim())
        };
        Err(Error::Status {
            what,
            status,
            detail,
        })
    }

    fn json<T: serde::de::DeserializeOwned>(what: String, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|error| Error::Json { what, error })
    }

    /// One page of a repo's issue and PR comments updated at or after `since`
    /// (RFC 3339, inclusive), oldest first; also `X-Total-Count` when sent.
    pub fn list_comments(
        &self,
        repo: &str,
        since: &str,
        page: usize,
    ) -> Result<(Vec<Comment>, Option<u64>)> {
        let path = format!("/repos/{repo}/issues/comments");
        let query = [
            ("since", since.to_string()),
            ("page", page.to_string()),
            ("limit", PAGE_LIMIT.to_string()),
        ];
        self.get_page(&path, &query)
    }

    /// A paged GET: the items and Gitea's `X-Total-Count` (the comments list sends no
    /// `Link` header, so paging stops on a short page or at the total).
    fn get_page<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(Vec<T>, Option<u64>)> {
        let (status, headers, bytes) = self.send("GET", path, query, None)?;
        let what = format!("GET {path}");
        self.expect(what.clone(), status, &[200], &bytes)?;
        let total = headers
            .get("X-Total-Count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok((Self::json(what, &bytes)?, total))
    }

    /// One page of pull requests (any repo the bot can see, open or closed) updated
    /// at or after `since`: a new comment bumps its pull request's update time.
    pub fn search_pulls(&self, since: &str, page: usize) -> Result<(Vec<IssueHit>, Option<u64>)> {
        let path = "/repos/issues/search".to_string();
        let query = [
            ("type", "pulls".to_string()),
            ("state", "all".to_string()),
            ("since", since.to_string()),
            ("page", page.to_string()),
            ("limit", PAGE_LIMIT.to_string()),
        ];
        self.get_page(&path, &query)
    }

    /// One page of the bot's pull-request notification threads, read or not, updated at
    /// or after `since` (inclusive, whole seconds), newest first; and `X-Total-Count`.
    /// Needs the token's `read:notification` scope (else 403).
    pub fn notifications(&self, since: &str, page: usize) -> Result<(Vec<Thread>, Option<u64>)> {
        let query = [
            ("all", "true".to_string()),
            ("subject-type", "pull".to_string()),
            ("since", since.to_string()),
            ("page", page.to_string()),
            ("limit", PAGE_LIMIT.to_string()),
        ];
        self.get_page("/notifications", &query)
    }

    /// Watch a repository (`PUT /repos/{o}/{r}/subscription`): its pull requests'
    /// events then notify the bot. Needs `write:repository`.
    pub fn watch(&self, repo: &str) -> Result<()> {
        let path = format!("/repos/{repo}/subscription");
        let (code, _, bytes) = self.send("PUT", &path, &[], None)?;
        self.expect(format!("PUT {path}"), code, &[200, 201], &bytes)
    }

    /// Subscribe `user` to issue or pull request `index` (200: already subscribed, 201:
    /// subscribed): its events then notify the user even where watching does not (a
    /// pull request whose title marks it work in progress). Needs `write:issue`.
    pub fn subscribe(&self, repo: &str, index: u64, user: &str) -> Result<()> {
        let path = format!("/repos/{repo}/issues/{index}/subscriptions/{user}");
        let (code, _, bytes) = self.send("PUT", &path, &[], None)?;
        self.expect(format!("PUT {path}"), code, &[200, 201], &bytes)
    }

    /// A pull request; `None` when it does not exist (deleted, or not a PR).
    pub fn get_pull(&self, repo: &str, index: u64) -> Result<Option<Pull>> {
        let path = format!("/repos/{repo}/pulls/{index}");
        let (status, _, bytes) = self.send("GET", &path, &[], None)?;
        if status == 404 {
            return Ok(None);
        }
        let what = format!("GET {path}");
        self.expect(what.clone(), status, &[200], &bytes)?;
        Ok(Some(Self::json(what, &bytes)?))
    }

    pub fn membership(&self, org: &str, user: &str) -> Result<Membership> {
        let path = format!("/orgs/{org}/members/{user}");
        let (status, _, bytes) = self.send("GET", &path, &[], None)?;
        match status {
            204 => Ok(Membership::Member),
            404 => Ok(Membership::NotMember),
            302 | 303 => Ok(Membership::BotCannotSee),
            _ => {
                self.expect(format!("GET {path}"), status, &[], &bytes)?;
                unreachable!()
            }
        }
    }

    pub fn create_status(&self, repo: &str, sha: &str, status: &StatusOption) -> Result<()> {
        let path = format!("/repos/{repo}/statuses/{sha}");
        let body = serde_json::to_value(status).expect("status serialises");
        let (code, _, bytes) = self.send("POST", &path, &[], Some(&body))?;
        self.expect(format!("POST {path}"), code, &[200, 201], &bytes)
    }

    /// Create a comment on issue/PR `index`; returns the new comment's id.
    pub fn create_comment(&self, repo: &str, index: u64, body: &str) -> Result<u64> {
        let path = format!("/repos/{repo}/issues/{index}/comments");
        let payload = serde_json::json!({ "body": body });
        let (code, _, bytes) = self.send("POST", &path, &[], Some(&payload))?;
        let what = format!("POST {path}");
        self.expect(what.clone(), code, &[200, 201], &bytes)?;
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        Ok(Self::json::<Created>(what, &bytes)?.id)
    }

    pub fn edit_comment(&self, repo: &str, id: u64, body: &str) -> Result<()> {
        let path = format!("/repos/{repo}/issues/comments/{id}");
        let payload = serde_json::json!({ "body": body });
        let (code, _, bytes) = self.send("PATCH", &path, &[], Some(&payload))?;
        self.expect(format!("PATCH {path}"), code, &[200, 201], &bytes)
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110, 10.2.3); a date in
/// the past is no wait.
fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T14:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 25 Nov 2026 14:02:30 GMT", now),
            Some(Duration::from_secs(150))
        );
        assert_eq!(
            retry_after("Wed, 25 Nov 2026 13:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    fn comment(pr: &str, issue: &str) -> Comment {
        with_html(pr, issue, "")
    }

    fn with_html(pr: &str, issue: &str, html: &str) -> Comment {
        Comment {
            id: 1,
            html_url: html.into(),
            pull_request_url: pr.into(),
            issue_url: issue.into(),
            user: None,
            body: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn pr_index_from_pull_request_url_only() {
        assert_eq!(comment("https://g/o/r/pulls/7", "").pr_index(), Some(7));
        assert_eq!(comment("", "https://g/o/r/issues/7").pr_index(), None);
        assert_eq!(comment("https://g/o/r/issues/7", "").pr_index(), None);
        assert_eq!(comment("https://g/o/r/pulls/x", "").pr_index(), None);
    }

    #[test]
    fn pr_index_falls_back_to_html_url_only_when_both_api_urls_are_empty() {
        let html = "https://g/o/r/pulls/9#issuecomment-4";
        assert_eq!(with_html("", "", html).pr_index(), Some(9));
        assert_eq!(
            with_html("", "https://g/o/r/issues/9", html).pr_index(),
            None
        );
        assert_eq!(
            with_html("", "", "https://g/o/r/issues/9#issuecomment-4").pr_index(),
            None
        );
        assert_eq!(with_html("", "", "").pr_index(), None);
    }

    #[test]
    fn thread_names_its_pull_request() {
        let thread = |kind: &str, url: &str, html: &str| Thread {
            id: 1,
            repository: Some(RepositoryMeta {
                full_name: "o/r".into(),
            }),
            subject: Some(Subject {
                kind: kind.into(),
                url: url.into(),
                html_url: html.into(),
                ..Subject::default()
            }),
            updated_at: String::new(),
        };
        let api = "https://g/api/v1/repos/o/r/issues/7";
        assert_eq!(thread("Pull", api, "").pull(), Some(("o/r", 7)));
        assert_eq!(
            thread("Pull", "", "https://g/o/r/pulls/8").pull(),
            Some(("o/r", 8))
        );
        assert_eq!(thread("Issue", api, "").pull(), None);
        assert_eq!(thread("Pull", "https://g/o/r", "").pull(), None);
    }

    #[test]
    fn token_debug_hides_value() {
        let t = Token::new("s3cr3t-value".into());
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }
}
