//! backupbot's labels on a compose model, resolved as backupbot resolves them: which
//! services are backed up, which paths of their containers, and the hooks run in
//! them. Both label forms are read (`docs/levels.md`, "What is backed up"):
//!
//! - `backupbot.backup.path=/a,/b`: absolute paths in the container (backup-bot v1);
//! - every named volume the service mounts, whole (backupbot v2), unless
//!   `backupbot.backup.volumes.<v>=false`; `backupbot.backup.volumes.<v>.path=a,b`
//!   narrows volume `<v>` to paths relative to where it is mounted in that service.
//!   Such a path may name a file that the backup pre-hook writes (a database dump).
//!
//! Labels are the service's (`deploy.labels`), where backupbot reads them.
use super::compose::{Compose, MountKind, Service};

/// The label that puts a service in the backup.
pub const BACKUP: &str = "backupbot.backup";
const PATH: &str = "backupbot.backup.path";
const VOLUMES: &str = "backupbot.backup.volumes.";

/// One backed-up service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub service: String,
    pub paths: Vec<BackedUp>,
    pub hooks: Hooks,
    /// Labels that name nothing the service has (backupbot ignores them too).
    pub ignored: Vec<String>,
}

/// One backed-up path, absolute in the service's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackedUp {
    pub path: String,
    pub from: From,
}

/// Which label (or rule) put a path in the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    /// `backupbot.backup.path`.
    PathLabel,
    /// A `backupbot.backup.volumes.<volume>.path` entry.
    VolumePath { volume: String },
    /// The whole volume, mounted at this path.
    Volume { volume: String },
}

/// Commands backupbot runs in the service's container (`sh -c`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub backup_pre: Option<String>,
    pub backup_post: Option<String>,
    pub restore_pre: Option<String>,
    pub restore_post: Option<String>,
}

impl Backup {
    /// Where a marker of the data checks would go by default: the first path of
    /// `backupbot.backup.path`, else the first volume path.
    pub fn first_path(&self) -> Option<&BackedUp> {
        self.paths
            .iter()
            .find(|p| p.from == From::PathLabel)
            .or_else(|| self.paths.first())
    }
}

/// The backed-up services of `compose`, in name order.
pub fn resolve(compose: &Compose) -> Vec<Backup> {
    compose
        .services
        .iter()
        .filter(|(_, s)| s.deploy.labels.get(BACKUP).map(String::as_str) == Some("true"))
        .map(|(name, s)| resolve_service(name, s))
        .collect()
}

