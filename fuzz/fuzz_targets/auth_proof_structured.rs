//! Structured proofs signed with a known secret, past the MAC.
//! The harness and its `arbitrary` input are in `tryst_engine::fuzzing::auth_proof_structured`;
//! `cargo test` replays the corpus through it, decoded the same way.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tryst_engine::fuzzing::auth_proof_structured::{Input, run};

fuzz_target!(|input: Input| run(input));
