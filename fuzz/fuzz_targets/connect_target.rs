//! CONNECT targets and UUID spellings.
//! The harness is `tryst_engine::fuzzing::connect_target`; `cargo test` replays the corpus through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_engine::fuzzing::connect_target::run(data));
