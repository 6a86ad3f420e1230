//! The runner's driver of the pinned `abra` binary: exactly the commands listed in
//! `docs/abra-contract.md`, each non-interactive (`-n`), chaos and offline (`-C -o`)
//! where the older system used them, with a per-run `ABRA_DIR`.
use super::envfile;
use crate::process::{Cmd, Executor, Exit};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("abra {command} failed ({exit}){}", tail(.stderr))]
    Failed {
        command: String,
        exit: Exit,
        stderr: String,
    },
    #[error("abra {command} printed output that is not the documented machine format: {detail}")]
    Format { command: String, detail: String },
    #[error(transparent)]
    Process(#[from] crate::process::Error),
    #[error("cannot update {0}: {1}")]
    File(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Env(#[from] envfile::Error),
}

fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(": {}", lines[lines.len().saturating_sub(3)..].join(" | "))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One app of one run.
pub struct Abra<'a> {
    pub exec: &'a Executor,
    pub bin: PathBuf,
    pub abra_dir: PathBuf,
    pub server: String,
    pub domain: String,
    /// Run-scoped deploy record (`CCCI_DEPLOYS_FILE`): one line per deploy.
    pub deploys_file: PathBuf,
    /// The hook/test environment contract, passed to abra too.
    pub env: Vec<(String, String)>,
}

impl Abra<'_> {
    fn cmd(&self, args: &[&str]) -> Cmd {
        Cmd::new(&self.bin)
            .args(args)
            .env("ABRA_DIR", &self.abra_dir)
            .envs(&self.env)
    }

    fn run(&self, name: &str, args: &[&str]) -> Result<Vec<u8>> {
        let out = self.exec.run(self.cmd(args))?;
        if !out.exit.success() {
            return Err(Error::Failed {
                command: name.to_string(),
                exit: out.exit,
                stderr: out.stderr,
            });
        }
        Ok(out.stdout)
    }

    pub fn env_file(&self) -> PathBuf {
        self.abra_dir
            .join("servers")
            .join(&self.server)
            .join(format!("{}.env", self.domain))
    }

    /// `abra app new <recipe> -s <server> -D <domain> -n -o -C`
    pub fn new_app(&self, recipe: &str) -> Result<()> {
        self.run(
            "app new",
            &[
                "app",
                "new",
                recipe,
                "-s",
                &self.server,
                "-D",
                &self.domain,
                "-n",
                "-o",
                "-C",
            ],
        )?;
        Ok(())
    }

    /// `abra app secret generate <domain> -a -m -n -o -C`: generated values are added
    /// to the run's masks before the command's output is logged.
    pub fn generate_secrets(&self) -> Result<usize> {
        let command = "app secret generate";
        let out = self.exec.run(
            self.cmd(&[
                "app",
                "secret",
                "generate",
                &self.domain,
                "-a",
                "-m",
                "-n",
                "-o",
                "-C",
            ])
            .capture(),
        )?;
        let values = parse_generated(&out.stdout).map_err(|detail| Error::Format {
            command: command.into(),
            detail,
        });
        if let Ok(v) = &values {
            self.exec
                .add_secrets(v.iter().map(|s| s.as_bytes().to_vec()));
        }
        // Logged only now, through masks that include the values just learnt.
        self.exec.log_bytes(&out.stdout);
        if !out.exit.success() {
            return Err(Error::Failed {
                command: command.into(),
                exit: out.exit,
                stderr: out.stderr,
            });
        }
        Ok(values?.len())
    }

    /// `abra app deploy <domain> -n -o -C [-f]`; recorded in the deploy file first.
    pub fn deploy(&self, tier: &str, version: &str, force: bool) -> Result<()> {
        self.record_deploy(tier, version)?;
        let mut args = vec!["app", "deploy", self.domain.as_str(), "-n", "-o", "-C"];
        if force {
            args.push("-f");
        }
        self.run("app deploy", &args)?;
        Ok(())
    }

    /// `abra app backup create <domain> -n -o -C`
    pub fn backup(&self) -> Result<()> {
        self.run(
            "app backup create",
            &["app", "backup", "create", &self.domain, "-n", "-o", "-C"],
        )?;
        Ok(())
    }

    /// `abra app restore <domain> -n -o -C`
    pub fn restore(&self) -> Result<()> {
        self.run(
            "app restore",
            &["app", "restore", &self.domain, "-n", "-o", "-C"],
        )?;
        Ok(())
    }

    /// `abra app undeploy <domain> -n`
    pub fn undeploy(&self) -> Result<()> {
        self.run("app undeploy", &["app", "undeploy", &self.domain, "-n"])?;
        Ok(())
    }

    /// `abra app rm <domain> -n -f`: volumes, secrets and the env file.
    pub fn remove(&self) -> Result<()> {
        self.run("app rm", &["app", "rm", &self.domain, "-n", "-f"])?;
        Ok(())
    }

    /// Set `KEY=value` in the app's env file (see [`envfile::EnvFile::with_vars`]).
    pub fn set_env(&self, vars: &[(String, String)]) -> Result<()> {
        Ok(envfile::set_vars(&self.env_file(), vars)?)
    }

    /// Add a compose file to the end of `COMPOSE_FILE` in the app's env file.
    pub fn add_compose_file(&self, file: &str) -> Result<()> {
        Ok(envfile::add_compose_file(&self.env_file(), file)?)
    }

    fn record_deploy(&self, tier: &str, version: &str) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.deploys_file)
            .map_err(|e| Error::File(self.deploys_file.clone(), e))?;
        writeln!(f, "{} {tier} {version}", chrono::Utc::now().to_rfc3339())
            .map_err(|e| Error::File(self.deploys_file.clone(), e))
    }
}

/// Deploys recorded in a run's deploy file.
pub fn count_deploys(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count() as u32)
        .unwrap_or(0)
}

/// `abra app secret generate -m` prints `[{"name": ..., "value": ...}, ...]`.
fn parse_generated(stdout: &[u8]) -> std::result::Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Generated {
        #[allow(dead_code)]
        name: String,
        value: String,
    }
    let text = String::from_utf8_lossy(stdout);
    let json = text.trim();
    let start = json.find('[').ok_or("no JSON array")?;
    let list: Vec<Generated> = serde_json::from_str(&json[start..]).map_err(|e| e.to_string())?;
    Ok(list.into_iter().map(|g| g.value).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_machine_output() {
        let v = parse_generated(br#"[{"name":"admin_password","value":"s3cretvalue"}]"#).unwrap();
        assert_eq!(v, vec!["s3cretvalue".to_string()]);
        assert!(parse_generated(b"not json").is_err());
    }

    #[test]
    fn counts_deploy_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("deploys");
        assert_eq!(count_deploys(&f), 0);
        std::fs::write(&f, "t install 1\nt upgrade 2\n").unwrap();
        assert_eq!(count_deploys(&f), 2);
    }
}
