//! Request heads and the routing-side parsers on what they return.
//! The harness is `tryst_engine::fuzzing::connect_head`; `cargo test` replays the corpus through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_engine::fuzzing::connect_head::run(data));
