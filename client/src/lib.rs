//! `tryst-client`: the client side of the tryst rendezvous relay, for hidden servers and
//! for the clients that reach them.
//!
//! - [`heads`]: the request heads and proofs a hidden server parks with and a client
//!   reaches with. The relay's own integration tests build their requests with these
//!   functions, so the bytes this crate sends cannot drift from what the relay checks.
//! - [`conn`]: one park or one reach over TCP ([`conn::park`], [`conn::reach`]), with the
//!   relay's answer parsed into a typed [`Error`] (status and stable error code).
//! - [`pump`]: moving bytes both ways between two sockets: `splice(2)` through a pipe
//!   pair on Linux (no user-space copy), a fixed-buffer copy otherwise; never a
//!   per-byte allocation.
//! - [`expose::Exposer`]: a pool of parked connections for one service that opens the
//!   local target on each pairing, re-parks at once, backs off with jitter on transient
//!   failures and stops on permanent refusals.
//! - [`spare::Spares`]: relay connections opened (and TLS-handshaken) ahead of need, so
//!   a reach pays no handshake to the relay; bounded, refreshed, closed on idle.
//! - [`secret`]: reading a secret exactly as `tryst provision` prints it.
//! - [`tag`]: the Qredo-style tag family's publisher side (KDF, park request, frames);
//!   [`hive`]: the Hive streaming fallback's park proof, park head and a re-signing
//!   [`hive::Publisher`]; [`publication`]: signing Hive publications (the canonical
//!   preimage the relay verifies).
//!
//! Runnable examples: `examples/expose.rs` (a pooled hidden server forwarding to a local
//! service) and `examples/reach.rs` (one reach, one request).
//!
//! The crate is async on tokio, logs with `tracing` (one line per event at info), never
//! logs a secret, and contains no `unsafe`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tryst_client::Error> {
//! use tryst_client::conn::{self, RelayAddr};
//! use tryst_engine::target::RendezvousId;
//! let relay = RelayAddr::plain("relay.example:7400");
//! let id = RendezvousId::parse("0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f").unwrap();
//! let (stream, early) = conn::reach(&relay, &id, &conn::Timeouts::default()).await?;
//! # drop((stream, early)); Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod conn;
pub mod expose;
pub mod heads;
pub mod hive;
pub mod publication;
pub mod pump;
pub mod secret;
pub mod spare;
pub mod tag;
pub mod tls;

pub use conn::{Error, Refusal};
