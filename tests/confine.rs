//! Confinement of recipe tests, on the real kernel and the real swarm: each rule of
//! docs/security.md "Confinement of pull-request code" is tried by a hostile test and
//! must be refused, and the example recipes' tests pass unchanged through the run's
//! Docker endpoint. Needs root and an active swarm (CI is root); fails without them.
mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ccci::confine::{Config, Confinement, Error, Step};
use support::confine::*;

fn start(dirs: &RunDirs, stack: &str) -> Confinement {
    Confinement::start(&Config::default(), dirs.scope(stack)).expect("start the confinement")
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_string()
}

#[test]
fn a_test_runs_unprivileged_without_capabilities_and_with_no_new_privs() {
    let dirs = RunDirs::new();
    let c = start(&dirs, OWN);
    let s = dirs.script("status.sh", "#!/bin/sh\ncat /proc/self/status\n");
    let r = run_confined(&c, &s, &[]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert_eq!(status_field(&r.stdout, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(&r.stdout, "Gid"), "65534\t65534\t65534\t65534");
    // No supplementary groups: not root's, not docker's.
    assert_eq!(status_field(&r.stdout, "Groups"), "");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&r.stdout, set), "0000000000000000", "{set}");
    }
    assert_eq!(status_field(&r.stdout, "NoNewPrivs"), "1");
    let e = c.enforcement();
    assert!(e.confined && e.missing.is_empty(), "{e:?}");
    assert_eq!(e.landlock_abi, ccci::confine::landlock::kernel_abi());
    assert!(e.landlock_abi.is_some(), "this kernel has landlock");
    assert_ne!(e.landlock_status, "not_enforced");
    assert!(e.summary().contains("landlock ABI"), "{}", e.summary());
}

#[test]
fn hostile_reads_of_tokens_and_other_runs_are_refused() {
    let dirs = RunDirs::new();
    let c = start(&dirs, OWN);
    let targets = [
        dirs.path("credentials/gitea-token"),
        // World-readable: only landlock stops these two.
        dirs.path("world-token"),
        dirs.path("state/runs/other-run/artifacts/run.log"),
    ];
    for t in &targets {
        let s = dirs.script("read.sh", &format!("#!/bin/sh\ncat '{}'\n", t.display()));
        let r = run_confined(&c, &s, &[]);
        assert_ne!(r.code, Some(0), "read {}: {}", t.display(), r.all());
        assert!(r.stderr.contains("Permission denied"), "{}", r.all());
        assert!(
            !r.stdout.contains("token") && !r.stdout.contains("log"),
            "{}",
            r.all()
        );
    }
    let s = dirs.script(
        "list.sh",
        &format!("#!/bin/sh\nls '{}'\n", dirs.path("state/runs").display()),
    );
    let r = run_confined(&c, &s, &[]);
    assert_ne!(r.code, Some(0), "{}", r.all());
    assert!(!r.stdout.contains("other-run"), "{}", r.all());
    // The system stays readable.
    let s = dirs.script(
        "system.sh",
        "#!/bin/sh\ncat /etc/passwd >/dev/null && echo readable\n",
    );
    let r = run_confined(&c, &s, &[]);
    assert_eq!(r.stdout.trim(), "readable", "{}", r.all());
}

#[test]
fn hostile_writes_outside_its_dirs_are_refused() {
    let dirs = RunDirs::new();
    let c = start(&dirs, OWN);
    let artifacts = dirs.path("state/runs/this-run/artifacts/tests");
    for (target, allowed) in [
        // /tmp is world-writable: only landlock stops this one.
        (
            format!("/tmp/ccci-confine-escape-{}", std::process::id()),
            false,
        ),
        (dirs.path("tests/planted").display().to_string(), false),
        (
            dirs.path("state/runs/other-run/artifacts/planted")
                .display()
                .to_string(),
            false,
        ),
        ("$HOME/mine".into(), true),
        ("$TMPDIR/mine".into(), true),
        (artifacts.join("junit.xml").display().to_string(), true),
    ] {
        let s = dirs.script("write.sh", &format!("#!/bin/sh\necho x > \"{target}\"\n"));
        let r = run_confined(&c, &s, &[]);
        assert_eq!(r.code == Some(0), allowed, "write {target}: {}", r.all());
        if !allowed {
            assert!(!Path::new(&target).exists(), "{target} was written");
        }
    }
    assert!(artifacts.join("junit.xml").is_file());
}

