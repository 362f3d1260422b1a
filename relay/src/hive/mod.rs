//! The Hive rendezvous relay family (issue 7): signed publications
//! (`/v1/rendezvous`), their federation, forward mailboxes (`/v1/forward`) and the
//! compatibility extras (`/v1/health`, the unsigned candidates board).
//!
//! - [`record`]: the publication JSON, its encodings and limits.
//! - [`preimage`]: the canonical bytes a publication signature covers.
//! - [`verify`]: strict Ed25519 ([`verify_strict`]) and [`verify_publication`].
//!
//! Everything here is sans-IO except the HTTP adapter; docs/protocol-publications.md is
//! the wire reference.

pub mod preimage;
pub mod record;
pub mod verify;

pub use verify::{
    PublicationError, PublicationPolicy, SignatureError, VerifiedPublication, verify_publication,
    verify_strict,
};
