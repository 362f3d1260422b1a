//! The secrets file: rendezvous id -> shared secret, and `tryst provision`.
//!
//! Format (TOML; keys are canonical lower-case UUIDs, values unpadded base64url):
//! ```toml
//! # tryst secrets: rendezvous id -> shared secret (unpadded base64url of the secret bytes)
//! [secrets]
//! "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f" = "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng"
//! ```
//! An optional `[totp]` table holds node-rendezvous hidden servers (see
//! `docs/compat/node-rendezvous.md`); `step` defaults to 30, `parking` to the relay's
//! node-rendezvous default, `algorithm` may only be `sha1`, `issuer` is kept for
//! `tryst provision --export`:
//! ```toml
//! [totp]
//! "2f402f80-da50-11e1-9b23-0123456789ab" = { base32 = "KBFU2TDPM53DOU2GJRFHKYSQJF3GO2KSII3XCNTMG5KW26DNIFWXINSOJZDVOQ3Z", step = 30, parking = "replace" }
//! ```
//! The file is written atomically (temporary file, fsync, rename, fsync of the
//! directory) with mode 0600. A missing file means "no ids provisioned".

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tryst_engine::auth::{MacKey, Secret};
use tryst_engine::driver::{ShareFile, WorkerShare};
use tryst_engine::route::{ReloadError, SecretSource};
use tryst_engine::target::{RendezvousId, RendezvousKey};
use tryst_engine::totp::{TotpAlgorithm, TotpError, TotpParking, TotpRecord};

/// Bytes of a provisioned secret.
pub const SECRET_LEN: usize = 32;
/// Shortest secret accepted from the file.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted from the file.
pub const MAX_SECRET_LEN: usize = 1024;
/// The first line of every secrets file we write.
pub const HEADER: &str =
    "# tryst secrets: rendezvous id -> shared secret (unpadded base64url of the secret bytes)";

/// Why the secrets file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Not TOML of the expected shape.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key that is not a hyphenated UUID.
    #[error("{path}: `{key}` is not a rendezvous id (expected a hyphenated UUID)")]
    BadId {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
    },
    /// Two keys spell the same id.
    #[error("{path}: id `{key}` appears twice (ids are case-insensitive)")]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// The second spelling.
        key: String,
    },
    /// A value that is not a usable secret.
    #[error("{path}: secret for `{key}` {problem}")]
    BadSecret {
        /// The file.
        path: PathBuf,
        /// The id as written.
        key: String,
        /// What is wrong.
        problem: SecretProblem,
    },
    /// A `[totp]` entry that is not a usable record.
    #[error("{path}: TOTP record for `{key}`: {problem}")]
    BadTotp {
        /// The file.
        path: PathBuf,
        /// The id as written.
        key: String,
        /// What is wrong.
        problem: TotpError,
    },
    /// `provision` of an id that already has a secret, without `--force`.
    #[error("{id} already has a secret in {path}; pass --force to replace it")]
    AlreadyProvisioned {
        /// The id, canonical.
        id: String,
        /// The file.
        path: PathBuf,
    },
    /// `provision` with an id that is not a hyphenated UUID.
    #[error(
        "`{0}` is not a rendezvous id (expected a hyphenated UUID such as 0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f)"
    )]
    BadArgument(String),
}

/// Why one secret value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretProblem {
    /// Not base64url.
    #[error("is not unpadded base64url")]
    NotBase64Url,
    /// Fewer than [`MIN_SECRET_LEN`] bytes.
    #[error("is shorter than 16 bytes")]
    TooShort,
    /// More than [`MAX_SECRET_LEN`] bytes.
    #[error("is longer than 1024 bytes")]
    TooLong,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    totp: BTreeMap<String, RawTotp>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTotp {
    base32: String,
    step: Option<u64>,
    algorithm: Option<String>,
    parking: Option<String>,
    issuer: Option<String>,
}

/// One `[totp]` entry: the record the router checks, plus the issuer for export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpEntry {
    /// Secret, step, algorithm, parking override.
    pub record: TotpRecord,
    /// The issuer written into provisioning records and otpauth URIs, if set.
    pub issuer: Option<String>,
}

/// Everything in a secrets file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsFile {
    /// `[secrets]`: native shared secrets.
    pub secrets: BTreeMap<RendezvousId, Secret>,
    /// `[totp]`: node-rendezvous TOTP records.
    pub totp: BTreeMap<RendezvousId, TotpEntry>,
}

