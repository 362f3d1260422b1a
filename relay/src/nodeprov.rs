//! node-rendezvous provisioning: TOTP records in the secrets file's `[totp]` table,
//! otpauth:// URIs, terminal QR codes, and upstream's JSON provisioning records.
//!
//! An upstream record (one per UUID in its redis store) looks like
//! `{"uuid":"…","authURL":"otpauth://…","authParams":{"algorithm":"sha1","length":40,
//! "name":"<uuid>","issuer":"…","step":30,"base32":"…","protocol":"totp"}}`. `length` is
//! the length of the ASCII key speakeasy generated (40), not a digit count. Import reads
//! `uuid` and `authParams.{base32,step,algorithm,issuer,protocol}` and ignores the rest
//! (`qrcodeURL`, `authURL`, `length`, `name`).

use crate::secrets::{self, SecretsError, TotpEntry, create_private_dir, load_file, write_atomic};
use rand::RngCore;
use std::path::{Path, PathBuf};
use tryst_engine::target::RendezvousId;
use tryst_engine::totp::{DEFAULT_STEP, TotpAlgorithm, TotpError, TotpParking, TotpRecord};

/// Characters of a generated key: speakeasy's `generate_key` alphabet without symbols
/// (the keys upstream provisioned are alphanumeric).
const KEY_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of a generated key (speakeasy's and upstream's `length: 40`).
pub const KEY_LEN: usize = 40;
/// The issuer written when none is configured.
pub const DEFAULT_ISSUER: &str = "tryst";
/// Longest import accepted, bytes.
pub const MAX_IMPORT_BYTES: usize = 64 << 20;

