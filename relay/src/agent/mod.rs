//! The agents: `tryst expose` (a hidden server for local services) and `tryst connect`
//! (the client side), thin command-line layers over the `tryst-client` library.
//!
//! - [`expose`]: flags or `--config agent.toml` ([`config`]) → one
//!   [`tryst_client::expose::Exposer`] per service, SIGTERM drain, `--metrics-listen`
//!   ([`metrics`]).
//! - [`hive_key`]: the Hive device key file (`--hive-key-file`).
//! - [`connect`]: stdin/stdout (ssh `ProxyCommand`), `--fdpass` (the relay socket handed
//!   to ssh) or `--listen` (a local port forward),
//!   with an exit code per failure class ([`exit`]).

pub mod config;
pub mod connect;
pub mod expose;
pub mod hive_key;
pub mod metrics;

/// Default parked connections per service.
pub const DEFAULT_POOL: usize = 4;

/// Exit codes of `tryst connect` and `tryst expose`.
pub mod exit {
    /// Any other failure (bad flags are clap's 2).
    pub const FAILURE: i32 = 1;
    /// `connect`: no hidden server parked under the id (`404 not_parked`), or no
    /// publisher of the tag (`404 unknown_tag`).
    pub const NOT_PARKED: i32 = 3;
    /// The relay refused the request (any other error code: `bad_proof`,
    /// `malformed_proof`, `shutting_down`, ...).
    pub const REFUSED: i32 = 4;
    /// The relay could not be reached (connect, TLS handshake, lost before answering).
    pub const UNREACHABLE: i32 = 5;
    /// `connect`: a tag publisher did not answer the challenge with the key named in
    /// the tag (or closed before answering).
    pub const BAD_ANSWER: i32 = 6;
}

/// The exit code for a failed park or reach.
pub fn exit_code(error: &tryst_client::Error) -> i32 {
    match error {
        tryst_client::Error::Refused(r)
            if matches!(r.code.as_str(), "not_parked" | "unknown_tag") =>
        {
            exit::NOT_PARKED
        }
        tryst_client::Error::Refused(_) => exit::REFUSED,
        _ => exit::UNREACHABLE,
    }
}

/// A multi-threaded tokio runtime for an agent: two worker threads (the agents wait on
/// sockets; splice does the byte moving in the kernel), one when the process may run on
/// one CPU only (`taskset`, a cgroup cpuset), where a second worker only adds wake-ups
/// and context switches between the two.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus.min(2))
        .enable_all()
        .build()
}
