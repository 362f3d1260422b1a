//! The harness is `tryst_relay::fuzzing::client_answer` (see its docs); `cargo test`
//! replays the corpus through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_relay::fuzzing::client_answer::run(data));
