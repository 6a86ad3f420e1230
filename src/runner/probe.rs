//! The data probe: how the upgrade and restore tiers write a value into the app's
//! data and read it back, in a service's container through `docker exec`.
//!
//! Either a marker file in a directory that survives (the operator's `DATA_PATH`, or
//! a backed-up directory from the backupbot labels), or the operator's own commands
//! (`DATA_WRITE_CMD`, `DATA_READ_CMD`: e.g. an SQL insert and select) for data a
//! marker file cannot reach, such as a database whose backup is a dump file that
//! its pre-hook writes. When neither fits there is no probe, and the reason says
//! why: never a check that proves nothing.
use super::backupbot::{Backup, From};
use crate::docker::{self, Docker};
use crate::meta::RecipeMeta;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no running container of service {0}")]
    NoContainer(String),
    #[error(transparent)]
    Docker(#[from] docker::Error),
    #[error("{what} failed in service {service} ({exit}): {stderr}")]
    Command {
        what: String,
        service: String,
        exit: String,
        stderr: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where and how the data checks write and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataProbe {
    /// A marker file `.ccci-marker` in directory `dir`: it holds the last value.
    Marker { service: String, dir: String },
    /// The operator's commands: `write` records `$1`, `read` prints every value.
    Commands {
        service: String,
        write: String,
        read: String,
    },
}

/// What a probe read: the values present, and the raw output for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub values: Vec<String>,
    pub raw: String,
}

const MARKER: &str = ".ccci-marker";
const MARKER_WRITE: &str = "printf %s \"$1\" > \"$2\"";
const MARKER_READ: &str = "cat \"$1\"";
/// Prints `dir`, `file` or `none` for the path `$1`.
pub const PATH_KIND: &str =
    "if [ -d \"$1\" ]; then echo dir; elif [ -e \"$1\" ]; then echo file; else echo none; fi";

impl DataProbe {
    pub fn service(&self) -> &str {
        match self {
            DataProbe::Marker { service, .. } | DataProbe::Commands { service, .. } => service,
        }
    }

    /// Where the value is, for people.
    pub fn describe(&self) -> String {
        match self {
            DataProbe::Marker { service, .. } => {
                format!("{} in service {service}", self.marker_file())
            }
            DataProbe::Commands { service, .. } => {
                format!("the data DATA_READ_CMD reads in service {service}")
            }
        }
    }

    fn marker_file(&self) -> String {
        match self {
            DataProbe::Marker { dir, .. } => format!("{}/{MARKER}", dir.trim_end_matches('/')),
            DataProbe::Commands { .. } => String::new(),
        }
    }

    /// Record `value` in the app's data.
    pub fn write(&self, docker: &dyn Docker, stack: &str, value: &str) -> Result<()> {
        let c = container(docker, stack, self.service())?;
        let (what, out) = match self {
            DataProbe::Marker { .. } => {
                let file = self.marker_file();
                let out = docker.exec(&c, &["sh", "-c", MARKER_WRITE, "sh", value, &file])?;
                (format!("writing {file}"), out)
            }
            DataProbe::Commands { write, .. } => {
                let out = docker.exec(&c, &["sh", "-c", write, "sh", value])?;
                (format!("DATA_WRITE_CMD {write:?}"), out)
            }
        };
        if !out.exit.success() {
            return Err(Error::Command {
                what,
                service: self.service().to_string(),
                exit: out.exit.to_string(),
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(())
    }

    /// The values in the app's data. A marker file that cannot be read holds none.
    pub fn read(&self, docker: &dyn Docker, stack: &str) -> Result<Reading> {
        let c = container(docker, stack, self.service())?;
        match self {
            DataProbe::Marker { .. } => {
                let out = docker.exec(&c, &["sh", "-c", MARKER_READ, "sh", &self.marker_file()])?;
                let raw = String::from_utf8_lossy(&out.stdout).into_owned();
                let values = if out.exit.success() {
                    vec![raw.clone()]
                } else {
                    Vec::new()
                };
                Ok(Reading { values, raw })
            }
            DataProbe::Commands { read, .. } => {
                let out = docker.exec(&c, &["sh", "-c", read, "sh"])?;
                if !out.exit.success() {
                    return Err(Error::Command {
                        what: format!("DATA_READ_CMD {read:?}"),
                        service: self.service().to_string(),
                        exit: out.exit.to_string(),
                        stderr: out.stderr.trim().to_string(),
                    });
                }
                let raw = String::from_utf8_lossy(&out.stdout).into_owned();
                let values = raw
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
                Ok(Reading { values, raw })
            }
        }
    }
}

fn container(docker: &dyn Docker, stack: &str, service: &str) -> Result<String> {
    docker
        .container(stack, service)?
        .ok_or_else(|| Error::NoContainer(service.to_string()))
}

/// The probe for a run: the operator's commands, else the operator's `DATA_PATH`,
/// else the first backed-up directory of the backed-up services. `Ok(Err(why))` when
/// there is none.
pub fn choose(
    meta: &RecipeMeta,
    backups: &[Backup],
    docker: &dyn Docker,
    stack: &str,
) -> Result<std::result::Result<DataProbe, String>> {
    if let Some((service, write, read)) = meta.data_commands() {
        return Ok(Ok(DataProbe::Commands {
            service: service.into(),
            write: write.into(),
            read: read.into(),
        }));
    }
    if let Some((service, dir)) = meta.data_probe() {
        return Ok(Ok(DataProbe::Marker {
            service: service.into(),
            dir: dir.into(),
        }));
    }
    const FIX: &str = "set DATA_SERVICE with DATA_PATH (a directory) or with DATA_WRITE_CMD \
                       and DATA_READ_CMD in the recipe's meta.toml";
    if backups.is_empty() {
        return Ok(Err(format!(
            "no service has the label backupbot.backup=true, so cc-ci does not know where \
             the app keeps its data; {FIX}"
        )));
    }
    let mut why_not = Vec::new();
    for backup in backups {
        let Some(first) = backup.first_path() else {
            why_not.push(format!(
                "service {} backs up no path (no path label, no named volume)",
                backup.service
            ));
            continue;
        };
        let c = container(docker, stack, &backup.service)?;
        let out = docker.exec(&c, &["sh", "-c", PATH_KIND, "sh", &first.path])?;
        let kind = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.exit.success() && kind == "dir" {
            return Ok(Ok(DataProbe::Marker {
                service: backup.service.clone(),
                dir: first.path.clone(),
            }));
        }
        let label = match &first.from {
            From::PathLabel => "backupbot.backup.path".to_string(),
            From::VolumePath { volume } => format!("backupbot.backup.volumes.{volume}.path"),
            From::Volume { volume } => format!("volume {volume}"),
        };
        let state = match (out.exit.success(), kind.as_str()) {
            (true, "file") => "is a file".to_string(),
            (true, "none") => "does not exist (yet)".to_string(),
            _ => format!(
                "could not be looked at ({}: {})",
                out.exit,
                out.stderr.trim()
            ),
        };
        let hook = backup
            .hooks
            .backup_pre
            .as_deref()
            .map(|h| format!(", which its backup pre-hook {h:?} writes"))
            .unwrap_or_default();
        why_not.push(format!(
            "the backed-up path {} of service {} ({label}) {state}{hook}: a marker file \
             there cannot prove that the app's data survives",
            first.path, backup.service
        ));
    }
    Ok(Err(format!("{}; {FIX}", why_not.join("; "))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::backupbot::{BackedUp, Hooks};
    use crate::runner::engine::scripted::ScriptedHost;

    fn backup(path: &str, from: From, pre_hook: Option<&str>) -> Backup {
        Backup {
            service: "db".into(),
            paths: vec![BackedUp {
                path: path.into(),
                from,
            }],
            hooks: Hooks {
                backup_pre: pre_hook.map(String::from),
                ..Default::default()
            },
            ignored: Vec::new(),
        }
    }

    #[test]
    fn the_operators_choice_wins_then_a_backed_up_directory() {
        let host = ScriptedHost::default();
        host.dirs.borrow_mut().insert("/var/lib/db".into());
        let labelled = [backup("/var/lib/db", From::PathLabel, None)];
        let meta = RecipeMeta {
            DATA_SERVICE: Some("app".into()),
            DATA_PATH: Some("/srv".into()),
            ..Default::default()
        };
        assert_eq!(
            choose(&meta, &labelled, &host, "s").unwrap(),
            Ok(DataProbe::Marker {
                service: "app".into(),
                dir: "/srv".into()
            })
        );
        let probe = choose(&RecipeMeta::default(), &labelled, &host, "s")
            .unwrap()
            .unwrap();
        assert_eq!(probe.describe(), "/var/lib/db/.ccci-marker in service db");
    }

    #[test]
    fn a_file_is_no_place_for_a_marker() {
        let host = ScriptedHost::default();
        host.files.borrow_mut().insert(
            ("db".into(), "/var/lib/db/backup.sql".into()),
            "dump".into(),
        );
        let dump = [backup(
            "/var/lib/db/backup.sql",
            From::VolumePath {
                volume: "db".into(),
            },
            Some("db dump"),
        )];
        let why = choose(&RecipeMeta::default(), &dump, &host, "s")
            .unwrap()
            .unwrap_err();
        assert!(
            why.starts_with(
                "the backed-up path /var/lib/db/backup.sql of service db \
                 (backupbot.backup.volumes.db.path) is a file, which its backup pre-hook \
                 \"db dump\" writes"
            ),
            "{why}"
        );
        let none = choose(&RecipeMeta::default(), &[], &host, "s")
            .unwrap()
            .unwrap_err();
        assert!(none.starts_with("no service has the label backupbot.backup=true"));
    }

    #[test]
    fn a_marker_file_holds_one_value_and_commands_print_many() {
        let host = ScriptedHost::default();
        let marker = DataProbe::Marker {
            service: "app".into(),
            dir: "/data/".into(),
        };
        assert!(marker.read(&host, "s").unwrap().values.is_empty());
        marker.write(&host, "s", "one").unwrap();
        marker.write(&host, "s", "two").unwrap();
        assert_eq!(marker.read(&host, "s").unwrap().values, ["two"]);
        let commands = DataProbe::Commands {
            service: "db".into(),
            write: "db insert \"$1\"".into(),
            read: "db select".into(),
        };
        commands.write(&host, "s", "one").unwrap();
        commands.write(&host, "s", "two").unwrap();
        assert_eq!(commands.read(&host, "s").unwrap().values, ["one", "two"]);
        host.no_container.borrow_mut().push("db".into());
        assert_eq!(
            commands.read(&host, "s").unwrap_err().to_string(),
            "no running container of service db"
        );
    }
}