#[test]
fn the_engine_socket_is_refused() {
    let dirs = RunDirs::new();
    let c = start(&dirs, OWN);
    let s = dirs.script(
        "socket.sh",
        "#!/bin/sh\ndocker -H unix:///var/run/docker.sock ps 2>&1; \
         DOCKER_HOST=unix:///run/docker.sock docker ps 2>&1\n",
    );
    let r = run_confined(&c, &s, &[]);
    let denied = r
        .stdout
        .lines()
        .filter(|l| l.contains("connect: permission denied"));
    assert_eq!(denied.count(), 2, "{}", r.all());
    assert!(!r.stdout.contains("CONTAINER ID"), "{}", r.all());
}

#[test]
fn a_setuid_binary_gives_no_root() {
    let dirs = RunDirs::new();
    let c = start(&dirs, OWN);
    let suid = dirs.path("tests/suid-id");
    std::fs::copy("/usr/bin/id", &suid).unwrap();
    chmod(&suid, 0o4755);
    // The control: without the confinement the copy does make an unprivileged user
    // root (the filesystem honours setuid).
    let out = Command::new(&suid).uid(65534).gid(65534).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("euid=0"),
        "setuid control: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let s = dirs.script("escape.sh", &format!("#!/bin/sh\n'{}'\n", suid.display()));
    let r = run_confined(&c, &s, &[]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(r.stdout.starts_with("uid=65534"), "{}", r.all());
    assert!(!r.stdout.contains("euid=0"), "{}", r.all());
}

#[test]
fn the_endpoint_answers_only_for_the_runs_stack() {
    let stacks = Stacks::acquire();
    let dirs = RunDirs::new();
    let c = start(&dirs, OWN);
    let own = stacks.container(OWN);
    let other = stacks.container(OTHER);
    let run = |name: &str, body: &str| {
        let s = dirs.script(name, &format!("#!/bin/sh\n{body}\n"));
        run_confined(&c, &s, &[("CCCI_STACK_NAME", OWN)])
    };
    // Allowed: list, inspect, exec, logs, service ps of its own stack.
    let r = run("ps.sh", "docker ps -q --no-trunc");
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(r.stdout.lines().any(|l| l.starts_with(&own)), "{}", r.all());
    assert!(
        !r.stdout.contains(&other),
        "other stack listed: {}",
        r.all()
    );
    let r = run("exec.sh", &format!("docker exec {own} echo inside-own"));
    assert_eq!(r.stdout.trim(), "inside-own", "{}", r.all());
    let r = run("exit.sh", &format!("docker exec {own} sh -c 'exit 7'"));
    assert_eq!(r.code, Some(7), "the exit code comes through: {}", r.all());
    let r = run(
        "inspect.sh",
        &format!("docker inspect -f '{{{{.Id}}}}' {own}"),
    );
    assert!(r.stdout.starts_with(&own), "{}", r.all());
    let r = run("logs.sh", &format!("docker logs {own} && echo logs-ok"));
    assert!(r.stdout.contains("logs-ok"), "{}", r.all());
    let r = run(
        "sps.sh",
        &format!("docker service ps --format '{{{{.Name}}}}' {OWN}_app"),
    );
    assert!(r.stdout.contains(&format!("{OWN}_app.1")), "{}", r.all());
    let r = run("sls.sh", "docker service ls --format '{{.Name}}'");
    assert_eq!(r.stdout.trim(), format!("{OWN}_app"), "{}", r.all());
    c.endpoint().take_log();

    // Refused, each naming its rule.
    for (name, body, rule) in [
        (
            "exec-other.sh",
            format!("docker exec {other} true"),
            "cc-ci: other-stack",
        ),
        (
            "inspect-other.sh",
            format!("docker inspect {other}"),
            "cc-ci: other-stack",
        ),
        (
            "logs-other.sh",
            format!("docker logs {other}"),
            "cc-ci: other-stack",
        ),
        (
            "run.sh",
            "docker run --rm ccci-confine-test/busybox:1 true".into(),
            "cc-ci: not-allowed",
        ),
        (
            "volume.sh",
            "docker volume create ccci_confine_test_v".into(),
            "cc-ci: not-allowed",
        ),
        (
            "network.sh",
            "docker network ls".into(),
            "cc-ci: not-allowed",
        ),
        (
            "info.sh",
            "docker info --format '{{.Name}}' 2>&1; docker info >/dev/null".into(),
            "cc-ci: not-allowed",
        ),
        ("rm.sh", format!("docker rm -f {own}"), "cc-ci: not-allowed"),
        (
            "scale.sh",
            format!("docker service scale -d {OWN}_app=3"),
            "cc-ci: not-allowed",
        ),
        (
            "privileged.sh",
            format!("docker exec --privileged {own} true"),
            "cc-ci: privileged-exec",
        ),
        (
            "root.sh",
            format!("docker exec -u root {own} true"),
            "cc-ci: exec-as-root",
        ),
        (
            "root0.sh",
            format!("docker exec -u 0:0 {own} true"),
            "cc-ci: exec-as-root",
        ),
    ] {
        let r = run(name, &body);
        assert_ne!(r.code, Some(0), "{name} succeeded: {}", r.all());
        assert!(r.all().contains(rule), "{name}: want {rule}: {}", r.all());
        let log = c.endpoint().take_log();
        assert!(
            log.iter().any(|l| l.contains(rule)),
            "{name} not recorded: {log:?}"
        );
    }
    let r = run("sps-other.sh", &format!("docker service ps {OTHER}_app"));
    assert_ne!(r.code, Some(0), "{}", r.all());
    assert!(!r.stdout.contains(OTHER), "{}", r.all());
    assert!(
        !docker(&["volume", "inspect", "ccci_confine_test_v"])
            .status
            .success()
    );
    let out = docker(&[
        "service",
        "inspect",
        "-f",
        "{{.Spec.Mode.Replicated.Replicas}}",
        &format!("{OWN}_app"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

#[test]
fn the_example_recipes_tests_pass_unchanged_through_the_endpoint() {
    let _stacks = Stacks::acquire();
    let dirs = RunDirs::new();
    let c = start(&dirs, OWN);
    let root = support::repo_root();
    for test in [
        "examples/recipes/hello/head/tests/01-http.sh",
        "examples/ci/recipes/hello/tests/10-secret-mounted.sh",
    ] {
        let name = Path::new(test).file_name().unwrap().to_str().unwrap();
        let copy = dirs.script(name, &std::fs::read_to_string(root.join(test)).unwrap());
        let r = run_confined(&c, &copy, &[("CCCI_STACK_NAME", OWN)]);
        assert_eq!(r.code, Some(0), "{test}: {}", r.all());
        let log = c.endpoint().take_log();
        assert!(log.is_empty(), "{test} was refused something: {log:?}");
    }
}

#[test]
fn only_the_runs_tests_may_use_the_endpoint() {
    let dirs = RunDirs::new();
    let c = start(&dirs, OWN);
    // Root, outside the run's cgroup.
    let sock = c.enforcement().endpoint.clone();
    let out = docker(&["-H", &format!("unix://{}", sock.display()), "ps"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cc-ci: not-this-run"), "{err}");
}

#[test]
fn leftover_processes_are_killed_through_the_runs_cgroup() {
    let dirs = RunDirs::new();
    let c = start(&dirs, OWN);
    let cgroup = c.enforcement().cgroup.clone().expect("a cgroup");
    // A daemon that leaves the test's process group and closes its output.
    let s = dirs.script(
        "daemon.sh",
        "#!/bin/sh\nsetsid sleep 600 </dev/null >/dev/null 2>&1 &\necho $!\n",
    );
    let mut cmd = Command::new(&s);
    c.test("daemon").unwrap().apply(&mut cmd);
    let out = cmd.output().unwrap();
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let in_cgroup = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert!(
        in_cgroup.lines().any(|l| l == pid.to_string()),
        "daemon {pid} not in {}: {in_cgroup}",
        cgroup.display()
    );
    assert!(c.reap() >= 1);
    assert!(
        gone(pid, Duration::from_secs(5)),
        "daemon {pid} survived the reap"
    );
}

/// Whether `pid` is gone (or a zombie) within `within`.
fn gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')) =>
            {
                return true;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

/// In the role of a runner that is then killed: start a confined `sleep`, print its
/// pid, wait to be killed.
const AS_RUNNER: &str = "CCCI_CONFINE_TEST_AS_RUNNER";
/// In the role of a runner that is not root: try to start, print the outcome.
const AS_NOBODY: &str = "CCCI_CONFINE_TEST_AS_NOBODY";

#[test]
fn a_confined_test_dies_with_the_runner_even_after_the_identity_switch() {
    if let Ok(dir) = std::env::var(AS_RUNNER) {
        let dirs = RunDirs {
            root: tempfile::TempDir::new_in(dir).unwrap(),
        };
        std::fs::create_dir_all(dirs.path("tests")).unwrap();
        chmod(dirs.root.path(), 0o755);
        chmod(&dirs.path("tests"), 0o755);
        let c = start(&dirs, OWN);
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("600");
        c.test("sleep").unwrap().apply(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let cgroup = c.enforcement().cgroup.clone().unwrap();
        println!("child {} in {}", child.id(), cgroup.display());
        // Killed before the child ends.
        let _ = child.wait();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_confined_test_dies_with_the_runner_even_after_the_identity_switch",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(AS_RUNNER, tmp.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(runner.stdout.take().unwrap());
    let mut line = String::new();
    let (pid, cgroup): (i32, std::path::PathBuf) = loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "runner ended"
        );
        // The harness prints "test <name> ... " on the same line.
        if let Some((_, p)) = line.trim().rsplit_once("child ") {
            let (pid, cgroup) = p.split_once(" in ").unwrap();
            break (pid.parse().unwrap(), cgroup.into());
        }
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Uid:\t65534"), "{status}");
    runner.kill().unwrap(); // SIGKILL: no cleanup code runs in the runner.
    runner.wait().unwrap();
    assert!(
        gone(pid, Duration::from_secs(5)),
        "confined child {pid} outlived its runner"
    );
    // A killed runner leaves its (empty) cgroup; systemd removes a unit's on stop.
    let _ = std::fs::remove_dir(&cgroup);
}

#[test]
fn it_fails_closed_where_it_cannot_confine_unless_allowed() {
    if let Ok(mode) = std::env::var(AS_NOBODY) {
        let dir = tempfile::tempdir().unwrap();
        let scope = ccci::confine::Scope {
            label: format!("nobody{}", std::process::id()),
            stack: OWN.into(),
            dir: dir.path().join("confine"),
            readable: vec![],
            writable: vec![],
            hidden: vec![],
        };
        let config = Config {
            allow_unconfined: mode == "allow",
            ..Config::default()
        };
        match Confinement::start(&config, scope) {
            Ok(c) => println!("OK {}", serde_json::to_string(c.enforcement()).unwrap()),
            Err(e) => println!("ERR {e}"),
        }
        return;
    }
    let outcome = |mode: &str| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "it_fails_closed_where_it_cannot_confine_unless_allowed",
                "--nocapture",
            ])
            .env(AS_NOBODY, mode)
            .env("TMPDIR", "/tmp")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("OK ") || l.starts_with("ERR "))
            .unwrap_or_else(|| {
                panic!(
                    "no outcome: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_string()
    };
    let refused = outcome("deny");
    assert!(
        refused.starts_with("ERR confine: cannot confine the tests as asked"),
        "{refused}"
    );
    for step in [
        "the unprivileged identity",
        "dropping capabilities",
        "the run's cgroup",
    ] {
        assert!(refused.contains(step), "{step} not named: {refused}");
    }
    assert!(refused.contains("allow_unconfined"), "{refused}");
    let allowed = outcome("allow");
    let json = allowed
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("{allowed}"));
    let e: ccci::confine::Enforcement = serde_json::from_str(json).unwrap();
    assert!(!e.confined);
    let missing: Vec<Step> = e.missing.iter().map(|m| m.step).collect();
    assert!(
        missing.contains(&Step::Identity) && missing.contains(&Step::Capabilities),
        "{e:?}"
    );
    assert!(e.summary().contains("UNCONFINED"), "{}", e.summary());
}

#[test]
fn identities_that_reach_the_engine_are_refused() {
    let dirs = RunDirs::new();
    let docker_gid =
        std::os::unix::fs::MetadataExt::gid(&std::fs::metadata("/var/run/docker.sock").unwrap());
    let config = Config {
        gid: docker_gid,
        ..Config::default()
    };
    assert!(matches!(
        Confinement::start(&config, dirs.scope(OWN)),
        Err(Error::DockerIdentity(..))
    ));
    let config = Config {
        uid: 0,
        ..Config::default()
    };
    assert!(matches!(
        Confinement::start(&config, dirs.scope(OWN)),
        Err(Error::RootIdentity(..))
    ));
}

#[test]
fn config_keys_are_strict() {
    let c: Config = toml::from_str("uid = 1234\ngid = 1234\nexec_as_root = true\n").unwrap();
    assert_eq!(
        (c.uid, c.gid, c.exec_as_root, c.allow_unconfined),
        (1234, 1234, true, false)
    );
    let err = toml::from_str::<Config>("uid = 1\nallow_unconfind = true\n").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}
