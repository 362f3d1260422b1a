//! Configuration: raw [`Settings`] from flags, environment and file are merged, then
//! turned once into a validated [`ServeConfig`] ("parse, don't validate").
//!
//! The resolution is a pure function of the merged settings, the environment variables
//! that pick the data directory, and the host's limits ([`HostLimits`]), so the
//! supervisor and every worker (which re-parse the same command line) agree.

use crate::cli::{ProvisionArgs, ServeArgs, Settings, WorkerCount};
use crate::families::{FamilyConfigs, ResolveContext};
use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tryst_engine::driver::EngineConfig;

/// Default listen address.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7400);
/// Default `--max-sockets`.
pub const DEFAULT_MAX_SOCKETS: usize = 120_000;
/// Default `--max-http-connections`.
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 256;
/// Largest `--totp-skew-steps`.
const MAX_TOTP_SKEW_STEPS: u64 = 10;
/// Default `--proof-window`.
pub const DEFAULT_PROOF_WINDOW: Duration = Duration::from_secs(60);
/// File descriptors a worker keeps for everything but sockets and pipes (ring, control
/// sockets, shared memory, logging, ...).
pub const MISC_FDS_PER_WORKER: usize = 64;
/// Most worker processes `--workers auto` will start before asking for an explicit value.
pub const MAX_AUTO_WORKERS: usize = 256;
/// Largest fd limit used in the budget (Linux's default `fs.nr_open`), so an unlimited
/// hard limit still gives a finite budget.
pub const NOFILE_CEILING: u64 = 1 << 20;
/// Name of the secrets file inside the data directory.
pub const SECRETS_FILE_NAME: &str = "secrets.toml";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The config file is not valid TOML for [`Settings`].
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and the problem).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid `{key}`: {message}")]
    Invalid {
        /// The flag / config key.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// No data directory given and none of the variables that locate one are set.
    #[error("no data directory: pass --data-dir or set TRYST_DATA_DIR, XDG_DATA_HOME or HOME")]
    NoDataDir,
    /// The current directory is needed to make a relative path absolute.
    #[error("cannot resolve relative path {path}: {source}")]
    RelativePath {
        /// The path as given.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The fd limit leaves no room for sockets in a worker.
    #[error(
        "RLIMIT_NOFILE hard limit {hard} leaves no sockets per worker after reserving {reserve} fds for pipes and bookkeeping; raise the limit or lower --max-pipes-per-worker"
    )]
    NoFdBudget {
        /// The hard limit.
        hard: u64,
        /// The fds reserved.
        reserve: usize,
    },
    /// `--workers auto` would need too many processes.
    #[error(
        "--max-sockets {max_sockets} with {budget} sockets per worker (RLIMIT_NOFILE hard limit) needs {needed} workers, more than {MAX_AUTO_WORKERS}; lower --max-sockets or pass --workers"
    )]
    TooManyWorkers {
        /// Requested total sockets.
        max_sockets: usize,
        /// Sockets per worker.
        budget: usize,
        /// Workers that would need.
        needed: usize,
    },
}

/// What the host allows; detected once with [`HostLimits::detect`], passed in for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// `RLIMIT_NOFILE` hard limit (the soft limit is raised to it at start).
    pub nofile_hard: u64,
    /// Cores available to this process.
    pub cores: usize,
}

impl HostLimits {
    /// Reads `RLIMIT_NOFILE` and the available parallelism.
    pub fn detect() -> Self {
        let nofile_hard =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(_, hard)| hard)
                .unwrap_or(1024);
        let cores = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1);
        Self { nofile_hard, cores }
    }
}

