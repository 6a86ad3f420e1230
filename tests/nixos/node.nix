# The cc-ci host of the VM tests: the flake's module, the abra test double, the
# example recipes (repositories in the store, CI files in /etc/cc-ci/recipes), and
# an app domain of the tests' own (*.vm.test).
{ self, examples }:
{ lib, ... }:
{
  imports = [ self.nixosModules.default ];
  virtualisation = {
    memorySize = 3072;
    diskSize = 8192;
    cores = 2;
  };
  services.cc-ci = {
    enable = true;
    abra.package = examples.abra;
    poller.enable = lib.mkDefault false;
    recipes.hello = "${examples.ciRecipes}/hello";
    settings.runner = {
      recipes_dir = "${examples.repos}";
      domain = "vm.test";
    };
  };
}
