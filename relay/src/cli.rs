//! The command line: `tryst serve` and `tryst provision`.
//!
//! Every `serve` setting is one field of [`Settings`], which is both the clap flag set and
//! the config file's table (keys are the flag names), so the two cannot drift apart.
//! Precedence: flag, then `TRYST_*` environment variable, then config file, then the
//! built-in default.

use crate::duration::HumanDuration;
use clap::{Args, Parser, Subcommand};
use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use tryst_engine::driver::DataPath;

/// tryst, a rendezvous relay: hidden servers park outbound connections under an id;
/// clients reach them by naming the id.
#[derive(Debug, Parser)]
#[command(name = "tryst", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay.
    Serve(Box<ServeArgs>),
    /// Create a shared secret (or, with --totp, a node-rendezvous TOTP record) for a
    /// rendezvous id and print what its hidden server needs; --import/--export move
    /// node-rendezvous provisioning records in and out.
    Provision(ProvisionArgs),
    /// Compute a Qredo tag's hashed tag (the only form the relay sees), its derived
    /// ownership public key and the CONNECT target publishers and responders use.
    Tag(TagArgs),
    /// Put a local service behind a relay: keep connections parked under a rendezvous
    /// id and open the local target for every client (see docs/agents.md).
    Expose(Box<crate::agent::expose::ExposeArgs>),
    /// Reach a hidden server through a relay: join stdin/stdout (an ssh ProxyCommand) or,
    /// with --listen, forward a local port.
    Connect(crate::agent::connect::ConnectArgs),
}

/// Arguments of `tryst tag`.
#[derive(Debug, Clone, Args)]
pub struct TagArgs {
    /// The tag (any text; it is hashed exactly as the Qredo SDK does).
    #[arg(value_name = "TAG")]
    pub tag: String,
    /// The Qredo appId prefixed to the tag before hashing [default: empty].
    #[arg(long, value_name = "ID", default_value = "", hide_default_value = true)]
    pub app_id: String,
}

/// Arguments of `tryst serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML config file whose keys are the flag names (flags override it).
    #[arg(long, env = "TRYST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration (flags, environment, config file, secrets file) as
    /// serve would, print a summary and exit, without binding or starting workers.
    #[arg(long)]
    pub check_config: bool,
    /// Set by the supervisor for its workers, never by hand: the unix second the relay
    /// started. A worker refuses proofs stamped at or before it (the replay caches are in
    /// memory; see docs/reliability.md).
    #[arg(long, hide = true, value_name = "UNIX")]
    pub replay_floor: Option<u64>,
    /// The settings (each also settable in the config file).
    #[command(flatten)]
    pub settings: Settings,
}

