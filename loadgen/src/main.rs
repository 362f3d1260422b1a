//! `loadgen`: capacity testing and side-by-side benchmarks for the tryst relay.
//!
//! - `loadgen --hidden 10000 --clients 50000`: a capacity run. Starts a local
//!   `tryst serve` (or drives `--relay ADDR`), parks hidden echo servers, pairs clients
//!   with them, verifies every echoed byte and prints latency percentiles, rates, errors
//!   and the relay's resource use. Work is spread over worker processes so the run can
//!   exceed the 20,000 fd per-process limit.
//! - `loadgen compare`: the same workloads against direct loopback, tryst (each data
//!   path), HAProxy (splice and copy) and bore, interleaved, with medians and spreads.
//! - `loadgen qredo`: Qredo's `/services` RPC, creates and responds per second over HTTP
//!   and WebSocket, with medians and spreads.
//! - `loadgen cluster-recovery`: recovery times of a two-node cluster (Valkey restarted
//!   empty, a node killed), with medians.
#![forbid(unsafe_code)]

mod capacity;
mod cli;
mod compare;
mod net;
mod pattern;
mod procfs;
mod proto;
mod qredo;
mod recovery;
mod relay;
mod report;
mod stats;
mod transport;
mod worker;

use clap::Parser as _;

/// Raises the soft fd limit to the hard limit (the default soft limit is often 1024).
pub(crate) fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        Some(cli::Command::Worker) => worker::main().map(|()| true),
        Some(cli::Command::Compare(args)) => compare::main(&args),
        Some(cli::Command::Qredo(args)) => qredo::main(&args),
        Some(cli::Command::ClusterRecovery(args)) => recovery::main(&args),
        None => capacity::main(&cli.capacity),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
