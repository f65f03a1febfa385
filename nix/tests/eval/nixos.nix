# Declarations of the NixOS options nix/module.nix sets, typed as in nixpkgs where it
# matters (permitCertUid, firewall ports, assertions); the rest merge like attribute sets.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  anyAttrs = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    users.users = anyAttrs;
    users.groups = anyAttrs;
    environment.etc = anyAttrs;
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    systemd.services = anyAttrs;
    services.tailscale.permitCertUid = mkOption {
      type = types.nullOr types.str;
      default = null;
    };
  };
}
