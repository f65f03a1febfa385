//! Hostile HTTP/2, frame by frame (`h2attack.py`, PyPI `h2`): slow readers, Rapid Reset
//! paced and unpaced, MadeYouReset, CONTINUATION and SETTINGS/PING floods, an HPACK
//! bomb, slow ClientHellos. Each attack is bounded in time; each test asserts the
//! router's memory growth, the upstream connections it opened, the log it wrote, and
//! that an ordinary client is still served.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/hostile/h2attack.py")
}

fn rss_kib(env: &Env) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", env.router().child.id())).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn log_bytes(env: &Env) -> usize {
    env.router().logs().len()
}

/// Starts `attack` against `name` (extra arguments after it); the child prints JSON.
fn attack(env: &Env, name: &str, attack: &str, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new("python3")
        .arg(script())
        .arg(env.https.to_string())
        .arg(fqdn(name))
        .arg(&env.ca)
        .arg(attack)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 h2attack.py (needs the PyPI h2 package; .ci/run installs it)")
}

async fn report(child: tokio::process::Child) -> serde_json::Value {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the attack ends in time")
        .expect("attack output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "h2attack.py failed: {text}");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("attack report {text:?}: {e}"))
}

async fn still_serves(env: &Env) {
    let out = curl(env, "grafana", "/after-attack", &["--http2"]).await;
    let (_, status) = body_and_status(&out);
    assert_eq!(status, 200, "an ordinary client after the attack: {}", String::from_utf8_lossy(&out.stderr));
}

/// 8 connections open every window and ask for 100 MB on 200 streams each, then never
/// read: the router holds at most its per-client budget (32 MiB) and the state of the
/// streams it accepted, nowhere near the ~570 KiB per stream of an unbounded send buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_grow_the_router_past_its_budget() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", WAIT).await;
    still_serves(&env).await;
    let before = rss_kib(&env);
    let ready = env.dir.path().join("stalled");
    let ready_arg = ready.to_string_lossy().into_owned();
    let child = attack(
        &env,
        "grafana",
        "slow-reader",
        &[
            "--conns",
            "8",
            "--streams",
            "200",
            "--path",
            "/bytes/100000000",
            "--seconds",
            "6",
            "--ready-file",
            &ready_arg,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the slow reader never opened its streams");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Sample while the streams stay stalled: the growth must have stopped at the budget.
    let mut peak = 0;
    for _ in 0..30 {
        peak = peak.max(rss_kib(&env));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    still_serves(&env).await;
    let got = report(child).await;
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!("slow reader: {got}; router grew {growth_mib} MiB");
    assert!(growth_mib <= 64, "1,600 stalled streams grew the router by {growth_mib} MiB (limit 64): {got}");
    let metrics = crate::limits::admin_metrics(&env).await;
    assert!(
        metrics.lines().any(|l| l.starts_with("snirouter_buffer_waits_total{") && !l.ends_with(" 0")),
        "the waits for the client are counted:\n{metrics}"
    );
}

/// Streams opened and cancelled in batches of 10, each batch only once the last was
/// read (under h2's limit of 20 pending resets), for 10 s on 2 connections at a time,
/// while an ordinary client asks the same upstream every 250 ms — with the upstream
/// capped at 64 requests in flight (`limits.max_upstream_connections`), where every
/// slot an abandoned request kept would be one an ordinary request waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_rapid_reset_neither_floods_the_upstream_nor_starves_others() {
    let mut opts = EnvOptions::default();
    opts.extra_services = "[limits]\nmax_upstream_connections = 64\n".into();
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let upstream = &env.backends[0];
    let connections_before = upstream.connections();
    let log_before = log_bytes(&env);
    let child = attack(&env, "grafana", "paced-reset", &["--conns", "2", "--seconds", "10", "--path", "/delay/5"]);
    let mut probes = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let t = Instant::now();
        let out = curl(&env, "grafana", "/probe", &["--max-time", "10"]).await;
        probes.push((body_and_status(&out).1, t.elapsed()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let got = report(child).await;
    let opened = upstream.connections() - connections_before;
    eprintln!("paced reset: {got}; {opened} upstream connections; probes {probes:?}");
    assert!(got["streams"].as_u64().unwrap_or(0) > 1000, "the attack ran: {got}");
    assert!(opened <= 100, "{opened} upstream connections for {} reset streams: {got}", got["streams"]);
    let failed: Vec<_> = probes.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "ordinary requests failed during the attack: {failed:?} of {}", probes.len());
    let logged = log_bytes(&env) - log_before;
    assert!(logged <= 16 * 1024, "{logged} bytes of log for 10 s of paced resets");
    still_serves(&env).await;
}

/// 5 s of unpaced Rapid Reset (batches of 100): h2 sends GOAWAY, the attacker
/// reconnects, and the log gets a summary per client and interval, not a line per
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_refused_with_a_quiet_log() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", WAIT).await;
    let log_before = log_bytes(&env);
    let got = report(attack(&env, "grafana", "rapid-reset", &["--seconds", "5"])).await;
    assert!(got["goaway"]["ENHANCE_YOUR_CALM"].as_u64().unwrap_or(0) >= 1, "the attacker is told to calm down: {got}");
    let logs = env
        .router()
        .wait_log("the summary line", Duration::from_secs(15), |l| l.contains("hostile HTTP/2 clients"))
        .await;
    let logged = logs.len() - log_before;
    eprintln!("rapid reset: {got}; {logged} bytes of log");
    assert!(logged <= 16 * 1024, "{logged} bytes of log for 5 s of Rapid Reset:\n{}", &logs[log_before..]);
    let metrics = crate::limits::admin_metrics(&env).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("snirouter_h2_refusals_total{kind=\"reset_flood\"}") && !l.ends_with(" 0")),
        "counted by kind:\n{metrics}"
    );
    still_serves(&env).await;
}

