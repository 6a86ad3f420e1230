//! The compose policy on the real swarm: a pull request whose compose file binds `/`,
//! binds the Docker socket or joins the host's network is refused before anything is
//! deployed (cause `policy`, each setting and the meta key that allows it named); what
//! the operator allows in the recipe's meta passes.
mod support;

use support::*;

const HOSTILE: &str = r#"
    volumes:
      - data:/data
      - /:/host:ro
      - /var/run/docker.sock:/var/run/docker.sock:ro
    networks:
      - hostnet
"#;

/// hello at head, with `HOSTILE` in place of its volume list and the host's network
/// declared, committed on top.
fn hostile_hello(setup: &Setup) -> std::path::PathBuf {
    let repo = recipe_copy("hello", setup.dir.path());
    let compose = repo.join("compose.yml");
    let text = std::fs::read_to_string(&compose).unwrap();
    let text = text
        .replace("    volumes:\n      - data:/data\n", HOSTILE)
        .replace(
            "secrets:\n  admin_password:",
            "networks:\n  hostnet:\n    external: true\n    name: host\n\nsecrets:\n  admin_password:",
        );
    assert!(text.contains("/var/run/docker.sock") && text.contains("name: host"));
    std::fs::write(&compose, text).unwrap();
    commit_all(&repo, "hostile compose");
    repo
}

#[test]
fn a_hostile_compose_file_is_refused_before_any_deploy() {
    let setup = Setup::new("t-policy");
    let repo = hostile_hello(&setup);
    let out = setup.run(&[repo.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    for needle in [
        "the compose policy refuses",
        "service app in compose.yml at the tested commit bind-mounts the host path /;",
        "add \"bind:/\" to POLICY_ALLOW.app",
        "binds the Docker socket",
        "add \"docker-socket\" to POLICY_ALLOW.app",
        "uses the host's network",
        "add \"host-network\" to POLICY_ALLOW.app",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.describe());
    }
    // Recorded for the poller: status error, cause policy, nothing deployed.
    let runs = setup.dir.path().join("state/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["status"], "error");
    assert_eq!(r["cause"], "policy");
    assert_eq!(r["deploys"]["count"], 0);
    assert_nothing_left(&setup.stack("hello"));
}

#[test]
fn what_the_operator_allows_in_meta_is_deployed() {
    let setup = Setup::new("t-policyok");
    let repo = hostile_hello(&setup);
    std::fs::write(
        setup.ci_dir("hello").join("meta.toml"),
        "POLICY_ALLOW = { app = [\"bind:/\", \"docker-socket\", \"host-network\"] }\n",
    )
    .unwrap();
    // Past the policy, install is enough to show it: the deploy is the proof.
    setup.write_hook("hello", "install_steps.sh", "exit 3\n");
    let out = setup.run(&[repo.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let r = out.results();
    assert_eq!(r["deploys"]["count"], 1, "{}", out.describe());
    assert_eq!(
        tier(&r, "install")["reason"],
        "hook install_steps.sh failed (exit 3)",
        "{}",
        out.describe()
    );
    assert_nothing_left(&setup.stack("hello"));
}
