# `systemctl start cc-ci-runner@hello` on a NixOS host climbs the ladder on the
# VM's real single-node swarm (images built with dockerTools, no registry) to level
# 5; `systemctl stop` in the middle of a run tears it down and leaves nothing on the
# swarm, no lock held and results.json saying `cancelled`.
{ self }:
{ pkgs, ... }:
let
  examples = import ./examples.nix { inherit pkgs; };
in
{
  name = "cc-ci-runner";
  nodes.machine = import ./node.nix { inherit self examples; };

  testScript = ''
    import json

    def results(run_dir):
        return json.loads(machine.succeed(f"cat {run_dir}/results.json"))

    def newest_run():
        return machine.succeed("ls -d /var/lib/cc-ci/runs/* | sort | tail -n 1").strip()

    def leftovers():
        # Everything of the tests' app domain (*.vm.test) on the swarm.
        return machine.succeed(
            "{ docker stack ls --format '{{.Name}}'; docker service ls --format '{{.Name}}';"
            "  docker volume ls --format '{{.Name}}'; docker secret ls --format '{{.Name}}';"
            "  docker network ls --format '{{.Name}}'; } | grep _vm_test || true"
        ).strip()

    machine.wait_for_unit("cc-ci-swarm.service")
    with subtest("the swarm is up with the proxy network from its address pool"):
        assert machine.succeed("docker info --format '{{.Swarm.LocalNodeState}}'").strip() == "active"
        subnet = machine.succeed(
            "docker network inspect proxy --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}'"
        ).strip()
        assert subnet == "10.96.0.0/16", subnet
        assert machine.succeed("docker network inspect proxy --format '{{.Attachable}}'").strip() == "true"

    ${examples.loadImages examples.images}

    with subtest("a run started by systemctl reaches level 5"):
        machine.succeed("systemctl start cc-ci-runner@hello.service")
        machine.wait_until_fails("systemctl is-active --quiet cc-ci-runner@hello.service", timeout=900)
        r = results(newest_run())
        assert r["status"] == "completed", r
        assert r["level"] == 5, r
        assert r["invariants"]["clean_teardown"] is True, r
        assert leftovers() == "", leftovers()
        machine.succeed("test -f /var/lib/cc-ci/runs/*/junit.xml")

    with subtest("systemctl stop in the middle of a run leaves nothing"):
        before = newest_run()
        machine.succeed("systemctl start cc-ci-runner@hello.service")
        machine.wait_until_succeeds("docker stack ls --format '{{.Name}}' | grep -q _vm_test", timeout=300)
        machine.succeed("systemctl stop cc-ci-runner@hello.service")
        machine.fail("systemctl is-active --quiet cc-ci-runner@hello.service")
        run = newest_run()
        assert run != before
        r = results(run)
        assert r["cause"] == "cancelled", r
        assert leftovers() == "", leftovers()
        # No lock is held: a non-blocking flock on every lock file succeeds.
        machine.succeed(
            "for l in /run/cc-ci/locks/*; do [ -e \"$l\" ] || continue;"
            " ${pkgs.util-linux}/bin/flock -n \"$l\" true; done"
        )
  '';
}