/// Every `serve` setting. `None` means "not given here"; defaults apply after merging
/// flags, environment and config file (see [`crate::config`]).
///
/// The config file is read key by key: a family's key goes to its group, the others to
/// this struct's derived (`remote = "Self"`) `deserialize` (see [`crate::config_keys`]).
#[derive(Debug, Clone, Default, PartialEq, Args, serde::Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    rename_all = "kebab-case",
    remote = "Self"
)]
pub struct Settings {
    /// Address to listen on [default: 0.0.0.0:7400].
    #[arg(long, env = "TRYST_LISTEN", value_name = "ADDR", value_parser = parse_socket_addr)]
    #[serde(deserialize_with = "de_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: $XDG_DATA_HOME/tryst, else ~/.local/share/tryst].
    #[arg(long, env = "TRYST_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Secrets file [default: secrets.toml in the data directory].
    #[arg(long, env = "TRYST_SECRETS", value_name = "FILE")]
    pub secrets: Option<PathBuf>,
    /// Worker processes, or `auto` [default: auto = max(cores, max-sockets / per-worker fd budget)].
    #[arg(
        long,
        visible_alias = "threads",
        env = "TRYST_WORKERS",
        value_name = "N|auto"
    )]
    #[serde(alias = "threads")]
    pub workers: Option<WorkerCount>,
    /// Tunnel data path: splice-syscall or splice-uring [default: splice-syscall].
    #[arg(long, env = "TRYST_DATA_PATH", value_name = "MODE", value_parser = parse_data_path)]
    pub data_path: Option<DataPath>,
    /// How long a client waits for a hidden server to park [default: 2s].
    #[arg(long, env = "TRYST_CLIENT_WAIT", value_name = "DURATION")]
    pub client_wait: Option<HumanDuration>,
    /// Deadline for a complete request head; 408 after it [default: 10s].
    #[arg(long, env = "TRYST_HEAD_TIMEOUT", value_name = "DURATION")]
    pub head_timeout: Option<HumanDuration>,
    /// A tunnel with no bytes either way for this long is closed [default: 1h].
    #[arg(long, env = "TRYST_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<HumanDuration>,
    /// On SIGTERM, how long tunnels may drain [default: 30s].
    #[arg(long, env = "TRYST_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<HumanDuration>,
    /// Most parked connections per id; the oldest is closed beyond it [default: 16].
    #[arg(long, env = "TRYST_MAX_PARKED_PER_ID", value_name = "N")]
    pub max_parked_per_id: Option<usize>,
    /// Pipe capacity in bytes, set with F_SETPIPE_SZ [default: 262144].
    #[arg(long, env = "TRYST_PIPE_SIZE", value_name = "BYTES")]
    pub pipe_size: Option<usize>,
    /// Capacity a tunnel's pipe grows to when a splice fills it (a bulk stream); at most one pipe in 16 grows; at or below --pipe-size none does [default: 1048576].
    #[arg(long, env = "TRYST_BULK_PIPE_SIZE", value_name = "BYTES")]
    pub bulk_pipe_size: Option<usize>,
    /// Accepted clock difference for park proofs, whole seconds [default: 60s].
    #[arg(long, env = "TRYST_PROOF_WINDOW", value_name = "DURATION")]
    pub proof_window: Option<HumanDuration>,
    /// node-rendezvous: TOTP steps accepted either side of the current one [default: 0].
    #[arg(long, env = "TRYST_TOTP_SKEW_STEPS", value_name = "N")]
    pub totp_skew_steps: Option<u64>,
    /// node-rendezvous: a newer park of an id `replace`s the parked one, or `queue`s behind it [default: replace].
    #[arg(long, env = "TRYST_NODE_PARK_MODE", value_name = "MODE")]
    pub node_park_mode: Option<NodeParkMode>,
    /// Sockets the relay as a whole should be able to hold; sizes `--workers auto` [default: 120000].
    #[arg(long, env = "TRYST_MAX_SOCKETS", value_name = "N")]
    pub max_sockets: Option<usize>,
    /// Most pipes a worker holds at once (2 fds each) [default: 1024, at most an eighth of the fd hard limit].
    #[arg(long, env = "TRYST_MAX_PIPES_PER_WORKER", value_name = "N")]
    pub max_pipes_per_worker: Option<usize>,
    /// Most concurrent connections to the HTTP service (/healthz, /metrics) [default: 256].
    #[arg(long, env = "TRYST_MAX_HTTP_CONNECTIONS", value_name = "N")]
    pub max_http_connections: Option<usize>,
    /// Also listen for TLS on this address (node-rendezvous clients speak TLS) [default: no TLS listener].
    #[arg(long, env = "TRYST_TLS_LISTEN", value_name = "ADDR", value_parser = parse_socket_addr)]
    #[serde(deserialize_with = "de_socket_addr")]
    pub tls_listen: Option<SocketAddr>,
    /// TLS certificate chain, PEM [default: a self-signed certificate generated once into the data directory].
    #[arg(
        long,
        env = "TRYST_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "TRYST_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Name (IP address or DNS name) put in a generated certificate [default: the TLS listen address's IP].
    #[arg(long, env = "TRYST_TLS_NAME", value_name = "NAME")]
    pub tls_name: Option<String>,
    /// A port for one id, `ADDR=UUID` (repeat, or comma-separate, for more): every TCP
    /// connection accepted on ADDR is a client of the hidden server parked under UUID,
    /// with no head, so any client reaches it without an agent (docs/configuration.md)
    /// [default: none].
    #[arg(
        long,
        env = "TRYST_ID_LISTEN",
        value_name = "ADDR=UUID",
        value_delimiter = ','
    )]
    pub id_listen: Option<Vec<IdListen>>,
    /// Every family's settings (each family's own flags and config keys).
    #[command(flatten)]
    #[serde(skip)]
    pub families: crate::families::FamilySettings,
    /// Serve /metrics and /healthz for operators on this TCP address (e.g.
    /// 127.0.0.1:9400); the public listeners then stop serving /metrics [default: off].
    #[arg(long, env = "TRYST_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_socket_addr)]
    #[serde(deserialize_with = "de_socket_addr")]
    pub metrics_listen: Option<SocketAddr>,
    /// Join a cluster whose directory is this Valkey/Redis: `redis://[:password@]host:port[/db]`, `rediss://…`, or an absolute unix socket path (docs/cluster.md) [default: none, a single node].
    #[arg(
        long,
        env = "TRYST_CLUSTER_REDIS",
        value_name = "URL",
        hide_env_values = true
    )]
    pub cluster_redis: Option<String>,
    /// This node's name in the cluster, unique among the nodes: 1 to 64 of A-Z a-z 0-9 . _ - [default: the host name].
    #[arg(long, env = "TRYST_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where this node accepts mesh connections from the other nodes (keep it off the internet) [default: 0.0.0.0:7401].
    #[arg(long, env = "TRYST_MESH_LISTEN", value_name = "ADDR", value_parser = parse_socket_addr)]
    #[serde(deserialize_with = "de_socket_addr")]
    pub mesh_listen: Option<SocketAddr>,
    /// The address the other nodes dial for this node's mesh [default: the bound mesh address, which must then not be 0.0.0.0].
    #[arg(long, env = "TRYST_MESH_ADVERTISE", value_name = "ADDR", value_parser = parse_socket_addr)]
    #[serde(deserialize_with = "de_socket_addr")]
    pub mesh_advertise: Option<SocketAddr>,
    /// File holding the pre-shared mesh key (at least 16 bytes; the same file on every node; keep it mode 0600).
    #[arg(long, env = "TRYST_MESH_PSK_FILE", value_name = "FILE")]
    pub mesh_psk_file: Option<PathBuf>,
}

