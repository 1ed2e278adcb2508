//! The calculus is one-way: the declaration's vocabulary, then the geometry of windows and the
//! model of moments, correlations and borders, then the built steps, the registry of layer kinds,
//! and the passes and rules over a network, the planner last. Each module may name only modules
//! below it (`crate::x` paths, outside comments and unit tests), and the modules below the
//! registry may not call what the registry adds to the vocabulary's types (`Op::def`,
//! `LayerSpec::field_name`, ...), which no import would show. `../shared/tools/module-cycles.py`
//! finds cycles; this test keeps the order itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every top-level module, lowest first.
const ORDER: &[&str] = &[
    "spec",
    "diagnostic",
    "geometry",
    "correlation",
    "moments",
    "coherence",
    "borders",
    "plan",
    "registry",
    "blocks",
    "shapes",
    "propagate",
    "border_pass",
    "rules",
    "report",
    "precision",
    "planner",
];

/// The vocabulary's types whose registry-defined methods the lower modules may not call.
const EXTENDED_TYPES: &[&str] = &["Op", "LayerSpec", "Step"];

/// The crate's `src` folder and every Rust file under it.
fn crate_sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    (src, files)
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code: without comments (doc links are not dependencies) and without its unit tests
/// (which may reach anywhere; this crate writes them last, as `#[cfg(test)] mod tests`).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The identifiers that follow `prefix` in `text`.
fn after<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.match_indices(prefix).map(move |(at, _)| {
        let rest = &text[at + prefix.len()..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        &rest[..end]
    })
}

/// The top-level module a file belongs to (`registry/weight.rs` is `registry`); `None` for the
/// crate root and for unit-test files.
fn module_of(src: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
    let is_tests = path.file_stem().is_some_and(|s| s == "tests");
    (first != "lib" && !is_tests).then_some(first)
}

fn rank(module: &str) -> usize {
    ORDER.iter().position(|m| *m == module).unwrap_or_else(|| panic!("module `{module}` is not in ORDER: place it"))
}

#[test]
fn every_module_imports_only_from_below() {
    let (src, files) = crate_sources();
    let mut violations = BTreeSet::new();
    let mut edges = 0;
    for path in &files {
        let Some(module) = module_of(&src, path) else { continue };
        let text = code(path);
        let top_level = path.parent() == Some(src.as_path());
        let supers = if top_level { after(&text, "super::").collect() } else { Vec::new() };
        for target in after(&text, "crate::").chain(supers) {
            if target == module || !ORDER.contains(&target) {
                continue;
            }
            edges += 1;
            if rank(target) > rank(&module) {
                violations.insert(format!("{} names `crate::{target}`, above it", path.display()));
            }
        }
    }
    assert!(edges > 30, "only {edges} imports found: is the scan reading the sources?");
    assert!(
        violations.is_empty(),
        "imports against the order:\n{}",
        violations.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_modules_below_the_registry_do_not_call_its_methods() {
    let (src, files) = crate_sources();
    // The methods the registry's files add to the vocabulary's types.
    let mut methods = BTreeSet::new();
    for path in files.iter().filter(|p| module_of(&src, p).as_deref() == Some("registry")) {
        let text = code(path);
        for ty in EXTENDED_TYPES {
            for (at, _) in text.match_indices(&format!("\nimpl {ty} {{")) {
                let body = &text[at..];
                let body = &body[..body[1..].find("\n}").map_or(body.len(), |end| end + 1)];
                methods.extend(after(body, "pub fn ").map(str::to_string));
            }
        }
    }
    assert!(methods.contains("def") && methods.contains("field_name"), "the scan found {methods:?}");
    let mut violations = Vec::new();
    for path in &files {
        let Some(module) = module_of(&src, path) else { continue };
        if rank(&module) >= rank("registry") {
            continue;
        }
        let text = code(path);
        for method in &methods {
            if text.contains(&format!(".{method}(")) || text.contains(&format!("Op::{method}(")) {
                violations.push(format!("{} calls `{method}`, which the registry defines", path.display()));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
