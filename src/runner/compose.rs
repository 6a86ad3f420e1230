//! The compose files a run deploys, read as `docker stack deploy` (and abra's copy of
//! it) reads them: exactly the files of the app env's `COMPOSE_FILE` (the CI overlay
//! `compose.ccci.yml` is one of them once added), in the recipe checkout, each with
//! its YAML merge keys (`<<: *anchor`) resolved, its variables interpolated from the
//! app's env, and merged in order (later files override and extend services).
//!
//! The result is a typed model ([`Compose`]) for what the runner decides on: backup
//! labels and mounts (the data checks), external networks, secrets and configs (the
//! host prerequisites), and what a compose policy judges (binds, namespaces,
//! capabilities, devices, privileges). Whatever the reader cannot understand is an
//! [`Error`] that says what and where; it never guesses.
use super::envfile::{self, EnvFile};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Env(#[from] envfile::Error),
    #[error("compose file {file} of COMPOSE_FILE={value:?} is not in the recipe checkout {dir}")]
    Missing {
        file: String,
        value: String,
        dir: PathBuf,
    },
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{path}: not valid YAML: {detail}")]
    Yaml { path: PathBuf, detail: String },
    #[error("{path}: {at}: {detail}")]
    Shape {
        path: PathBuf,
        at: String,
        detail: String,
    },
    #[error("the compose files {files} merged do not have the shape cc-ci reads: {detail}")]
    Model { files: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The compose files of one app, merged.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Compose {
    /// The files read, in order (not part of the YAML).
    #[serde(skip)]
    pub files: Vec<PathBuf>,
    /// Variables the files use that the env does not set (they became empty).
    #[serde(skip)]
    pub unset: BTreeSet<String>,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Volume>,
    #[serde(default)]
    pub secrets: BTreeMap<String, Object>,
    #[serde(default)]
    pub configs: BTreeMap<String, Object>,
}

/// One service. Labels, environment and networks are maps whatever form the file
/// used; mounts are in long syntax.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Service {
    pub image: Option<String>,
    /// Container labels (`labels:`).
    pub labels: BTreeMap<String, String>,
    pub deploy: Deploy,
    pub environment: BTreeMap<String, Option<String>>,
    pub volumes: Vec<Mount>,
    pub tmpfs: Vec<String>,
    /// Networks the service joins (keys of its `networks:`).
    pub networks: BTreeMap<String, Value>,
    pub depends_on: BTreeMap<String, Value>,
    pub secrets: Vec<Reference>,
    pub configs: Vec<Reference>,
    pub network_mode: Option<String>,
    pub pid: Option<String>,
    pub ipc: Option<String>,
    pub userns_mode: Option<String>,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub devices: Vec<String>,
    pub security_opt: Vec<String>,
    pub stop_grace_period: Option<String>,
}

/// `deploy:` of a service; `labels` are the service's labels on the swarm (where
/// backupbot and abra read theirs).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Deploy {
    pub labels: BTreeMap<String, String>,
    pub mode: Option<String>,
    pub replicas: Option<u64>,
}

/// A mount of a service, in long syntax.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// The volume's name (as in the file's `volumes:`), or the bind's host path; none
    /// for an anonymous volume or a tmpfs.
    #[serde(default)]
    pub source: Option<String>,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
    Npipe,
    Cluster,
}

/// A service's use of a secret or config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Reference {
    pub source: String,
    #[serde(default)]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Network {
    pub external: bool,
    pub name: Option<String>,
    pub driver: Option<String>,
    pub internal: bool,
    pub attachable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Volume {
    pub external: bool,
    pub name: Option<String>,
    pub driver: Option<String>,
}

/// A top-level secret or config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Object {
    pub external: bool,
    pub name: Option<String>,
    pub file: Option<String>,
    pub template_driver: Option<String>,
}

impl Network {
    /// The name on the engine of network `key` (external ones keep theirs).
    pub fn engine_name(&self, key: &str) -> String {
        self.name.clone().unwrap_or_else(|| key.to_string())
    }
}

