//! Integration tests of the `tryst` binary (one test binary; topics are modules).

mod cli;
mod deaddrop;
mod hive;
mod hive_stream;
mod node;
mod pico;
mod qredo;
mod serve;
mod stun;
mod tag;
mod tls;
mod tunnel;
