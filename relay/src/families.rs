//! The one list of families: adding a family touches its own folder and this file.
//!
//! Each family owns, in its folder, its settings (a `clap`/`serde` group of flags and
//! config keys), the `resolve` of those settings into its validated configuration, its
//! [`ServiceFamily`] (HTTP paths, metrics, background tasks) and, where it has one, its
//! `CONNECT` side (a [`SchemeFamily`]). This file lists them, in the order they are
//! routed, rendered on `/metrics` and printed:
//!
//! | family | settings | service (supervisor) | `CONNECT` (workers) |
//! |---|---|---|---|
//! | Pico | [`pico::PicoSettings`] | [`pico::Pico`] | |
//! | dead-drop | [`deaddrop::DeadDropSettings`] | [`deaddrop::DeadDrop`] | |
//! | Hive | [`hive::HiveSettings`] | [`hive::Hive`] | [`hive::connect::HiveConnect`] |
//! | STUN | [`stun::StunSettings`] | [`stun::Stun`] (UDP) | |
//! | Qredo `/services` | [`qredo::QredoSettings`] | [`qredo::Qredo`] | |
//! | `tag:` | [`tag::TagSettings`] | | [`tag::TagFamily`] |
//!
//! [`crate::cli::Settings`], [`crate::config::ServeConfig`] and [`crate::serve`] hold the
//! families only as [`FamilySettings`], [`FamilyConfigs`] and [`Opened`].
//!
//! I/O contract: [`FamilySettings::resolve`] is pure; [`open`] reads and writes the
//! families' files (the dead-drop key and store, Qredo's store and apps file),
//! [`Opened::bind`] binds their sockets, [`Opened::into_services`] registers them with
//! tokio.

use crate::config::ConfigError;
use crate::config_keys::{OneEntry, fields_of, one_entry};
use crate::family::ServiceFamily;
use crate::router::SchemeFamily;
use crate::{deaddrop, hive, pico, qredo, stun, tag};
use serde::de::MapAccess;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Declares [`FamilySettings`] from the one list of settings groups.
macro_rules! family_settings {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        /// Every family's settings group, in `--help` and config-key order. Each group is
        /// flattened into [`crate::cli::Settings`]: flag, environment variable and
        /// config key are the group's own.
        #[derive(Debug, Clone, Default, PartialEq, clap::Args)]
        pub struct FamilySettings {
            $(
                $(#[$doc])*
                #[command(flatten)]
                pub $field: $ty,
            )*
        }

        impl FamilySettings {
            /// Field by field: the value from `self` if given, else the one from `fallback`.
            pub fn or(self, fallback: Self) -> Self {
                Self {
                    $($field: self.$field.or(fallback.$field),)*
                }
            }

            /// Every config key of every family, in order.
            pub fn keys() -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(keys.extend_from_slice(fields_of::<$ty>());)*
                keys
            }

            /// Whether a family owns the config key `key`.
            pub fn owns(key: &str) -> bool {
                false $(|| fields_of::<$ty>().contains(&key))*
            }

            /// Reads the value of `key` (which [`Self::owns`]) from `map` into the group
            /// that owns it.
            pub(crate) fn read_entry<'de, A: MapAccess<'de>>(
                &mut self,
                key: String,
                map: &mut A,
            ) -> Result<(), A::Error> {
                $(
                    if fields_of::<$ty>().contains(&key.as_str()) {
                        let one: $ty = one_entry(key, map, |e: OneEntry<'_, A>| {
                            <$ty as serde::Deserialize>::deserialize(e)
                        })?;
                        self.$field = one.or(std::mem::take(&mut self.$field));
                        return Ok(());
                    }
                )*
                Err(serde::de::Error::custom(format_args!("no family owns `{key}`")))
            }
        }
    };
}

family_settings! {
    /// Pico channels.
    pico: pico::PicoSettings,
    /// The dead-drop.
    deaddrop: deaddrop::DeadDropSettings,
    /// The `tag:` family (and Qredo's rendezvous, which shares its limits).
    tag: tag::TagSettings,
    /// Hive publications, mirrors and forward mailboxes.
    hive: hive::HiveSettings,
    /// Qredo's `/services`.
    qredo: qredo::QredoSettings,
    /// The STUN responder.
    stun: stun::StunSettings,
}

/// What a family's `resolve` may use besides its own settings.
#[derive(Debug)]
pub struct ResolveContext<'a> {
    /// The absolute data directory (default locations of the families' files).
    pub data_dir: &'a Path,
    /// The current directory, to anchor relative paths.
    pub cwd: &'a Result<&'a Path, io::Error>,
    /// `--proof-window`.
    pub proof_window: Duration,
    /// `--client-wait`.
    pub client_wait: Duration,
    /// Whether this node is part of a cluster (`--cluster-redis`).
    pub clustered: bool,
}

