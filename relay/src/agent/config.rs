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
//! pool = 4                            # [default: 4; 1 for node]
//! family = "native"                   # or "node" (node-rendezvous TOTP, below)
//! relay = "other.example:7400"        # optional per-service relay (and tls, pin)
//!
//! [[service]]                         # a Qredo-style tag publisher (no id)
//! family = "tag"
//! tag_file = "tag.txt"                # the tag text (the secret of a tag)
//! app_id = ""                         # [default: empty]
//! identity_key_file = "id.hex"        # authenticated tags `<prefix>@<key>`: the seed
//! to = "127.0.0.1:9000"
//!
//! [[service]]                         # a Hive device (streaming fallback, no id)
//! family = "hive"
//! hive_key_file = "device.key"        # ids and Ed25519 key (agent::hive_key)
//! to = "127.0.0.1:9100"
//!
//! [[service]]                         # a node-rendezvous (steward-style) hidden server
//! id = "2f402f80-da50-11e1-9b23-00000000abcd"
//! family = "node"
//! totp_secret_file = "dev.base32"     # the base32 key of `tryst provision --totp`
//! totp_step = 30                      # [default: 30]
//! totp_digits = 6                     # [default: 6]
//! to = "127.0.0.1:8080"
//! ```
//!
//! Unknown keys are errors; relative `secret_file` (and other key file) paths are relative to the config
//! file's directory. [`parse`] is pure (the fuzz target `agent_config` runs it).

use crate::duration::HumanDuration;
use std::net::SocketAddr;
use std::path::PathBuf;
use tryst_client::tls::Pin;
use tryst_engine::target::RendezvousId;

/// Default TOTP step of the node family, seconds.
pub const DEFAULT_TOTP_STEP: u64 = 30;
/// Default TOTP code length of the node family.
pub const DEFAULT_TOTP_DIGITS: usize = 6;
/// TOTP code lengths accepted (the relay's `totp::MIN_DIGITS..=MAX_DIGITS`).
pub const TOTP_DIGITS: std::ops::RangeInclusive<usize> = 6..=10;

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
    /// Rendezvous id (native and node families).
    pub id: Option<String>,
    /// File holding the secret as `tryst provision` printed it (native family).
    pub secret_file: Option<PathBuf>,
    /// File holding the base32 TOTP key (node family).
    pub totp_secret_file: Option<PathBuf>,
    /// TOTP step, seconds (node family).
    pub totp_step: Option<u64>,
    /// TOTP code length (node family).
    pub totp_digits: Option<usize>,
    /// File holding the tag text (tag family).
    pub tag_file: Option<PathBuf>,
    /// Qredo appId prefixed to the tag (tag family).
    pub app_id: Option<String>,
    /// File holding the identity key's 32-byte Ed25519 seed in hex, for an
    /// authenticated tag `<prefix>@<key>` (tag family).
    pub identity_key_file: Option<PathBuf>,
    /// File holding the device's ids and Ed25519 key (hive family; `agent::hive_key`).
    pub hive_key_file: Option<PathBuf>,
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

/// How a service proves it may park (secrets are read later, from the files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSpec {
    /// Native HMAC proof with the secret in this file.
    Native {
        /// The secret file.
        secret_file: PathBuf,
    },
    /// node-rendezvous: a TOTP code from the base32 key in this file.
    Node {
        /// The base32 key file.
        totp_secret_file: PathBuf,
        /// Step, seconds (>= 1).
        step: u64,
        /// Code length ([`TOTP_DIGITS`]).
        digits: usize,
    },
    /// The Qredo-style `tag:` family, as a long-term publisher.
    Tag {
        /// The file holding the tag text.
        tag_file: PathBuf,
        /// The appId prefixed to the tag before hashing.
        app_id: String,
        /// The identity key seed file of an authenticated tag.
        identity_key_file: Option<PathBuf>,
    },
    /// The `hive:` streaming fallback: a device parking with its signed publication.
    Hive {
        /// The device key file ([`crate::agent::hive_key`]).
        hive_key_file: PathBuf,
    },
}

