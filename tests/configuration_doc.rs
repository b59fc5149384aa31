//! docs/configuration.md against the built binary: every flag and every
//! environment variable that `chatgate serve --help` shows is in the page's
//! flag tables, the tables list nothing else, and every `--flag` the page
//! mentions anywhere exists in some command's `--help`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The `--help` text of `chatgate <args…> --help`.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_chatgate"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run chatgate --help");
    assert!(
        out.status.success(),
        "chatgate {args:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("--help is UTF-8")
}

/// Every `--name` in `text` (a word starting with two dashes and a letter).
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'-');
        let mut end = start + 2;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'-') {
            end += 1;
        }
        if before_ok && end > start + 2 && bytes[start + 2].is_ascii_lowercase() {
            found.insert(text[start..end].to_string());
        }
        i = end.max(start + 2);
    }
    found
}

/// The options listed by a `--help` text (lines `  -x, --name …` or
/// `      --name …`), without `--help` and `--version`.
fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|line| {
            let t = line.trim_start();
            let t = match t.strip_prefix('-') {
                Some(rest) if !rest.starts_with('-') => rest.split_once(", ")?.1,
                _ => t,
            };
            let name = t.strip_prefix("--")?;
            let end = name
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(name.len());
            Some(format!("--{}", &name[..end]))
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

/// The variables named by `[env: NAME=…]` / `[env: NAME]` in a `--help` text.
fn help_env(help: &str) -> BTreeSet<String> {
    help.match_indices("[env: ")
        .map(|(at, m)| {
            let rest = &help[at + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .collect()
}

/// The cells of the page's flag tables: rows whose first cell starts with
/// a backquoted `--flag`. Returns (first cells, second cells).
fn doc_table_cells(doc: &str) -> (String, String) {
    let mut flags = String::new();
    let mut envs = String::new();
    for line in doc.lines() {
        let Some(row) = line.strip_prefix("| `--") else {
            continue;
        };
        let mut cells = row.split(" | ");
        flags.push_str("`--");
        flags.push_str(cells.next().unwrap_or(""));
        flags.push('\n');
        envs.push_str(cells.next().unwrap_or(""));
        envs.push('\n');
    }
    (flags, envs)
}

/// Backquoted upper-case names (`CHATGATE_X`, `DATABASE_URL`) in `text`.
fn env_names_in(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

/// `doc` without cargo's own flags: of a `cargo run … -- ARGS` line only
/// the `ARGS` are chatgate's.
fn chatgate_text(doc: &str) -> String {
    doc.lines()
        .map(|line| {
            match (
                line.trim_start().starts_with("cargo "),
                line.split_once(" -- "),
            ) {
                (true, Some((_, args))) => args,
                (true, None) => "",
                (false, _) => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn read_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn assert_same(what: &str, from_help: &BTreeSet<String>, from_doc: &BTreeSet<String>) {
    let missing: Vec<_> = from_help.difference(from_doc).collect();
    let unknown: Vec<_> = from_doc.difference(from_help).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md and `chatgate serve --help` disagree on {what}:\n\
         shown by --help but missing from the doc: {missing:?}\n\
         listed in the doc but not shown by --help: {unknown:?}"
    );
}

#[test]
fn every_serve_flag_is_documented_and_nothing_else() {
    let help = help(&["serve"]);
    let from_help = help_flags(&help);
    assert!(
        from_help.len() > 40 && from_help.contains("--listen"),
        "unexpected `serve --help` output:\n{help}"
    );
    let (flag_cells, _) = doc_table_cells(&read_doc());
    assert_same("flags", &from_help, &flags_in(&flag_cells));
}

#[test]
fn every_environment_variable_is_documented_and_nothing_else() {
    let help = help(&["serve"]);
    let from_help = help_env(&help);
    assert!(
        from_help.contains("CHATGATE_LISTEN") && from_help.contains("DATABASE_URL"),
        "unexpected `serve --help` output:\n{help}"
    );
    let (_, env_cells) = doc_table_cells(&read_doc());
    assert_same(
        "environment variables",
        &from_help,
        &env_names_in(&env_cells),
    );
}

#[test]
fn every_flag_the_page_mentions_exists() {
    let mut known = BTreeSet::new();
    for args in [
        &["serve"][..],
        &["migrate"],
        &["token"],
        &["user", "add"],
        &["conversation", "create"],
    ] {
        let text = help(args);
        known.extend(help_flags(&text));
    }
    known.insert("--help".to_string());
    known.insert("--version".to_string());
    let unknown: Vec<_> = flags_in(&chatgate_text(&read_doc()))
        .into_iter()
        .filter(|f| !known.contains(f))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md mentions flags no command has: {unknown:?}"
    );
}

#[test]
fn the_parsers_find_what_they_should() {
    assert_eq!(
        help_flags("  -h, --help\n      --chat-rate <CHAT_RATE>\n      --web\n  Usage: x --y"),
        ["--chat-rate", "--web"].map(String::from).into()
    );
    assert_eq!(
        help_env("a [env: CHATGATE_X=] b [env: REDIS_URL] [default: 1]"),
        ["CHATGATE_X", "REDIS_URL"].map(String::from).into()
    );
    assert_eq!(
        flags_in("`--a-b` / `--c`; x--y, --9, ---z, — --d"),
        ["--a-b", "--c", "--d"].map(String::from).into()
    );
    assert_eq!(
        flags_in(&chatgate_text(
            "cargo run --release -- token --ttl 8h\ncargo build --release\nx --y"
        )),
        ["--ttl", "--y"].map(String::from).into()
    );
    let (f, e) = doc_table_cells(
        "| flag | env var |\n| `--x` / `--y` | `CHATGATE_X` / `CHATGATE_Y` | `1` | m `--z` |\n",
    );
    assert_eq!(flags_in(&f), ["--x", "--y"].map(String::from).into());
    assert_eq!(
        env_names_in(&e),
        ["CHATGATE_X", "CHATGATE_Y"].map(String::from).into()
    );
}
