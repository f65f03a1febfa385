# The NixOS options nix/module.nix sets, declared as nixpkgs declares them (the types of
# nixos/modules/{misc/assertions,config/users-groups,system/etc/etc,config/system-path,
# services/networking/firewall,system/boot/systemd,services/networking/tailscale,
# config/networking,tasks/network-interfaces,security/acme/default,
# services/logging/logrotate,services/security/fail2ban}.nix),
# reduced to the sub-options the module uses. A submodule without an option for a key
# the module sets fails the evaluation, as an unknown option does in NixOS.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  # systemd's unit option values (nixos/lib/systemd-types.nix `unitOption`).
  unitOption = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
    (types.listOf (
      types.oneOf [
        types.bool
        types.int
        types.str
        types.path
      ]
    ))
  ];
  strList = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  user = types.submodule {
    options = {
      isSystemUser = mkOption {
        type = types.bool;
        default = false;
      };
      group = mkOption {
        type = types.str;
        default = "";
      };
      description = mkOption {
        type = types.passwdEntry types.str;
        default = "";
      };
      extraGroups = strList;
    };
  };
  # nixos/modules/security/acme: the per-certificate options the module reads or sets.
  acmeCert = types.submodule (
    { name, ... }:
    {
      options = {
        domain = mkOption {
          type = types.str;
          default = name;
        };
        directory = mkOption {
          type = types.str;
          default = "/var/lib/acme/${name}";
        };
        group = mkOption {
          type = types.str;
          default = "acme";
        };
        dnsProvider = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
        reloadServices = strList;
      };
    }
  );
  group = types.submodule {
    options.gid = mkOption {
      type = types.nullOr types.int;
      default = null;
    };
  };
  etc = types.submodule {
    options.source = mkOption { type = types.path; };
  };
  service = types.submodule {
    options = {
      description = mkOption {
        type = types.singleLineStr;
        default = "";
      };
      wantedBy = strList;
      after = strList;
      wants = strList;
      reloadTriggers = mkOption {
        type = types.listOf unitOption;
        default = [ ];
      };
      restartTriggers = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      serviceConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
    };
  };
  timer = types.submodule {
    options = {
      description = mkOption {
        type = types.singleLineStr;
        default = "";
      };
      wantedBy = strList;
      partOf = strList;
      after = strList;
      timerConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
    };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    users.users = mkOption {
      type = types.attrsOf user;
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf group;
      default = { };
    };
    environment.etc = mkOption {
      type = types.attrsOf etc;
      default = { };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    networking.hosts = mkOption {
      type = types.attrsOf (types.listOf types.str);
      default = { };
    };
    networking.enableIPv6 = mkOption {
      type = types.bool;
      default = true;
    };
    systemd.services = mkOption {
      type = types.attrsOf service;
      default = { };
    };
    systemd.timers = mkOption {
      type = types.attrsOf timer;
      default = { };
    };
    security.acme.certs = mkOption {
      type = types.attrsOf acmeCert;
      default = { };
    };
    # nixos/modules/services/logging/logrotate.nix (the freeform value type).
    services.logrotate.settings = mkOption {
      type = types.attrsOf (
        types.attrsOf (
          types.nullOr (
            types.oneOf [
              types.int
              types.bool
              types.str
              (types.listOf types.str)
            ]
          )
        )
      );
      default = { };
    };
    # nixos/modules/services/security/fail2ban.nix: enable, and a jail's settings.
    services.fail2ban.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.fail2ban.jails = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.settings = mkOption {
            type = types.attrsOf (
              types.oneOf [
                types.int
                types.str
                types.bool
              ]
            );
            default = { };
          };
        }
      );
      default = { };
    };
    # Options the documentation's examples set beside the module: Caddy (nixpkgs) and
    # tsnsrv (its own flake's module), both turned off when migrating.
    services.caddy.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.tsnsrv.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.tailscale.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.tailscale.permitCertUid = mkOption {
      type = types.nullOr types.nonEmptyStr;
      default = null;
    };
  };
}
