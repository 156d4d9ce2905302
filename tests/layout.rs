//! The source tree keeps the shape docs/architecture.md describes: modules import only
//! downward (no cycle between any two modules of `src/`), and no source file outgrows what a
//! reader can hold (data tables and test files aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/net/conn/mod.rs` -> `net::conn`; `src/lib.rs` -> ``.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its inline `mod tests` (tests may reach
/// anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules `text` (the code of module `this`) refers to through `crate::…` or `super::…`,
/// resolved to the longest known module path.
fn references(this: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let resolve = |path: &str| -> Option<String> {
        let segs: Vec<&str> = path.split("::").collect();
        (1..=segs.len())
            .rev()
            .map(|n| segs[..n].join("::"))
            .find(|m| known.contains(m))
    };
    // `super` of `a::b` is `a`, whether its file is `a/b.rs` or `a/b/mod.rs`.
    let parent: Vec<&str> = this.split("::").collect();
    let parent = parent[..parent.len().saturating_sub(1)].join("::");
    let mut out = BTreeSet::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':'
                })
                .collect();
            let path = path.trim_end_matches(':');
            let full = if base.is_empty() {
                path.to_owned()
            } else {
                format!("{base}::{path}")
            };
            if let Some(m) = resolve(&full) {
                // A module using its own children, or itself, is not a cycle.
                if m != this && !m.starts_with(&format!("{this}::")) && !this.is_empty() {
                    out.insert(m);
                }
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let known: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    files
        .iter()
        .map(|f| {
            let this = module_of(&src, f);
            let text = std::fs::read_to_string(f).unwrap();
            let deps = references(&this, &code(&text), &known);
            (this, deps)
        })
        .collect()
}

/// A cycle in `graph`, if any (depth-first).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            // A parent module declaring or re-exporting its children is not an import.
            if next.starts_with(&format!("{node}::")) {
                continue;
            }
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_import_only_downward() {
    let graph = graph();
    assert!(graph.contains_key("proxy") && graph["proxy"].contains("runtime"));
    if let Some(c) = cycle(&graph) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".into()].into());
    g.insert("b".into(), ["c".into()].into());
    g.insert("c".into(), ["a".into()].into());
    assert_eq!(cycle(&g).unwrap().join(" -> "), "a -> b -> c -> a");
    g.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle(&g), None);
}

/// Longest a source file may be: past this a reader cannot hold it, and it is time to split by
/// concern. Test files (`tests.rs`) and the built-in data tables are exempt.
const MAX_LINES: usize = 700;

#[test]
fn no_source_file_outgrows_a_reader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("mock/src"), &mut files);
    let exempt = |f: &Path| {
        let name = f.file_name().unwrap().to_string_lossy();
        name == "tests.rs" || f.ends_with("migration/scopes/table.rs")
    };
    let long: Vec<String> = files
        .iter()
        .filter(|f| !exempt(f))
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split by concern: {long:?}");
}
