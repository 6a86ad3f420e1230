//! Fixtures of the confinement tests: a run's directories (with a hidden state tree,
//! token files and another run's artifacts), and two tiny stacks on the real swarm
//! (this run's and another one's) built from a local busybox image, removed when the
//! last test using them ends.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ccci::confine::{Confinement, Scope};

pub const OWN: &str = "own_confine_test";
pub const OTHER: &str = "other_confine_test";
const IMAGE: &str = "ccci-confine-test/busybox:1";

/// A run's directories, in a temp dir (mode 0755 so the test identity can traverse).
pub struct RunDirs {
    pub root: tempfile::TempDir,
}

impl RunDirs {
    pub fn new() -> RunDirs {
        let root = tempfile::Builder::new()
            .prefix("ccci-confine-")
            .tempdir()
            .unwrap();
        let r = RunDirs { root };
        for d in [
            "state/runs/other-run/artifacts",
            "state/runs/this-run/artifacts/tests",
            "runtime/runs/this-run/confine",
            "credentials",
            "tests",
        ] {
            std::fs::create_dir_all(r.path(d)).unwrap();
        }
        chmod(r.root.path(), 0o755);
        for d in [
            "state",
            "state/runs",
            "state/runs/other-run",
            "state/runs/other-run/artifacts",
        ] {
            chmod(&r.path(d), 0o755);
        }
        std::fs::write(
            r.path("state/runs/other-run/artifacts/run.log"),
            "other run's log\n",
        )
        .unwrap();
        chmod(&r.path("state/runs/other-run/artifacts/run.log"), 0o644);
        std::fs::write(r.path("credentials/gitea-token"), "root-only-token\n").unwrap();
        chmod(&r.path("credentials/gitea-token"), 0o600);
        std::fs::write(r.path("world-token"), "world-readable-token\n").unwrap();
        chmod(&r.path("world-token"), 0o644);
        chmod(&r.path("tests"), 0o755);
        r
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// The scope a runner would give: state, runtime and credentials hidden.
    pub fn scope(&self, stack: &str) -> Scope {
        Scope {
            label: format!("t{}-{}", std::process::id(), unique()),
            stack: stack.into(),
            dir: self.path("runtime/runs/this-run/confine"),
            readable: vec![self.path("tests")],
            writable: vec![self.path("state/runs/this-run/artifacts/tests")],
            hidden: vec![
                self.path("state"),
                self.path("runtime"),
                self.path("credentials"),
                self.path("world-token"),
            ],
        }
    }

    /// Write an executable script into the tests dir.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path("tests").join(name);
        std::fs::write(&p, body).unwrap();
        chmod(&p, 0o755);
        p
    }
}

fn unique() -> u32 {
    static N: Mutex<u32> = Mutex::new(0);
    let mut n = N.lock().unwrap();
    *n += 1;
    *n
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// What a confined command did.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn all(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `script` confined (as the runner would), with `env`.
pub fn run_confined(c: &Confinement, script: &Path, env: &[(&str, &str)]) -> Ran {
    let mut cmd = Command::new(script);
    cmd.current_dir(script.parent().unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    c.test(script.file_name().unwrap().to_str().unwrap())
        .unwrap()
        .apply(&mut cmd);
    let out = cmd.output().expect("spawn the confined test");
    c.reap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Swarm tests need the real engine: fail loudly (never skip) when it is missing.
pub fn require_swarm() {
    let out = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        state, "active",
        "confinement tests need root and an active swarm"
    );
}

pub fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI")
}

/// The two stacks, deployed while at least one test holds a [`Stacks`] guard.
pub struct Stacks;

static USERS: Mutex<usize> = Mutex::new(0);

impl Stacks {
    pub fn acquire() -> Stacks {
        require_swarm();
        let mut users = USERS.lock().unwrap();
        if *users == 0 {
            deploy();
        }
        *users += 1;
        Stacks
    }

    /// A running container of `<stack>_app`.
    pub fn container(&self, stack: &str) -> String {
        running_container(stack).unwrap_or_else(|| panic!("no running container of {stack}_app"))
    }
}

impl Drop for Stacks {
    fn drop(&mut self) {
        let mut users = USERS.lock().unwrap();
        *users -= 1;
        if *users == 0 {
            remove();
        }
    }
}

/// A running container of `<stack>_app`, if any.
pub fn running_container(stack: &str) -> Option<String> {
    let out = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={stack}_app"),
        "--filter",
        "status=running",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
}

/// Build the busybox image (once per process): nothing is pulled.
pub fn build_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::copy("/bin/busybox", ctx.path().join("busybox"))
            .expect("/bin/busybox (install busybox-static)");
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             RUN mkdir -p /tmp /www && chmod 1777 /tmp && echo hello > /www/index.html\n",
        )
        .unwrap();
        let out = Command::new("docker")
            .args(["build", "-q", "-t", IMAGE])
            .arg(ctx.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Deploy `stack`: one service `app` (busybox httpd on 8080 serving "hello", with
/// a secret `admin_password`), and wait for its container to run.
pub fn deploy_stack(stack: &str) {
    build_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "confine-test-password\n").unwrap();
    let compose = format!(
        "version: '3.8'\nservices:\n  app:\n    image: {IMAGE}\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n\
         \x20   secrets: [admin_password]\nsecrets:\n  admin_password:\n    file: ./pw\n"
    );
    std::fs::write(dir.path().join("compose.yml"), compose).unwrap();
    let out = Command::new("docker")
        .args([
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            "compose.yml",
            stack,
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stack deploy {stack}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_container(stack).is_none() {
        assert!(Instant::now() < deadline, "{stack}_app never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Remove `stack` and wait until its containers, networks and secrets are gone.
pub fn remove_stack(stack: &str) {
    let _ = docker(&["stack", "rm", stack]);
    let label = format!("label=com.docker.stack.namespace={stack}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let left = [
            docker(&["ps", "-aq", "--filter", &label]),
            docker(&["network", "ls", "-q", "--filter", &label]),
            docker(&["secret", "ls", "-q", "--filter", &label]),
        ];
        if left.iter().all(|o| o.stdout.is_empty()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
        let _ = docker(&["stack", "rm", stack]);
    }
}

fn deploy() {
    remove();
    deploy_stack(OWN);
    deploy_stack(OTHER);
}

fn remove() {
    remove_stack(OWN);
    remove_stack(OTHER);
}