fn parse_totp(raw: RawTotp) -> Result<TotpEntry, TotpError> {
    let algorithm = match raw.algorithm.as_deref() {
        None => TotpAlgorithm::Sha1,
        Some(name) => TotpAlgorithm::parse(name)?,
    };
    let parking = raw.parking.as_deref().map(TotpParking::parse).transpose()?;
    let step = raw.step.unwrap_or(tryst_engine::totp::DEFAULT_STEP);
    let record = TotpRecord::from_base32(&raw.base32, step, algorithm, parking)?;
    Ok(TotpEntry {
        record,
        issuer: raw.issuer,
    })
}

/// Decodes one secret value: base64url, unpadded (trailing `=` tolerated), 16 to 1024
/// bytes.
pub fn decode_secret(text: &str) -> Result<Vec<u8>, SecretProblem> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| SecretProblem::NotBase64Url)?;
    if bytes.len() < MIN_SECRET_LEN {
        return Err(SecretProblem::TooShort);
    }
    if bytes.len() > MAX_SECRET_LEN {
        return Err(SecretProblem::TooLong);
    }
    Ok(bytes)
}

/// Encodes secret bytes as the file stores them (unpadded base64url).
pub fn encode_secret(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Parses the `[secrets]` table of a secrets file (the whole file is validated).
/// `path` is only used in error messages.
pub fn parse_secrets(
    text: &str,
    path: &Path,
) -> Result<BTreeMap<RendezvousId, Secret>, SecretsError> {
    parse_file(text, path).map(|f| f.secrets)
}

/// Parses the text of a secrets file. `path` is only used in error messages.
pub fn parse_file(text: &str, path: &Path) -> Result<SecretsFile, SecretsError> {
    parse_file_keeping(text, path, |_| true)
}

/// [`parse_file`] keeping only the ids `keep` accepts (a worker's own share, see
/// [`FileSecrets::load_share`]). Every entry is still checked (id, encoding, length);
/// duplicate spellings of one id are found among the kept ids (the supervisor checks
/// the whole file, with everything kept, before any worker loads it).
pub fn parse_file_keeping(
    text: &str,
    path: &Path,
    keep: impl Fn(&RendezvousId) -> bool,
) -> Result<SecretsFile, SecretsError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| SecretsError::Syntax {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let mut out = BTreeMap::new();
    for (key, value) in raw.secrets {
        let bytes = decode_secret(&value).map_err(|problem| SecretsError::BadSecret {
            path: path.to_owned(),
            key: key.clone(),
            problem,
        })?;
        let id = RendezvousId::parse(&key).map_err(|_| SecretsError::BadId {
            path: path.to_owned(),
            key: key.clone(),
        })?;
        if !keep(&id) {
            continue;
        }
        if out.insert(id, Secret::new(bytes)).is_some() {
            return Err(SecretsError::DuplicateId {
                path: path.to_owned(),
                key,
            });
        }
    }
    let mut totp = BTreeMap::new();
    for (key, value) in raw.totp {
        let entry = parse_totp(value).map_err(|problem| SecretsError::BadTotp {
            path: path.to_owned(),
            key: key.clone(),
            problem,
        })?;
        let id = RendezvousId::parse(&key).map_err(|_| SecretsError::BadId {
            path: path.to_owned(),
            key: key.clone(),
        })?;
        if !keep(&id) {
            continue;
        }
        if totp.insert(id, entry).is_some() {
            return Err(SecretsError::DuplicateId {
                path: path.to_owned(),
                key,
            });
        }
    }
    Ok(SecretsFile { secrets: out, totp })
}

/// Renders a secrets file from `(canonical id, encoded secret)` pairs, in order.
pub fn render_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    out.push_str(HEADER);
    out.push_str("\n[secrets]\n");
    for (id, secret) in entries {
        out.push('"');
        out.push_str(id);
        out.push_str("\" = \"");
        out.push_str(secret);
        out.push_str("\"\n");
    }
    out
}

/// Renders a secrets file (sorted by id).
pub fn render_secrets(secrets: &BTreeMap<RendezvousId, Secret>) -> String {
    let rows: Vec<(String, String)> = secrets
        .iter()
        .map(|(id, s)| (id.to_string(), encode_secret(s.expose())))
        .collect();
    render_entries(rows.iter().map(|(i, s)| (i.as_str(), s.as_str())))
}

