//! Issue 15 §1: local clients on the router's own host reach every service by its real
//! name with certificate verification on (a Tailscale Service host cannot reach its own
//! Services). `snirouter hosts` prints the hosts lines; a client in a private mount
//! namespace whose /etc/hosts holds them is the local client; `doctor` checks it.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use super::harness::*;
use super::operate::{cfg, cli};

/// Runs `argv` in a private mount namespace whose `/etc/hosts` is `hosts`. `None` when
/// this machine cannot make one (no `unshare`, or not allowed to mount).
async fn in_namespace(hosts: &Path, argv: &[&str]) -> Option<Output> {
    let run = tokio::process::Command::new("unshare")
        .args(["-m", "sh", "-c", "mount --bind \"$0\" /etc/hosts && exec \"$@\""])
        .arg(hosts)
        .args(argv)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run).await.expect("bounded").ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refused =
        stderr.contains("unshare failed") || stderr.contains("mount: ") || stderr.contains("Operation not permitted");
    (!refused).then_some(out)
}

#[tokio::test]
async fn local_clients_reach_every_name_through_the_generated_hosts_lines() {
    // tailscaled before 1.96: the host cannot reach its own Service addresses.
    let mut opts = EnvOptions::default();
    opts.sim.version = "1.94.2".to_owned();
    let env = Env::start(opts).await;
    for name in SERVICES {
        env.wait_serving(name, Duration::from_secs(60)).await;
    }
    let (code, lines, err) = cli(&["hosts", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "snirouter hosts failed: {err}");
    for name in SERVICES {
        for addr in ["127.0.0.1", "::1"] {
            assert!(lines.contains(&format!("\n{addr} {}\n", fqdn(name))), "no {addr} line for {name}:\n{lines}");
        }
    }
    // Outside the namespace the names do not resolve: one warning, with the fix.
    let (_, outside, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    let warn = outside.lines().find(|l| l.contains("hairpin (local clients)")).unwrap_or_else(|| panic!("{outside}"));
    assert!(warn.starts_with("WARN"), "{outside}");
    assert!(outside.contains("snirouter hosts >> /etc/hosts"), "the fix names the command:\n{outside}");

    let hosts = env.dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n::1 localhost\n{lines}")).expect("write hosts");
    if in_namespace(&hosts, &["true"]).await.is_none() {
        eprintln!("SKIP local_clients_reach_every_name…: this machine cannot make a private mount namespace");
        return;
    }
    let ca = env.ca.to_str().expect("utf-8 path");
    for name in SERVICES {
        let url = format!("https://{}:{}/", fqdn(name), env.https.port());
        let curl = ["curl", "-sS", "--max-time", "10", "--cacert", ca, "-w", "\n%{http_code}", &url];
        let out = in_namespace(&hosts, &curl).await.expect("namespace");
        let (body, status) = body_and_status(&out);
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(&body).expect("backend JSON");
        assert_eq!(v["service"], name, "{name} reached the wrong backend");
    }
    let doctor = [env!("CARGO_BIN_EXE_snirouter"), "doctor", "--config", cfg(&env)];
    let out = in_namespace(&hosts, &doctor).await.expect("namespace");
    let report = String::from_utf8_lossy(&out.stdout);
    for name in SERVICES {
        let line = report
            .lines()
            .find(|l| l.contains(&format!("hairpin: {}", fqdn(name))))
            .unwrap_or_else(|| panic!("no hairpin check for {name}:\n{report}"));
        assert!(line.starts_with("PASS"), "{line}\n{report}");
        assert!(line.contains(&format!("https://{}:{}/", fqdn(name), env.https.port())), "{line}");
    }
}

/// From tailscaled 1.96 a host reaches the Services it hosts natively (terminated
/// locally): without hosts lines `doctor` says so instead of warning.
#[tokio::test]
async fn doctor_knows_that_tailscaled_1_96_reaches_its_own_services() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", Duration::from_secs(60)).await;
    let (_, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    let line = out.lines().find(|l| l.contains("hairpin (local clients)")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("PASS"), "{out}");
    assert!(out.contains("terminates this host's own active Service addresses locally (since 1.96)"), "{out}");
}
