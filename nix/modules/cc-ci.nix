# services.cc-ci: the cc-ci host (poller, runner, janitor) on NixOS.
#
# The units are the files in the repository's units/, installed by the package
# (systemd.packages); this module only adds drop-ins for what NixOS must set: the
# binary's store path in ExecStart, the credentials' sources, PATH (docker, abra,
# git), the janitor's calendar, and the units' enablement. The config file is
# rendered from `settings` (RFC 42, every key of docs/configuration.md reachable)
# and checked at build time by the binary's own loader (`cc-ci check-config`), so a
# key the loader does not know fails the build, naming the key.
#
# Every option is documented in docs/install.md. The offline checks in
# tests/nixos/ evaluate this module against strict declarations of the NixOS
# options it sets.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.cc-ci;
  inherit (lib)
    mkEnableOption
    mkPackageOption
    mkOption
    mkIf
    mkMerge
    mkDefault
    types
    literalExpression
    ;

  settingsFormat = pkgs.formats.toml { };

  # Per-recipe CI files live beside the config (Config::load takes the directory of
  # the canonical config path), so the config is a copy in /etc, not a symlink into
  # the store.
  configDir = "/etc/cc-ci";
  configPath = "${configDir}/cc-ci.toml";
  stateDir = "/var/lib/cc-ci";

  cc-ci = lib.getExe' cfg.package "cc-ci";
  credential = unit: name: "/run/credentials/${unit}/${name}";
  pollerUnit = "cc-ci-poller.service";

  rendered = settingsFormat.generate "cc-ci.toml" cfg.settings;

  # The binary's one loader checks the rendered file with the recipe CI files beside
  # it, as a run would: an unknown key or a bad value fails the build here.
  checkedConfig =
    pkgs.runCommand "cc-ci.toml"
      {
        nativeBuildInputs = [ cfg.package ];
        preferLocalBuild = true;
      }
      ''
        mkdir -p etc/recipes
        cp ${rendered} etc/cc-ci.toml
        ${lib.concatStrings (
          lib.mapAttrsToList (
            recipe: dir: "ln -s ${dir} etc/recipes/${lib.escapeShellArg recipe}\n"
          ) cfg.recipes
        )}
        cc-ci check-config --config etc/cc-ci.toml
        cp etc/cc-ci.toml "$out"
      '';

  externalFile = types.nullOr (
    types.pathWith {
      inStore = false;
      absolute = true;
    }
  );

  # "10.200.0.0/16" -> 16
  prefixLength = cidr: lib.toInt (lib.last (lib.splitString "/" cidr));
  isCidr = s: builtins.match "[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}" s != null;

  pollerEnabled = cfg.enable && cfg.poller.enable;
  webhookEnabled = pollerEnabled && cfg.webhook.enable;
