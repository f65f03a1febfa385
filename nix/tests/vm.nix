# NixOS VM test: the module on a machine with two HTTP backends and the test kit's simulated
# tailscaled in place of the real one; curl over TLS with the simulator's CA.
#
#   nix build .#checks.x86_64-linux.vm
#
# Not run in this repository's CI (no KVM, no nixpkgs); written to be run by users with Nix.
{ pkgs, self }:
let
  suffix = "tailnet-test.ts.net";
  ca = "/run/tailscale/ca.pem";
  curl =
    name:
    "curl --fail --silent --show-error --cacert ${ca} --resolve ${name}.${suffix}:443:127.0.0.1 https://${name}.${suffix}/";
  backend =
    port: text:
    let
      root = pkgs.writeTextDir "index.html" text;
    in
    {
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        ExecStart = "${pkgs.python3}/bin/python3 -m http.server ${toString port} --bind 127.0.0.1 --directory ${root}";
        DynamicUser = true;
      };
    };
in
pkgs.testers.runNixOSTest {
  name = "snirouter";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];

      environment.systemPackages = [ pkgs.curl ];

      systemd.services.backend-grafana = backend 3000 "backend grafana";
      systemd.services.backend-jellyfin = backend 3001 "backend jellyfin";

      # Stands in for tailscaled: same unit name (the router is ordered after it), same
      # socket path, CertDomains = storage + the two services. The real tailscaled runs as
      # root and honours services.tailscale.permitCertUid; the simulator has no flag for
      # that, but like tailscaled it gives certificates to its own uid, so it runs as the
      # router's user.
      systemd.services.tailscaled = {
        wantedBy = [ "multi-user.target" ];
        before = [ "snirouter.service" ];
        serviceConfig = {
          ExecStart = "${
            self.packages.${pkgs.stdenv.hostPlatform.system}.sim-tailscaled
          }/bin/snirouter-sim-tailscaled --socket /run/tailscale/tailscaled.sock --suffix ${suffix} --service grafana --service jellyfin --write-ca ${ca}";
          User = "snirouter";
          RuntimeDirectory = "tailscale";
          RuntimeDirectoryMode = "0755";
        };
      };

      services.snirouter = {
        enable = true;
        openFirewall = true;
        settings = {
          listen.https = [ "0.0.0.0:443" ];
          tailscale.socket = "/run/tailscale/tailscaled.sock";
        };
        services = {
          grafana.port = 3000;
          jellyfin.port = 3001;
        };
      };
    };

  testScript = ''
    machine.wait_for_unit("tailscaled.service")
    machine.wait_for_unit("backend-grafana.service")
    machine.wait_for_unit("backend-jellyfin.service")
    machine.wait_for_unit("snirouter.service")
    machine.wait_for_open_port(443)

    with subtest("TLS handshake and routing by SNI for both services"):
        machine.wait_until_succeeds("${curl "grafana"} | grep 'backend grafana'", timeout=60)
        machine.wait_until_succeeds("${curl "jellyfin"} | grep 'backend jellyfin'", timeout=60)

    with subtest("an unknown name gets unrecognized_name, not internal_error"):
        out = machine.fail("${curl "unknown"} 2>&1")
        assert "internal error" not in out, out

    with subtest("status over the admin socket, hardened unit"):
        machine.succeed("snirouter status --config /etc/snirouter/config.toml")
        machine.succeed("systemctl show snirouter -p User | grep -x User=snirouter")
        machine.succeed("systemctl show snirouter -p CapabilityBoundingSet | grep -x CapabilityBoundingSet=cap_net_bind_service")
        machine.succeed("test -S /run/snirouter/admin.sock")
        machine.succeed("ls /var/lib/snirouter | grep -q .")

    with subtest("reload keeps serving"):
        machine.succeed("systemctl reload snirouter")
        machine.succeed("${curl "grafana"} | grep 'backend grafana'")
        machine.succeed("systemctl is-active snirouter")
  '';
}
