//! The compose policy: what a pull request's compose files may ask of the host.
//!
//! A recipe's compose files are untrusted (anyone can open a pull request from a
//! fork). Before anything is deployed, every compose file the run could deploy, at the
//! tested commit and at the upgrade base, plus the CI overlay, is read and refused if
//! a service asks for the host: a bind mount of a host path (the Docker socket among
//! them), the host's network, PID or IPC namespace, added capabilities, devices or
//! privileged mode. The operator allows what a recipe really needs (the backup bot
//! needs the Docker socket) per service in its CI-side meta, `POLICY_ALLOW`.
use serde_yaml_ng::Value;

/// What a service asks of the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setting {
    /// A bind mount of the Docker socket.
    DockerSocket,
    /// A bind mount of another host path.
    Bind(String),
    /// `network_mode: host`, or the external network `host`.
    HostNetwork,
    HostPid,
    HostIpc,
    Privileged,
    CapAdd(String),
    Device(String),
}

impl Setting {
    /// How the operator allows it in `POLICY_ALLOW` (also what the refusal names).
    pub fn allow_token(&self) -> String {
        match self {
            Setting::DockerSocket => "docker-socket".into(),
            Setting::Bind(p) => format!("bind:{p}"),
            Setting::HostNetwork => "host-network".into(),
            Setting::HostPid => "host-pid".into(),
            Setting::HostIpc => "host-ipc".into(),
            Setting::Privileged => "privileged".into(),
            Setting::CapAdd(c) => format!("cap:{c}"),
            Setting::Device(d) => format!("device:{d}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Setting::DockerSocket => "binds the Docker socket (root on the host)".into(),
            Setting::Bind(p) => format!("bind-mounts the host path {p}"),
            Setting::HostNetwork => "uses the host's network".into(),
            Setting::HostPid => "uses the host's PID namespace".into(),
            Setting::HostIpc => "uses the host's IPC namespace".into(),
            Setting::Privileged => "runs privileged".into(),
            Setting::CapAdd(c) => format!("adds the capability {c}"),
            Setting::Device(d) => format!("maps the device {d}"),
        }
    }
}

/// Whether `token` is a valid `POLICY_ALLOW` entry.
pub fn valid_allow_token(token: &str) -> bool {
    matches!(
        token,
        "docker-socket" | "host-network" | "host-pid" | "host-ipc" | "privileged"
    ) || ["bind:", "cap:", "device:"]
        .iter()
        .any(|p| token.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

/// One refused setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The compose file and the commit it was read at (e.g. `compose.yml at 1.0.0+1.0`).
    pub file: String,
    pub service: String,
    pub setting: Setting,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "service {} in {} {}; to allow it, add \"{}\" to POLICY_ALLOW.{} in the recipe's \
             meta.toml",
            self.service,
            self.file,
            self.setting.describe(),
            self.setting.allow_token(),
            self.service
        )
    }
}

/// The policy's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file} is not valid YAML: {source}")]
    Yaml {
        file: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error(
        "the compose policy refuses what the recipe asks of the host (nothing was deployed): {}",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Refused(Vec<Violation>),
}

const SOCKETS: [&str; 3] = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/user/docker.sock",
];

/// What the services of one compose file (`text`, read as `file`) ask of the host
/// that `allowed(service, token)` does not allow.
pub fn check(
    file: &str,
    text: &str,
    allowed: impl Fn(&str, &str) -> bool,
) -> Result<Vec<Violation>, Error> {
    let mut doc: Value = serde_yaml_ng::from_str(text).map_err(|source| Error::Yaml {
        file: file.into(),
        source,
    })?;
    doc.apply_merge().map_err(|source| Error::Yaml {
        file: file.into(),
        source,
    })?;
    let host_networks = host_network_names(&doc);
    let mut out = Vec::new();
    let Some(services) = doc.get("services").and_then(Value::as_mapping) else {
        return Ok(out);
    };
    for (name, svc) in services {
        let service = name.as_str().unwrap_or_default().to_string();
        let mut settings = Vec::new();
        for volume in svc
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let Some(source) = bind_source(volume) {
                let trimmed = source.trim_end_matches('/');
                if SOCKETS.contains(&trimmed) {
                    settings.push(Setting::DockerSocket);
                } else {
                    settings.push(Setting::Bind(source));
                }
            }
        }
        let string = |key: &str| svc.get(key).and_then(Value::as_str).unwrap_or_default();
        if string("network_mode") == "host" {
            settings.push(Setting::HostNetwork);
        }
        if service_networks(svc)
            .iter()
            .any(|n| host_networks.contains(n))
        {
            settings.push(Setting::HostNetwork);
        }
        if string("pid") == "host" {
            settings.push(Setting::HostPid);
        }
        if string("ipc") == "host" {
            settings.push(Setting::HostIpc);
        }
        if svc.get("privileged").and_then(Value::as_bool) == Some(true) {
            settings.push(Setting::Privileged);
        }
        for cap in strings(svc.get("cap_add")) {
            settings.push(Setting::CapAdd(
                cap.trim_start_matches("CAP_").to_uppercase(),
            ));
        }
        for device in strings(svc.get("devices")) {
            let host = device.split(':').next().unwrap_or_default().to_string();
            settings.push(Setting::Device(host));
        }
        settings.sort();
        settings.dedup();
        for setting in settings {
            if !allowed(&service, &setting.allow_token()) {
                out.push(Violation {
                    file: file.into(),
                    service: service.clone(),
                    setting,
                });
            }
        }
    }
    Ok(out)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect()
}