impl Object {
    pub fn engine_name(&self, key: &str) -> String {
        self.name.clone().unwrap_or_else(|| key.to_string())
    }
}

impl Service {
    /// Where volume `name` is mounted in this service.
    pub fn mount_of(&self, volume: &str) -> Option<&Mount> {
        self.volumes
            .iter()
            .find(|m| m.kind == MountKind::Volume && m.source.as_deref() == Some(volume))
    }
}

/// The sections `docker stack deploy` interpolates and merges by name.
const SECTIONS: [&str; 5] = ["services", "networks", "volumes", "secrets", "configs"];

impl Compose {
    /// The compose files of the app whose env file is `env_file`, in the checkout
    /// `dir`, interpolated as abra deploys them: the env file's variables, the
    /// `export`s of the recipe's `abra.sh` over them, and `STACK_NAME`.
    pub fn of_app(dir: &Path, env_file: &Path, stack: &str) -> Result<Compose> {
        let env = EnvFile::read(env_file)?;
        let mut vars = env.vars();
        let abra_sh = dir.join("abra.sh");
        if abra_sh.is_file() {
            let text =
                std::fs::read_to_string(&abra_sh).map_err(|e| Error::Read(abra_sh.clone(), e))?;
            vars.extend(envfile::abra_sh_exports(&text));
        }
        vars.insert("STACK_NAME".into(), stack.to_string());
        let files = env.compose_files()?;
        let value = env
            .get("COMPOSE_FILE")
            .unwrap_or(envfile::DEFAULT_COMPOSE_FILE);
        for f in &files {
            if !dir.join(f).is_file() {
                return Err(Error::Missing {
                    file: f.clone(),
                    value: value.to_string(),
                    dir: dir.to_owned(),
                });
            }
        }
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        Compose::read(&paths, &vars)
    }

    /// Read `files` in order, interpolated from `env`, and merge them.
    pub fn read(files: &[PathBuf], env: &BTreeMap<String, String>) -> Result<Compose> {
        let mut merged = Value::Mapping(Mapping::new());
        let mut unset = BTreeSet::new();
        for path in files {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Read(path.clone(), e))?;
            let doc = load(path, &text, env, &mut unset)?;
            merge(&mut merged, doc, None);
        }
        let mut compose: Compose = serde_yaml_ng::from_value(merged).map_err(|e| Error::Model {
            files: files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            detail: e.to_string(),
        })?;
        compose.files = files.to_vec();
        compose.unset = unset;
        Ok(compose)
    }
}

