//! The native tryst protocol as the load generator speaks it: park and connect heads, the
//! exact `200` answer, and the agreed secrets file.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use tryst_engine::auth::Secret;
use tryst_engine::target::RendezvousId;
use tryst_engine::totp::{TotpAlgorithm, TotpParking, TotpRecord};
use uuid::Uuid;

/// How hidden servers prove they may park.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Auth {
    /// tryst's `Proxy-Authorization: Tryst ...` proof over a `[secrets]` entry.
    Native,
    /// node-rendezvous's `?response=<6-digit TOTP>` over a `[totp]` record.
    Totp,
}

/// One hidden server's credential, as sent to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Credential {
    /// A native shared secret (bytes).
    Native(Vec<u8>),
    /// A TOTP record: secret bytes, step in seconds, and whether the relay queues parks
    /// under this id (`parking = "queue"`) rather than replacing them.
    Totp {
        /// Secret bytes (base32-decoded).
        secret: Vec<u8>,
        /// Step, seconds.
        step: u64,
        /// `parking = "queue"` in the record.
        queue: bool,
    },
}

/// A credential ready to sign park heads.
#[derive(Debug, Clone)]
pub(crate) enum ParkAuth {
    /// Native proof.
    Native(Secret),
    /// TOTP code.
    Totp(TotpRecord),
}

impl ParkAuth {
    /// Builds the signer for `cred`.
    pub(crate) fn new(cred: &Credential) -> Result<Self> {
        Ok(match cred {
            Credential::Native(secret) => Self::Native(Secret::new(secret.clone())),
            Credential::Totp { secret, step, .. } => Self::Totp(
                TotpRecord::new(secret.clone(), *step, TotpAlgorithm::Sha1, None)
                    .map_err(|e| anyhow::anyhow!("TOTP record: {e}"))?,
            ),
        })
    }

    /// The park head for `id` at unix time `now` (a fresh random nonce for native).
    pub(crate) fn head(&self, id: &Uuid, now: u64) -> Vec<u8> {
        match self {
            Self::Native(secret) => {
                let nonce: [u8; 16] = rand::random();
                park_head(id, secret, now, &nonce)
            }
            Self::Totp(record) => {
                totp_park_head(id, &tryst_engine::totp::generate(record, now, TOTP_DIGITS))
            }
        }
    }

    /// The TOTP step, if this is a TOTP credential.
    pub(crate) fn totp_step(&self) -> Option<u64> {
        match self {
            Self::Native(_) => None,
            Self::Totp(r) => Some(r.step()),
        }
    }
}

/// Digits of the TOTP codes hidden servers send (node-rendezvous's steward uses 6).
pub(crate) const TOTP_DIGITS: usize = 6;

/// A node-rendezvous hidden server's park head: `CONNECT uuid:<id>?response=<code>`.
/// Built by tryst-client, as `tryst expose --family node` sends it.
pub(crate) fn totp_park_head(id: &Uuid, code: &str) -> Vec<u8> {
    tryst_client::heads::node_park_head(id.hyphenated(), code).into_bytes()
}

/// How long to wait before sending a TOTP code at `now_ms` (unix milliseconds) so the
/// relay, which accepts only the current step, still sees the same step: `None` when more
/// than `guard_ms` of the step is left, else the time to just past the next step start.
pub(crate) fn totp_boundary_wait(now_ms: u64, step_s: u64, guard_ms: u64) -> Option<u64> {
    let step_ms = step_s.max(1).saturating_mul(1000);
    // Never wait for more than half a step (a guard longer than that would always wait).
    let guard = guard_ms.min(step_ms / 2);
    let left = step_ms - now_ms % step_ms;
    (left < guard).then_some(left + 20)
}

/// The relay's success answer to a park or a connect, byte for byte.
pub(crate) const OK_RESPONSE: &[u8] = b"HTTP/1.1 200\r\n\r\n";

/// How the relay answered a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Exactly [`OK_RESPONSE`].
    Ok,
    /// An HTTP status other than the exact `200` answer.
    Status(u16),
    /// Not an HTTP/1.1 status line.
    Garbage,
}

/// Classifies the first [`OK_RESPONSE`]`.len()` bytes the relay sent.
pub(crate) fn classify(first: &[u8]) -> Answer {
    if first == OK_RESPONSE {
        return Answer::Ok;
    }
    let Some(rest) = first.strip_prefix(b"HTTP/1.1 ") else {
        return Answer::Garbage;
    };
    match rest.get(..3) {
        Some(code)
            if code.iter().all(u8::is_ascii_digit)
                && rest.get(3).is_none_or(|b| *b == b' ' || *b == b'\r') =>
        {
            let n = code
                .iter()
                .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
            Answer::Status(n)
        }
        _ => Answer::Garbage,
    }
}

