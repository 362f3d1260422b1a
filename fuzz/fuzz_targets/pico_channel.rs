//! Pico channels: the sans-IO table against a reference model, request routing on
//! arbitrary paths, and requests through the async adapter.
//! The harness is `tryst_relay::fuzzing::pico_channel`;
//! `cargo test` replays the corpus through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_relay::fuzzing::pico_channel::run(data));