/// Every family's validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyConfigs {
    /// Limits of the Pico channels.
    pub pico: pico::PicoLimits,
    /// The dead-drop (hivemind-rendezvous compatible mailboxes).
    pub deaddrop: deaddrop::DeadDropConfig,
    /// The `tag:` family's table limits (per worker).
    pub tag: tag::table::TagLimits,
    /// The Hive family (/v1/rendezvous, /v1/forward, federation, board).
    pub hive: hive::HiveConfig,
    /// Qredo's Lingua Franca RPC at /services.
    pub qredo: qredo::QredoConfig,
    /// The UDP address of the STUN Binding responder, when one is configured.
    pub stun_listen: Option<SocketAddr>,
}

impl FamilySettings {
    /// Each family's `resolve`, in list order (the first refusal wins).
    pub fn resolve(&self, cx: &ResolveContext<'_>) -> Result<FamilyConfigs, ConfigError> {
        let pico = pico::resolve(&self.pico, cx)?;
        let deaddrop = deaddrop::resolve(&self.deaddrop, cx)?;
        let tag = tag::resolve(&self.tag, cx)?;
        let hive = hive::resolve(&self.hive, cx)?;
        let qredo = qredo::resolve(&self.qredo, cx, &tag)?;
        let stun_listen = stun::resolve(&self.stun, cx)?;
        Ok(FamilyConfigs {
            pico,
            deaddrop,
            tag,
            hive,
            qredo,
            stun_listen,
        })
    }
}

impl FamilyConfigs {
    /// The families' lines of the `--check-config` summary among the listeners.
    pub fn summary_listeners(&self) -> String {
        stun::summary_line(self.stun_listen)
    }

    /// What `--check-config` checks of the families' files without writing anything:
    /// an existing dead-drop key parses (a missing one is generated at start) and the
    /// Qredo apps file reads and parses. Stores are not opened.
    pub fn check(&self) -> Result<(), FamilyError> {
        deaddrop::keys::check(&self.deaddrop.key_path)
            .map_err(|e| FamilyError::DeadDrop(e.into()))?;
        if let Some(path) = &self.qredo.apps_file {
            qredo::service::load_apps(path).map_err(FamilyError::Qredo)?;
        }
        Ok(())
    }

    /// The families' lines at the end of the `--check-config` summary.
    pub fn summary_tail(&self) -> String {
        self.hive.summary_line() + &self.deaddrop.summary_line()
    }

    /// The `CONNECT` scheme families a worker routes, in order, given its replay floor.
    pub fn connect_families(
        &self,
        proof_window_secs: u64,
        started_unix: u64,
    ) -> Vec<Box<dyn SchemeFamily>> {
        vec![
            Box::new(hive::connect::HiveConnect::new(
                hive::connect::HiveConnectConfig {
                    policy: self.hive.policy,
                    proof_window_secs,
                    started_unix: Some(started_unix),
                    ..hive::connect::HiveConnectConfig::default()
                },
            )),
            Box::new(tag::TagFamily::new(self.tag).started_at(started_unix)),
        ]
    }
}

