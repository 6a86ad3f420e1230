# The poller against a real Gitea (services.gitea) in the VM: an org `recipes` with
# a member (alice) and the bot, a non-member (mallory), and the recipe repository
# `recipes/hello` with a pull request. alice's `!testme` yields a run, a commit
# status and one PR comment edited in place; mallory's yields a refusal and no run.
# Everything is asserted on Gitea's API answers and the files the runner wrote.
{ self }:
{ pkgs, ... }:
let
  examples = import ./examples.nix { inherit pkgs; };
in
{
  name = "cc-ci-poller";
  nodes.machine =
    { config, ... }:
    {
      imports = [ (import ./node.nix { inherit self examples; }) ];
      services.gitea = {
        enable = true;
        settings = {
          server = {
            HTTP_PORT = 3000;
            ROOT_URL = "http://localhost:3000/";
            DOMAIN = "localhost";
          };
          service.DISABLE_REGISTRATION = true;
        };
      };
      environment.systemPackages = [
        pkgs.git
        pkgs.jq
        config.services.gitea.package
      ];
      services.cc-ci = {
        poller.enable = true;
        # Written by the test once Gitea has issued the bot's token.
        gitea.tokenFile = "/var/lib/cc-ci-test/gitea-token";
        settings = {
          gitea = {
            url = "http://localhost:3000";
            bot_user = "cc-ci-bot";
          };
          trigger.org = "recipes";
          poll.interval_s = 2;
          repos = [
            {
              repo = "recipes/hello";
              recipe = "hello";
            }
          ];
        };
      };
    };

  testScript =
    { nodes, ... }:
    ''
      import json

      api = "http://localhost:3000/api/v1"

      def gitea_cli(args):
          return machine.succeed(
              "su -l gitea -s /bin/sh -c "
              f"'GITEA_WORK_DIR=/var/lib/gitea gitea {args}'"
          )

      def call(method, path, token, body=None):
          data = f"-d '{json.dumps(body)}'" if body is not None else ""
          out = machine.succeed(
              f"curl -sf -X {method} -H 'Authorization: token {token}' "
              f"-H 'Content-Type: application/json' {data} {api}{path}"
          )
          return json.loads(out) if out.strip() else None

      def token_of(user):
          t = json.loads(machine.succeed(
              f"curl -sf -u {user}:secret-pw-123 -H 'Content-Type: application/json' "
              f"-d '{{\"name\": \"t-{user}\", \"scopes\": [\"write:organization\", \"write:repository\","
              f" \"write:issue\", \"write:user\", \"write:notification\"]}}' {api}/users/{user}/tokens"
          ))
          return t["sha1"]

      machine.wait_for_unit("gitea.service")
      machine.wait_for_open_port(3000)
      machine.wait_for_unit("cc-ci-swarm.service")
      ${examples.loadImages examples.images}

      with subtest("gitea: users, the org, the recipe repository and a pull request"):
          for user, admin in (("admin", True), ("cc-ci-bot", False), ("alice", False), ("mallory", False)):
              gitea_cli(
                  f"admin user create --username {user} --password secret-pw-123 "
                  f"--email {user}@example.org --must-change-password=false" + (" --admin" if admin else "")
              )
          admin, bot, alice, mallory = (token_of(u) for u in ("admin", "cc-ci-bot", "alice", "mallory"))
          call("POST", "/orgs", admin, {"username": "recipes"})
          owners = call("GET", "/orgs/recipes/teams", admin)[0]["id"]
          for user in ("alice", "cc-ci-bot"):
              call("PUT", f"/teams/{owners}/members/{user}", admin)
          call("POST", "/orgs/recipes/repos", admin, {"name": "hello"})
          machine.succeed(
              "cp -r ${examples.repos}/hello /tmp/hello && chmod -R u+w /tmp/hello && cd /tmp/hello"
              " && git push -q http://admin:secret-pw-123@localhost:3000/recipes/hello.git main --tags"
              " && git -c user.name=alice -c user.email=alice@example.org checkout -q -b change"
              " && echo change >> README.md"
              " && git -c user.name=alice -c user.email=alice@example.org commit -qam change"
              " && git push -q http://admin:secret-pw-123@localhost:3000/recipes/hello.git change"
          )
          pr = call("POST", "/repos/recipes/hello/pulls", alice,
                    {"head": "change", "base": "main", "title": "a change"})
          sha = pr["head"]["sha"]
          # A member: alice is in the org, mallory is not (204 / 404).
          machine.succeed(f"curl -sf -o /dev/null -H 'Authorization: token {bot}' {api}/orgs/recipes/members/alice")
          machine.fail(f"curl -sf -o /dev/null -H 'Authorization: token {bot}' {api}/orgs/recipes/members/mallory")

      with subtest("the poller starts with the bot's token as a credential"):
          machine.succeed(
              f"mkdir -p /var/lib/cc-ci-test && (umask 077; printf %s '{bot}' > /var/lib/cc-ci-test/gitea-token)"
          )
          machine.succeed("systemctl reset-failed cc-ci-poller.service; systemctl restart cc-ci-poller.service")
          machine.wait_for_unit("cc-ci-poller.service")

      with subtest("a member's !testme: a run, a commit status, one PR comment edited in place"):
          comment = call("POST", f"/repos/recipes/hello/issues/{pr['number']}/comments", alice, {"body": "!testme"})
          machine.wait_until_succeeds("ls /var/lib/cc-ci/requests/*.json", timeout=60)
          request = json.loads(machine.succeed("cat /var/lib/cc-ci/requests/*.json"))
          assert request["sha"] == sha and request["comment_id"] == comment["id"], request
          run_id = request["run_id"]
          machine.wait_until_succeeds(
              f"test -f /var/lib/cc-ci/runs/{run_id}/results.json"
              f" && jq -e '.status != \"running\"' /var/lib/cc-ci/runs/{run_id}/results.json", timeout=900
          )
          results = json.loads(machine.succeed(f"cat /var/lib/cc-ci/runs/{run_id}/results.json"))

          def final_status():
              statuses = call("GET", f"/repos/recipes/hello/statuses/{sha}", bot)
              return [s for s in statuses if s["context"] == "cc-ci" and s["status"] != "pending"]
          machine.wait_until_succeeds(
              f"curl -sf -H 'Authorization: token {bot}' {api}/repos/recipes/hello/statuses/{sha}"
              " | jq -e 'map(select(.context == \"cc-ci\" and .status != \"pending\")) | length > 0'",
              timeout=120,
          )
          assert final_status(), "no final commit status"
          statuses = call("GET", f"/repos/recipes/hello/statuses/{sha}", bot)
          assert any(s["status"] == "pending" for s in statuses if s["context"] == "cc-ci"), statuses

          comments = call("GET", f"/repos/recipes/hello/issues/{pr['number']}/comments", bot)
          ours = [c for c in comments if c["user"]["login"] == "cc-ci-bot" and f"<!-- cc-ci run={run_id} -->" in c["body"]]
          assert len(ours) == 1, comments
          # Posted when the run was launched, edited when it ended (whole seconds apart).
          assert ours[0]["updated_at"] > ours[0]["created_at"], ours[0]
          assert f"level {results['level']}/5" in ours[0]["body"], ours[0]["body"]
          assert f"level {results['level']}/5" in final_status()[-1]["description"], final_status()

      with subtest("a non-member's !testme: a refusal and no run"):
          runs_before = machine.succeed("ls /var/lib/cc-ci/requests | wc -l").strip()
          refused = call("POST", f"/repos/recipes/hello/issues/{pr['number']}/comments", mallory, {"body": "!testme"})
          machine.wait_until_succeeds(
              f"curl -sf -H 'Authorization: token {bot}' {api}/repos/recipes/hello/issues/{pr['number']}/comments"
              f" | jq -e 'map(select(.user.login == \"cc-ci-bot\" and (.body | contains(\"<!-- cc-ci refused={refused['id']} -->\")))) | length == 1'",
              timeout=60,
          )
          assert machine.succeed("ls /var/lib/cc-ci/requests | wc -l").strip() == runs_before
    '';
}
