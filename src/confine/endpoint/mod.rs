//! The run's Docker API endpoint: a Unix socket served by a thread of the runner,
//! given to tests as `DOCKER_HOST`. It forwards to the engine only what
//! [`rules`] allows, for the run's stack only, and answers everything else with a
//! 403 whose message names the rule (the Docker CLI prints it after "Error response
//! from daemon:").
//!
//! - Who may connect: processes in the run's cgroup (the peer's pid from
//!   `SO_PEERCRED`), or, without a cgroup, of the test uid.
//! - Lists (`docker ps`, `docker service ls`) get the stack's namespace label added
//!   to their `filters`; tasks (`docker service ps`) are filtered to the stack's
//!   services.
//! - A container, service or task named in a path is inspected first and must carry
//!   the stack's label; the request is then forwarded for its full id, so a name
//!   cannot be rebound in between (and the check is remembered for the run).
//! - `docker exec`: the create body must not be privileged (nor root, unless the
//!   operator allows it); only exec instances created through this endpoint can be
//!   started, and the start is relayed as the raw, hijacked stream it is.
//! - One request per connection (answers say `Connection: close`): streamed and
//!   chunked answers are relayed byte for byte until the engine closes.
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub mod rules;
use rules::{Refusal, Route};

/// Connections served at once; past it, 503.
const MAX_CONNECTIONS: usize = 64;
/// A request head or body larger than this is refused.
const MAX_REQUEST: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("endpoint: cannot bind {0}: {1}")]
    Bind(PathBuf, #[source] io::Error),
}

/// What the endpoint serves, and for whom.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it listens.
    pub socket: PathBuf,
    /// The real engine.
    pub engine: PathBuf,
    /// The run's stack.
    pub stack: String,
    pub exec_as_root: bool,
    /// Peers of this uid may connect when there is no cgroup.
    pub client_uid: u32,
    /// Peers in this cgroup (as `/proc/<pid>/cgroup` names it) may connect.
    pub cgroup: Option<PathBuf>,
}

struct Shared {
    policy: Policy,
    /// Exec instances created through this endpoint.
    execs: Mutex<HashSet<String>>,
    /// `kind/id` as a test named it → the full id, checked to be of the stack. A
    /// label never changes and requests go to the full id, so a hit is safe.
    owned: Mutex<std::collections::HashMap<String, String>>,
    /// Refusals, for run.log.
    log: Mutex<Vec<String>>,
    open: AtomicUsize,
    stop: AtomicBool,
}

/// The running endpoint; stops and removes its socket when dropped.
pub struct Endpoint {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The listening socket, to wake the accept loop on drop even when the socket's
    /// path is already gone (its directory removed).
    listener: UnixListener,
}

