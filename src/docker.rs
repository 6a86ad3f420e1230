//! The Docker engine as cc-ci sees it: the seam between decisions (the ladder's, the
//! reap module's) and the engine. Production goes through the `docker` CLI on the
//! run's executor ([`Cli`]); unit tests script an engine of their own, so the
//! decisions are tested in milliseconds while the swarm tests keep the real thing.
use crate::process::{Cmd, Executor, Output};
use std::time::{Duration, Instant};

/// The label `docker stack deploy` (and abra) puts on what it creates.
pub const STACK_LABEL: &str = "com.docker.stack.namespace";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "docker is not available ({0}); install docker.io and start it (`systemctl start docker`)"
    )]
    NoDocker(String),
    #[error(
        "the Docker engine is not in an active swarm (state {0:?}); run `docker swarm init --advertise-addr 127.0.0.1`"
    )]
    SwarmInactive(String),
    #[error(transparent)]
    Process(#[from] crate::process::Error),
    #[error("docker {args} failed: {stderr}")]
    Docker { args: String, stderr: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The kinds of object a stack leaves on the engine, in the order they are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Stack,
    Service,
    Container,
    Volume,
    Network,
    Secret,
    Config,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Stack,
        Kind::Service,
        Kind::Container,
        Kind::Volume,
        Kind::Network,
        Kind::Secret,
        Kind::Config,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stack => "stack",
            Kind::Service => "service",
            Kind::Container => "container",
            Kind::Volume => "volume",
            Kind::Network => "network",
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object on the engine; `stack` is its stack label, when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: Kind,
    pub name: String,
    pub stack: Option<String>,
}

/// A network as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    /// `swarm` or `local`: a stack's services can join only swarm-scoped networks.
    pub scope: String,
    pub driver: String,
}

/// One task as the engine reports it: states only, no recipe-chosen names and no
/// app output, so nothing the recipe controls can sway a cause class.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Task {
    pub desired: String,
    pub current: String,
    pub error: String,
}

impl Task {
    /// One line of `docker service ps --format '{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}'`.
    pub fn parse(line: &str) -> Task {
        let mut f = line.splitn(3, '\t');
        let mut next = || f.next().unwrap_or("").trim().to_string();
        Task {
            desired: next(),
            current: next(),
            error: next(),
        }
    }
}

/// What the runner and the janitor ask of the engine.
pub trait Docker {
    /// Fail early, with the fix, when docker or the swarm is missing.
    fn check(&self) -> Result<()>;
    /// Every object of `kind` on the engine.
    fn objects(&self, kind: Kind) -> Result<Vec<Object>>;
    /// Remove one object (`docker stack rm`, `service rm`, `rm -f`, `volume rm -f`...).
    fn remove(&self, kind: Kind, name: &str) -> Result<()>;
    /// The services of `stack`.
    fn services(&self, stack: &str) -> Result<Vec<String>>;
    /// The network named `name`, if the engine has one.
    fn network(&self, name: &str) -> Result<Option<Network>>;
    /// One look at `stack`: `None` when every service has all its replicas running and
    /// every container is healthy (or has no healthcheck), else what is not.
    fn health(&self, stack: &str) -> Result<Option<String>>;
    /// `docker service ps --no-trunc` of a service (for people) and its tasks' states.
    fn tasks(&self, service: &str) -> Result<(String, Vec<Task>)>;
    /// The last lines of a service's logs.
    fn service_logs(&self, service: &str) -> Result<String>;
    /// A running container of `<stack>_<service>`.
    fn container(&self, stack: &str, service: &str) -> Result<Option<String>>;
    /// Run `argv` in a container.
    fn exec(&self, container: &str, argv: &[&str]) -> Result<Output>;
    /// Sleep `d` (or until the run must stop).
    fn wait(&self, d: Duration);
    /// The engine's clock (a scripted engine's is virtual).
    fn now(&self) -> Instant;
}

/// The real engine, through the `docker` CLI on an executor.
pub struct Cli<'a> {
    pub exec: &'a Executor,
}

