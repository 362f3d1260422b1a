//! Replays the committed fuzz corpus through the harnesses.

use super::TARGETS;
use std::collections::BTreeSet;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Seed files of one target: every regular file, hidden scratch files excluded.
fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable corpus directory").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// The `[[bin]]` names in `fuzz/Cargo.toml` (one `name = "..."` line after each header).
fn fuzz_bins() -> BTreeSet<String> {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut bins = BTreeSet::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(rest) = line.strip_prefix("name") {
            let name = rest
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            bins.insert(name.to_owned());
        }
    }
    bins
}

#[test]
fn every_fuzz_target_has_a_harness_a_shim_and_seeds() {
    let registered: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(registered.len(), TARGETS.len(), "duplicate target names");
    let bins = fuzz_bins();
    for name in &registered {
        assert!(
            bins.contains(name),
            "{name} has no [[bin]] in fuzz/Cargo.toml"
        );
    }
    // Every other [[bin]] is a relay target, harnessed in relay/src/fuzzing/ (whose own
    // test checks its registry).
    let relay = Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/src/fuzzing");
    for bin in bins.difference(&registered) {
        assert!(
            relay.join(format!("{bin}.rs")).is_file(),
            "[[bin]] {bin} has no harness: not in fuzzing::TARGETS nor relay/src/fuzzing/"
        );
    }
    let dirs: BTreeSet<String> = fs::read_dir(fuzz_dir().join("corpus"))
        .expect("fuzz/corpus")
        .map(|e| {
            e.expect("readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(dirs, bins, "fuzz/corpus/* and the [[bin]]s differ");
    for target in TARGETS {
        let shim = fuzz_dir().join(format!("fuzz_targets/{}.rs", target.name));
        assert!(shim.is_file(), "missing {}", shim.display());
        assert!(
            !seeds(target.name).is_empty(),
            "{} has no seeds",
            target.name
        );
    }
}

/// Every committed seed and every kept `crash-*` regression seed runs through the same
/// harness the fuzzer runs; a panic in any of them fails with the file named.
#[test]
fn committed_corpus_replays_without_failures() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for target in TARGETS {
        for path in seeds(target.name) {
            let data = fs::read(&path).expect("readable seed");
            let name = format!(
                "{}/{}",
                target.name,
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            match catch_unwind(AssertUnwindSafe(|| (target.replay)(&data))) {
                Ok(true) => replayed += 1,
                Ok(false) => {
                    failures.push(format!("{name}: does not decode into the target's input"));
                }
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("(non-string panic)");
                    failures.push(format!("{name}: {msg}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "corpus replay failed:\n{}",
        failures.join("\n")
    );
    assert!(replayed >= TARGETS.len());
}
