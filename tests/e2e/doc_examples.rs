//! Every example in the documentation works as written: each ```toml block of
//! `README.md` and `docs/*.md` passes `snirouter check` (a fragment — one service, one
//! section — inside the smallest config around it), and each ```nix block evaluates with
//! the NixOS module under the real module system (a flake only parses).

use std::path::Path;
use std::process::Command;

use crate::harness::temp_dir;
use crate::nix_eval::{Nix, repo_root};

/// A fenced block: file, line of the fence, language, text.
struct Block {
    file: String,
    line: usize,
    lang: String,
    text: String,
}

fn blocks() -> Vec<Block> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read doc");
        let name = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
        // (line of the fence, language, text so far) of the block being read.
        let mut open: Option<(usize, String, String)> = None;
        for (i, line) in text.lines().enumerate() {
            if let Some((at, lang, body)) = open.take() {
                if line.starts_with("```") {
                    out.push(Block { file: name.clone(), line: at, lang, text: body });
                } else {
                    open = Some((at, lang, body + line + "\n"));
                }
            } else if let Some(lang) = line.strip_prefix("```").filter(|l| *l == "toml" || *l == "nix") {
                open = Some((i + 1, lang.to_owned(), String::new()));
            }
        }
    }
    out
}

/// The first line that is neither blank nor a comment.
fn first_statement(text: &str) -> &str {
    text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("")
}

/// A TOML example inside the smallest config that completes it: a listener unless it
/// has `[listen]`, a service unless it defines one, and bare keys under that service.
fn complete_toml(text: &str) -> String {
    let mut out = String::new();
    if !text.contains("[listen]") {
        out.push_str("[listen]\nproxy_protocol = [\"127.0.0.1:8443\"]\n\n");
    }
    if first_statement(text).starts_with('[') {
        if !text.contains("[services.") {
            out.push_str("[services.example]\nupstream = \"http://127.0.0.1:9\"\n");
            if text.contains("[domains.") {
                out.push_str("names = [\"example.example.com\"]\n");
            }
            out.push('\n');
        }
    } else {
        out.push_str("[services.example]\nupstream = \"http://127.0.0.1:9\"\n");
    }
    out.push_str(text);
    out
}

#[test]
fn every_toml_example_in_the_docs_passes_check() {
    let dir = temp_dir("doc-toml");
    let mut failures = Vec::new();
    let mut checked = 0;
    for b in blocks().into_iter().filter(|b| b.lang == "toml") {
        let config = complete_toml(&b.text);
        let path = dir.path().join(format!("example-{checked}.toml"));
        std::fs::write(&path, &config).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_snirouter"))
            .args(["check", "--config", path.to_str().expect("utf-8")])
            .output()
            .expect("snirouter check");
        checked += 1;
        if !out.status.success() {
            failures.push(format!(
                "{}:{}:\n{}\n--- as checked ---\n{config}",
                b.file,
                b.line,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(checked >= 10, "only {checked} TOML examples found");
    assert!(failures.is_empty(), "documentation examples that `snirouter check` refuses:\n\n{}", failures.join("\n\n"));
}

#[test]
fn every_nix_example_in_the_docs_evaluates_with_the_module() {
    let Some(nix) = Nix::find() else {
        eprintln!("SKIPPED: nix-instantiate is not installed (install nix-bin; .ci/run does)");
        return;
    };
    let dir = temp_dir("doc-nix");
    std::fs::create_dir_all(dir.path().join("error-pages")).expect("mkdir");
    let mut failures = Vec::new();
    for (i, b) in blocks().into_iter().filter(|b| b.lang == "nix").enumerate() {
        let file = dir.path().join(format!("example-{i}.nix"));
        let is_module = first_statement(&b.text).starts_with('{');
        if is_module && b.text.contains("inputs") {
            // A flake: parse it (evaluating it needs the network).
            std::fs::write(&file, &b.text).expect("write");
            let out = nix.run(&["--parse", file.to_str().expect("utf-8")]);
            if !out.status.success() {
                failures.push(format!("{}:{}: {}", b.file, b.line, String::from_utf8_lossy(&out.stderr)));
            }
            continue;
        }
        let module = if is_module { b.text.clone() } else { format!("{{ lib, pkgs, ... }}:\n{{\n{}\n}}\n", b.text) };
        std::fs::write(&file, &module).expect("write");
        let extra = format!("{{ imports = [ {} ]; services.snirouter.enable = true; }}", file.display());
        match nix.eval("toml", &["--arg", "withExample", "false", "--arg", "extraConfig", &extra]) {
            Ok(_) => {}
            Err(e) => failures.push(format!("{}:{}:\n{e}\n--- as evaluated ---\n{module}", b.file, b.line)),
        }
    }
    assert!(failures.is_empty(), "documentation examples the NixOS module refuses:\n\n{}", failures.join("\n\n"));
}

#[test]
fn fragments_are_completed_minimally() {
    let service = complete_toml("[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n");
    assert!(service.starts_with("[listen]") && !service.contains("[services.example]"), "{service}");
    let key = complete_toml("allow = [\"tag:monitoring\"]\n");
    assert!(key.contains("[services.example]\nupstream = \"http://127.0.0.1:9\"\nallow"), "{key}");
    assert!(Path::new(&repo_root()).join("docs").is_dir());
}