/// The validated settings of `tryst serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Absolute data directory (created 0700 at start).
    pub data_dir: PathBuf,
    /// Absolute path of the secrets file.
    pub secrets_path: PathBuf,
    /// Accepted `|now - ts|` for park proofs, seconds.
    pub proof_window_secs: u64,
    /// node-rendezvous: TOTP steps accepted either side of the current one.
    pub totp_skew_steps: u64,
    /// node-rendezvous: how a newer park treats the parked connection of its id.
    pub node_park_mode: tryst_engine::route::ParkMode,
    /// Sockets the relay as a whole aims to hold.
    pub max_sockets: usize,
    /// Most concurrent HTTP-service connections.
    pub max_http_connections: usize,
    /// The TLS listener, when one is configured.
    pub tls: Option<TlsConfig>,
    /// Ports for one id each (`--id-listen`): their connections reach that id with no
    /// head.
    pub id_listen: Vec<crate::cli::IdListen>,
    /// Everything the engine takes.
    pub engine: EngineConfig,
    /// Every family's configuration ([`crate::families`]).
    pub families: FamilyConfigs,
    /// The operators' address for `/metrics` and `/healthz`, when one is configured;
    /// the public listeners then answer `/metrics` as an unknown path.
    pub metrics_listen: Option<SocketAddr>,
    /// Several nodes as one (`--cluster-redis` and the mesh flags); `None`: a single node.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// Where TLS listens and which certificate it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Address to bind for TLS.
    pub listen: SocketAddr,
    /// Certificate chain and key given by the operator, or `None` for the generated
    /// self-signed pair in the data directory.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Name for a generated certificate's CN and SAN.
    pub name: String,
}

impl ServeConfig {
    /// Reads the config file named by `args` (if any), lets flags and environment
    /// override it, and validates the result against this host.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_config_file(path)?,
            None => Settings::default(),
        };
        let merged = args.settings.clone().or(file);
        let env = |name: &str| std::env::var_os(name);
        let cwd = std::env::current_dir();
        Self::resolve(
            merged,
            &env,
            cwd.as_deref().map_err(clone_io_error),
            HostLimits::detect(),
        )
    }

    /// The pure part of [`ServeConfig::load`]: defaults, validation and derived values.
    /// `env` looks up the variables that locate the default data directory; `cwd`
    /// anchors relative paths.
    pub fn resolve(
        s: Settings,
        env: &dyn Fn(&str) -> Option<OsString>,
        cwd: Result<&Path, io::Error>,
        host: HostLimits,
    ) -> Result<Self, ConfigError> {
        let defaults = EngineConfig::default();
        let (data_dir, secrets_path) =
            data_paths(s.data_dir.clone(), s.secrets.clone(), env, &cwd)?;

        let client_wait = s.client_wait.map_or(defaults.client_wait, |d| d.0);
        let head_timeout = positive(
            "head-timeout",
            s.head_timeout.map_or(defaults.head_timeout, |d| d.0),
        )?;
        let idle_timeout = positive(
            "idle-timeout",
            s.idle_timeout.map_or(defaults.idle_timeout, |d| d.0),
        )?;
        let drain_timeout = s.drain_timeout.map_or(defaults.drain_timeout, |d| d.0);
        let proof_window = s.proof_window.map_or(DEFAULT_PROOF_WINDOW, |d| d.0);
        if proof_window < Duration::from_secs(1) || proof_window.subsec_nanos() != 0 {
            return Err(invalid(
                "proof-window",
                "must be a whole number of seconds, at least 1s",
            ));
        }
        let totp_skew_steps = s.totp_skew_steps.unwrap_or(0);
        if totp_skew_steps > MAX_TOTP_SKEW_STEPS {
            return Err(invalid(
                "totp-skew-steps",
                "must be at most 10 (each step widens the guessing window by two codes)",
            ));
        }
        let max_parked_per_key = s.max_parked_per_id.unwrap_or(defaults.max_parked_per_key);
        if !(1..=1_000_000).contains(&max_parked_per_key) {
            return Err(invalid(
                "max-parked-per-id",
                "must be between 1 and 1000000",
            ));
        }
        let pipe_size = s.pipe_size.unwrap_or(defaults.pipe_size);
        if !(4096..=1 << 30).contains(&pipe_size) {
            return Err(invalid(
                "pipe-size",
                "must be between 4096 and 1073741824 bytes",
            ));
        }
        let bulk_pipe_size = s.bulk_pipe_size.unwrap_or(defaults.bulk_pipe_size);
        if !(4096..=1 << 30).contains(&bulk_pipe_size) {
            return Err(invalid(
                "bulk-pipe-size",
                "must be between 4096 and 1073741824 bytes",
            ));
        }
        let max_pipes_per_worker = s
            .max_pipes_per_worker
            .unwrap_or_else(|| default_max_pipes(host.nofile_hard));
        if !(1..=1 << 20).contains(&max_pipes_per_worker) {
            return Err(invalid(
                "max-pipes-per-worker",
                "must be between 1 and 1048576",
            ));
        }
        let max_sockets = s.max_sockets.unwrap_or(DEFAULT_MAX_SOCKETS);
        if max_sockets == 0 {
            return Err(invalid("max-sockets", "must be at least 1"));
        }
        let max_http_connections = s
            .max_http_connections
            .unwrap_or(DEFAULT_MAX_HTTP_CONNECTIONS);
        if max_http_connections == 0 {
            return Err(invalid("max-http-connections", "must be at least 1"));
        }

        let budget =
            sockets_per_worker(host.nofile_hard, max_pipes_per_worker).ok_or_else(|| {
                ConfigError::NoFdBudget {
                    hard: host.nofile_hard,
                    reserve: fd_reserve(max_pipes_per_worker),
                }
            })?;
        let workers = match s.workers.unwrap_or(WorkerCount::Auto) {
            WorkerCount::Fixed(n) => usize::from(n),
            WorkerCount::Auto => {
                let needed = auto_workers(max_sockets, budget, host.cores);
                if needed > MAX_AUTO_WORKERS {
                    return Err(ConfigError::TooManyWorkers {
                        max_sockets,
                        budget,
                        needed,
                    });
                }
                needed
            }
        };

        let mut engine = EngineConfig {
            workers,
            data_path: s.data_path.unwrap_or(defaults.data_path),
            pipe_size,
            bulk_pipe_size,
            max_pipes_per_worker,
            max_sockets_per_worker: budget,
            head_timeout,
            client_wait,
            idle_timeout,
            drain_timeout,
            max_parked_per_key,
            ..defaults
        };
        let tls = s.tls_listen.map(|listen| TlsConfig {
            listen,
            cert_and_key: s.tls_cert.clone().zip(s.tls_key.clone()),
            name: s
                .tls_name
                .clone()
                .unwrap_or_else(|| listen.ip().to_string()),
        });
        if tls.is_none() && (s.tls_cert.is_some() || s.tls_key.is_some()) {
            return Err(invalid("tls-cert", "needs tls-listen"));
        }
        let cluster = crate::cluster::resolve(&s, &cwd)?;
        let id_listen = s.id_listen.clone().unwrap_or_default();
        check_id_listen(&id_listen, cluster.is_some())?;
        let families = s.families.resolve(&ResolveContext {
            data_dir: &data_dir,
            cwd: &cwd,
            proof_window,
            client_wait,
            clustered: cluster.is_some(),
        })?;
        // A cluster decides proof replays and single-shot tags cluster-wide (claims).
        engine.cluster_claims = cluster.is_some();
        Ok(Self {
            families,
            metrics_listen: s.metrics_listen,
            tls,
            id_listen,
            listen: s.listen.unwrap_or(DEFAULT_LISTEN),
            data_dir,
            secrets_path,
            proof_window_secs: proof_window.as_secs(),
            totp_skew_steps,
            node_park_mode: s
                .node_park_mode
                .map_or(tryst_engine::route::ParkMode::Replace, Into::into),
            max_sockets,
            max_http_connections,
            engine: EngineConfig {
                cluster: cluster.is_some(),
                ..engine
            },
            cluster,
        })
    }
}