/// One file: parsed, merge keys resolved, interpolated, in canonical form.
fn load(
    path: &Path,
    text: &str,
    env: &BTreeMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> Result<Value> {
    let yaml = |detail: String| Error::Yaml {
        path: path.to_owned(),
        detail,
    };
    let mut doc: Value = serde_yaml_ng::from_str(text).map_err(|e| yaml(e.to_string()))?;
    doc.apply_merge()
        .map_err(|e| yaml(format!("merge key (<<): {e}")))?;
    let shape = |at: &str, detail: String| Error::Shape {
        path: path.to_owned(),
        at: at.to_string(),
        detail,
    };
    let Value::Mapping(top) = &mut doc else {
        return Err(shape("top level", "expected a mapping".into()));
    };
    for section in SECTIONS {
        let Some(items) = top.get_mut(section) else {
            continue;
        };
        if items.is_null() {
            *items = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(items) = items else {
            return Err(shape(section, "expected a mapping of names".into()));
        };
        for (name, item) in items.iter_mut() {
            let at = format!("{section}.{}", scalar(name).unwrap_or_default());
            interpolate_value(item, env, unset).map_err(|d| shape(&at, d))?;
            if item.is_null() {
                *item = Value::Mapping(Mapping::new());
            }
            let canonical = match section {
                "services" => canonical_service(item),
                _ => canonical_object(item),
            };
            canonical.map_err(|(field, d)| shape(&format!("{at}.{field}"), d))?;
        }
    }
    Ok(doc)
}

/// A scalar as a string (labels and environment values may be numbers or booleans).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

type Canonical = std::result::Result<(), (String, String)>;

/// `labels`, `environment`, `networks`, `depends_on` as maps; mounts and secret
/// references in long syntax; `tmpfs` as a list.
fn canonical_service(service: &mut Value) -> Canonical {
    let Value::Mapping(svc) = service else {
        return Err((String::new(), "expected a mapping".into()));
    };
    for field in ["labels", "environment"] {
        if let Some(v) = svc.get_mut(field) {
            *v = key_values(v, field == "environment").map_err(|d| (field.to_string(), d))?;
        }
    }
    if let Some(Value::Mapping(deploy)) = svc.get_mut("deploy")
        && let Some(v) = deploy.get_mut("labels")
    {
        *v = key_values(v, false).map_err(|d| ("deploy.labels".to_string(), d))?;
    }
    for field in ["networks", "depends_on"] {
        if let Some(v) = svc.get_mut(field) {
            *v = names(v).map_err(|d| (field.to_string(), d))?;
        }
    }
    if let Some(Value::Sequence(mounts)) = svc.get_mut("volumes") {
        for (i, m) in mounts.iter_mut().enumerate() {
            if let Value::String(short) = m {
                *m = short_mount(short);
            }
            if !m.is_mapping() {
                return Err((
                    format!("volumes[{i}]"),
                    "expected a string or a mapping".into(),
                ));
            }
        }
    }
    for field in ["secrets", "configs"] {
        if let Some(Value::Sequence(refs)) = svc.get_mut(field) {
            for r in refs.iter_mut() {
                if let Value::String(name) = r {
                    let mut long = Mapping::new();
                    long.insert("source".into(), Value::String(name.clone()));
                    *r = Value::Mapping(long);
                }
            }
        }
    }
    if let Some(t) = svc.get_mut("tmpfs")
        && let Value::String(one) = t
    {
        *t = Value::Sequence(vec![Value::String(one.clone())]);
    }
    Ok(())
}

/// `external: {name: x}` (the older form) as `external: true` with `name: x`.
fn canonical_object(object: &mut Value) -> Canonical {
    let Value::Mapping(obj) = object else {
        return Err((String::new(), "expected a mapping".into()));
    };
    if let Some(Value::Mapping(ext)) = obj.get("external").cloned() {
        if let Some(name) = ext.get("name") {
            obj.insert("name".into(), name.clone());
        }
        obj.insert("external".into(), Value::Bool(true));
    }
    Ok(())
}

/// `["K=V", "K"]` or `{K: V}` as a map of strings (`K` alone: null in an
/// environment, empty in labels).
fn key_values(v: &Value, environment: bool) -> std::result::Result<Value, String> {
    let mut out = Mapping::new();
    let bare = |k: &str| {
        (
            Value::String(k.to_string()),
            if environment {
                Value::Null
            } else {
                Value::String(String::new())
            },
        )
    };
    match v {
        Value::Null => {}
        Value::Sequence(items) => {
            for item in items {
                let s = scalar(item).ok_or("expected KEY=VALUE strings")?;
                let (k, v) = match s.split_once('=') {
                    Some((k, v)) => (Value::String(k.into()), Value::String(v.into())),
                    None => bare(&s),
                };
                out.insert(k, v);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = scalar(k).ok_or("expected string keys")?;
                let value = match v {
                    Value::Null if environment => Value::Null,
                    other => Value::String(scalar(other).ok_or_else(|| {
                        format!("the value of {key} is not a string, number or boolean")
                    })?),
                };
                out.insert(Value::String(key), value);
            }
        }
        _ => return Err("expected a list of KEY=VALUE or a mapping".into()),
    }
    Ok(Value::Mapping(out))
}

/// A list of names or a mapping keyed by name, as a mapping.
fn names(v: &Value) -> std::result::Result<Value, String> {
    match v {
        Value::Sequence(items) => Ok(Value::Mapping(
            items
                .iter()
                .map(|i| {
                    scalar(i)
                        .map(|s| (Value::String(s), Value::Null))
                        .ok_or_else(|| "expected a list of names".to_string())
                })
                .collect::<std::result::Result<_, _>>()?,
        )),
        Value::Mapping(_) => Ok(v.clone()),
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        _ => Err("expected a list of names or a mapping".into()),
    }
}

/// `[source:]target[:mode]` in long syntax. A source that is a path (`/`, `.`, `~`)
/// is a bind, else a named volume.
fn short_mount(short: &str) -> Value {
    let parts: Vec<&str> = short.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, mode, ..] => (Some(*source), *target, *mode),
        [] => (None, "", ""),
    };
    let kind = match source {
        Some(s) if s.starts_with(['/', '.', '~']) => "bind",
        _ => "volume",
    };
    let mut long = Mapping::new();
    long.insert("type".into(), kind.into());
    if let Some(s) = source {
        long.insert("source".into(), s.into());
    }
    long.insert("target".into(), target.into());
    long.insert(
        "read_only".into(),
        Value::Bool(mode.split(',').any(|m| m == "ro")),
    );
    Value::Mapping(long)
}

