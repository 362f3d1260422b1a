//! `tryst expose`: put local services behind a relay.
//!
//! One service from flags (`--relay --id --secret-file --to`, secret also from
//! `TRYST_SECRET`) or several from `--config agent.toml`. Exit status: 0 after a SIGTERM
//! or SIGINT drain, [`exit::REFUSED`] when the relay refuses a park permanently (the
//! message names the relay's error code), [`exit::FAILURE`] for bad configuration.

use super::config::{self, AgentConfig, AuthSpec, ServiceSpec};
use super::exit;
use crate::duration::HumanDuration;
use clap::Args;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tryst_client::conn::{RelayAddr, Timeouts};
use tryst_client::expose::{Exposer, ParkAuth, Service};
use tryst_client::tls::Pin;

/// Arguments of `tryst expose`.
#[derive(Debug, Clone, Args)]
pub struct ExposeArgs {
    /// The relay, HOST:PORT.
    #[arg(
        long,
        env = "TRYST_RELAY",
        value_name = "HOST:PORT",
        required_unless_present = "config"
    )]
    pub relay: Option<String>,
    /// The rendezvous id to park under (as provisioned on the relay).
    #[arg(long, value_name = "UUID")]
    pub id: Option<String>,
    /// A file holding the id's secret exactly as `tryst provision` printed it
    /// (surrounding whitespace ignored). Without it, the secret comes from the
    /// TRYST_SECRET environment variable.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// How to park: `native` (HMAC proof with --secret-file / TRYST_SECRET), `node`
    /// (node-rendezvous: a TOTP code from --totp-secret-file; the relay's TLS port),
    /// `tag` (a Qredo-style tag publisher, --tag-file) or `hive` (a Hive device's
    /// streaming fallback, --hive-key-file) [default: native].
    #[arg(long, value_name = "FAMILY", value_parser = ["native", "node", "tag", "hive"])]
    pub family: Option<String>,
    /// node family: a file holding the id's base32 TOTP key (as `tryst provision --totp`
    /// printed it).
    #[arg(long, value_name = "FILE")]
    pub totp_secret_file: Option<PathBuf>,
    /// node family: the TOTP step in seconds [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub totp_step: Option<u64>,
    /// node family: the TOTP code length [default: 6].
    #[arg(long, value_name = "N")]
    pub totp_digits: Option<usize>,
    /// tag family: a file holding the tag (its text is the tag's secret; only its hash
    /// reaches the relay).
    #[arg(long, value_name = "FILE")]
    pub tag_file: Option<PathBuf>,
    /// tag family: the Qredo appId prefixed to the tag before hashing [default: empty].
    #[arg(long, value_name = "ID")]
    pub app_id: Option<String>,
    /// tag family: for an authenticated tag `<prefix>@<key>`, a file holding the identity
    /// key's 32-byte Ed25519 seed in hex, to answer responders' challenges.
    #[arg(long, value_name = "FILE")]
    pub identity_key_file: Option<PathBuf>,
    /// hive family: the device key file (TOML: workspace, device, account, signing_key
    /// as 64 hex digits of the Ed25519 seed, optional ttl; see docs/agents.md). Each park
    /// carries a publication signed with it, re-signed as it ages.
    #[arg(long, value_name = "FILE")]
    pub hive_key_file: Option<PathBuf>,
    /// The local service, HOST:PORT, opened once per client.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "config")]
    pub to: Option<String>,
    /// Connections kept parked, so clients never wait for a park [default: 4; 1 for the
    /// node family, whose ids replace older parks unless provisioned with --parking queue].
    #[arg(long, value_name = "N", value_parser = parse_pool)]
    pub pool: Option<usize>,
    /// TLS to the relay's --tls-listen port (needs --pin).
    #[arg(long, requires = "pin")]
    pub tls: bool,
    /// The relay certificate's SHA-256 fingerprint, `sha256:<64 hex>` or
    /// `sha256:AA:BB:...` as `tryst serve` prints it.
    #[arg(long, value_name = "sha256:...", requires = "tls")]
    pub pin: Option<Pin>,
    /// Several services from a TOML file (`[[service]]` tables; see docs/agents.md);
    /// excludes every per-service flag: --relay, --id, --family, --secret-file,
    /// --totp-secret-file, --totp-step, --totp-digits, --tag-file, --app-id,
    /// --identity-key-file, --hive-key-file, --to, --pool, --tls and --pin.
    #[arg(long, value_name = "FILE",
          conflicts_with_all = PER_SERVICE_FLAGS)]
    pub config: Option<PathBuf>,
    /// Serve Prometheus counters at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// After SIGTERM or SIGINT: how long open tunnels may finish [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<HumanDuration>,
    /// The longest wait between reconnect attempts (exponential back-off with jitter
    /// from 250ms) [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub backoff_max: Option<HumanDuration>,
}

