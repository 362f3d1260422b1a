//! Pico channels: the sans-IO table against a reference model, request routing on
//! arbitrary paths, and requests through the async adapter. The logic lives in
//! `tryst_relay::pico::fuzzing`; this is a shim.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tryst_relay::pico::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::channel_ops(data);
    fuzzing::request_path(data);
    fuzzing::requests(data);
});
