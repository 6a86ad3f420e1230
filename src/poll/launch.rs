//! Starting the runner for a run request, and asking whether it is still alive.
//!
//! `systemd`: `systemctl start --no-block <unit>@<instance>.service`, the instance
//! being the run id escaped per systemd's rules (`systemd-escape`); the unit reads
//! the unescaped id with `%I`. `command`: the configured argv with the request path
//! appended, as a child of the poller (development and tests).
use crate::config::{LaunchConfig, LaunchKind};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("{0} failed: {1}")]
    Failed(String, String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Escape `s` as systemd does for unit name components (`systemd-escape`): keep
/// `[A-Za-z0-9:_.]` (but not a leading `.`), turn `/` into `-`, and everything else
/// into `\xNN`.
pub fn systemd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else if b == b'/' {
            out.push('-');
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

pub struct Launcher {
    config: LaunchConfig,
    /// Runners started as children of this process (`kind = "command"`).
    children: HashMap<String, Child>,
}

impl Launcher {
    pub fn new(config: LaunchConfig) -> Launcher {
        Launcher {
            config,
            children: HashMap::new(),
        }
    }

    pub fn unit_name(&self, run_id: &str) -> String {
        format!("{}@{}.service", self.config.unit, systemd_escape(run_id))
    }

    /// Start the runner for `run_id` with its request file at `request`.
    pub fn launch(&mut self, run_id: &str, request: &Path) -> Result<()> {
        match self.config.kind {
            LaunchKind::Systemd => {
                let unit = self.unit_name(run_id);
                let what = format!("{} start {unit}", self.config.systemctl.display());
                let out = Command::new(&self.config.systemctl)
                    .args(["start", "--no-block", &unit])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| Error::Spawn(what.clone(), e))?;
                if !out.status.success() {
                    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    return Err(Error::Failed(what, format!("{}: {err}", out.status)));
                }
                Ok(())
            }
            LaunchKind::Command => {
                let (prog, args) = self
                    .config
                    .command
                    .split_first()
                    .expect("config check: launch.command is not empty");
                let child = Command::new(prog)
                    .args(args)
                    .arg(request)
                    .stdin(Stdio::null())
                    .spawn()
                    .map_err(|e| Error::Spawn(prog.clone(), e))?;
                self.children.insert(run_id.to_owned(), child);
                Ok(())
            }
        }
    }

    /// Whether the runner of `run_id` is still running; `false` when it is gone or
    /// unknown (a child of an earlier poller process).
    pub fn is_alive(&mut self, run_id: &str) -> bool {
        match self.config.kind {
            LaunchKind::Systemd => {
                let unit = self.unit_name(run_id);
                let out = Command::new(&self.config.systemctl)
                    .args(["show", "--property=ActiveState", "--value", &unit])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output();
                match out {
                    Ok(o) => {
                        let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
                        matches!(
                            state.as_str(),
                            "active" | "activating" | "deactivating" | "reloading"
                        )
                    }
                    // Cannot ask: do not declare it dead.
                    Err(_) => true,
                }
            }
            LaunchKind::Command => match self.children.get_mut(run_id) {
                Some(child) => match child.try_wait() {
                    Ok(None) => true,
                    _ => {
                        self.children.remove(run_id);
                        false
                    }
                },
                None => false,
            },
        }
    }

    /// Reap finished children (no zombies between cycles).
    pub fn reap(&mut self) {
        self.children
            .retain(|_, c| matches!(c.try_wait(), Ok(None)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd_escape() {
        // Values checked against `systemd-escape` (systemd 252).
        assert_eq!(
            systemd_escape("20261125T120301Z-3f9a1c"),
            "20261125T120301Z\\x2d3f9a1c"
        );
        assert_eq!(systemd_escape("a/b c"), "a-b\\x20c");
        assert_eq!(systemd_escape(".hidden"), "\\x2ehidden");
        assert_eq!(systemd_escape("a.b:c_d"), "a.b:c_d");
    }

    #[test]
    fn unit_name_uses_template() {
        let l = Launcher::new(LaunchConfig::default());
        assert_eq!(
            l.unit_name("20261125T120301Z-3f9a1c"),
            "cc-ci-runner@20261125T120301Z\\x2d3f9a1c.service"
        );
    }
}
