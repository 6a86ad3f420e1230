//! The optional push path: Gitea `issue_comment` webhooks on a listen address or on
//! the socket systemd passes (`cc-ci-hook.socket`). The body's HMAC-SHA256 is checked
//! against `X-Gitea-Signature` in constant time before anything else is looked at;
//! a bad or missing signature is 401 and nothing else happens. Good events go to the
//! poll loop, which runs them through the same authorization and dedupe as polled
//! comments. The bot never registers webhooks itself: an operator adds one in Gitea.
use hmac::{Hmac, Mac};
use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc::Sender;

/// A pull-request comment pushed by Gitea.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub repo: String,
    pub comment_id: u64,
    pub pr: u64,
    pub user: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("webhook enabled without webhook.listen and systemd passed no socket (LISTEN_FDS)")]
    NoSocket,
}

/// Whether `signature_hex` is the HMAC-SHA256 of `body` under `secret` (constant time).
pub fn verify(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The listening socket: `listen` if set, else the first socket systemd passed.
pub fn listener(listen: Option<&str>) -> Result<TcpListener, Error> {
    if let Some(addr) = listen {
        return TcpListener::bind(addr).map_err(|e| Error::Bind(addr.to_string(), e));
    }
    let fd = sd_notify::listen_fds()
        .ok()
        .and_then(|mut fds| fds.next())
        .ok_or(Error::NoSocket)?;
    use std::os::fd::FromRawFd;
    // SAFETY: systemd passed this fd to us (LISTEN_PID matched) as a listening stream
    // socket; nothing else in the process owns it.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

/// Serve webhooks on `listener` in a background thread, sending events to `tx`.
/// HTTP is tiny_http's (a well-kept, small, synchronous server: connections are read
/// on its own threads, so a slow client holds one of those, not the others); each
/// request is then handled on a thread of its own.
pub fn spawn(listener: TcpListener, secret: Vec<u8>, max_body: usize, tx: Sender<Event>) {
    let server = match tiny_http::Server::from_listener(listener, None) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("webhook: cannot serve on the socket: {e}");
            return;
        }
    };
    let secret = std::sync::Arc::new(secret);
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let (secret, tx) = (std::sync::Arc::clone(&secret), tx.clone());
            std::thread::spawn(move || {
                let peer = request
                    .remote_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                if let Err(e) = serve(request, &secret, max_body, &tx) {
                    tracing::warn!(peer = %peer, "webhook connection: {e}");
                }
            });
        }
    });
}

fn respond(request: tiny_http::Request, code: u16, text: &str) -> std::io::Result<()> {
    request.respond(tiny_http::Response::from_string(text).with_status_code(code))
}

fn serve(
    mut request: tiny_http::Request,
    secret: &[u8],
    max_body: usize,
    tx: &Sender<Event>,
) -> std::io::Result<()> {
    if *request.method() != tiny_http::Method::Post {
        return respond(request, 405, "POST only\n");
    }
    if request.body_length().is_some_and(|n| n > max_body) {
        return respond(request, 413, "body too large\n");
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(max_body as u64 + 1)
        .read_to_end(&mut body)?;
    if body.len() > max_body {
        return respond(request, 413, "body too large\n");
    }
    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().trim().to_string())
    };
    // Gitea signs with both headers (the same HMAC-SHA256 of the body); a proxy or
    // another forge in between may keep only the GitHub-style one.
    let signature = header("X-Gitea-Signature")
        .or_else(|| {
            header("X-Hub-Signature-256")
                .and_then(|v| v.strip_prefix("sha256=").map(str::to_string))
        })
        .unwrap_or_default();
    if signature.is_empty() || !verify(secret, &body, &signature) {
        tracing::warn!("webhook with a missing or bad signature: refused");
        return respond(request, 401, "bad signature\n");
    }
    if header("X-Gitea-Event").as_deref() != Some("issue_comment") {
        return respond(request, 200, "ignored: not an issue_comment event\n");
    }
    match parse(&body) {
        Err(e) => {
            tracing::warn!("webhook payload is not a valid issue_comment event: {e}");
            respond(request, 400, "malformed payload\n")
        }
        Ok(None) => respond(request, 200, "ignored\n"),
        Ok(Some(ev)) => {
            tracing::info!(repo = %ev.repo, pr = ev.pr, comment_id = ev.comment_id, "webhook: pull request comment");
            let _ = tx.send(ev);
            respond(request, 202, "accepted\n")
        }
    }
}

/// The event in an `issue_comment` payload, if it is a new or edited PR comment.
pub fn parse(body: &[u8]) -> Result<Option<Event>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Payload {
        action: String,
        issue: Issue,
        comment: Comment,
        repository: Repo,
        #[serde(default)]
        is_pull: bool,
    }
    #[derive(serde::Deserialize)]
    struct Issue {
        number: u64,
        #[serde(default)]
        pull_request: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Comment {
        id: u64,
        #[serde(default)]
        body: String,
        user: User,
    }
    #[derive(serde::Deserialize)]
    struct User {
        login: String,
    }
    #[derive(serde::Deserialize)]
    struct Repo {
        full_name: String,
    }
    let p: Payload = serde_json::from_slice(body)?;
    let is_pr = p.is_pull || p.issue.pull_request.as_ref().is_some_and(|v| !v.is_null());
    if !is_pr || !(p.action == "created" || p.action == "edited") {
        return Ok(None);
    }
    Ok(Some(Event {
        repo: p.repository.full_name,
        comment_id: p.comment.id,
        pr: p.issue.number,
        user: p.comment.user.login,
        body: p.comment.body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_hmac() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC 4231 style vector.
        let sig = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        let body = b"The quick brown fox jumps over the lazy dog";
        assert!(verify(b"key", body, sig));
        assert!(!verify(
            b"key",
            b"The quick brown fox jumps over the lazy cat",
            sig
        ));
        assert!(!verify(b"other", body, sig));
        assert!(!verify(b"key", body, "zz"));
        assert!(!verify(b"key", body, ""));
    }

    #[test]
    fn parses_pr_comments_only() {
        let pr = br#"{"action":"created","issue":{"number":7,"pull_request":{"merged":false}},"comment":{"id":9,"body":"!testme","user":{"login":"a"}},"repository":{"full_name":"o/r"},"sender":{"login":"a"},"is_pull":true}"#;
        let ev = parse(pr).unwrap().unwrap();
        assert_eq!((ev.repo.as_str(), ev.pr, ev.comment_id), ("o/r", 7, 9));
        let issue = br#"{"action":"created","issue":{"number":7,"pull_request":null},"comment":{"id":9,"body":"!testme","user":{"login":"a"}},"repository":{"full_name":"o/r"},"is_pull":false}"#;
        assert_eq!(parse(issue).unwrap(), None);
        let deleted = br#"{"action":"deleted","issue":{"number":7,"pull_request":{}},"comment":{"id":9,"body":"!testme","user":{"login":"a"}},"repository":{"full_name":"o/r"},"is_pull":true}"#;
        assert_eq!(parse(deleted).unwrap(), None);
        assert!(parse(b"{not json").is_err());
    }
}
