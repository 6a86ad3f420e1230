# Fixtures of the VM tests: the example recipes' images built with dockerTools (no
# registry, loaded with `docker load`), the example recipes as git repositories
# with release tags (as examples/build.sh makes them), and the abra TEST DOUBLE
# (tests/doubles/abra: abra performs its commands on the VM's real swarm; the real
# abra needs the network to fetch recipes).
{ pkgs }:
let
  inherit (pkgs) lib dockerTools;
  busybox = pkgs.pkgsStatic.busybox;

  # examples/build.sh's base image: static busybox, /tmp, /data, /run/secrets.
  base = dockerTools.buildImage {
    name = "ccci-example/base";
    tag = "busybox";
    copyToRoot = pkgs.runCommand "ccci-example-base" { } ''
      mkdir -p $out/bin $out/tmp $out/data $out/run/secrets
      cp ${busybox}/bin/busybox $out/bin/busybox
      for applet in $(${busybox}/bin/busybox --list); do
        [ -e $out/bin/$applet ] || ln -s busybox $out/bin/$applet
      done
      chmod 1777 $out/tmp
    '';
  };

  # examples/build.sh's IMAGES table: name, tag, environment.
  image =
    name: tag: env:
    dockerTools.buildImage {
      name = "ccci-example/${name}";
      inherit tag;
      fromImage = base;
      copyToRoot = pkgs.runCommand "ccci-example-${name}-${tag}" { } ''
        install -Dm644 ${../../examples/images/entrypoint.sh} $out/entrypoint.sh
      '';
      config = {
        Env = lib.mapAttrsToList (k: v: "${k}=${v}") env;
        Entrypoint = [
          "/bin/sh"
          "/entrypoint.sh"
        ];
        Labels = {
          "org.opencontainers.image.title" = "ccci-example/${name}";
          "org.opencontainers.image.version" = tag;
        };
      };
    };
  hello =
    tag: version:
    image "hello" tag {
      APP_NAME = "hello";
      APP_VERSION = version;
      REQUIRE_SECRET = "/run/secrets/admin_password";
    };
in
{
  images = [
    (hello "1.0.0" "1.0.0+1.0")
    (hello "1.1.0" "1.1.0+1.1")
    (hello "head" "head")
  ];

  # Load every image into the VM's engine.
  loadImages = lib.concatMapStrings (i: "machine.succeed('docker load < ${i}')\n");

  # examples/build.sh part (b) for hello: one commit per version directory, oldest
  # first, released ones tagged, `head` the newest untagged commit on main.
  repos = pkgs.runCommand "ccci-example-repos" { nativeBuildInputs = [ pkgs.git ]; } ''
    export GIT_AUTHOR_NAME="cc-ci examples" GIT_AUTHOR_EMAIL="examples@cc-ci.invalid"
    export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
    export HOME=$TMPDIR
    mkdir -p $out/hello
    cd $out/hello
    git init -q -b main
    i=0
    for v in 1.0.0+1.0 1.1.0+1.1 head; do
      i=$((i + 1))
      export GIT_AUTHOR_DATE="2026-01-0''${i}T12:00:00Z" GIT_COMMITTER_DATE="2026-01-0''${i}T12:00:00Z"
      git rm -rq --ignore-unmatch . >/dev/null
      cp -r ${../../examples/recipes/hello}/$v/. .
      chmod -R u+w .
      git add -A
      if [ $v = head ]; then
        git commit -q --allow-empty -m "hello: unreleased changes (head)"
      else
        git commit -q --allow-empty -m "hello: release $v"
        git tag -a "$v" -m "hello $v"
      fi
    done
  '';

  # CI-side files of the example recipes.
  ciRecipes = ../../examples/ci/recipes;

  abra = pkgs.runCommand "abra-test-double" { nativeBuildInputs = [ pkgs.makeWrapper ]; } ''
    install -Dm755 ${../doubles/abra} $out/bin/abra
    patchShebangs $out/bin/abra
    wrapProgram $out/bin/abra --prefix PATH : ${
      lib.makeBinPath [
        pkgs.bash
        pkgs.coreutils
        pkgs.gawk
        pkgs.gnused
        pkgs.gnugrep
        pkgs.findutils
        pkgs.git
        pkgs.docker
      ]
    }
  '';
}
