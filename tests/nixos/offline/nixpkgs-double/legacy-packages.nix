# legacyPackages.x86_64-linux of the nixpkgs double: ../pkgs.nix, callPackage, and
# inert stand-ins for the builders cc-ci's flake calls. Each checks what it can
# without building: buildRustPackage that its cargoLock.lockFile exists, that its
# source keeps units/ and leaves target/ out, runNixOSTest that a test has nodes and a script.
{ lib }:
let
  base = import ./pkgs.nix { inherit lib; };
  pkgs =
    base
    // {
      callPackage =
        fn: args:
        let
          f = if builtins.isFunction fn then fn else import fn;
        in
        f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);

      rustPlatform.buildRustPackage =
        args:
        assert lib.assertMsg (builtins.pathExists args.cargoLock.lockFile) "cargoLock.lockFile does not exist";
        let
          keeps = rel: args.src.filter "${toString args.src.origSrc}/${rel}" "regular";
        in
        assert lib.assertMsg (lib.all keeps [ "units/cc-ci-poller.service" "Cargo.lock" "src/main.rs" ])
          "the package's source filter drops units/, Cargo.lock or src/";
        assert lib.assertMsg (!lib.any keeps [ "target/debug/cc-ci" "docs/install.md" ])
          "the package's source filter keeps target/ or docs/";
        assert lib.assertMsg (lib.hasInfix "$out/lib/systemd/system" args.postInstall) "the package does not install units/";
        pkgs.runCommand "${args.pname}-${args.version}" { } "" // { meta = args.meta; };

      testers.runNixOSTest =
        module:
        let
          test = if builtins.isFunction module then module { inherit pkgs lib; } else module;
        in
        assert lib.assertMsg (test ? name && test ? nodes && test ? testScript) "a VM test needs name, nodes and testScript";
        pkgs.runCommand "vm-test-run-${test.name}" { } "";

      mkShell = args: pkgs.runCommand "nix-shell" { } "";
      clippy = pkgs.runCommand "clippy" { } "";
      rustfmt = pkgs.runCommand "rustfmt" { } "";
      nixfmt = pkgs.runCommand "nixfmt" { } "";
    };
in
pkgs
