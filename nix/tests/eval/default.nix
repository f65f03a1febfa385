# Evaluate nix/module.nix with the real nixpkgs module system (the vendored
# nixpkgs `lib`, ../shared/vendor/nixpkgs-lib/lib from the project root) and a stand-in
# for the few packages it uses:
#
#   nix-instantiate --eval --strict --json nix/tests/eval --argstr errorPages /some/dir -A toml
#
# `extraConfig` is one more module (the tests use it to provoke assertions); with
# `withExample = false` it is the only configuration (the documentation's examples are
# evaluated that way). Failing assertions abort the evaluation with their messages, as
# nixos-rebuild would.
{
  errorPages ? "/var/lib/snirouter-error-pages",
  extraConfig ? { },
  withExample ? true,
  nixpkgsLib ? ../../../../shared/vendor/nixpkgs-lib/lib,
}:
let
  lib = import nixpkgsLib;
  pkgs = import ./pkgs.nix { inherit lib; };
  eval = lib.evalModules {
    modules = [
      ../../module.nix
      ./nixos.nix
      extraConfig
    ]
    ++ lib.optional withExample (import ./example.nix { inherit errorPages; });
    specialArgs = { inherit pkgs; };
  };
  inherit (eval) config;
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  checked = config.environment.etc."snirouter/config.toml".source;
  result = {
    # The TOML file the service reads (/etc/snirouter/config.toml).
    toml = checked.configFile.text;
    # The build-time check the module runs on it.
    inherit (checked) buildCommand;
    unit = config.systemd.services.snirouter;
    heal = config.systemd.services.snirouter-services-heal or null;
    healTimer = config.systemd.timers.snirouter-services-heal or null;
    inherit (config.services.tailscale) permitCertUid;
    firewall = config.networking.firewall.allowedTCPPorts;
    hosts = config.networking.hosts;
    users = config.users.users;
    acme = config.security.acme.certs;
    logrotate = config.services.logrotate.settings;
    inherit (config.services) fail2ban;
    etc = builtins.attrNames config.environment.etc;
  };
in
if failed != [ ] then
  throw "Failed assertions:\n- ${builtins.concatStringsSep "\n- " failed}"
else
  result
