//! STUN datagrams: the parser and the Binding responder (answers only Binding requests,
//! at most 52 bytes, exact mapped address and transaction id, valid FINGERPRINT).
//! The harness is `tryst_relay::fuzzing::stun_message`; `cargo test` replays the corpus
//! through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tryst_relay::fuzzing::stun_message::run(data));
