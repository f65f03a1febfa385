{
  description = "snirouter: TLS-terminating SNI/path router for one tailnet host";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      overlays.default = final: _prev: {
        snirouter = final.callPackage ./nix/package.nix { };
        snirouter-sim-tailscaled = final.callPackage ./nix/sim-tailscaled.nix { };
      };

      packages = forAllSystems (pkgs: rec {
        snirouter = pkgs.callPackage ./nix/package.nix { };
        sim-tailscaled = pkgs.callPackage ./nix/sim-tailscaled.nix { inherit snirouter; };
        default = snirouter;
      });

      # The module with this flake's build as the default package (no overlay needed).
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.snirouter.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        module-eval = import ./nix/tests/module-eval.nix { inherit pkgs self; };
        vm = import ./nix/tests/vm.nix { inherit pkgs self; };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