/// The client's head: `CONNECT uuid:<id> HTTP/1.1\r\n\r\n` (tryst-client's builder, as
/// `tryst connect` sends it).
pub(crate) fn connect_head(id: &Uuid) -> Vec<u8> {
    tryst_client::heads::reach_head(id.hyphenated()).into_bytes()
}

/// A hidden server's park head with a fresh proof for unix time `ts` and `nonce`
/// (tryst-client's builder, as `tryst expose` sends it).
pub(crate) fn park_head(id: &Uuid, secret: &Secret, ts: u64, nonce: &[u8]) -> Vec<u8> {
    let rid = RendezvousId(*id.as_bytes());
    tryst_client::heads::park_head(&rid, secret, ts, nonce).into_bytes()
}

/// The agreed `secrets.toml` text for `entries`.
pub(crate) fn render_secrets(entries: &[(Uuid, Vec<u8>)]) -> String {
    let mut out = String::from(
        "# tryst secrets: rendezvous id -> shared secret (unpadded base64url of the secret bytes)\n[secrets]\n",
    );
    for (id, secret) in entries {
        out.push_str(&format!(
            "\"{}\" = \"{}\"\n",
            id.hyphenated(),
            B64URL.encode(secret)
        ));
    }
    out
}

/// The agreed `secrets.toml` text for TOTP `entries`: an empty `[secrets]` table and a
/// `[totp]` table whose records all say `parking = "queue"`, so that several parked
/// connections per id (`--parked`) queue instead of replacing each other.
pub(crate) fn render_totp_secrets(entries: &[(Uuid, Credential)]) -> String {
    let mut out = String::from(
        "# tryst secrets: rendezvous id -> shared secret (unpadded base64url of the secret bytes)\n[secrets]\n\n[totp]\n",
    );
    for (id, cred) in entries {
        if let Credential::Totp {
            secret,
            step,
            queue,
        } = cred
        {
            out.push_str(&format!(
                "\"{}\" = {{ base32 = \"{}\", step = {step}{} }}\n",
                id.hyphenated(),
                tryst_engine::totp::encode_base32(secret),
                if *queue { ", parking = \"queue\"" } else { "" }
            ));
        }
    }
    out
}

/// `n` fresh random ids with TOTP records: 32-character ASCII alphanumeric keys (as
/// node-rendezvous provisions them), a 30 s step, queued parking.
pub(crate) fn generate_totp_ids(n: usize) -> Vec<(Uuid, Credential)> {
    use rand::Rng as _;
    use rand::distributions::Alphanumeric;
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| {
            let id = uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid();
            let secret: Vec<u8> = (&mut rng).sample_iter(Alphanumeric).take(32).collect();
            (
                id,
                Credential::Totp {
                    secret,
                    step: tryst_engine::totp::DEFAULT_STEP,
                    queue: true,
                },
            )
        })
        .collect()
}

#[derive(Deserialize)]
struct SecretsFile {
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    totp: BTreeMap<String, RawTotp>,
}

#[derive(Deserialize)]
struct RawTotp {
    base32: String,
    step: Option<u64>,
    algorithm: Option<String>,
    parking: Option<String>,
}

/// Parses the `[totp]` table of the agreed secrets file into (id, credential), sorted
/// by id.
pub(crate) fn parse_totp_secrets(text: &str) -> Result<Vec<(Uuid, Credential)>> {
    let file: SecretsFile = toml::from_str(text).context("secrets file is not valid TOML")?;
    let mut out = Vec::with_capacity(file.totp.len());
    for (key, raw) in file.totp {
        let id = Uuid::try_parse(&key)
            .with_context(|| format!("secrets file: {key:?} is not a UUID"))?;
        let algorithm = TotpAlgorithm::parse(raw.algorithm.as_deref().unwrap_or("sha1"))
            .map_err(|e| anyhow::anyhow!("secrets file: [totp] {key}: {e}"))?;
        let parking = raw
            .parking
            .as_deref()
            .map(TotpParking::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("secrets file: [totp] {key}: {e}"))?;
        let record = TotpRecord::from_base32(
            &raw.base32,
            raw.step.unwrap_or(tryst_engine::totp::DEFAULT_STEP),
            algorithm,
            parking,
        )
        .map_err(|e| anyhow::anyhow!("secrets file: [totp] {key}: {e}"))?;
        out.push((
            id,
            Credential::Totp {
                secret: record.secret().to_vec(),
                step: record.step(),
                queue: parking == Some(TotpParking::Queue),
            },
        ));
    }
    if out.is_empty() {
        bail!("secrets file holds no [totp] records");
    }
    Ok(out)
}

