//! The crate's modules are layered and the layers point one way: each module may use only
//! modules of lower layers. This test reads every src/**/*.rs file and reports each
//! `crate::OTHER` reference (in `use` lines, `use crate::{a, b}` groups, multi-line use blocks
//! and paths in code; comments and string literals ignored) where OTHER is of the same or a
//! higher layer than the file's module, and every module missing from the table.

use std::path::{Path, PathBuf};

/// Layers, lowest first. Layers point one way: sip -> transport, location -> registrar,
/// proxy -> server -> main; a lower layer imports nothing above it, so that the message
/// code can be read, tested and changed without the server around it. A new module must be
/// placed here (the test fails until it is).
const LAYERS: &[(&str, u32)] = &[
    // Messages; time and the runtime index. They import nothing of ours.
    ("sip", 0),
    ("clock", 0),
    ("throttle", 0),
    ("metrics", 0),
    ("live", 0),
    // Moving bytes; storing bindings.
    ("transport", 1),
    ("location", 1),
    // Next hops (RFC 3263); who the element is.
    ("resolve", 2),
    ("identity", 2),
    ("registrar", 3),
    ("auth", 3),
    ("proxy", 4),
    // Reading and checking the configuration of everything below.
    ("config", 5),
    // Sockets and threads around it all; `sipfarm farm status`, `sipfarm location`.
    ("server", 6),
    ("status", 6),
    ("operate", 6),
];

/// Files that are no module of their own: the crate root and the binary.
const ROOTS: &[&str] = &["lib.rs", "main.rs"];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The module of a file, by its path under src: `proxy.rs` -> proxy,
/// `location/farm/mod.rs` -> location. None for the crate roots.
fn module_of(rel: &Path) -> Option<String> {
    let mut parts = rel.components();
    let first = parts.next()?.as_os_str().to_str()?;
    if parts.next().is_none() {
        if ROOTS.contains(&first) {
            return None;
        }
        return Some(first.strip_suffix(".rs").unwrap_or(first).to_owned());
    }
    Some(first.to_owned())
}

