# lib.nixosSystem of the nixpkgs double: lib.evalModules with the strict NixOS
# declarations, NixOS's assertion check, and a system.build.toplevel that stands
# for the system only once the whole config has been forced.
{ lib, pkgs }:
{
  modules,
  specialArgs ? { },
  ...
}:
let
  evaluated = lib.evalModules {
    inherit specialArgs;
    modules = [
      ./nixos-options.nix
      (
        { config, ... }:
        {
          options.system.build.toplevel = lib.mkOption {
            type = lib.types.unspecified;
            description = "mirrors nixos/modules/system/activation/top-level.nix";
          };
          config = {
            _module.args.pkgs = pkgs;
            system.build.toplevel =
              let
                failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
                whole = removeAttrs config [
                  "_module"
                  "system"
                ];
              in
              if failed != [ ] then
                throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}"
              else
                builtins.deepSeq whole (pkgs.runCommand "nixos-system-${config.networking.hostName}" { } "");
          };
        }
      )
    ] ++ modules;
  };
in
evaluated // { inherit (evaluated) config options; }