/// A TOML basic string (quoted and escaped).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Renders a whole secrets file: `[secrets]` as [`render_secrets`] writes it, then a
/// `[totp]` table when there are TOTP records (sorted by id).
pub fn render_file(file: &SecretsFile) -> String {
    let mut out = render_secrets(&file.secrets);
    if !file.totp.is_empty() {
        out.push_str("\n[totp]\n");
        for (id, entry) in &file.totp {
            let r = &entry.record;
            out.push_str(&format!(
                "\"{id}\" = {{ base32 = \"{}\", step = {}, algorithm = \"{}\"",
                r.base32(),
                r.step(),
                r.algorithm().name()
            ));
            if let Some(p) = r.parking() {
                out.push_str(&format!(", parking = \"{}\"", p.name()));
            }
            if let Some(issuer) = &entry.issuer {
                out.push_str(&format!(", issuer = {}", toml_string(issuer)));
            }
            out.push_str(" }\n");
        }
    }
    out
}

/// Every worker's part of `file`, rendered as a secrets file, in the order of `shares`
/// (one per worker, in worker order, as the engine gives them): what the supervisor
/// gives each worker (see [`FileSecrets::from_supervisor`]). Each id is hashed to its
/// owner once, not once per worker.
pub fn render_shares(file: &SecretsFile, shares: &[WorkerShare]) -> Vec<String> {
    let Some(any) = shares.first() else {
        return Vec::new();
    };
    let owner = |id: &RendezvousId| any.owner(&RendezvousKey::from(*id));
    let mut parts = vec![SecretsFile::default(); shares.len()];
    for (id, secret) in &file.secrets {
        parts[owner(id)].secrets.insert(*id, secret.clone());
    }
    for (id, entry) in &file.totp {
        parts[owner(id)].totp.insert(*id, entry.clone());
    }
    parts.iter().map(render_file).collect()
}

/// A warning when a secrets file's mode lets group or others read or write it.
pub fn permission_warning(path: &Path, mode: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is accessible by group or others (mode {:04o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        )
    })
}

/// Logs [`permission_warning`] for the file at `path` (warns, does not refuse): the
/// secrets file, the mesh key, an agent's key files.
pub fn warn_if_accessible(path: &Path, meta: &fs::Metadata) {
    if let Some(w) = permission_warning(path, meta.permissions().mode()) {
        tracing::warn!("{w}");
    }
}

/// Reads the secrets file; a missing file is an empty set. Warns (does not refuse) when
/// the file is readable by group or others.
pub fn load_secrets(path: &Path) -> Result<BTreeMap<RendezvousId, Secret>, SecretsError> {
    load_file(path).map(|f| f.secrets)
}

/// Reads the whole secrets file (both tables); a missing file is empty. Warns like
/// [`load_secrets`].
pub fn load_file(path: &Path) -> Result<SecretsFile, SecretsError> {
    load_file_keeping(path, |_| true)
}

/// [`load_file`] keeping only the ids `keep` accepts ([`parse_file_keeping`]).
pub fn load_file_keeping(
    path: &Path,
    keep: impl Fn(&RendezvousId) -> bool,
) -> Result<SecretsFile, SecretsError> {
    let io_err = |source| SecretsError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SecretsFile::default()),
        Err(e) => return Err(io_err(e)),
    };
    warn_if_accessible(path, &file.metadata().map_err(io_err)?);
    let text = io::read_to_string(file).map_err(io_err)?;
    parse_file_keeping(&text, path, keep)
}

/// Writes `contents` to `path` atomically with `mode` ([`crate::files::write_private`]:
/// a fresh temporary file in the same directory, exact mode, fsync, rename over
/// `path`, fsync of the directory).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), SecretsError> {
    crate::files::write_private(path, contents, mode).map_err(|e| SecretsError::Io {
        path: e.path,
        source: e.source,
    })
}

/// Creates `dir` (and its parents) with mode 0700 if missing.
pub fn create_private_dir(dir: &Path) -> Result<(), SecretsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SecretsError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// The secrets of the router (native secrets and TOTP records), loaded from the
/// secrets file: all of them, or a worker's share.
#[derive(Debug)]
pub struct FileSecrets {
    /// The secrets file (read, or named in errors when the supervisor gave the share).
    path: PathBuf,
    /// The ids kept (on load and on every reload).
    share: WorkerShare,
    /// Where a reload reads from.
    source: Source,
    secrets: SecretTable,
    totp: TotpTable,
}

/// Where [`FileSecrets`] reads its ids.
#[derive(Debug)]
enum Source {
    /// The secrets file itself.
    File,
    /// The worker's part of the file, parsed and validated by the supervisor once for
    /// all workers ([`render_shares`]) and replaced by it on every reload.
    Supervisor(ShareFile),
}