in
{
  options.services.cc-ci = {
    enable = mkEnableOption "cc-ci, continuous integration for Co-op Cloud recipes";

    package = mkPackageOption pkgs "cc-ci" { };

    abra.package = mkOption {
      type = types.nullOr types.package;
      default = pkgs.abra or null;
      defaultText = literalExpression "pkgs.abra or null";
      description = ''
        The pinned abra the runner calls (`runner.abra` is set to its `bin/abra`).
        Defaults to nixpkgs' own `abra` when the pinned nixpkgs has one; otherwise
        it must be set.
      '';
    };

    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = literalExpression ''
        {
          runner.domain = "ci.example.org";
          gitea = { url = "https://git.example.org"; bot_user = "cc-ci-bot"; };
          trigger.org = "coop-cloud";
          repos = [ { repo = "coop-cloud/hello"; recipe = "hello"; } ];
        }
      '';
      description = ''
        The cc-ci config file, `/etc/cc-ci/cc-ci.toml`, as Nix: every table and key
        of docs/configuration.md. The module sets `runner.abra`, `state.dir`,
        `launch.systemctl`, `gitea.token_file` and `webhook.secret_file` (with
        `mkDefault`); the rendered file is checked by `cc-ci check-config` at build
        time, so an unknown key fails the build with the nearest valid key.
      '';
    };

    recipes = mkOption {
      type = types.attrsOf types.path;
      default = { };
      example = literalExpression "{ hello = ./ci/recipes/hello; }";
      description = ''
        Per-recipe CI files (`meta.toml`, overlays, hooks, custom tests), one
        directory per recipe, installed as `/etc/cc-ci/recipes/<recipe>`. Each
        `meta.toml` is checked at build time with the config.
      '';
    };

    gitea.tokenFile = mkOption {
      type = externalFile;
      default = null;
      example = "/run/secrets/cc-ci/gitea-token";
      description = ''
        File holding the bot's Gitea API token, outside the Nix store (sops-nix,
        agenix, or a file you place). Passed to the poller with `LoadCredential`;
        `gitea.token_file` points at `/run/credentials/cc-ci-poller.service/gitea-token`.
      '';
    };

    poller.enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run `cc-ci-poller.service` (needs `settings.gitea` and `gitea.tokenFile`).
        Without it the host only runs what an operator starts by hand.
      '';
    };

    webhook = {
      enable = mkEnableOption "the webhook push path (cc-ci-hook.socket); polling stays primary";
      secretFile = mkOption {
        type = externalFile;
        default = null;
        example = "/run/secrets/cc-ci/webhook-secret";
        description = ''
          File holding the webhook's shared secret, outside the Nix store; passed
          with `LoadCredential`, `webhook.secret_file` points at
          `/run/credentials/cc-ci-poller.service/webhook-secret`.
        '';
      };
      listen = mkOption {
        type = types.str;
        default = "127.0.0.1:8089";
        description = ''
          Where `cc-ci-hook.socket` listens (its `ListenStream=`). Put a TLS reverse
          proxy in front of it.
        '';
      };
    };

    janitor = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Run `cc-ci-janitor.timer`, which reaps what dead runs left behind.";
      };
      calendar = mkOption {
        type = types.str;
        default = "*:0/15";
        description = "When the janitor runs (`OnCalendar=` of cc-ci-janitor.timer, systemd.time(7)).";
      };
    };

    swarm = {
      advertiseAddress = mkOption {
        type = types.str;
        default = "127.0.0.1";
        description = "`docker swarm init --advertise-addr`: the single-node swarm's address.";
      };
      addressPools = mkOption {
        type = types.nonEmptyListOf types.str;
        default = [ "10.128.0.0/12" ];
        description = ''
          `--default-addr-pool`: where the swarm's overlay networks (each stack's
          own network) take their subnets. Fixed when the swarm is initialised:
          changing it later needs `docker swarm leave --force` first.
        '';
      };
      subnetSize = mkOption {
        type = types.ints.between 8 29;
        default = 24;
        description = "`--default-addr-pool-mask-length`: the prefix length of each network cut from `addressPools`.";
      };
    };

    proxyNetwork = {
      name = mkOption {
        type = types.str;
        default = "proxy";
        description = "The attachable overlay network recipes attach their `app` service to (Co-op Cloud's traefik network).";
      };
      subnet = mkOption {
        type = types.str;
        default = "10.96.0.0/16";
        description = ''
          Its subnet. Every service of every deployed recipe takes addresses here
          (a /24 ran out in the older system), so keep it large and outside
          `swarm.addressPools`.
        '';
      };
    };

    runPages = {
      enable = mkEnableOption "serving run pages (`/var/lib/cc-ci/runs`) read-only with nginx";
      virtualHost = mkOption {
        type = types.str;
        default = "";
        example = "ci.example.org";
        description = ''
          The nginx virtual host that serves `/runs/<run-id>/`. Set
          `settings.report.base_url` to `https://<virtualHost>/runs` so the
          PR comments link there.
        '';
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = cfg.abra.package != null;
          message = "services.cc-ci.abra.package is null: this nixpkgs has no `abra` package; set services.cc-ci.abra.package to the pinned abra.";
        }
        {
          assertion =
            !pollerEnabled
            || (
              (cfg.settings.gitea or { }) ? url
              && (cfg.settings.gitea or { }) ? bot_user
              && cfg.gitea.tokenFile != null
            );
          message = "services.cc-ci.poller.enable needs services.cc-ci.settings.gitea (url, bot_user) and services.cc-ci.gitea.tokenFile; set them or services.cc-ci.poller.enable = false.";
        }
        {
          assertion = !(cfg.webhook.enable && !pollerEnabled);
          message = "services.cc-ci.webhook.enable needs services.cc-ci.poller.enable: the webhook is served by the poller.";
        }
        {
          assertion = !webhookEnabled || cfg.webhook.secretFile != null;
          message = "services.cc-ci.webhook.enable needs services.cc-ci.webhook.secretFile (the shared secret of Gitea's webhook).";
        }
        {
          assertion = !(cfg.settings ? webhook) || webhookEnabled;
          message = "services.cc-ci.settings.webhook is set but services.cc-ci.webhook.enable is false: the poller would refuse to start; enable the webhook or drop settings.webhook.";
        }
        {
          assertion = !cfg.runPages.enable || cfg.runPages.virtualHost != "";
          message = "services.cc-ci.runPages.enable needs services.cc-ci.runPages.virtualHost (the nginx virtual host serving /runs/).";
        }
        {
          assertion = lib.all isCidr (cfg.swarm.addressPools ++ [ cfg.proxyNetwork.subnet ]);
          message = "services.cc-ci.swarm.addressPools and services.cc-ci.proxyNetwork.subnet must be IPv4 CIDRs like 10.128.0.0/12.";
        }
        {
          assertion = lib.all (
            pool: isCidr pool && prefixLength pool < cfg.swarm.subnetSize
          ) cfg.swarm.addressPools;
          message = "every services.cc-ci.swarm.addressPools entry must be larger than one network: its prefix length must be below services.cc-ci.swarm.subnetSize (${toString cfg.swarm.subnetSize}).";
        }
        {
          assertion = lib.all (
            recipe: builtins.match "[A-Za-z0-9][A-Za-z0-9._-]*" recipe != null
          ) (lib.attrNames cfg.recipes);
          message = "services.cc-ci.recipes names must be recipe names (letters, digits, '.', '_', '-'), each a directory name under /etc/cc-ci/recipes.";
        }
      ];

      services.cc-ci.settings = {
        runner.abra = mkIf (cfg.abra.package != null) (mkDefault (lib.getExe' cfg.abra.package "abra"));
        state.dir = mkDefault stateDir;
        launch.systemctl = mkDefault (lib.getExe' config.systemd.package "systemctl");
        gitea = mkIf (cfg.gitea.tokenFile != null) {
          token_file = mkDefault (credential pollerUnit "gitea-token");
        };
        webhook = mkIf webhookEnabled {
          secret_file = mkDefault (credential pollerUnit "webhook-secret");
        };
      };

      environment.etc =
        {
          # A copy, not a symlink: the recipe files are looked up beside it.
          "cc-ci/cc-ci.toml" = {
            source = checkedConfig;
            mode = "0444";
          };
        }
        // lib.mapAttrs' (
          recipe: dir: lib.nameValuePair "cc-ci/recipes/${recipe}" { source = dir; }
        ) cfg.recipes;

      environment.systemPackages = [ cfg.package ];

      # The shipped units, as they are in units/; what follows are drop-ins.
      systemd.packages = [ cfg.package ];

      # Each directory of runner.secrets_dirs must exist, or every run stops.
      systemd.tmpfiles.rules = map (dir: "d ${dir} 0700 root root -") (
        cfg.settings.runner.secrets_dirs or [ ]
      );

      systemd.services."cc-ci-runner@" = {
        overrideStrategy = "asDropin";
        # A switch must never restart (cancel) a run.
        restartIfChanged = false;
        path = [
          config.virtualisation.docker.package
          pkgs.git
          pkgs.bash # recipe hooks and custom tests
        ] ++ lib.optional (cfg.abra.package != null) cfg.abra.package;
        after = [ "cc-ci-swarm.service" ];
        requires = [ "cc-ci-swarm.service" ];
        serviceConfig.ExecStart = [
          ""
          "${cc-ci} run --config ${configPath} --instance %I"
        ];
      };

      # Docker with a single-node swarm and the recipes' `proxy` network.
      virtualisation.docker.enable = true;

      systemd.services.cc-ci-swarm = {
        description = "cc-ci: single-node Docker swarm and the ${cfg.proxyNetwork.name} network";
        wantedBy = [ "multi-user.target" ];
        after = [ "docker.service" ];
        requires = [ "docker.service" ];
        path = [ config.virtualisation.docker.package ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        script = ''
          if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
            docker swarm init --advertise-addr ${lib.escapeShellArg cfg.swarm.advertiseAddress} \
              ${lib.concatMapStringsSep " " (p: "--default-addr-pool ${lib.escapeShellArg p}") cfg.swarm.addressPools} \
              --default-addr-pool-mask-length ${toString cfg.swarm.subnetSize}
          fi
          if ! docker network inspect ${lib.escapeShellArg cfg.proxyNetwork.name} >/dev/null 2>&1; then
            docker network create --driver overlay --attachable \
              --subnet ${lib.escapeShellArg cfg.proxyNetwork.subnet} ${lib.escapeShellArg cfg.proxyNetwork.name}
          fi
        '';
      };
    }

    (mkIf pollerEnabled {
      systemd.services.cc-ci-poller = {
        overrideStrategy = "asDropin";
        wantedBy = [ "multi-user.target" ];
        restartTriggers = [ checkedConfig ];
        serviceConfig = {
          ExecStart = [
            ""
            "${cc-ci} poll --config ${configPath}"
          ];
          LoadCredential =
            [
              ""
              "gitea-token:${toString cfg.gitea.tokenFile}"
            ]
            ++ lib.optional webhookEnabled "webhook-secret:${toString cfg.webhook.secretFile}";
        };
      };
    })

    (mkIf webhookEnabled {
      systemd.services.cc-ci-poller.serviceConfig.Sockets = [ "cc-ci-hook.socket" ];
      systemd.sockets.cc-ci-hook = {
        overrideStrategy = "asDropin";
        wantedBy = [ "sockets.target" ];
        socketConfig.ListenStream = [
          ""
          cfg.webhook.listen
        ];
      };
    })

    (mkIf cfg.janitor.enable {
      systemd.services.cc-ci-janitor = {
        overrideStrategy = "asDropin";
        # The janitor must not run while the swarm is not up (it would see nothing).
        after = [ "cc-ci-swarm.service" ];
        requires = [ "cc-ci-swarm.service" ];
        path = [ config.virtualisation.docker.package ];
        serviceConfig.ExecStart = [
          ""
          "${cc-ci} janitor --config ${configPath}"
        ];
      };
      systemd.timers.cc-ci-janitor = {
        overrideStrategy = "asDropin";
        wantedBy = [ "timers.target" ];
        timerConfig.OnCalendar = [
          ""
          cfg.janitor.calendar
        ];
      };
    })

    (mkIf cfg.runPages.enable {
      # Read-only: nginx may list and read run directories, nothing else.
      systemd.tmpfiles.rules = [
        "a+ ${stateDir} - - - - u:${config.services.nginx.user}:--x"
        "A+ ${stateDir}/runs - - - - u:${config.services.nginx.user}:r-X,d:u:${config.services.nginx.user}:r-X"
      ];
      services.nginx = {
        enable = true;
        virtualHosts.${cfg.runPages.virtualHost}.locations."/runs/" = {
          alias = "${stateDir}/runs/";
          extraConfig = ''
            autoindex on;
            limit_except GET HEAD { deny all; }
            types { text/plain log md; application/json json; image/svg+xml svg; text/xml xml; }
          '';
        };
      };
    })
  ]);
}