/// Parses the agreed `secrets.toml` format into (id, secret bytes), sorted by id.
pub(crate) fn parse_secrets(text: &str) -> Result<Vec<(Uuid, Vec<u8>)>> {
    let file: SecretsFile = toml::from_str(text).context("secrets file is not valid TOML")?;
    let mut out = Vec::with_capacity(file.secrets.len());
    for (key, value) in file.secrets {
        let id = Uuid::try_parse(&key)
            .with_context(|| format!("secrets file: {key:?} is not a UUID"))?;
        let bytes = B64URL
            .decode(value.trim_end_matches('='))
            .with_context(|| format!("secrets file: secret of {key} is not base64url"))?;
        if bytes.is_empty() {
            bail!("secrets file: secret of {key} is empty");
        }
        out.push((id, bytes));
    }
    if out.is_empty() {
        bail!("secrets file holds no ids");
    }
    Ok(out)
}

/// Writes `text` to `path` atomically with mode 0600 (temp file, fsync, rename).
pub(crate) fn write_private_atomic(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path
        .parent()
        .context("secrets path has no parent directory")?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secrets")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// `n` fresh random ids with 32-byte secrets.
pub(crate) fn generate_ids(n: usize) -> Vec<(Uuid, Vec<u8>)> {
    use rand::RngCore as _;
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| {
            let mut idb = [0u8; 16];
            rng.fill_bytes(&mut idb);
            let id = uuid::Builder::from_random_bytes(idb).into_uuid();
            let mut secret = vec![0u8; 32];
            rng.fill_bytes(&mut secret);
            (id, secret)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_exact_ok_only() {
        assert_eq!(classify(b"HTTP/1.1 200\r\n\r\n"), Answer::Ok);
        assert_eq!(classify(b"HTTP/1.1 200 OK\r\n\r"), Answer::Status(200));
        assert_eq!(classify(b"HTTP/1.1 404 Not Fo"), Answer::Status(404));
        assert_eq!(classify(b"HTTP/1.1 503\r\nConte"), Answer::Status(503));
        assert_eq!(classify(b"HTTP/1.0 200\r\n\r\n"), Answer::Garbage);
        assert_eq!(classify(b"HTTP/1.1 2x0\r\n\r\n"), Answer::Garbage);
        assert_eq!(classify(b"hello"), Answer::Garbage);
        assert_eq!(classify(b""), Answer::Garbage);
    }

    #[test]
    fn connect_head_is_canonical() {
        let id = Uuid::parse_str("0B6C6F1E-3C4B-4A8E-9D2F-6A1C2B3D4E5F").unwrap();
        assert_eq!(
            connect_head(&id),
            b"CONNECT uuid:0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f HTTP/1.1\r\n\r\n"
        );
    }

    #[test]
    fn secrets_round_trip() {
        let ids = generate_ids(3);
        let text = render_secrets(&ids);
        assert!(text.starts_with("# tryst secrets"));
        let mut back = parse_secrets(&text).unwrap();
        let mut want = ids.clone();
        want.sort();
        back.sort();
        assert_eq!(back, want);
        assert!(ids.iter().all(|(_, s)| s.len() == 32));
    }

    #[test]
    fn parses_the_agreed_example() {
        let text = "# c\n[secrets]\n\"0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f\" = \"q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng\"\n";
        let got = parse_secrets(text).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), 32);
    }

    #[test]
    fn refuses_bad_secrets_files() {
        assert!(parse_secrets("").is_err());
        assert!(parse_secrets("[secrets]\n\"nope\" = \"AAAA\"\n").is_err());
        assert!(
            parse_secrets("[secrets]\n\"0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f\" = \"***\"\n")
                .is_err()
        );
        assert!(parse_secrets("[secrets\n").is_err());
    }

    #[test]
    fn totp_park_head_and_code() {
        let id = Uuid::parse_str("2F402F80-DA50-11E1-9B23-0123456789AB").unwrap();
        assert_eq!(
            totp_park_head(&id, "123456"),
            b"CONNECT uuid:2f402f80-da50-11e1-9b23-0123456789ab?response=123456 HTTP/1.1\r\n\r\n"
        );
        // RFC 6238 appendix B, SHA-1 key, T = 59: 94287082 -> last 6 digits 287082.
        let auth = ParkAuth::new(&Credential::Totp {
            secret: b"12345678901234567890".to_vec(),
            step: 30,
            queue: true,
        })
        .unwrap();
        assert_eq!(auth.totp_step(), Some(30));
        assert_eq!(
            auth.head(&id, 59),
            totp_park_head(&id, "287082"),
            "the head carries the 6-digit RFC 6238 code"
        );
        let native = ParkAuth::new(&Credential::Native(vec![7; 32])).unwrap();
        assert_eq!(native.totp_step(), None);
        let head = String::from_utf8(native.head(&id, 1_700_000_000)).unwrap();
        assert!(
            head.contains("Proxy-Authorization: Tryst ts=1700000000, nonce="),
            "{head}"
        );
        assert!(
            ParkAuth::new(&Credential::Totp {
                secret: Vec::new(),
                step: 30,
                queue: true
            })
            .is_err()
        );
    }

    #[test]
    fn totp_boundary_wait_only_near_the_end_of_a_step() {
        // 30 s steps, 2 s guard.
        assert_eq!(totp_boundary_wait(0, 30, 2000), None);
        assert_eq!(totp_boundary_wait(27_999, 30, 2000), None);
        assert_eq!(totp_boundary_wait(28_001, 30, 2000), Some(1_999 + 20));
        assert_eq!(totp_boundary_wait(59_999, 30, 2000), Some(1 + 20));
        assert_eq!(totp_boundary_wait(60_000, 30, 2000), None);
        // The guard is capped at half a step, so a short step still sends.
        assert_eq!(totp_boundary_wait(0, 1, 2000), None);
        assert_eq!(totp_boundary_wait(400, 1, 2000), None);
        assert_eq!(totp_boundary_wait(600, 1, 2000), Some(420));
        // Step 0 counts as 1 s; nothing overflows near u64::MAX.
        assert!(totp_boundary_wait(u64::MAX, 0, 2000).is_some_and(|ms| ms <= 1020));
    }

    #[test]
    fn totp_secrets_round_trip_with_queued_parking() {
        let ids = generate_totp_ids(4);
        for (_, c) in &ids {
            let Credential::Totp {
                secret,
                step,
                queue,
            } = c
            else {
                panic!("not TOTP: {c:?}")
            };
            assert_eq!(secret.len(), 32);
            assert!(secret.iter().all(u8::is_ascii_alphanumeric));
            assert_eq!(*step, 30);
            assert!(*queue);
        }
        let text = render_totp_secrets(&ids);
        assert!(text.contains("parking = \"queue\""), "{text}");
        let mut back = parse_totp_secrets(&text).unwrap();
        let mut want = ids.clone();
        back.sort_by_key(|(id, _)| *id);
        want.sort_by_key(|(id, _)| *id);
        assert_eq!(back, want);
        // The same file has no native ids.
        assert!(parse_secrets(&text).is_err());
    }

    #[test]
    fn parses_the_relay_documented_totp_example() {
        let text = "[totp]\n\"2f402f80-da50-11e1-9b23-0123456789ab\" = { base32 = \"KBFU2TDPM53DOU2GJRFHKYSQJF3GO2KSII3XCNTMG5KW26DNIFWXINSOJZDVOQ3Z\", step = 30, parking = \"replace\", issuer = \"x\" }\n";
        let got = parse_totp_secrets(text).unwrap();
        assert_eq!(got.len(), 1);
        assert!(matches!(
            &got[0].1,
            Credential::Totp {
                step: 30,
                queue: false,
                ..
            }
        ));
        let bad = [
            "[totp]\n\"nope\" = { base32 = \"KBFU2TDP\" }\n",
            "[totp]\n\"2f402f80-da50-11e1-9b23-0123456789ab\" = { base32 = \"!!\" }\n",
            "[totp]\n\"2f402f80-da50-11e1-9b23-0123456789ab\" = { base32 = \"KBFU2TDP\", step = 0 }\n",
            "[totp]\n\"2f402f80-da50-11e1-9b23-0123456789ab\" = { base32 = \"KBFU2TDP\", algorithm = \"sha256\" }\n",
            "[totp]\n\"2f402f80-da50-11e1-9b23-0123456789ab\" = { base32 = \"KBFU2TDP\", parking = \"stack\" }\n",
            "[secrets]\n",
        ];
        for t in bad {
            assert!(parse_totp_secrets(t).is_err(), "{t}");
        }
    }

    #[test]
    fn writes_private_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets.toml");
        write_private_atomic(&p, "x").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "x");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