impl Settings {
    /// Field by field: the value from `self` if given, else the one from `fallback`.
    pub fn or(self, fallback: Self) -> Self {
        Self {
            listen: self.listen.or(fallback.listen),
            data_dir: self.data_dir.or(fallback.data_dir),
            secrets: self.secrets.or(fallback.secrets),
            workers: self.workers.or(fallback.workers),
            data_path: self.data_path.or(fallback.data_path),
            client_wait: self.client_wait.or(fallback.client_wait),
            head_timeout: self.head_timeout.or(fallback.head_timeout),
            idle_timeout: self.idle_timeout.or(fallback.idle_timeout),
            drain_timeout: self.drain_timeout.or(fallback.drain_timeout),
            max_parked_per_id: self.max_parked_per_id.or(fallback.max_parked_per_id),
            pipe_size: self.pipe_size.or(fallback.pipe_size),
            bulk_pipe_size: self.bulk_pipe_size.or(fallback.bulk_pipe_size),
            proof_window: self.proof_window.or(fallback.proof_window),
            totp_skew_steps: self.totp_skew_steps.or(fallback.totp_skew_steps),
            node_park_mode: self.node_park_mode.or(fallback.node_park_mode),
            max_sockets: self.max_sockets.or(fallback.max_sockets),
            max_pipes_per_worker: self.max_pipes_per_worker.or(fallback.max_pipes_per_worker),
            max_http_connections: self.max_http_connections.or(fallback.max_http_connections),
            tls_listen: self.tls_listen.or(fallback.tls_listen),
            tls_cert: self.tls_cert.or(fallback.tls_cert),
            tls_key: self.tls_key.or(fallback.tls_key),
            tls_name: self.tls_name.or(fallback.tls_name),
            id_listen: self.id_listen.or(fallback.id_listen),
            families: self.families.or(fallback.families),
            metrics_listen: self.metrics_listen.or(fallback.metrics_listen),
            cluster_redis: self.cluster_redis.or(fallback.cluster_redis),
            node_name: self.node_name.or(fallback.node_name),
            mesh_listen: self.mesh_listen.or(fallback.mesh_listen),
            mesh_advertise: self.mesh_advertise.or(fallback.mesh_advertise),
            mesh_psk_file: self.mesh_psk_file.or(fallback.mesh_psk_file),
        }
    }
}