fn entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn resolve_service(name: &str, service: &Service) -> Backup {
    let labels = &service.deploy.labels;
    let label = |k: &str| labels.get(k).cloned().filter(|v| !v.trim().is_empty());
    let mut paths: Vec<BackedUp> = Vec::new();
    let mut add = |path: String, from: From| {
        if !paths.iter().any(|p| p.path == path) {
            paths.push(BackedUp { path, from });
        }
    };
    if let Some(v) = labels.get(PATH) {
        for p in entries(v) {
            add(format!("/{}", p.trim_start_matches('/')), From::PathLabel);
        }
    }
    for mount in &service.volumes {
        let (MountKind::Volume, Some(volume)) = (mount.kind, mount.source.as_deref()) else {
            continue;
        };
        if labels
            .get(&format!("{VOLUMES}{volume}"))
            .map(String::as_str)
            == Some("false")
        {
            continue;
        }
        let target = mount.target.trim_end_matches('/');
        match labels.get(&format!("{VOLUMES}{volume}.path")) {
            Some(v) => {
                for p in entries(v) {
                    let path = format!("{target}/{}", p.trim_start_matches('/'));
                    add(
                        path,
                        From::VolumePath {
                            volume: volume.to_string(),
                        },
                    );
                }
            }
            None => add(
                mount.target.clone(),
                From::Volume {
                    volume: volume.to_string(),
                },
            ),
        }
    }
    let ignored = labels
        .keys()
        .filter_map(|k| {
            let volume = k.strip_prefix(VOLUMES)?;
            let volume = volume.strip_suffix(".path").unwrap_or(volume);
            service
                .mount_of(volume)
                .is_none()
                .then(|| format!("{k} (service {name} mounts no volume {volume})"))
        })
        .collect();
    Backup {
        service: name.to_string(),
        paths,
        hooks: Hooks {
            backup_pre: label("backupbot.backup.pre-hook"),
            backup_post: label("backupbot.backup.post-hook"),
            restore_pre: label("backupbot.restore.pre-hook"),
            restore_post: label("backupbot.restore.post-hook"),
        },
        ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::compose::Mount;

    fn service(labels: &[(&str, &str)], volumes: &[(&str, &str)]) -> Service {
        let mut s = Service::default();
        s.deploy.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.volumes = volumes
            .iter()
            .map(|(source, target)| Mount {
                kind: MountKind::Volume,
                source: Some(source.to_string()),
                target: target.to_string(),
                read_only: false,
            })
            .collect();
        s
    }

    fn compose(services: Vec<(&str, Service)>) -> Compose {
        Compose {
            services: services
                .into_iter()
                .map(|(n, s)| (n.to_string(), s))
                .collect(),
            ..Default::default()
        }
    }

    fn paths(b: &Backup) -> Vec<&str> {
        b.paths.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn only_services_labelled_true_are_backed_up() {
        let c = compose(vec![
            ("app", service(&[(BACKUP, "true")], &[("data", "/data")])),
            ("cache", service(&[], &[("cache", "/cache")])),
            ("off", service(&[(BACKUP, "false")], &[("x", "/x")])),
        ]);
        let b = resolve(&c);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].service, "app");
    }

    #[test]
    fn the_path_label_is_absolute_in_the_container() {
        let c = compose(vec![(
            "app",
            service(
                &[(BACKUP, "true"), (PATH, "/var/www/uploads, etc/app,")],
                &[("data", "/var/www")],
            ),
        )]);
        let b = &resolve(&c)[0];
        assert_eq!(paths(b), ["/var/www/uploads", "/etc/app", "/var/www"]);
        assert_eq!(b.first_path().unwrap().path, "/var/www/uploads");
        assert_eq!(b.first_path().unwrap().from, From::PathLabel);
    }

    #[test]
    fn volume_paths_are_relative_to_the_mount_and_may_name_a_dump_file() {
        let c = compose(vec![(
            "db",
            service(
                &[
                    (BACKUP, "true"),
                    ("backupbot.backup.volumes.db.path", "backup.sql"),
                    ("backupbot.backup.volumes.logs", "false"),
                    ("backupbot.backup.pre-hook", "db dump"),
                    ("backupbot.restore.post-hook", "db restore"),
                    ("backupbot.backup.volumes.gone.path", "x"),
                ],
                &[
                    ("db", "/var/lib/db/"),
                    ("logs", "/var/log/db"),
                    ("extra", "/srv"),
                ],
            ),
        )]);
        let b = &resolve(&c)[0];
        assert_eq!(paths(b), ["/var/lib/db/backup.sql", "/srv"]);
        assert_eq!(
            b.first_path().unwrap().from,
            From::VolumePath {
                volume: "db".into()
            }
        );
        assert_eq!(
            b.paths[1].from,
            From::Volume {
                volume: "extra".into()
            }
        );
        assert_eq!(b.hooks.backup_pre.as_deref(), Some("db dump"));
        assert_eq!(b.hooks.restore_post.as_deref(), Some("db restore"));
        assert_eq!(b.hooks.backup_post, None);
        assert_eq!(
            b.ignored,
            ["backupbot.backup.volumes.gone.path (service db mounts no volume gone)"]
        );
    }

    #[test]
    fn binds_tmpfs_and_anonymous_volumes_are_not_backed_up() {
        let mut s = service(&[(BACKUP, "true")], &[]);
        s.volumes = vec![
            Mount {
                kind: MountKind::Bind,
                source: Some("/etc/x".into()),
                target: "/x".into(),
                read_only: true,
            },
            Mount {
                kind: MountKind::Volume,
                source: None,
                target: "/anon".into(),
                read_only: false,
            },
        ];
        let b = &resolve(&compose(vec![("app", s)]))[0];
        assert!(b.paths.is_empty());
        assert_eq!(b.first_path(), None);
    }
}
