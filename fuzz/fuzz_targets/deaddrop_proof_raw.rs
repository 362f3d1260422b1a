//! The SPKI PEM parser, signature decoding and proof verifier on arbitrary input:
//! never panics, and no signature verifies under the fixture key without its private
//! half.
//! The harness is `tryst_relay::fuzzing::deaddrop_proof_raw`; `cargo test` replays the corpus
//! through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_relay::fuzzing::deaddrop_proof_raw::run(data));
