//! Qredo's own wire: the Lingua Franca RPC at `/services`, so the Qredo SDK's
//! rendezvous and conversations work unchanged (see `docs/compat/qredo.md`).
//!
//! - [`lf`]: the codec (canonical S-expressions, marked atoms, the RPC envelope).
//! - [`ownership`]: the SDK's `OwnershipSignature` and its replay cache.
//! - [`rendezvous`]: the sans-IO `Rendezvous` table (takes `now`).
//! - [`store`]: the durable `Conversations` queues, where the dead-drop keeps its messages
//!   (a redb file, or [`pg`]: the dead-drop's PostgreSQL database).
//! - [`service`]: [`Qredo`], the RPC core and its `POST /services` adapter.
//! - [`share`]: the link to the workers' `tag:` tables (one tag table for RPC and
//!   `CONNECT tag:`).
//! - [`ws`]: the WebSocket at `/services` (several requests in flight, subscriptions).
//! - here: [`QredoConfig`], [`QredoSettings`] (its flags) and [`resolve`].
//!
//! `service.rs` holds the RPC core as well as its [`crate::family::ServiceFamily`]. There
//! is no `connect.rs`: the `CONNECT` side of Qredo's tags is the `tag:` family
//! ([`crate::tag`]), whose limits `/services` shares.
//!
//! Apps: every request carries the SDK's `appId` and `appSecret` (the hex-decoded
//! secret). The relay answers an app listed in `--qredo-apps` (secret compared in
//! constant time), or any app with `--qredo-open`; otherwise the call fails with
//! [`Failure::AppNotAuthorised`].

pub mod lf;
pub mod ownership;
pub mod pg;
pub mod rendezvous;
pub mod service;
pub mod share;
pub mod store;
pub mod ws;

pub use service::Qredo;

use std::path::PathBuf;

/// Why a call failed: encoded as the SDK's failure result (`R`) with one error item,
/// `(I<code> S<message> (S"tryst" S<name>))`. The codes are tryst's (Qredo's own
/// numbering was never published).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The body is not a Lingua Franca request.
    #[error("malformed request")]
    Malformed,
    /// The body exceeds the request size limit.
    #[error("request too large")]
    TooLarge,
    /// Not protocol 0.3.x.
    #[error("unsupported protocol version")]
    UnsupportedVersion,
    /// appId/appSecret not accepted.
    #[error("app not authorised")]
    AppNotAuthorised,
    /// No such service.
    #[error("unknown service")]
    UnknownService,
    /// No such operation in the service.
    #[error("unknown operation")]
    UnknownOperation,
    /// Wrong number or shape of arguments.
    #[error("bad arguments")]
    BadArguments,
    /// The ownership signature does not verify (or signs another operation).
    #[error("bad ownership signature")]
    BadSignature,
    /// The signature's timestamp is outside the window.
    #[error("stale ownership signature")]
    StaleSignature,
    /// The signature's nonce was already used within the window.
    #[error("replayed ownership signature")]
    ReplayedSignature,
    /// The replay cache is full; retry later.
    #[error("replay cache full")]
    ReplayCacheFull,
    /// No rendezvous with this hashed tag (for operations whose result type has no
    /// "unknown" member).
    #[error("unknown rendezvous")]
    UnknownRendezvous,
    /// A table or the store is full; retry later.
    #[error("relay busy")]
    Busy,
    /// The conversation queue holds its maximum of items.
    #[error("queue full")]
    QueueFull,
    /// The conversation store failed; nothing was stored.
    #[error("store unavailable")]
    StoreUnavailable,
    /// A multi-response operation (subscriptions) asked over plain HTTP.
    #[error("multi-response operations need the WebSocket transport")]
    NeedsWebSocket,
}

impl Failure {
    /// The numeric code.
    pub fn code(self) -> i32 {
        match self {
            Self::Malformed => 1000,
            Self::TooLarge => 1001,
            Self::UnsupportedVersion => 1002,
            Self::AppNotAuthorised => 1003,
            Self::UnknownService => 1004,
            Self::UnknownOperation => 1005,
            Self::BadArguments => 1006,
            Self::BadSignature => 1007,
            Self::StaleSignature => 1008,
            Self::ReplayedSignature => 1009,
            Self::ReplayCacheFull => 1010,
            Self::UnknownRendezvous => 1011,
            Self::Busy => 1012,
            Self::QueueFull => 1013,
            Self::StoreUnavailable => 1014,
            Self::NeedsWebSocket => 1015,
        }
    }

    /// The stable name (the `tryst` debug item).
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed_request",
            Self::TooLarge => "request_too_large",
            Self::UnsupportedVersion => "unsupported_version",
            Self::AppNotAuthorised => "app_not_authorised",
            Self::UnknownService => "unknown_service",
            Self::UnknownOperation => "unknown_operation",
            Self::BadArguments => "bad_arguments",
            Self::BadSignature => "bad_signature",
            Self::StaleSignature => "stale_signature",
            Self::ReplayedSignature => "replayed_signature",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::UnknownRendezvous => "unknown_rendezvous",
            Self::Busy => "busy",
            Self::QueueFull => "queue_full",
            Self::StoreUnavailable => "store_unavailable",
            Self::NeedsWebSocket => "needs_websocket",
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QredoError {
    /// The conversation store could not be opened.
    #[error("qredo conversation store: {0}")]
    Store(String),
    /// The apps file could not be read or parsed.
    #[error("qredo apps file {path}: {message}")]
    Apps {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a secret).
        message: String,
    },
}

