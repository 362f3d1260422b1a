//! `pico_channel`: Pico channels. The harnesses live beside the code in
//! [`crate::pico::fuzzing`]; this runs all three on one input, as the fuzz target does.

/// Runs one input through the channel-table model, path routing and whole requests.
pub fn run(data: &[u8]) {
    crate::pico::fuzzing::channel_ops(data);
    crate::pico::fuzzing::request_path(data);
    crate::pico::fuzzing::requests(data);
}
