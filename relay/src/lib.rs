//! tryst-relay: the `tryst` binary's logic around [`tryst_engine`].
//!
//! Every module and its I/O contract ("pure": no I/O, no clock, no threads; the clock
//! is passed in as `now` unless said otherwise):
//!
//! - [`cli`]: the command line (`tryst serve`, `tryst provision`, `tryst expose`,
//!   `tryst connect`); parses and dispatches, I/O is the commands'.
//! - [`config`]: flags, environment and config file merged into a validated
//!   [`config::ServeConfig`]; reads the config file, nothing else.
//! - [`config_keys`]: the config file's keys routed to the settings group (the relay's
//!   own or a family's) that owns them. Pure.
//! - [`families`]: the one list of families: their settings, resolved configurations,
//!   summary and start-up lines, the [`family::ServiceFamily`] list and the `CONNECT`
//!   families. Resolving is pure; opening reads and writes the families' files and binds
//!   their sockets.
//! - [`serve`]: the supervisor process (tokio: listeners, HTTP inbox, signals, worker
//!   supervision, the families' background tasks through [`family::ServiceFamily::start`],
//!   the cluster's tasks) and the worker entry point. Network, processes, signals, the
//!   clock.
//! - [`router`]: the workers' router: the engine's compat router plus the `CONNECT`
//!   scheme families (`tag:`, `hive:`). Pure; runs inside the worker's loop.
//! - [`framing`]: `Content-Length` / `Transfer-Encoding` checks of requests for the HTTP
//!   service, refused on the worker in the owning family's shape. Pure.
//! - [`http`]: the hyper service for connections the engine hands off (every family's
//!   paths, `/healthz`, `/metrics`) and for the operators' `--metrics-listen`
//!   listener. Network I/O on the handed-off sockets.
//! - [`family`]: [`family::ServiceFamily`], the shape of every family [`http`] serves
//!   (Pico, dead-drop, Hive, Qredo, STUN), listed once in [`families`]. Pure (a trait).
//! - [`body`]: the one request-body reader (limit + deadline → [`body::BodyError`]) and
//!   JSON reply the HTTP families share. Awaits the body; otherwise pure.
//! - [`clock`]: the one reading of the wall clock as unix seconds / milliseconds.
//! - [`files`]: the one atomic write of private files (secrets, dead-drop key, TLS key).
//!   Writes files.
//! - [`redb_file`]: the redb databases' file backend (new space written with zeros
//!   when the file grows). Writes the database files.
//! - [`metrics`]: the Prometheus rendering of the engine's counters. Pure.
//! - [`secrets`]: the secrets file, [`secrets::FileSecrets`] for the native router, and
//!   provisioning. Reads and writes the secrets file.
//! - [`provision`]: `tryst provision` (secrets, TOTP records, import/export). Reads and
//!   writes the secrets file.
//! - [`nodeprov`]: node-rendezvous TOTP records: provisioning, import/export, QR codes.
//!   Reads and writes the secrets file (through [`secrets`]).
//! - [`tls`]: the TLS certificate: the operator's PEM files or a self-signed pair
//!   generated once into the data directory. Reads and writes those files.
//! - [`ed25519`]: the strict Ed25519 policy shared by every signature check. Pure.
//! - [`duration`]: `2s` / `500ms` / `1h` durations. Pure.
//! - [`pico`]: the Pico Rendezvous Point API (`/new`, `/channel/<name>`): a sans-IO
//!   channel table and its async adapter (timers), served by [`http`].
//! - [`deaddrop`]: the hivemind-compatible dead-drop (`/pubkey`, `/deposit`,
//!   `/retrieve`, `/ack`, and unknown paths on the public listeners), served by [`http`].
//!   Files (the redb store, the relay key), PostgreSQL over the network, a writer
//!   thread; its checks and tables are pure.
//! - [`hive`]: Hive publications and forward mailboxes (`/v1/...`, served by [`http`])
//!   and the `hive:` scheme family (in [`router`]). `mirror` pulls from and pushes to
//!   peer relays over HTTP; the tables and verification are pure.
//! - [`qredo`]: Qredo's own wire, the Lingua Franca RPC at `/services` (codec,
//!   ownership signatures, rendezvous table, durable conversation queues, WebSocket),
//!   served by [`http`]. The conversation store is a redb file; the codec and tables
//!   are pure.
//! - [`tag`]: Qredo-style tag rendezvous (`CONNECT tag:<hashedTag>`): the Qredo KDF,
//!   Ed25519 ownership proofs and the sans-IO tag table, as a `tag:` scheme family in
//!   [`router`]. Pure.
//! - [`stun`]: the STUN Binding responder (`--stun-listen`): a pure message module,
//!   [`stun::server`] the UDP task, and [`stun::Stun`], its [`family::ServiceFamily`].
//! - [`agent`]: `tryst expose` and `tryst connect` over `tryst-client`. Network, the
//!   agent's config file, signals.
//! - [`cluster`]: several nodes as one (docs/cluster.md): the directory on Valkey/Redis,
//!   the mesh between nodes (preamble, listener, connector), cross-node parks and
//!   reaches, cluster-wide claims and replay caches, the HTTP families across nodes.
//!   Network (Redis, the mesh); its preamble and verifier are pure.
//! - `fuzzing` (built for tests and `--cfg fuzzing` only): the fuzz targets' harnesses.
//!
//! This crate contains no `unsafe` code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod body;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod config_keys;
pub mod deaddrop;
pub mod duration;
pub mod ed25519;
pub mod families;
pub mod family;
pub mod files;
pub mod framing;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod hive;
pub mod http;
pub mod metrics;
pub mod nodeprov;
pub mod pico;
pub mod provision;
pub mod qredo;
pub mod redb_file;
pub mod router;
pub mod secrets;
pub mod serve;
pub mod stun;
pub mod tag;
pub mod tls;