impl Endpoint {
    pub fn start(policy: Policy) -> Result<Endpoint, Error> {
        let _ = std::fs::remove_file(&policy.socket);
        let listener = UnixListener::bind(&policy.socket)
            .map_err(|e| Error::Bind(policy.socket.clone(), e))?;
        // Reachable by the test identity; who really may talk is checked per peer.
        let _ = std::os::unix::fs::chown(&policy.socket, Some(policy.client_uid), None);
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&policy.socket, std::fs::Permissions::from_mode(0o600));
        let shared = Arc::new(Shared {
            policy,
            execs: Mutex::new(HashSet::new()),
            owned: Mutex::new(Default::default()),
            log: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let own = listener
            .try_clone()
            .map_err(|e| Error::Bind(shared.policy.socket.clone(), e))?;
        let thread = std::thread::Builder::new()
            .name("docker-endpoint".into())
            .spawn(move || accept_loop(listener, s))
            .map_err(|e| Error::Bind(shared.policy.socket.clone(), e))?;
        Ok(Endpoint {
            shared,
            thread: Some(thread),
            listener: own,
        })
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.shared.policy.socket
    }

    /// The refusals since the last call (each `METHOD PATH: cc-ci: rule: why`).
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.log.lock().expect("endpoint log"))
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop: shutting the listening socket down fails its accept
        // (EINVAL), whether or not the socket's path still exists.
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) on a socket this endpoint owns.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = UnixStream::connect(&self.shared.policy.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.shared.policy.socket);
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut conn) = conn else { continue };
        if shared.open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            let _ = respond_error(
                &mut conn,
                503,
                "cc-ci: busy: too many connections to the run's endpoint",
            );
            continue;
        }
        let s = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("docker-endpoint-conn".into())
            .spawn(move || {
                let _ = serve(conn, &s);
                s.open.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    query: String,
    /// Header lines to pass on (hop-by-hop ones removed).
    headers: Vec<(String, Vec<u8>)>,
    upgrade: bool,
    body: Vec<u8>,
    /// Bytes the client sent after the request (the start of a hijacked stream).
    extra: Vec<u8>,
}

fn serve(mut conn: UnixStream, shared: &Shared) -> io::Result<()> {
    if let Err(why) = peer_allowed(&conn, &shared.policy) {
        let r = Refusal::new("not-this-run", why);
        shared.record("-", "-", &r);
        return respond_error(&mut conn, r.status, &r.message());
    }
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let req = match read_request(&mut conn) {
        Ok(r) => r,
        Err(e) => return respond_error(&mut conn, 400, &format!("cc-ci: bad-request: {e}")),
    };
    conn.set_read_timeout(None)?;
    match decide(&req, shared) {
        Ok(Forward { path, mode }) => forward(conn, &req, &path, mode, shared),
        Err(r) => {
            shared.record(&req.method, &req.path, &r);
            respond_error(&mut conn, r.status, &r.message())
        }
    }
}

impl Shared {
    fn record(&self, method: &str, path: &str, r: &Refusal) {
        self.log
            .lock()
            .expect("endpoint log")
            .push(format!("{method} {path}: {}", r.message()));
    }
}

/// The peer must be one of the run's tests.
fn peer_allowed(conn: &UnixStream, policy: &Policy) -> Result<(), String> {
    let cred = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    match &policy.cgroup {
        Some(run) => match super::cgroup::of_pid(cred.pid()) {
            Some(c) if c.starts_with(run) => Ok(()),
            c => Err(format!(
                "pid {} (cgroup {}) is not a test of this run",
                cred.pid(),
                c.map_or("unknown".into(), |c| c.display().to_string())
            )),
        },
        None if cred.uid() == policy.client_uid => Ok(()),
        None => Err(format!("uid {} is not the test identity", cred.uid())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Relay the engine's answer byte for byte.
    Plain,
    /// Read the whole answer: remember the exec id, then relay.
    ExecCreate,
    /// Relay the answer head, then both directions raw.
    Hijack,
    /// Filter the task list to the stack's services.
    Tasks,
}

struct Forward {
    /// Path and query to send to the engine.
    path: String,
    mode: Mode,
}

fn decide(req: &Request, shared: &Shared) -> Result<Forward, Refusal> {
    let p = &shared.policy;
    let with_query = |path: String| {
        if req.query.is_empty() {
            path
        } else {
            format!("{path}?{}", req.query)
        }
    };
    let route = rules::route(&req.method, &req.path)?;
    let plain = |path| {
        Ok(Forward {
            path,
            mode: Mode::Plain,
        })
    };
    match route {
        Route::Start | Route::Node => plain(with_query(req.path.clone())),
        Route::ListScoped => plain(format!(
            "{}?{}",
            req.path,
            rules::scope_filters(&req.query, &p.stack)?
        )),
        Route::ListTasks => Ok(Forward {
            path: with_query(req.path.clone()),
            mode: Mode::Tasks,
        }),
        Route::Container(id) => {
            let full = owned(shared, "containers", &id, "/json")?;
            plain(with_query(replace_id(&req.path, &id, &full)))
        }
        Route::ExecCreate(id) => {
            rules::check_exec(&req.body, p.exec_as_root)?;
            let full = owned(shared, "containers", &id, "/json")?;
            Ok(Forward {
                path: with_query(replace_id(&req.path, &id, &full)),
                mode: Mode::ExecCreate,
            })
        }
        Route::Service(id) => {
            let full = owned(shared, "services", &id, "")?;
            plain(with_query(replace_id(&req.path, &id, &full)))
        }
        Route::Task(id) => {
            let task = engine_json(&p.engine, &format!("/tasks/{id}"))?;
            let service = task.get("ServiceID").and_then(Value::as_str).unwrap_or("");
            owned(shared, "services", service, "")?;
            plain(with_query(req.path.clone()))
        }
        Route::Exec(id) => {
            if !shared.execs.lock().expect("execs").contains(&id) {
                return Err(Refusal::new(
                    "foreign-exec",
                    format!("exec {id} was not created through this run's endpoint"),
                ));
            }
            let mode = if req.path.ends_with("/start") {
                Mode::Hijack
            } else {
                Mode::Plain
            };
            plain(with_query(req.path.clone())).map(|f: Forward| Forward { mode, ..f })
        }
    }
}

/// `/v1.41/containers/web/exec` with `web` → the full id.
fn replace_id(path: &str, id: &str, full: &str) -> String {
    let needle = format!("/{id}");
    match path
        .find(&format!("{needle}/"))
        .or_else(|| path.rfind(&needle))
    {
        Some(i) => format!("{}/{full}{}", &path[..i], &path[i + needle.len()..]),
        None => path.to_string(),
    }
}

/// Inspect `kind/id` on the engine: it must carry the stack's label. Returns its
/// full id.
fn owned(shared: &Shared, kind: &str, id: &str, suffix: &str) -> Result<String, Refusal> {
    if id.is_empty() || id.contains(['/', '?', '#', '%']) {
        return Err(Refusal::new("bad-id", format!("{kind} id {id:?}")));
    }
    let key = format!("{kind}/{id}");
    if let Some(full) = shared.owned.lock().expect("owned").get(&key) {
        return Ok(full.clone());
    }
    let v = engine_json(&shared.policy.engine, &format!("/{kind}/{id}{suffix}"))?;
    match rules::namespace_of(&v) {
        Some(ns) if ns == shared.policy.stack => {
            let full = v
                .get("ID")
                .or_else(|| v.get("Id"))
                .and_then(Value::as_str)
                .unwrap_or(id)
                .to_string();
            shared
                .owned
                .lock()
                .expect("owned")
                .insert(key, full.clone());
            Ok(full)
        }
        _ => Err(Refusal::new(
            "other-stack",
            format!(
                "{} {id} is not of this run's stack {}",
                kind.trim_end_matches('s'),
                shared.policy.stack,
            ),
        )),
    }
}

/// GET `path` from the engine and parse the JSON answer; a non-2xx answer becomes a
/// refusal carrying the engine's own status and message (404 "No such container").
fn engine_json(engine: &std::path::Path, path: &str) -> Result<Value, Refusal> {
    let (status, body) = engine_get(engine, path).map_err(|e| Refusal {
        status: 502,
        rule: "engine",
        why: format!("cannot ask the engine about {path}: {e}"),
    })?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(Refusal {
            status,
            rule: "engine",
            why: message,
        });
    }
    serde_json::from_slice(&body).map_err(|e| Refusal {
        status: 502,
        rule: "engine",
        why: format!("the engine's answer to {path} is not JSON: {e}"),
    })
}

/// A GET to the engine: status and (de-chunked) body.
fn engine_get(engine: &std::path::Path, path: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(engine)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    let (status, head_len, chunked) = parse_response_head(&all)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "incomplete answer"))?;
    let body = &all[head_len..];
    Ok((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    ))
}