/// A random ASCII key of [`KEY_LEN`] alphanumeric characters (about 238 bits).
pub fn generate_key(rng: &mut dyn RngCore) -> String {
    let mut out = String::with_capacity(KEY_LEN);
    while out.len() < KEY_LEN {
        let mut b = [0u8; 1];
        rng.fill_bytes(&mut b);
        // 62 * 4 = 248: reject 248..=255 so every character is equally likely.
        if usize::from(b[0]) < KEY_ALPHABET.len() * 4 {
            out.push(char::from(
                KEY_ALPHABET[usize::from(b[0]) % KEY_ALPHABET.len()],
            ));
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The otpauth:// URI authenticator apps and `oathtool` understand: 6 digits, SHA1, the
/// record's period. (Upstream's `authURL` says `digits=40`, which apps cannot use.)
pub fn otpauth_uri(id: &RendezvousId, entry: &TotpEntry) -> String {
    let issuer = percent_encode(entry.issuer.as_deref().unwrap_or(DEFAULT_ISSUER));
    format!(
        "otpauth://totp/{issuer}:{id}?secret={}&issuer={issuer}&algorithm=SHA1&digits=6&period={}",
        entry.record.base32(),
        entry.record.step()
    )
}

/// A terminal QR code of `text` (Unicode half blocks, with the quiet zone).
pub fn qr_text(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RecordJson {
    uuid: String,
    #[serde(rename = "authURL", default, skip_serializing_if = "Option::is_none")]
    auth_url: Option<String>,
    #[serde(rename = "authParams")]
    auth_params: AuthParams,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AuthParams {
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    length: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    step: Option<u64>,
    base32: String,
    #[serde(default)]
    protocol: Option<String>,
}

/// The node-rendezvous provisioning record of one id, as one line of JSON.
pub fn provisioning_record(id: &RendezvousId, entry: &TotpEntry) -> String {
    let issuer = entry.issuer.as_deref().unwrap_or(DEFAULT_ISSUER);
    let rec = RecordJson {
        uuid: id.to_string(),
        auth_url: Some(otpauth_uri(id, entry)),
        auth_params: AuthParams {
            algorithm: Some(entry.record.algorithm().name().to_owned()),
            length: Some(entry.record.secret().len() as u64),
            name: Some(id.to_string()),
            issuer: Some(issuer.to_owned()),
            step: Some(entry.record.step()),
            base32: entry.record.base32(),
            protocol: Some("totp".to_owned()),
        },
    };
    serde_json::to_string(&rec).unwrap_or_default()
}

/// Why an import was refused; nothing is written then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A record that is not usable; `location` is `line N` or `record N` (array form).
    #[error("{location}: {message}")]
    Record {
        /// Where.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The input is larger than [`MAX_IMPORT_BYTES`].
    #[error("import larger than 64 MiB")]
    TooLarge,
    /// An imported id already has a TOTP record, without `--force`.
    #[error("{id} already has a TOTP record in {path}; pass --force to replace it")]
    Exists {
        /// The id.
        id: RendezvousId,
        /// The secrets file.
        path: PathBuf,
    },
    /// Reading or writing the secrets file failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

fn record_from_json(rec: RecordJson) -> Result<(RendezvousId, TotpEntry), String> {
    let id = RendezvousId::parse(&rec.uuid)
        .map_err(|_| format!("`{}` is not a hyphenated UUID", rec.uuid))?;
    let p = rec.auth_params;
    if let Some(proto) = p.protocol.as_deref().filter(|p| *p != "totp") {
        return Err(format!("protocol `{proto}` is not totp"));
    }
    let algorithm = match p.algorithm.as_deref() {
        None => TotpAlgorithm::Sha1,
        Some(a) => TotpAlgorithm::parse(a).map_err(|e| e.to_string())?,
    };
    let record =
        TotpRecord::from_base32(&p.base32, p.step.unwrap_or(DEFAULT_STEP), algorithm, None)
            .map_err(|e: TotpError| e.to_string())?;
    Ok((
        id,
        TotpEntry {
            record,
            issuer: p.issuer,
        },
    ))
}

/// Parses node-rendezvous provisioning records: a JSON array of records, or one record
/// per line (blank lines skipped). Refuses the whole input on the first bad record,
/// naming its line (or its position in the array) and on a UUID given twice.
pub fn parse_records(text: &str) -> Result<Vec<(RendezvousId, TotpEntry)>, ImportError> {
    if text.len() > MAX_IMPORT_BYTES {
        return Err(ImportError::TooLarge);
    }
    let err = |location: String, message: String| ImportError::Record { location, message };
    let mut out: Vec<(RendezvousId, TotpEntry)> = Vec::new();
    let mut push = |location: String, rec: RecordJson| -> Result<(), ImportError> {
        let (id, entry) = record_from_json(rec).map_err(|m| err(location.clone(), m))?;
        if out.iter().any(|(seen, _)| *seen == id) {
            return Err(err(location, format!("{id} appears twice")));
        }
        out.push((id, entry));
        Ok(())
    };
    if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| err(format!("line {}", e.line()), e.to_string()))?;
        for (i, v) in values.into_iter().enumerate() {
            let location = format!("record {}", i + 1);
            let rec: RecordJson =
                serde_json::from_value(v).map_err(|e| err(location.clone(), e.to_string()))?;
            push(location, rec)?;
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let location = format!("line {}", i + 1);
            let rec: RecordJson =
                serde_json::from_str(line).map_err(|e| err(location.clone(), e.to_string()))?;
            push(location, rec)?;
        }
    }
    Ok(out)
}

/// Adds imported records to the secrets file's `[totp]` table (all or nothing). Ids that
/// already have a record are refused unless `force`. Returns the ids imported.
pub fn import(path: &Path, text: &str, force: bool) -> Result<Vec<RendezvousId>, ImportError> {
    let records = parse_records(text)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let mut file = load_file(path)?;
    if let Some((id, _)) = records
        .iter()
        .find(|(id, _)| !force && file.totp.contains_key(id))
    {
        return Err(ImportError::Exists {
            id: *id,
            path: path.to_owned(),
        });
    }
    let ids = records.iter().map(|(id, _)| *id).collect();
    file.totp.extend(records);
    write_atomic(path, secrets::render_file(&file).as_bytes(), 0o600)?;
    Ok(ids)
}

/// Every TOTP record of the secrets file as node-rendezvous provisioning records, one
/// JSON object per line (the form [`import`] reads back).
pub fn export(path: &Path) -> Result<String, SecretsError> {
    let file = load_file(path)?;
    let mut out = String::new();
    for (id, entry) in &file.totp {
        out.push_str(&provisioning_record(id, entry));
        out.push('\n');
    }
    Ok(out)
}

/// Settings of a new TOTP record.
#[derive(Debug, Clone, Default)]
pub struct TotpOptions {
    /// Step, seconds (default 30).
    pub step: Option<u64>,
    /// Per-id parking override.
    pub parking: Option<TotpParking>,
    /// Issuer for URIs and records.
    pub issuer: Option<String>,
}

/// The outcome of [`provision_totp`].
#[derive(Debug)]
pub struct ProvisionedTotp {
    /// The id.
    pub id: RendezvousId,
    /// The new record.
    pub entry: TotpEntry,
    /// The secrets file written.
    pub path: PathBuf,
    /// True when a record was replaced (`--force`).
    pub replaced: bool,
}

/// Creates a TOTP record with a fresh [`generate_key`] secret for `id_text`.
pub fn provision_totp(
    path: &Path,
    id_text: &str,
    force: bool,
    options: &TotpOptions,
    rng: &mut dyn RngCore,
) -> Result<ProvisionedTotp, SecretsError> {
    let id =
        RendezvousId::parse(id_text).map_err(|_| SecretsError::BadArgument(id_text.to_owned()))?;
    let bad = |problem| SecretsError::BadTotp {
        path: path.to_owned(),
        key: id.to_string(),
        problem,
    };
    let record = TotpRecord::new(
        generate_key(rng).into_bytes(),
        options.step.unwrap_or(DEFAULT_STEP),
        TotpAlgorithm::Sha1,
        options.parking,
    )
    .map_err(bad)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let mut file = load_file(path)?;
    let replaced = file.totp.contains_key(&id);
    if replaced && !force {
        return Err(SecretsError::AlreadyProvisioned {
            id: id.to_string(),
            path: path.to_owned(),
        });
    }
    let entry = TotpEntry {
        record,
        issuer: options.issuer.clone(),
    };
    file.totp.insert(id, entry.clone());
    write_atomic(path, secrets::render_file(&file).as_bytes(), 0o600)?;
    Ok(ProvisionedTotp {
        id,
        entry,
        path: path.to_owned(),
        replaced,
    })
}

/// What `tryst provision --totp` prints.
pub fn totp_instructions(p: &ProvisionedTotp) -> String {
    let uri = otpauth_uri(&p.id, &p.entry);
    let qr = qr_text(&uri).unwrap_or_else(|e| format!("(no QR code: {e})\n"));
    let verb = if p.replaced {
        "Replaced the TOTP record of"
    } else {
        "Provisioned a TOTP record for"
    };
    let b32 = p.entry.record.base32();
    format!(
        "{verb} rendezvous id {id} in {path}
A running relay loads it on SIGHUP (kill -HUP <pid of tryst serve>).

uuid:   {id}
base32: {b32}
step:   {step} s (HMAC-SHA1; 6-digit codes, as steward sends them)

otpauth URI:
  {uri}

{qr}
node-rendezvous provisioning record (`tryst provision --export` prints every record):
{record}

Serve it over TLS, where node-rendezvous lives (steward speaks HTTPS; 8899 is
upstream's port; the certificate is generated at first start unless --tls-cert and
--tls-key name yours):

  tryst serve --secrets {path} --tls-listen 0.0.0.0:8899

A hidden server (steward) parks with, over TLS or plain TCP:

  CONNECT uuid:{id}?response=$(oathtool --totp -s {step}s -b {b32}) HTTP/1.1
",
        id = p.id,
        path = p.path.display(),
        step = p.entry.record.step(),
        record = provisioning_record(&p.id, &p.entry),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tryst_engine::totp::encode_base32;

    const ID: &str = "2f402f80-da50-11e1-9b23-0123456789ab";
    const KEY: &str = "PKMLogv7SFLJubPIvgiRB7q6l7UmxmAmt6NNGWCy";

    fn entry() -> TotpEntry {
        TotpEntry {
            record: TotpRecord::new(KEY.as_bytes().to_vec(), 30, TotpAlgorithm::Sha1, None)
                .unwrap(),
            issuer: Some("https://192.0.2.1:8898".into()),
        }
    }

    fn id() -> RendezvousId {
        RendezvousId::parse(ID).unwrap()
    }

    #[test]
    fn generated_keys_are_40_alphanumeric_characters() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let a = generate_key(&mut rng);
        let b = generate_key(&mut rng);
        assert_eq!(a.len(), KEY_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn uri_and_record_have_the_upstream_shape() {
        let b32 = encode_base32(KEY.as_bytes());
        assert_eq!(
            otpauth_uri(&id(), &entry()),
            format!(
                "otpauth://totp/https%3A%2F%2F192.0.2.1%3A8898:{ID}?secret={b32}&issuer=https%3A%2F%2F192.0.2.1%3A8898&algorithm=SHA1&digits=6&period=30"
            )
        );
        let rec = provisioning_record(&id(), &entry());
        let want_params = format!(
            r#""authParams":{{"algorithm":"sha1","length":40,"name":"{ID}","issuer":"https://192.0.2.1:8898","step":30,"base32":"{b32}","protocol":"totp"}}}}"#
        );
        assert!(
            rec.starts_with(&format!(r#"{{"uuid":"{ID}","authURL":"otpauth://totp/"#)),
            "{rec}"
        );
        assert!(rec.ends_with(&want_params), "{rec}");
        // And it imports back to the same record.
        let back = parse_records(&rec).unwrap();
        assert_eq!(back, vec![(id(), entry())]);
    }

    #[test]
    fn imports_upstream_records_in_both_forms() {
        let b32 = encode_base32(KEY.as_bytes());
        let upstream = format!(
            r#"{{"uuid":"{ID}","qrcodeURL":"https://chart.googleapis.com/x","authURL":"otpauth://totp/x?secret={b32}&digits=40","authParams":{{"algorithm":"sha1","length":40,"name":"{ID}","issuer":"https://192.0.2.1:8898","step":30,"base32":"{b32}","protocol":"totp"}}}}"#
        );
        let lines = format!("\n{upstream}\n\n");
        assert_eq!(parse_records(&lines).unwrap(), vec![(id(), entry())]);
        let array = format!("[{upstream}]");
        assert_eq!(parse_records(&array).unwrap(), vec![(id(), entry())]);
        assert!(parse_records("").unwrap().is_empty());
    }

    #[test]
    fn malformed_records_name_their_line() {
        let b32 = encode_base32(KEY.as_bytes());
        let good = format!(r#"{{"uuid":"{ID}","authParams":{{"base32":"{b32}"}}}}"#);
        let cases = [
            (format!("{good}\nnot json\n"), "line 2: "),
            (
                format!("\n\n{{\"uuid\":\"x\",\"authParams\":{{\"base32\":\"{b32}\"}}}}"),
                "line 3: `x` is not a hyphenated UUID",
            ),
            (
                format!(r#"{{"uuid":"{ID}","authParams":{{"base32":"!!"}}}}"#),
                "line 1: secret is not base32",
            ),
            (
                format!(
                    r#"{{"uuid":"{ID}","authParams":{{"base32":"{b32}","algorithm":"sha256"}}}}"#
                ),
                "line 1: only the sha1 algorithm",
            ),
            (
                format!(r#"{{"uuid":"{ID}","authParams":{{"base32":"{b32}","protocol":"hotp"}}}}"#),
                "line 1: protocol `hotp` is not totp",
            ),
            (
                format!(r#"{{"uuid":"{ID}","authParams":{{"base32":"{b32}","step":0}}}}"#),
                "line 1: step must be",
            ),
            (
                format!(r#"{{"uuid":"{ID}"}}"#),
                "line 1: missing field `authParams`",
            ),
            (
                format!("{good}\n{good}"),
                "line 2: 2f402f80-da50-11e1-9b23-0123456789ab appears twice",
            ),
            (format!("[{good}, 5]"), "record 2: "),
            ("[{".to_owned(), "line 1: "),
        ];
        for (text, want) in cases {
            let e = parse_records(&text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{want:?} vs {e:?}");
        }
    }

    #[test]
    fn provision_import_export_round_trip_and_keep_native_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d").join("secrets.toml");
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let native = "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f";
        secrets::provision(&path, native, false, &mut rng).unwrap();
        let opts = TotpOptions {
            parking: Some(TotpParking::Queue),
            ..TotpOptions::default()
        };
        let p = provision_totp(&path, ID, false, &opts, &mut rng).unwrap();
        assert!(!p.replaced);
        assert_eq!(p.entry.record.secret().len(), KEY_LEN);
        let err = provision_totp(&path, ID, false, &opts, &mut rng).unwrap_err();
        assert!(
            matches!(err, SecretsError::AlreadyProvisioned { .. }),
            "{err}"
        );
        // The native provision after a TOTP one keeps the [totp] table, and vice versa.
        secrets::provision(&path, native, true, &mut rng).unwrap();
        let file = load_file(&path).unwrap();
        assert_eq!(file.secrets.len(), 1);
        assert_eq!(file.totp.get(&id()), Some(&p.entry));

        let exported = export(&path).unwrap();
        assert_eq!(exported.lines().count(), 1);
        let other = dir.path().join("other.toml");
        assert_eq!(import(&other, &exported, false).unwrap(), vec![id()]);
        let imported = load_file(&other).unwrap().totp;
        assert_eq!(
            imported.get(&id()).unwrap().record.secret(),
            p.entry.record.secret()
        );
        // Parking overrides are local settings, not part of the upstream record.
        assert_eq!(imported.get(&id()).unwrap().record.parking(), None);
        let err = import(&other, &exported, false).unwrap_err();
        assert!(matches!(err, ImportError::Exists { .. }), "{err}");
        import(&other, &exported, true).unwrap();

        let text = totp_instructions(&p);
        assert!(
            text.contains(&format!("base32: {}\n", p.entry.record.base32())),
            "{text}"
        );
        assert!(text.contains("otpauth://totp/tryst:"), "{text}");
        assert!(
            text.contains('\u{2580}') || text.contains('\u{2584}') || text.contains('\u{2588}'),
            "QR code missing: {text}"
        );
        assert!(text.contains(r#""protocol":"totp""#), "{text}");
    }

    #[test]
    fn secrets_file_totp_table_parses_and_refuses_bad_entries() {
        let p = Path::new("s.toml");
        let b32 = encode_base32(KEY.as_bytes()).to_lowercase();
        let f = secrets::parse_file(
            &format!(
                "[totp]\n\"{}\" = {{ base32 = \"{b32}\", parking = \"replace\" }}\n",
                ID.to_uppercase()
            ),
            p,
        )
        .unwrap();
        let e = f.totp.get(&id()).unwrap();
        assert_eq!(e.record.step(), 30);
        assert_eq!(e.record.parking(), Some(TotpParking::Replace));
        assert_eq!(e.record.secret(), KEY.as_bytes());
        // Render and parse again.
        assert_eq!(
            secrets::parse_file(&secrets::render_file(&f), p).unwrap(),
            f
        );
        for (entry, want) in [
            (
                format!("{{ base32 = \"{b32}\", step = 0 }}"),
                "step must be at least one second",
            ),
            (
                format!("{{ base32 = \"{b32}\", algorithm = \"sha512\" }}"),
                "only the sha1",
            ),
            (
                format!("{{ base32 = \"{b32}\", parking = \"fifo\" }}"),
                "parking must be",
            ),
            ("{ base32 = \"0000\" }".to_owned(), "secret is not base32"),
        ] {
            let e = secrets::parse_file(&format!("[totp]\n\"{ID}\" = {entry}\n"), p).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("s.toml: TOTP record for `{ID}`")),
                "{e}"
            );
        }
        let e = secrets::parse_file(
            &format!("[totp]\n\"{ID}\" = {{ base32 = \"{b32}\", colour = 1 }}\n"),
            p,
        )
        .unwrap_err();
        assert!(matches!(e, SecretsError::Syntax { .. }), "{e}");
    }
}