/// Most `--id-listen` ports: each is a descriptor in every worker and 33 bytes of the
/// worker's start-up specification.
pub const MAX_ID_LISTEN: usize = 256;

/// `--id-listen` entries: at most [`MAX_ID_LISTEN`], each address once, and not with a
/// cluster (a port for an id reaches only hidden servers parked on its own node; the
/// cluster's cross-node reach needs a head to carry).
fn check_id_listen(entries: &[crate::cli::IdListen], clustered: bool) -> Result<(), ConfigError> {
    if entries.is_empty() {
        return Ok(());
    }
    if clustered {
        return Err(invalid(
            "id-listen",
            "is not supported with cluster-redis: a port for an id reaches only hidden servers parked on its own node",
        ));
    }
    if entries.len() > MAX_ID_LISTEN {
        return Err(invalid("id-listen", "at most 256 ports"));
    }
    for (i, e) in entries.iter().enumerate() {
        if entries[..i].iter().any(|o| o.addr == e.addr) {
            return Err(invalid("id-listen", &format!("{} is given twice", e.addr)));
        }
    }
    Ok(())
}

/// The absolute data directory and secrets file: explicit values, else the defaults
/// ([`default_data_dir`], `<data-dir>/secrets.toml`).
pub fn data_paths(
    data_dir: Option<PathBuf>,
    secrets: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<OsString>,
    cwd: &Result<&Path, io::Error>,
) -> Result<(PathBuf, PathBuf), ConfigError> {
    let data_dir = match data_dir {
        Some(dir) => dir,
        None => default_data_dir(env).ok_or(ConfigError::NoDataDir)?,
    };
    let data_dir = absolute(data_dir, cwd)?;
    let secrets_path = match secrets {
        Some(p) => absolute(p, cwd)?,
        None => data_dir.join(SECRETS_FILE_NAME),
    };
    Ok((data_dir, secrets_path))
}

