//! What the runner asks the Docker engine directly, independent of abra: is the
//! swarm there, is a stack converged and healthy, what went wrong (diagnostics and
//! their cause class), and did teardown leave anything behind.
use crate::process::{Cmd, Executor, Output};
use crate::results::Cause;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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

fn docker(exec: &Executor, args: &[&str]) -> Result<Output> {
    Ok(exec.run(Cmd::new("docker").args(args).capture().quiet())?)
}

fn docker_ok(exec: &Executor, args: &[&str]) -> Result<String> {
    let out = docker(exec, args)?;
    if !out.exit.success() {
        return Err(Error::Docker {
            args: args.join(" "),
            stderr: out.stderr.trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The stack name abra derives from an app domain: dots become underscores, cut to 45.
pub fn stack_name(domain: &str) -> String {
    domain.replace('.', "_").chars().take(45).collect()
}

/// Fail early, with the fix, when docker or the swarm is missing.
pub fn check_engine(exec: &Executor) -> Result<()> {
    let out = exec
        .run(
            Cmd::new("docker")
                .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
                .capture()
                .quiet(),
        )
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

pub fn services(exec: &Executor, stack: &str) -> Result<Vec<String>> {
    let label = format!("label={STACK_LABEL}={stack}");
    Ok(lines(&docker_ok(
        exec,
        &["service", "ls", "--filter", &label, "--format", "{{.Name}}"],
    )?))
}

/// The spec labels of a service.
pub fn service_labels(exec: &Executor, service: &str) -> Result<BTreeMap<String, String>> {
    let json = docker_ok(
        exec,
        &[
            "service",
            "inspect",
            service,
            "--format",
            "{{json .Spec.Labels}}",
        ],
    )?;
    Ok(serde_json::from_str(json.trim()).unwrap_or_default())
}

/// A running container of `<stack>_<service>`.
pub fn container(exec: &Executor, stack: &str, service: &str) -> Result<Option<String>> {
    let label = format!("label=com.docker.swarm.service.name={stack}_{service}");
    Ok(lines(&docker_ok(
        exec,
        &["ps", "-q", "--filter", &label, "--filter", "status=running"],
    )?)
    .into_iter()
    .next())
}

/// Run a shell snippet in a container (`sh -c SCRIPT sh ARGS...`).
pub fn exec_sh(exec: &Executor, container: &str, script: &str, args: &[&str]) -> Result<Output> {
    let mut argv = vec!["exec", container, "sh", "-c", script, "sh"];
    argv.extend_from_slice(args);
    docker(exec, &argv)
}

/// Why a stack is not (yet) healthy.
#[derive(Debug, Clone)]
pub struct Unhealthy {
    pub reason: String,
    pub cause: Cause,
}

/// One look at the stack: `None` when every service has all replicas running and
/// every container is healthy (or has no healthcheck).
pub fn health(exec: &Executor, stack: &str) -> Result<Option<String>> {
    let label = format!("label={STACK_LABEL}={stack}");
    let svcs = lines(&docker_ok(
        exec,
        &[
            "service",
            "ls",
            "--filter",
            &label,
            "--format",
            "{{.Name}} {{.Replicas}}",
        ],
    )?);
    if svcs.is_empty() {
        return Ok(Some(format!("stack {stack} has no services")));
    }
    for line in &svcs {
        let (name, replicas) = line.split_once(' ').unwrap_or((line, ""));
        let replicas = replicas.split_whitespace().next().unwrap_or("");
        let (running, desired) = replicas.split_once('/').unwrap_or(("0", "?"));
        if running != desired {
            return Ok(Some(format!(
                "service {name} has {running}/{desired} replicas running"
            )));
        }
    }
    let ps = lines(&docker_ok(
        exec,
        &[
            "ps",
            "--filter",
            &label,
            "--format",
            "{{.Names}}\t{{.Status}}",
        ],
    )?);
    for line in &ps {
        let (name, status) = line.split_once('\t').unwrap_or((line, ""));
        if status.contains("(health: starting)") || status.contains("(unhealthy)") {
            return Ok(Some(format!("container {name} is {status}")));
        }
    }
    Ok(None)
}

/// Wait until the stack is converged and healthy, up to `timeout`.
pub fn wait_healthy(
    exec: &Executor,
    stack: &str,
    timeout: Duration,
) -> Result<std::result::Result<(), Unhealthy>> {
    let start = Instant::now();
    loop {
        let problem = match health(exec, stack)? {
            None => return Ok(Ok(())),
            Some(p) => p,
        };
        if let Some(reason) = exec.stop_reason() {
            let cause = Cause::from(reason);
            return Ok(Err(Unhealthy {
                reason: problem,
                cause,
            }));
        }
        if start.elapsed() >= timeout {
            let cause = diagnostics(exec, stack)?.cause().unwrap_or(Cause::Timeout);
            return Ok(Err(Unhealthy {
                reason: format!("not healthy after {} s: {problem}", timeout.as_secs()),
                cause,
            }));
        }
        exec.wait(Duration::from_millis(500));
    }
}

/// What explains a stack's state: the text for the run's artifacts, and the task
/// states the cause class is read from.
pub struct Diagnostics {
    /// `docker service ps --no-trunc` of every service and the last log lines of the
    /// services with failed tasks, masked with the run's current secrets.
    pub text: String,
    tasks: Vec<Task>,
}

/// One task as the engine reports it: no recipe-chosen names, no app output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Task {
    desired: String,
    current: String,
    error: String,
}

impl Task {
    fn parse(line: &str) -> Task {
        let mut f = line.splitn(3, '\t');
        let mut next = || f.next().unwrap_or("").trim().to_string();
        Task {
            desired: next(),
            current: next(),
            error: next(),
        }
    }

    fn failing(&self) -> bool {
        self.current.starts_with("Failed")
            || self.current.starts_with("Rejected")
            || !self.error.is_empty()
    }

    /// The swarm wants it running but it never left `New`/`Pending`: never scheduled,
    /// or never got its network.
    fn stuck(&self) -> bool {
        self.desired == "Running"
            && (self.current.starts_with("Pending") || self.current.starts_with("New"))
    }
}

impl Diagnostics {
    /// The cause class the task states point to, if any is clear. The text of the
    /// artifacts is never read: service and image names are the recipe's, log lines
    /// the app's, and either may say anything.
    pub fn cause(&self) -> Option<Cause> {
        if self.tasks.iter().any(Task::stuck) {
            return Some(Cause::Infrastructure);
        }
        let states: String = self
            .tasks
            .iter()
            .map(|t| format!("{} {}\n", t.current, t.error))
            .collect();
        classify(&states)
    }
}

/// Gather [`Diagnostics`] for `stack`.
pub fn diagnostics(exec: &Executor, stack: &str) -> Result<Diagnostics> {
    let mut text = String::new();
    let mut tasks = Vec::new();
    for svc in services(exec, stack)? {
        text.push_str(&format!("## docker service ps --no-trunc {svc}\n"));
        let ps = docker(exec, &["service", "ps", "--no-trunc", &svc])?;
        text.push_str(&String::from_utf8_lossy(&ps.stdout));
        let states = docker_ok(
            exec,
            &[
                "service",
                "ps",
                "--no-trunc",
                &svc,
                "--format",
                "{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}",
            ],
        )?;
        let svc_tasks: Vec<Task> = states.lines().map(Task::parse).collect();
        if svc_tasks.iter().any(Task::failing) {
            text.push_str(&format!("## docker service logs --tail 30 {svc}\n"));
            let logs = docker(
                exec,
                &["service", "logs", "--no-task-ids", "--tail", "30", &svc],
            )?;
            text.push_str(&String::from_utf8_lossy(&logs.stdout));
            text.push_str(&logs.stderr);
        }
        tasks.extend(svc_tasks);
        text.push('\n');
    }
    let masked = exec.masker().mask_all(text.as_bytes());
    Ok(Diagnostics {
        text: String::from_utf8_lossy(&masked).into_owned(),
        tasks,
    })
}

/// The cause class an engine message (a task's state and error, or abra's error when
/// there are no tasks) points to, if any is clear. Infrastructure: the host failed the
/// recipe (address pools, VIPs, tasks never scheduled, images not available). Recipe:
/// tasks ran and failed, or are unhealthy.
pub fn classify(text: &str) -> Option<Cause> {
    let text = text.to_lowercase();
    const INFRA: &[&str] = &[
        "could not find an available, non-overlapping",
        "no available ip",
        "address pool",
        "ipam",
        "no such image",
        "pull access denied",
        "manifest unknown",
        "no suitable node",
        "insufficient resources",
        "cannot connect to the docker daemon",
    ];
    if INFRA.iter().any(|p| text.contains(p)) {
        return Some(Cause::Infrastructure);
    }
    const RECIPE: &[&str] = &[
        "non-zero exit",
        "failed ",
        "unhealthy",
        "rollback",
        "paused",
        "exit code",
    ];
    if RECIPE.iter().any(|p| text.contains(p)) {
        return Some(Cause::Recipe);
    }
    None
}

/// Everything of `stack` that still exists: stacks, services, volumes, secrets,
/// networks and configs, as `kind name` strings.
pub fn leaks(exec: &Executor, stack: &str) -> Result<Vec<String>> {
    let label = format!("label={STACK_LABEL}={stack}");
    let prefix = format!("{stack}_");
    let mut found = Vec::new();
    for name in lines(&docker_ok(exec, &["stack", "ls", "--format", "{{.Name}}"])?) {
        if name == stack {
            found.push(format!("stack {name}"));
        }
    }
    for (kind, args) in [
        (
            "service",
            vec!["service", "ls", "--filter", &label, "--format", "{{.Name}}"],
        ),
        (
            "volume",
            vec!["volume", "ls", "--filter", &label, "--format", "{{.Name}}"],
        ),
        (
            "network",
            vec!["network", "ls", "--filter", &label, "--format", "{{.Name}}"],
        ),
        (
            "container",
            vec!["ps", "-a", "--filter", &label, "--format", "{{.Names}}"],
        ),
    ] {
        for name in lines(&docker_ok(exec, &args)?) {
            found.push(format!("{kind} {name}"));
        }
    }
    for (kind, args) in [
        ("secret", ["secret", "ls", "--format", "{{.Name}}"]),
        ("config", ["config", "ls", "--format", "{{.Name}}"]),
    ] {
        for name in lines(&docker_ok(exec, &args)?) {
            if name.starts_with(&prefix) {
                found.push(format!("{kind} {name}"));
            }
        }
    }
    Ok(found)
}

/// Remove whatever [`leaks`] found, directly through docker (the last line of defence
/// after abra's own teardown). Returns what could not be removed.
pub fn force_clean(exec: &Executor, stack: &str) -> Result<Vec<String>> {
    let _ = docker(exec, &["stack", "rm", stack]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = leaks(exec, stack)?;
        if left.is_empty() {
            return Ok(left);
        }
        for item in &left {
            let (kind, name) = item.split_once(' ').unwrap_or(("", item));
            let args: Vec<&str> = match kind {
                "service" => vec!["service", "rm", name],
                "container" => vec!["rm", "-f", name],
                "volume" => vec!["volume", "rm", "-f", name],
                "network" => vec!["network", "rm", name],
                "secret" => vec!["secret", "rm", name],
                "config" => vec!["config", "rm", name],
                _ => continue,
            };
            let _ = docker(exec, &args);
        }
        if Instant::now() >= deadline {
            return leaks(exec, stack);
        }
        exec.wait(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names() {
        assert_eq!(stack_name("hello.ci.localhost"), "hello_ci_localhost");
        assert_eq!(stack_name(&"a.".repeat(40)).len(), 45);
    }

    #[test]
    fn classify_causes() {
        assert_eq!(
            classify(
                "Pending 2 minutes ago  \"could not find an available, non-overlapping IPv4 address pool\""
            ),
            Some(Cause::Infrastructure)
        );
        assert_eq!(
            classify("Rejected  \"No such image: ccci/x:1\""),
            Some(Cause::Infrastructure)
        );
        assert_eq!(
            classify("Failed 3 seconds ago \"task: non-zero exit (1)\""),
            Some(Cause::Recipe)
        );
        assert_eq!(classify("all good"), None);
    }

    fn diag(text: &str, tasks: &[&str]) -> Diagnostics {
        Diagnostics {
            text: text.into(),
            tasks: tasks.iter().map(|l| Task::parse(l)).collect(),
        }
    }

    #[test]
    fn the_cause_comes_from_task_states_only() {
        let stuck = diag("", &["Running\tPending 2 minutes ago\t"]);
        assert_eq!(stuck.cause(), Some(Cause::Infrastructure));
        let failed = diag(
            "",
            &["Shutdown\tFailed 1 second ago\ttask: non-zero exit (1)"],
        );
        assert_eq!(failed.cause(), Some(Cause::Recipe));
        assert_eq!(
            diag("", &["Running\tRunning 5 seconds ago\t"]).cause(),
            None
        );
        // Recipe-chosen names and the app's own log lines never decide the class, even
        // when they mimic the artifacts' section headers.
        let text = "## docker service ps --no-trunc s_ipam\nx s_ipam.1 ipam-tool:1 vm Running Running\n\
                    ## docker service logs --tail 30 s_ipam\ns_ipam.1@vm | ## docker service ps\n\
                    s_ipam.1@vm | could not find an available, non-overlapping address pool\n";
        let healthy_but_loud = diag(text, &["Running\tRunning 5 seconds ago\t"]);
        assert_eq!(healthy_but_loud.cause(), None);
        let failed_and_loud = diag(
            text,
            &["Shutdown\tFailed 1 second ago\ttask: non-zero exit (1)"],
        );
        assert_eq!(failed_and_loud.cause(), Some(Cause::Recipe));
    }
}
