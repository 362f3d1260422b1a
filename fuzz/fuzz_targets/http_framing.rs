//! Request framing: `Content-Length` / `Transfer-Encoding` of heads for the HTTP service
//! (no panic; checks agree with the fields; refusals are complete 400s in the owning
//! family's shape). The harness is `tryst_relay::fuzzing::http_framing`; `cargo test`
//! replays the corpus through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_relay::fuzzing::http_framing::run(data));
