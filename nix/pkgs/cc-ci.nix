# The cc-ci package: the binary, and the unit files from units/ as they are
# (the NixOS module installs them with systemd.packages and adds drop-ins).
{
  lib,
  rustPlatform,
  git,
  bash,
}:
let
  root = ../..;
in
rustPlatform.buildRustPackage {
  pname = "cc-ci";
  version = (lib.importTOML (root + "/Cargo.toml")).package.version;

  # Only what the build and its tests read: no target/, no docs but the schema.
  # (cleanSourceWith rather than lib.fileset, which Nix 2.8 cannot evaluate in a
  # flake, so that the offline check evaluates this file as a Nix host does.)
  src = lib.cleanSourceWith {
    name = "cc-ci-source";
    src = root;
    filter =
      path: _type:
      let
        rel = lib.removePrefix "${toString root}/" (toString path);
      in
      lib.elem (lib.head (lib.splitString "/" rel)) [
        "Cargo.toml"
        "Cargo.lock"
        "src"
        "tests"
        "benches"
        "examples"
        "units"
      ]
      || rel == "docs"
      || rel == "docs/results-schema.json";
  };

  cargoLock.lockFile = root + "/Cargo.lock";

  nativeCheckInputs = [
    git
    bash
  ];
  # The tests that need neither root nor Docker: unit tests, the redactor's
  # streams, and the config checker. The swarm, poller and host tests run on a
  # machine with an engine (scripts/test) and in the NixOS VM tests.
  cargoTestFlags = [
    "--lib"
    "--test"
    "check_config"
    "--test"
    "redact"
  ];

  postInstall = ''
    install -Dm644 -t $out/lib/systemd/system units/*
  '';

  meta = {
    description = "Continuous integration for Co-op Cloud recipes";
    mainProgram = "cc-ci";
    license = lib.licenses.agpl3Plus;
    platforms = lib.platforms.linux;
  };
}