impl Settings {
    /// The relay's own config keys (this struct's fields, aliases included).
    fn own_keys() -> &'static [&'static str] {
        static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| crate::config_keys::struct_fields(|d| Self::deserialize(d).map(drop)))
    }

    /// Every config key (aliases included): the relay's own and each family's, in
    /// `--help` order.
    pub fn config_keys() -> &'static [&'static str] {
        Self::all_keys()
    }

    /// Every config key: the relay's own, then each family's.
    fn all_keys() -> &'static [&'static str] {
        static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            let own = Self::own_keys();
            // The families' keys go where they stood before the last relay keys
            // (`metrics-listen` and the cluster's), as they are listed in `--help`.
            let at = own
                .iter()
                .position(|k| *k == "metrics-listen")
                .unwrap_or(own.len());
            let (before, after) = own.split_at(at);
            [before, &crate::families::FamilySettings::keys(), after].concat()
        })
    }
}

/// Config keys that are other names for a key: (alias, key). A file may give one of them.
const CONFIG_ALIASES: &[(&str, &str)] = &[("threads", "workers")];

impl<'de> serde::Deserialize<'de> for Settings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SettingsVisitor;

        impl<'de> Visitor<'de> for SettingsVisitor {
            type Value = Settings;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct Settings")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Settings, A::Error> {
                use crate::config_keys::{KnownKey, one_entry};
                use crate::families::FamilySettings;
                let known =
                    |key: &str| Settings::own_keys().contains(&key) || FamilySettings::owns(key);
                let seed = KnownKey {
                    known: &known,
                    all: Settings::all_keys(),
                };
                let mut settings = Settings::default();
                // Keys seen, under their canonical names: an alias and its key both
                // given would otherwise let the later one win silently.
                let mut seen: Vec<&'static str> = Vec::new();
                while let Some(key) = map.next_key_seed(seed)? {
                    if let Some(&(alias, name)) = CONFIG_ALIASES
                        .iter()
                        .find(|(alias, name)| key == *alias || key == *name)
                    {
                        if seen.contains(&name) {
                            return Err(de::Error::custom(format!(
                                "`{name}` is given twice (`{alias}` is another name for it)"
                            )));
                        }
                        seen.push(name);
                    }
                    if FamilySettings::owns(&key) {
                        settings.families.read_entry(key, &mut map)?;
                    } else {
                        let one = one_entry(key, &mut map, |e| Settings::deserialize(e))?;
                        settings = one.or(settings);
                    }
                }
                Ok(settings)
            }
        }

        deserializer.deserialize_struct("Settings", Self::all_keys(), SettingsVisitor)
    }
}

