//! Dead-drop request bodies through the real checker (rate limiter, replay cache,
//! proof verification, HiveMessage parsing): never panics; what is accepted is within
//! the caps.
//! The harness is `tryst_relay::fuzzing::deaddrop_bodies`; `cargo test` replays the corpus
//! through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_relay::fuzzing::deaddrop_bodies::run(data));