/// Why a family could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FamilyError {
    /// The dead-drop could not start (its key or its store).
    #[error("dead-drop: {0}")]
    DeadDrop(#[from] deaddrop::DeadDropError),
    /// Qredo's `/services` could not start (its apps file or its store).
    #[error("{0}")]
    Qredo(#[from] qredo::QredoError),
    /// A family's socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Another I/O failure, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// The families the supervisor has opened (files read, stores open), before it prints
/// its start-up lines.
#[derive(Debug)]
pub struct Opened {
    configs: FamilyConfigs,
    deaddrop: deaddrop::DeadDrop,
    qredo: qredo::Qredo,
    stun: Option<std::net::UdpSocket>,
}

impl Opened {
    /// The supervisor's side of the families that keep state in the workers' routers
    /// (today: Qredo's `/services` rendezvous shared with the `tag:` tables, one tag
    /// table; docs/compat/qredo.md). The first half yields the families' updates for the
    /// workers; the second sends them, re-sends to restarted workers and takes the
    /// workers' reports.
    pub fn worker_links(&self) -> (LinkUpdates, WorkerLinks) {
        (
            LinkUpdates(self.qredo.link_tags()),
            WorkerLinks {
                courier: qredo::share::Courier::default(),
                qredo: self.qredo.clone(),
            },
        )
    }
}

/// The families' updates for the workers, in the order they were made (see
/// [`Opened::worker_links`]).
#[derive(Debug)]
pub struct LinkUpdates(Option<tokio::sync::mpsc::Receiver<qredo::share::Outgoing>>);

/// One update from a family for its owner worker (see [`WorkerLinks::send`]).
#[derive(Debug)]
pub struct LinkUpdate(qredo::share::Outgoing);

impl LinkUpdates {
    /// The next update; pending forever when no family has any to make.
    pub async fn next(&mut self) -> Option<LinkUpdate> {
        match self.0.as_mut() {
            Some(rx) => rx.recv().await.map(LinkUpdate),
            None => std::future::pending().await,
        }
    }
}

/// Carries the families' updates to the workers and their reports back (see
/// [`Opened::worker_links`]).
#[derive(Debug)]
pub struct WorkerLinks {
    courier: qredo::share::Courier,
    qredo: qredo::Qredo,
}

impl WorkerLinks {
    /// Sends `update` to the worker owning its key (queued while that inbox is full).
    pub fn send(&mut self, engine: &tryst_engine::driver::Engine, update: LinkUpdate) {
        self.courier.send(engine, update.0);
    }

    /// Hands the workers' reports (`HttpInbox::take_family_reports`) to their families.
    pub fn deliver(&self, reports: Vec<Vec<u8>>) {
        qredo::share::Courier::deliver(&self.qredo, reports);
    }

    /// Once per supervisor tick: re-sends what `restarted` workers must hold, then what
    /// still waits for room in an inbox.
    pub fn tick(&mut self, engine: &tryst_engine::driver::Engine, restarted: &[usize]) {
        self.courier.resend(engine, &self.qredo, restarted);
        self.courier.flush(engine);
    }
}

/// Opens every family's files and stores (the supervisor, once, at start; `started` is
/// its start second, the replay floor).
pub fn open(configs: &FamilyConfigs, started: u64) -> Result<Opened, FamilyError> {
    let (deaddrop, generated) = deaddrop::DeadDrop::open(configs.deaddrop.clone(), started)?;
    if generated {
        tracing::info!(path = %configs.deaddrop.key_path.display(), "dead-drop key generated");
    }
    // The queues live where the dead-drop keeps its messages (docs/compat/qredo.md).
    let qredo = qredo::Qredo::open(configs.qredo.clone(), deaddrop.postgres())?;
    Ok(Opened {
        configs: configs.clone(),
        deaddrop,
        qredo,
        stun: None,
    })
}

impl Opened {
    /// Binds the families' own sockets (after the relay's listeners) and returns their
    /// start-up lines (`tryst: stun listening on ADDR`).
    pub fn bind(&mut self) -> Result<String, FamilyError> {
        let mut lines = String::new();
        if let Some(addr) = self.configs.stun_listen {
            let socket = std::net::UdpSocket::bind(addr)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(|source| FamilyError::Bind { addr, source })?;
            let local = socket.local_addr().map_err(|source| FamilyError::Io {
                what: "reading the bound address",
                source,
            })?;
            lines.push_str(&stun::startup_line(local));
            self.stun = Some(socket);
        }
        Ok(lines)
    }

    /// The families' start-up lines printed last (the dead-drop's store), so readers of
    /// the earlier lines need not skip them.
    pub fn tail_lines(&self) -> String {
        self.configs.deaddrop.startup_line()
    }

    /// The service families, in routing and `/metrics` order; needs the supervisor's
    /// tokio runtime. `started` is the relay's replay floor.
    pub fn into_services(
        self,
        started: u64,
        cluster: Option<Arc<crate::cluster::http::ClusterHttp>>,
    ) -> Result<Vec<Arc<dyn ServiceFamily>>, FamilyError> {
        let Self {
            configs,
            deaddrop,
            qredo,
            stun,
        } = self;
        let hive = hive::Hive::new(configs.hive)
            .with_replay_floor(started)
            .with_cluster(cluster.clone());
        let stun = match stun {
            Some(socket) => {
                if let Ok(addr) = socket.local_addr() {
                    // Devices learn where to ask for their reflexive address from /v1/health.
                    hive.set_stun_port(addr.port());
                }
                let socket =
                    tokio::net::UdpSocket::from_std(socket).map_err(|source| FamilyError::Io {
                        what: "registering the STUN socket",
                        source,
                    })?;
                Some(stun::Stun::new(socket))
            }
            None => None,
        };
        let mut families: Vec<Arc<dyn ServiceFamily>> = vec![
            Arc::new(pico::Pico::new(configs.pico).with_cluster(cluster.clone())),
            Arc::new(deaddrop.with_cluster(cluster.clone())),
            Arc::new(hive),
        ];
        families.extend(stun.map(|s| Arc::new(s) as Arc<dyn ServiceFamily>));
        families.push(Arc::new(qredo.with_cluster(cluster)));
        Ok(families)
    }
}