/// Arguments of `tryst provision`.
#[derive(Debug, Clone, Args)]
pub struct ProvisionArgs {
    /// The rendezvous id: a hyphenated UUID (stored in canonical lower-case form).
    #[arg(value_name = "UUID", required_unless_present_any = ["import", "export"])]
    pub id: Option<String>,
    /// Create a node-rendezvous TOTP record (40-character key, base32) instead of a
    /// native secret; prints the otpauth:// URI, a QR code and the provisioning record.
    #[arg(long, conflicts_with_all = ["import", "export"])]
    pub totp: bool,
    /// Import node-rendezvous provisioning records (JSON, one per line or an array) from
    /// FILE (`-` for stdin) into the TOTP table.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["id", "export"])]
    pub import: Option<PathBuf>,
    /// Print every TOTP record as a node-rendezvous provisioning record (one per line).
    #[arg(long, conflicts_with = "id")]
    pub export: bool,
    /// With --totp: the TOTP step in seconds [default: 30].
    #[arg(long, value_name = "SECONDS", requires = "totp")]
    pub step: Option<u64>,
    /// With --totp: how a newer park treats older ones for this id, queue or replace
    /// [default: the relay's node-rendezvous default, replace].
    #[arg(long, value_name = "MODE", requires = "totp", value_parser = ["queue", "replace"])]
    pub parking: Option<String>,
    /// With --totp: the issuer shown in authenticator apps and provisioning records
    /// [default: tryst].
    #[arg(long, value_name = "TEXT", requires = "totp")]
    pub issuer: Option<String>,
    /// The config file `tryst serve` uses, to find its data directory and secrets file.
    #[arg(long, env = "TRYST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: $XDG_DATA_HOME/tryst, else ~/.local/share/tryst].
    #[arg(long, env = "TRYST_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Secrets file [default: secrets.toml in the data directory].
    #[arg(long, env = "TRYST_SECRETS", value_name = "FILE")]
    pub secrets: Option<PathBuf>,
    /// Replace the secret (or TOTP record) if the id already has one.
    #[arg(long)]
    pub force: bool,
}

/// `--id-listen ADDR=UUID`: a listener whose connections all reach one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdListen {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The id every connection on `addr` reaches.
    pub id: tryst_engine::target::RendezvousId,
}

/// Why an `--id-listen` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdListenError {
    /// No `=` between the address and the id.
    #[error("`{0}` is not ADDR=UUID (e.g. 0.0.0.0:2222=8f0c0a52-4b6e-4d3c-9d57-1f5e2f8b7a10)")]
    Shape(String),
    /// The part before `=` is not a socket address.
    #[error("`{0}` is not a socket address (e.g. 0.0.0.0:2222 or [::]:2222)")]
    Addr(String),
    /// The part after `=` is not a hyphenated UUID.
    #[error("`{0}` is not a rendezvous id (a hyphenated UUID)")]
    Id(String),
}

impl FromStr for IdListen {
    type Err = IdListenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Quoted back only when short: the value is the operator's, but a config file
        // could hold anything.
        let shown = |t: &str| t.chars().take(80).collect::<String>();
        let (addr, id) = s
            .split_once('=')
            .ok_or_else(|| IdListenError::Shape(shown(s)))?;
        let addr = addr
            .trim()
            .parse()
            .map_err(|_| IdListenError::Addr(shown(addr)))?;
        let id = tryst_engine::target::RendezvousId::parse(id.trim())
            .map_err(|_| IdListenError::Id(shown(id)))?;
        Ok(Self { addr, id })
    }
}

impl fmt::Display for IdListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.addr, self.id)
    }
}

impl<'de> serde::Deserialize<'de> for IdListen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// `--workers`: a fixed count or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCount {
    /// Computed from cores, `--max-sockets` and the fd limit.
    Auto,
    /// Exactly this many.
    Fixed(NonZeroUsize),
}

/// Why a `--workers` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a worker count (expected a positive integer or `auto`)")]
pub struct WorkerCountError(String);

impl FromStr for WorkerCount {
    type Err = WorkerCountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        s.parse::<NonZeroUsize>()
            .map(Self::Fixed)
            .map_err(|_| WorkerCountError(s.to_owned()))
    }
}

impl fmt::Display for WorkerCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for WorkerCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;

        impl Visitor<'_> for CountVisitor {
            type Value = WorkerCount;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive integer or \"auto\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WorkerCount, E> {
                usize::try_from(v)
                    .ok()
                    .and_then(NonZeroUsize::new)
                    .map(WorkerCount::Fixed)
                    .ok_or_else(|| E::custom(WorkerCountError(v.to_string())))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WorkerCount, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(WorkerCountError(v.to_string()))),
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<WorkerCount, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(CountVisitor)
    }
}

