//! GITEA TEST DOUBLE as a standalone process, for the host tests: the in-process
//! double of the integration tests (`tests/support/gitea_double.rs`, Gitea's REST API
//! v1 as the poller uses it) served on 127.0.0.1, plus a small control API on a
//! second loopback port through which a test plays Gitea's users (repos, pull
//! requests, org members, comments, webhook deliveries) and reads what the poller
//! sent (commit statuses, the bot's comments). It is not Gitea.
//!
//! ```text
//! gitea-double --token-file FILE --bot LOGIN --ready-file FILE
//! ```
//! Once both ports listen it writes `{"url": …, "control": …}` to the ready file
//! (atomically) and serves until killed.
//!
//! Control API (JSON bodies and answers):
//! - `POST /repos {repo, clone_url?}`, `POST /pulls {repo, number, sha}`,
//!   `POST /members {org, user}`
//! - `POST /comments {repo, pr, user, body}` → `{id}`: a comment, seen by polling
//! - `POST /deliver {url, secret, repo, pr, user, body, wait_status?, timeout_ms?}` →
//!   `{id, http_status, elapsed_ms?}`: a comment as Gitea stores and delivers it to a
//!   webhook (`issue_comment`, HMAC-SHA256 of the body in `X-Gitea-Signature`); with
//!   `wait_status`, waits until a commit status in that state arrives for the PR's head
//!   and answers the milliseconds from the start of the delivery to it
//! - `GET /statuses` → `[{repo, sha, state, description, target_url, context}]`
//! - `GET /comments?repo=R&user=U` → `[{id, pr, body, created, updated}]`
//! - `GET /bad-auth` → the Authorization headers that were not the token
#[path = "../support/gitea_double.rs"]
mod gitea_double;

use gitea_double::GiteaDouble;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// GITEA TEST DOUBLE (not Gitea) on 127.0.0.1, with a control API for the tests.
#[derive(clap::Parser)]
#[command(name = "gitea-double")]
struct Args {
    /// File holding the API token the double accepts (`Authorization: token …`).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// The bot's login: comments the poller posts are by this user.
    #[arg(long, value_name = "LOGIN")]
    bot: String,
    /// Written (atomically) with `{"url": …, "control": …}` once both ports listen.
    #[arg(long, value_name = "FILE")]
    ready_file: PathBuf,
}

fn main() {
    let Args {
        token_file,
        bot,
        ready_file,
    } = clap::Parser::parse();
    let token = std::fs::read_to_string(&token_file).unwrap_or_else(|e| {
        eprintln!("gitea-double: cannot read {}: {e}", token_file.display());
        std::process::exit(2)
    });
    let double = GiteaDouble::start(token.trim(), &bot);
    let control = TcpListener::bind("127.0.0.1:0").expect("bind the control port");
    let ready = json!({
        "url": double.url,
        "control": format!("http://{}", control.local_addr().unwrap()),
    });
    let tmp = ready_file.with_extension("tmp");
    std::fs::write(&tmp, ready.to_string()).expect("write the ready file");
    std::fs::rename(&tmp, &ready_file).expect("rename the ready file");
    eprintln!("gitea-double (cc-ci GITEA TEST DOUBLE): {ready}");
    for conn in control.incoming() {
        let Ok(conn) = conn else { continue };
        let double = double.clone();
        std::thread::spawn(move || serve(conn, &double));
    }
}

/// One control request per connection (`Connection: close`).
fn serve(mut conn: TcpStream, double: &GiteaDouble) {
    let Some((method, path, body)) = read_request(&mut conn) else {
        return;
    };
    let (status, answer) = match handle(double, &method, &path, &body) {
        Ok(v) => (200, v),
        Err(message) => (400, json!({"message": message})),
    };
    let body = answer.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn read_request(conn: &mut TcpStream) -> Option<(String, String, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head) = req.parse(&buf).ok()? {
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            let (method, path) = (req.method?.to_string(), req.path?.to_string());
            while buf.len() < head + len {
                let n = conn.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = &buf[head..head + len];
            let body = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(body).ok()?
            };
            return Some((method, path, body));
        }
    }
}

fn field<'a>(body: &'a Value, key: &str) -> Result<&'a Value, String> {
    body.get(key)
        .filter(|v| !v.is_null())
        .ok_or_else(|| format!("missing field {key:?}"))
}

fn text<'a>(body: &'a Value, key: &str) -> Result<&'a str, String> {
    field(body, key)?
        .as_str()
        .ok_or_else(|| format!("field {key:?} is not a string"))
}

fn number(body: &Value, key: &str) -> Result<u64, String> {
    field(body, key)?
        .as_u64()
        .ok_or_else(|| format!("field {key:?} is not a number"))
}