/// The flags that describe one service, which a `--config` file's `[[service]]` tables
/// describe instead (given with `--config`, each is refused rather than ignored).
const PER_SERVICE_FLAGS: [&str; 15] = [
    "relay",
    "id",
    "family",
    "secret_file",
    "totp_secret_file",
    "totp_step",
    "totp_digits",
    "tag_file",
    "app_id",
    "identity_key_file",
    "hive_key_file",
    "to",
    "pool",
    "tls",
    "pin",
];

fn parse_pool(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=config::MAX_POOL).contains(&n) => Ok(n),
        _ => Err(format!("expected 1 to {}", config::MAX_POOL)),
    }
}

/// Why `tryst expose` could not start or stopped, naming who caused it: the operator's
/// flags and files, or the local system. Printed with its causes joined by `: `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExposeError {
    /// A flag or a file's content is wrong; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The agent's config file does not parse.
    #[error("{}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        #[source]
        source: config::AgentConfigError,
    },
    /// `TRYST_SECRET` holds no secret.
    #[error("TRYST_SECRET")]
    SecretEnv(#[source] tryst_client::secret::SecretError),
    /// A service's secret file is unreadable or holds no secret.
    #[error(transparent)]
    SecretFile(#[from] tryst_client::secret::SecretError),
    /// A file, a socket or the runtime: what was being done, and the system's error.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A system call without more to say than its error (signals, a socket address).
    #[error(transparent)]
    System(#[from] io::Error),
    /// One service's configuration is unusable.
    #[error("service {name}")]
    Service {
        /// The service.
        name: String,
        /// Why.
        #[source]
        source: Box<Self>,
    },
    /// A service task panicked or was cancelled.
    #[error("a service task failed: {0}")]
    Task(tokio::task::JoinError),
}

impl ExposeError {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// The message and every cause, joined by `: ` (as printed).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cause = e.source();
        }
        out
    }
}

fn invalid(message: impl Into<String>) -> ExposeError {
    ExposeError::Invalid(message.into())
}

/// Everything `run` needs, validated.
struct Plan {
    services: Vec<(ServiceSpec, Option<tryst_engine::auth::Secret>)>,
    metrics_listen: Option<SocketAddr>,
    drain: Duration,
    backoff_max: Duration,
}

fn plan(args: &ExposeArgs) -> Result<Plan, ExposeError> {
    let file: Option<AgentConfig> = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(ExposeError::io(format!("reading {}", path.display())))?;
            let mut parsed = config::parse(&text).map_err(|source| ExposeError::ConfigFile {
                path: path.clone(),
                source,
            })?;
            let base = path.parent().unwrap_or_else(|| Path::new("."));
            for s in &mut parsed.services {
                s.auth.rebase(base);
            }
            Some(parsed)
        }
        None => None,
    };
    let services = match &file {
        Some(c) => c.services.iter().map(|s| (s.clone(), None)).collect(),
        None => {
            let relay = args.relay.clone().unwrap_or_default();
            let to = args.to.clone().unwrap_or_default();
            let family = args.family.as_deref().unwrap_or("native");
            let id = match (&args.id, family) {
                (Some(_), "tag") => {
                    return Err(invalid("--id: the tag family has no id (--tag-file)"));
                }
                (Some(_), "hive") => {
                    return Err(invalid(
                        "--id: the hive family has no id (the --hive-key-file names the device)",
                    ));
                }
                (None, "tag" | "hive") => None,
                (None, _) => {
                    return Err(invalid(format!("--id is required for the {family} family")));
                }
                (Some(text), _) => Some(
                    tryst_engine::target::RendezvousId::parse(text)
                        .map_err(|_| invalid(format!("--id: `{text}` is not a hyphenated UUID")))?,
                ),
            };
            config::check_host_port(&relay).map_err(|e| invalid(format!("--relay: {e}")))?;
            config::check_host_port(&to).map_err(|e| invalid(format!("--to: {e}")))?;
            let mut auth = AuthSpec::from_keys(config::AuthKeys {
                family: Some(family),
                secret_file: args.secret_file.as_deref(),
                totp_secret_file: args.totp_secret_file.as_deref(),
                step: args.totp_step,
                digits: args.totp_digits,
                tag_file: args.tag_file.as_deref(),
                app_id: args.app_id.as_deref(),
                identity_key_file: args.identity_key_file.as_deref(),
                hive_key_file: args.hive_key_file.as_deref(),
            });
            // The native secret may come from the environment instead of a file.
            let mut secret = None;
            if family == "native" && args.secret_file.is_none() {
                let text = std::env::var("TRYST_SECRET").map_err(|_| {
                    invalid("no secret: give --secret-file FILE or set TRYST_SECRET")
                })?;
                secret = Some(tryst_client::secret::decode(&text).map_err(ExposeError::SecretEnv)?);
                auth = Ok(AuthSpec::Native {
                    secret_file: PathBuf::new(),
                });
            }
            let auth = auth.map_err(|e| invalid(e.replace('_', "-")))?;
            let spec = ServiceSpec {
                name: id.map_or_else(|| family.to_owned(), |id| id.to_string()),
                id,
                pool: args.pool.unwrap_or_else(|| auth.default_pool()),
                auth,
                to,
                relay,
                pin: args.pin,
            };
            vec![(spec, secret)]
        }
    };
    let pick = |flag: Option<HumanDuration>, file: Option<HumanDuration>, default: u64| {
        flag.or(file)
            .map_or_else(|| Duration::from_secs(default), |d| d.0)
    };
    Ok(Plan {
        services,
        metrics_listen: args
            .metrics_listen
            .or_else(|| file.as_ref().and_then(|c| c.metrics_listen)),
        drain: pick(
            args.drain_timeout,
            file.as_ref().and_then(|c| c.drain_timeout),
            30,
        ),
        backoff_max: pick(
            args.backoff_max,
            file.as_ref().and_then(|c| c.backoff_max),
            30,
        ),
    })
}

