//! The shape of the code, checked: no crate has an import cycle between its modules,
//! and no function outside tests is longer than a screen ([`MAX_FUNCTION_LINES`]).
//!
//! A module depends on another when its code (not its doc comments, not its
//! `#[cfg(test)]` tail) names `crate::other` — directly, or inside a
//! `use crate::{a, b::c}` group — or, in a directory module, `super::sibling`. The
//! crate root is left out: it only declares modules and re-exports. A cycle is a
//! strongly connected set of two or more modules; the test names every one it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `crate::NAME` and `super::NAME` references in `code`, including `{a, b::c}` groups.
fn references(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `mycrate::` or `self::super::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The code of a file without comments and without its `#[cfg(test)]` tail.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text,
    };
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| l.split(" // ").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module name → the module names it refers to, for the crate at `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: Vec<(String, PathBuf, Option<String>)> = Vec::new();
    for entry in std::fs::read_dir(src).expect("src dir").flatten() {
        let path = entry.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        if path.is_dir() {
            for sub in std::fs::read_dir(&path).expect("module dir").flatten() {
                let p = sub.path();
                let s = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
                if p.extension().is_some_and(|e| e == "rs") && s != "mod" {
                    files.push((format!("{stem}::{s}"), p, Some(stem.clone())));
                }
            }
            if path.join("mod.rs").exists() {
                files.push((stem.clone(), path.join("mod.rs"), None));
            }
        } else if path.extension().is_some_and(|e| e == "rs") && !["lib", "main"].contains(&stem.as_str()) {
            files.push((stem, path, None));
        }
    }
    let modules: BTreeSet<String> = files.iter().map(|(m, _, _)| m.clone()).collect();
    let mut g = BTreeMap::new();
    for (module, path, parent) in &files {
        let code = code_of(path);
        let mut deps: BTreeSet<String> =
            references(&code, "crate::").into_iter().filter(|d| modules.contains(d) && d != module).collect();
        if let Some(parent) = parent {
            for name in references(&code, "super::") {
                let sibling = format!("{parent}::{name}");
                deps.insert(if modules.contains(&sibling) { sibling } else { parent.clone() });
            }
        }
        g.insert(module.clone(), deps);
    }
    g
}

/// Strongly connected sets of two or more modules (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                s.low.entry(v).and_modify(|l| *l = (*l).min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                s.low.entry(v).and_modify(|l| *l = (*l).min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                set.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.found.push(set);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn the_checker_finds_a_cycle_and_reads_groups() {
    let refs = references("use crate::{alpha, beta::X};\nlet x = crate::gamma::f(); mycrate::delta", "crate::");
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["alpha", "beta", "gamma"]);
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    g.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    g.insert("d".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycles(&g), [["a", "b", "c"]]);
}

#[test]
fn no_crate_has_an_import_cycle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).expect("crates dir").flatten() {
        let src = entry.path().join("src");
        if !src.is_dir() {
            continue;
        }
        checked += 1;
        let name = entry.file_name().to_string_lossy().into_owned();
        for cycle in cycles(&graph(&src)) {
            found.push(format!("{name}: {}", cycle.join(" ↔ ")));
        }
    }
    assert!(checked >= 8, "only {checked} crates found under {}", crates.display());
    assert!(found.is_empty(), "import cycles (move the shared item into a module of its own):\n{}", found.join("\n"));
}

/// "Functions that fit on a screen": about 80 lines, with a little room for a long
/// message or match arm. Test code (`#[cfg(test)]` tails, `tests/`) is not counted.
const MAX_FUNCTION_LINES: usize = 85;

/// `(name, first line, length)` of every rustfmt-formatted `fn` with a body in `text`
/// before its `#[cfg(test)]` tail: from the `fn` line to the `}` at its indentation.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.split('\n').collect();
    let end = lines.iter().position(|l| l.starts_with("#[cfg(test)]")).unwrap_or(lines.len());
    let mut out = Vec::new();
    for (i, line) in lines[..end].iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else { continue };
        let qualifiers = ["pub", "pub(crate)", "pub(super)", "async", "const", "unsafe"];
        if !words[..at].iter().all(|w| qualifiers.contains(w)) || line.trim_end().ends_with(';') {
            continue;
        }
        let name: String =
            words.get(at + 1).unwrap_or(&"").chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let close = format!("{indent}}}");
        if let Some(len) = lines[i + 1..end].iter().position(|l| *l == close) {
            out.push((name, i + 1, len + 2));
        }
    }
    out
}

#[test]
fn the_function_measure_counts_from_fn_to_its_brace() {
    let text = "fn a() {\n    x;\n}\n\npub(crate) async fn b(\n    y: u8,\n) -> u8 {\n    y\n}\nfn c();\n#[cfg(test)]\nfn t() {\n}\n";
    assert_eq!(functions(text), [("a".to_owned(), 1, 3), ("b".to_owned(), 5, 5)]);
}

#[test]
fn functions_fit_on_a_screen() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut long = Vec::new();
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&crates).expect("crates dir").flatten().map(|e| e.path().join("src")).collect();
    let mut counted = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for (name, line, len) in functions(&text) {
                    counted += 1;
                    if len > MAX_FUNCTION_LINES {
                        long.push(format!("{}:{line} {name}: {len} lines", path.display()));
                    }
                }
            }
        }
    }
    assert!(counted > 500, "only {counted} functions found under {}", crates.display());
    assert!(
        long.is_empty(),
        "functions longer than {MAX_FUNCTION_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

/// The crate table of `docs/architecture.md`: (crate name, its "start reading at" cell).
fn documented_crates(doc: &str) -> Vec<(String, String)> {
    doc.lines()
        .filter(|l| l.starts_with("| `snirouter"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.split('`').nth(1)?.to_owned();
            Some((name, cells.get(3)?.to_string()))
        })
        .collect()
}

/// The crate table names every crate, and every file or directory it says to start
/// reading at exists in that crate.
#[test]
fn the_architecture_docs_name_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).expect("docs/architecture.md");
    let table = documented_crates(&doc);
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).expect("crates").flatten() {
        let manifest = std::fs::read_to_string(entry.path().join("Cargo.toml")).unwrap_or_default();
        let Some(name) =
            manifest.lines().find_map(|l| l.strip_prefix("name = ")).map(|n| n.trim_matches('"').to_owned())
        else {
            continue;
        };
        let Some((_, files)) = table.iter().find(|(n, _)| *n == name) else {
            problems.push(format!("crate {name} is not in the crate table"));
            continue;
        };
        let src = entry.path().join("src");
        for file in files.split('`').skip(1).step_by(2) {
            if (file.ends_with(".rs") || file.ends_with(".html") || file.ends_with('/')) && !src.join(file).exists() {
                problems.push(format!("{name}: `{file}` is named but {} does not exist", src.join(file).display()));
            }
        }
    }
    assert!(problems.is_empty(), "docs/architecture.md is out of date:\n{}", problems.join("\n"));
}