/// The keys of one service that say how it parks (from flags or a `[[service]]` table).
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthKeys<'a> {
    /// `family`.
    pub family: Option<&'a str>,
    /// `secret_file` (native).
    pub secret_file: Option<&'a std::path::Path>,
    /// `totp_secret_file` (node).
    pub totp_secret_file: Option<&'a std::path::Path>,
    /// `totp_step` (node).
    pub step: Option<u64>,
    /// `totp_digits` (node).
    pub digits: Option<usize>,
    /// `tag_file` (tag).
    pub tag_file: Option<&'a std::path::Path>,
    /// `app_id` (tag).
    pub app_id: Option<&'a str>,
    /// `identity_key_file` (tag).
    pub identity_key_file: Option<&'a std::path::Path>,
    /// `hive_key_file` (hive).
    pub hive_key_file: Option<&'a std::path::Path>,
}

impl AuthSpec {
    /// The file holding the secret.
    pub fn file_mut(&mut self) -> &mut PathBuf {
        match self {
            Self::Native { secret_file } => secret_file,
            Self::Node {
                totp_secret_file, ..
            } => totp_secret_file,
            Self::Tag { tag_file, .. } => tag_file,
            Self::Hive { hive_key_file } => hive_key_file,
        }
    }

    /// Every file the spec names (the secret's, and a tag's identity key file) made
    /// relative to `base` (a config file's directory) when relative; absolute paths
    /// stay as they are.
    pub fn rebase(&mut self, base: &std::path::Path) {
        let file = self.file_mut();
        *file = base.join(&*file);
        if let Self::Tag {
            identity_key_file: Some(identity),
            ..
        } = self
        {
            *identity = base.join(&*identity);
        }
    }

    /// Builds the spec from the keys of a service (flags or file).
    pub fn from_keys(keys: AuthKeys<'_>) -> Result<Self, String> {
        let AuthKeys {
            family,
            secret_file,
            totp_secret_file,
            step,
            digits,
            tag_file,
            app_id,
            identity_key_file,
            hive_key_file,
        } = keys;
        if hive_key_file.is_some() && family != Some("hive") {
            return Err("hive_key_file needs family = hive".into());
        }
        let tag_keys = tag_file.is_some() || app_id.is_some() || identity_key_file.is_some();
        if tag_keys && family != Some("tag") {
            return Err("tag_file, app_id and identity_key_file need family = tag".into());
        }
        let nonempty = |p: Option<&std::path::Path>, what: &str| match p {
            Some(p) if !p.as_os_str().is_empty() => Ok(p.to_owned()),
            Some(_) => Err(format!("{what} is empty")),
            None => Err(format!(
                "the {} family needs {what}",
                family.unwrap_or("native")
            )),
        };
        match family {
            None | Some("native") => {
                if totp_secret_file.is_some() || step.is_some() || digits.is_some() {
                    return Err("totp settings need family = node".into());
                }
                Ok(Self::Native {
                    secret_file: nonempty(secret_file, "secret_file")?,
                })
            }
            Some("node") => {
                if secret_file.is_some() {
                    return Err("the node family takes totp_secret_file, not secret_file".into());
                }
                let step = step.unwrap_or(DEFAULT_TOTP_STEP);
                let digits = digits.unwrap_or(DEFAULT_TOTP_DIGITS);
                if step == 0 {
                    return Err("totp_step must be at least 1".into());
                }
                if !TOTP_DIGITS.contains(&digits) {
                    return Err(format!(
                        "totp_digits must be {} to {}",
                        TOTP_DIGITS.start(),
                        TOTP_DIGITS.end()
                    ));
                }
                Ok(Self::Node {
                    totp_secret_file: nonempty(totp_secret_file, "totp_secret_file")?,
                    step,
                    digits,
                })
            }
            Some("tag") => {
                if secret_file.is_some()
                    || totp_secret_file.is_some()
                    || step.is_some()
                    || digits.is_some()
                {
                    return Err(
                        "the tag family takes tag_file (and app_id, identity_key_file)".into(),
                    );
                }
                if identity_key_file.is_some_and(|p| p.as_os_str().is_empty()) {
                    return Err("identity_key_file is empty".into());
                }
                Ok(Self::Tag {
                    tag_file: nonempty(tag_file, "tag_file")?,
                    app_id: app_id.unwrap_or_default().to_owned(),
                    identity_key_file: identity_key_file.map(std::path::Path::to_owned),
                })
            }
            Some("hive") => {
                if secret_file.is_some()
                    || totp_secret_file.is_some()
                    || step.is_some()
                    || digits.is_some()
                {
                    return Err("the hive family takes hive_key_file".into());
                }
                Ok(Self::Hive {
                    hive_key_file: nonempty(hive_key_file, "hive_key_file")?,
                })
            }
            Some(other) => Err(format!(
                "family `{other}`: expose parks with the native, node, tag and hive families"
            )),
        }
    }