/// Warns (does not refuse), as the relay does for its secrets file, when group or
/// others may read or write a service's key file: every one of them is a secret.
fn warn_if_open(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        crate::secrets::warn_if_accessible(path, &meta);
    }
}

/// How a service parks, with its secret read from its file (or the one given).
fn park_auth(
    spec: &ServiceSpec,
    secret: Option<tryst_engine::auth::Secret>,
) -> Result<ParkAuth, ExposeError> {
    Ok(match &spec.auth {
        AuthSpec::Native { secret_file } => {
            let secret = match secret {
                Some(s) => s,
                None => {
                    warn_if_open(secret_file);
                    tryst_client::secret::read_file(secret_file)?
                }
            };
            ParkAuth::Native {
                id: spec.id.ok_or_else(|| invalid("no id"))?,
                secret,
            }
        }
        AuthSpec::Tag {
            tag_file,
            app_id,
            identity_key_file,
        } => {
            warn_if_open(tag_file);
            let text = std::fs::read_to_string(tag_file)
                .map_err(ExposeError::io(format!("tag file {}", tag_file.display())))?;
            let tag = text.trim_end_matches(['\r', '\n']);
            if tag.is_empty() {
                return Err(invalid(format!("tag file {} is empty", tag_file.display())));
            }
            let identity = match identity_key_file {
                None => None,
                Some(path) => {
                    warn_if_open(path);
                    let hex_seed = std::fs::read_to_string(path).map_err(ExposeError::io(
                        format!("identity key file {}", path.display()),
                    ))?;
                    let mut seed = [0u8; 32];
                    hex::decode_to_slice(hex_seed.trim(), &mut seed).map_err(|_| {
                        invalid(format!(
                            "identity key file {}: not 64 hex digits (a 32-byte Ed25519 seed)",
                            path.display()
                        ))
                    })?;
                    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
                    if crate::tag::wire::tag_identity_key(tag) != Some(key.verifying_key()) {
                        return Err(invalid(format!(
                            "identity key file {}: not the key named in the tag (<prefix>@<key>)",
                            path.display()
                        )));
                    }
                    Some(Box::new(key))
                }
            };
            ParkAuth::Tag {
                tag: tryst_client::tag::hashed_tag(app_id, tag),
                identity,
            }
        }
        AuthSpec::Hive { hive_key_file } => {
            warn_if_open(hive_key_file);
            let text = std::fs::read_to_string(hive_key_file).map_err(ExposeError::io(format!(
                "hive key file {}",
                hive_key_file.display()
            )))?;
            let key = super::hive_key::parse(&text)
                .map_err(|e| invalid(format!("hive key file {}: {e}", hive_key_file.display())))?;
            let publisher = tryst_client::hive::Publisher::new(key.device, key.ttl);
            tracing::info!(
                device = %publisher.device().target.target(),
                ttl = key.ttl,
                "hive device: parks carry a publication re-signed every {}s",
                publisher.reuse_secs()
            );
            ParkAuth::Head(Arc::new(move || publisher.park_head_now().into_bytes()))
        }
        AuthSpec::Node {
            totp_secret_file,
            step,
            digits,
        } => {
            warn_if_open(totp_secret_file);
            let text = std::fs::read_to_string(totp_secret_file).map_err(ExposeError::io(
                format!("TOTP key file {}", totp_secret_file.display()),
            ))?;
            let record = tryst_engine::totp::TotpRecord::from_base32(
                text.trim(),
                *step,
                tryst_engine::totp::TotpAlgorithm::Sha1,
                None,
            )
            .map_err(|e| invalid(format!("TOTP key file {}: {e}", totp_secret_file.display())))?;
            let (id, digits) = (spec.id.ok_or_else(|| invalid("no id"))?, *digits);
            ParkAuth::Head(Arc::new(move || {
                let code = tryst_client::heads::node_code_now(&record, digits);
                tryst_client::heads::node_park_head(id, &code).into_bytes()
            }))
        }
    })
}

