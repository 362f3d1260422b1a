//! The hive: CONNECT family (streaming fallback): target and proof-header parsers and the
//! park/reach decision never panic and agree with classification.
//! The harness is `tryst_relay::fuzzing::hive_connect`; `cargo test` replays the corpus
//! through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_relay::fuzzing::hive_connect::run(data));