impl FileSecrets {
    /// Loads `path` (a missing file is an empty set).
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        Self::load_share(path, WorkerShare::everything())
    }

    /// Loads the ids of `path` that `share`'s worker owns: the only ones whose proofs it
    /// checks (a `uuid:` id's key is [`RendezvousKey::uuid`] for native and
    /// node-rendezvous parks alike). Each of N workers keeps about 1/N of the file
    /// instead of all of it.
    pub fn load_share(path: &Path, share: WorkerShare) -> Result<Self, SecretsError> {
        Self::read(path.to_owned(), share, Source::File)
    }

    /// Loads the share the supervisor prepared for `share`'s worker ([`render_shares`]
    /// of the file it validated) instead of reading the secrets file at `path`: the
    /// worker parses only its own ids, and every reload reads the share the
    /// supervisor sent with it. `path` names the file in errors.
    pub fn from_supervisor(
        path: &Path,
        share: WorkerShare,
        file: ShareFile,
    ) -> Result<Self, SecretsError> {
        Self::read(path.to_owned(), share, Source::Supervisor(file))
    }

    fn read(path: PathBuf, share: WorkerShare, source: Source) -> Result<Self, SecretsError> {
        let file = source.load(&path, share)?;
        let (secrets, totp) = tables(file);
        Ok(Self {
            path,
            share,
            source,
            secrets,
            totp,
        })
    }

    /// How many ids have TOTP records.
    pub fn totp_len(&self) -> usize {
        self.totp.len()
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many ids have secrets.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// True when no id has a secret or a TOTP record.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.totp.is_empty()
    }
}

type TotpTable = HashMap<RendezvousId, TotpRecord>;

/// The native secrets a worker checks proofs with: each id's keyed HMAC state
/// ([`MacKey`], 80 B), made once at load so a proof does not pad and hash the key again.
///
/// The states sit in one `Vec` and the hash map holds only indices into it: the map's
/// buckets run 1.14-2.3x the ids (power-of-two sizing), so a 20 B entry there and the
/// 80 B state here cost ~114 B per id at the gated 61 % load, where a map of whole
/// states would cost ~159 B (`parked_mem --check` allows 120).
#[derive(Debug, Default)]
struct SecretTable {
    index: HashMap<RendezvousId, u32>,
    keys: Vec<MacKey>,
}

impl SecretTable {
    fn new(secrets: BTreeMap<RendezvousId, Secret>) -> Self {
        let mut index = HashMap::with_capacity(secrets.len());
        let mut keys = Vec::with_capacity(secrets.len());
        for (id, secret) in secrets {
            // A file of 2^32 ids would be some 400 GB of text.
            let at = u32::try_from(keys.len()).expect("fewer than 2^32 ids");
            index.insert(id, at);
            keys.push(MacKey::new(&secret));
        }
        Self { index, keys }
    }

