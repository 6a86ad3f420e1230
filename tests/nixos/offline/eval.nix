# Evaluate services.cc-ci (and the example host) with nixpkgs' own lib.evalModules
# against the strict NixOS declarations in nixos-options.nix, force the whole
# config, fail the way NixOS fails on assertions, and check the drop-ins against
# the unit files in units/. Used by tests/nixos/check-offline.sh:
#
#   nix-instantiate --eval --strict --json tests/nixos/offline/eval.nix \
#     --arg lib 'import <nixpkgs-lib>/lib' --arg modules '[ ... ]' -A settingsJSON
{
  lib,
  # Modules besides the cc-ci module and the NixOS declarations.
  modules ? [ ],
  withAbra ? true,
  repo ? ../../..,
  # The unit files the drop-ins are checked against (a changed copy in the drift case).
  unitsDir ? repo + "/units",
}:
let
  pkgs = import ./pkgs.nix { inherit lib withAbra; };

  evaluated = lib.evalModules {
    modules = [
      ./nixos-options.nix
      (repo + "/nix/modules/cc-ci.nix")
      {
        _module.args.pkgs = pkgs;
        # What the flake's nixosModules.cc-ci sets: this flake's package.
        services.cc-ci.package = lib.mkDefault (
          pkgs.runCommand "cc-ci" { } "" // { meta.mainProgram = "cc-ci"; }
        );
      }
    ] ++ modules;
  };

  inherit (evaluated) config;

  # As nixos/modules/system/activation/top-level.nix does before building.
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  checked =
    if failedAssertions != [ ] then
      throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failedAssertions}"
    else
      config;

  # Everything, forced: nothing hides behind laziness (the module arguments aside).
  forced = builtins.deepSeq (removeAttrs checked [ "_module" ]) checked;

  units = import ./units.nix {
    inherit lib;
    config = forced;
    inherit unitsDir;
  };

  cfg = forced.services.cc-ci;
  etcConfig = forced.environment.etc."cc-ci/cc-ci.toml";
in
{
  # The settings as the module hands them to pkgs.formats.toml's generate (checked
  # to be the very value the etc file is generated from).
  settingsJSON =
    let
      rendered = (pkgs.formats.toml { }).generate "cc-ci.toml" cfg.settings;
      script = builtins.unsafeDiscardStringContext etcConfig.source.script;
    in
    assert lib.assertMsg (lib.hasInfix "cc-ci check-config --config etc/cc-ci.toml" script)
      "the module's /etc/cc-ci/cc-ci.toml is not checked by cc-ci check-config";
    assert lib.assertMsg (lib.hasInfix (builtins.unsafeDiscardStringContext "cp ${rendered} etc/cc-ci.toml") script)
      "the module's /etc/cc-ci/cc-ci.toml is not generated from services.cc-ci.settings";
    builtins.toJSON cfg.settings;

  # The drop-ins and the unit files they extend (units.nix); a list of lines.
  inherit (units) report;

  # A summary of what was evaluated, for the log.
  summary = {
    assertions = builtins.length forced.assertions;
    etc = lib.attrNames forced.environment.etc;
    services = lib.attrNames forced.systemd.services;
    sockets = lib.attrNames forced.systemd.sockets;
    timers = lib.attrNames forced.systemd.timers;
    tmpfiles = forced.systemd.tmpfiles.rules;
    nginx = forced.services.nginx.enable;
  };
}