fn handle(double: &GiteaDouble, method: &str, path: &str, body: &Value) -> Result<Value, String> {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let query: Vec<(&str, &str)> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    let param = |k: &str| {
        query
            .iter()
            .find(|(q, _)| *q == k)
            .map(|(_, v)| v.replace("%2F", "/"))
    };
    match (method, route) {
        ("POST", "/repos") => {
            let repo = text(body, "repo")?;
            double.add_repo(repo);
            if let Some(url) = body.get("clone_url").and_then(Value::as_str) {
                double.set_clone_url(repo, url);
            }
            Ok(json!({}))
        }
        ("POST", "/pulls") => {
            double.add_pull(text(body, "repo")?, number(body, "number")?, text(body, "sha")?);
            Ok(json!({}))
        }
        ("POST", "/members") => {
            double.add_member(text(body, "org")?, text(body, "user")?);
            Ok(json!({}))
        }
        ("POST", "/comments") => {
            let id = double.comment(
                text(body, "repo")?,
                number(body, "pr")?,
                text(body, "user")?,
                text(body, "body")?,
            );
            Ok(json!({"id": id}))
        }
        ("POST", "/deliver") => deliver(double, body),
        ("GET", "/statuses") => Ok(Value::Array(
            double
                .statuses()
                .into_iter()
                .map(|s| {
                    json!({"repo": s.repo, "sha": s.sha, "state": s.state, "description": s.description,
                        "target_url": s.target_url, "context": s.context})
                })
                .collect(),
        )),
        ("GET", "/comments") => {
            let repo = param("repo").ok_or("missing query parameter repo")?;
            let user = param("user").ok_or("missing query parameter user")?;
            Ok(Value::Array(
                double
                    .comments_by(&repo, &user)
                    .into_iter()
                    .map(|c| {
                        json!({"id": c.id, "pr": c.pr, "body": c.body,
                            "created": c.created.to_rfc3339(), "updated": c.updated.to_rfc3339()})
                    })
                    .collect(),
            ))
        }
        ("GET", "/bad-auth") => Ok(json!(double.state.lock().unwrap().bad_auth.clone())),
        _ => Err(format!("no control route {method} {route}")),
    }
}

/// A comment as Gitea stores it and delivers it to a webhook subscribed to pull
/// request comments: `X-Gitea-Event: issue_comment`, `X-Gitea-Event-Type:
/// pull_request_comment`, the hex HMAC-SHA256 of the body in `X-Gitea-Signature`
/// (and `X-Hub-Signature-256`).
fn deliver(double: &GiteaDouble, body: &Value) -> Result<Value, String> {
    let (url, secret) = (text(body, "url")?, text(body, "secret")?);
    let (repo, pr, user) = (
        text(body, "repo")?,
        number(body, "pr")?,
        text(body, "user")?,
    );
    let comment = text(body, "body")?;
    let head_sha = double
        .state
        .lock()
        .unwrap()
        .repos
        .get(repo)
        .and_then(|r| r.pulls.get(&pr))
        .map(|p| p.head_sha.clone())
        .ok_or_else(|| format!("no pull request {repo}#{pr}"))?;
    let started = Instant::now();
    let id = double.comment(repo, pr, user, comment);
    let payload = json!({
        "action": "created",
        "issue": {"id": pr + 9000, "number": pr, "title": "a change", "state": "open",
            "pull_request": {"merged": false}},
        "comment": {"id": id, "body": comment, "user": {"login": user},
            "html_url": format!("{}/{repo}/pulls/{pr}#issuecomment-{id}", double.url)},
        "repository": {"full_name": repo},
        "sender": {"login": user},
        "is_pull": true
    })
    .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(payload.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Gitea-Event", "issue_comment")
        .header("X-Gitea-Event-Type", "pull_request_comment")
        .header("X-Gitea-Delivery", format!("delivery-{id}"))
        .header("X-Gitea-Signature", &signature)
        .header("X-Hub-Signature-256", format!("sha256={signature}"))
        .send(payload.as_bytes())
        .map_err(|e| format!("delivery to {url} failed: {e}"))?;
    let mut answer = json!({"id": id, "http_status": response.status().as_u16()});
    if let Some(state) = body.get("wait_status").and_then(Value::as_str) {
        let timeout = Duration::from_millis(
            body.get("timeout_ms")
                .and_then(Value::as_u64)
                .unwrap_or(30_000),
        );
        let seen = |d: &GiteaDouble| {
            d.statuses()
                .iter()
                .any(|s| s.sha == head_sha && s.state == state)
        };
        while !seen(double) {
            if started.elapsed() > timeout {
                return Err(format!(
                    "no {state} status for {head_sha} within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        answer["elapsed_ms"] = json!(started.elapsed().as_millis() as u64);
    }
    Ok(answer)
}
