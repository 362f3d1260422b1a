//! tryst-engine: the performance core of the tryst rendezvous relay.
//!
//! Layers, from pure to I/O:
//! - [`head`]: bounded, push-style request-head parsing (httparse underneath).
//! - [`target`]: CONNECT targets and rendezvous ids (`uuid:<UUID>`).
//! - [`auth`]: the native HMAC-SHA256 park proof and its bounded replay cache.
//! - [`room`]: the waiting room, a pure state machine over a slab.
//! - [`reject`]: every refusal the engine can send, mapped to a status code in one place.
//! - [`route`]: the routing contract between the engine and the relay.
//! - [`claim`]: cluster-wide claims a route may carry (replay nonces, single-shot tags).
//! - [`totp`]: RFC 6238 TOTP as node-rendezvous (speakeasy) checks it.
//! - [`node`]: node-rendezvous parsers, exact frames, and [`node::CompatRouter`] (native
//!   and node-rendezvous on one listener).
//! - [`driver`]: the only module with `unsafe`: worker processes, io_uring, splice.
//!
//! Under `cfg(any(test, fuzzing))` a `fuzzing` module holds the fuzz harnesses shared
//! by `fuzz/` and the corpus-replay test.
//!
//! Everything except [`driver`] performs no I/O and never reads the clock: callers pass
//! `now` in.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod claim;
pub mod driver;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod head;
pub mod node;
pub mod reject;
pub mod room;
pub mod route;
pub mod target;
pub mod totp;