/// How a node-rendezvous park treats the connection already parked under its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeParkMode {
    /// Close the parked connection; the newer one takes its place (upstream's behaviour).
    Replace,
    /// Queue behind the parked connections (FIFO, capped by `--max-parked-per-id`).
    Queue,
}

impl From<NodeParkMode> for tryst_engine::route::ParkMode {
    fn from(mode: NodeParkMode) -> Self {
        match mode {
            NodeParkMode::Replace => Self::Replace,
            NodeParkMode::Queue => Self::Queue,
        }
    }
}

/// Parses a listening or advertised address, `IP:PORT`, saying what is wrong in words a
/// user can act on (std's own error is only "invalid socket address syntax").
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    const EXAMPLE: &str = "e.g. 0.0.0.0:7400, or [::]:7400 for IPv6";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("`{s}` has no port: expected IP:PORT, {EXAMPLE}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "`{port}` is not a port (0 to 65535): expected IP:PORT, {EXAMPLE}"
        ));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "`{s}`: an IPv6 address goes in brackets, e.g. [::1]:{port}"
        ));
    }
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_err()
    {
        return Err(format!(
            "`{host}` is not an IP address (host names are not accepted here): expected IP:PORT, {EXAMPLE}"
        ));
    }
    Err(format!("`{s}` is not IP:PORT, {EXAMPLE}"))
}

/// [`parse_socket_addr`] for an optional config-file value.
pub fn de_socket_addr<'de, D>(d: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse_socket_addr(&text)
        .map(Some)
        .map_err(de::Error::custom)
}

