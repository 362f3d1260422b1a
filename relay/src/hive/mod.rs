//! The Hive rendezvous relay family (issue 7): signed publications
//! (`/v1/rendezvous`), their federation, forward mailboxes (`/v1/forward`) and the
//! compatibility extras (`/v1/health`, the unsigned candidates board).
//!
//! - [`record`]: the publication JSON, its encodings and limits.
//! - [`preimage`]: the canonical bytes a publication signature covers.
//! - [`verify`]: strict Ed25519 ([`verify_strict`]) and [`verify_publication`].
//! - [`store`]: the bounded publication store (sans-IO).
//! - [`forward`]: forward mailboxes, the drain proof and its replay cache (sans-IO).
//! - [`board`]: the unsigned candidates board (sans-IO, off by default).
//! - [`connect`]: the streaming fallback, the `hive:` CONNECT family (sans-IO).
//! - [`mirror`]: federation with peer relays (push and pull).
//! - [`service`]: the HTTP adapter ([`Hive`]), served by [`crate::http`].
//!
//! Everything here is sans-IO except the HTTP adapter; docs/protocol-publications.md is
//! the wire reference.

pub mod board;
pub mod connect;
pub mod forward;
pub mod mirror;
pub mod preimage;
pub mod record;
pub mod service;
pub mod store;
pub mod verify;

pub use service::{Hive, HiveConfig};
pub use verify::{
    PublicationError, PublicationPolicy, SignatureError, VerifiedPublication, verify_publication,
    verify_strict,
};
