# NixOS module: services.snirouter — the TLS SNI/path router for this tailnet host.
#
# The TOML config is `settings` (freeform, see docs/configuration.md) merged over what the
# typed options render (`services.snirouter.services.<name>`, `forwardAuth`, …). It is
# validated at build time with `snirouter check`, installed as /etc/snirouter/config.toml
# (so `snirouter status|doctor|reload` find it) and reloaded with SIGHUP when only services
# change; changes to sections a reload cannot apply restart the unit.
{
  config,
  options,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    literalExpression
    mapAttrs
    mapAttrsToList
    mkDefault
    mkEnableOption
    mkIf
    mkOption
    optional
    optionalAttrs
    types
    ;

  cfg = config.services.snirouter;
  settingsFormat = pkgs.formats.toml { };

  credentialsDir = "/run/credentials/snirouter.service";

  authOptions = {
    options = {
      url = mkOption {
        type = types.str;
        example = "http://127.0.0.1:9091/api/verify?rd=https://auth.example.com/";
        description = "Authentication endpoint asked about every request (`forward_auth.url`).";
      };
      copyHeaders = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "Remote-User"
          "Remote-Groups"
          "Remote-Name"
          "Remote-Email"
        ];
        description = "Headers of a 2xx auth answer copied onto the upstream request (`forward_auth.copy_headers`).";
      };
    };
  };

  routeOptions = {
    options = {
      path = mkOption {
        type = types.str;
        example = "/sonarr";
        description = "Path prefix (segment boundary; longest prefix wins).";
      };
      upstream = mkOption {
        type = types.str;
        example = "http://127.0.0.1:8989";
        description = "Backend origin, `http://HOST:PORT` or `https://HOST:PORT`.";
      };
      stripPrefix = mkOption {
        type = types.bool;
        default = false;
        description = "Remove `path` from the request path before forwarding (`strip_prefix`).";
      };
    };
  };

  serviceOptions = {
    options = {
      host = mkOption {
        type = types.str;
        default = "127.0.0.1";
        description = "Backend host; used with `port`.";
      };
      port = mkOption {
        type = types.nullOr types.port;
        default = null;
        example = 3000;
        description = "Backend port: the upstream is `SCHEME://host:port` (https when `insecureTls` or `scheme = \"https\"`).";
      };
      scheme = mkOption {
        type = types.nullOr (
          types.enum [
            "http"
            "https"
          ]
        );
        default = null;
        description = "Scheme for `host`/`port`; null means https with `insecureTls`, else http.";
      };
      upstream = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://127.0.0.1:3000";
        description = "Backend origin, instead of `host`/`port`.";
      };
      routes = mkOption {
        type = types.listOf (types.submodule routeOptions);
        default = [ ];
        description = "Path routes, instead of a single upstream.";
      };
      forwardAuth = mkOption {
        type = types.nullOr (types.submodule authOptions);
        default = null;
        description = "This service's own forward authentication (overrides `services.snirouter.forwardAuth`).";
      };
      bypassAuth = mkOption {
        type = types.bool;
        default = false;
        description = "Do not apply `services.snirouter.forwardAuth` to this service (`bypass_auth`).";
      };
      cors = mkOption {
        type = types.bool;
        default = false;
        description = "Answer CORS: echo an allowed Origin, allow credentials, 204 for preflights.";
      };
      corsOrigins = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Allowed origins for `cors` (empty: any origin).";
      };
      insecureTls = mkOption {
        type = types.bool;
        default = false;
        description = "Skip certificate verification of the https upstream (`insecure_skip_verify`).";
      };
      tailscaleIdentity = mkOption {
        type = types.bool;
        default = false;
        description = "Send `Tailscale-User-*` headers from tailscaled's whois (`tailscale_identity`).";
      };
      allow = mkOption {
        type = types.nullOr (types.nonEmptyListOf types.str);
        default = null;
        example = [
          "alice@example.com"
          "tag:monitoring"
          "cap:example.com/cap/grafana"
        ];
        description = "Only these tailnet clients may use the service (`allow`): logins, `*@domain`, `tag:NAME`, `cap:CAPABILITY` granted toward `svc:NAME` in the tailnet policy, `*` (any tailnet node) or `local` (loopback clients). Others get a 403 page; null admits everyone who reaches it.";
      };
      acmeHost = mkOption {
        type = types.nullOr types.str;
        default = cfg.acmeHost;
        defaultText = literalExpression "config.services.snirouter.acmeHost";
        example = "example.com";
        description = "The `security.acme.certs` entry whose (wildcard) certificate serves this service's public name `NAME.<its domain>`; null: no public name. snirouter gets read access to it, is reloaded when it renews, and starts after it.";
      };
      names = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "grafana.example.com" ];
        description = "Further names of the service under a `settings.domains` entry, with that domain's certificate files and forward auth (`names`).";
      };
      acceptAppCaps = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "example.com/cap/grafana" ];
        description = "Application capabilities of the client sent to the backend in `Tailscale-App-Capabilities` (`accept_app_caps`, like `tailscale serve --accept-app-caps`).";
      };
      tcp = mkOption {
        type = types.attrsOf (types.either types.str (types.submodule {
          options = {
            to = mkOption {
              type = types.str;
              example = "127.0.0.1:1883";
              description = "Where tailscaled forwards the port: `host:port` or `unix:/absolute/path.sock`.";
            };
            proxyProtocol = mkOption {
              type = types.nullOr (types.enum [ 1 2 ]);
              default = null;
              description = "PROXY protocol version tailscaled sends first (`proxy_protocol`); null for none.";
            };
          };
        }));
        default = { };
        example = { "22" = "127.0.0.1:2222"; };
        description = "Further TCP ports of the service's Tailscale Service, forwarded by tailscaled straight to an app (Forgejo's SSH, MQTT), never through the router (`tcp`). Port 443 is the router's.";
      };
      passthrough = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "127.0.0.1:8920";
        description = "Forward the TLS connection untouched to this `host:port` (no routes, no auth).";
      };
      fqdn = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Name override; default `NAME.<MagicDNS suffix>`.";
      };
      errorPages = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "Directory with 404.html, 500.html, 502.html, 503.html, 504.html (`error_pages`). `snirouter check` needs it to exist at build time: use a Nix path (copied to the store), or set checkConfig = false.";
      };
      maxBodySize = mkOption {
        type = types.nullOr (types.either types.ints.positive types.str);
        default = null;
        example = "5MB";
        description = "Largest request body (`max_body_bytes`).";
      };
    };
  };

  upstreamOf =
    s:
    if s.upstream != null then
      s.upstream
    else if s.port != null then
      let
        scheme =
          if s.scheme != null then
            s.scheme
          else if s.insecureTls then
            "https"
          else
            "http";
      in
      "${scheme}://${s.host}:${toString s.port}"
    else
      null;

  renderAuth = a: {
    inherit (a) url;
    copy_headers = a.copyHeaders;
  };

  renderRoute = r: {
    inherit (r) path upstream;
    strip_prefix = r.stripPrefix;
  };

  # Public names (`acmeHost`): NAME.<the certificate's domain>, "*." stripped.
  acmeDomain = h: lib.removePrefix "*." config.security.acme.certs.${h}.domain;
  publicServices = lib.filterAttrs (_: s: s.acmeHost != null && s.passthrough == null) cfg.services;
  acmeHosts = lib.unique (mapAttrsToList (_: s: s.acmeHost) publicServices);
  # Whether a certificate is defined by some module besides this one (which only adds
  # reloadServices to it); asking config would find this module's own definition.
  acmeDefined =
    h:
    builtins.any (
      d:
      let
        v = d.value.content or d.value;
      in
      v ? ${h} && builtins.attrNames (v.${h}.content or v.${h}) != [ "reloadServices" ]
    ) options.security.acme.certs.definitionsWithLocations;
  namesOf = n: s: lib.unique (s.names ++ optional (publicServices ? ${n}) "${n}.${acmeDomain s.acmeHost}");
  domainsTable = lib.listToAttrs (
    map (
      h:
      lib.nameValuePair (acmeDomain h) (
        {
          cert_dir = config.security.acme.certs.${h}.directory;
        }
        // optionalAttrs (cfg.publicForwardAuth != null) { forward_auth = renderAuth cfg.publicForwardAuth; }
      )
    ) acmeHosts
  );

  renderService =
    n: s:
    optionalAttrs (upstreamOf s != null) { upstream = upstreamOf s; }
    // optionalAttrs (s.routes != [ ]) { routes = map renderRoute s.routes; }
    // optionalAttrs (s.passthrough != null) { inherit (s) passthrough; }
    // optionalAttrs (s.fqdn != null) { inherit (s) fqdn; }
    // optionalAttrs s.insecureTls { insecure_skip_verify = true; }
    // optionalAttrs (s.forwardAuth != null) { forward_auth = renderAuth s.forwardAuth; }
    // optionalAttrs s.bypassAuth { bypass_auth = true; }
    // optionalAttrs s.cors { cors = true; }
    // optionalAttrs (s.corsOrigins != [ ]) { cors_origins = s.corsOrigins; }
    // optionalAttrs s.tailscaleIdentity { tailscale_identity = true; }
    // optionalAttrs (s.allow != null) { inherit (s) allow; }
    // optionalAttrs (s.acceptAppCaps != [ ]) { accept_app_caps = s.acceptAppCaps; }
    // optionalAttrs (s.tcp != { }) {
      tcp = mapAttrs (_: t:
        if builtins.isString t then t
        else { inherit (t) to; } // optionalAttrs (t.proxyProtocol != null) { proxy_protocol = t.proxyProtocol; }
      ) s.tcp;
    }
    // optionalAttrs (namesOf n s != [ ]) { names = namesOf n s; }
    // optionalAttrs (s.errorPages != null) { error_pages = "${s.errorPages}"; }
    // optionalAttrs (s.maxBodySize != null) { max_body_bytes = s.maxBodySize; };

  defaultsTable =
    optionalAttrs (cfg.forwardAuth != null) { forward_auth = renderAuth cfg.forwardAuth; }
    // optionalAttrs (cfg.errorPages != null) { error_pages = "${cfg.errorPages}"; };

  api = cfg.tailscaleApi;
  al = cfg.accessLog;
  # The access log file as the service writes it (whichever way it was configured).
  accessFile = finalSettings.log.access_file or null;
  inLogsDirectory = accessFile != null && lib.hasPrefix "/var/log/snirouter/" accessFile;

  # tailscaled lets only root (and its operator) write the serve config and prefs: a
  # non-root router leaves the sync to a privileged ExecStartPre (below).
  syncAsRoot = cfg.manageServices && cfg.user != "root";

  # A declarative tailscaled serve config (nixpkgs' services.tailscale.serve, where the
  # option exists) runs `tailscale serve set-config` at boot, which replaces the whole
  # serve config and the advertised Services: it and manageServices would undo each other.
  tsServe = config.services.tailscale.serve or null;
  tsServeActive =
    tsServe != null
    && tsServe != { }
    && tsServe != [ ]
    && !(builtins.isAttrs tsServe && (tsServe.enable or true) == false);

  # [listen] keys a reload cannot apply (beside the sections in restartSections).
  restartListen = {
    proxy_protocol_from = finalSettings.listen.proxy_protocol_from or null;
  };

  # [domains] certificates under /var/lib/acme/NAME of a security.acme certificate, however
  # the domain was written (acmeHost, or cert_dir/cert in `settings`): the router reads them.
  acmeNameOf =
    d:
    let
      dir = d.cert_dir or (if d ? cert then dirOf d.cert else null);
    in
    if dir != null && lib.hasPrefix "/var/lib/acme/" dir then baseNameOf dir else null;
  readableAcmeHosts = lib.unique (
    acmeHosts
    ++ builtins.filter (h: h != null && config.security.acme.certs ? ${h}) (
      map acmeNameOf (lib.attrValues (finalSettings.domains or { }))
    )
  );

  # Names under [domains], whichever way they were written: they need an https listener.
  publicNames = lib.concatMap (s: s.names or [ ]) (lib.attrValues (finalSettings.services or { }));

  generated = {
    tailscale = {
      manage_services = cfg.manageServices && !syncAsRoot;
    }
    // optionalAttrs (api.clientIdFile != null) {
      api = {
        client_id_file = "${credentialsDir}/tailscale-client-id";
        client_secret_file = "${credentialsDir}/tailscale-client-secret";
      }
      // optionalAttrs (api.tags != [ ]) { inherit (api) tags; };
    };
    listen = {
      proxy_protocol = [ "127.0.0.1:8443" ];
    }
    // optionalAttrs (cfg.trustedProxies != [ ]) {
      trusted_proxies = cfg.trustedProxies;
      client_ip_headers = cfg.clientIpHeaders;
    };
    cache.dir = "/var/lib/snirouter";
    admin.socket = "/run/snirouter/admin.sock";
    services = mapAttrs renderService cfg.services;
  }
  // optionalAttrs al.enable {
    log = {
      access = true;
      access_format = al.format;
    }
    // optionalAttrs (al.file != null) { access_file = al.file; };
  }
  // optionalAttrs (defaultsTable != { }) { defaults = defaultsTable; }
  // optionalAttrs (domainsTable != { }) { domains = domainsTable; };

  # Hairpin (docs/operations.md "Local clients"): every served name resolves to loopback
  # on this host, and HTTPS listeners there take those connections. A wildcard listener on
  # the same port already does for its family (binding both would fail).
  hp = cfg.hairpin;
  # Every service of the final settings, typed or written as TOML in `settings`.
  settingsServices = (lib.recursiveUpdate generated cfg.settings).services or { };
  hairpinNames = mapAttrsToList (n: s: s.fqdn or "${n}.${hp.tailnet}") settingsServices;
  hairpinFamilies = [
    {
      address = "127.0.0.1";
      listener = "127.0.0.1:${toString hp.port}";
      wildcard = "0.0.0.0:${toString hp.port}";
    }
  ]
  ++ optional config.networking.enableIPv6 {
    address = "::1";
    listener = "[::1]:${toString hp.port}";
    wildcard = "[::]:${toString hp.port}";
  };
  withHairpin =
    s:
    let
      https = s.listen.https or [ ];
      added = map (f: f.listener) (builtins.filter (f: !(builtins.elem f.wildcard https)) hairpinFamilies);
    in
    if hp.enable then lib.recursiveUpdate s { listen.https = lib.unique (https ++ added); } else s;

  # What is written: the typed options, then `settings` on top, then the hairpin listeners.
  finalSettings = withHairpin (lib.recursiveUpdate generated cfg.settings);

  configFile = settingsFormat.generate "snirouter.toml" finalSettings;

  # Build-time validation: the exact file the service reads must pass `snirouter check`.
  checkedConfig =
    if cfg.checkConfig then
      pkgs.runCommand "snirouter-checked.toml"
        {
          nativeBuildInputs = [ cfg.package ];
          inherit configFile;
        }
        ''
          snirouter check --config "$configFile"
          cp "$configFile" "$out"
        ''
    else
      configFile;

  # Sections a reload cannot apply (docs/operations.md "Reload"): changing them restarts.
  restartSections = lib.filterAttrs (
    n: _:
    builtins.elem n [
      "tailscale"
      "cache"
      "timeouts"
      "limits"
      "admin"
      "log"
    ]
  ) finalSettings;

  # Ports to open: [listen] https and redirect_http ("ADDR:PORT", "[V6]:PORT"), except
  # those on loopback (the hairpin listeners), which no other host can reach.
  listenPort = addr: lib.toInt (lib.last (lib.splitString ":" addr));
  onLoopback = addr: lib.hasPrefix "127." addr || lib.hasPrefix "[::1]:" addr;
  firewallPorts = lib.unique (
    map listenPort (
      builtins.filter (a: !(onLoopback a)) (
        (finalSettings.listen.https or [ ]) ++ (finalSettings.listen.redirect_http or [ ])
      )
    )
  );

  serviceAssertions = lib.concatLists (
    mapAttrsToList (
      name: s:
      let
        forms = lib.count (x: x) [
          (s.port != null)
          (s.upstream != null)
          (s.routes != [ ])
          (s.passthrough != null)
        ];
      in
      [
        {
          assertion = forms == 1;
          message = "services.snirouter.services.${name}: set exactly one of port (with host), upstream, routes or passthrough (found ${toString forms}).";
        }
        {
          assertion = !(s.bypassAuth && s.forwardAuth != null);
          message = "services.snirouter.services.${name}: bypassAuth only switches off services.snirouter.forwardAuth; remove it or remove this service's own forwardAuth.";
        }
        {
          assertion = s.passthrough == null || cfg.forwardAuth == null || s.bypassAuth;
          message = "services.snirouter.services.${name}: a passthrough service cannot be protected by services.snirouter.forwardAuth (its traffic is never decrypted); set bypassAuth = true to acknowledge that the backend authenticates users itself.";
        }
        {
          assertion = s.corsOrigins == [ ] || s.cors;
          message = "services.snirouter.services.${name}: corsOrigins needs cors = true.";
        }
      ]
    ) cfg.services
  );
