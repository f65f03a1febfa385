//! The owner's gateway Caddyfile converts with nothing lost or flagged and the result is a
//! valid snirouter config; everything outside the subset is reported with its line.

use snirouter_caddyfile::{Error, Finding, translate};

const OWNER: &str = include_str!("fixtures/owner.Caddyfile");
const OWNER_TOML: &str = include_str!("fixtures/owner.expected.toml");

/// The fixture's error-pages directory, which `snirouter check` requires to exist.
const PAGES: &str = "/var/lib/caddy/error-pages";

#[track_caller]
fn flagged<'a>(findings: &'a [Finding], line: usize, needle: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.line == line && (f.message.contains(needle) || f.directive.contains(needle)))
        .unwrap_or_else(|| panic!("no finding at line {line} mentioning {needle:?}; got:\n{findings:#?}"))
}

#[test]
fn owner_caddyfile_converts_completely() {
    let t = translate(OWNER, "owner.Caddyfile").expect("translate");
    assert!(t.untranslated.is_empty(), "nothing may be flagged: {:#?}", t.untranslated);
    assert_eq!(
        t.services,
        [
            "grafana",
            "jellyfin",
            "immich",
            "sonarr",
            "radarr",
            "prowlarr",
            "lidarr",
            "bazarr",
            "jellyseerr",
            "qbittorrent",
            "homepage",
            "audiobookshelf",
            "navidrome",
            "prometheus"
        ]
    );
    // The explained no-equivalents: the caddy-tailscale block, the cors snippet, the public
    // names, a redundant header_up and the merged duplicate site.
    flagged(&t.notes, 6, "caddy-tailscale node settings");
    flagged(&t.notes, 13, "cors = true");
    flagged(&t.notes, 25, "grafana.arsfeld.one");
    assert!(t.notes.iter().any(|n| n.message.contains("X-Real-IP")), "{:#?}", t.notes);
    assert!(t.notes.iter().any(|n| n.message.contains("merged into [services.prometheus]")), "{:#?}", t.notes);
    if t.toml != OWNER_TOML {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("owner.actual.toml");
        let _ = std::fs::write(&path, &t.toml);
        panic!(
            "output differs from tests/fixtures/owner.expected.toml; the new output is in {} (copy it over if the change is intended)",
            path.display()
        );
    }
}

#[test]
fn owner_output_is_a_valid_config() {
    let t = translate(OWNER, "owner.Caddyfile").expect("translate");
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = t.toml.replace(PAGES, &dir.path().display().to_string());
    let cfg = snirouter_config::parse(&toml, "owner.toml").unwrap_or_else(|d| panic!("{d}\n--- toml ---\n{toml}"));

    assert_eq!(cfg.services.len(), 14);
    assert_eq!(cfg.limits.max_header_bytes, 5_000_000);
    let svc = |name: &str| cfg.services.iter().find(|s| s.name == name).expect(name);
    let auth = svc("grafana").forward_auth.as_ref().expect("grafana is behind Authelia");
    assert_eq!(auth.url.to_string(), "http://127.0.0.1:9091/api/verify?rd=https://auth.arsfeld.one/");
    assert_eq!(auth.copy_headers, ["Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email"]);
    assert_eq!(svc("grafana").routes[0].upstream.to_string(), "http://127.0.0.1:3000");
    let jellyfin = svc("jellyfin");
    assert!(jellyfin.bypass_auth && jellyfin.forward_auth.is_none() && jellyfin.cors.is_some());
    assert!(jellyfin.insecure_skip_verify);
    assert_eq!(jellyfin.routes[0].upstream.to_string(), "https://127.0.0.1:8920");
    assert_eq!(svc("immich").max_body_bytes, Some(5_000_000));
    assert_eq!(svc("homepage").upstream_host.as_deref(), Some("127.0.0.1:8082"));
    assert!(svc("homepage").forward_auth.is_some() && svc("homepage").cors.is_some());
    assert!(cfg.services.iter().all(|s| s.error_pages.is_some() && s.fqdn.is_none()));
    assert_eq!(cfg.listen.proxy_protocol.len(), 1);
}

