//! What a recipe's compose files need of the host before anything is deployed: the
//! external networks its services join (a Co-op Cloud server has the gateway's
//! overlay network `proxy`), and external secrets and configs that are not the app's
//! own (abra creates the app's `<stack>_…` secrets itself). A host that lacks one is
//! the host's fault: the run says what is missing and the command that creates it.
use super::compose::Compose;
use crate::docker::{self, Docker, Kind};

/// One thing the host lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Network {
        name: String,
        services: Vec<String>,
    },
    /// The network exists but a swarm stack cannot join it.
    NotSwarmScoped {
        name: String,
        scope: String,
        driver: String,
    },
    Object {
        kind: Kind,
        name: String,
    },
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Network { name, services } => write!(
                f,
                "the host has no network {name:?}, which the recipe declares external and \
                 service(s) {} join; create it: docker network create --driver overlay \
                 --attachable {name}",
                services.join(", ")
            ),
            Missing::NotSwarmScoped {
                name,
                scope,
                driver,
            } => write!(
                f,
                "network {name:?} exists but is {scope}-scoped (driver {driver}), and a swarm \
                 stack can join only an overlay network; recreate it: docker network rm {name} \
                 && docker network create --driver overlay --attachable {name}"
            ),
            Missing::Object { kind, name } => write!(
                f,
                "the host has no {kind} {name:?}, which the recipe declares external and \
                 abra does not create; create it: docker {kind} create {name} FILE"
            ),
        }
    }
}

/// Everything of the host that `compose` needs and the engine lacks.
pub fn missing(
    compose: &Compose,
    docker: &dyn Docker,
    stack: &str,
) -> docker::Result<Vec<Missing>> {
    let mut out = Vec::new();
    for (key, network) in compose.networks.iter().filter(|(_, n)| n.external) {
        let services: Vec<String> = compose
            .services
            .iter()
            .filter(|(_, s)| {
                s.networks.contains_key(key)
                    || (key == "default" && s.networks.is_empty() && s.network_mode.is_none())
            })
            .map(|(name, _)| name.clone())
            .collect();
        if services.is_empty() {
            continue;
        }
        let name = network.engine_name(key);
        match docker.network(&name)? {
            None => out.push(Missing::Network { name, services }),
            // The engine's own `host` network is the one local network a swarm
            // service may join (host networking in a stack).
            Some(n) if n.scope != "swarm" && n.driver != "host" => {
                out.push(Missing::NotSwarmScoped {
                    name,
                    scope: n.scope,
                    driver: n.driver,
                })
            }
            Some(_) => {}
        }
    }
    let own = format!("{stack}_");
    for (kind, objects) in [
        (Kind::Secret, &compose.secrets),
        (Kind::Config, &compose.configs),
    ] {
        let wanted: Vec<String> = objects
            .iter()
            .filter(|(key, o)| {
                o.external
                    && compose.services.values().any(|s| {
                        let refs = if kind == Kind::Secret {
                            &s.secrets
                        } else {
                            &s.configs
                        };
                        refs.iter().any(|r| &r.source == *key)
                    })
            })
            .map(|(key, o)| o.engine_name(key))
            .filter(|name| !name.starts_with(&own))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let present: Vec<String> = docker.objects(kind)?.into_iter().map(|o| o.name).collect();
        out.extend(
            wanted
                .into_iter()
                .filter(|n| !present.contains(n))
                .map(|name| Missing::Object { kind, name }),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reap::scripted::ScriptedDocker;
    use crate::runner::compose::{Network, Object, Reference, Service};

    fn compose() -> Compose {
        let mut app = Service::default();
        app.networks.insert("proxy".into(), Default::default());
        app.networks.insert("internal".into(), Default::default());
        app.secrets = vec![
            Reference {
                source: "admin".into(),
                target: None,
            },
            Reference {
                source: "shared_ca".into(),
                target: None,
            },
        ];
        let mut c = Compose::default();
        c.services.insert("app".into(), app);
        c.services.insert("worker".into(), Service::default());
        let external = Network {
            external: true,
            ..Default::default()
        };
        c.networks.insert("proxy".into(), external.clone());
        c.networks.insert("internal".into(), Network::default());
        // Declared external but joined by nobody: not needed.
        c.networks.insert("unused".into(), external);
        c.secrets.insert(
            "admin".into(),
            Object {
                external: true,
                name: Some("s_admin_v1".into()),
                ..Default::default()
            },
        );
        c.secrets.insert(
            "shared_ca".into(),
            Object {
                external: true,
                name: Some("host_ca".into()),
                ..Default::default()
            },
        );
        c
    }

    #[test]
    fn a_missing_external_network_is_named_with_the_command_that_creates_it() {
        let d = ScriptedDocker::default();
        d.add(Kind::Secret, "host_ca", None);
        let m = missing(&compose(), &d, "s").unwrap();
        assert_eq!(
            m,
            [Missing::Network {
                name: "proxy".into(),
                services: vec!["app".into()]
            }]
        );
        let text = m[0].to_string();
        assert!(
            text.contains("docker network create --driver overlay --attachable proxy"),
            "{text}"
        );
        d.add(Kind::Network, "proxy", None);
        assert!(missing(&compose(), &d, "s").unwrap().is_empty());
    }

    #[test]
    fn the_hosts_network_may_be_joined_but_not_another_local_network() {
        let d = ScriptedDocker::default();
        d.add(Kind::Secret, "host_ca", None);
        d.add(Kind::Network, "proxy", None);
        d.add(Kind::Network, "host", None);
        d.add(Kind::Network, "bridge", None);
        let mut c = compose();
        let named = |name: &str| Network {
            external: true,
            name: Some(name.into()),
            ..Default::default()
        };
        c.networks.insert("hostnet".into(), named("host"));
        c.networks.insert("local".into(), named("bridge"));
        let worker = c.services.get_mut("worker").unwrap();
        worker.networks.insert("hostnet".into(), Default::default());
        worker.networks.insert("local".into(), Default::default());
        let m = missing(&c, &d, "s").unwrap();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(matches!(&m[0], Missing::NotSwarmScoped { name, .. } if name == "bridge"));
    }

    #[test]
    fn external_secrets_abra_does_not_create_must_be_there() {
        let d = ScriptedDocker::default();
        d.add(Kind::Network, "proxy", None);
        let m = missing(&compose(), &d, "s").unwrap();
        // s_admin_v1 is the app's own (abra generates it); host_ca is not.
        assert_eq!(
            m,
            [Missing::Object {
                kind: Kind::Secret,
                name: "host_ca".into()
            }]
        );
        assert!(m[0].to_string().contains("docker secret create host_ca"));
    }

    #[test]
    fn an_external_default_network_is_needed_by_services_without_networks() {
        let mut c = Compose::default();
        c.services.insert("app".into(), Service::default());
        c.networks.insert(
            "default".into(),
            Network {
                external: true,
                name: Some("shared".into()),
                ..Default::default()
            },
        );
        let d = ScriptedDocker::default();
        let m = missing(&c, &d, "s").unwrap();
        assert_eq!(
            m,
            [Missing::Network {
                name: "shared".into(),
                services: vec!["app".into()]
            }]
        );
    }
}