in
{
  options.services.snirouter = {
    enable = mkEnableOption "snirouter, the TLS-terminating SNI/path router for this tailnet host";

    package = mkOption {
      type = types.package;
      default = pkgs.snirouter;
      defaultText = literalExpression "pkgs.snirouter";
      description = "The snirouter package (the flake's module sets its own build).";
    };

    user = mkOption {
      type = types.str;
      default = "snirouter";
      description = "User the router runs as; tailscaled hands it certificates (services.tailscale.permitCertUid).";
    };

    group = mkOption {
      type = types.str;
      default = "snirouter";
      description = "Group of the service; members may use `snirouter status` (admin socket mode 0660).";
    };

    settings = mkOption {
      type = settingsFormat.type;
      default = { };
      example = literalExpression ''
        {
          listen.https = [ "0.0.0.0:443" ];
          limits.max_header_bytes = "5MB";
        }
      '';
      description = ''
        snirouter configuration (TOML; keys in docs/configuration.md), merged over what the
        typed options render. Defaults: `listen.proxy_protocol = [ "127.0.0.1:8443" ]`,
        `cache.dir = "/var/lib/snirouter"`, `admin.socket = "/run/snirouter/admin.sock"`.
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = "Validate the rendered config with `snirouter check` at build time.";
    };

    services = mkOption {
      type = types.attrsOf (types.submodule serviceOptions);
      default = { };
      example = literalExpression ''
        {
          grafana.port = 3000;
          jellyfin = { port = 8920; insecureTls = true; bypassAuth = true; };
          media.routes = [
            { path = "/sonarr"; upstream = "http://127.0.0.1:8989"; }
            { path = "/"; upstream = "http://127.0.0.1:8080"; }
          ];
        }
      '';
      description = "Services, each served as NAME.<tailnet>.ts.net (Tailscale Service svc:NAME); rendered into `[services.NAME]`.";
    };

    forwardAuth = mkOption {
      type = types.nullOr (types.submodule authOptions);
      default = null;
      description = "Forward authentication for every service without `bypassAuth` (`[defaults] forward_auth`).";
    };

    errorPages = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "Error pages directory for every service (`[defaults] error_pages`).";
    };

    acmeHost = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "example.com";
      description = "Default `acmeHost` of every service: the `security.acme.certs` entry (usually a wildcard `*.example.com`) whose certificate serves each service's public name `NAME.example.com` (`[domains]` with its directory, and `names`).";
    };

    publicForwardAuth = mkOption {
      type = types.nullOr (types.submodule authOptions);
      default = null;
      description = "Forward authentication for the public names only (`[domains] forward_auth`), unless a service has `bypassAuth`; the tailnet names keep `forwardAuth` (none by default).";
    };

    hairpin = {
      enable = mkEnableOption ''
        local clients on this host reaching every service by its real name with a valid
        certificate (a Tailscale Service host cannot reach its own Services): each served
        name resolves to 127.0.0.1 and ::1 (`networking.hosts`), and HTTPS listeners on
        both take those connections through the same routes and policy'';
      tailnet = mkOption {
        type = types.nullOr types.str;
        default = cfg.settings.tailscale.magic_dns_suffix or null;
        defaultText = lib.literalExpression "config.services.snirouter.settings.tailscale.magic_dns_suffix or null";
        example = "tail1234.ts.net";
        description = "The MagicDNS suffix the service names are under (`NAME.<tailnet>`), for the hosts entries (`tailscale status --json | jq -r .MagicDNSSuffix`).";
      };
      port = mkOption {
        type = types.port;
        default = 443;
        description = "Port of the loopback HTTPS listeners; 443 lets local clients use plain `https://NAME/` URLs.";
      };
    };

    trustedProxies = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "127.0.0.1/32"
        "::1/128"
      ];
      description = ''
        Proxies in front of snirouter whose client-address headers are believed
        (`[listen] trusted_proxies`; `"private_ranges"` for every private network): a tunnel
        on this host (cloudflared) relays every visitor from loopback. With it, `allow`,
        forward auth, the upstream and the access log see the visitor's address, and a
        relayed request is never `local`.
      '';
    };

    clientIpHeaders = mkOption {
      type = types.listOf types.str;
      default = [ "X-Forwarded-For" ];
      example = [ "CF-Connecting-IP" ];
      description = "Headers a trusted proxy names the client in, in order (`[listen] client_ip_headers`).";
    };

    accessLog = {
      enable = mkEnableOption "the access log: one line per request of every service (`[log] access`)";
      format = mkOption {
        type = types.enum [
          "json"
          "combined"
        ];
        default = "combined";
        description = "`json` (Caddy's fields) or `combined` (what fail2ban and log analysers read).";
      };
      file = mkOption {
        type = types.nullOr types.str;
        default = "/var/log/snirouter/access.log";
        description = "File the lines are appended to (the journal when null); rotated weekly by logrotate, which signals snirouter to reopen it.";
      };
    };

    fail2ban = {
      enable = mkEnableOption ''
        a fail2ban jail over the access log: clients refused (401/403) `maxretry` times within
        `findtime` are banned (needs accessLog with a file)'';
      maxretry = mkOption {
        type = types.ints.positive;
        default = 10;
        description = "Refused requests before a ban.";
      };
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the ports of `settings.listen.https` and `settings.listen.redirect_http`. The PROXY v2 listener that tailscaled's serve handler uses is on loopback and needs no firewall rule.";
    };

    manageServices = mkOption {
      type = types.bool;
      default = false;
      description = "Sync the Tailscale Services (advertise, serve-config handlers) at every start. tailscaled lets only root and its operator write them, so for a non-root `user` the module runs `snirouter services sync` as root in the unit's ExecStartPre (the router itself keeps `[tailscale] manage_services` off); as root the router syncs itself.";
    };

    tailscaleApi = {
      clientIdFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/agenix/tailscale-client-id";
        description = "File with the OAuth client id for the control API; passed with systemd LoadCredential, so it may be readable by root only. Give a string: a Nix path would be copied into the world-readable store.";
      };
      clientSecretFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/agenix/tailscale-client-secret";
        description = "File with the OAuth client secret (LoadCredential, like clientIdFile).";
      };
      tags = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Tags put on each service definition (`[tailscale.api] tags`).";
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = serviceAssertions ++ [
      {
        assertion = !hp.enable || hp.tailnet != null;
        message = "services.snirouter.hairpin needs the MagicDNS suffix the names are under: set services.snirouter.hairpin.tailnet (e.g. \"tail1234.ts.net\"; `tailscale status --json | jq -r .MagicDNSSuffix`).";
      }
      {
        assertion = builtins.all acmeDefined acmeHosts;
        message = "services.snirouter: acmeHost ${builtins.toJSON (builtins.filter (h: !(acmeDefined h)) acmeHosts)} is not in security.acme.certs; define the certificate there (e.g. security.acme.certs.\"example.com\".domain = \"*.example.com\";) or correct acmeHost.";
      }
      {
        assertion = !cfg.fail2ban.enable || accessFile != null;
        message = "services.snirouter.fail2ban reads the access log file: set services.snirouter.accessLog.enable = true (with accessLog.file, default /var/log/snirouter/access.log).";
      }
      {
        assertion = !(cfg.manageServices && tsServeActive);
        message = "services.snirouter.manageServices and services.tailscale.serve both write tailscaled's serve config: services.tailscale.serve runs `tailscale serve set-config` at every boot, which replaces the whole config and the advertised Services, so snirouter's names go dark until it puts them back. Keep one writer: drop services.tailscale.serve (snirouter keeps other entries it finds in the serve config), or set manageServices = false and configure the Services there.";
      }
      {
        assertion = publicNames == [ ] || (finalSettings.listen.https or [ ]) != [ ];
        message = "services.snirouter: public names (${builtins.concatStringsSep ", " publicNames}) need a TLS listener, and there is none: tailscaled forwards only Tailscale Service names. Set services.snirouter.settings.listen.https = [ \"0.0.0.0:443\" ]; (with openFirewall = true; for the LAN) or [ \"127.0.0.1:443\" ] for a tunnel on this host.";
      }
      {
        assertion = (api.clientIdFile == null) == (api.clientSecretFile == null);
        message = "services.snirouter.tailscaleApi: set both clientIdFile and clientSecretFile, or neither.";
      }
      {
        assertion = cfg.user == "root" || config.services.tailscale.permitCertUid == cfg.user;
        message = ''
          services.snirouter runs as user "${cfg.user}" and needs tailscaled to hand it certificates,
          so it sets services.tailscale.permitCertUid = "${cfg.user}"; but that option is set to
          ${builtins.toJSON config.services.tailscale.permitCertUid} elsewhere. tailscaled permits only one
          non-root user: remove the other setting, or run snirouter as that user (services.snirouter.user).
        '';
      }
    ];

    services.tailscale.permitCertUid = mkIf (cfg.user != "root") (mkDefault cfg.user);

    # Public names: read access to each certificate, a reload when it renews, start after it.
    security.acme.certs = lib.genAttrs acmeHosts (_: {
      reloadServices = [ "snirouter.service" ];
    });

    users.users = lib.mkMerge [
      (mkIf (cfg.user == "snirouter") {
        snirouter = {
          isSystemUser = true;
          inherit (cfg) group;
          description = "snirouter TLS router";
        };
      })
      (mkIf (cfg.user != "root" && readableAcmeHosts != [ ]) {
        ${cfg.user}.extraGroups = lib.unique (map (h: config.security.acme.certs.${h}.group) readableAcmeHosts);
      })
    ];
    users.groups = mkIf (cfg.group == "snirouter") { snirouter = { }; };

    environment.etc."snirouter/config.toml".source = checkedConfig;
    environment.systemPackages = [ cfg.package ];

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall firewallPorts;

    # The access log: rotated by logrotate, which has snirouter reopen it (SIGUSR1).
    services.logrotate.settings.snirouter = mkIf (accessFile != null) {
      files = accessFile;
      frequency = "weekly";
      rotate = 8;
      compress = true;
      delaycompress = true;
      missingok = true;
      notifempty = true;
      postrotate = "${pkgs.systemd}/bin/systemctl kill --signal=USR1 snirouter.service";
    };
    environment.etc."fail2ban/filter.d/snirouter.conf" = mkIf cfg.fail2ban.enable {
      source = ../docs/fail2ban/filter.d/snirouter.conf;
    };
    services.fail2ban = mkIf cfg.fail2ban.enable {
      enable = true;
      jails.snirouter.settings = {
        filter = "snirouter";
        logpath = accessFile;
        backend = "auto";
        port = "http,https";
        inherit (cfg.fail2ban) maxretry;
        findtime = "10m";
      };
    };
    networking.hosts = mkIf hp.enable (
      lib.listToAttrs (map (f: lib.nameValuePair f.address hairpinNames) hairpinFamilies)
    );

    systemd.services.snirouter = {
      description = "snirouter: TLS SNI/path router for the tailnet";
      wantedBy = [ "multi-user.target" ];
      after = [
        "network-online.target"
        "tailscaled.service"
      ]
      ++ map (h: "acme-${h}.service") acmeHosts;
      wants = [
        "network-online.target"
        "tailscaled.service"
      ]
      ++ map (h: "acme-finished-${h}.target") acmeHosts;
      # A new config file is picked up with SIGHUP; what a reload cannot apply restarts.
      reloadTriggers = [ checkedConfig ];
      restartTriggers = [ (builtins.toJSON (restartSections // { listen = restartListen; })) ];
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        # `+`: this line alone runs as root (tailscaled's write access); `-`: a tailscaled
        # that is not up yet does not keep the router from serving.
        ExecStartPre = mkIf syncAsRoot [
          "-+${lib.getExe cfg.package} services sync --config /etc/snirouter/config.toml"
        ];
        ExecStart = "${lib.getExe cfg.package} run --config /etc/snirouter/config.toml";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        WatchdogSec = "30s";
        Restart = "on-failure";
        RestartSec = "2s";
        TimeoutStopSec = "45s";
        User = cfg.user;
        Group = cfg.group;
        LoadCredential =
          optional (api.clientIdFile != null) "tailscale-client-id:${api.clientIdFile}"
          ++ optional (api.clientSecretFile != null) "tailscale-client-secret:${api.clientSecretFile}";

        StateDirectory = "snirouter";
        LogsDirectory = mkIf inLogsDirectory "snirouter";
        LogsDirectoryMode = mkIf inLogsDirectory "0750";
        StateDirectoryMode = "0700";
        RuntimeDirectory = "snirouter";
        RuntimeDirectoryMode = "0750";
        LimitNOFILE = 65536;

        AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" ];
        CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" ];
        NoNewPrivileges = true;
        # Everything but the State/RuntimeDirectory is read-only. Connecting to
        # /run/tailscale/tailscaled.sock (mode 0666) still works without BindPaths: connect(2)
        # to an existing socket is not a write to the file system (EROFS applies only to
        # files, directories and symlinks), only bind(2) of a new socket is.
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        SystemCallArchitectures = "native";
        UMask = "0077";
      };
    };

    # A non-root router may not write to tailscaled, so it cannot put back what something
    # else wipes while it runs: root does, every 30 s, for as long as the router runs
    # (`services sync --local`: this node's side only, silent when nothing changed).
    systemd.services.snirouter-services-heal = mkIf syncAsRoot {
      description = "snirouter: put back the Tailscale Services' handlers and advertisement";
      after = [ "tailscaled.service" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${lib.getExe cfg.package} services sync --local --config /etc/snirouter/config.toml";
      };
    };
    systemd.timers.snirouter-services-heal = mkIf syncAsRoot {
      description = "snirouter: check the Tailscale Services every 30 s while the router runs";
      wantedBy = [ "snirouter.service" ];
      partOf = [ "snirouter.service" ];
      after = [ "snirouter.service" ];
      timerConfig = {
        OnActiveSec = "30s";
        OnUnitActiveSec = "30s";
        AccuracySec = "5s";
      };
    };
  };
}
