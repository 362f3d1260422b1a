//! The Qredo-style `tag:` family, publisher side: the tag KDF (the tag never reaches the
//! relay, only its hashed tag), the park request with its Ed25519 ownership proof and
//! signed creation options, and the pairing frames a publisher reads (hello) and writes
//! (challenge answer). The relay's verifiers (`tryst_relay::tag`) use the same message
//! builders, so the signed bytes cannot drift.
//!
//! Exact formats: see `docs/compat/qredo.md` and `tryst_relay::tag::wire`.
//!
//! ```text
//! master    = PBKDF2-HMAC-SHA256(password = UTF-8(appId ‖ tag),
//!                                salt = "8YhZWIxieGYyW07D", iterations = 10000, dkLen = 32)
//! hashedTag = HKDF-SHA256(ikm = master, salt = "tAMJb4bJd60ufzHS", info = "", L = 32)
//! ownership = Ed25519 keypair whose 32-byte seed is hashedTag (as the Qredo SDK does)
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;

/// PBKDF2 salt of the Qredo master key.
pub const MASTER_SALT: &[u8] = b"8YhZWIxieGYyW07D";
/// PBKDF2 iterations of the Qredo master key.
pub const MASTER_ITERATIONS: u32 = 10_000;
/// HKDF salt of the hashed tag.
pub const HASHED_TAG_SALT: &[u8] = b"tAMJb4bJd60ufzHS";

/// The 32-byte hashed tag: the only form of a tag the relay sees.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashedTag(pub [u8; 32]);

impl HashedTag {
    /// Lower-case hex (64 digits): the form in a `tag:` target.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The `CONNECT` target naming this tag (`tag:<64 hex>`).
    pub fn target(&self) -> String {
        format!("tag:{}", self.to_hex())
    }

    /// The Qredo-derived ownership key: Ed25519 with seed = hashed tag.
    pub fn derived_signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.0)
    }

    /// The public half of [`Self::derived_signing_key`].
    pub fn derived_public_key(&self) -> VerifyingKey {
        self.derived_signing_key().verifying_key()
    }
}

impl std::fmt::Debug for HashedTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashedTag({})", self.to_hex())
    }
}

/// The Qredo master key of `app_id ‖ tag` (PBKDF2-HMAC-SHA256, 10 000 iterations).
pub fn master_key(app_id: &str, tag: &str) -> [u8; 32] {
    let mut password = Vec::with_capacity(app_id.len() + tag.len());
    password.extend_from_slice(app_id.as_bytes());
    password.extend_from_slice(tag.as_bytes());
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(&password, MASTER_SALT, MASTER_ITERATIONS, &mut out);
    out
}

/// The hashed tag of `tag` under `app_id` (empty for none), exactly as the Qredo SDK
/// computes it.
pub fn hashed_tag(app_id: &str, tag: &str) -> HashedTag {
    HashedTag(hkdf_32(&master_key(app_id, tag), HASHED_TAG_SALT))
}

/// HKDF-SHA256 with empty info and 32 output bytes.
fn hkdf_32(ikm: &[u8], salt: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 255 * 32 limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(salt), ikm).expand(&[], &mut out);
    out
}

/// Domain separation prefix of the park message.
pub const PARK_CONTEXT: &[u8] = b"tryst-tag-park-v1\0";
/// Domain separation prefix of the challenge answer.
pub const CHALLENGE_CONTEXT: &[u8] = b"tryst-tag-challenge-v1\0";
/// Magic of the responder hello frame.
pub const HELLO_MAGIC: &[u8; 8] = b"TAGHELLO";
/// Version byte of the responder hello frame.
pub const HELLO_VERSION: u8 = 1;
/// Magic of the challenge answer frame.
pub const ANSWER_MAGIC: &[u8; 8] = b"TAGPROOF";
/// Length of a challenge answer frame.
pub const ANSWER_LEN: usize = 8 + 64;
/// Nonce bytes accepted in a park proof.
pub const NONCE_BYTES: std::ops::RangeInclusive<usize> = 16..=32;
/// Challenge bytes accepted from a responder.
pub const CHALLENGE_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// How a tag serves responders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagMode {
    /// The first responder routed un-publishes the tag; one parked connection.
    SingleShot,
    /// Every responder gets its own tunnel; several parked connections.
    LongTerm,
}

impl TagMode {
    /// The byte signed in the park message.
    pub fn wire_byte(self) -> u8 {
        match self {
            Self::SingleShot => 1,
            Self::LongTerm => 2,
        }
    }

    /// The header spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SingleShot => "single-shot",
            Self::LongTerm => "long-term",
        }
    }
}

/// Creation options a park may carry (all optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateOptions {
    /// `Tag-Mode`.
    pub mode: Option<TagMode>,
    /// `Tag-Duration` in seconds (>= 1), as requested (before the relay's cap).
    pub duration_secs: Option<u64>,
    /// `Tag-Owner-Key`: the key to register instead of the derived one.
    pub owner_key: Option<VerifyingKey>,
}

