//! What confinement costs, measured against a baseline in the same run:
//!
//! 1. per test: spawning `/bin/true` confined (fresh scratch dir, landlock ruleset
//!    built, every step of `ccci::confine`) against a plain spawn of it;
//! 2. the run's Docker endpoint: `docker exec <container> true` through the endpoint
//!    against the same command on the engine's socket (both from root, in the run's
//!    cgroup, so only the socket differs).
//!
//! `cargo bench --bench confine` (root and an active swarm). Deploys a one-service
//! stack `bench_confine_test` from a local busybox image and removes it. Results:
//! docs/perf.md, "Confinement".
use std::process::Command;
use std::time::{Duration, Instant};

use ccci::confine::{Config, Confinement, Scope};

const STACK: &str = "bench_confine_test";
const IMAGE: &str = "ccci-confine-test/busybox:1";

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let spawns: usize = std::env::var("SPAWNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let execs: usize = std::env::var("EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::Builder::new()
        .prefix("ccci-bench-confine-")
        .tempdir()
        .unwrap();
    chmod(dir.path(), 0o755);
    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    let confinement = Confinement::start(
        &Config::default(),
        Scope {
            label: format!("bench{}", std::process::id()),
            stack: STACK.into(),
            dir: dir.path().join("confine"),
            readable: vec![dir.path().join("tests")],
            writable: vec![],
            hidden: vec!["/var/lib/cc-ci".into(), "/run/cc-ci".into()],
        },
    )
    .expect("confinement (run as root)");
    println!("{}", confinement.enforcement().summary());

    // 1. Per test.
    let (mut plain, mut confined) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        plain.push(per_spawn(spawns, || {
            let t = Instant::now();
            assert!(Command::new("/bin/true").status().unwrap().success());
            t.elapsed()
        }));
        confined.push(per_spawn(spawns, || {
            let t = Instant::now();
            let mut cmd = Command::new("/bin/true");
            confinement.test("bench").unwrap().apply(&mut cmd);
            assert!(cmd.status().unwrap().success());
            t.elapsed()
        }));
    }
    report("spawn /bin/true", "plain", &plain, "confined", &confined);

    // 2. The endpoint.
    deploy();
    let container = container();
    let cgroup = confinement.enforcement().cgroup.clone().expect("a cgroup");
    let exec = |host: &str| {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(cgroup.join("cgroup.procs"))
            .unwrap();
        let mut cmd = Command::new("docker");
        cmd.args(["-H", host, "exec", &container, "true"]);
        // SAFETY: only a write(2) to an open file between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || ccci::confine::cgroup::enter(&procs));
        }
        let t = Instant::now();
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    let endpoint = format!("unix://{}", confinement.enforcement().endpoint.display());
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    exec("unix:///var/run/docker.sock");
    exec(&endpoint);
    for _ in 0..rounds {
        direct.push(per_spawn(execs, || exec("unix:///var/run/docker.sock")));
        through.push(per_spawn(execs, || exec(&endpoint)));
    }
    report(
        "docker exec … true",
        "engine socket",
        &direct,
        "endpoint",
        &through,
    );
    drop(confinement);
    remove();
}

fn per_spawn(n: usize, mut f: impl FnMut() -> Duration) -> f64 {
    let total: Duration = (0..n).map(|_| f()).sum();
    total.as_secs_f64() * 1000.0 / n as f64
}

fn report(what: &str, base: &str, b: &[f64], name: &str, x: &[f64]) {
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "{what}: {base} {:.2} ms (best {:.2}), {name} {:.2} ms (best {:.2}); \
         added {:.2} ms, ratio {:.3} (medians of {} rounds)",
        med(b),
        best(b),
        med(x),
        best(x),
        med(x) - med(b),
        med(x) / med(b),
        b.len()
    );
}

fn chmod(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().unwrap()
}

fn deploy() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).expect("/bin/busybox");
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
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        ctx.path().join("compose.yml"),
        format!("version: '3.8'\nservices:\n  app:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n"),
    )
    .unwrap();
    let out = Command::new("docker")
        .args([
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            "compose.yml",
            STACK,
        ])
        .current_dir(ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn container() -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={STACK}_app"),
            "--filter",
            "status=running",
        ]);
        if let Some(c) = String::from_utf8_lossy(&out.stdout).lines().next() {
            return c.to_string();
        }
        assert!(Instant::now() < deadline, "{STACK}_app never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn remove() {
    let _ = docker(&["stack", "rm", STACK]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let out = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.stack.namespace={STACK}"),
        ]);
        let nets = docker(&["network", "ls", "-q", "--filter", &format!("name={STACK}_")]);
        if out.stdout.is_empty() && nets.stdout.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
