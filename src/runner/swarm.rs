//! What the runner concludes from the engine, independent of abra: is a stack
//! converged and healthy, what went wrong (diagnostics) and whose fault it is (the
//! cause class, read from task states only).
use crate::docker::{self, Docker, Task};
use crate::process::StopReason;
use crate::redact::Masker;
use crate::results::Cause;
use std::time::Duration;

/// The stack name abra derives from an app domain: dots become underscores, cut to 45.
pub fn stack_name(domain: &str) -> String {
    domain.replace('.', "_").chars().take(45).collect()
}

/// Why a stack is not (yet) healthy.
#[derive(Debug, Clone, PartialEq)]
pub struct Unhealthy {
    pub reason: String,
    pub cause: Cause,
}

/// How often the convergence wait looks again.
const POLL: Duration = Duration::from_millis(500);

/// Wait until `stack` is converged and healthy, up to `timeout`. `stopped` says when
/// the run must stop; `waiting` is told how long the wait has lasted, at every look.
pub fn wait_healthy(
    docker: &dyn Docker,
    stack: &str,
    timeout: Duration,
    stopped: impl Fn() -> Option<StopReason>,
    waiting: impl Fn(Duration),
) -> docker::Result<Result<(), Unhealthy>> {
    let start = docker.now();
    loop {
        let problem = match docker.health(stack)? {
            None => return Ok(Ok(())),
            Some(p) => p,
        };
        let waited = docker.now() - start;
        if let Some(reason) = stopped() {
            return Ok(Err(Unhealthy {
                reason: problem,
                cause: Cause::from(reason),
            }));
        }
        if waited >= timeout {
            let cause = diagnostics(docker, stack, None)?
                .cause()
                .unwrap_or(Cause::Timeout);
            return Ok(Err(Unhealthy {
                reason: format!("not healthy after {} s: {problem}", timeout.as_secs()),
                cause,
            }));
        }
        waiting(waited);
        docker.wait(POLL);
    }
}

/// What explains a stack's state: the text for the run's artifacts, and the task
/// states the cause class is read from.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    /// `docker service ps --no-trunc` of every service and the last log lines of the
    /// services with failed tasks, masked with the run's current secrets.
    pub text: String,
    pub tasks: Vec<Task>,
}

fn failing(t: &Task) -> bool {
    t.current.starts_with("Failed") || t.current.starts_with("Rejected") || !t.error.is_empty()
}

/// The swarm wants it running but it never left `New`/`Pending`: never scheduled, or
/// never got its network.
fn stuck(t: &Task) -> bool {
    t.desired == "Running" && (t.current.starts_with("Pending") || t.current.starts_with("New"))
}

impl Diagnostics {
    /// The cause class the task states point to, if any is clear. The text of the
    /// artifacts is never read: service and image names are the recipe's, log lines
    /// the app's, and either may say anything.
    pub fn cause(&self) -> Option<Cause> {
        if self.tasks.iter().any(stuck) {
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

/// Gather [`Diagnostics`] for `stack`, the text masked with `masker`.
pub fn diagnostics(
    docker: &dyn Docker,
    stack: &str,
    masker: Option<&Masker>,
) -> docker::Result<Diagnostics> {
    let mut text = String::new();
    let mut tasks = Vec::new();
    for svc in docker.services(stack)? {
        text.push_str(&format!("## docker service ps --no-trunc {svc}\n"));
        let (listing, svc_tasks) = docker.tasks(&svc)?;
        text.push_str(&listing);
        if svc_tasks.iter().any(failing) {
            text.push_str(&format!("## docker service logs --tail 30 {svc}\n"));
            text.push_str(&docker.service_logs(&svc)?);
        }
        tasks.extend(svc_tasks);
        text.push('\n');
    }
    if let Some(m) = masker {
        text = String::from_utf8_lossy(&m.mask_all(text.as_bytes())).into_owned();
    }
    Ok(Diagnostics { text, tasks })
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
