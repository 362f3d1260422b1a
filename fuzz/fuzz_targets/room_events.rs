//! Sequences of waiting-room operations checked against a model.
//! The harness and its `arbitrary` input are in `tryst_engine::fuzzing::room_events`;
//! `cargo test` replays the corpus through it, decoded the same way.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tryst_engine::fuzzing::room_events::{Input, run};

fuzz_target!(|input: Input| run(input));
