# Strict declarations of exactly the NixOS options that services.cc-ci and the
# example host set or read, so the module can be evaluated with nixpkgs' own
# lib.evalModules where nixpkgs (and so NixOS) cannot be downloaded.
#
# No freeformType anywhere except where NixOS itself is freeform (docker's daemon
# settings): a misspelled option fails here as it would on NixOS. Each declaration
# names the NixOS file it mirrors (nixpkgs, nixos/...), with the types NixOS gives
# them or narrower ones that accept every value the module sets.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  # Mirrors `mkOption` of the NixOS file `file`; the description names that file.
  mirror =
    file: type: extra:
    mkOption (
      {
        inherit type;
        description = "mirrors nixos/${file}";
      }
      // extra
    );

  # nixos/lib/systemd-unit-options.nix: unitOption (an atom or a list of atoms)
  unitAtom = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
  ];
  unitOption = types.either unitAtom (types.listOf unitAtom);
  unitSection = types.attrsOf unitOption;
  unitNames = types.listOf types.str;
  unitFile = "lib/systemd-unit-options.nix";

  # nixos/lib/systemd-unit-options.nix: sharedOptions + commonUnitOptions, the
  # fields of a unit the module sets.
  commonUnit = {
    overrideStrategy = mirror unitFile (types.enum [
      "asDropinIfExists"
      "asDropin"
    ]) { default = "asDropinIfExists"; };
    description = mirror unitFile types.str { default = ""; };
    wantedBy = mirror unitFile unitNames { default = [ ]; };
    after = mirror unitFile unitNames { default = [ ]; };
    requires = mirror unitFile unitNames { default = [ ]; };
    unitConfig = mirror unitFile unitSection { default = { }; };
  };

  # nixos/lib/systemd-unit-options.nix: serviceOptions (stage 2)
  service = types.submodule {
    options = commonUnit // {
      path = mirror unitFile (types.listOf (types.either types.package types.str)) { default = [ ]; };
      serviceConfig = mirror unitFile unitSection { default = { }; };
      script = mirror unitFile types.lines { default = ""; };
      restartTriggers = mirror unitFile (types.listOf types.unspecified) { default = [ ]; };
      restartIfChanged = mirror unitFile types.bool { default = true; };
    };
  };

  # nixos/lib/systemd-unit-options.nix: socketOptions
  socket = types.submodule {
    options = commonUnit // {
      socketConfig = mirror unitFile unitSection { default = { }; };
      listenStreams = mirror unitFile (types.listOf types.str) { default = [ ]; };
    };
  };

  # nixos/lib/systemd-unit-options.nix: timerOptions
  timer = types.submodule {
    options = commonUnit // {
      timerConfig = mirror unitFile unitSection { default = { }; };
    };
  };

  # nixos/modules/system/etc/etc.nix: environment.etc.<name>
  etcEntry = types.submodule {
    options = {
      source = mirror "modules/system/etc/etc.nix" types.path { };
      mode = mirror "modules/system/etc/etc.nix" types.str { default = "symlink"; };
    };
  };

  # nixos/modules/services/web-servers/nginx/location-options.nix
  nginxLocation = types.submodule {
    options = {
      alias = mirror "modules/services/web-servers/nginx/location-options.nix" (types.nullOr types.path) {
        default = null;
      };
      extraConfig = mirror "modules/services/web-servers/nginx/location-options.nix" types.lines {
        default = "";
      };
    };
  };

  # nixos/modules/services/web-servers/nginx/vhost-options.nix
  nginxVhost = types.submodule {
    options.locations = mirror "modules/services/web-servers/nginx/vhost-options.nix" (types.attrsOf nginxLocation) {
      default = { };
    };
  };

  # nixos/modules/tasks/filesystems.nix: fileSystems.<name>
  fileSystem = types.submodule {
    options = {
      device = mirror "modules/tasks/filesystems.nix" (types.nullOr types.str) { default = null; };
      fsType = mirror "modules/tasks/filesystems.nix" types.str { default = "auto"; };
    };
  };
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mirror "modules/misc/assertions.nix" (types.listOf (
      types.submodule {
        options = {
          assertion = mkOption { type = types.bool; };
          message = mkOption { type = types.str; };
        };
      }
    )) { default = [ ]; };

    environment = {
      etc = mirror "modules/system/etc/etc.nix" (types.attrsOf etcEntry) { default = { }; };
      systemPackages = mirror "modules/config/system-path.nix" (types.listOf types.package) {
        default = [ ];
      };
    };

    systemd = {
      package = mirror "modules/system/boot/systemd.nix" types.package { default = pkgs.systemd; };
      packages = mirror "modules/system/boot/systemd.nix" (types.listOf types.package) { default = [ ]; };
      services = mirror "modules/system/boot/systemd.nix" (types.attrsOf service) { default = { }; };
      sockets = mirror "modules/system/boot/systemd.nix" (types.attrsOf socket) { default = { }; };
      timers = mirror "modules/system/boot/systemd.nix" (types.attrsOf timer) { default = { }; };
      tmpfiles.rules = mirror "modules/system/boot/systemd/tmpfiles.nix" (types.listOf types.str) {
        default = [ ];
      };
    };

    virtualisation.docker = {
      enable = mirror "modules/virtualisation/docker.nix" types.bool { default = false; };
      package = mirror "modules/virtualisation/docker.nix" types.package { default = pkgs.docker; };
    };

    services.nginx = {
      enable = mirror "modules/services/web-servers/nginx/default.nix" types.bool { default = false; };
      user = mirror "modules/services/web-servers/nginx/default.nix" types.str { default = "nginx"; };
      virtualHosts = mirror "modules/services/web-servers/nginx/default.nix" (types.attrsOf nginxVhost) {
        default = { };
      };
    };

    # What the example host (nix/hosts/cc-ci) sets besides services.cc-ci.
    networking = {
      hostName = mirror "modules/tasks/network-interfaces.nix" types.str { default = "nixos"; };
      firewall.allowedTCPPorts = mirror "modules/services/networking/firewall.nix" (types.listOf types.port) {
        default = [ ];
      };
    };
    system.stateVersion = mirror "modules/misc/version.nix" types.str { };
    boot.loader.grub.device = mirror "modules/system/boot/loader/grub/grub.nix" types.str { default = ""; };
    fileSystems = mirror "modules/tasks/filesystems.nix" (types.attrsOf fileSystem) { default = { }; };
    # Set by the flake's nixosConfigurations.cc-ci.
    # (NixOS derives its default from nixpkgs.system.)
    nixpkgs.hostPlatform = mirror "modules/misc/nixpkgs.nix" types.str { default = "x86_64-linux"; };
  };
}