/// Status, head length and whether the body is chunked; `None` if incomplete.
fn parse_response_head(buf: &[u8]) -> io::Result<Option<(u16, usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let chunked = r.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    && String::from_utf8_lossy(h.value)
                        .to_ascii_lowercase()
                        .contains("chunked")
            });
            Ok(Some((r.code.unwrap_or(0), n, chunked)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    }
}

/// Decode a complete chunked body.
fn dechunk(mut b: &[u8]) -> io::Result<Vec<u8>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad chunked encoding");
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&b[..line_end]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Read one request (head and body) from the client.
fn read_request(conn: &mut UnixStream) -> io::Result<Request> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed before a whole request"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Request::new(&mut headers);
        match r.parse(&buf).map_err(|e| bad(&e.to_string()))? {
            httparse::Status::Partial => {
                if buf.len() > MAX_REQUEST {
                    return Err(bad("request head too large"));
                }
            }
            httparse::Status::Complete(head) => {
                let method = r.method.unwrap_or("").to_string();
                let target = r.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let mut length = 0usize;
                let mut chunked = false;
                let mut upgrade = false;
                let mut pass = Vec::new();
                for h in r.headers.iter() {
                    let name = h.name.to_ascii_lowercase();
                    let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                    match name.as_str() {
                        "content-length" => {
                            length = value
                                .trim()
                                .parse()
                                .map_err(|_| bad("bad Content-Length"))?
                        }
                        "transfer-encoding" => chunked = value.contains("chunked"),
                        "upgrade" => {
                            upgrade = true;
                            pass.push((h.name.to_string(), h.value.to_vec()));
                        }
                        "connection" | "keep-alive" | "proxy-connection" => {}
                        _ => pass.push((h.name.to_string(), h.value.to_vec())),
                    }
                }
                let mut rest = buf[head..].to_vec();
                let body = if chunked {
                    loop {
                        if let Ok(b) = dechunk(&rest) {
                            // Whatever follows the terminal chunk's CRLF is extra.
                            let mut consumed = encoded_len(&rest).unwrap_or(rest.len());
                            consumed = consumed.min(rest.len());
                            rest.drain(..consumed);
                            break b;
                        }
                        if rest.len() > MAX_REQUEST {
                            return Err(bad("request body too large"));
                        }
                        let n = conn.read(&mut chunk)?;
                        if n == 0 {
                            return Err(bad("connection closed inside the body"));
                        }
                        rest.extend_from_slice(&chunk[..n]);
                    }
                } else {
                    if length > MAX_REQUEST {
                        return Err(bad("request body too large"));
                    }
                    while rest.len() < length {
                        let n = conn.read(&mut chunk)?;
                        if n == 0 {
                            return Err(bad("connection closed inside the body"));
                        }
                        rest.extend_from_slice(&chunk[..n]);
                    }
                    let extra = rest.split_off(length);
                    std::mem::replace(&mut rest, extra)
                };
                return Ok(Request {
                    method,
                    path: path.to_string(),
                    query: query.to_string(),
                    headers: pass,
                    upgrade,
                    body,
                    extra: rest,
                });
            }
        }
    }
}

