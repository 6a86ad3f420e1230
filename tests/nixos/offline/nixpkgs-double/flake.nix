# A test double of the nixpkgs flake, for evaluating cc-ci's flake where nixpkgs
# cannot be downloaded (tests/nixos/check-offline.sh copies it, with nixpkgs' own
# lib from ../shared/nixpkgs-lib, into a temporary directory and passes it with
# --override-input nixpkgs). Its lib is nixpkgs' real lib; lib.nixosSystem
# evaluates the modules against the strict NixOS declarations of
# ../nixos-options.nix; legacyPackages is ../pkgs.nix plus inert stand-ins for the
# builders the flake calls. Nothing here builds anything.
{
  outputs =
    { self }:
    let
      lib = (import ./lib).extend (
        final: prev: {
          nixosSystem = import ./nixos-system.nix {
            lib = final;
            pkgs = self.legacyPackages.x86_64-linux;
          };
        }
      );
    in
    {
      inherit lib;
      legacyPackages.x86_64-linux = import ./legacy-packages.nix { inherit lib; };
    };
}