    fn get(&self, id: &RendezvousId) -> Option<&MacKey> {
        let at = *self.index.get(id)?;
        self.keys.get(usize::try_from(at).ok()?)
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The lookup tables of a parsed file. The parse (the file's text and its TOML
/// document, ~0.7 KB per id at its peak) is freed by now; its pages are handed back to
/// the kernel so they do not stay resident in every worker after each load.
fn tables(file: SecretsFile) -> (SecretTable, TotpTable) {
    let secrets = SecretTable::new(file.secrets);
    let totp = file
        .totp
        .into_iter()
        .map(|(id, e)| (id, e.record))
        .collect();
    tryst_engine::driver::release_free_memory();
    (secrets, totp)
}

impl SecretSource for FileSecrets {
    fn mac_key(&self, id: &RendezvousId) -> Option<&MacKey> {
        self.secrets.get(id)
    }

    fn totp(&self, id: &RendezvousId) -> Option<&TotpRecord> {
        self.totp.get(id)
    }

    fn reload(&mut self) -> Result<(), ReloadError> {
        let fresh = self
            .source
            .load(&self.path, self.share)
            .map_err(ReloadError::load)?;
        (self.secrets, self.totp) = tables(fresh);
        Ok(())
    }
}

impl Source {
    /// The ids `share`'s worker owns, from the file or from the supervisor's share.
    fn load(&self, path: &Path, share: WorkerShare) -> Result<SecretsFile, SecretsError> {
        let owns = |id: &RendezvousId| share.owns(&RendezvousKey::from(*id));
        match self {
            Self::File => load_file_keeping(path, owns),
            Self::Supervisor(file) => {
                let bytes = file.read().map_err(|source| SecretsError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                let text = String::from_utf8(bytes).map_err(|_| SecretsError::Syntax {
                    path: path.to_owned(),
                    message: "the supervisor's share is not UTF-8".to_owned(),
                })?;
                parse_file_keeping(&text, path, owns)
            }
        }
    }
}

/// The outcome of [`provision`].
#[derive(Debug)]
pub struct Provisioned {
    /// The id, canonical.
    pub id: RendezvousId,
    /// The new secret.
    pub secret: Secret,
    /// The secrets file written.
    pub path: PathBuf,
    /// True when an existing secret was replaced (`--force`).
    pub replaced: bool,
}

/// Creates a random secret for `id_text` in the secrets file at `path` (creating its
/// directory 0700 if missing). Refuses an id that already has a secret unless `force`;
/// refuses to touch a file it cannot parse.
pub fn provision(
    path: &Path,
    id_text: &str,
    force: bool,
    rng: &mut dyn RngCore,
) -> Result<Provisioned, SecretsError> {
    let id =
        RendezvousId::parse(id_text).map_err(|_| SecretsError::BadArgument(id_text.to_owned()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let mut file = load_file(path)?;
    let replaced = file.secrets.contains_key(&id);
    if replaced && !force {
        return Err(SecretsError::AlreadyProvisioned {
            id: id.to_string(),
            path: path.to_owned(),
        });
    }
    let mut bytes = vec![0u8; SECRET_LEN];
    rng.fill_bytes(&mut bytes);
    let secret = Secret::new(bytes);
    file.secrets.insert(id, secret.clone());
    write_atomic(path, render_file(&file).as_bytes(), 0o600)?;
    Ok(Provisioned {
        id,
        secret,
        path: path.to_owned(),
        replaced,
    })
}

/// What `tryst provision` prints: the id, the secret, and how a hidden server parks.
pub fn provision_instructions(p: &Provisioned) -> String {
    let id = p.id.to_string();
    let secret = encode_secret(p.secret.expose());
    let verb = if p.replaced {
        "Replaced the secret of"
    } else {
        "Provisioned"
    };
    format!(
        r#"{verb} rendezvous id {id} in {path}
A running relay loads it on SIGHUP (kill -HUP <pid of tryst serve>).

id:     {id}
secret: {secret}

A hidden server parks by sending, and then waiting for `HTTP/1.1 200`:

  CONNECT uuid:{id} HTTP/1.1
  Proxy-Authorization: Tryst ts=<unix seconds>, nonce=<16-64 hex digits>, mac=<mac>

  (then an empty line; every line ends in CRLF)

where mac = unpadded base64url(HMAC-SHA256(key = the 32 secret bytes, message)) and
message = "tryst-proof-v1\npark\n{id}\n<ts>\n<nonce in lower-case hex>"
(\n is a newline byte; no trailing newline). ts must be within 60 s of the relay's
clock and a nonce may be used once.

The park request, ready to pipe into nc (python3, standard library only):

  python3 -c '{python}' > park.txt
  {{ cat park.txt; cat; }} | nc <relay host> 7400
"#,
        path = p.path.display(),
        python = python_park_head(&id, &secret),
    )
}

/// A python3 program (no single quotes, so it fits in `python3 -c '...'`) that prints
/// a fresh park request head for `id` under `secret_b64`.
pub fn python_park_head(id: &str, secret_b64: &str) -> String {
    format!(
        concat!(
            "import base64,hashlib,hmac,os,sys,time;",
            "i=\"{id}\";s=\"{secret}\";k=base64.urlsafe_b64decode(s+\"=\"*(-len(s)%4));",
            "t=str(int(time.time()));n=os.urandom(16).hex();",
            "m=base64.urlsafe_b64encode(hmac.new(k,(\"tryst-proof-v1\\npark\\n\"+i+\"\\n\"+t+\"\\n\"+n).encode(),hashlib.sha256).digest()).decode().rstrip(\"=\");",
            "sys.stdout.write(\"CONNECT uuid:\"+i+\" HTTP/1.1\\r\\nProxy-Authorization: Tryst ts=\"+t+\", nonce=\"+n+\", mac=\"+m+\"\\r\\n\\r\\n\")"
        ),
        id = id,
        secret = secret_b64
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const ID: &str = "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f";
    const SECRET_B64: &str = "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng";

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// True when `s` accepts a park proof for `id` made with `secret` (what a loaded
    /// key is for; HMAC-SHA256 keys that verify each other's MACs are the same key).
    fn accepts(s: &FileSecrets, id: &RendezvousId, secret: &Secret) -> bool {
        use tryst_engine::auth::{Operation, parse_proof, proof_header, verify_keyed};
        const NOW: u64 = 1_700_000_000;
        let header = proof_header(secret, Operation::Park, id, NOW, &[7; 16]);
        let proof = parse_proof(header.as_bytes()).unwrap();
        verify_keyed(s.mac_key(id), Operation::Park, id, &proof, NOW, 60).is_ok()
    }

    #[test]
    fn secrets_encode_and_decode() {
        let bytes = decode_secret(SECRET_B64).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(encode_secret(&bytes), SECRET_B64);
        assert_eq!(decode_secret(&format!("{SECRET_B64}=")).unwrap(), bytes);
        assert_eq!(
            decode_secret("not base64!"),
            Err(SecretProblem::NotBase64Url)
        );
        assert_eq!(decode_secret("q83vEjRWeJA"), Err(SecretProblem::TooShort));
        assert_eq!(
            decode_secret(&"A".repeat(1400)),
            Err(SecretProblem::TooLong)
        );
        // Standard (non-url) alphabet is refused.
        assert_eq!(
            decode_secret("q83v+jRWeJASNFZ4kBI0VniQ/jRW"),
            Err(SecretProblem::NotBase64Url)
        );
    }

    #[test]
    fn rendered_file_has_the_agreed_format() {
        let text = render_entries([(ID, SECRET_B64)]);
        assert_eq!(
            text,
            format!("{HEADER}\n[secrets]\n\"{ID}\" = \"{SECRET_B64}\"\n"),
        );
        // And it is TOML of the shape the loader reads.
        let raw: RawFile = toml::from_str(&text).unwrap();
        assert_eq!(raw.secrets.get(ID).map(String::as_str), Some(SECRET_B64));
        assert_eq!(render_entries([]), format!("{HEADER}\n[secrets]\n"));
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let p = Path::new("/x/secrets.toml");
        let err = parse_secrets("[secrets\n", p).unwrap_err();
        assert!(matches!(err, SecretsError::Syntax { .. }), "{err}");
        assert!(err.to_string().starts_with("/x/secrets.toml: "), "{err}");
        let err = parse_secrets("[other]\n", p).unwrap_err();
        assert!(err.to_string().contains("unknown field `other`"), "{err}");
        let err = parse_secrets(&format!("[secrets]\n\"{ID}\" = \"c2hvcnQ\"\n"), p).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("/x/secrets.toml: secret for `{ID}` is shorter than 16 bytes")
        );
        let err = parse_secrets(&format!("[secrets]\n\"{ID}\" = 5\n"), p).unwrap_err();
        assert!(matches!(err, SecretsError::Syntax { .. }), "{err}");
        assert!(parse_secrets("", p).unwrap().is_empty());
        assert!(parse_secrets("[secrets]\n", p).unwrap().is_empty());
    }

    #[test]
    fn permission_warnings() {
        let p = Path::new("/d/secrets.toml");
        assert_eq!(permission_warning(p, 0o100600), None);
        assert_eq!(permission_warning(p, 0o100400), None);
        let w = permission_warning(p, 0o100644).unwrap();
        assert_eq!(
            w,
            "/d/secrets.toml is accessible by group or others (mode 0644); run `chmod 600 /d/secrets.toml`"
        );
        assert!(permission_warning(p, 0o100660).is_some());
        assert!(permission_warning(p, 0o100602).is_some());
    }

    #[test]
    fn atomic_write_replaces_with_exact_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        write_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(mode_of(&path), 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secrets.toml")]);
    }

    #[test]
    fn atomic_write_failure_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"x").unwrap();
        let err = write_atomic(&path, b"new", 0o600).unwrap_err();
        assert!(matches!(err, SecretsError::Io { .. }), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("taken")],
            "temporary file removed"
        );
    }

    #[test]
    fn private_dir_is_0700() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a").join("tryst");
        create_private_dir(&d).unwrap();
        assert_eq!(mode_of(&d), 0o700);
        create_private_dir(&d).unwrap();
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSecrets::load(&dir.path().join("absent.toml")).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn load_canonicalises_ids() {
        let p = Path::new("s.toml");
        let upper = ID.to_uppercase();
        let map =
            parse_secrets(&format!("[secrets]\n\"{upper}\" = \"{SECRET_B64}\"\n"), p).unwrap();
        let id = RendezvousId::parse(ID).unwrap();
        assert_eq!(
            map.get(&id).map(Secret::expose),
            Some(&decode_secret(SECRET_B64).unwrap()[..])
        );
        let err = parse_secrets(
            &format!("[secrets]\n\"{ID}\" = \"{SECRET_B64}\"\n\"{upper}\" = \"{SECRET_B64}\"\n"),
            p,
        )
        .unwrap_err();
        assert!(matches!(err, SecretsError::DuplicateId { .. }), "{err}");
        let err =
            parse_secrets(&format!("[secrets]\n\"{{{ID}}}\" = \"{SECRET_B64}\"\n"), p).unwrap_err();
        assert!(matches!(err, SecretsError::BadId { .. }), "{err}");
    }

    /// Writes a secrets file of `count` numbered ids at `path`, the first `totp` of them
    /// also with a TOTP record (`options` appended after its `base32`); returns the ids.
    fn write_numbered_ids(path: &Path, count: u32, totp: usize, options: &str) -> Vec<String> {
        let ids: Vec<String> = (0..count)
            .map(|i| format!("{i:08x}-3c4b-4a8e-9d2f-6a1c2b3d4e5f"))
            .collect();
        let mut text = render_entries(ids.iter().map(|id| (id.as_str(), SECRET_B64)));
        text.push_str("\n[totp]\n");
        for id in &ids[..totp] {
            text.push_str(&format!(
                "\"{id}\" = {{ base32 = \"KBFU2TDPM53DOU2GJRFHKYSQJF3GO2KSII3XCNTMG5KW26DNIFWXINSOJZDVOQ3Z\"{options} }}\n"
            ));
        }
        write_atomic(path, text.as_bytes(), 0o600).unwrap();
        ids
    }

    #[test]
    fn a_worker_share_keeps_exactly_the_ids_its_worker_owns() {
        use tryst_engine::target::Placement;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        let ids = write_numbered_ids(&path, 200, 50, "");
        let placement = Placement::new(4, [7; 16]);
        let mut seen_secrets = 0;
        let mut seen_totp = 0;
        for index in 0..4 {
            let share = WorkerShare::new(index, placement);
            let mut loaded = FileSecrets::load_share(&path, share).unwrap();
            for _ in 0..2 {
                for id in &ids {
                    let id = RendezvousId::parse(id).unwrap();
                    let owned = RendezvousKey::from(id).owner(&placement) == index;
                    assert_eq!(loaded.mac_key(&id).is_some(), owned, "{id:?} on {index}");
                    assert!(loaded.totp(&id).is_none() || owned, "{id:?} on {index}");
                }
                assert!(loaded.len() < ids.len(), "worker {index} kept every id");
                // A reload keeps the same share.
                loaded.reload().unwrap();
            }
            seen_secrets += loaded.len();
            seen_totp += loaded.totp_len();
        }
        assert_eq!(
            seen_secrets,
            ids.len(),
            "each id kept by exactly one worker"
        );
        assert_eq!(seen_totp, 50, "each TOTP id kept by exactly one worker");
        let all = FileSecrets::load(&path).unwrap();
        assert_eq!((all.len(), all.totp_len()), (200, 50));

        // Ids a worker does not keep are still checked.
        let bad = render_entries(ids.iter().map(|id| (id.as_str(), "c2hvcnQ")));
        write_atomic(&path, bad.as_bytes(), 0o600).unwrap();
        for index in 0..4 {
            let share = WorkerShare::new(index, placement);
            assert!(matches!(
                FileSecrets::load_share(&path, share),
                Err(SecretsError::BadSecret { .. })
            ));
        }
    }

    #[test]
    fn the_supervisor_s_shares_hold_what_each_worker_would_load_itself() {
        use tryst_engine::target::Placement;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        let ids = write_numbered_ids(
            &path,
            100,
            30,
            ", step = 60, parking = \"queue\", issuer = \"a \\\"b\\\"\"",
        );
        let file = load_file(&path).unwrap();
        let placement = Placement::new(3, [9; 16]);
        let shares: Vec<WorkerShare> = (0..3).map(|i| WorkerShare::new(i, placement)).collect();
        let rendered = render_shares(&file, &shares);
        assert_eq!(rendered.len(), 3);
        let mut kept = 0;
        for (index, (&share, rendered)) in shares.iter().zip(&rendered).enumerate() {
            let own = parse_file(rendered, &path).unwrap();
            let itself =
                load_file_keeping(&path, |id| share.owns(&RendezvousKey::from(*id))).unwrap();
            assert_eq!(own, itself, "worker {index}");
            kept += own.secrets.len();
            let prepared = ShareFile::from_bytes(rendered.as_bytes()).unwrap();
            let mut loaded = FileSecrets::from_supervisor(&path, share, prepared).unwrap();
            assert_eq!(loaded.len(), own.secrets.len());
            assert_eq!(loaded.totp_len(), own.totp.len());
            // A reload reads the supervisor's share, never the file (gone here).
            fs::rename(&path, dir.path().join("moved.toml")).unwrap();
            loaded.reload().unwrap();
            assert_eq!(loaded.len(), own.secrets.len());
            fs::rename(dir.path().join("moved.toml"), &path).unwrap();
        }
        assert_eq!(kept, ids.len(), "each id in exactly one share");
        // A share that is not a secrets file is refused naming the file.
        let garbage = ShareFile::from_bytes(b"\xff\xfe").unwrap();
        let err = FileSecrets::from_supervisor(&path, WorkerShare::everything(), garbage)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{}: ", path.display())), "{err}");
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let p = provision(&path, &ID.to_uppercase(), false, &mut rng).unwrap();
        assert!(!p.replaced);
        assert_eq!(p.id.to_string(), ID);
        assert_eq!(p.secret.expose().len(), SECRET_LEN);
        assert_eq!(mode_of(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            render_entries([(ID, encode_secret(p.secret.expose()).as_str())])
        );
        let loaded = FileSecrets::load(&path).unwrap();
        assert_eq!(loaded.len(), 1);
        assert!(accepts(&loaded, &p.id, &p.secret));
        assert!(!accepts(&loaded, &p.id, &Secret::new(vec![0; SECRET_LEN])));
    }

    #[test]
    fn provision_refuses_duplicates_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("secrets.toml");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let first = provision(&path, ID, false, &mut rng).unwrap();
        assert_eq!(mode_of(path.parent().unwrap()), 0o700);
        let err = provision(&path, ID, false, &mut rng).unwrap_err();
        assert!(
            matches!(err, SecretsError::AlreadyProvisioned { .. }),
            "{err}"
        );
        assert!(accepts(
            &FileSecrets::load(&path).unwrap(),
            &first.id,
            &first.secret
        ));
        let second = provision(&path, ID, true, &mut rng).unwrap();
        assert!(second.replaced);
        assert_ne!(second.secret, first.secret);
        let loaded = FileSecrets::load(&path).unwrap();
        assert!(accepts(&loaded, &first.id, &second.secret));
        assert!(!accepts(&loaded, &first.id, &first.secret));
        let other = "11111111-2222-4333-8444-555555555555";
        provision(&path, other, false, &mut rng).unwrap();
        assert_eq!(FileSecrets::load(&path).unwrap().len(), 2);
        let err = provision(&path, "not-a-uuid", false, &mut rng).unwrap_err();
        assert!(matches!(err, SecretsError::BadArgument(_)), "{err}");
    }

    #[test]
    fn reload_picks_up_changes_and_keeps_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        let id = RendezvousId::parse(ID).unwrap();
        write_atomic(&path, render_entries([(ID, SECRET_B64)]).as_bytes(), 0o600).unwrap();
        let mut s = FileSecrets::load(&path).unwrap();
        let old = Secret::new(decode_secret(SECRET_B64).unwrap());
        assert!(accepts(&s, &id, &old));

        fs::write(&path, "[secrets]\n\"garbage\n").unwrap();
        let err = s.reload().unwrap_err().to_string();
        assert!(err.contains("secrets.toml"), "{err}");
        assert!(
            accepts(&s, &id, &old),
            "old secrets kept after a failed reload"
        );

        let other = "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0VnA";
        write_atomic(&path, render_entries([(ID, other)]).as_bytes(), 0o600).unwrap();
        s.reload().unwrap();
        assert!(accepts(
            &s,
            &id,
            &Secret::new(decode_secret(other).unwrap())
        ));
        assert!(!accepts(&s, &id, &old), "the old secret no longer verifies");

        fs::remove_file(&path).unwrap();
        s.reload().unwrap();
        assert!(s.is_empty(), "a removed file revokes every id");
    }

    #[test]
    fn instructions_contain_what_the_hidden_server_needs() {
        let p = Provisioned {
            id: RendezvousId::parse(ID).unwrap(),
            secret: Secret::new(decode_secret(SECRET_B64).unwrap()),
            path: PathBuf::from("/d/secrets.toml"),
            replaced: false,
        };
        let text = provision_instructions(&p);
        assert!(text.contains(&format!("id:     {ID}\n")), "{text}");
        assert!(text.contains(&format!("secret: {SECRET_B64}\n")), "{text}");
        assert!(
            text.contains("Proxy-Authorization: Tryst ts=<unix seconds>, nonce="),
            "{text}"
        );
        assert!(text.contains(&format!(
            "python3 -c '{}'",
            python_park_head(ID, SECRET_B64)
        )));
    }

    #[test]
    fn python_recipe_fits_in_single_quotes() {
        let py = python_park_head(ID, SECRET_B64);
        assert!(!py.contains('\''), "{py}");
        assert!(py.contains(&format!("i=\"{ID}\"")));
        assert!(py.contains("tryst-proof-v1\\npark\\n"));
    }
}
