//! The harness is `tryst_relay::fuzzing::qredo_notice` (see its docs); `cargo test`
//! replays the corpus through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_relay::fuzzing::qredo_notice::run(data));