/// The message a park proof signs (see the module docs).
pub fn park_message(tag: &HashedTag, ts: u64, nonce: &[u8], options: &CreateOptions) -> Vec<u8> {
    let mut m = Vec::with_capacity(PARK_CONTEXT.len() + 32 + 8 + 1 + nonce.len() + 1 + 8 + 32);
    m.extend_from_slice(PARK_CONTEXT);
    m.extend_from_slice(&tag.0);
    m.extend_from_slice(&ts.to_be_bytes());
    // Parsed nonces are at most 32 bytes; longer ones (direct callers) are clamped so the
    // length byte stays truthful about what follows.
    let nonce = &nonce[..nonce.len().min(usize::from(u8::MAX))];
    m.push(nonce.len() as u8);
    m.extend_from_slice(nonce);
    m.push(options.mode.map_or(0, TagMode::wire_byte));
    m.extend_from_slice(&options.duration_secs.unwrap_or(0).to_be_bytes());
    m.extend_from_slice(
        options
            .owner_key
            .as_ref()
            .map_or(&[0u8; 32], |k| k.as_bytes()),
    );
    m
}

/// Builds the request head of a park (a publisher's side; used by tests, docs and the
/// CLI): target, proof signed by `key`, and the given creation options.
pub fn park_request(
    tag: &HashedTag,
    key: &SigningKey,
    ts: u64,
    nonce: &[u8],
    options: &CreateOptions,
) -> String {
    let sig = key.sign(&park_message(tag, ts, nonce, options));
    let mut head = format!(
        "CONNECT {} HTTP/1.1\r\nProxy-Authorization: Tag ts={ts}, nonce={}, sig={}\r\n",
        tag.target(),
        hex::encode(nonce),
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    );
    if let Some(mode) = options.mode {
        head.push_str(&format!("Tag-Mode: {}\r\n", mode.as_str()));
    }
    if let Some(d) = options.duration_secs {
        head.push_str(&format!("Tag-Duration: {d}\r\n"));
    }
    if let Some(k) = options.owner_key {
        head.push_str(&format!(
            "Tag-Owner-Key: {}\r\n",
            URL_SAFE_NO_PAD.encode(k.as_bytes())
        ));
    }
    head.push_str("\r\n");
    head
}

/// The hello frame the relay writes to the publisher at pairing.
pub fn hello_frame(challenge: Option<&[u8]>) -> Vec<u8> {
    let challenge = challenge.unwrap_or_default();
    let challenge = &challenge[..challenge.len().min(*CHALLENGE_BYTES.end())];
    let mut f = Vec::with_capacity(10 + challenge.len());
    f.extend_from_slice(HELLO_MAGIC);
    f.push(HELLO_VERSION);
    f.push(challenge.len() as u8);
    f.extend_from_slice(challenge);
    f
}

/// Why a hello frame could not be read (a publisher-side helper).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// More bytes are needed.
    #[error("incomplete frame")]
    Incomplete,
    /// Not a frame of this version.
    #[error("not a tag frame")]
    Invalid,
}

/// Parses a hello frame at the start of `buf`: the challenge (empty when none) and the
/// frame's length.
pub fn parse_hello(buf: &[u8]) -> Result<(Vec<u8>, usize), FrameError> {
    if buf.len() < 10 {
        return if buf.iter().zip(HELLO_MAGIC).all(|(a, b)| a == b) {
            Err(FrameError::Incomplete)
        } else {
            Err(FrameError::Invalid)
        };
    }
    if &buf[..8] != HELLO_MAGIC || buf[8] != HELLO_VERSION {
        return Err(FrameError::Invalid);
    }
    let len = usize::from(buf[9]);
    if len != 0 && !CHALLENGE_BYTES.contains(&len) {
        return Err(FrameError::Invalid);
    }
    let challenge = buf.get(10..10 + len).ok_or(FrameError::Incomplete)?;
    Ok((challenge.to_vec(), 10 + len))
}

/// A responder's reach head: `CONNECT tag:<hashed> HTTP/1.1`, with a `Tag-Challenge`
/// header (hex, [`CHALLENGE_BYTES`] long) when the responder checks the publisher's
/// identity key; the publisher then answers with [`answer_frame`] before any data.
pub fn reach_head(tag: &HashedTag, challenge: Option<&[u8]>) -> String {
    match challenge {
        Some(c) => format!(
            "CONNECT {} HTTP/1.1\r\nTag-Challenge: {}\r\n\r\n",
            tag.target(),
            hex::encode(c)
        ),
        None => format!("CONNECT {} HTTP/1.1\r\n\r\n", tag.target()),
    }
}

/// The message a challenge answer signs.
pub fn challenge_message(tag: &HashedTag, challenge: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHALLENGE_CONTEXT.len() + 32 + challenge.len());
    m.extend_from_slice(CHALLENGE_CONTEXT);
    m.extend_from_slice(&tag.0);
    m.extend_from_slice(challenge);
    m
}

/// The publisher's answer frame to `challenge`, signed with its identity key.
pub fn answer_frame(key: &SigningKey, tag: &HashedTag, challenge: &[u8]) -> [u8; ANSWER_LEN] {
    let sig = key.sign(&challenge_message(tag, challenge));
    let mut f = [0u8; ANSWER_LEN];
    f[..8].copy_from_slice(ANSWER_MAGIC);
    f[8..].copy_from_slice(&sig.to_bytes());
    f
}