/// Runs `tryst expose`; returns the process exit code.
pub fn main(args: &ExposeArgs) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tryst expose: {}", e.chain());
            exit::FAILURE
        }
    }
}

fn run(args: &ExposeArgs) -> Result<i32, ExposeError> {
    let plan = plan(args)?;
    let mut exposers = Vec::new();
    for (spec, secret) in plan.services {
        let auth = park_auth(&spec, secret).map_err(|e| ExposeError::Service {
            name: spec.name.clone(),
            source: Box::new(e),
        })?;
        let relay = match spec.pin {
            Some(pin) => RelayAddr::tls(spec.relay.clone(), pin),
            None => RelayAddr::plain(spec.relay.clone()),
        };
        exposers.push(Exposer::new(Service {
            name: spec.name.clone(),
            relay,
            auth,
            local: spec.to.clone(),
            pool: spec.pool,
            timeouts: Timeouts::default(),
            backoff: (Duration::from_millis(250), plan.backoff_max),
            drain: plan.drain,
        }));
    }
    let rt = super::runtime().map_err(ExposeError::io("starting the runtime"))?;
    rt.block_on(async move {
        let stats: Vec<_> = exposers
            .iter()
            .map(|e| (e.name().to_owned(), e.stats()))
            .collect();
        if let Some(addr) = plan.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(ExposeError::io(format!("--metrics-listen {addr}")))?;
            let local = listener.local_addr()?;
            println!("tryst: metrics on http://{local}/metrics");
            tokio::spawn(super::metrics::serve(listener, Arc::new(stats)));
        }
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signal received: no more parking, draining open tunnels");
            let _ = shutdown_tx.send(true);
        });
        let mut set = tokio::task::JoinSet::new();
        for e in exposers {
            set.spawn(e.run(shutdown_rx.clone()));
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let code = e.error.refusal().map_or_else(
                        || "none".to_owned(),
                        tryst_client::conn::Refusal::code_or_none,
                    );
                    eprintln!("tryst expose: {e}; not retrying (relay error code: {code})");
                    return Ok(exit::REFUSED);
                }
                Err(join) => return Err(ExposeError::Task(join)),
            }
        }
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tryst expose` parsed from `args`.
    fn expose(args: &[&str]) -> Result<ExposeArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            expose: ExposeArgs,
        }
        <Cli as clap::Parser>::try_parse_from(std::iter::once("expose").chain(args.iter().copied()))
            .map(|c| c.expose)
    }

    #[test]
    fn every_per_service_flag_is_refused_beside_a_config_file() {
        let with_value = |flag: &str| match flag {
            "--tls" => vec![],
            "--pin" => vec![format!("sha256:{}", "ab".repeat(32))],
            "--family" => vec!["hive".to_owned()],
            "--pool" | "--totp-step" | "--totp-digits" => vec!["2".to_owned()],
            _ => vec!["x".to_owned()],
        };
        for name in PER_SERVICE_FLAGS {
            let flag = format!("--{}", name.replace('_', "-"));
            let mut args = vec!["--config".to_owned(), "agent.toml".to_owned(), flag.clone()];
            args.extend(with_value(&flag));
            // --tls and --pin need each other; give the partner too (it conflicts as well).
            if flag == "--tls" {
                args.extend(["--pin".to_owned(), format!("sha256:{}", "ab".repeat(32))]);
            } else if flag == "--pin" {
                args.push("--tls".to_owned());
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let err = expose(&refs).expect_err(&flag);
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{flag}: {err}"
            );
        }
        let alone = expose(&["--config", "agent.toml", "--drain-timeout", "5s"]).unwrap();
        assert_eq!(alone.family, None);
    }

    #[test]
    fn an_error_prints_with_every_cause_joined() {
        let e = ExposeError::Service {
            name: "db".into(),
            source: Box::new(ExposeError::Io {
                what: "tag file /t".into(),
                source: io::Error::new(io::ErrorKind::NotFound, "gone"),
            }),
        };
        assert_eq!(e.chain(), "service db: tag file /t: gone");
        assert_eq!(invalid("--to: no port").chain(), "--to: no port");
    }
}
