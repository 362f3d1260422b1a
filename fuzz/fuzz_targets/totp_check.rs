//! TOTP verification: raw values, and generated codes (structured).
//! The harness and its `arbitrary` input are in `tryst_engine::fuzzing::totp_check`;
//! `cargo test` replays the corpus through it, decoded the same way.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tryst_engine::fuzzing::totp_check::{Input, run};

fuzz_target!(|input: Input| run(input));
