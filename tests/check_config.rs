//! `cc-ci check-config`: the one config loader and the one meta loader, run on a file
//! as the NixOS module runs them on the config it renders (tests/nixos/check-offline.sh
//! feeds it the module's output). Exit 0 with `config OK: FILE`, or 1 naming the problem.
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cc-ci");

fn check(config: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .expect("run cc-ci check-config");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_example_config_and_the_example_meta_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cc-ci.toml");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("examples/cc-ci.toml"), &config).unwrap();
    for recipe in ["hello", "no-backup"] {
        let meta = root
            .join("examples/ci/recipes")
            .join(recipe)
            .join("meta.toml");
        write(
            &dir.path().join("recipes").join(recipe).join("meta.toml"),
            &std::fs::read_to_string(meta).unwrap(),
        );
    }
    let (code, stdout, stderr) = check(&config);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), format!("config OK: {}", config.display()));
}

#[test]
fn a_misspelled_key_is_refused_with_the_nearest_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cc-ci.toml");
    write(&config, "[poll]\nintervall_s = 30\n");
    let (code, stdout, stderr) = check(&config);
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    assert!(stderr.contains("unknown field `intervall_s`"), "{stderr}");
    assert!(stderr.contains("did you mean `interval_s`?"), "{stderr}");
    assert!(!stdout.contains("config OK"), "{stdout}");
}

#[test]
fn a_value_the_loader_refuses_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cc-ci.toml");
    write(&config, "[runner]\ndeadline_min = 0\n");
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("runner.deadline_min must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn a_bad_meta_beside_the_config_is_refused_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cc-ci.toml");
    write(&config, "");
    write(
        &dir.path().join("recipes/hello/meta.toml"),
        "CONVERGE_TIMEOUT_S = 90\n",
    );
    let typo = dir.path().join("recipes/ghost/meta.toml");
    write(&typo, "UPGRADE_BASE_VERSON = \"1.0.0+1\"\n");
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 1);
    assert!(stderr.contains(&typo.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("did you mean `UPGRADE_BASE_VERSION`?"),
        "{stderr}"
    );

    // A meta that parses but fails its checks is named too.
    write(&typo, "DATA_SERVICE = \"app\"\n");
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 1);
    assert!(stderr.contains(&typo.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("DATA_SERVICE and DATA_PATH must be set together"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nope.toml");
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("cannot read {}", config.display())),
        "{stderr}"
    );
}
