//! GITEA TEST DOUBLE: an HTTP server on 127.0.0.1 serving exactly the Gitea REST API v1
//! endpoints the poller uses, with Gitea's response shapes (swagger of v1.25), its
//! paging (`page`, `limit` capped at 50, `X-Total-Count`, no `Link` header), its
//! `since` semantics (updated time, inclusive, whole seconds), a `Date` header on
//! every answer, token scopes, and fault injection.
//!
//! Notifications follow Gitea's source (`services/uinotification`,
//! `models/activities/notification_list.go`): an event goes through a queue (items
//! become visible `notify_delay` later, stamped with that time; `drop_notifications`
//! drops the next ones, as a failed queue item is dropped); a new comment notifies the
//! pull request's subscribers, the repo's watchers unless the title has a WIP prefix,
//! and its participants (poster and commenters), never the comment's author; a new
//! pull request notifies the watchers whatever its title; an edit notifies nobody; a
//! lone inline code comment notifies only the users it @mentions (and is not in the
//! comments listings, which return plain comments only). There is one thread per
//! (user, issue): a second event only moves its `updated_at`.
//! It is not Gitea; it exists only for the tests and the benchmark.
#![allow(dead_code)]

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct StoredComment {
    pub id: u64,
    pub pr: Option<u64>,
    pub issue: u64,
    pub user: String,
    pub body: String,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// An inline code comment: not in the comments listings.
    pub code: bool,
}

#[derive(Debug, Clone)]
pub struct StoredPull {
    pub number: u64,
    pub state: String,
    pub merged: bool,
    pub head_sha: String,
    pub head_ref: String,
    pub fork_deleted: bool,
    /// The issue's `updated_unix`: a new comment bumps it, an edit does not.
    pub updated: DateTime<Utc>,
    pub title: String,
    pub poster: String,
}

/// A notification thread: one per (user, issue).
#[derive(Debug, Clone)]
pub struct StoredThread {
    pub id: u64,
    pub user: String,
    pub repo: String,
    pub issue: u64,
    pub is_pull: bool,
    pub updated: DateTime<Utc>,
    pub unread: bool,
}

/// An event waiting in the notification queue.
#[derive(Debug, Clone)]
struct Queued {
    visible_at: DateTime<Utc>,
    repo: String,
    issue: u64,
    is_pull: bool,
    author: String,
    /// Who it goes to: everyone Gitea's rules name (`None`), or these users only
    /// (a new pull request's watchers, an inline comment's mentions).
    only: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct StoredRepo {
    pub comments: Vec<StoredComment>,
    pub pulls: BTreeMap<u64, StoredPull>,
}

/// What to do to matching requests.
#[derive(Debug, Clone)]
pub enum FaultKind {
    Status(u16),
    Malformed,
    Delay(Duration),
    RateLimit(u64),
    /// Close the connection without answering.
    Drop,
    /// 302 to this URL (a proxy or a moved instance pointing elsewhere).
    Redirect(String),
}

#[derive(Debug, Clone)]
pub struct Fault {
    /// Applies to requests whose `METHOD path` contains this.
    pub matching: String,
    pub kind: FaultKind,
    /// How many requests it applies to.
    pub times: usize,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub repo: String,
    pub sha: String,
    pub state: String,
    pub description: String,
    pub target_url: String,
    pub context: String,
}

#[derive(Default)]
pub struct State {
    pub token: String,
    pub bot: String,
    pub repos: HashMap<String, StoredRepo>,
    pub members: HashMap<String, HashSet<String>>,
    /// Whether the bot is in the org; if not, membership checks answer 303.
    pub bot_in_org: bool,
    pub statuses: Vec<Status>,
    /// Every request: `METHOD path?query`.
    pub log: Vec<String>,
    pub faults: Vec<Fault>,
    pub next_id: u64,
    pub base: String,
    /// Clone URLs that differ from `<base>/<repo>.git` (e.g. a local repository path,
    /// for tests where a real runner clones the recipe).
    pub clone_urls: HashMap<String, String>,
    /// Authorization headers that were not the expected token (should stay empty).
    pub bad_auth: Vec<String>,
    /// Gitea's `[api] MAX_RESPONSE_ITEMS` (default 50): the cap on `limit`.
    pub max_response_items: usize,
    /// Scopes the token lacks (`read:notification`, `write:repository`, ...): the
    /// routes that need them answer 403 as Gitea does.
    pub missing_scopes: HashSet<String>,
    /// `false`: a server without `GET /notifications` (404).
    pub notifications_api: bool,
    /// (user, repo) watching.
    pub watchers: HashSet<(String, String)>,
    /// (user, repo, issue) subscribed.
    pub subscribers: HashSet<(String, String, u64)>,
    pub threads: Vec<StoredThread>,
    queue: Vec<Queued>,
    /// How long a notification waits in the queue.
    pub notify_delay: Duration,
    /// Drop this many of the next queue items (a failed item is not retried).
    pub drop_notifications: usize,
}

impl State {
    fn enqueue(
        &mut self,
        repo: &str,
        issue: u64,
        is_pull: bool,
        author: &str,
        only: Option<Vec<String>>,
    ) {
        if self.drop_notifications > 0 {
            self.drop_notifications -= 1;
            return;
        }
        self.queue.push(Queued {
            visible_at: Utc::now() + self.notify_delay,
            repo: repo.into(),
            issue,
            is_pull,
            author: author.into(),
            only,
        });
    }

