//! A STUN Binding responder (RFC 8489), so Hive devices learn the server-reflexive
//! address they publish as a `stunReflexive` candidate.
//!
//! - [`message`]: the sans-IO parser, encoder and the responder's decision ([`respond`]).
//! - [`server`]: the UDP loop the supervisor runs on `--stun-listen`, and its counters.
//!
//! No-amplification rule: a datagram is answered only if it is a well-formed Binding
//! request (magic cookie, exact length, valid FINGERPRINT when present, no
//! comprehension-required attribute); the answer goes to the datagram's source only, is
//! one datagram, and is at most [`message::MAX_RESPONSE_LEN`] (52) bytes: 40 for an IPv4
//! source, 52 for IPv6, against a smallest accepted request of 20. Error responses
//! (400, 420) are never sent; everything else is dropped and counted.

pub mod message;
pub mod server;
pub mod service;

pub use message::{DropReason, Outcome, respond};
pub use server::StunCounters;
pub use service::Stun;
