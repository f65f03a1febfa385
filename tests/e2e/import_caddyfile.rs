//! `snirouter import-caddyfile`: the owner's gateway Caddyfile converts with nothing left
//! out and the result passes `snirouter check`; untranslated directives are listed with
//! their lines and exit code 2.

use std::process::Command;

use crate::harness::temp_dir;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../caddyfile/tests/fixtures/owner.Caddyfile");

fn snirouter(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_snirouter")).args(args).output().expect("run snirouter")
}

#[test]
fn owner_caddyfile_imports_and_checks() {
    let dir = temp_dir("import");
    let out_path = dir.path().join("imported.toml");
    let out = snirouter(&["import-caddyfile", FIXTURE, "--output", out_path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("14 service(s) translated, nothing left out"), "{stderr}");
    assert!(!stderr.contains("NOT TRANSLATED"), "{stderr}");

    // snirouter check wants the error pages directory to exist.
    let pages = dir.path().join("error-pages");
    std::fs::create_dir_all(&pages).expect("mkdir");
    let toml = std::fs::read_to_string(&out_path).expect("read output");
    let toml = toml.replace("/var/lib/caddy/error-pages", pages.to_str().expect("utf-8"));
    std::fs::write(&out_path, toml).expect("write");
    let check = snirouter(&["check", "--config", out_path.to_str().expect("utf-8")]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("ok — 14 service(s)"));
}

#[test]
fn untranslated_directives_are_listed_with_lines() {
    let dir = temp_dir("import-bad");
    let caddyfile = dir.path().join("Caddyfile");
    std::fs::write(&caddyfile, "grafana.example.com {\n\tencode gzip\n\treverse_proxy 127.0.0.1:3000\n}\n")
        .expect("write");
    let out = snirouter(&["import-caddyfile", caddyfile.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Caddyfile:2: NOT TRANSLATED: `encode gzip`"), "{stderr}");
    assert!(stdout.contains("#   line 2: `encode gzip`"), "{stdout}");
    assert!(stdout.contains("[services.grafana]\nupstream = \"http://127.0.0.1:3000\""), "{stdout}");

    std::fs::write(&caddyfile, "a {\n\treverse_proxy \"x\n").expect("write");
    let out = snirouter(&["import-caddyfile", caddyfile.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Caddyfile:2: line 2: unterminated \" quote"));
}