    /// Process the queue items due by now, as Gitea's notification service does.
    fn deliver(&mut self) {
        let now = Utc::now();
        let (due, later): (Vec<Queued>, Vec<Queued>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|q| q.visible_at <= now);
        self.queue = later;
        for q in due {
            let stamp = DateTime::from_timestamp(q.visible_at.timestamp(), 0).unwrap();
            for user in self.recipients(&q) {
                let found = self
                    .threads
                    .iter_mut()
                    .find(|t| t.user == user && t.repo == q.repo && t.issue == q.issue);
                match found {
                    Some(t) => {
                        t.updated = stamp;
                        t.unread = true;
                    }
                    None => {
                        self.next_id += 1;
                        let id = self.next_id;
                        self.threads.push(StoredThread {
                            id,
                            user,
                            repo: q.repo.clone(),
                            issue: q.issue,
                            is_pull: q.is_pull,
                            updated: stamp,
                            unread: true,
                        });
                    }
                }
            }
        }
    }

    /// `createOrUpdateIssueNotifications`: the issue's subscribers, the repo's watchers
    /// unless the pull request's title has a WIP prefix, the participants; never the
    /// author.
    fn recipients(&self, q: &Queued) -> BTreeSet<String> {
        let mut to: BTreeSet<String> = match &q.only {
            Some(users) => users.iter().cloned().collect(),
            None => {
                let mut to = BTreeSet::new();
                for (u, r, i) in &self.subscribers {
                    if *r == q.repo && *i == q.issue {
                        to.insert(u.clone());
                    }
                }
                let pull = self.repos.get(&q.repo).and_then(|r| r.pulls.get(&q.issue));
                let wip = q.is_pull && pull.is_some_and(|p| is_wip(&p.title));
                if !wip {
                    for (u, r) in &self.watchers {
                        if *r == q.repo {
                            to.insert(u.clone());
                        }
                    }
                }
                if let Some(p) = pull {
                    to.insert(p.poster.clone());
                }
                if let Some(r) = self.repos.get(&q.repo) {
                    for c in r.comments.iter().filter(|c| c.issue == q.issue) {
                        to.insert(c.user.clone());
                    }
                }
                to
            }
        };
        to.remove(&q.author);
        to
    }
}

/// Gitea's default `WORK_IN_PROGRESS_PREFIXES` (`WIP:`, `[WIP]`), case-insensitive.
fn is_wip(title: &str) -> bool {
    let t = title.to_ascii_uppercase();
    ["WIP:", "[WIP]"].iter().any(|p| t.starts_with(p))
}

#[derive(Clone)]
pub struct GiteaDouble {
    pub state: Arc<Mutex<State>>,
    pub url: String,
}

pub fn now_secs() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Page `page` (1-based) of `items` as Gitea cuts it: `limit` from the query (30 by
/// default), capped at `MAX_RESPONSE_ITEMS`.
fn one_page<T>(items: Vec<T>, req: &Request, page: usize, max_response_items: usize) -> Vec<T> {
    let limit = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, max_response_items);
    items
        .into_iter()
        .skip((page.max(1) - 1) * limit)
        .take(limit)
        .collect()
}

impl GiteaDouble {
    pub fn start(token: &str, bot: &str) -> GiteaDouble {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            token: token.into(),
            bot: bot.into(),
            bot_in_org: true,
            max_response_items: 50,
            notifications_api: true,
            next_id: 1000,
            base: url.clone(),
            ..State::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, s));
            }
        });
        GiteaDouble { state, url }
    }

    pub fn add_repo(&self, repo: &str) {
        self.state
            .lock()
            .unwrap()
            .repos
            .entry(repo.into())
            .or_default();
    }

    pub fn set_clone_url(&self, repo: &str, url: &str) {
        self.state
            .lock()
            .unwrap()
            .clone_urls
            .insert(repo.into(), url.into());
    }

    pub fn add_pull(&self, repo: &str, number: u64, sha: &str) {
        self.add_pull_by(repo, number, sha, "author", "a change");
    }

    /// Pull request `number` opened by `poster` with `title`: notifies the repo's
    /// watchers (whatever the title) through the queue.
    pub fn add_pull_by(&self, repo: &str, number: u64, sha: &str, poster: &str, title: &str) {
        let mut st = self.state.lock().unwrap();
        st.repos.entry(repo.into()).or_default().pulls.insert(
            number,
            StoredPull {
                number,
                state: "open".into(),
                merged: false,
                head_sha: sha.into(),
                head_ref: format!("feature-{number}"),
                fork_deleted: false,
                updated: now_secs(),
                title: title.into(),
                poster: poster.into(),
            },
        );
        let watchers = st
            .watchers
            .iter()
            .filter(|(_, r)| r == repo)
            .map(|(u, _)| u.clone())
            .collect();
        st.enqueue(repo, number, true, poster, Some(watchers));
    }

    pub fn set_pull_title(&self, repo: &str, number: u64, title: &str) {
        let mut st = self.state.lock().unwrap();
        let pull = st.repos.get_mut(repo).unwrap().pulls.get_mut(&number);
        pull.unwrap().title = title.into();
    }

    pub fn set_pull_state(&self, repo: &str, number: u64, state: &str) {
        let mut st = self.state.lock().unwrap();
        st.repos
            .get_mut(repo)
            .unwrap()
            .pulls
            .get_mut(&number)
            .unwrap()
            .state = state.into();
    }

    pub fn delete_pull(&self, repo: &str, number: u64) {
        let mut st = self.state.lock().unwrap();
        st.repos.get_mut(repo).unwrap().pulls.remove(&number);
    }

    pub fn add_member(&self, org: &str, user: &str) {
        let mut st = self.state.lock().unwrap();
        st.members
            .entry(org.into())
            .or_default()
            .insert(user.into());
    }

    /// A comment on PR `pr` (or on issue `pr` when `is_pr` is false); returns its id.
    pub fn comment_at(
        &self,
        repo: &str,
        pr: u64,
        is_pr: bool,
        user: &str,
        body: &str,
        at: DateTime<Utc>,
    ) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        if is_pr && let Some(p) = st.repos.get_mut(repo).and_then(|r| r.pulls.get_mut(&pr)) {
            p.updated = p.updated.max(at);
        }
        st.repos
            .entry(repo.into())
            .or_default()
            .comments
            .push(StoredComment {
                id,
                pr: is_pr.then_some(pr),
                issue: pr,
                user: user.into(),
                body: body.into(),
                created: at,
                updated: at,
                code: false,
            });
        st.enqueue(repo, pr, is_pr, user, None);
        id
    }

    /// A lone inline code comment on PR `pr`: it bumps the PR, notifies only the users
    /// it @mentions, and is not in the comments listings.
    pub fn code_comment(&self, repo: &str, pr: u64, user: &str, body: &str) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        let now = now_secs();
        let r = st.repos.get_mut(repo).unwrap();
        if let Some(p) = r.pulls.get_mut(&pr) {
            p.updated = now;
        }
        r.comments.push(StoredComment {
            id,
            pr: Some(pr),
            issue: pr,
            user: user.into(),
            body: body.into(),
            created: now,
            updated: now,
            code: true,
        });
        let mentions = body
            .split_whitespace()
            .filter_map(|w| w.strip_prefix('@'))
            .map(str::to_string)
            .collect();
        st.enqueue(repo, pr, true, user, Some(mentions));
        id
    }

    /// Edit comment `id`: its updated time moves, nobody is notified, the pull request's
    /// updated time stays.
    pub fn edit_comment(&self, repo: &str, id: u64, body: &str) {
        let mut st = self.state.lock().unwrap();
        let c = st
            .repos
            .get_mut(repo)
            .unwrap()
            .comments
            .iter_mut()
            .find(|c| c.id == id);
        let c = c.unwrap();
        c.body = body.into();
        c.updated = now_secs();
    }

    /// The bot's notification threads.
    pub fn threads(&self) -> Vec<StoredThread> {
        let mut st = self.state.lock().unwrap();
        st.deliver();
        let bot = st.bot.clone();
        st.threads
            .iter()
            .filter(|t| t.user == bot)
            .cloned()
            .collect()
    }

    pub fn comment(&self, repo: &str, pr: u64, user: &str, body: &str) -> u64 {
        self.comment_at(repo, pr, true, user, body, now_secs())
    }

    pub fn fault(&self, matching: &str, kind: FaultKind, times: usize) {
        self.state.lock().unwrap().faults.push(Fault {
            matching: matching.into(),
            kind,
            times,
        });
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn statuses(&self) -> Vec<Status> {
        self.state.lock().unwrap().statuses.clone()
    }

    /// Comments by `user` in `repo`, oldest first.
    pub fn comments_by(&self, repo: &str, user: &str) -> Vec<StoredComment> {
        let st = self.state.lock().unwrap();
        st.repos
            .get(repo)
            .map(|r| {
                r.comments
                    .iter()
                    .filter(|c| c.user == user)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn resp(status: u16, body: Value) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        },
    }
}

fn not_found() -> Response {
    resp(
        404,
        json!({"errors": null, "message": "The target couldn't be found.", "url": ""}),
    )
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let (path, qs) = target.split_once('?').unwrap_or((&target, ""));
    let query = qs
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    Some(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(conn: TcpStream, state: Arc<Mutex<State>>) {
    let _ = conn.set_nodelay(true);
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_request(&mut reader) {
        let full = if req.query.is_empty() {
            format!("{} {}", req.method, req.path)
        } else {
            let mut q: Vec<_> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            q.sort();
            format!("{} {}?{}", req.method, req.path, q.join("&"))
        };
        // Faults first.
        let fault = {
            let mut st = state.lock().unwrap();
            st.log.push(full.clone());
            let found = st
                .faults
                .iter_mut()
                .find(|f| f.times > 0 && full.contains(&f.matching));
            found.map(|f| {
                f.times -= 1;
                f.kind.clone()
            })
        };
        let response = match fault {
            Some(FaultKind::Drop) => return,
            Some(FaultKind::Delay(d)) => {
                std::thread::sleep(d);
                handle(&req, &state)
            }
            Some(FaultKind::Redirect(to)) => Response {
                status: 302,
                headers: vec![("Location".into(), to)],
                body: Vec::new(),
            },
            Some(FaultKind::Status(code)) => resp(code, json!({"message": "injected fault"})),
            Some(FaultKind::Malformed) => Response {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: b"[{\"id\": 1, \"body\": ".to_vec(),
            },
            Some(FaultKind::RateLimit(secs)) => Response {
                status: 429,
                headers: vec![("Retry-After".into(), secs.to_string())],
                body: b"slow down".to_vec(),
            },
            None => handle(&req, &state),
        };
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\nDate: {}\r\n",
            response.status,
            response.body.len(),
            Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")
        );
        for (k, v) in &response.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        // One write per response: split writes meet Nagle and delayed ACKs (40 ms).
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&response.body);
        if writer.write_all(&bytes).is_err() {
            return;
        }
    }
}

fn comment_json(base: &str, repo: &str, c: &StoredComment) -> Value {
    let (pr_url, issue_url, html) = match c.pr {
        Some(n) => (
            format!("{base}/{repo}/pulls/{n}"),
            String::new(),
            format!("{base}/{repo}/pulls/{n}#issuecomment-{}", c.id),
        ),
        None => (
            String::new(),
            format!("{base}/{repo}/issues/{}", c.issue),
            format!("{base}/{repo}/issues/{}#issuecomment-{}", c.issue, c.id),
        ),
    };
    json!({
        "id": c.id, "html_url": html, "pull_request_url": pr_url, "issue_url": issue_url,
        "user": {"id": 7, "login": c.user, "login_name": "", "full_name": "", "email": format!("{}@noreply.example.org", c.user)},
        "original_author": "", "original_author_id": 0, "body": c.body, "assets": [],
        "created_at": ts(c.created), "updated_at": ts(c.updated)
    })
}

/// A `NotificationThread` as Gitea renders it (`services/convert/notification.go`).
fn thread_json(base: &str, st: &State, t: &StoredThread) -> Value {
    let pull = st.repos.get(&t.repo).and_then(|r| r.pulls.get(&t.issue));
    let latest = st.repos.get(&t.repo).and_then(|r| {
        r.comments
            .iter()
            .filter(|c| c.issue == t.issue && !c.code)
            .max_by_key(|c| c.created)
    });
    let (kind, web) = if t.is_pull {
        ("Pull", "pulls")
    } else {
        ("Issue", "issues")
    };
    let state = match pull {
        Some(p) if p.merged => "merged".to_string(),
        Some(p) => p.state.clone(),
        None => "open".to_string(),
    };
    json!({
        "id": t.id,
        "repository": repo_json(base, &t.repo, st.clone_urls.get(&t.repo)),
        "subject": {
            "title": pull.map(|p| p.title.clone()).unwrap_or_default(),
            "url": format!("{base}/api/v1/repos/{}/issues/{}", t.repo, t.issue),
            "html_url": format!("{base}/{}/{web}/{}", t.repo, t.issue),
            "latest_comment_url": latest.map(|c| format!("{base}/api/v1/repos/{}/issues/comments/{}", t.repo, c.id)).unwrap_or_default(),
            "latest_comment_html_url": latest.map(|c| format!("{base}/{}/{web}/{}#issuecomment-{}", t.repo, t.issue, c.id)).unwrap_or_default(),
            "type": kind,
            "state": state
        },
        "unread": t.unread,
        "pinned": false,
        "updated_at": ts(t.updated),
        "url": format!("{base}/api/v1/notifications/threads/{}", t.id)
    })
}

fn repo_json(base: &str, full: &str, clone_url: Option<&String>) -> Value {
    let (owner, name) = full.split_once('/').unwrap();
    let clone_url = clone_url
        .cloned()
        .unwrap_or_else(|| format!("{base}/{full}.git"));
    json!({"id": 1, "owner": {"login": owner}, "name": name, "full_name": full,
        "clone_url": clone_url, "html_url": format!("{base}/{full}")})
}

fn handle(req: &Request, state: &Arc<Mutex<State>>) -> Response {
    let mut st = state.lock().unwrap();
    let auth = req
        .headers
        .get("authorization")
        .cloned()
        .unwrap_or_default();
    if auth != format!("token {}", st.token) {
        st.bad_auth.push(auth);
        return resp(401, json!({"message": "token is required"}));
    }
    let Some(path) = req.path.strip_prefix("/api/v1/") else {
        return not_found();
    };
    let seg: Vec<&str> = path.split('/').collect();
    let base = st.base.clone();
    st.deliver();
    let scope = match (req.method.as_str(), seg.as_slice()) {
        ("GET", ["notifications", ..]) => Some("read:notification"),
        ("PUT", ["repos", _, _, "subscription"]) => Some("write:repository"),
        ("PUT", ["repos", _, _, "issues", _, "subscriptions", _]) => Some("write:issue"),
        _ => None,
    };
    if let Some(scope) = scope.filter(|s| st.missing_scopes.contains(*s)) {
        return resp(
            403,
            json!({"message": format!("token does not have at least one of required scope(s): [{scope}]"), "url": format!("{base}/api/swagger")}),
        );
    }
    match (req.method.as_str(), seg.as_slice()) {
        ("GET", ["notifications"]) if st.notifications_api => {
            let since = match req
                .query
                .get("since")
                .map(|s| DateTime::parse_from_rfc3339(s))
            {
                Some(Ok(t)) => Some(t.with_timezone(&Utc).timestamp()),
                Some(Err(_)) => return resp(422, json!({"message": "invalid since"})),
                None => None,
            };
            let all = req.query.get("all").is_some_and(|a| a == "true");
            let pulls_only = req.query.get("subject-type").is_some_and(|t| t == "pull");
            let bot = st.bot.clone();
            let mut found: Vec<StoredThread> = st
                .threads
                .iter()
                .filter(|t| t.user == bot && (all || t.unread) && (!pulls_only || t.is_pull))
                .filter(|t| since.is_none_or(|s| t.updated.timestamp() >= s))
                .cloned()
                .collect();
            // `ORDER BY updated_unix DESC`
            found.sort_by_key(|t| std::cmp::Reverse((t.updated, t.id)));
            let total = found.len();
            let page = req
                .query
                .get("page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(1);
            let body: Vec<Value> = one_page(found, req, page, st.max_response_items)
                .iter()
                .map(|t| thread_json(&base, &st, t))
                .collect();
            let mut r = resp(200, Value::Array(body));
            r.headers.push(("X-Total-Count".into(), total.to_string()));
            r
        }
        ("GET", ["orgs", org, "members", user]) => {
            if !st.bot_in_org {
                return Response {
                    status: 303,
                    headers: vec![(
                        "Location".into(),
                        format!("{base}/api/v1/orgs/{org}/public_members/{user}"),
                    )],
                    body: Vec::new(),
                };
            }
            let member = st.members.get(*org).is_some_and(|m| m.contains(*user));
            if member {
                resp(204, Value::Null)
            } else {
                not_found()
            }
        }
        ("GET", ["repos", "issues", "search"]) => {
            // Only what the poller asks: type=pulls, state=all, since (inclusive).
            let since = match req
                .query
                .get("since")
                .map(|s| DateTime::parse_from_rfc3339(s))
            {
                Some(Ok(t)) => Some(t.with_timezone(&Utc).timestamp()),
                Some(Err(_)) => return resp(422, json!({"message": "invalid since"})),
                None => None,
            };
            let mut hits: Vec<(DateTime<Utc>, String, u64)> = Vec::new();
            for (full, r) in &st.repos {
                for p in r.pulls.values() {
                    if since.is_none_or(|s| p.updated.timestamp() >= s) {
                        hits.push((p.updated, full.clone(), p.number));
                    }
                }
            }
            // Gitea sorts search results by most recently updated.
            hits.sort_by(|a, b| b.cmp(a));
            let total = hits.len();
            let page = req
                .query
                .get("page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(1);
            let body: Vec<Value> = one_page(hits, req, page, st.max_response_items)
                .into_iter()
                .map(|(t, full, n)| {
                    let (owner, name) = full.split_once('/').unwrap();
                    let p = &st.repos[&full].pulls[&n];
                    json!({"id": n + 9000, "number": n, "title": p.title, "state": p.state,
                        "updated_at": ts(t), "pull_request": {"merged": p.merged},
                        "repository": {"id": 1, "name": name, "owner": owner, "full_name": full}})
                })
                .collect();
            let mut r = resp(200, Value::Array(body));
            r.headers.push(("X-Total-Count".into(), total.to_string()));
            r
        }
        (m, ["repos", owner, name, rest @ ..]) => {
            let full = format!("{owner}/{name}");
            if !st.repos.contains_key(&full) {
                return not_found();
            }
            match (m, rest) {
                ("PUT", ["subscription"]) => {
                    let bot = st.bot.clone();
                    st.watchers.insert((bot, full.clone()));
                    resp(
                        200,
                        json!({"subscribed": true, "ignored": false, "reason": null,
                            "created_at": ts(now_secs()), "url": format!("{base}/api/v1/repos/{full}/subscription"),
                            "repository_url": format!("{base}/api/v1/repos/{full}")}),
                    )
                }
                ("PUT", ["issues", n, "subscriptions", user]) => {
                    let Some(n) = n.parse::<u64>().ok().filter(|n| {
                        let r = &st.repos[&full];
                        r.pulls.contains_key(n) || r.comments.iter().any(|c| c.issue == *n)
                    }) else {
                        return not_found();
                    };
                    if *user != st.bot {
                        return resp(
                            403,
                            json!({"message": format!("{} is not permitted to change subscriptions for {user}", st.bot)}),
                        );
                    }
                    let key = (user.to_string(), full.clone(), n);
                    if st.subscribers.insert(key) {
                        resp(201, Value::Null)
                    } else {
                        resp(200, Value::Null)
                    }
                }
                ("GET", ["issues", "comments"]) => {
                    let since = match req.query.get("since") {
                        Some(s) => match DateTime::parse_from_rfc3339(s) {
                            Ok(t) => Some(t.with_timezone(&Utc).timestamp()),
                            Err(_) => return resp(422, json!({"message": "invalid since"})),
                        },
                        None => None,
                    };
                    let mut matched: Vec<StoredComment> = st.repos[&full]
                        .comments
                        .iter()
                        .filter(|c| !c.code && since.is_none_or(|s| c.updated.timestamp() >= s))
                        .cloned()
                        .collect();
                    matched.sort_by_key(|c| (c.created, c.id));
                    let total = matched.len();
                    let page_items: Vec<StoredComment> =
                        match req.query.get("page").and_then(|p| p.parse::<usize>().ok()) {
                            // Up to v1.25: no page means everything.
                            None => matched,
                            Some(page) => one_page(matched, req, page, st.max_response_items),
                        };
                    let body: Vec<Value> = page_items
                        .iter()
                        .map(|c| comment_json(&base, &full, c))
                        .collect();
                    let mut r = resp(200, Value::Array(body));
                    r.headers.push(("X-Total-Count".into(), total.to_string()));
                    r
                }
                ("GET", ["pulls", n]) => {
                    let Some(p) = n
                        .parse::<u64>()
                        .ok()
                        .and_then(|n| st.repos[&full].pulls.get(&n).cloned())
                    else {
                        return not_found();
                    };
                    let head_repo = if p.fork_deleted {
                        Value::Null
                    } else {
                        repo_json(&base, &full, st.clone_urls.get(&full))
                    };
                    let head_ref = if p.fork_deleted {
                        format!("refs/pull/{}/head", p.number)
                    } else {
                        p.head_ref.clone()
                    };
                    resp(
                        200,
                        json!({
                            "id": p.number + 5000, "number": p.number, "state": p.state, "merged": p.merged,
                            "title": "a change", "html_url": format!("{base}/{full}/pulls/{}", p.number),
                            "head": {"label": p.head_ref, "ref": head_ref, "sha": p.head_sha, "repo_id": 1, "repo": head_repo},
                            "base": {"label": "main", "ref": "main", "sha": "0".repeat(40), "repo_id": 1, "repo": repo_json(&base, &full, st.clone_urls.get(&full))}
                        }),
                    )
                }
                ("POST", ["statuses", sha]) => {
                    let v: Value = match serde_json::from_slice(&req.body) {
                        Ok(v) => v,
                        Err(_) => return resp(422, json!({"message": "bad json"})),
                    };
                    let get = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
                    let status = Status {
                        repo: full.clone(),
                        sha: sha.to_string(),
                        state: get("state"),
                        description: get("description"),
                        target_url: get("target_url"),
                        context: get("context"),
                    };
                    st.statuses.push(status.clone());
                    resp(
                        201,
                        json!({"id": st.statuses.len(), "status": status.state, "target_url": status.target_url,
                        "description": status.description, "context": status.context, "url": "", "creator": {"login": st.bot}}),
                    )
                }
                ("POST", ["issues", n, "comments"]) => {
                    let v: Value = match serde_json::from_slice(&req.body) {
                        Ok(v) => v,
                        Err(_) => return resp(422, json!({"message": "bad json"})),
                    };
                    let n: u64 = n.parse().unwrap_or(0);
                    let is_pr = st.repos[&full].pulls.contains_key(&n);
                    st.next_id += 1;
                    let id = st.next_id;
                    let bot = st.bot.clone();
                    let bot_login = bot.clone();
                    let c = StoredComment {
                        id,
                        pr: is_pr.then_some(n),
                        issue: n,
                        user: bot,
                        body: v
                            .get("body")
                            .and_then(|b| b.as_str())
                            .unwrap_or("")
                            .to_string(),
                        created: now_secs(),
                        updated: now_secs(),
                        code: false,
                    };
                    let j = comment_json(&base, &full, &c);
                    let r = st.repos.get_mut(&full).unwrap();
                    if let Some(p) = r.pulls.get_mut(&n) {
                        p.updated = c.updated;
                    }
                    r.comments.push(c);
                    st.enqueue(&full, n, is_pr, &bot_login, None);
                    resp(201, j)
                }
                ("PATCH", ["issues", "comments", id]) => {
                    let v: Value = match serde_json::from_slice(&req.body) {
                        Ok(v) => v,
                        Err(_) => return resp(422, json!({"message": "bad json"})),
                    };
                    let id: u64 = id.parse().unwrap_or(0);
                    let repo = st.repos.get_mut(&full).unwrap();
                    let Some(c) = repo.comments.iter_mut().find(|c| c.id == id) else {
                        return not_found();
                    };
                    c.body = v
                        .get("body")
                        .and_then(|b| b.as_str())
                        .unwrap_or("")
                        .to_string();
                    c.updated = now_secs();
                    let c = c.clone();
                    resp(200, comment_json(&base, &full, &c))
                }
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}