/// The settings of the `/services` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QredoConfig {
    /// Accept any appId/appSecret.
    pub open: bool,
    /// The operator's apps file (`[apps]` appId = hex secret), read at start.
    pub apps_file: Option<PathBuf>,
    /// Rendezvous table limits and the signature window.
    pub rendezvous: rendezvous::RendezvousLimits,
    /// Conversation queue limits.
    pub store: store::StoreLimits,
    /// The conversation store's file.
    pub store_path: PathBuf,
    /// Largest request body (and WebSocket message), bytes.
    pub max_request: usize,
    /// Most WebSocket connections at once (they leave the HTTP service's connection
    /// cap once upgraded); one more upgrade is answered `503`.
    pub max_sockets: usize,
}

impl QredoConfig {
    /// Defaults with the store in `data_dir` (`qredo.redb`), no apps, not open.
    pub fn in_dir(data_dir: &std::path::Path) -> Self {
        Self {
            open: false,
            apps_file: None,
            rendezvous: rendezvous::RendezvousLimits::default(),
            store: store::StoreLimits::default(),
            store_path: data_dir.join("qredo.redb"),
            max_request: 64 * 1024,
            max_sockets: 1024,
        }
    }
}

/// Parses an apps file: TOML with one table, `[apps]`, mapping each appId to its
/// secret as hex (as the SDK is given it).
pub fn parse_apps(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        apps: std::collections::BTreeMap<String, String>,
    }
    let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    file.apps
        .into_iter()
        .map(|(id, secret)| {
            hex::decode(secret.trim())
                .map(|s| (id.clone(), s))
                .map_err(|_| format!("the secret of app {id:?} is not hex"))
        })
        .collect()
}

/// The Qredo `/services` flags (`tryst serve --qredo-*`, config keys of the same names).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct QredoSettings {
    /// Qredo /services: answer every appId/appSecret, not only those in --qredo-apps [default: false].
    #[arg(long, env = "TRYST_QREDO_OPEN", value_name = "BOOL")]
    pub qredo_open: Option<bool>,
    /// Qredo /services: TOML file of operator-provisioned apps, `[apps]` `"<appId>" = "<secret, hex>"` [default: none].
    #[arg(long, env = "TRYST_QREDO_APPS", value_name = "FILE")]
    pub qredo_apps: Option<PathBuf>,
}

crate::config_keys::impl_settings_or!(QredoSettings {
    qredo_open,
    qredo_apps,
});

/// Qredo's `/services`: its store in `data_dir`, the apps flags, and the `tag:` family's
/// caps (most tags, longest duration) and proof window, shared so both faces of a tag
/// follow the same limits.
pub fn resolve(
    s: &QredoSettings,
    cx: &crate::families::ResolveContext<'_>,
    tag: &crate::tag::table::TagLimits,
) -> Result<QredoConfig, crate::config::ConfigError> {
    let (data_dir, cwd, proof_window) = (cx.data_dir, cx.cwd, cx.proof_window);
    use crate::config::absolute;
    let mut q = QredoConfig::in_dir(data_dir);
    q.open = s.qredo_open.unwrap_or(false);
    q.apps_file = s.qredo_apps.clone().map(|p| absolute(p, cwd)).transpose()?;
    q.rendezvous.max_tags = tag.max_tags;
    q.rendezvous.max_duration_secs = tag.max_duration_secs;
    q.rendezvous.window_ms = u64::try_from(proof_window.as_millis()).unwrap_or(u64::MAX);
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_file_parses() {
        let apps = parse_apps("[apps]\n\"com.example.a\" = \"00ff\"\n").unwrap();
        assert_eq!(apps, [("com.example.a".to_owned(), vec![0, 0xff])]);
        let bad = parse_apps("[apps]\na = \"5ec7e7\"\nb = \"xyz\"\n").unwrap_err();
        assert!(!bad.contains("xyz"), "a secret in an error message: {bad}");
        assert!(parse_apps("[other]\n").is_err());
    }

    #[test]
    fn failure_codes_are_distinct() {
        let all = [
            Failure::Malformed,
            Failure::TooLarge,
            Failure::UnsupportedVersion,
            Failure::AppNotAuthorised,
            Failure::UnknownService,
            Failure::UnknownOperation,
            Failure::BadArguments,
            Failure::BadSignature,
            Failure::StaleSignature,
            Failure::ReplayedSignature,
            Failure::ReplayCacheFull,
            Failure::UnknownRendezvous,
            Failure::Busy,
            Failure::QueueFull,
            Failure::StoreUnavailable,
            Failure::NeedsWebSocket,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(|f| f.code()).collect();
        let names: std::collections::HashSet<_> = all.iter().map(|f| f.name()).collect();
        assert_eq!((codes.len(), names.len()), (all.len(), all.len()));
    }
}
