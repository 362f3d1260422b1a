//! Integration tests of the `tryst` binary (one test binary; topics are modules).

mod cli;
mod deaddrop;
mod serve;
mod tls;
mod tunnel;
