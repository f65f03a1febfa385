# The owner's gateway as a NixOS configuration: 14 services behind Authelia unless they
# bypass it, two self-signed https backends, CORS, body limits, error pages, path routes.
# `errorPages` is a directory that exists where `snirouter check` runs.
{ errorPages }:
{
  services.tailscale.permitCertUid = "snirouter";
  services.snirouter = {
    enable = true;
    openFirewall = true;
    manageServices = true;
    tailscaleApi = {
      clientIdFile = "/run/agenix/tailscale-client-id";
      clientSecretFile = "/run/agenix/tailscale-client-secret";
      tags = [ "tag:storage-svc" ];
    };
    forwardAuth = {
      url = "http://127.0.0.1:9091/api/verify?rd=https://auth.arsfeld.one/";
      copyHeaders = [
        "Remote-User"
        "Remote-Groups"
        "Remote-Name"
        "Remote-Email"
      ];
    };
    inherit errorPages;
    settings = {
      listen.https = [ "0.0.0.0:443" ];
      listen.redirect_http = [ "0.0.0.0:80" ];
      limits.max_header_bytes = "5MB";
      domains."arsfeld.one".cert_dir = "/var/lib/acme/arsfeld.one";
    };
    services = {
      grafana = {
        port = 3000;
        tailscaleIdentity = true;
      };
      jellyfin = {
        port = 8920;
        insecureTls = true;
        bypassAuth = true;
        cors = true;
      };
      immich = {
        port = 2283;
        bypassAuth = true;
        cors = true;
        maxBodySize = "50GB";
      };
      sonarr = {
        port = 8989;
        names = [ "sonarr.arsfeld.one" ];
        allow = [
          "tag:monitoring"
          "alice@example.com"
          "cap:example.com/cap/sonarr"
        ];
        acceptAppCaps = [ "example.com/cap/sonarr" ];
      };
      radarr = {
        port = 7878;
        tcp = {
          "22" = "127.0.0.1:2222";
          "1883" = { to = "unix:/run/mosquitto/mqtt.sock"; proxyProtocol = 2; };
        };
      };
      prowlarr.port = 9696;
      lidarr.port = 8686;
      bazarr.port = 6767;
      jellyseerr = {
        port = 5055;
        bypassAuth = true;
      };
      qbittorrent = {
        upstream = "http://127.0.0.1:8080";
        maxBodySize = "5MB";
      };
      homepage = {
        host = "10.0.0.5";
        port = 8082;
        cors = true;
        corsOrigins = [ "https://grafana.bat-boa.ts.net" ];
      };
      audiobookshelf = {
        routes = [
          {
            path = "/audiobookshelf";
            upstream = "http://127.0.0.1:8000";
            stripPrefix = true;
          }
          {
            path = "/";
            upstream = "http://127.0.0.1:8001";
          }
        ];
        bypassAuth = true;
      };
      navidrome = {
        upstream = "https://127.0.0.1:4534";
        insecureTls = true;
        bypassAuth = true;
      };
      prometheus = {
        port = 9090;
        fqdn = "metrics.bat-boa.ts.net";
      };
    };
  };
}