#[test]
fn routes_matchers_and_fqdn() {
    let src = "\
https://media.tail-1.ts.net {
\thandle_path /sonarr* {
\t\treverse_proxy 127.0.0.1:8989
\t}
\thandle /radarr/* {
\t\treverse_proxy 127.0.0.1:7878
\t}
\treverse_proxy /api* 127.0.0.1:1
\treverse_proxy 127.0.0.1:8080
\tlog
}
old.example.com {
\tbind tailscale/nas
\treverse_proxy https://10.0.0.5:5001 {
\t\ttransport http {
\t\t\ttls
\t\t}
\t}
}
https://files-1.tail-1.ts.net {
\tbind tailscale/files
\treverse_proxy :9000
}
";
    let t = translate(src, "x").expect("translate");
    assert!(t.untranslated.is_empty(), "{:#?}", t.untranslated);
    assert!(
        t.toml.contains(
            "[services.media]\nroutes = [\n  { path = \"/sonarr\", upstream = \"http://127.0.0.1:8989\", strip_prefix = true },\n  { path = \"/radarr\", upstream = \"http://127.0.0.1:7878\" },\n  { path = \"/api\", upstream = \"http://127.0.0.1:1\" },\n  { path = \"/\", upstream = \"http://127.0.0.1:8080\" },\n]\naccess_log = true\n"
        ),
        "{}",
        t.toml
    );
    assert!(t.toml.contains("[services.nas]\nupstream = \"https://10.0.0.5:5001\"\n"), "{}", t.toml);
    assert!(
        t.toml.contains("[services.files]\nfqdn = \"files-1.tail-1.ts.net\"\nupstream = \"http://localhost:9000\"\n"),
        "{}",
        t.toml
    );
    snirouter_config::parse(&t.toml, "x.toml").unwrap_or_else(|d| panic!("{d}\n{}", t.toml));
}

#[test]
fn mixed_auth_is_per_service() {
    let src = "\
a.example {
\tforward_auth 127.0.0.1:9091 {
\t\turi /api/verify
\t\tcopy_headers {
\t\t\tRemote-User
\t\t}
\t}
\treverse_proxy 127.0.0.1:1
}
b.example {
\tforward_auth https://auth.example:9443 {
\t\turi /verify
\t}
\treverse_proxy 127.0.0.1:2
}
c.example {
\treverse_proxy 127.0.0.1:3
}
";
    let t = translate(src, "x").expect("translate");
    assert!(t.untranslated.is_empty(), "{:#?}", t.untranslated);
    assert!(!t.toml.contains("[defaults]"), "{}", t.toml);
    assert!(
        t.toml.contains(
            "forward_auth = { url = \"http://127.0.0.1:9091/api/verify\", copy_headers = [\"Remote-User\"] }"
        )
    );
    assert!(t.toml.contains("forward_auth = { url = \"https://auth.example:9443/verify\", copy_headers = [] }"));
    let cfg = snirouter_config::parse(&t.toml, "x.toml").unwrap_or_else(|d| panic!("{d}\n{}", t.toml));
    assert!(cfg.services[2].forward_auth.is_none());
}

#[test]
fn everything_outside_the_subset_is_flagged_with_its_line() {
    let src = "\
{
\temail me@example.com
\tstrange_option
}
(other) {
\tencode gzip
}
a.example {
\tencode zstd gzip
\theader >Server snirouter
\treverse_proxy 127.0.0.1:1 127.0.0.1:2 {
\t\tlb_policy first
\t\theader_up X-Custom yes
\t}
\timport other
\timport /etc/caddy/common.conf
\tredir /old /new
\ttls internal
}
http://b.example {
\treverse_proxy {$BACKEND}
}
c.example:8443 {
\trespond \"hi\"
}
d.example {
\tforward_auth 127.0.0.1:9091 {
\t\tcopy_headers Remote-User>X-User
\t}
\treverse_proxy 127.0.0.1:4
}
";
    let t = translate(src, "x").expect("translate");
    let u = &t.untranslated;
    flagged(&t.notes, 2, "ACME settings");
    flagged(u, 3, "global option not supported");
    flagged(u, 9, "does not compress");
    flagged(u, 10, "only `NAME VALUE` (set) and `-NAME` (remove)");
    flagged(u, 11, "load balancing");
    flagged(u, 12, "reverse_proxy option not supported");
    flagged(u, 13, "only header_up Host");
    flagged(u, 6, "does not compress"); // from the imported snippet, at the snippet's line
    flagged(u, 16, "import of files");
    flagged(u, 17, "directive not supported");
    flagged(u, 18, "other certificate sources");
    flagged(u, 20, "plain-HTTP site");
    flagged(u, 21, "{$BACKEND}");
    flagged(u, 23, "port other than 443");
    flagged(u, 24, "directive not supported");
    flagged(u, 23, "not written");
    flagged(u, 28, "header renaming");
    // The comments in the output list every one of them.
    for f in u {
        assert!(t.toml.contains(&format!("line {}: `{}`", f.line, f.directive)), "{f} missing in\n{}", t.toml);
    }
    // The first upstream is still routed, the site without one is not written.
    assert!(t.toml.contains("[services.a]\nupstream = \"http://127.0.0.1:1\""), "{}", t.toml);
    assert!(!t.toml.contains("\n[services.c]\n"), "{}", t.toml);
    assert!(t.toml.contains("\n[services.b]\n"), "a plain-HTTP site is flagged but keeps its name: {}", t.toml);
}

#[test]
fn header_rules_become_request_and_response_headers() {
    let src = "\
(strip) {
\trequest_header -x-middleware-subrequest
}
grafana.example.ts.net {
\timport strip
\theader X-Frame-Options DENY
\theader {
\t\t-Server
\t\tReferrer-Policy no-referrer
\t}
\trequest_header @api X-Api 1
\treverse_proxy 127.0.0.1:3000
}
";
    let t = translate(src, "x").expect("translate");
    assert!(t.toml.contains("request_headers = { remove = [\"x-middleware-subrequest\"] }"), "{}", t.toml);
    assert!(
        t.toml.contains(
            "response_headers = { remove = [\"Server\"], set = { \"X-Frame-Options\" = \"DENY\", \"Referrer-Policy\" = \"no-referrer\" } }"
        ),
        "{}",
        t.toml
    );
    flagged(&t.untranslated, 11, "with a matcher");
    assert_eq!(t.untranslated.len(), 1, "{:#?}", t.untranslated);
    let cfg = snirouter_config::parse(&t.toml, "t.toml").expect("the output is a valid config");
    assert_eq!(cfg.services[0].response_headers.remove, ["server"]);
}

#[test]
fn both_halves_of_a_gateway_become_names_and_domains() {
    let src = include_str!("fixtures/gateway.Caddyfile");
    let t = translate(src, "gateway.Caddyfile").expect("translate");
    assert!(t.untranslated.is_empty(), "nothing may be flagged: {:#?}\n{}", t.untranslated, t.toml);
    assert_eq!(t.services, ["grafana", "jellyfin", "sonarr"]);
    let pages = tempfile::tempdir().expect("temp dir");
    let toml = t.toml.replace(PAGES, &pages.path().display().to_string());
    let cfg = snirouter_config::parse(&toml, "gateway.toml").unwrap_or_else(|d| panic!("{d}\n{toml}"));
    let [domain] = cfg.domains.as_slice() else { panic!("one domain: {:#?}", cfg.domains) };
    assert_eq!(domain.name, "arsfeld.one");
    assert_eq!(domain.cert, std::path::Path::new("/var/lib/acme/arsfeld.one/fullchain.pem"));
    assert_eq!(domain.key, std::path::Path::new("/var/lib/acme/arsfeld.one/key.pem"));
    assert_eq!(domain.apex_redirect.as_deref(), Some("https://www.arsfeld.one"));
    let auth = domain.forward_auth.as_ref().expect("the public sites' forward_auth is the domain's");
    assert_eq!(
        auth.url.to_string(),
        "http://127.0.0.1:9091/api/authz/forward-auth?authelia_url=https://auth.arsfeld.one/"
    );
    assert!(cfg.defaults.forward_auth.is_none(), "the tailnet names need no login");
    let svc = |n: &str| cfg.services.iter().find(|s| s.name == n).expect(n);
    assert_eq!(svc("grafana").names, ["grafana.arsfeld.one"]);
    assert_eq!(cfg.listen.https, ["0.0.0.0:443".parse().expect("addr")], "the public sites keep a way in");
    assert!(cfg.warnings().iter().all(|w| !w.message.contains("no listener")), "{:#?}", cfg.warnings());
    assert!(!svc("grafana").bypass_auth && svc("jellyfin").bypass_auth, "jellyfin's public site had no forward_auth");
    assert_eq!(svc("sonarr").request_headers.remove, ["x-middleware-subrequest"]);
    assert_eq!(svc("sonarr").error_pages_upstream.as_deref(), Some(&[500, 503][..]), "handle_response @error");
    assert_eq!(cfg.defaults.error_pages.as_deref(), Some(pages.path()), "handle_errors, shared by all");
    assert_eq!(
        cfg.forward_auth_for(svc("grafana"), "grafana.arsfeld.one").map(|a| a.url.path()),
        Some("/api/authz/forward-auth")
    );
    assert!(cfg.forward_auth_for(svc("grafana"), "grafana.bat-boa.ts.net").is_none());
    assert!(cfg.forward_auth_for(svc("jellyfin"), "jellyfin.arsfeld.one").is_none());
    assert!(t.notes.iter().any(|n| n.message.contains("404 page")), "{:#?}", t.notes);
    assert!(
        t.notes.iter().any(|n| n.message.contains("X-Original-URL")),
        "header_up lines need nothing: {:#?}",
        t.notes
    );
}

#[test]
fn conflicting_sites_for_one_name() {
    let src = "a.example {\n\tbind tailscale/app\n\treverse_proxy 127.0.0.1:1\n}\nb.example {\n\tbind tailscale/app\n\treverse_proxy 127.0.0.1:2\n}\n";
    let t = translate(src, "x").expect("translate");
    flagged(&t.untranslated, 5, "other settings");
    assert_eq!(t.services, ["app"]);
}

#[test]
fn unreadable_files_are_errors_with_lines() {
    assert_eq!(
        translate("a {\n\treverse_proxy \"x\n}\n", "x").unwrap_err(),
        Error::UnterminatedQuote { line: 2, quote: '"' }
    );
    let e = translate("a {\n\tb {\n}\n", "x").unwrap_err();
    assert_eq!(
        (e.line(), e.to_string()),
        (1, "line 1: the block opened here is never closed (missing `}`)".to_owned())
    );
}