impl Cli<'_> {
    fn docker(&self, args: &[&str]) -> Result<Output> {
        Ok(self
            .exec
            .run(Cmd::new("docker").args(args).capture().quiet())?)
    }

    fn docker_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.docker(args)?;
        if !out.exit.success() {
            return Err(Error::Docker {
                args: args.join(" "),
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

impl Docker for Cli<'_> {
    fn check(&self) -> Result<()> {
        let out = self
            .docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
            .map_err(|e| Error::NoDocker(e.to_string()))?;
        if !out.exit.success() {
            let first = out
                .stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no answer")
                .trim()
                .to_string();
            return Err(Error::NoDocker(first));
        }
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state != "active" {
            return Err(Error::SwarmInactive(state));
        }
        Ok(())
    }

    fn objects(&self, kind: Kind) -> Result<Vec<Object>> {
        let labelled = format!("{{{{.Name}}}}\t{{{{.Label \"{STACK_LABEL}\"}}}}");
        let args: Vec<&str> = match kind {
            Kind::Stack => vec!["stack", "ls", "--format", "{{.Name}}"],
            // `service ls` cannot print labels; services are named `<stack>_<name>`.
            Kind::Service => vec!["service", "ls", "--format", "{{.Name}}"],
            Kind::Container => vec![
                "ps",
                "-a",
                "--format",
                "{{.Names}}\t{{.Label \"com.docker.stack.namespace\"}}",
            ],
            Kind::Volume => vec!["volume", "ls", "--format", &labelled],
            Kind::Network => vec!["network", "ls", "--format", &labelled],
            Kind::Secret => vec!["secret", "ls", "--format", &labelled],
            Kind::Config => vec!["config", "ls", "--format", &labelled],
        };
        Ok(lines(&self.docker_ok(&args)?)
            .into_iter()
            .map(|line| {
                let (name, label) = line.split_once('\t').unwrap_or((&line, ""));
                let stack = match kind {
                    Kind::Stack => Some(name.to_string()),
                    _ => Some(label.trim().to_string()).filter(|l| !l.is_empty()),
                };
                Object {
                    kind,
                    name: name.trim().to_string(),
                    stack,
                }
            })
            .collect())
    }

    fn remove(&self, kind: Kind, name: &str) -> Result<()> {
        let args: Vec<&str> = match kind {
            Kind::Stack => vec!["stack", "rm", name],
            Kind::Service => vec!["service", "rm", name],
            Kind::Container => vec!["rm", "-f", name],
            Kind::Volume => vec!["volume", "rm", "-f", name],
            Kind::Network => vec!["network", "rm", name],
            Kind::Secret => vec!["secret", "rm", name],
            Kind::Config => vec!["config", "rm", name],
        };
        self.docker_ok(&args).map(|_| ())
    }

    fn services(&self, stack: &str) -> Result<Vec<String>> {
        let label = format!("label={STACK_LABEL}={stack}");
        Ok(lines(&self.docker_ok(&[
            "service",
            "ls",
            "--filter",
            &label,
            "--format",
            "{{.Name}}",
        ])?))
    }

    fn network(&self, name: &str) -> Result<Option<Network>> {
        let args = [
            "network",
            "inspect",
            name,
            "--format",
            "{{.Scope}}\t{{.Driver}}",
        ];
        let out = self.docker(&args)?;
        if !out.exit.success() {
            if out.stderr.to_lowercase().contains("not found")
                || out.stderr.contains("No such network")
            {
                return Ok(None);
            }
            return Err(Error::Docker {
                args: args.join(" "),
                stderr: out.stderr.trim().to_string(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (scope, driver) = text.trim().split_once('\t').unwrap_or((text.trim(), ""));
        Ok(Some(Network {
            name: name.to_string(),
            scope: scope.to_string(),
            driver: driver.to_string(),
        }))
    }

    fn health(&self, stack: &str) -> Result<Option<String>> {
        let label = format!("label={STACK_LABEL}={stack}");
        let services = self.docker_ok(&[
            "service",
            "ls",
            "--filter",
            &label,
            "--format",
            "{{.Name}} {{.Replicas}}",
        ])?;
        if let Some(problem) = replicas_problem(stack, &services) {
            return Ok(Some(problem));
        }
        let ps = self.docker_ok(&[
            "ps",
            "--filter",
            &label,
            "--format",
            "{{.Names}}\t{{.Status}}",
        ])?;
        Ok(containers_problem(&ps))
    }

    fn tasks(&self, service: &str) -> Result<(String, Vec<Task>)> {
        let ps = self.docker(&["service", "ps", "--no-trunc", service])?;
        let states = self.docker_ok(&[
            "service",
            "ps",
            "--no-trunc",
            service,
            "--format",
            "{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}",
        ])?;
        Ok((
            String::from_utf8_lossy(&ps.stdout).into_owned(),
            states.lines().map(Task::parse).collect(),
        ))
    }

    fn service_logs(&self, service: &str) -> Result<String> {
        let logs = self.docker(&["service", "logs", "--no-task-ids", "--tail", "30", service])?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&logs.stdout),
            logs.stderr
        ))
    }

    fn container(&self, stack: &str, service: &str) -> Result<Option<String>> {
        let label = format!("label=com.docker.swarm.service.name={stack}_{service}");
        Ok(lines(&self.docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &label,
            "--filter",
            "status=running",
        ])?)
        .into_iter()
        .next())
    }

    fn exec(&self, container: &str, argv: &[&str]) -> Result<Output> {
        let mut args = vec!["exec", container];
        args.extend_from_slice(argv);
        self.docker(&args)
    }

    fn wait(&self, d: Duration) {
        self.exec.wait(d);
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// From `docker service ls --format '{{.Name}} {{.Replicas}}'`: the first service
/// without all its replicas running, or a stack without services.
fn replicas_problem(stack: &str, listing: &str) -> Option<String> {
    let services = lines(listing);
    if services.is_empty() {
        return Some(format!("stack {stack} has no services"));
    }
    services.iter().find_map(|line| {
        let (name, replicas) = line.split_once(' ').unwrap_or((line, ""));
        let replicas = replicas.split_whitespace().next().unwrap_or("");
        let (running, desired) = replicas.split_once('/').unwrap_or(("0", "?"));
        (running != desired)
            .then(|| format!("service {name} has {running}/{desired} replicas running"))
    })
}

/// From `docker ps --format '{{.Names}}\t{{.Status}}'`: the first container whose
/// healthcheck has not passed.
fn containers_problem(listing: &str) -> Option<String> {
    lines(listing).iter().find_map(|line| {
        let (name, status) = line.split_once('\t').unwrap_or((line, ""));
        (status.contains("(health: starting)") || status.contains("(unhealthy)"))
            .then(|| format!("container {name} is {status}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_and_health_are_read_from_the_listings() {
        assert_eq!(
            replicas_problem("s", ""),
            Some("stack s has no services".into())
        );
        assert_eq!(
            replicas_problem("s", "s_app 1/1\ns_db 2/2 (max 1 per node)\n"),
            None
        );
        assert_eq!(
            replicas_problem("s", "s_app 1/1\ns_db 0/1\n"),
            Some("service s_db has 0/1 replicas running".into())
        );
        assert_eq!(
            containers_problem("s_app.1.x\tUp 3 seconds (healthy)\n"),
            None
        );
        assert_eq!(
            containers_problem("s_app.1.x\tUp 1 second (health: starting)\n"),
            Some("container s_app.1.x is Up 1 second (health: starting)".into())
        );
    }

    #[test]
    fn task_lines_split_on_tabs() {
        let t = Task::parse("Shutdown\tFailed 1 second ago\ttask: non-zero exit (1)");
        assert_eq!(t.desired, "Shutdown");
        assert_eq!(t.current, "Failed 1 second ago");
        assert_eq!(t.error, "task: non-zero exit (1)");
        assert_eq!(Task::parse("Running\tRunning\t").error, "");
    }
}