/// The secrets file `tryst provision` writes: `--secrets`, else `secrets.toml` in
/// `--data-dir`, else the config file's `secrets` / `data-dir`, else the default.
pub fn provision_secrets_path(args: &ProvisionArgs) -> Result<PathBuf, ConfigError> {
    let file = match &args.config {
        Some(path) => read_config_file(path)?,
        None => Settings::default(),
    };
    // An explicit --data-dir outranks a secrets path from the file.
    let file_secrets = if args.data_dir.is_some() {
        None
    } else {
        file.secrets
    };
    let secrets = args.secrets.clone().or(file_secrets);
    let env = |name: &str| std::env::var_os(name);
    let cwd = std::env::current_dir();
    let cwd = cwd.as_deref().map_err(clone_io_error);
    Ok(data_paths(args.data_dir.clone().or(file.data_dir), secrets, &env, &cwd)?.1)
}

/// Reads and parses a config file (TOML, keys are the flag names).
pub fn read_config_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_config(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Parses config file text; the error message names the offending key.
pub fn parse_config(text: &str) -> Result<Settings, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
}

/// The default data directory: `$TRYST_DATA_DIR`, else `$XDG_DATA_HOME/tryst` (when
/// absolute, as the XDG spec requires), else `$HOME/.local/share/tryst`.
pub fn default_data_dir(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let non_empty = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty("TRYST_DATA_DIR") {
        return Some(dir);
    }
    if let Some(xdg) = non_empty("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Some(xdg.join("tryst"));
    }
    non_empty("HOME").map(|home| home.join(".local").join("share").join("tryst"))
}

/// `--max-pipes-per-worker` when not given: the engine's default (1,024: enough for a
/// worker's 512 bulk directions at 256 pairs, docs/performance.md), but never more than
/// an eighth of the descriptor hard limit, so the pipes' fds take at most a quarter of
/// it and a host with a small limit still starts.
pub fn default_max_pipes(nofile_hard: u64) -> usize {
    let limit = usize::try_from(nofile_hard.min(NOFILE_CEILING)).unwrap_or(usize::MAX);
    EngineConfig::default()
        .max_pipes_per_worker
        .min(limit / 8)
        .max(1)
}

/// Fds a worker reserves for pipes (2 each) and bookkeeping.
pub fn fd_reserve(max_pipes_per_worker: usize) -> usize {
    max_pipes_per_worker
        .saturating_mul(2)
        .saturating_add(MISC_FDS_PER_WORKER)
}

/// Sockets one worker may hold: the fd hard limit (capped at [`NOFILE_CEILING`]) minus
/// [`fd_reserve`]; `None` when nothing is left.
pub fn sockets_per_worker(nofile_hard: u64, max_pipes_per_worker: usize) -> Option<usize> {
    let limit = usize::try_from(nofile_hard.min(NOFILE_CEILING)).unwrap_or(usize::MAX);
    limit
        .checked_sub(fd_reserve(max_pipes_per_worker))
        .filter(|&n| n > 0)
}

/// `--workers auto`: `max(cores, ceil(max_sockets / budget))`, at least 1.
pub fn auto_workers(max_sockets: usize, budget: usize, cores: usize) -> usize {
    let for_sockets = max_sockets.div_ceil(budget.max(1));
    cores.max(for_sockets).max(1)
}

/// `d`, refused under `key` if zero.
pub(crate) fn positive(key: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

/// [`ConfigError::Invalid`] for `key`.
pub(crate) fn invalid(key: &'static str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_owned(),
    }
}

/// `path` anchored at `cwd` if relative.
pub(crate) fn absolute(
    path: PathBuf,
    cwd: &Result<&Path, io::Error>,
) -> Result<PathBuf, ConfigError> {
    if path.is_absolute() {
        return Ok(path);
    }
    match cwd {
        Ok(cwd) => Ok(cwd.join(path)),
        Err(e) => Err(ConfigError::RelativePath {
            path,
            source: clone_io_error(e),
        }),
    }
}

