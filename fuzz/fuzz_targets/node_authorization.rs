//! The Authorization user-name parser, alone and through the combined router.
//! The harness is `tryst_engine::fuzzing::node_authorization`; `cargo test` replays the corpus through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_engine::fuzzing::node_authorization::run(data));