/// The source with comments, string and character literals blanked out (line breaks kept,
/// so that line numbers stay right).
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let at = |p: usize| c.get(p).copied().unwrap_or('\0');
        let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        if at(i) == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if at(i) == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_at(&c, i).filter(|_| !ident_before) {
            // A raw string: r"..", r#".."#, br#".."#.
            let open = if c[i] == 'b' { 2 } else { 1 } + hashes + 1;
            for _ in 0..open {
                out.push(' ');
            }
            i += open;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|h| c.get(i + h) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if at(i) == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if at(i) == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A character literal ('x', '\n', '\u{..}'), not a lifetime.
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '\'' && c[i] != '\n' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The number of `#` of a raw string starting at `i` (`r"`, `r#"`, `br#"`...), if one does.
fn raw_string_at(c: &[char], i: usize) -> Option<usize> {
    let mut k = i;
    if c.get(k) == Some(&'b') {
        k += 1;
    }
    if c.get(k) != Some(&'r') {
        return None;
    }
    k += 1;
    let hashes = c[k.min(c.len())..]
        .iter()
        .take_while(|ch| **ch == '#')
        .count();
    (c.get(k + hashes) == Some(&'"')).then_some(hashes)
}

/// Every module named right after `crate::` (each top-level name of a `crate::{..}` group),
/// with its 1-based line.
fn crate_refs(code: &str) -> Vec<(usize, String)> {
    let c: Vec<char> = code.chars().collect();
    let line_at = |pos: usize| c[..pos].iter().filter(|ch| **ch == '\n').count() + 1;
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let skip_ws = |mut k: usize| {
        while k < c.len() && c[k].is_whitespace() {
            k += 1;
        }
        k
    };
    let ident_at = |k: usize| -> String { c[k..].iter().take_while(|ch| is_ident(**ch)).collect() };
    let mut out = Vec::new();
    let pat: Vec<char> = "crate".chars().collect();
    let mut i = 0;
    while i + pat.len() <= c.len() {
        let starts = c[i..i + pat.len()] == pat[..]
            && (i == 0 || !is_ident(c[i - 1]))
            && c.get(i + pat.len()).is_none_or(|ch| !is_ident(*ch));
        if !starts {
            i += 1;
            continue;
        }
        let mut k = skip_ws(i + pat.len());
        if !(c.get(k) == Some(&':') && c.get(k + 1) == Some(&':')) {
            i += pat.len();
            continue;
        }
        k = skip_ws(k + 2);
        if c.get(k) == Some(&'{') {
            // A group: the names at depth 1, each first in its element.
            let mut depth = 0;
            let mut expect_name = true;
            while k < c.len() {
                match c[k] {
                    '{' => {
                        depth += 1;
                        expect_name = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    ch if expect_name && depth == 1 && (is_ident(ch) || ch == '*') => {
                        let name = if ch == '*' { "*".into() } else { ident_at(k) };
                        out.push((line_at(k), name.clone()));
                        expect_name = false;
                        k += name.chars().count();
                        continue;
                    }
                    _ => {}
                }
                k += 1;
            }
        } else if c.get(k) == Some(&'*') {
            out.push((line_at(k), "*".into()));
        } else {
            let name = ident_at(k);
            if !name.is_empty() {
                out.push((line_at(k), name));
            }
        }
        i = k.max(i + 1);
    }
    out
}

/// The violations of one file (`rel` is its path under src), one line each.
fn check_file(rel: &Path, src: &str) -> Vec<String> {
    let Some(module) = module_of(rel) else {
        return vec![];
    };
    let file = format!("src/{}", rel.display());
    let Some(mine) = layer(&module) else {
        return vec![format!(
            "{file}:1: module {module} is not in the layer table of tests/architecture.rs"
        )];
    };
    let mut out = Vec::new();
    for (line, other) in crate_refs(&code_only(src)) {
        if other == module || other == "self" {
            continue;
        }
        match layer(&other) {
            Some(theirs) if theirs < mine => {}
            Some(theirs) => out.push(format!(
                "{file}:{line}: {module} (layer {mine}) imports crate::{other} (layer {theirs})"
            )),
            None => out.push(format!(
                "{file}:{line}: {module} (layer {mine}) imports crate::{other} (not in the layer table)"
            )),
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn layers_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "the sources under {}", src.display());
    let mut violations = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        violations.extend(check_file(f.strip_prefix(&src).unwrap(), &text));
    }
    assert!(
        violations.is_empty(),
        "{} import(s) against the layers:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// The checker itself: an upward import in every form is reported, nothing else is.
#[test]
fn the_checker_reports_upward_imports_and_only_those() {
    let snippet = r##"//! Uses crate::server in a doc comment: ignored.
use crate::sip::Message;
use crate::transport::Path;
use crate::{
    clock,
    registrar::read,
};
// use crate::proxy; in a comment: ignored.
/* crate::status in a block comment: ignored */
fn f() -> &'static str {
    let _ = crate::config::load();
    let _ = ('x', '"', b"crate::proxy", r#"crate::proxy "in" a raw string"#);
    "crate::server in a string: ignored"
}
pub(crate) fn g() {}
"##;
    let got = check_file(Path::new("location/farm/mod.rs"), snippet);
    assert_eq!(
        got,
        vec![
            "src/location/farm/mod.rs:3: location (layer 1) imports crate::transport (layer 1)",
            "src/location/farm/mod.rs:6: location (layer 1) imports crate::registrar (layer 3)",
            "src/location/farm/mod.rs:11: location (layer 1) imports crate::config (layer 5)",
        ]
    );
    // Downward imports are fine; the file's own module is fine.
    let down = "use crate::{sip, location::Binding, transport};\nuse crate::proxy::x;\n";
    assert!(check_file(Path::new("proxy.rs"), down).is_empty());
    // A module missing from the table is reported; the crate roots are not modules.
    assert_eq!(
        check_file(Path::new("newthing.rs"), ""),
        vec![
            "src/newthing.rs:1: module newthing is not in the layer table of tests/architecture.rs"
        ]
    );
    assert!(check_file(Path::new("lib.rs"), "use crate::server;").is_empty());
    assert!(check_file(Path::new("main.rs"), "use sipfarm::server;").is_empty());
}
