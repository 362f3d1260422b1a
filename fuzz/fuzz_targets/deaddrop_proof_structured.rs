//! Proofs signed with the fixture key, then corrupted (or not) in one structured way:
//! only an uncorrupted, in-window proof verifies; a stale one is `Stale`; through the
//! checker, a valid retrieve proof is accepted once and its replay refused.
//! The harness is `tryst_relay::fuzzing::deaddrop_proof_structured`; `cargo test` replays the corpus
//! through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_relay::fuzzing::deaddrop_proof_structured::run(data));