fn clone_io_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::duration::HumanDuration;
    use std::collections::HashMap;
    use tryst_engine::driver::DataPath;

    const HOST: HostLimits = HostLimits {
        nofile_hard: 20_000,
        cores: 2,
    };

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    /// [`ServeConfig::resolve`] on a test host, with `HOME=/home/u` and `/cwd`.
    pub(crate) fn resolve(s: Settings) -> Result<ServeConfig, ConfigError> {
        let env = env_of(&[("HOME", "/home/u")]);
        ServeConfig::resolve(s, &env, Ok(Path::new("/cwd")), HOST)
    }

    #[test]
    fn defaults() {
        let c = resolve(Settings::default()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:7400".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/home/u/.local/share/tryst"));
        assert_eq!(
            c.secrets_path,
            PathBuf::from("/home/u/.local/share/tryst/secrets.toml")
        );
        assert_eq!(c.proof_window_secs, 60);
        assert_eq!(c.max_sockets, 120_000);
        let e = &c.engine;
        assert_eq!(
            e.workers, 7,
            "120000 sockets / (20000 - 2*1024 - 64) per worker"
        );
        assert_eq!(e.max_pipes_per_worker, 1024);
        assert_eq!(e.max_sockets_per_worker, 20_000 - 2048 - 64);
        assert_eq!(e.client_wait, Duration::from_secs(2));
        assert_eq!(e.head_timeout, Duration::from_secs(10));
        assert_eq!(e.idle_timeout, Duration::from_secs(3600));
        assert_eq!(e.drain_timeout, Duration::from_secs(30));
        assert_eq!(e.max_parked_per_key, 16);
        assert_eq!(e.pipe_size, 262_144);
        assert_eq!(e.data_path, DataPath::SpliceSyscall);
    }

    #[test]
    fn workers_auto_computation() {
        assert_eq!(sockets_per_worker(20_000, 128), Some(19_680));
        assert_eq!(auto_workers(120_000, 19_680, 2), 7);
        assert_eq!(
            auto_workers(120_000, 19_680, 16),
            16,
            "never fewer than cores"
        );
        assert_eq!(auto_workers(19_680, 19_680, 1), 1);
        assert_eq!(auto_workers(19_681, 19_680, 1), 2);
        assert_eq!(sockets_per_worker(300, 128), None);
        assert_eq!(sockets_per_worker(320, 128), None);
        assert_eq!(sockets_per_worker(321, 128), Some(1));
        assert_eq!(sockets_per_worker(u64::MAX, 128), Some((1 << 20) - 320));
    }

    #[test]
    fn the_default_pipe_pool_is_at_most_an_eighth_of_the_fd_limit() {
        assert_eq!(default_max_pipes(20_000), 1024);
        assert_eq!(default_max_pipes(u64::MAX), 1024);
        assert_eq!(default_max_pipes(4096), 512);
        assert_eq!(default_max_pipes(2048), 256);
        assert_eq!(default_max_pipes(7), 1);
        // A small limit still leaves sockets, as it did with 128 pipes.
        assert_eq!(sockets_per_worker(1024, default_max_pipes(1024)), Some(704));
    }

    #[test]
    fn explicit_workers_keep_the_fd_budget() {
        let s = Settings {
            workers: "3".parse().ok(),
            ..Settings::default()
        };
        let c = resolve(s).unwrap();
        assert_eq!(c.engine.workers, 3);
        assert_eq!(c.engine.max_sockets_per_worker, 17_888);
    }

    #[test]
    fn tiny_fd_limits_are_explained() {
        let env = env_of(&[("HOME", "/h")]);
        let low = HostLimits {
            nofile_hard: 256,
            cores: 1,
        };
        // An explicit pool (the default shrinks with the limit, see below).
        let pipes128 = || Settings {
            max_pipes_per_worker: Some(128),
            ..Settings::default()
        };
        let err = ServeConfig::resolve(pipes128(), &env, Ok(Path::new("/")), low).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::NoFdBudget {
                    hard: 256,
                    reserve: 320
                }
            ),
            "{err}"
        );
        let small = HostLimits {
            nofile_hard: 400,
            cores: 1,
        };
        let err = ServeConfig::resolve(pipes128(), &env, Ok(Path::new("/")), small).unwrap_err();
        assert!(
            matches!(err, ConfigError::TooManyWorkers { needed: 1500, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("pass --workers"));
        // With the default pool (an eighth of 256: 32 pipes) the same tiny limit leaves
        // 256 - 64 - 64 = 128 sockets per worker: explained as too many workers.
        let err =
            ServeConfig::resolve(Settings::default(), &env, Ok(Path::new("/")), low).unwrap_err();
        assert!(
            matches!(err, ConfigError::TooManyWorkers { needed: 938, .. }),
            "{err}"
        );
    }

    #[test]
    fn data_dir_precedence() {
        let d = |pairs: &[(&str, &str)]| default_data_dir(&env_of(pairs));
        assert_eq!(
            d(&[
                ("TRYST_DATA_DIR", "/t"),
                ("XDG_DATA_HOME", "/x"),
                ("HOME", "/h")
            ]),
            Some(PathBuf::from("/t"))
        );
        assert_eq!(
            d(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")]),
            Some(PathBuf::from("/x/tryst"))
        );
        assert_eq!(
            d(&[("XDG_DATA_HOME", "relative"), ("HOME", "/h")]),
            Some(PathBuf::from("/h/.local/share/tryst"))
        );
        assert_eq!(
            d(&[("TRYST_DATA_DIR", ""), ("HOME", "/h")]),
            Some(PathBuf::from("/h/.local/share/tryst"))
        );
        assert_eq!(d(&[]), None);
        let err = ServeConfig::resolve(Settings::default(), &env_of(&[]), Ok(Path::new("/")), HOST)
            .unwrap_err();
        assert!(matches!(err, ConfigError::NoDataDir));
    }

    #[test]
    fn relative_paths_are_anchored() {
        let s = Settings {
            data_dir: Some("data".into()),
            secrets: Some("s/secrets.toml".into()),
            ..Settings::default()
        };
        let c = resolve(s).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/cwd/data"));
        assert_eq!(c.secrets_path, PathBuf::from("/cwd/s/secrets.toml"));
    }

    #[test]
    fn file_keys_are_the_flag_names() {
        let text = r#"
listen = "127.0.0.1:9000"
data-dir = "/var/lib/tryst"
secrets = "/etc/tryst/secrets.toml"
workers = 4
data-path = "splice-uring"
client-wait = "500ms"
head-timeout = "5s"
idle-timeout = "30m"
drain-timeout = "10s"
max-parked-per-id = 8
pipe-size = 65536
proof-window = "30s"
totp-skew-steps = 1
node-park-mode = "queue"
max-sockets = 50000
max-pipes-per-worker = 64
max-http-connections = 10
"#;
        let s = parse_config(text).unwrap();
        let c = resolve(s).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/tryst"));
        assert_eq!(c.secrets_path, PathBuf::from("/etc/tryst/secrets.toml"));
        assert_eq!(c.proof_window_secs, 30);
        assert_eq!(c.totp_skew_steps, 1);
        assert_eq!(c.node_park_mode, tryst_engine::route::ParkMode::Queue);
        assert_eq!(c.max_http_connections, 10);
        assert_eq!(c.max_sockets, 50_000);
        let e = &c.engine;
        assert_eq!(e.workers, 4);
        assert_eq!(e.data_path, DataPath::SpliceUring);
        assert_eq!(e.client_wait, Duration::from_millis(500));
        assert_eq!(e.head_timeout, Duration::from_secs(5));
        assert_eq!(e.idle_timeout, Duration::from_secs(1800));
        assert_eq!(e.drain_timeout, Duration::from_secs(10));
        assert_eq!(e.max_parked_per_key, 8);
        assert_eq!(e.pipe_size, 65_536);
        assert_eq!(e.max_pipes_per_worker, 64);
        assert_eq!(e.max_sockets_per_worker, 20_000 - 128 - 64);
        assert_eq!(
            parse_config("threads = \"auto\"\n").unwrap().workers,
            Some(WorkerCount::Auto)
        );
    }
    /// A key and its alias both given: refused naming both (found by the fuzz target
    /// `serve_config`: the later one used to win silently).
    #[test]
    fn a_key_and_its_alias_together_are_refused() {
        for text in [
            "threads = 1\nworkers = \"auto\"\n",
            "workers = 2\nthreads = 1\n",
        ] {
            let err = parse_config(text).unwrap_err();
            assert!(
                err.contains("`workers` is given twice (`threads` is another name for it)"),
                "{err}"
            );
        }
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse_config("client-wait = \"5s\"\npipe-size = 65536\n").unwrap();
        let flags = Settings {
            client_wait: Some(HumanDuration(Duration::from_secs(1))),
            ..Settings::default()
        };
        let c = resolve(flags.or(file)).unwrap();
        assert_eq!(c.engine.client_wait, Duration::from_secs(1));
        assert_eq!(c.engine.pipe_size, 65_536);
    }

    const OTHER_ID: &str = "8f0c0a52-4b6e-4d3c-9d57-1f5e2f8b7a10";

    #[test]
    fn id_listen_ports_are_read_from_the_file_and_checked() {
        let text = format!(
            "id-listen = [\"127.0.0.1:2222={ID}\", \"[::1]:2223 = {OTHER_ID}\"]\n",
            ID = "0B6C6F1E-3C4B-4A8E-9D2F-6A1C2B3D4E5F"
        );
        let c = resolve(parse_config(&text).unwrap()).unwrap();
        let shown: Vec<String> = c.id_listen.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "127.0.0.1:2222=0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f",
                &format!("[::1]:2223={OTHER_ID}"),
            ]
        );
        assert!(resolve(Settings::default()).unwrap().id_listen.is_empty());
        // Bad values, each named.
        for (text, want) in [
            (
                "id-listen = [\"127.0.0.1:2222\"]\n",
                "`127.0.0.1:2222` is not ADDR=UUID",
            ),
            (
                "id-listen = [\"localhost:2222=8f0c0a52-4b6e-4d3c-9d57-1f5e2f8b7a10\"]\n",
                "`localhost:2222` is not a socket address",
            ),
            (
                "id-listen = [\"127.0.0.1:2222=nope\"]\n",
                "`nope` is not a rendezvous id (a hyphenated UUID)",
            ),
            ("id-listen = \"127.0.0.1:2222\"\n", "expected a sequence"),
        ] {
            let err = parse_config(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        // The same address twice.
        let twice =
            format!("id-listen = [\"127.0.0.1:2222={OTHER_ID}\", \"127.0.0.1:2222={OTHER_ID}\"]\n");
        assert_eq!(
            resolve(parse_config(&twice).unwrap())
                .unwrap_err()
                .to_string(),
            "invalid `id-listen`: 127.0.0.1:2222 is given twice"
        );
        // More than MAX_ID_LISTEN ports.
        let many: Vec<String> = (0..=MAX_ID_LISTEN)
            .map(|i| format!("\"127.0.0.1:{}={OTHER_ID}\"", 10_000 + i))
            .collect();
        let many = format!("id-listen = [{}]\n", many.join(", "));
        assert_eq!(
            resolve(parse_config(&many).unwrap())
                .unwrap_err()
                .to_string(),
            "invalid `id-listen`: at most 256 ports"
        );
        // Not with a cluster.
        let clustered = format!(
            "id-listen = [\"127.0.0.1:2222={OTHER_ID}\"]\ncluster-redis = \"redis://127.0.0.1:6379\"\nnode-name = \"a\"\nmesh-psk-file = \"/psk\"\nmesh-advertise = \"127.0.0.1:7401\"\n"
        );
        assert_eq!(
            resolve(parse_config(&clustered).unwrap())
                .unwrap_err()
                .to_string(),
            "invalid `id-listen`: is not supported with cluster-redis: a port for an id reaches only hidden servers parked on its own node"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = parse_config("listen = \"127.0.0.1:1\"\nclient_wait = \"2s\"\n").unwrap_err();
        assert!(err.contains("unknown field `client_wait`"), "{err}");
        assert!(err.contains("expected one of"), "{err}");
        let err = parse_config("client-wait = \"2\"\n").unwrap_err();
        assert!(err.contains("`2` has no unit"), "{err}");
        assert!(err.contains("client-wait"), "{err}");
        let err = parse_config("workers = 0\n").unwrap_err();
        assert!(err.contains("`0` is not a worker count"), "{err}");
        let err = parse_config("data-path = \"copy\"\n").unwrap_err();
        assert!(err.contains("splice-syscall"), "{err}");
        let err = parse_config("[server]\nlisten = \"x\"\n").unwrap_err();
        assert!(err.contains("unknown field `server`"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let cases: Vec<(Settings, &str)> = vec![
            (
                Settings {
                    head_timeout: Some(HumanDuration(Duration::ZERO)),
                    ..Settings::default()
                },
                "head-timeout",
            ),
            (
                Settings {
                    idle_timeout: Some(HumanDuration(Duration::ZERO)),
                    ..Settings::default()
                },
                "idle-timeout",
            ),
            (
                Settings {
                    proof_window: Some(HumanDuration(Duration::from_millis(1500))),
                    ..Settings::default()
                },
                "proof-window",
            ),
            (
                Settings {
                    proof_window: Some(HumanDuration(Duration::ZERO)),
                    ..Settings::default()
                },
                "proof-window",
            ),
            (
                Settings {
                    totp_skew_steps: Some(11),
                    ..Settings::default()
                },
                "totp-skew-steps",
            ),
            (
                Settings {
                    max_parked_per_id: Some(0),
                    ..Settings::default()
                },
                "max-parked-per-id",
            ),
            (
                Settings {
                    pipe_size: Some(100),
                    ..Settings::default()
                },
                "pipe-size",
            ),
            (
                Settings {
                    bulk_pipe_size: Some(4095),
                    ..Settings::default()
                },
                "bulk-pipe-size",
            ),
            (
                Settings {
                    max_sockets: Some(0),
                    ..Settings::default()
                },
                "max-sockets",
            ),
            (
                Settings {
                    max_pipes_per_worker: Some(0),
                    ..Settings::default()
                },
                "max-pipes-per-worker",
            ),
            (
                Settings {
                    max_http_connections: Some(0),
                    ..Settings::default()
                },
                "max-http-connections",
            ),
        ];
        for (s, key) in cases {
            match resolve(s) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected Invalid, got {other:?}"),
            }
        }
        let err = resolve(Settings {
            pipe_size: Some(100),
            ..Settings::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `pipe-size`: must be between 4096 and 1073741824 bytes"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_at_its_place_naming_every_key() {
        let err = parse_config("listen = \"127.0.0.1:1\"\nclient_wait = \"2s\"\n").unwrap_err();
        assert_eq!(
            err,
            "TOML parse error at line 2, column 1\n  |\n2 | client_wait = \"2s\"\n  | ^^^^^^^^^^^\n\
             unknown field `client_wait`, expected one of `listen`, `data-dir`, `secrets`, \
             `threads`, `workers`, `data-path`, `client-wait`, `head-timeout`, `idle-timeout`, \
             `drain-timeout`, `max-parked-per-id`, `pipe-size`, `bulk-pipe-size`, `proof-window`, \
             `totp-skew-steps`, `node-park-mode`, `max-sockets`, `max-pipes-per-worker`, \
             `max-http-connections`, `tls-listen`, `tls-cert`, `tls-key`, `tls-name`, \
             `id-listen`, `pico-wait`, `pico-channel-ttl`, `pico-max-channels`, `pico-max-waiting`, \
             `deaddrop-key`, `deaddrop-store`, `deaddrop-store-pool`, `deaddrop-max-payload`, \
             `deaddrop-max-pending`, `deaddrop-max-mailboxes`, `deaddrop-max-store-bytes`, \
             `deaddrop-rate-limit`, `deaddrop-rate-window`, `deaddrop-require-depositor-proof`, \
             `deaddrop-require-recipient-fingerprint`, `tag-max-duration`, `tag-max-tags`, \
             `max-ttl`, `hive-max-per-workspace`, `hive-max-publications`, `mirror`, \
             `mirror-interval`, `forward-poll-timeout`, `forward-mailbox-bytes`, \
             `forward-total-bytes`, `hive-board`, `qredo-open`, `qredo-apps`, `stun-listen`, \
             `metrics-listen`, `cluster-redis`, `node-name`, `mesh-listen`, \
             `mesh-advertise`, `mesh-psk-file`"
        );
        // A family's value is read in place: its error points into the value.
        let err = parse_config("pico-wait = \"2\"\n").unwrap_err();
        assert!(
            err.starts_with("TOML parse error at line 1, column 13\n"),
            "{err}"
        );
        assert!(err.contains("`2` has no unit"), "{err}");
        // The alias of a relay key, and relay and family keys mixed.
        let s = parse_config("threads = 2\npico-max-waiting = 3\nlisten = \"127.0.0.1:1\"\nstun-listen = \"127.0.0.1:2\"\n").unwrap();
        assert_eq!(s.workers, "2".parse().ok());
        assert_eq!(s.families.pico.pico_max_waiting, Some(3));
        assert_eq!(s.listen, "127.0.0.1:1".parse().ok());
        assert_eq!(s.families.stun.stun_listen, "127.0.0.1:2".parse().ok());
    }
}
