//! The module graph of `src/` has no circles: no file imports, directly or
//! through others, a file that imports it back. A file using its own
//! parent's items (`super::X`) is the ordinary shape of a Rust module and
//! is not counted; a parent using its children (`child::X`) is.
//!
//! Read from the source text: `crate::…`, `super::…` and `self::…` paths
//! (grouped `{…}` imports too) and `child::…` paths of the children a file
//! declares with `mod child;`, each resolved to the file that defines the
//! longest matching module. Inline `#[cfg(test)] mod tests { … }` blocks
//! are left out (tests may reach anywhere). Run it with
//! `cargo test --test module_graph`; a failure prints each circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root (`["store", "postgres"]`).
type ModPath = Vec<String>;

/// Every `.rs` file under `src/` (but `main.rs`) by module path.
fn modules(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: ModPath = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match parts.last().map(String::as_str) {
                Some("main") if parts.len() == 1 => continue,
                Some("lib") if parts.len() == 1 => parts.clear(),
                Some("mod") => {
                    parts.pop();
                }
                _ => {}
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The source without comments, string contents and inline test modules.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths that follow `prefix::` at every place it starts a path
/// (grouped imports expanded one level: `prefix::{a::b, c}`).
fn paths_after(code: &str, prefix: &str) -> Vec<ModPath> {
    let needle = format!("{prefix}::");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find(&needle) {
        let at = from + found;
        from = at + needle.len();
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| is_ident(c) || c == ':')
        {
            continue; // part of a longer path or name
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let path = path_of(item.trim());
                if !path.is_empty() {
                    out.push(path);
                }
            }
        } else {
            let path = path_of(rest);
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
    out
}

/// The leading `a::b::c` of `s`.
fn path_of(s: &str) -> ModPath {
    let mut path = Vec::new();
    let mut rest = s;
    loop {
        let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        path.push(rest[..len].to_string());
        match rest[len..].strip_prefix("::") {
            Some(next) if !next.starts_with('{') && !next.starts_with('*') => rest = next,
            _ => break,
        }
    }
    path
}

/// The module a path names: its longest prefix that is a file's module.
fn resolve(path: &[String], files: &BTreeMap<ModPath, PathBuf>) -> Option<ModPath> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| files.contains_key(p))
}

/// Children declared with `mod name;` in `code`.
fn children(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub(super) "))
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
            name.chars().all(is_ident).then(|| name.to_string())
        })
        .collect()
}

/// Edges file → file, without a file's uses of itself or its ancestors.
fn edges(files: &BTreeMap<ModPath, PathBuf>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut graph: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (module, file) in files {
        let code = code_of(&std::fs::read_to_string(file).expect("read source"));
        let mut targets = Vec::new();
        targets.extend(paths_after(&code, "crate"));
        let parent = &module[..module.len().saturating_sub(1)];
        for path in paths_after(&code, "super") {
            targets.push([parent, &path[..]].concat());
        }
        for path in paths_after(&code, "self") {
            targets.push([&module[..], &path[..]].concat());
        }
        for child in children(&code) {
            for path in paths_after(&code, &child) {
                targets.push([&module[..], std::slice::from_ref(&child), &path[..]].concat());
            }
        }
        let out = graph.entry(module.clone()).or_default();
        for target in targets {
            let Some(to) = resolve(&target, files) else {
                continue;
            };
            if module.starts_with(&to) {
                continue; // itself or an ancestor
            }
            out.insert(to);
        }
    }
    graph
}

/// The circles (strongly connected sets of more than one module).
fn circles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    let reaches = |from: &ModPath| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<_, _> = graph.keys().map(|m| (m.clone(), reaches(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for m in graph.keys() {
        if done.contains(m) || !reach[m].contains(m) {
            continue;
        }
        let circle: Vec<_> = reach[m]
            .iter()
            .filter(|other| reach[*other].contains(m))
            .cloned()
            .collect();
        done.extend(circle.iter().cloned());
        out.push(circle);
    }
    out
}

fn name(module: &ModPath) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    let graph = edges(&files);
    let found = circles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|c| c.iter().map(name).collect::<Vec<_>>().join(" <-> "))
        .collect();
    let mut why = String::new();
    for circle in &found {
        for from in circle {
            for to in graph[from].iter().filter(|t| circle.contains(t)) {
                why.push_str(&format!("  {} -> {}\n", name(from), name(to)));
            }
        }
    }
    assert!(
        found.is_empty(),
        "module circles:\n{}\nedges:\n{why}",
        described.join("\n")
    );
}

#[test]
fn the_reader_sees_imports_of_every_form() {
    let code = "use crate::store::{self, StoreHandle};\nuse super::{a::B, c};\nfn f() { crate::hub::Peer::x(); sub::g(); }\n";
    let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<ModPath>();
    assert_eq!(
        paths_after(code, "crate"),
        [path(&["store"]), path(&["hub", "Peer", "x"])]
    );
    assert_eq!(
        paths_after(code, "super"),
        [path(&["a", "B"]), path(&["c"])]
    );
    assert_eq!(paths_after(code, "sub"), [path(&["g"])]);
    assert_eq!(children("mod a;\npub(crate) mod b;\nmod c {\n"), ["a", "b"]);
    // A comment or a string is not an import.
    assert_eq!(
        code_of("// crate::x::y\nlet s = \"crate::z\";"),
        "\nlet s = \"\";"
    );
}

#[test]
fn a_circle_is_found() {
    let m = |s: &str| vec![s.to_string()];
    let graph = BTreeMap::from([
        (m("a"), BTreeSet::from([m("b")])),
        (m("b"), BTreeSet::from([m("c")])),
        (m("c"), BTreeSet::from([m("a")])),
        (m("d"), BTreeSet::from([m("a")])),
    ]);
    assert_eq!(circles(&graph), [vec![m("a"), m("b"), m("c")]]);
}