/// Merge `over` into `base` as `docker stack deploy` merges a later file into an
/// earlier one: mappings key by key, mounts by target, secret and config references by
/// source, `command` and `entrypoint` replaced, other lists extended (a healthcheck's
/// `test` too: docker 20.10 appends the later file's words, seen on this machine);
/// any other value replaced.
fn merge(base: &mut Value, over: Value, key: Option<&str>) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let name = k.as_str().map(str::to_string);
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v, name.as_deref()),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(o)) => {
            let id = match key {
                Some("volumes") => Some("target"),
                Some("secrets" | "configs") => Some("source"),
                Some("command" | "entrypoint") => {
                    *b = o;
                    return;
                }
                _ => None,
            };
            for item in o {
                let same = |x: &Value| match id {
                    Some(field) => x.get(field).is_some() && x.get(field) == item.get(field),
                    None => *x == item,
                };
                match b.iter_mut().find(|x| same(x)) {
                    Some(existing) if id.is_some() => *existing = item,
                    Some(_) => {}
                    None => b.push(item),
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Interpolate every string in `v` (values, not keys).
fn interpolate_value(
    v: &mut Value,
    env: &BTreeMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> std::result::Result<(), String> {
    match v {
        Value::String(s) => *s = interpolate(s, env, unset)?,
        Value::Sequence(items) => {
            for i in items {
                interpolate_value(i, env, unset)?;
            }
        }
        Value::Mapping(map) => {
            for (_, i) in map.iter_mut() {
                interpolate_value(i, env, unset)?;
            }
        }
        Value::Tagged(t) => interpolate_value(&mut t.value, env, unset)?,
        _ => {}
    }
    Ok(())
}

/// `docker stack deploy`'s interpolation: `$$` is `$`; `$VAR` and `${VAR}`;
/// `${VAR:-default}`/`${VAR-default}` (unset or empty / unset); `${VAR:?err}`/
/// `${VAR?err}` (an error when unset or empty / unset); `${VAR:+alt}`/`${VAR+alt}`.
/// A variable that is not set is empty (and recorded in `unset`); any other `$` is
/// an error.
pub fn interpolate(
    s: &str,
    env: &BTreeMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> std::result::Result<String, String> {
    let invalid = || format!("invalid interpolation format in {s:?}: use $$ for a literal $");
    let is_start = |c: char| c == '_' || c.is_ascii_alphabetic();
    let is_name = |c: char| c == '_' || c.is_ascii_alphanumeric();
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some(c) if is_start(c) => {
                let len = after.find(|c| !is_name(c)).unwrap_or(after.len());
                out.push_str(&lookup(&after[..len], env, unset));
                rest = &after[len..];
            }
            Some('{') => {
                let body_len = braced_len(&after[1..]).ok_or_else(invalid)?;
                let body = &after[1..1 + body_len];
                out.push_str(&braced(body, env, unset).map_err(|e| e.unwrap_or_else(invalid))?);
                rest = &after[1 + body_len + 1..];
            }
            _ => return Err(invalid()),
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The length of `${…}`'s body up to its closing brace (nested `${…}` included).
fn braced_len(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut prev = '\0';
    for (i, c) in s.char_indices() {
        match c {
            '{' if prev == '$' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
        prev = c;
    }
    None
}

/// The value of `${body}`; `Err(Some(message))` for a required variable that is not
/// set, `Err(None)` for a body that is not an interpolation.
fn braced(
    body: &str,
    env: &BTreeMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> std::result::Result<String, Option<String>> {
    let len = body
        .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(None);
    }
    let value = env.get(name);
    let set = value.is_some();
    let nonempty = value.is_some_and(|v| !v.is_empty());
    let word = |w: &str, unset: &mut BTreeSet<String>| interpolate(w, env, unset).map_err(Some);
    let (test, arg) = match op {
        "" => return Ok(lookup(name, env, unset)),
        _ if op.starts_with(":-") => ("default", (nonempty, &op[2..])),
        _ if op.starts_with('-') => ("default", (set, &op[1..])),
        _ if op.starts_with(":?") => ("required", (nonempty, &op[2..])),
        _ if op.starts_with('?') => ("required", (set, &op[1..])),
        _ if op.starts_with(":+") => ("alternative", (nonempty, &op[2..])),
        _ if op.starts_with('+') => ("alternative", (set, &op[1..])),
        _ => return Err(None),
    };
    let (holds, arg) = arg;
    match (test, holds) {
        ("default", true) | ("required", true) => Ok(value.cloned().unwrap_or_default()),
        ("default", false) => word(arg, unset),
        ("required", false) => Err(Some(format!(
            "required variable {name} is missing a value: {}",
            word(arg, unset)?
        ))),
        ("alternative", true) => word(arg, unset),
        _ => Ok(String::new()),
    }
}

fn lookup(name: &str, env: &BTreeMap<String, String>, unset: &mut BTreeSet<String>) -> String {
    match env.get(name) {
        Some(v) => v.clone(),
        None => {
            unset.insert(name.to_string());
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const BASE: &str = r#"
version: "3.8"
x-app-env: &app-env
  DB_HOST: db
  GREETING: ${GREETING:-hello}
services:
  app:
    image: example/app:${APP_TAG}
    environment:
      <<: *app-env
      EXTRA: "1"
    networks: [proxy, backend]
    volumes:
      - data:/srv/data
      - ./conf:/etc/app:ro
      - /tmp/cache
    tmpfs: /run
    secrets: [admin_password]
    deploy:
      labels:
        - "traefik.http.routers.${STACK_NAME}.rule=Host(`${DOMAIN}`)"
        - "coop-cloud.${STACK_NAME}.version=1.0.0+1.0"
        - backupbot.backup=true
    depends_on: [db]
    stop_grace_period: 30s
volumes:
  data:
networks:
  proxy:
    external: true
  backend:
    internal: true
secrets:
  admin_password:
    external: true
    name: ${STACK_NAME}_admin_password_${SECRET_ADMIN_PASSWORD_VERSION}
"#;

    const DB: &str = r#"
version: "3.8"
x-db: &db
  image: example/db:1
  stop_grace_period: 1m
services:
  app:
    environment:
      EXTRA: "2"
    volumes:
      - type: volume
        source: other
        target: /srv/data
    deploy:
      labels:
        backupbot.backup.volumes.other.path: "x"
  db:
    <<: *db
    volumes:
      - type: volume
        source: db
        target: /var/lib/db
    tmpfs: [/tmp, /run]
    networks:
      backend:
        aliases: [database]
    cap_add: [SYS_NICE]
    privileged: true
    pid: host
    deploy:
      labels:
        backupbot.backup: true
        backupbot.backup.volumes.db.path: "backup.sql"
        backupbot.backup.pre-hook: "db dump"
volumes:
  other:
  db:
    external:
      name: shared_db
"#;

    #[test]
    fn files_merge_in_order_with_merge_keys_and_interpolation() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            write(dir.path(), "compose.yml", BASE),
            write(dir.path(), "compose.db.yml", DB),
        ];
        let e = env(&[
            ("STACK_NAME", "gb_ci_localhost"),
            ("DOMAIN", "gb.ci.localhost"),
            ("SECRET_ADMIN_PASSWORD_VERSION", "v1"),
            ("APP_TAG", "2"),
        ]);
        let c = Compose::read(&files, &e).unwrap();
        let app = &c.services["app"];
        assert_eq!(app.image.as_deref(), Some("example/app:2"));
        // Merge keys, defaults, and the later file overriding one key of the map.
        assert_eq!(app.environment["DB_HOST"].as_deref(), Some("db"));
        assert_eq!(app.environment["GREETING"].as_deref(), Some("hello"));
        assert_eq!(app.environment["EXTRA"].as_deref(), Some("2"));
        assert_eq!(
            app.deploy.labels["traefik.http.routers.gb_ci_localhost.rule"],
            "Host(`gb.ci.localhost`)"
        );
        assert_eq!(app.deploy.labels["backupbot.backup"], "true");
        assert_eq!(
            app.deploy.labels["backupbot.backup.volumes.other.path"],
            "x"
        );
        // Mounts: short and long syntax, merged by target.
        let targets: Vec<(&str, MountKind, Option<&str>, bool)> = app
            .volumes
            .iter()
            .map(|m| (m.target.as_str(), m.kind, m.source.as_deref(), m.read_only))
            .collect();
        assert_eq!(
            targets,
            [
                ("/srv/data", MountKind::Volume, Some("other"), false),
                ("/etc/app", MountKind::Bind, Some("./conf"), true),
                ("/tmp/cache", MountKind::Volume, None, false),
            ]
        );
        assert_eq!(app.tmpfs, ["/run"]);
        assert_eq!(app.secrets[0].source, "admin_password");
        assert!(app.networks.contains_key("proxy") && app.networks.contains_key("backend"));
        assert!(app.depends_on.contains_key("db"));
        assert_eq!(app.stop_grace_period.as_deref(), Some("30s"));
        let db = &c.services["db"];
        assert_eq!(db.image.as_deref(), Some("example/db:1"));
        assert_eq!(db.stop_grace_period.as_deref(), Some("1m"));
        assert_eq!(db.mount_of("db").unwrap().target, "/var/lib/db");
        assert_eq!(db.tmpfs, ["/tmp", "/run"]);
        assert_eq!(db.cap_add, ["SYS_NICE"]);
        assert!(db.privileged);
        assert_eq!(db.pid.as_deref(), Some("host"));
        assert!(db.networks.contains_key("backend"));
        assert_eq!(db.deploy.labels["backupbot.backup.pre-hook"], "db dump");
        // Top level: external objects with their names.
        assert!(c.networks["proxy"].external);
        assert_eq!(c.networks["proxy"].engine_name("proxy"), "proxy");
        assert!(c.networks["backend"].internal);
        assert!(c.volumes["db"].external);
        assert_eq!(c.volumes["db"].name.as_deref(), Some("shared_db"));
        assert!(c.volumes.contains_key("data") && c.volumes.contains_key("other"));
        assert_eq!(
            c.secrets["admin_password"].engine_name("admin_password"),
            "gb_ci_localhost_admin_password_v1"
        );
        assert!(c.unset.is_empty(), "{:?}", c.unset);
        assert_eq!(c.files.len(), 2);
    }

    #[test]
    fn the_app_env_decides_the_files_and_the_variables() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "compose.yml", BASE);
        write(dir.path(), "compose.db.yml", DB);
        write(
            dir.path(),
            "abra.sh",
            "export APP_TAG=from-abra-sh\nexport CONF_VERSION=v2\n",
        );
        let env_file = write(
            dir.path(),
            "app.env",
            "TYPE=gb\nDOMAIN=gb.example.org\nAPP_TAG=from-env\nCOMPOSE_FILE=compose.yml\n\
             COMPOSE_FILE=\"$COMPOSE_FILE:compose.db.yml\"\nSECRET_ADMIN_PASSWORD_VERSION=v3 # length=8\n",
        );
        let c = Compose::of_app(dir.path(), &env_file, "gb_example_org").unwrap();
        assert_eq!(c.files.len(), 2);
        assert!(c.services.contains_key("db"));
        assert_eq!(
            c.services["app"].image.as_deref(),
            Some("example/app:from-abra-sh")
        );
        assert_eq!(
            c.secrets["admin_password"].name.as_deref(),
            Some("gb_example_org_admin_password_v3")
        );
        // A file that COMPOSE_FILE names but the recipe lacks.
        std::fs::write(&env_file, "COMPOSE_FILE=compose.yml:compose.mail.yml\n").unwrap();
        let e = Compose::of_app(dir.path(), &env_file, "s")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("compose file compose.mail.yml of COMPOSE_FILE"),
            "{e}"
        );
    }

    #[test]
    fn interpolation_follows_docker_stack_deploy() {
        let e = env(&[("A", "a"), ("EMPTY", "")]);
        let mut unset = BTreeSet::new();
        let mut i = |s: &str| interpolate(s, &e, &mut unset);
        assert_eq!(i("$A-${A}-$$A-$$").unwrap(), "a-a-$A-$");
        assert_eq!(
            i("${EMPTY:-d}|${EMPTY-d}|${NOPE-d}|${NOPE:-${A}x}").unwrap(),
            "d||d|ax"
        );
        assert_eq!(
            i("${A:+alt}|${EMPTY:+alt}|${EMPTY+alt}|${NOPE+alt}").unwrap(),
            "alt||alt|"
        );
        assert_eq!(i("${A:?must}|${EMPTY?ok}").unwrap(), "a|");
        assert!(
            i("${NOPE:?set NOPE}")
                .unwrap_err()
                .contains("required variable NOPE is missing a value: set NOPE")
        );
        assert!(i("${EMPTY:?e}").is_err());
        assert!(
            i("cost: 5$")
                .unwrap_err()
                .contains("use $$ for a literal $")
        );
        assert!(i("${unclosed").is_err());
        assert!(i("${1BAD}").is_err());
        assert_eq!(i("$NOPE and ${ALSO_NOPE}").unwrap(), " and ");
        assert_eq!(unset.into_iter().collect::<Vec<_>>(), ["ALSO_NOPE", "NOPE"]);
    }

    #[test]
    fn what_the_reader_does_not_understand_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let read = |text: &str| {
            let f = write(dir.path(), "compose.yml", text);
            Compose::read(&[f], &BTreeMap::new())
                .unwrap_err()
                .to_string()
        };
        let e = read("services: [app]\n");
        assert!(
            e.contains("compose.yml: services: expected a mapping of names"),
            "{e}"
        );
        let e = read("services:\n  app:\n    labels: 3\n");
        assert!(e.contains("services.app.labels: expected a list"), "{e}");
        let e = read("services:\n  app:\n    image: \"a$ b\"\n");
        assert!(
            e.contains("services.app: invalid interpolation format"),
            "{e}"
        );
        let e = read("services:\n  app: {image: x\n");
        assert!(e.contains("not valid YAML"), "{e}");
        let e = read("services:\n  app:\n    <<: 3\n");
        assert!(e.contains("merge key (<<)"), "{e}");
        let e = read("services:\n  app:\n    volumes:\n      - type: weird\n        target: /x\n");
        assert!(e.contains("do not have the shape cc-ci reads"), "{e}");
    }
}
