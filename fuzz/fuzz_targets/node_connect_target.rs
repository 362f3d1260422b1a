//! node-rendezvous CONNECT targets, alone and through the combined router.
//! The harness is `tryst_engine::fuzzing::node_connect_target`; `cargo test` replays the corpus through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_engine::fuzzing::node_connect_target::run(data));
