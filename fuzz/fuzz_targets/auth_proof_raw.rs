//! The real proof parser and verifier on arbitrary bytes.
//! The harness is `tryst_engine::fuzzing::auth_proof_raw`; `cargo test` replays the corpus through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_engine::fuzzing::auth_proof_raw::run(data));
