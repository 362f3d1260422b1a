//! `tryst expose --config agent.toml`: several services in one process.
//!
//! ```toml
//! relay = "relay.example:7400"        # default relay of every service
//! tls = true                          # TLS to the relay (needs pin)
//! pin = "sha256:..."                  # the relay certificate's SHA-256 fingerprint
//! metrics_listen = "127.0.0.1:9400"   # optional Prometheus endpoint
//! drain_timeout = "30s"               # SIGTERM: how long open tunnels may finish
//! backoff_max = "30s"                 # longest wait between reconnect attempts
//!
//! [[service]]
//! name = "ssh"                        # logs and metrics label [default: the id]
//! id = "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f"
//! secret_file = "/etc/tryst/ssh.secret"
//! to = "127.0.0.1:22"
//! pool = 4                            # [default: 4]
//! family = "native"                   # the only family `expose` parks with today
//! relay = "other.example:7400"        # optional per-service relay (and tls, pin)
//! ```
//!
//! Unknown keys are errors; relative `secret_file` paths are relative to the config
//! file's directory. [`parse`] is pure (the fuzz target `agent_config` runs it).

use crate::duration::HumanDuration;
use std::net::SocketAddr;
use std::path::PathBuf;
use tryst_client::tls::Pin;
use tryst_engine::target::RendezvousId;

/// Largest `pool` accepted (the relay keeps 16 parked per id by default).
pub const MAX_POOL: usize = 64;
/// Most services in one file.
pub const MAX_SERVICES: usize = 256;

/// The file as written.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// Default relay `HOST:PORT`.
    pub relay: Option<String>,
    /// Default: TLS to the relay.
    pub tls: Option<bool>,
    /// Default pin.
    pub pin: Option<String>,
    /// Prometheus endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Drain deadline on SIGTERM.
    pub drain_timeout: Option<HumanDuration>,
    /// Back-off cap.
    pub backoff_max: Option<HumanDuration>,
    /// The services.
    #[serde(default)]
    pub service: Vec<ServiceFile>,
}

/// One `[[service]]` table as written.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// Name for logs and metrics.
    pub name: Option<String>,
    /// Rendezvous id.
    pub id: String,
    /// File holding the secret as `tryst provision` printed it.
    pub secret_file: PathBuf,
    /// Local target `HOST:PORT`.
    pub to: String,
    /// Pool size.
    pub pool: Option<usize>,
    /// Rendezvous family.
    pub family: Option<String>,
    /// Relay override.
    pub relay: Option<String>,
    /// TLS override.
    pub tls: Option<bool>,
    /// Pin override.
    pub pin: Option<String>,
}

/// A validated service (the secret is read later, from `secret_file`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Name for logs and metrics.
    pub name: String,
    /// Rendezvous id.
    pub id: RendezvousId,
    /// Secret file.
    pub secret_file: PathBuf,
    /// Local target.
    pub to: String,
    /// Pool size (1..=[`MAX_POOL`]).
    pub pool: usize,
    /// Relay `HOST:PORT`.
    pub relay: String,
    /// TLS pin, when TLS.
    pub pin: Option<Pin>,
}

/// A validated file.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The services (at least one).
    pub services: Vec<ServiceSpec>,
    /// Prometheus endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Drain deadline.
    pub drain_timeout: Option<HumanDuration>,
    /// Back-off cap.
    pub backoff_max: Option<HumanDuration>,
}

