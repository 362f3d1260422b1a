//! Fuzz harnesses on relay code, shared by the `fuzz/` crate and the ordinary
//! `cargo test`, exactly like `tryst_engine::fuzzing` (which holds the engine's targets
//! and the layout notes). Built only for tests and under `cfg(fuzzing)`.

pub mod agent_config;
pub mod client_answer;
pub mod cluster_claims;
pub mod deaddrop_bodies;
pub mod deaddrop_proof_raw;
pub mod deaddrop_proof_structured;
pub mod hive_connect;
pub mod hive_key_file;
pub mod hive_preimage;
pub mod hive_record;
pub mod hive_signature;
pub mod http_framing;
pub mod mesh_preamble;
pub mod node_provisioning_record;
pub mod pico_channel;
pub mod qredo_lf;
pub mod qredo_notice;
pub mod qredo_ownership;
pub mod serve_config;
pub mod stun_message;
pub mod tag_proof;
pub mod tag_sync;
pub mod tag_target;
pub mod tls_pin;

/// A fuzz target: its `[[bin]]` name and the function that runs one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every relay fuzz target.
pub const TARGETS: &[Target] = &[
    ("agent_config", agent_config::run),
    ("client_answer", client_answer::run),
    ("cluster_claims", cluster_claims::run),
    ("deaddrop_bodies", deaddrop_bodies::run),
    ("deaddrop_proof_raw", deaddrop_proof_raw::run),
    ("deaddrop_proof_structured", deaddrop_proof_structured::run),
    ("hive_connect", hive_connect::run),
    ("hive_key_file", hive_key_file::run),
    ("hive_preimage", hive_preimage::run),
    ("hive_record", hive_record::run),
    ("hive_signature", hive_signature::run),
    ("http_framing", http_framing::run),
    ("mesh_preamble", mesh_preamble::run),
    ("node_provisioning_record", node_provisioning_record::run),
    ("pico_channel", pico_channel::run),
    ("qredo_lf", qredo_lf::run),
    ("qredo_ownership", qredo_ownership::run),
    ("serve_config", serve_config::run),
    ("stun_message", stun_message::run),
    ("tag_proof", tag_proof::run),
    ("tag_sync", tag_sync::run),
    ("tag_target", tag_target::run),
    ("qredo_notice", qredo_notice::run),
    ("tls_pin", tls_pin::run),
];

#[cfg(test)]
mod tests {
    use super::TARGETS;
    use std::fs;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::path::Path;

    /// Every module here is registered, and every committed seed and kept `crash-*` file
    /// of each target replays through its harness without a panic.
    #[test]
    fn relay_fuzz_corpus_replays_without_failures() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let modules = fs::read_dir(root.join("src/fuzzing")).expect("src/fuzzing");
        for entry in modules {
            let name = entry.expect("readable").file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".rs").filter(|s| *s != "mod") {
                assert!(
                    TARGETS.iter().any(|(t, _)| *t == stem),
                    "{stem} not in TARGETS"
                );
            }
        }
        let manifest = fs::read_to_string(root.join("../fuzz/Cargo.toml")).expect("manifest");
        let mut failures = Vec::new();
        for (target, run) in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target} has no [[bin]] in fuzz/Cargo.toml"
            );
            let dir = root.join("../fuzz/corpus").join(target);
            let mut seeds = 0;
            for entry in fs::read_dir(&dir).expect("corpus directory") {
                let path = entry.expect("readable").path();
                let file = path.file_name().unwrap_or_default().to_string_lossy();
                if !path.is_file() || file.starts_with('.') {
                    continue;
                }
                seeds += 1;
                let data = fs::read(&path).expect("readable seed");
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
                    let msg = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("(non-string panic)");
                    failures.push(format!("{target}/{file}: {msg}"));
                }
            }
            assert!(seeds > 0, "{target} has no seeds");
        }
        assert!(
            failures.is_empty(),
            "corpus replay failed:\n{}",
            failures.join("\n")
        );
    }
}
