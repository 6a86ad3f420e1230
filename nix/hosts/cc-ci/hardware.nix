# Placeholder hardware: replace with the output of `nixos-generate-config`.
{ ... }:
{
  boot.loader.grub.device = "/dev/vda";
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
}
