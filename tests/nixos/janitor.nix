# The janitor reaps what a killed run left behind: by its timer on a running host
# (`timer`, calendar every 20 s), and at boot after a reboot of the VM (`boot`,
# whose calendar is a year away, so only the boot run can have reaped).
{ self }:
{ pkgs, lib, ... }:
let
  examples = import ./examples.nix { inherit pkgs; };
  node = calendar: {
    imports = [ (import ./node.nix { inherit self examples; }) ];
    services.cc-ci.janitor.calendar = calendar;
  };
in
{
  name = "cc-ci-janitor";
  nodes = {
    timer = node "*:*:0/20";
    boot = node "yearly";
  };

  testScript = ''
    def stacks(m):
        return m.succeed("docker stack ls --format '{{.Name}}' | grep _vm_test || true").strip()

    def leftovers(m):
        return m.succeed(
            "{ docker stack ls --format '{{.Name}}'; docker volume ls --format '{{.Name}}';"
            "  docker secret ls --format '{{.Name}}'; docker network ls --format '{{.Name}}'; }"
            " | grep _vm_test || true"
        ).strip()

    def kill_a_run(m):
        # A run killed with SIGKILL (no teardown): its stack, volumes and secrets stay.
        m.succeed("systemctl start cc-ci-runner@hello.service")
        m.wait_until_succeeds("docker stack ls --format '{{.Name}}' | grep -q _vm_test", timeout=300)
        m.succeed("systemctl kill --signal=SIGKILL cc-ci-runner@hello.service")
        m.wait_until_fails("systemctl is-active --quiet cc-ci-runner@hello.service")
        assert stacks(m) != "", "the killed run left nothing to reap"

    start_all()
    for m in (timer, boot):
        m.wait_for_unit("cc-ci-swarm.service")
        ${lib.concatMapStrings (i: "m.succeed('docker load < ${i}')\n        ") examples.images}

    with subtest("the timer reaps a killed run's leftovers"):
        timer.succeed("systemctl is-active cc-ci-janitor.timer")
        kill_a_run(timer)
        timer.wait_until_succeeds("test -z \"$(docker stack ls --format '{{.Name}}' | grep _vm_test)\"", timeout=180)
        timer.wait_until_succeeds("test -z \"$(docker volume ls --format '{{.Name}}' | grep _vm_test)\"", timeout=120)
        assert leftovers(timer) == "", leftovers(timer)

    with subtest("the janitor at boot reaps what a run left before a reboot"):
        kill_a_run(boot)
        boot.shutdown()
        boot.start()
        boot.wait_for_unit("cc-ci-swarm.service")
        boot.wait_until_succeeds("test -z \"$(docker stack ls --format '{{.Name}}' | grep _vm_test)\"", timeout=300)
        boot.wait_until_succeeds("test -z \"$(docker volume ls --format '{{.Name}}' | grep _vm_test)\"", timeout=120)
        assert leftovers(boot) == "", leftovers(boot)
        # It was the boot run, not the calendar (a year away): the service ran this boot.
        ran = boot.succeed(
            "systemctl show cc-ci-janitor.service --property=ExecMainExitTimestampMonotonic --value"
        ).strip()
        assert ran not in ("", "0"), ran
  '';
}
