//! The stage order of `docs/architecture.md`, checked on the source: no
//! top-level module names one of a later stage (`crate::<module>` anywhere
//! outside comments, tests included). The check prints every edge it found,
//! so the module map can be compared with the tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Earliest first; the same list as docs/architecture.md's table.
const STAGES: &[&str] = &[
    "store", "event", "ingest", "sources", "rollup", "query", "live", "alerting", "plugin",
    "daemon",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a readable directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `crate::<name>` references of one file, comments left out.
fn references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

fn stage(name: &str) -> Option<usize> {
    STAGES.iter().position(|s| *s == name)
}

#[test]
fn no_module_imports_a_later_stage() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<(String, String), usize> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src/");
        let first = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default();
        let module = first.trim_end_matches(".rs");
        if module == "bin" || module == "lib" {
            continue;
        }
        assert!(
            stage(module).is_some(),
            "src/{module} is not in docs/architecture.md's stage list: add it there and to STAGES"
        );
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for to in references(&text) {
            if to != module && stage(&to).is_some() {
                *edges.entry((module.to_string(), to)).or_default() += 1;
            }
        }
    }
    let mut backwards = Vec::new();
    for ((from, to), n) in &edges {
        println!("{from} -> {to} ({n})");
        if stage(to) > stage(from) {
            backwards.push(format!("{from} -> {to} ({n} references)"));
        }
    }
    assert!(
        backwards.is_empty(),
        "these modules name a later stage (order: {}): {backwards:?}",
        STAGES.join(" → ")
    );
    assert!(
        !edges.is_empty(),
        "no crate:: references found: is src/ there?"
    );
}

#[test]
fn references_skip_comments() {
    let text =
        "use crate::store::X; // not crate::daemon\n//! crate::plugin\nlet a = crate::query::f();";
    assert_eq!(references(text), vec!["store", "query"]);
}

#[test]
fn the_documented_stage_order_is_the_checked_one() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .expect("docs/architecture.md");
    // Rows of the stage table: `| 1 | `store` | … |`.
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let number = cells.next()?;
            let module = cells.next()?;
            (number.parse::<usize>().is_ok()).then(|| module.trim_matches('`'))
        })
        .collect();
    assert_eq!(documented, STAGES, "docs/architecture.md's stage table");
}
