//! tryst-relay: the `tryst` binary's logic around [`tryst_engine`].
//!
//! - [`cli`]: the command line (`tryst serve`, `tryst provision`).
//! - [`config`]: flags, environment and config file merged into a validated
//!   [`config::ServeConfig`].
//! - [`ed25519`]: the strict Ed25519 policy shared by every signature check.
//! - [`duration`]: `2s` / `500ms` / `1h` durations.
//! - [`framing`]: `Content-Length` / `Transfer-Encoding` checks of requests for the HTTP
//!   service, refused on the worker in the owning family's shape.
//! - [`secrets`]: the secrets file, [`secrets::FileSecrets`] for the native router, and
//!   provisioning.
//! - [`nodeprov`]: node-rendezvous TOTP records: provisioning, import/export, QR codes.
//! - [`http`]: the hyper service for connections the engine hands off (`/healthz`,
//!   `/metrics`).
//! - [`metrics`]: the Prometheus rendering of the engine's counters.
//! - [`pico`]: the Pico Rendezvous Point API (`/new`, `/channel/<name>`): a sans-IO
//!   channel table and its async adapter, served by [`http`].
//! - [`qredo`]: Qredo's own wire, the Lingua Franca RPC at `/services` (codec,
//!   ownership signatures, rendezvous table, durable conversation queues), served by
//!   [`http`].
//! - [`router`]: the workers' router: the engine's compat router plus the `CONNECT`
//!   scheme families (`tag:`, `hive:`).
//! - [`serve`]: the supervisor process and the worker entry point.
//! - [`stun`]: the STUN Binding responder (`--stun-listen`).
//! - [`tag`]: Qredo-style tag rendezvous (`CONNECT tag:<hashedTag>`): the Qredo KDF,
//!   Ed25519 ownership proofs and the sans-IO tag table, as a `tag:` scheme family.
//!
//! I/O contract: [`serve`], [`http`] and [`stun::server`] do network I/O, [`secrets`] and [`config`] read and
//! write files; everything else is pure. This crate contains no `unsafe` code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod deaddrop;
pub mod duration;
pub mod ed25519;
pub mod framing;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod hive;
pub mod http;
pub mod metrics;
pub mod nodeprov;
pub mod pico;
pub mod qredo;
pub mod router;
pub mod secrets;
pub mod serve;
pub mod stun;
pub mod tag;
pub mod tls;
