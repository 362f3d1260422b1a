//! A STUN Binding responder (RFC 8489), so Hive devices learn the server-reflexive
//! address they publish as a `stunReflexive` candidate.
//!
//! - [`message`]: the sans-IO parser, encoder and the responder's decision ([`respond`]).
//! - [`server`]: the UDP loop the supervisor runs on `--stun-listen`, and its counters.
//! - [`service`]: [`Stun`], its [`crate::family::ServiceFamily`] (the UDP loop is its
//!   background task).
//! - here: [`StunSettings`] (its flag) and [`resolve`].
//!
//! STUN has no `CONNECT` side, so no `connect.rs`.
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

use std::net::SocketAddr;

/// The STUN flag (`tryst serve --stun-listen`, config key `stun-listen`).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct StunSettings {
    /// Answer STUN Binding requests (RFC 8489) on this UDP address [default: off].
    #[arg(long, env = "TRYST_STUN_LISTEN", value_name = "ADDR", value_parser = crate::cli::parse_socket_addr)]
    #[serde(deserialize_with = "crate::cli::de_socket_addr")]
    pub stun_listen: Option<SocketAddr>,
}

crate::config_keys::impl_settings_or!(StunSettings { stun_listen });

/// The STUN responder's UDP address, if any (nothing to validate).
pub fn resolve(
    s: &StunSettings,
    _cx: &crate::families::ResolveContext<'_>,
) -> Result<Option<SocketAddr>, crate::config::ConfigError> {
    Ok(s.stun_listen)
}

/// Its start-up line: `tryst: stun listening on ADDR`.
pub fn startup_line(bound: SocketAddr) -> String {
    format!("tryst: stun listening on {bound}\n")
}

/// Its `--check-config` line, when configured.
pub fn summary_line(listen: Option<SocketAddr>) -> String {
    listen
        .map(|addr| format!("stun listen     {addr}\n"))
        .unwrap_or_default()
}
