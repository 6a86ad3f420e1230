//! What confinement costs, measured against a baseline in the same run:
//!
//! 1. per test: spawning `/bin/true` confined (fresh scratch dir, landlock ruleset
//!    built, every step of `ccci::confine`) against a plain spawn of it;
//! 2. the run's Docker endpoint: `docker exec <container> true` through the endpoint
//!    against the same command on the engine's socket (both from root, in the run's
//!    cgroup, so only the socket differs).
//!
//! `cargo bench --bench confine` (root and an active swarm). Deploys a one-service
//! stack `bench_confine_test` from a local busybox image (the tests' fixture) and
//! removes it. Results:
//! docs/perf.md, "Confinement".
use std::process::Command;
use std::time::{Duration, Instant};

use ccci::confine::{Config, Confinement, Scope};

#[allow(dead_code)]
#[path = "../tests/support/confine.rs"]
mod support;
use support::{chmod, deploy_stack, remove_stack, require_swarm, running_container};

const STACK: &str = "bench_confine_test";

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
    require_swarm();
    deploy_stack(STACK);
    let container = running_container(STACK).expect("a running container");
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
    remove_stack(STACK);
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
