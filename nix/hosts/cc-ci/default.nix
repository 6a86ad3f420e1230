# A complete CI host: `nixos-rebuild switch --flake .#cc-ci`.
#
# Replace hardware.nix with the machine's own (nixos-generate-config), the domain
# names with yours, and place the two secrets (sops-nix, agenix or by hand) at the
# paths below; they never enter the Nix store.
{ ... }:
{
  imports = [ ./hardware.nix ];

  networking.hostName = "cc-ci";
  # nginx serves the run pages; the webhook socket stays on loopback behind it.
  networking.firewall.allowedTCPPorts = [ 80 ];
  system.stateVersion = "26.05";

  services.cc-ci = {
    enable = true;
    gitea.tokenFile = "/run/secrets/cc-ci/gitea-token";
    recipes.hello = ./ci/recipes/hello;
    janitor.calendar = "*:0/15";
    swarm = {
      addressPools = [ "10.128.0.0/12" ];
      subnetSize = 24;
    };
    proxyNetwork.subnet = "10.96.0.0/16";
    runPages = {
      enable = true;
      virtualHost = "ci.example.org";
    };
    settings = {
      runner = {
        domain = "ci.example.org";
        deadline_min = 60;
        secrets_dirs = [ "/var/lib/cc-ci/secrets" ];
      };
      gitea = {
        url = "https://git.example.org";
        bot_user = "cc-ci-bot";
      };
      trigger = {
        org = "coop-cloud";
        allow = [ "someone" ];
      };
      poll = {
        interval_s = 30;
        discovery = "per-repo";
      };
      report.base_url = "http://ci.example.org/runs";
      repos = [
        {
          repo = "coop-cloud/hello";
          recipe = "hello";
        }
      ];
    };
  };
}
