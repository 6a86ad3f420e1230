//! The optional push path: Gitea `issue_comment` webhooks on a listen address or on
//! the socket systemd passes (`cc-ci-hook.socket`). The body's HMAC-SHA256 is checked
//! against `X-Gitea-Signature` in constant time before anything else is looked at;
//! a bad or missing signature is 401 and nothing else happens. Good events go to the
//! poll loop, which runs them through the same authorization and dedupe as polled
//! comments. The bot never registers webhooks itself: an operator adds one in Gitea.
use hmac::{Hmac, Mac};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

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

/// Webhook connections served at once; more are answered 503 at once (the poll still
/// finds their comments).
const MAX_IN_FLIGHT: usize = 16;
/// All the time one connection gets to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// The most a request line and headers may take.
const MAX_HEAD: usize = 64 * 1024;

/// Serve webhooks on `listener` in a background thread, sending events to `tx`. Each
/// connection gets a thread of its own (at most [`MAX_IN_FLIGHT`]) and
/// [`REQUEST_DEADLINE`] in all to send its request, so a client that stalls holds no
/// one else up and nothing for long.
pub fn spawn(listener: TcpListener, secret: Vec<u8>, max_body: usize, tx: Sender<Event>) {
    let secret = Arc::new(secret);
    let in_flight = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("webhook accept: {e}");
                    continue;
                }
            };
            if in_flight.load(Ordering::SeqCst) >= MAX_IN_FLIGHT {
                tracing::warn!("webhook: {MAX_IN_FLIGHT} connections in flight; answering 503");
                // Answered off this thread: lingering takes up to a second.
                std::thread::spawn(move || {
                    let _ = respond(&stream, 503, "Service Unavailable", "busy\n");
                    linger(&stream);
                });
                continue;
            }
            in_flight.fetch_add(1, Ordering::SeqCst);
            let (secret, tx, in_flight) = (Arc::clone(&secret), tx.clone(), Arc::clone(&in_flight));
            std::thread::spawn(move || {
                let peer = stream
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                if let Err(e) = serve(&stream, &secret, max_body, &tx) {
                    tracing::warn!(peer = %peer, "webhook connection: {e}");
                }
                linger(&stream);
                in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
}

fn respond(mut s: &TcpStream, code: u16, reason: &str, text: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    s.flush()
}

/// Close after answering, reading (briefly, and not much) what the client still
/// sends: closing with unread input resets the connection, and the client could lose
/// the answer (a 413 sent before the body was read).
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut rest = stream.take(1024 * 1024);
    let _ = std::io::copy(&mut rest, &mut std::io::sink());
}

/// Read from `stream` into `buf` with what is left of the connection's time.
fn read_some(
    mut stream: &TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> std::io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client took too long to send its request",
        ));
    }
    stream.set_read_timeout(Some(left))?;
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// One request: the head parsed by `httparse` (the parser hyper uses), the body read
/// by its `Content-Length`, all within [`REQUEST_DEADLINE`].
fn serve(
    stream: &TcpStream,
    secret: &[u8],
    max_body: usize,
    tx: &Sender<Event>,
) -> std::io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = Vec::new();
    let (head_len, method, headers) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).trim().to_string();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                break (n, req.method.unwrap_or("").to_string(), headers);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                if read_some(stream, &mut buf, deadline)? == 0 {
                    return Ok(()); // the client went away
                }
            }
            Ok(httparse::Status::Partial) => {
                return respond(
                    stream,
                    431,
                    "Request Header Fields Too Large",
                    "head too large\n",
                );
            }
            Err(e) => return respond(stream, 400, "Bad Request", &format!("{e}\n")),
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if method != "POST" {
        return respond(stream, 405, "Method Not Allowed", "POST only\n");
    }
    let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) else {
        return respond(stream, 411, "Length Required", "content-length required\n");
    };
    if len > max_body {
        return respond(stream, 413, "Payload Too Large", "body too large\n");
    }
    let mut body = buf.split_off(head_len);
    while body.len() < len {
        if read_some(stream, &mut body, deadline)? == 0 {
            return Ok(());
        }
    }
    body.truncate(len);
    // Gitea signs with both headers (the same HMAC-SHA256 of the body); a proxy or
    // another forge in between may keep only the GitHub-style one.
    let signature = header("x-gitea-signature")
        .or_else(|| header("x-hub-signature-256").and_then(|v| v.strip_prefix("sha256=")))
        .unwrap_or("");
    if signature.is_empty() || !verify(secret, &body, signature) {
        tracing::warn!("webhook with a missing or bad signature: refused");
        return respond(stream, 401, "Unauthorized", "bad signature\n");
    }
    if header("x-gitea-event") != Some("issue_comment") {
        return respond(stream, 200, "OK", "ignored: not an issue_comment event\n");
    }
    match parse(&body) {
        Err(e) => {
            tracing::warn!("webhook payload is not a valid issue_comment event: {e}");
            respond(stream, 400, "Bad Request", "malformed payload\n")
        }
        Ok(None) => respond(stream, 200, "OK", "ignored\n"),
        Ok(Some(ev)) => {
            tracing::info!(repo = %ev.repo, pr = ev.pr, comment_id = ev.comment_id, "webhook: pull request comment");
            let _ = tx.send(ev);
            respond(stream, 202, "Accepted", "accepted\n")
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
