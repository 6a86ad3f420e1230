# Test double of the few parts of nixpkgs (pkgs) the module and the flake use,
# for evaluating them where nixpkgs cannot be downloaded. Packages are inert
# derivation-shaped attribute sets (nothing is built); `formats.toml` has the type
# of nixpkgs' pkgs/pkgs-lib/formats.nix, and the offline check renders the value
# given to its `generate` with a TOML writer and hands it to
# `cc-ci check-config`, as the real generator's output is on a Nix host. Output
# paths hash what the output depends on, so two different values never share one.
{
  lib,
  withAbra ? true,
}:
let
  # `key`: what the output depends on (as a store path's hash does).
  drvWith =
    key: name: extra:
    let
      self = {
        type = "derivation";
        inherit name;
        outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" key)}-${name}";
        drvPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha1" key)}-${name}.drv";
        outputs = [ "out" ];
        out = self;
        outputName = "out";
        meta.mainProgram = name;
      } // extra;
    in
    self;
  drv = name: drvWith name name;
in
{
  inherit lib;
  stdenv.hostPlatform.system = "x86_64-linux";

  docker = drv "docker" { };
  git = drv "git" { };
  bash = drv "bash" { };
  systemd = drv "systemd" { };

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
      generate = name: value: drvWith (name + builtins.toJSON value) name { };
    };

  runCommand =
    name: env: script:
    drvWith (name + builtins.toJSON env + script) name { inherit env script; };
}
// lib.optionalAttrs withAbra {
  # pkgs/by-name/ab/abra/package.nix (in nixpkgs since the abra package was added).
  abra = drv "abra" { };
}
