# The module's drop-ins against the unit files it extends, read from units/ as it
# is when the check runs (so a unit renamed, removed or changed there is caught):
#
# - every unit the module configures as a drop-in (overrideStrategy = "asDropin")
#   exists in units/;
# - every directive it resets and replaces (a list starting with "", as ExecStart)
#   is one the unit file has;
# - every other directive it sets is in the unit file too, or is one of the few
#   additions below, each with its reason.
{
  lib,
  config,
  unitsDir,
}:
let
  # Directives NixOS or the module add to a shipped unit although the unit file
  # does not have them.
  additions = {
    Environment = "PATH, from `path`: the store paths of docker, git, bash and abra (NixOS has no /usr/bin)";
    After = "ordering after cc-ci-swarm.service, the module's own swarm unit";
    Requires = "cc-ci-swarm.service, the module's own swarm unit";
    Sockets = "cc-ci-hook.socket, only with webhook.enable (the poller unit's comment says to add it)";
    X-Restart-Triggers = "NixOS only: restart the poller when its config changes";
    X-RestartIfChanged = "NixOS only: a switch never restarts (cancels) a run";
  };

  # "Key=Value" lines of a unit file (comments and section headers aside).
  directivesOf =
    file:
    let
      lines = lib.splitString "\n" (builtins.readFile file);
      keyOf = line: builtins.match "([A-Za-z][A-Za-z0-9-]*)=.*" line;
    in
    lib.unique (map (l: lib.head (keyOf l)) (lib.filter (l: keyOf l != null) lines));

  nonEmpty = v: v != [ ] && v != "" && v != { } && v != null;

  # The directives a NixOS unit definition turns into, as nixos/lib/systemd-lib.nix
  # renders them: section attrs as they are, the list options by their directive.
  directivesSet =
    kind: unit:
    let
      section = {
        service = unit.serviceConfig;
        socket = unit.socketConfig;
        timer = unit.timerConfig;
      }.${kind};
      mapped = lib.filterAttrs (_: nonEmpty) (
        {
          After = unit.after;
          Requires = unit.requires;
        }
        // lib.optionalAttrs (kind == "service") {
          Environment = unit.path;
          X-Restart-Triggers = unit.restartTriggers;
          X-RestartIfChanged = if unit.restartIfChanged then [ ] else [ false ];
          ExecStart = lib.optional (unit.script != "") "script";
        }
      );
    in
    unit.unitConfig // section // mapped;

  isReset = v: builtins.isList v && v != [ ] && lib.head v == "";

  checkUnit =
    kind: name: unit:
    let
      fileName = "${name}.${kind}";
      file = unitsDir + "/${fileName}";
      option = "systemd.${kind}s.\"${name}\"";
      inFile = directivesOf file;
      set = directivesSet kind unit;
      problems = lib.concatLists (
        lib.mapAttrsToList (
          key: value:
          if lib.elem key inFile then
            [ ]
          else if isReset value then
            [ "${option} replaces ${key}= (a reset to \"\" then a new value), but units/${fileName} has no ${key}=" ]
          else if additions ? ${key} then
            [ ]
          else
            [ "${option} sets ${key}=, which units/${fileName} does not have and which is not an expected addition" ]
        ) set
      );
    in
    if !builtins.pathExists file then
      throw "units/${fileName} does not exist, but the module configures ${option} as a drop-in for it"
    else if problems != [ ] then
      throw ("the module's drop-ins do not match units/:\n" + lib.concatMapStrings (p: "- ${p}\n") problems)
    else
      "units/${fileName}: ${lib.concatStringsSep " " (lib.sort lib.lessThan (lib.attrNames set))} (of ${toString (builtins.length inFile)} directives in the file)";

  dropinsOf =
    kind: lib.filterAttrs (_: u: u.overrideStrategy == "asDropin") config.systemd."${kind}s";
  checkKind = kind: lib.mapAttrsToList (checkUnit kind) (dropinsOf kind);
in
{
  report = checkKind "service" ++ checkKind "socket" ++ checkKind "timer";
}