/// Why an agent config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentConfigError {
    /// Not TOML of the expected shape (includes unknown keys).
    #[error("{0}")]
    Syntax(String),
    /// No `[[service]]` table, or too many.
    #[error("a config needs 1 to {MAX_SERVICES} [[service]] tables, found {0}")]
    ServiceCount(usize),
    /// A problem in one service.
    #[error("service {index} ({name}): {problem}")]
    Service {
        /// 1-based position in the file.
        index: usize,
        /// Its name or id as written.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

/// Checks a local target or relay address: `HOST:PORT` with a non-empty host and a
/// non-zero port.
pub fn check_host_port(text: &str) -> Result<(), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}` is not HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("`{text}`: bad port"))?;
    if host.is_empty() || port == 0 || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!("`{text}` is not HOST:PORT"));
    }
    Ok(())
}

/// Resolves the relay and TLS pin of a service from its own keys and the defaults.
pub fn relay_and_pin(
    relay: Option<&str>,
    tls: Option<bool>,
    pin: Option<&str>,
) -> Result<(String, Option<Pin>), String> {
    let relay = relay.ok_or("no relay (set `relay` at the top or in the service)")?;
    check_host_port(relay).map_err(|e| format!("relay: {e}"))?;
    let pin = pin
        .map(|p| Pin::parse(p).map_err(|e| format!("pin: {e}")))
        .transpose()?;
    match (tls.unwrap_or(false), pin) {
        (true, Some(pin)) => Ok((relay.to_owned(), Some(pin))),
        (true, None) => Err("tls needs a pin (sha256:...)".into()),
        (false, Some(_)) => Err("a pin without tls = true".into()),
        (false, None) => Ok((relay.to_owned(), None)),
    }
}

/// Parses and validates an agent config. Pure and bounded (no file access).
pub fn parse(text: &str) -> Result<AgentConfig, AgentConfigError> {
    let file: AgentFile =
        toml::from_str(text).map_err(|e| AgentConfigError::Syntax(e.to_string()))?;
    if file.service.is_empty() || file.service.len() > MAX_SERVICES {
        return Err(AgentConfigError::ServiceCount(file.service.len()));
    }
    let mut services = Vec::with_capacity(file.service.len());
    for (i, s) in file.service.iter().enumerate() {
        let label = s.name.clone().unwrap_or_else(|| s.id.clone());
        let fail = |problem: String| AgentConfigError::Service {
            index: i + 1,
            name: label.chars().take(64).collect(),
            problem,
        };
        let id =
            RendezvousId::parse(&s.id).map_err(|_| fail("id is not a hyphenated UUID".into()))?;
        check_host_port(&s.to).map_err(|e| fail(format!("to: {e}")))?;
        let pool = s.pool.unwrap_or(crate::agent::DEFAULT_POOL);
        if !(1..=MAX_POOL).contains(&pool) {
            return Err(fail(format!("pool must be 1 to {MAX_POOL}")));
        }
        match s.family.as_deref() {
            None | Some("native") => {}
            Some(other) => {
                return Err(fail(format!(
                    "family `{other}`: expose parks with the native family only"
                )));
            }
        }
        if s.secret_file.as_os_str().is_empty() {
            return Err(fail("secret_file is empty".into()));
        }
        let (relay, pin) = relay_and_pin(
            s.relay.as_deref().or(file.relay.as_deref()),
            s.tls.or(file.tls),
            s.pin.as_deref().or(file.pin.as_deref()),
        )
        .map_err(fail)?;
        services.push(ServiceSpec {
            name: s.name.clone().unwrap_or_else(|| id.to_string()),
            id,
            secret_file: s.secret_file.clone(),
            to: s.to.clone(),
            pool,
            relay,
            pin,
        });
    }
    Ok(AgentConfig {
        services,
        metrics_listen: file.metrics_listen,
        drain_timeout: file.drain_timeout,
        backoff_max: file.backoff_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f";

    #[test]
    fn a_full_file_parses_with_defaults_and_overrides() {
        let pin = format!("sha256:{}", "ab".repeat(32));
        let text = format!(
            r#"
relay = "relay.example:7400"
metrics_listen = "127.0.0.1:9400"
drain_timeout = "5s"
[[service]]
name = "ssh"
id = "{ID}"
secret_file = "ssh.secret"
to = "127.0.0.1:22"
[[service]]
id = "{up}"
secret_file = "/etc/web.secret"
to = "localhost:8000"
pool = 8
family = "native"
relay = "other.example:443"
tls = true
pin = "{pin}"
"#,
            up = ID.to_uppercase()
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.services.len(), 2);
        let (ssh, web) = (&c.services[0], &c.services[1]);
        assert_eq!(
            (ssh.name.as_str(), ssh.pool, ssh.relay.as_str()),
            ("ssh", 4, "relay.example:7400")
        );
        assert_eq!(ssh.pin, None);
        assert_eq!(web.name, ID);
        assert_eq!((web.pool, web.relay.as_str()), (8, "other.example:443"));
        assert_eq!(web.pin, Some(Pin::parse(&pin).unwrap()));
        assert_eq!(
            c.drain_timeout.unwrap().0,
            std::time::Duration::from_secs(5)
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let svc = |extra: &str| {
            format!(
                "relay = \"r:1\"\n[[service]]\nid = \"{ID}\"\nsecret_file = \"s\"\nto = \"127.0.0.1:1\"\n{extra}"
            )
        };
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "1 to 256"),
            (svc("colour = \"blue\""), "unknown field"),
            ("relay = \"r:1\"\nsecret = \"x\"\n".into(), "unknown field"),
            (svc("pool = 0"), "pool must be"),
            (svc("pool = 65"), "pool must be"),
            (svc("family = \"tag\""), "native family only"),
            (svc("tls = true"), "tls needs a pin"),
            (svc("pin = \"sha256:00\""), "pin:"),
            (svc("").replace("relay = \"r:1\"\n", ""), "no relay"),
            (svc("").replace(ID, "not-a-uuid"), "not a hyphenated UUID"),
            (svc("").replace("127.0.0.1:1", "127.0.0.1"), "HOST:PORT"),
            (svc("").replace("127.0.0.1:1", "h:0"), "HOST:PORT"),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