/// Parses a `--data-path` value.
pub fn parse_data_path(s: &str) -> Result<DataPath, String> {
    match s {
        "splice-syscall" => Ok(DataPath::SpliceSyscall),
        "splice-uring" => Ok(DataPath::SpliceUring),
        other => Err(format!(
            "`{other}` is not a data path (expected splice-syscall or splice-uring)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bad_address_is_explained() {
        assert_eq!(
            parse_socket_addr("127.0.0.1:7400"),
            Ok("127.0.0.1:7400".parse().unwrap())
        );
        assert_eq!(
            parse_socket_addr("[::1]:7400"),
            Ok("[::1]:7400".parse().unwrap())
        );
        let example = "e.g. 0.0.0.0:7400, or [::]:7400 for IPv6";
        for (bad, want) in [
            (
                "127.0.0.1",
                format!("`127.0.0.1` has no port: expected IP:PORT, {example}"),
            ),
            ("", format!("`` has no port: expected IP:PORT, {example}")),
            (
                "127.0.0.1:99999",
                format!("`99999` is not a port (0 to 65535): expected IP:PORT, {example}"),
            ),
            (
                "::1:7400",
                "`::1:7400`: an IPv6 address goes in brackets, e.g. [::1]:7400".to_owned(),
            ),
            (
                "localhost:7400",
                format!(
                    "`localhost` is not an IP address (host names are not accepted here): expected IP:PORT, {example}"
                ),
            ),
        ] {
            assert_eq!(parse_socket_addr(bad), Err(want), "{bad:?}");
        }
        let flag = Cli::try_parse_from(["tryst", "serve", "--listen", "localhost:7400"])
            .unwrap_err()
            .to_string();
        assert!(flag.contains("host names are not accepted here"), "{flag}");
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tryst").chain(args.iter().copied()))
    }

    fn serve(args: &[&str]) -> ServeArgs {
        match parse(args).unwrap().command {
            Command::Serve(s) => *s,
            _ => panic!("expected serve"),
        }
    }

    #[test]
    fn serve_flags_parse() {
        let s = serve(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "3",
            "--data-path",
            "splice-uring",
            "--client-wait",
            "500ms",
            "--idle-timeout",
            "1h",
            "--max-parked-per-id",
            "4",
            "--config",
            "/etc/tryst.toml",
        ]);
        assert_eq!(s.config, Some(PathBuf::from("/etc/tryst.toml")));
        assert!(!s.check_config);
        let st = s.settings;
        assert_eq!(st.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(
            st.workers,
            Some(WorkerCount::Fixed(NonZeroUsize::new(3).unwrap()))
        );
        assert_eq!(st.data_path, Some(DataPath::SpliceUring));
        assert_eq!(
            st.client_wait,
            Some(HumanDuration(Duration::from_millis(500)))
        );
        assert_eq!(
            st.idle_timeout,
            Some(HumanDuration(Duration::from_secs(3600)))
        );
        assert_eq!(st.max_parked_per_id, Some(4));
        assert_eq!(st.head_timeout, None);
    }

    #[test]
    fn check_config_is_a_flag_not_a_setting() {
        assert!(serve(&["serve", "--check-config"]).check_config);
        assert!(
            crate::config::parse_config("check-config = true\n").is_err(),
            "not a config key"
        );
    }

    #[test]
    fn bad_values_are_refused_by_the_parser() {
        for args in [
            &["serve", "--client-wait", "2"][..],
            &["serve", "--workers", "0"],
            &["serve", "--workers", "many"],
            &["serve", "--data-path", "copy"],
            &["serve", "--listen", "localhost"],
            &["serve", "--unknown-flag"],
            &["provision"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
    }

    #[test]
    fn provision_parses() {
        let cli = parse(&[
            "provision",
            "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f",
            "--force",
        ])
        .unwrap();
        match cli.command {
            Command::Provision(p) => {
                assert_eq!(
                    p.id.as_deref(),
                    Some("0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f")
                );
                assert!(p.force);
                assert!(!p.totp);
            }
            _ => panic!("expected provision"),
        }
    }

    #[test]
    fn provision_totp_import_export_parse() {
        let id = "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f";
        let p = |args: &[&str]| match parse(args).map(|c| c.command) {
            Ok(Command::Provision(p)) => Ok(p),
            Ok(_) => panic!("expected provision"),
            Err(e) => Err(e),
        };
        let t = p(&[
            "provision",
            id,
            "--totp",
            "--step",
            "60",
            "--parking",
            "queue",
        ])
        .unwrap();
        assert!(t.totp);
        assert_eq!(t.step, Some(60));
        assert_eq!(t.parking.as_deref(), Some("queue"));
        let i = p(&["provision", "--import", "records.json"]).unwrap();
        assert_eq!(i.import, Some(PathBuf::from("records.json")));
        assert_eq!(i.id, None);
        assert!(p(&["provision", "--export"]).unwrap().export);
        for bad in [
            &["provision", id, "--import", "x"][..],
            &["provision", id, "--export"],
            &["provision", "--import", "x", "--export"],
            &["provision", id, "--step", "60"],
            &["provision", id, "--totp", "--parking", "fifo"],
            &["provision", "--totp"],
        ] {
            assert!(p(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn worker_count_parses() {
        assert_eq!("auto".parse(), Ok(WorkerCount::Auto));
        assert_eq!(
            "7".parse(),
            Ok(WorkerCount::Fixed(NonZeroUsize::new(7).unwrap()))
        );
        assert!("0".parse::<WorkerCount>().is_err());
        assert!("-1".parse::<WorkerCount>().is_err());
        assert_eq!(WorkerCount::Auto.to_string(), "auto");
    }

    #[test]
    fn settings_merge_prefers_self() {
        let a = Settings {
            pipe_size: Some(1),
            ..Settings::default()
        };
        let b = Settings {
            pipe_size: Some(2),
            max_sockets: Some(3),
            ..Settings::default()
        };
        let m = a.or(b);
        assert_eq!(m.pipe_size, Some(1));
        assert_eq!(m.max_sockets, Some(3));
        assert_eq!(m.listen, None);
    }
}