/// Length of a complete chunked encoding at the start of `b` (trailers: none).
fn encoded_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = b[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[at..line_end])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        at = line_end + 2 + size + 2;
        if size == 0 {
            return Some(at);
        }
    }
}

fn respond_error(conn: &mut UnixStream, status: u16, message: &str) -> io::Result<()> {
    let body = serde_json::json!({ "message": message }).to_string();
    respond(conn, status, "application/json", body.as_bytes())
}

fn respond(conn: &mut UnixStream, status: u16, kind: &str, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Error",
    };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)?;
    conn.flush()
}

/// Send the request to the engine as `path` and relay its answer per `mode`.
fn forward(
    mut conn: UnixStream,
    req: &Request,
    path: &str,
    mode: Mode,
    shared: &Shared,
) -> io::Result<()> {
    let mut engine = match UnixStream::connect(&shared.policy.engine) {
        Ok(s) => s,
        Err(e) => {
            return respond_error(
                &mut conn,
                502,
                &format!("cc-ci: engine: cannot reach the engine: {e}"),
            );
        }
    };
    let mut head = format!("{} {path} HTTP/1.1\r\n", req.method).into_bytes();
    for (k, v) in &req.headers {
        head.extend_from_slice(k.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    if req.upgrade && mode == Mode::Hijack {
        head.extend_from_slice(b"Connection: Upgrade\r\n");
    } else {
        head.extend_from_slice(b"Connection: close\r\n");
    }
    if !req.body.is_empty() || req.method == "POST" {
        head.extend_from_slice(format!("Content-Length: {}\r\n", req.body.len()).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    engine.write_all(&head)?;
    engine.write_all(&req.body)?;
    match mode {
        Mode::Plain => {
            io::copy(&mut engine, &mut conn)?;
            Ok(())
        }
        Mode::ExecCreate | Mode::Tasks => {
            let mut all = Vec::new();
            engine.read_to_end(&mut all)?;
            let Some((status, head_len, chunked)) = parse_response_head(&all)? else {
                return respond_error(&mut conn, 502, "cc-ci: engine: incomplete answer");
            };
            let body = if chunked {
                dechunk(&all[head_len..])?
            } else {
                all[head_len..].to_vec()
            };
            if !(200..300).contains(&status) {
                conn.write_all(&all)?;
                return Ok(());
            }
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if mode == Mode::ExecCreate {
                if let Some(id) = v.get("Id").and_then(Value::as_str) {
                    shared.execs.lock().expect("execs").insert(id.to_string());
                }
                return respond(&mut conn, status, "application/json", &body);
            }
            let services = stack_services(shared)?;
            let tasks: Vec<Value> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|t| {
                            t.get("ServiceID")
                                .and_then(Value::as_str)
                                .is_some_and(|s| services.contains(s))
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            respond(
                &mut conn,
                status,
                "application/json",
                Value::Array(tasks).to_string().as_bytes(),
            )
        }
        Mode::Hijack => hijack(conn, engine, &req.extra),
    }
}

/// The ids of the stack's services.
fn stack_services(shared: &Shared) -> io::Result<HashSet<String>> {
    let query = rules::scope_filters("", &shared.policy.stack).unwrap_or_default();
    let v = engine_json(&shared.policy.engine, &format!("/services?{query}"))
        .map_err(|r| io::Error::other(r.message()))?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter(|s| rules::namespace_of(s) == Some(&shared.policy.stack))
                .filter_map(|s| s.get("ID").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// Relay the answer head; if the engine switched to a raw stream, copy both ways
/// until each side is done.
fn hijack(mut conn: UnixStream, mut engine: UnixStream, extra: &[u8]) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (status, head_len) = loop {
        let n = engine.read(&mut chunk)?;
        if n == 0 {
            conn.write_all(&buf)?;
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((status, head_len, _)) = parse_response_head(&buf)? {
            break (status, head_len);
        }
    };
    let raw = status == 101 || {
        let head = String::from_utf8_lossy(&buf[..head_len]).to_ascii_lowercase();
        status == 200 && head.contains("application/vnd.docker.")
    };
    conn.write_all(&buf)?;
    if !raw {
        io::copy(&mut engine, &mut conn)?;
        return Ok(());
    }
    engine.write_all(extra)?;
    let (mut c_in, mut e_out) = (conn.try_clone()?, engine.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut c_in, &mut e_out);
        let _ = e_out.shutdown(std::net::Shutdown::Write);
    });
    let _ = io::copy(&mut engine, &mut conn);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // The client may keep its side open (stdin); once the engine is done, so are we.
    let _ = engine.shutdown(std::net::Shutdown::Both);
    let _ = conn.shutdown(std::net::Shutdown::Read);
    let _ = up.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_replaced_in_paths() {
        assert_eq!(
            replace_id("/v1.41/containers/web/exec", "web", "abc123"),
            "/v1.41/containers/abc123/exec"
        );
        assert_eq!(
            replace_id("/v1.41/services/web", "web", "s1"),
            "/v1.41/services/s1"
        );
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert_eq!(encoded_len(b"3\r\nabc\r\n0\r\n\r\nEXTRA"), Some(13));
        assert!(dechunk(b"3\r\nab").is_err());
    }
}