/// The host path of a bind mount, in the short (`/src:/dst[:mode]`, `./rel:/dst`) or
/// the long syntax (`type: bind`); `None` for named volumes and tmpfs.
fn bind_source(volume: &Value) -> Option<String> {
    if let Some(short) = volume.as_str() {
        let (source, _) = short.split_once(':')?;
        let is_path = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
        return is_path.then(|| source.to_string());
    }
    let long = volume.as_mapping()?;
    let kind = long.get("type").and_then(Value::as_str).unwrap_or("volume");
    (kind == "bind").then(|| {
        long.get("source")
            .and_then(Value::as_str)
            .unwrap_or("(no source)")
            .to_string()
    })
}

/// The names a service uses for its networks (list or map form).
fn service_networks(svc: &Value) -> Vec<String> {
    match svc.get("networks") {
        Some(Value::Sequence(list)) => list
            .iter()
            .filter_map(|n| n.as_str().map(String::from))
            .collect(),
        Some(Value::Mapping(map)) => map
            .keys()
            .filter_map(|n| n.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// The top-level networks that are the host's network: external with the name `host`.
fn host_network_names(doc: &Value) -> Vec<String> {
    let Some(networks) = doc.get("networks").and_then(Value::as_mapping) else {
        return Vec::new();
    };
    networks
        .iter()
        .filter_map(|(key, net)| {
            let key = key.as_str()?;
            let external = net.get("external").and_then(Value::as_bool) == Some(true);
            let name = net.get("name").and_then(Value::as_str).unwrap_or(key);
            (external && name == "host").then(|| key.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Vec<String> {
        check("compose.yml", text, |_, _| false)
            .unwrap()
            .iter()
            .map(|v| format!("{}:{}", v.service, v.setting.allow_token()))
            .collect()
    }

    #[test]
    fn a_plain_recipe_asks_nothing_of_the_host() {
        let text = "version: \"3.8\"\nservices:\n  app:\n    image: x\n    volumes:\n      - data:/data\n      - type: tmpfs\n        target: /tmp\n    networks: [proxy, internal]\nvolumes:\n  data:\nnetworks:\n  proxy:\n    external: true\n  internal:\n    internal: true\n";
        assert!(refused(text).is_empty());
    }

    #[test]
    fn binds_sockets_host_namespaces_caps_and_devices_are_refused() {
        let text = r#"
services:
  root:
    image: x
    volumes:
      - /:/host
      - /var/run/docker.sock:/var/run/docker.sock:ro
      - type: bind
        source: /etc
        target: /host-etc
      - ./conf:/conf
  net:
    image: x
    network_mode: host
    pid: host
    ipc: host
  hostnet:
    image: x
    networks: [outside]
  caps:
    image: x
    privileged: true
    cap_add: [NET_ADMIN, CAP_SYS_ADMIN]
    devices: ["/dev/fuse:/dev/fuse"]
networks:
  outside:
    external: true
    name: host
"#;
        assert_eq!(
            refused(text),
            [
                "root:docker-socket",
                "root:bind:./conf",
                "root:bind:/",
                "root:bind:/etc",
                "net:host-network",
                "net:host-pid",
                "net:host-ipc",
                "hostnet:host-network",
                "caps:privileged",
                "caps:cap:NET_ADMIN",
                "caps:cap:SYS_ADMIN",
                "caps:device:/dev/fuse",
            ]
        );
    }

    #[test]
    fn merge_keys_are_followed() {
        let text = r#"
x-danger: &danger
  volumes:
    - /var/run/docker.sock:/var/run/docker.sock
services:
  bot:
    <<: *danger
    image: x
"#;
        assert_eq!(refused(text), ["bot:docker-socket"]);
    }

    #[test]
    fn what_the_operator_allows_passes_for_that_service_only() {
        let text = "services:\n  bot:\n    image: x\n    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n  app:\n    image: x\n    volumes: [\"/var/run/docker.sock:/s\"]\n";
        let v = check("compose.yml", text, |svc, token| {
            svc == "bot" && token == "docker-socket"
        })
        .unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].to_string(),
            "service app in compose.yml binds the Docker socket (root on the host); to allow \
             it, add \"docker-socket\" to POLICY_ALLOW.app in the recipe's meta.toml"
        );
    }

    #[test]
    fn invalid_yaml_is_named() {
        let err = check("compose.x.yml", "services: [", |_, _| false).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("compose.x.yml is not valid YAML"),
            "{err}"
        );
    }

    #[test]
    fn allow_tokens_are_checked() {
        for ok in [
            "docker-socket",
            "bind:/",
            "bind:./conf",
            "cap:NET_ADMIN",
            "device:/dev/fuse",
            "host-pid",
        ] {
            assert!(valid_allow_token(ok), "{ok}");
        }
        for bad in ["socket", "bind:", "cap:", "device:", ""] {
            assert!(!valid_allow_token(bad), "{bad}");
        }
    }
}
