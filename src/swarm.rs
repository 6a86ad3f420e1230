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
            let diag = diagnostics(exec, stack)?;
            let cause = classify(&diag).unwrap_or(Cause::Timeout);
            return Ok(Err(Unhealthy {
                reason: format!("not healthy after {} s: {problem}", timeout.as_secs()),
                cause,
            }));
        }
        exec.wait(Duration::from_millis(500));
    }
}

/// Everything that explains a stack's state: `docker service ps --no-trunc` of every
/// service, task errors, and the last log lines of services with failed tasks.
/// Masked with the run's current secrets.
pub fn diagnostics(exec: &Executor, stack: &str) -> Result<String> {
    let mut text = String::new();
    for svc in services(exec, stack)? {
        text.push_str(&format!("## docker service ps --no-trunc {svc}\n"));
        let ps = docker(exec, &["service", "ps", "--no-trunc", &svc])?;
        text.push_str(&String::from_utf8_lossy(&ps.stdout));
        let errors = docker_ok(
            exec,
            &[
                "service",
                "ps",
                "--no-trunc",
                &svc,
                "--format",
                "{{.CurrentState}}\t{{.Error}}",
            ],
        )?;
        let failing = errors.lines().any(|l| {
            let (state, error) = l.split_once('\t').unwrap_or((l, ""));
            state.starts_with("Failed") || state.starts_with("Rejected") || !error.trim().is_empty()
        });
        if failing {
            text.push_str(&format!("## docker service logs --tail 30 {svc}\n"));
            let logs = docker(
                exec,
                &["service", "logs", "--no-task-ids", "--tail", "30", &svc],
            )?;
            text.push_str(&String::from_utf8_lossy(&logs.stdout));
            text.push_str(&logs.stderr);
        }
        text.push('\n');
    }
    let masked = exec.masker().mask_all(text.as_bytes());
    Ok(String::from_utf8_lossy(&masked).into_owned())
}

/// The cause class that diagnostics (or abra's error output) point to, if any is
/// clear. Only task states and errors are read, never the services' own log lines
/// (an app may log anything). Infrastructure: the host failed the recipe (address
/// pools, VIPs, tasks never scheduled, images not available). Recipe: tasks ran and
/// failed, or are unhealthy.
pub fn classify(text: &str) -> Option<Cause> {
    let states = without_service_logs(text).to_lowercase();
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
    // A task the swarm wants running that never left `New`/`Pending` was never
    // scheduled or never got its network: the host's problem.
    let stuck = states
        .lines()
        .any(|l| l.contains(" running ") && (l.contains(" pending ") || l.contains(" new ")));
    if stuck || INFRA.iter().any(|p| states.contains(p)) {
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
    if RECIPE.iter().any(|p| states.contains(p)) {
        return Some(Cause::Recipe);
    }
    None
}

/// `text` without the `## docker service logs` sections of [`diagnostics`].
fn without_service_logs(text: &str) -> String {
    let mut out = String::new();
    let mut in_logs = false;
    for line in text.lines() {
        if line.starts_with("## ") {
            in_logs = line.starts_with("## docker service logs");
        }
        if !in_logs {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
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
        let stuck = "ID  NAME  IMAGE  NODE  DESIRED STATE  CURRENT STATE  ERROR\nx  s_app.1  img  vm  Running  Pending 2 minutes ago";
        assert_eq!(classify(stuck), Some(Cause::Infrastructure));
        // The app's own log lines never decide the class.
        let logs = "## docker service ps --no-trunc s_app\nx s_app.1 img vm Shutdown Failed 1s ago \"task: non-zero exit (1)\"\n\
                    ## docker service logs --tail 30 s_app\nerror: No such image in my catalogue\n";
        assert_eq!(classify(logs), Some(Cause::Recipe));
    }
}
