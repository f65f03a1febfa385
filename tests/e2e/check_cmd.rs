//! `snirouter check` and `run` refuse a bad config with every problem, its key path and
//! line; a good config passes.

use std::process::Command;

use crate::harness::temp_dir;

fn snirouter(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_snirouter")).args(args).output().expect("run snirouter")
}

#[test]
fn check_reports_every_problem_with_line_and_key_path() {
    let dir = temp_dir("check");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[listen]
https = ["0.0.0.0:443", "127.0.0.1:443"]

[services.grafana]
upstream = "http://127.0.0.1:3000"
upstreem = "x"

[services.media]
routes = [
  { path = "/", upstream = "http://127.0.0.1:8080" },
  { path = "/", upstream = "ftp://127.0.0.1:8989" },
]
"#,
    )
    .expect("write");
    let out = snirouter(&["check", "--config", path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "bad.toml:2:", // overlapping listeners
        "bad.toml:6:", // unknown key
        "services.grafana.upstreem",
        "services.media.routes[1]", // never-matching duplicate / bad scheme
        "bad.toml:11:",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    // `run` refuses the same file with the same messages and does not start.
    let out = snirouter(&["run", "--config", path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let run_err = String::from_utf8_lossy(&out.stderr);
    assert!(run_err.contains("services.grafana.upstreem"), "{run_err}");
    assert!(run_err.contains("refusing to start"), "{run_err}");
}

#[test]
fn check_accepts_the_brief_example() {
    let dir = temp_dir("check-ok");
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        r#"[tailscale]
socket = "/var/run/tailscale/tailscaled.sock"

[listen]
https = ["0.0.0.0:443"]
proxy_protocol = ["127.0.0.1:8443"]

[cache]
dir = "/var/lib/snirouter"

[services.grafana]
upstream = "http://127.0.0.1:3000"

[services.media]
routes = [
  { path = "/sonarr", upstream = "http://127.0.0.1:8989" },
  { path = "/", upstream = "http://127.0.0.1:8080" },
]
"#,
    )
    .expect("write");
    let out = snirouter(&["check", "--config", path.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 service(s)"));
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = snirouter(&["check", "--config", "/nonexistent/snirouter.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/snirouter.toml"), "{err}");
}

#[test]
fn demo_runs_end_to_end_and_cleans_up() {
    let dir = temp_dir("demo");
    let work = dir.path().join("work");
    let out = snirouter(&["demo", "--once", "--dir", work.to_str().expect("utf8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("demo: all 14 services answered over HTTPS"), "{stdout}");
    assert_eq!(stdout.matches(" 200 ").count(), 14, "{stdout}");
    assert!(stdout.contains("curl --cacert"), "{stdout}");
    assert!(!work.join("tailscaled.sock").exists(), "the simulated socket is removed");
}

const SMALL: &str =
    "[listen]\nhttps = [\"127.0.0.1:8443\"]\n[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n";

/// `check --print` writes the JSON alone to stdout (so `| jq` works); the "ok" line goes
/// to standard error.
#[test]
fn check_print_is_json_alone_on_stdout() {
    let dir = temp_dir("check-print");
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, SMALL).expect("write");
    let out = snirouter(&["check", "--print", "--config", path.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON: {e}\n{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(json["services"][0]["name"], "grafana");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ok — 1 service(s)"));
}

/// Output into a pipe whose reader has gone (`| head -1`, a pager quit early) ends the
/// command quietly: no panic, no backtrace, exit status 0.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let dir = temp_dir("check-pipe");
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, SMALL).expect("write");
    let (err, rc) = (dir.path().join("stderr"), dir.path().join("rc"));
    // `true` exits at once; the router writes only after it has (the sleep), into a pipe
    // without a reader.
    let script = format!(
        "(sleep 0.3; RUST_BACKTRACE=1 {} check --print --config {} 2>{}; echo $? >{}) | true",
        env!("CARGO_BIN_EXE_snirouter"),
        path.display(),
        err.display(),
        rc.display()
    );
    let status = Command::new("sh").arg("-c").arg(&script).status().expect("sh");
    assert!(status.success());
    let stderr = std::fs::read_to_string(&err).expect("stderr");
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&rc).expect("rc").trim(), "0");
}

/// `error_pages` that is not there is a warning (the same file is checked at a NixOS build
/// on another machine); one that is a file is an error.
#[test]
fn error_pages_are_checked_on_the_host_not_when_parsing() {
    let dir = temp_dir("check-pages");
    let page = dir.path().join("404.html");
    std::fs::write(&page, "x").expect("write");
    let path = dir.path().join("c.toml");
    let config = |pages: &str| format!("{SMALL}error_pages = \"{pages}\"\n");
    std::fs::write(&path, config("/nonexistent/snirouter-errors")).expect("write");
    let out = snirouter(&["check", "--config", path.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: services.grafana.error_pages: /nonexistent/snirouter-errors not checked here"),
        "{err}"
    );
    std::fs::write(&path, config(&page.display().to_string())).expect("write");
    let out = snirouter(&["check", "--config", path.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is a file, not a directory"), "{err}");
}

/// Warnings are shown with the errors, not only once every error is fixed.
#[test]
fn warnings_are_shown_beside_errors() {
    let dir = temp_dir("check-both");
    let path = dir.path().join("c.toml");
    let text = "[listen]\nproxy_protocol = [\"127.0.0.1:8443\"]\n[domains.\"example.com\"]\ncert_dir = \"/var/lib/acme/example.com\"\n[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\nnames = [\"grafana.example.com\"]\nallow = [\"100.64.0.0/10\"]\nupstreem = \"x\"\n";
    std::fs::write(&path, text).expect("write");
    let out = snirouter(&["check", "--config", path.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("services.grafana.upstreem"), "the error: {err}");
    assert!(err.contains("warning: ") && err.contains("no listener can reach the public names"), "the warning: {err}");
}
