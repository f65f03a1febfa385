//! The public half through a tunnel on this host: a cloudflared-shaped client on
//! 127.0.0.1 relays visitors with `X-Forwarded-For`. With `[listen] trusted_proxies`
//! the visitor's address is what the auth server, the upstream and the access log see;
//! a relayed request is never `local`; headers from an untrusted peer change nothing;
//! and fail2ban's own `fail2ban-regex` finds every refused attempt in the router's log,
//! in both access-log formats. The auth server answers API clients as Authelia does: 401
//! for wrong credentials.

use std::path::Path;
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::harness::*;
use crate::operate::{cfg, cli};
use crate::parity::{AuthServer, REMOTE_USER, auth_server};

const DOMAIN: &str = "example.com";
const VISITOR: &str = "203.0.113.7";
const GOOD: &str = "Authorization: Basic Z29vZA==";
const BAD: &str = "Authorization: Basic YmFk";

/// `curl https://HOST/who` with `extra`: (JSON echo or body, status).
async fn get(env: &Env, host: &str, extra: &[&str]) -> (String, u16) {
    body_and_status(&curl_at(env, host, "/who", extra).await)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// What the auth server was sent last, and how often it was asked.
fn last(auth: &AuthServer) -> HeaderMap {
    auth.seen.lock().expect("lock").last().cloned().expect("the auth server was asked")
}

fn asked(auth: &AuthServer) -> usize {
    auth.seen.lock().expect("lock").len()
}

/// `fail2ban-regex LOG snirouter.conf`: (matched, missed), and the matched lines.
async fn fail2ban(log: &Path) -> (usize, usize, String) {
    let filter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/fail2ban/filter.d/snirouter.conf");
    let out = tokio::process::Command::new("fail2ban-regex")
        .arg("--print-all-matched")
        .arg(log)
        .arg(&filter)
        .kill_on_drop(true)
        .output()
        .await
        .expect("fail2ban-regex (Debian's fail2ban) runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let counts = text.lines().find(|l| l.starts_with("Lines: ")).unwrap_or_else(|| panic!("{text}"));
    // "Lines: 12 lines, 0 ignored, 5 matched, 7 missed"
    let number = |word: &str| {
        let words: Vec<&str> =
            counts.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()).collect();
        let at = words.iter().position(|w| *w == word).unwrap_or_else(|| panic!("{counts}"));
        words[at - 1].parse::<usize>().unwrap_or_else(|_| panic!("{counts}"))
    };
    (number("matched"), number("missed"), text)
}

/// Polls until `path` holds at least `lines` lines.
async fn wait_lines(path: &Path, lines: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines {
            return text;
        }
        assert!(Instant::now() < deadline, "{} has {} of {lines} lines:\n{text}", path.display(), text.lines().count());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn gateway(login: &AuthServer) -> Env {
    let mut env = Env::start(EnvOptions { start_router: false, ..EnvOptions::default() }).await;
    let acme = env.dir.path().join("acme");
    std::fs::create_dir_all(&acme).expect("acme dir");
    crate::domains::renew(&env, &acme);
    let text = std::fs::read_to_string(&env.config).expect("config");
    let access = env.dir.path().join("access.log");
    let extra = format!(
        "\n[log]\naccess = true\naccess_format = \"combined\"\naccess_file = \"{}\"\n\n[domains.\"{DOMAIN}\"]\ncert_dir = \"{}\"\nforward_auth = {{ url = \"http://{}/api/authz/forward-auth\", copy_headers = [\"Remote-User\"] }}\n",
        access.display(),
        acme.display(),
        login.addr
    );
    std::fs::write(&env.config, format!("{text}{extra}")).expect("write");
    add_to_service(&env.config, "grafana", &format!("names = [\"grafana.{DOMAIN}\"]\nallow = [\"local\"]"));
    add_to_service(
        &env.config,
        "jellyfin",
        &format!("names = [\"jellyfin.{DOMAIN}\"]\nbypass_auth = true\nallow = [\"10.9.0.0/16\"]"),
    );
    // Without trusted_proxies, `check` says that a tunnel would pass as local.
    let (code, _, err) = cli(&["check", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("would pass as local") && err.contains("trusted_proxies = [\"127.0.0.1/32\""), "{err}");
    let text = std::fs::read_to_string(&env.config).expect("config");
    let trusted = text.replacen("[listen]\n", "[listen]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n", 1);
    std::fs::write(&env.config, trusted).expect("write");
    let (code, _, err) = cli(&["check", "--config", cfg(&env)]).await;
    assert!(code == 0 && !err.contains("would pass as local"), "{err}");
    env.start_router().await;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_on_this_host_relays_real_visitors_and_fail2ban_reads_the_log() {
    let login = auth_server().await;
    let env = gateway(&login).await;
    env.wait_serving("grafana", Duration::from_secs(60)).await;
    let public = format!("grafana.{DOMAIN}");
    let mut failures = 0;

    // The tunnel relays a visitor who wrote a left-most address of their own.
    let relayed = format!("X-Forwarded-For: 6.6.6.6, {VISITOR}");
    let (body, code) = get(&env, &public, &["-H", &relayed, "-H", BAD]).await;
    assert_eq!(code, 401, "the visitor meets the auth server, `local` notwithstanding: {body}");
    failures += 1;
    let seen = last(&login);
    assert_eq!(header(&seen, "x-forwarded-for"), Some(VISITOR), "{seen:?}");
    assert_eq!(header(&seen, "x-real-ip"), Some(VISITOR), "{seen:?}");
    let (body, code) = get(&env, &public, &["-H", &relayed, "-H", GOOD]).await;
    assert_eq!(code, 200, "{body}");
    let echo = json(&body);
    assert_eq!(echo["headers"]["x-forwarded-for"], format!("6.6.6.6, {VISITOR}, 127.0.0.1"), "{echo}");
    assert_eq!(echo["headers"]["x-real-ip"], VISITOR, "{echo}");
    assert_eq!(echo["headers"]["remote-user"], REMOTE_USER, "{echo}");

    // The host itself, nothing relayed: still `local`, no login.
    let before = asked(&login);
    let (body, code) = get(&env, &public, &[]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(asked(&login), before, "a local client skips forward auth");

    // An untrusted peer (127.0.0.2) forging addresses: it stays itself, and relayed.
    let forged =
        ["--interface", "127.0.0.2", "-H", "X-Forwarded-For: 100.64.0.1", "-H", "CF-Connecting-IP: 100.64.0.1"];
    let (body, code) = get(&env, &public, &[&forged[..], &["-H", BAD]].concat()).await;
    assert_eq!(code, 401, "{body}");
    failures += 1;
    assert_eq!(header(&last(&login), "x-forwarded-for"), Some("127.0.0.2"));
    let (body, code) = get(&env, &public, &[&forged[..], &["-H", GOOD]].concat()).await;
    assert_eq!(code, 200, "{body}");
    let echo = json(&body);
    assert_eq!(
        (&echo["headers"]["x-forwarded-for"], &echo["headers"]["x-real-ip"]),
        (&"127.0.0.2".into(), &"127.0.0.2".into())
    );
    assert!(echo["headers"]["cf-connecting-ip"].is_null(), "an untrusted peer's CF-Connecting-IP is dropped: {echo}");

    // A burst of failed logins from three visitors, among successful ones, and
    // visitors that `allow` refuses (403 with the rule named).
    for i in 0..12 {
        let visitor = format!("X-Forwarded-For: 198.51.100.{}", 10 + i % 3);
        let (_, code) = get(&env, &public, &["-H", &visitor, "-H", BAD]).await;
        assert_eq!(code, 401);
        failures += 1;
        if i % 4 == 0 {
            let (_, code) = get(&env, &public, &["-H", &visitor, "-H", GOOD]).await;
            assert_eq!(code, 200);
        }
    }
    for _ in 0..3 {
        let (body, code) = get(&env, &format!("jellyfin.{DOMAIN}"), &["-H", "X-Forwarded-For: 198.51.100.99"]).await;
        assert_eq!(code, 403, "{body}");
        assert!(
            body.contains("198.51.100.99 (relayed by 127.0.0.1)") && body.contains("clients in 10.9.0.0/16"),
            "{body}"
        );
        failures += 1;
    }

    // The access log (combined): every request, with the visitor's address.
    let access = env.dir.path().join("access.log");
    let text = wait_lines(&access, failures + 7).await;
    assert!(text.lines().any(|l| l.starts_with(&format!("{VISITOR} - {REMOTE_USER} ["))), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("127.0.0.1 ") && l.contains("\" 401 ")), "{text}");
    let (matched, missed, report) = fail2ban(&access).await;
    assert_eq!(matched, failures, "every refused attempt, and only those:\n{report}");
    assert_eq!(matched + missed, text.lines().count(), "{report}");

    // Reload to JSON in another file (a reload also reopens it): fail2ban reads that too.
    let json_log = env.dir.path().join("access.json");
    let config = std::fs::read_to_string(&env.config).expect("config");
    let config = config
        .replace("access_format = \"combined\"", "access_format = \"json\"")
        .replace(&access.display().to_string(), &json_log.display().to_string());
    std::fs::write(&env.config, config).expect("write");
    let (code, out, err) = cli(&["reload", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{out}{err}");
    for i in 0..5 {
        let (_, code) =
            get(&env, &public, &["-H", &format!("X-Forwarded-For: 198.51.100.{}", 50 + i), "-H", BAD]).await;
        assert_eq!(code, 401);
    }
    let (_, code) = get(&env, &public, &["-H", &relayed, "-H", GOOD]).await;
    assert_eq!(code, 200);
    let text = wait_lines(&json_log, 6).await;
    let line = json(text.lines().last().expect("a line"));
    assert_eq!((&line["request"]["client_ip"], &line["request"]["remote_ip"]), (&VISITOR.into(), &"127.0.0.1".into()));
    assert_eq!(line["user_id"], REMOTE_USER);
    let (matched, missed, report) = fail2ban(&json_log).await;
    assert_eq!((matched, missed), (5, 1), "{report}");
}
