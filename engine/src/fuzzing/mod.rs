//! Fuzz harnesses, shared by the `fuzz/` crate and by the ordinary `cargo test`.
//!
//! Each submodule holds one fuzz target's whole harness: the checks it makes and, for
//! structured targets, the input type decoded with `arbitrary`. The binaries under
//! `fuzz/fuzz_targets/` are shims that call into here, and the test in this module replays
//! every file under `fuzz/corpus/<target>/` (the named seeds and every kept `crash-*`
//! regression seed) through the same functions, so a crash the fuzzer once found stays
//! fixed without a nightly toolchain.
//!
//! Built only for tests and under `cfg(fuzzing)`; not part of the engine's API.
//!
//! Adding a target: a submodule here with a `run` function, an entry in [`TARGETS`], a
//! shim and a `[[bin]]` in `fuzz/Cargo.toml`, and a seed directory `fuzz/corpus/<name>/`.
//! The replay test fails until all four agree. Targets on relay code (which the engine
//! cannot see) live the same way in `tryst_relay::fuzzing` (`relay/src/fuzzing/`).

use arbitrary::{Arbitrary, Unstructured};

pub mod auth_proof_raw;
pub mod auth_proof_structured;
pub mod connect_head;
pub mod connect_target;
pub mod node_authorization;
pub mod node_connect_target;
pub mod room_events;
pub mod totp_check;

/// One fuzz target, as the replay test sees it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The `[[bin]]` name in `fuzz/Cargo.toml` and the directory under `fuzz/corpus/`.
    pub name: &'static str,
    /// Whether the input is decoded with `arbitrary` (so every seed must decode).
    pub structured: bool,
    /// Runs one input exactly as the fuzz binary would. Returns `false` when the input
    /// was skipped because it does not decode into a structured input.
    pub replay: fn(&[u8]) -> bool,
}

/// Every fuzz target, in one place.
pub const TARGETS: &[Target] = &[
    Target {
        name: "connect_head",
        structured: false,
        replay: |data| {
            connect_head::run(data);
            true
        },
    },
    Target {
        name: "connect_target",
        structured: false,
        replay: |data| {
            connect_target::run(data);
            true
        },
    },
    Target {
        name: "auth_proof_raw",
        structured: false,
        replay: |data| {
            auth_proof_raw::run(data);
            true
        },
    },
    Target {
        name: "auth_proof_structured",
        structured: true,
        replay: |data| decode(data).map(auth_proof_structured::run).is_some(),
    },
    Target {
        name: "room_events",
        structured: true,
        replay: |data| decode(data).map(room_events::run).is_some(),
    },
    Target {
        name: "node_connect_target",
        structured: false,
        replay: |data| {
            node_connect_target::run(data);
            true
        },
    },
    Target {
        name: "node_authorization",
        structured: false,
        replay: |data| {
            node_authorization::run(data);
            true
        },
    },
    Target {
        name: "totp_check",
        structured: true,
        replay: |data| decode(data).map(totp_check::run).is_some(),
    },
];

/// Decodes fuzzer bytes into a structured input the way `libfuzzer-sys`'s
/// `fuzz_target!(|input: T| ...)` does (inputs shorter than the size hint are skipped,
/// then `arbitrary_take_rest`), so a seed replays into the same value the fuzzer saw.
pub fn decode<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    if data.len() < T::size_hint(0).0 {
        return None;
    }
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

#[cfg(test)]
mod tests;
