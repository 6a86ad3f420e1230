{
  description = "cc-ci: continuous integration for Co-op Cloud recipes";

  # A NixOS release branch; flake.lock pins the revision and its narHash.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      inherit (nixpkgs) lib;
      runNixOSTest = test: pkgs.testers.runNixOSTest (import test { inherit self; });
    in
    {
      packages.${system} = {
        cc-ci = pkgs.callPackage ./nix/pkgs/cc-ci.nix { };
        default = self.packages.${system}.cc-ci;
      };

      # The module, with the package of this flake as its default.
      nixosModules = {
        cc-ci =
          { pkgs, lib, ... }:
          {
            imports = [ ./nix/modules/cc-ci.nix ];
            services.cc-ci.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.cc-ci;
          };
        default = self.nixosModules.cc-ci;
      };

      # A complete CI host: `nixos-rebuild switch --flake .#cc-ci`.
      nixosConfigurations.cc-ci = lib.nixosSystem {
        modules = [
          self.nixosModules.default
          ./nix/hosts/cc-ci
          { nixpkgs.hostPlatform = system; }
        ];
      };

      # `nix flake check`: the package build (with its root-free, Docker-free tests)
      # and the NixOS VM tests.
      checks.${system} = {
        package = self.packages.${system}.cc-ci;
        poller = runNixOSTest ./tests/nixos/poller.nix;
        runner = runNixOSTest ./tests/nixos/runner.nix;
        janitor = runNixOSTest ./tests/nixos/janitor.nix;
      };

      devShells.${system}.default = pkgs.mkShell {
        inputsFrom = [ self.packages.${system}.cc-ci ];
        packages = [
          pkgs.clippy
          pkgs.rustfmt
          pkgs.docker
          pkgs.nixfmt
        ];
      };

      formatter.${system} = pkgs.nixfmt;
    };
}