    /// The default pool: 4, but 1 for node (its ids replace older parks by default).
    pub fn default_pool(&self) -> usize {
        match self {
            Self::Native { .. } | Self::Tag { .. } | Self::Hive { .. } => {
                crate::agent::DEFAULT_POOL
            }
            Self::Node { .. } => 1,
        }
    }
}

/// A validated service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Name for logs and metrics.
    pub name: String,
    /// Rendezvous id (native and node; `None` for tag and hive).
    pub id: Option<RendezvousId>,
    /// How it parks.
    pub auth: AuthSpec,
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
        let label = s
            .name
            .clone()
            .or_else(|| s.id.clone())
            .unwrap_or_else(|| format!("#{}", i + 1));
        let fail = |problem: String| AgentConfigError::Service {
            index: i + 1,
            name: label.chars().take(64).collect(),
            problem,
        };
        let id = s
            .id
            .as_deref()
            .map(|t| RendezvousId::parse(t).map_err(|_| fail("id is not a hyphenated UUID".into())))
            .transpose()?;
        check_host_port(&s.to).map_err(|e| fail(format!("to: {e}")))?;
        let auth = AuthSpec::from_keys(AuthKeys {
            family: s.family.as_deref(),
            secret_file: s.secret_file.as_deref(),
            totp_secret_file: s.totp_secret_file.as_deref(),
            step: s.totp_step,
            digits: s.totp_digits,
            tag_file: s.tag_file.as_deref(),
            app_id: s.app_id.as_deref(),
            identity_key_file: s.identity_key_file.as_deref(),
            hive_key_file: s.hive_key_file.as_deref(),
        })
        .map_err(fail)?;
        match (&auth, id) {
            (AuthSpec::Tag { .. }, Some(_)) => {
                return Err(fail("the tag family takes no id".into()));
            }
            (AuthSpec::Hive { .. }, Some(_)) => {
                return Err(fail(
                    "the hive family takes no id (the key file names the device)".into(),
                ));
            }
            (AuthSpec::Tag { .. } | AuthSpec::Hive { .. }, None) | (_, Some(_)) => {}
            (_, None) => return Err(fail("id is missing".into())),
        }
        let pool = s.pool.unwrap_or_else(|| auth.default_pool());
        if !(1..=MAX_POOL).contains(&pool) {
            return Err(fail(format!("pool must be 1 to {MAX_POOL}")));
        }
        let (relay, pin) = relay_and_pin(
            s.relay.as_deref().or(file.relay.as_deref()),
            s.tls.or(file.tls),
            s.pin.as_deref().or(file.pin.as_deref()),
        )
        .map_err(fail)?;
        services.push(ServiceSpec {
            name: s.name.clone().unwrap_or_else(|| match id {
                Some(id) => id.to_string(),
                None if matches!(auth, AuthSpec::Hive { .. }) => format!("hive-{}", i + 1),
                None => format!("tag-{}", i + 1),
            }),
            id,
            auth,
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
            ssh.auth,
            AuthSpec::Native {
                secret_file: "ssh.secret".into()
            }
        );
        assert_eq!(
            c.drain_timeout.unwrap().0,
            std::time::Duration::from_secs(5)
        );
    }

    #[test]
    fn every_relative_file_of_a_service_is_rebased_on_the_config_directory() {
        let base = std::path::Path::new("/etc/tryst");
        let mut tag = AuthSpec::Tag {
            tag_file: "printer.tag".into(),
            app_id: String::new(),
            identity_key_file: Some("printer.seed".into()),
        };
        tag.rebase(base);
        assert_eq!(
            tag,
            AuthSpec::Tag {
                tag_file: "/etc/tryst/printer.tag".into(),
                app_id: String::new(),
                identity_key_file: Some("/etc/tryst/printer.seed".into()),
            }
        );
        let mut absolute = AuthSpec::Native {
            secret_file: "/srv/ssh.secret".into(),
        };
        absolute.rebase(base);
        assert_eq!(
            absolute,
            AuthSpec::Native {
                secret_file: "/srv/ssh.secret".into()
            }
        );
        let mut node = AuthSpec::Node {
            totp_secret_file: "dev.base32".into(),
            step: 30,
            digits: 6,
        };
        node.rebase(base);
        assert_eq!(
            node.file_mut(),
            std::path::Path::new("/etc/tryst/dev.base32")
        );
    }

    #[test]
    fn a_node_service_defaults_to_one_parked_connection_and_30s_6_digits() {
        let text = format!(
            "relay = \"r:1\"\n[[service]]\nid = \"{ID}\"\nfamily = \"node\"\ntotp_secret_file = \"k\"\nto = \"h:1\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.services[0].pool, 1);
        assert_eq!(
            c.services[0].auth,
            AuthSpec::Node {
                totp_secret_file: "k".into(),
                step: 30,
                digits: 6
            }
        );
    }

    #[test]
    fn a_hive_service_takes_its_key_file_and_no_id() {
        let c = parse("relay = \"r:1\"\n[[service]]\nfamily = \"hive\"\nhive_key_file = \"dev.key\"\nto = \"h:1\"\n").unwrap();
        let s = &c.services[0];
        assert_eq!((s.id, s.pool, s.name.as_str()), (None, 4, "hive-1"));
        assert_eq!(
            s.auth,
            AuthSpec::Hive {
                hive_key_file: "dev.key".into()
            }
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
            (
                svc("family = \"quic\""),
                "native, node, tag and hive families",
            ),
            (svc("family = \"hive\""), "takes hive_key_file"),
            (svc("hive_key_file = \"k\""), "needs family = hive"),
            (
                svc("").replace("secret_file", "hive_key_file") + "family = \"hive\"\n",
                "takes no id",
            ),
            (svc("family = \"tag\""), "takes tag_file"),
            (svc("app_id = \"x\""), "need family = tag"),
            (
                svc("").replace(&format!("id = \"{ID}\"\n"), ""),
                "id is missing",
            ),
            (svc("totp_step = 30"), "need family = node"),
            (svc("family = \"node\""), "not secret_file"),
            (
                svc("").replace("secret_file", "totp_secret_file")
                    + "family = \"node\"\ntotp_digits = 5\n",
                "totp_digits must be",
            ),
            (
                svc("").replace("secret_file", "totp_secret_file")
                    + "family = \"node\"\ntotp_step = 0\n",
                "totp_step must be",
            ),
            (
                svc("").replace("secret_file = \"s\"\n", ""),
                "needs secret_file",
            ),
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