/// The other attacks, 2 s each: the router neither grows nor logs much, and serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_bombs_and_self_resets_stay_harmless() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", WAIT).await;
    still_serves(&env).await;
    for kind in ["made-you-reset", "continuation-flood", "hpack-bomb", "settings-flood", "ping-flood"] {
        let before = rss_kib(&env);
        let log_before = log_bytes(&env);
        let got = report(attack(&env, "grafana", kind, &["--seconds", "2"])).await;
        let growth_mib = rss_kib(&env).saturating_sub(before) / 1024;
        eprintln!("{kind}: {got}; grew {growth_mib} MiB, {} bytes of log", log_bytes(&env) - log_before);
        assert!(growth_mib <= 16, "{kind}: the router grew by {growth_mib} MiB: {got}");
        let logged = log_bytes(&env) - log_before;
        assert!(logged <= 16 * 1024, "{kind}: {logged} bytes of log");
        still_serves(&env).await;
    }
}

/// 200 connections that trickle a ClientHello a byte a second are all closed by
/// `timeouts.tls_handshake`, with one summary line instead of one per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_hellos_are_cut_off_quietly() {
    let mut opts = EnvOptions::default();
    opts.timeouts = "tls_handshake = \"2s\"\n".into();
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let log_before = log_bytes(&env);
    let got = report(attack(&env, "grafana", "slow-hellos", &["--conns", "200", "--seconds", "8"])).await;
    assert_eq!(got["closed_by_server"], got["connections"], "every slow handshake is closed: {got}");
    let logs = env
        .router()
        .wait_log("the handshake summary", Duration::from_secs(15), |l| l.contains("TLS handshakes not completed"))
        .await;
    let logged = logs.len() - log_before;
    eprintln!("slow hellos: {got}; {logged} bytes of log");
    assert!(logged <= 4 * 1024, "{logged} bytes of log for 200 slow handshakes:\n{}", &logs[log_before..]);
    still_serves(&env).await;
}
