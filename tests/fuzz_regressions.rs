//! The fuzz corpora, replayed without a fuzzer: every file of `fuzz/corpus/<target>/`
//! (seeds from the tests' inputs) and `fuzz/regressions/<target>/` (inputs that once
//! crashed a target, fixed since) goes through the target's entry function, the
//! same code the fuzzer runs (`fuzz/src/lib.rs`, included below). A panic names
//! the file. `scripts/fuzz.sh` runs the fuzzer itself; docs/fuzzing.md says how.

#[path = "../fuzz/src/lib.rs"]
mod entries;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn folder_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("a readable directory entry").path())
                .filter(|p| p.is_dir())
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_corpus_and_regression_input_runs_clean() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (target, entry) in entries::TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{target}/ is empty: run python3 fuzz/seed-corpus.py"
        );
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for file in corpus.iter().chain(&regressions) {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| entry(&data))) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{target}: {}: {why}", file.display()));
            }
            replayed += 1;
        }
    }
    println!("replayed {replayed} inputs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A renamed or added target must keep its corpus and regressions replayed.
#[test]
fn every_target_has_an_entry_and_every_folder_a_target() {
    let names: BTreeSet<String> = entries::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let binaries: BTreeSet<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        binaries, names,
        "fuzz/fuzz_targets/*.rs and fuzz/src/lib.rs's TARGETS differ"
    );
    for dir in ["corpus", "regressions"] {
        let unknown: Vec<String> = folder_names(&fuzz_dir().join(dir))
            .difference(&names)
            .cloned()
            .collect();
        assert!(
            unknown.is_empty(),
            "fuzz/{dir}/ has folders of no target: {unknown:?}"
        );
    }
}
