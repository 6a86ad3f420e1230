# Test double of the few parts of nixpkgs (pkgs) the module and the flake use,
# for evaluating them where nixpkgs cannot be downloaded. Packages are inert
# derivations that are never built; `formats.toml` has the type
# of nixpkgs' pkgs/pkgs-lib/formats.nix, and the offline check renders the value
# given to its `generate` with a TOML writer and hands it to
# `cc-ci check-config`, as the real generator's output is on a Nix host.
{
  lib,
  withAbra ? true,
}:
let
  # An inert derivation: a real one (its store paths hash everything it is made
  # of, so two different values never share one), which is never built.
  drvWith =
    name: env: extra:
    derivation (
      env
      // {
        inherit name;
        system = "x86_64-linux";
        builder = "/bin/sh";
        args = [
          "-c"
          "echo this is a stand-in from cc-ci's tests/nixos/offline and is never built; exit 1"
        ];
      }
    )
    // extra;
  drv = name: drvWith name { } { meta.mainProgram = name; };
in
{
  inherit lib;
  stdenv.hostPlatform.system = "x86_64-linux";

  docker = drv "docker";
  git = drv "git";
  bash = drv "bash";
  systemd = drv "systemd";

  formats.toml =
    { }:
    {
      # pkgs/pkgs-lib/formats.nix: toml.type
      type =
        let
          valueType =
            lib.types.oneOf [
              lib.types.bool
              lib.types.int
              lib.types.float
              lib.types.str
              lib.types.path
              (lib.types.attrsOf valueType)
              (lib.types.listOf valueType)
            ]
            // {
              description = "TOML value";
            };
        in
        valueType;
      generate =
        name: value:
        drvWith name {
          value = builtins.toJSON value;
          passAsFile = [ "value" ];
        } { };
    };

  runCommand =
    name: env: script:
    drvWith name (env // { buildCommand = script; }) { inherit env script; };
}
// lib.optionalAttrs withAbra {
  # pkgs/by-name/ab/abra/package.nix (in nixpkgs since the abra package was added).
  abra = drv "abra";
}
