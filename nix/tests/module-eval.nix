# The module under the real NixOS module system: the 14-service example evaluates, its
# assertions hold, and its config file builds (building it runs `snirouter check`).
{ pkgs, self }:
let
  errorPages = pkgs.runCommand "snirouter-error-pages" { } ''
    mkdir -p $out
    for code in 404 500 502 503 504; do echo "error $code" > $out/$code.html; done
  '';
  nixos = pkgs.nixos {
    imports = [
      self.nixosModules.default
      (import ./eval/example.nix { inherit errorPages; })
    ];
    boot.isContainer = true;
    system.stateVersion = "25.05";
  };
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) nixos.config.assertions);
  config = nixos.config.environment.etc."snirouter/config.toml".source;
in
assert pkgs.lib.assertMsg (failed == [ ]) (builtins.concatStringsSep "\n" failed);
pkgs.runCommand "snirouter-module-eval" { } ''
  grep -q '^\[services.grafana\]' ${config}
  cp ${config} $out
''
