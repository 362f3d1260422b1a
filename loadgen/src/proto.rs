//! The native tryst protocol as the load generator speaks it: park and connect heads, the
//! exact `200` answer, and the agreed secrets file.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use tryst_engine::auth::{Operation, Secret, proof_header};
use tryst_engine::target::RendezvousId;
use uuid::Uuid;

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

/// The client's head: `CONNECT uuid:<id> HTTP/1.1\r\n\r\n`.
pub(crate) fn connect_head(id: &Uuid) -> Vec<u8> {
    format!("CONNECT uuid:{} HTTP/1.1\r\n\r\n", id.hyphenated()).into_bytes()
}

/// A hidden server's park head with a fresh proof for unix time `ts` and `nonce`.
pub(crate) fn park_head(id: &Uuid, secret: &Secret, ts: u64, nonce: &[u8]) -> Vec<u8> {
    let rid = RendezvousId(*id.as_bytes());
    let proof = proof_header(secret, Operation::Park, &rid, ts, nonce);
    format!(
        "CONNECT uuid:{} HTTP/1.1\r\nProxy-Authorization: {proof}\r\n\r\n",
        id.hyphenated()
    )
    .into_bytes()
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

#[derive(Deserialize)]
struct SecretsFile {
    #[serde(default)]
    secrets: BTreeMap<String, String>,
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
