//! The endpoint's allow-list: which requests the run's tests may make, by method and
//! path (with or without the `/v1.NN` version prefix), and the checks on their
//! bodies. Pure functions: the engine is asked about ownership in `mod.rs`.
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::Value;

/// The label `docker stack deploy` (and abra) put on a stack's services and
/// containers.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// A named rule, shown in refusals as `cc-ci: <rule>: <why>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub rule: &'static str,
    pub why: String,
}

impl Refusal {
    pub fn new(rule: &'static str, why: impl Into<String>) -> Refusal {
        Refusal {
            status: 403,
            rule,
            why: why.into(),
        }
    }

    /// The message the Docker CLI prints after "Error response from daemon: ".
    pub fn message(&self) -> String {
        format!("cc-ci: {}: {}", self.rule, self.why)
    }
}

/// What a request is, once routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/_ping`, `/version`: what the CLI needs to start (API version negotiation).
    Start,
    /// `GET /containers/json`, `GET /services`: the stack's label added to `filters`.
    ListScoped,
    /// `GET /tasks`: the answer filtered to the stack's services.
    ListTasks,
    /// A container of the stack: inspect, logs, top.
    Container(String),
    /// `POST /containers/{id}/exec`: a container of the stack, body checked.
    ExecCreate(String),
    /// A service of the stack: inspect, logs.
    Service(String),
    /// A task of one of the stack's services.
    Task(String),
    /// An exec instance created through this endpoint: start (hijacked), inspect,
    /// resize.
    Exec(String),
    /// A node by id: `docker service ps` shows node names.
    Node,
}

/// Route `method` + `path` (no query), or refuse naming the rule.
pub fn route(method: &str, path: &str) -> Result<Route, Refusal> {
    let path = strip_version(path);
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let read = method == "GET" || method == "HEAD";
    let r = match (method, seg.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) | ("GET", ["version"]) => Route::Start,
        ("GET", ["containers", "json"]) | ("GET", ["services"]) => Route::ListScoped,
        ("GET", ["tasks"]) => Route::ListTasks,
        ("GET", ["containers", id, "json" | "logs" | "top"]) => Route::Container(id.to_string()),
        ("POST", ["containers", id, "exec"]) => Route::ExecCreate(id.to_string()),
        ("GET", ["services", id]) | ("GET", ["services", id, "logs"]) => {
            Route::Service(id.to_string())
        }
        ("GET", ["tasks", id]) => Route::Task(id.to_string()),
        ("POST", ["exec", id, "start" | "resize"]) | ("GET", ["exec", id, "json"]) => {
            Route::Exec(id.to_string())
        }
        ("GET", ["nodes", _]) => Route::Node,
        _ => {
            let what = match seg.first().copied().unwrap_or("") {
                "containers" if seg.get(1) == Some(&"create") => "creating containers",
                "volumes" => "volumes",
                "networks" => "networks",
                "images" | "build" | "commit" => "images",
                "secrets" | "configs" => "secrets and configs",
                "swarm" | "nodes" | "info" | "system" | "events" | "plugins" | "session"
                | "distribution" | "auth" => "the engine",
                "services" | "tasks" | "containers" | "exec" if !read => "changing the stack",
                _ => "this request",
            };
            return Err(Refusal::new(
                "not-allowed",
                format!(
                    "{method} {path}: the run's Docker endpoint does not allow {what}; tests may \
                     list, inspect, read logs of and exec into the run's own stack"
                ),
            ));
        }
    };
    Ok(r)
}

/// `/v1.41/containers/json` → `/containers/json`.
fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let v = &rest[..end];
        if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return &rest[end..];
        }
    }
    path
}

/// Characters escaped in a query value we write (Go's QueryUnescape reads them all).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The query with the stack's namespace label added to its `filters` (AND with
/// whatever the test asked for).
pub fn scope_filters(query: &str, stack: &str) -> Result<String, Refusal> {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let label = format!("{NAMESPACE_LABEL}={stack}");
    let mut found = false;
    for (_, v) in pairs.iter_mut().filter(|(k, _)| k == "filters") {
        found = true;
        let mut filters: Value = if v.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_str(v)
                .map_err(|e| Refusal::new("bad-filters", format!("filters is not JSON: {e}")))?
        };
        let Some(map) = filters.as_object_mut() else {
            return Err(Refusal::new("bad-filters", "filters is not a JSON object"));
        };
        match map
            .entry("label")
            .or_insert_with(|| Value::Object(Default::default()))
        {
            Value::Object(labels) => {
                labels.insert(label.clone(), Value::Bool(true));
            }
            Value::Array(labels) => labels.push(Value::String(label.clone())),
            _ => {
                return Err(Refusal::new(
                    "bad-filters",
                    "filters.label is neither map nor list",
                ));
            }
        }
        *v = filters.to_string();
    }
    if !found {
        pairs.push((
            "filters".into(),
            serde_json::json!({ "label": { label: true } }).to_string(),
        ));
    }
    Ok(pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(v, QUERY)
            )
        })
        .collect::<Vec<_>>()
        .join("&"))
}

fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// An exec-create body: never privileged; no root user unless `exec_as_root`.
pub fn check_exec(body: &[u8], exec_as_root: bool) -> Result<(), Refusal> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::new("bad-exec", format!("the exec body is not JSON: {e}")))?;
    if v.get("Privileged").and_then(Value::as_bool) == Some(true) {
        return Err(Refusal::new(
            "privileged-exec",
            "docker exec --privileged is not allowed",
        ));
    }
    if !exec_as_root {
        let user = v.get("User").and_then(Value::as_str).unwrap_or("");
        if user.split(':').any(|p| p == "root" || p == "0") {
            return Err(Refusal::new(
                "exec-as-root",
                format!(
                    "docker exec --user {user} is not allowed (runner.confine.exec_as_root is off)"
                ),
            ));
        }
    }
    Ok(())
}

/// The labels' namespace of an inspected object (`Config.Labels` of a container,
/// `Spec.Labels` of a service).
pub fn namespace_of(v: &Value) -> Option<&str> {
    v.pointer("/Config/Labels")
        .or_else(|| v.pointer("/Spec/Labels"))
        .and_then(|l| l.get(NAMESPACE_LABEL))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_with_and_without_version() {
        assert_eq!(
            route("GET", "/v1.41/containers/json"),
            Ok(Route::ListScoped)
        );
        assert_eq!(route("HEAD", "/_ping"), Ok(Route::Start));
        assert_eq!(
            route("POST", "/v1.41/containers/abc/exec"),
            Ok(Route::ExecCreate("abc".into()))
        );
        assert_eq!(
            route("POST", "/v1.41/exec/e1/start"),
            Ok(Route::Exec("e1".into()))
        );
        for (m, p, rule_word) in [
            ("POST", "/v1.41/containers/create", "creating containers"),
            ("POST", "/v1.41/volumes/create", "volumes"),
            ("GET", "/v1.41/info", "the engine"),
            ("POST", "/v1.41/images/create", "images"),
            ("DELETE", "/v1.41/containers/abc", "changing the stack"),
            ("POST", "/v1.41/services/abc/update", "changing the stack"),
        ] {
            let r = route(m, p).unwrap_err();
            assert_eq!(r.status, 403);
            assert!(
                r.message().starts_with("cc-ci: not-allowed: "),
                "{}",
                r.message()
            );
            assert!(r.message().contains(rule_word), "{m} {p}: {}", r.message());
        }
    }

    #[test]
    fn filters_get_the_stack_label_anded() {
        let q = scope_filters(
            "all=1&filters=%7B%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D",
            "app_test",
        )
        .unwrap();
        let filters = q.split('&').find(|p| p.starts_with("filters=")).unwrap();
        let v: Value = serde_json::from_str(&decode(&filters[8..])).unwrap();
        assert_eq!(v["label"]["a=b"], true);
        assert_eq!(v["label"]["com.docker.stack.namespace=app_test"], true);
        assert!(q.starts_with("all=1&"));
        let q = scope_filters("", "s").unwrap();
        let v: Value = serde_json::from_str(&decode(&q[8..])).unwrap();
        assert_eq!(v["label"]["com.docker.stack.namespace=s"], true);
        let q = scope_filters("filters=%7B%22label%22%3A%5B%22x%22%5D%7D", "s").unwrap();
        let v: Value = serde_json::from_str(&decode(&q[8..])).unwrap();
        assert_eq!(
            v["label"],
            serde_json::json!(["x", "com.docker.stack.namespace=s"])
        );
    }

    #[test]
    fn exec_bodies() {
        assert!(check_exec(br#"{"Cmd":["true"]}"#, false).is_ok());
        assert!(check_exec(br#"{"User":"1000"}"#, false).is_ok());
        assert_eq!(
            check_exec(br#"{"Privileged":true}"#, true)
                .unwrap_err()
                .rule,
            "privileged-exec"
        );
        for u in ["root", "0", "0:0", "1000:0", "root:root"] {
            let body = format!(r#"{{"User":"{u}"}}"#);
            assert_eq!(
                check_exec(body.as_bytes(), false).unwrap_err().rule,
                "exec-as-root"
            );
            assert!(check_exec(body.as_bytes(), true).is_ok());
        }
    }
}
