//! Deterministic fuzz-ish test: thousands of mutations of a valid file must never make
//! `parse` panic, and every result must keep the documented invariants.

use snirouter_config::parse;

const SEED_FILE: &str = r#"[tailscale]
socket = "/var/run/tailscale/tailscaled.sock"
magic_dns_suffix = "tailnet-1234.ts.net"
manage_services = false

[listen]
https = ["0.0.0.0:443", "[::]:443"]
proxy_protocol = ["127.0.0.1:8443"]
redirect_http = ["0.0.0.0:80"]

[cache]
dir = "/var/lib/snirouter"

[timeouts]
proxy_header = "5s"
tls_handshake = "10s"
request_header = "30s"
idle = "5m"
upstream_connect = "5s"
upstream_response = "60s"
cert_request = "10m"

[limits]
max_header_bytes = "5MB"
max_connections = 10000

[log]
format = "auto"
level = "info"

[services.grafana]
upstream = "http://127.0.0.1:3000"
upstream_host = "grafana.internal"

[services.media]
fqdn = "media.example.ts.net"
routes = [
  { path = "/sonarr", upstream = "http://127.0.0.1:8989", strip_prefix = true },
  { path = "/", upstream = "http://127.0.0.1:8080" },
]

[[services.arr.routes]]
path = "/radarr"
upstream = "http://[::1]:7878"
"#;

const ALPHABET: &[char] = &[
    '[', ']', '{', '}', '=', '"', '\'', ',', '.', '#', '\n', '\\', ' ', ':', '/', '?', '-', '_', '0', '9', 'a', 'Z',
    'é', '\u{0}', '\t', '@', '%', '*',
];

const TOKENS: &[&str] = &[
    "\"\"",
    "[]",
    "{}",
    "0",
    "-1",
    "true",
    "\"https://x:1\"",
    "\"0s\"",
    "\"99999999999999999999h\"",
    "\"0.0.0.0:443\"",
    "\"[::]:443\"",
    "[[services.x.routes]]",
    "[services.Bad]",
    "\"/\"",
    "\"//\"",
    "65536",
    "1e9",
    "\"5XB\"",
    "{ path = \"/\" }",
    "'''",
    "\"\"\"",
    "routes = []",
    "upstream = \"http://a:1\"",
];

fn mutate(rng: &mut fastrand::Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let ops = 1 + rng.usize(..4);
    for _ in 0..ops {
        let len = chars.len();
        match rng.usize(..7) {
            0 if len > 0 => {
                let at = rng.usize(..len);
                let n = 1 + rng.usize(..8).min(len - at - 1);
                chars.drain(at..(at + n).min(len));
            }
            1 => {
                let at = rng.usize(..=len);
                chars.insert(at, ALPHABET[rng.usize(..ALPHABET.len())]);
            }
            2 if len > 0 => {
                let at = rng.usize(..len);
                chars[at] = ALPHABET[rng.usize(..ALPHABET.len())];
            }
            3 => {
                let at = rng.usize(..=len);
                let token: Vec<char> = TOKENS[rng.usize(..TOKENS.len())].chars().collect();
                chars.splice(at..at, token);
            }
            4 => {
                // Duplicate a random line.
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let i = rng.usize(..lines.len());
                    let line = lines[i];
                    lines.insert(rng.usize(..=lines.len()), line);
                }
                chars = lines.join("\n").chars().collect();
            }
            5 => {
                // Swap two lines.
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.usize(..lines.len()), rng.usize(..lines.len()));
                    lines.swap(a, b);
                }
                chars = lines.join("\n").chars().collect();
            }
            _ => {
                // Replace a value after '=' with a token.
                let s: String = chars.iter().collect();
                let mut lines: Vec<String> = s.lines().map(str::to_owned).collect();
                if !lines.is_empty() {
                    let i = rng.usize(..lines.len());
                    if let Some((k, _)) = lines[i].split_once('=') {
                        lines[i] = format!("{k}= {}", TOKENS[rng.usize(..TOKENS.len())]);
                    }
                }
                chars = lines.join("\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn seed_file_is_valid() {
    let c = parse(SEED_FILE, "seed.toml").unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(c.services.len(), 3);
}

#[test]
fn mutations_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut err) = (0usize, 0usize);
    for round in 0..2000 {
        let text = mutate(&mut rng, SEED_FILE);
        let line_count = text.lines().count() + 1;
        match parse(&text, "fuzz.toml") {
            Ok(cfg) => {
                ok += 1;
                assert!(!cfg.services.is_empty(), "round {round}");
                assert!(!cfg.listen.https.is_empty() || !cfg.listen.proxy_protocol.is_empty(), "round {round}");
                for s in &cfg.services {
                    assert!(!s.routes.is_empty(), "round {round}");
                    assert!(s.routes.windows(2).all(|w| w[0].path.len() >= w[1].path.len()), "round {round}");
                    assert!(s.routes.iter().all(|r| r.path.starts_with('/')), "round {round}");
                }
                let _ = cfg.check_fqdns("tailnet-1234.ts.net");
            }
            Err(diags) => {
                err += 1;
                assert!(!diags.is_empty(), "round {round}: empty Err");
                for d in &diags {
                    assert!(d.line <= line_count, "round {round}: line {} beyond the file: {d}", d.line);
                    assert_eq!(d.line == 0, d.column == 0, "round {round}: {d}");
                    assert!(!d.message.is_empty(), "round {round}");
                    let _ = d.to_string();
                }
            }
        }
    }
    // The mutations exercise both outcomes.
    assert!(ok > 50 && err > 500, "ok={ok} err={err}");
}
