//! Time-based one-time passwords (RFC 6238, HMAC-SHA1) as node-rendezvous checks them.
//!
//! node-rendezvous verifies a hidden server's `?response=<TOKEN>` with speakeasy 1.0.x:
//! HMAC-SHA1 over the big-endian counter `floor(now / step)` (T0 = 0), RFC 4226 dynamic
//! truncation to a 31-bit value, then the **last N characters of that value's decimal
//! string**, where N is the length of the token the client sent. speakeasy neither
//! zero-pads nor reduces modulo `10^N`, so:
//! - when the decimal string has at least N characters the code equals the RFC 6238
//!   `value % 10^N`, zero-padded (the common case, and the only one for N <= 6 unless
//!   the value is below 100000);
//! - when it is shorter (value < 10^(N-1)), speakeasy's code is shorter than N characters
//!   and no N-character token can ever match it. An RFC generator (oathtool, pyotp)
//!   sends the zero-padded form there; tryst accepts that form (see [`verify`]), so the
//!   accepted set is speakeasy's plus those rare RFC codes, and every accepted token is
//!   an RFC 6238 code for the secret;
//! - a "length 40" code is really the whole 9-10 digit value (`2122594051` in the
//!   speakeasy vector), and a token longer than 10 digits never matches.
//!
//! Differences from node-rendezvous, all deliberate:
//! - tokens shorter than [`MIN_DIGITS`] or with non-digits are refused at once (upstream
//!   leaves such a CONNECT hanging because of a callback bug);
//! - a skew of `±skew` steps can be allowed ([`verify`]); the default, like upstream, is 0
//!   (the current step only);
//! - the comparison is constant-time.
//!
//! **A code may be reused within its step.** Nothing remembers accepted codes: steward
//! re-parks right after every pairing, usually within the same 30 s step and therefore
//! with the same code, and upstream accepts that. The code proves knowledge of the secret
//! within the step; replaying it within the step only lets an eavesdropper (who would
//! already have to break TLS) park as the hidden server, which upstream also allows.
//!
//! speakeasy hashes the base32-decoded secret as a UTF-8 string; for the ASCII secrets
//! node-rendezvous provisions that is the same bytes, which is what is used here.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Shortest token accepted (node-rendezvous's guard).
pub const MIN_DIGITS: usize = 6;
/// Longest token that can match: a 31-bit value has at most 10 decimal digits.
pub const MAX_DIGITS: usize = 10;
/// The default step, seconds.
pub const DEFAULT_STEP: u64 = 30;
/// Longest secret accepted, bytes (speakeasy keys are 20-64 ASCII characters).
pub const MAX_SECRET_LEN: usize = 1024;

/// The HMAC of a TOTP record. Only SHA-1 exists in node-rendezvous (its records say
/// `"algorithm":"sha1"`); anything else is refused when the record is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TotpAlgorithm {
    /// HMAC-SHA1.
    #[default]
    Sha1,
}

impl TotpAlgorithm {
    /// Parses an algorithm name (`sha1`, any case).
    pub fn parse(name: &str) -> Result<Self, TotpError> {
        if name.eq_ignore_ascii_case("sha1") {
            Ok(Self::Sha1)
        } else {
            Err(TotpError::UnsupportedAlgorithm)
        }
    }

    /// The name as records spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
        }
    }
}

/// How a newer park treats connections parked under the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpParking {
    /// tryst's FIFO: join the queue.
    Queue,
    /// node-rendezvous: the newer connection replaces the older ones.
    Replace,
}

impl TotpParking {
    /// Parses `queue` or `replace`.
    pub fn parse(text: &str) -> Result<Self, TotpError> {
        match text {
            "queue" => Ok(Self::Queue),
            "replace" => Ok(Self::Replace),
            _ => Err(TotpError::BadParking),
        }
    }

    /// The name as the secrets file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Replace => "replace",
        }
    }
}

/// Why a TOTP record or token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TotpError {
    /// The token has fewer than [`MIN_DIGITS`] characters.
    #[error("token shorter than 6 digits")]
    TooShort,
    /// The token has a character other than an ASCII digit.
    #[error("token is not all digits")]
    NotDigits,
    /// No code in the accepted window equals the token (including tokens over 10 digits).
    #[error("token does not match")]
    Mismatch,
    /// The secret is not RFC 4648 base32.
    #[error("secret is not base32")]
    BadBase32,
    /// The secret is empty or longer than [`MAX_SECRET_LEN`] bytes.
    #[error("secret is empty or longer than 1024 bytes")]
    BadSecretLength,
    /// A step of zero seconds.
    #[error("step must be at least one second")]
    BadStep,
    /// An algorithm other than sha1.
    #[error("only the sha1 algorithm is supported")]
    UnsupportedAlgorithm,
    /// A parking mode other than `queue` or `replace`.
    #[error("parking must be `queue` or `replace`")]
    BadParking,
}

/// One id's TOTP settings.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpRecord {
    secret: Vec<u8>,
    step: u64,
    algorithm: TotpAlgorithm,
    parking: Option<TotpParking>,
}

impl std::fmt::Debug for TotpRecord {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("secret", &"<redacted>")
            .field("step", &self.step)
            .field("algorithm", &self.algorithm)
            .field("parking", &self.parking)
            .finish()
    }
}

impl TotpRecord {
    /// A record over raw secret bytes. Refuses an empty or over-long secret and a zero step.
    pub fn new(
        secret: Vec<u8>,
        step: u64,
        algorithm: TotpAlgorithm,
        parking: Option<TotpParking>,
    ) -> Result<Self, TotpError> {
        if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
            return Err(TotpError::BadSecretLength);
        }
        if step == 0 {
            return Err(TotpError::BadStep);
        }
        Ok(Self {
            secret,
            step,
            algorithm,
            parking,
        })
    }

    /// A record from a base32 secret (see [`decode_base32`]).
    pub fn from_base32(
        base32: &str,
        step: u64,
        algorithm: TotpAlgorithm,
        parking: Option<TotpParking>,
    ) -> Result<Self, TotpError> {
        Self::new(decode_base32(base32)?, step, algorithm, parking)
    }

    /// The secret bytes.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The secret as unpadded upper-case base32.
    pub fn base32(&self) -> String {
        encode_base32(&self.secret)
    }

    /// The step, seconds.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The HMAC.
    pub fn algorithm(&self) -> TotpAlgorithm {
        self.algorithm
    }

    /// The per-id parking override, if any.
    pub fn parking(&self) -> Option<TotpParking> {
        self.parking
    }
}

/// Decodes RFC 4648 base32: any letter case, `=` padding optional, spaces and hyphens
/// (as people type secrets) ignored. At most `2 * MAX_SECRET_LEN` characters are read.
pub fn decode_base32(text: &str) -> Result<Vec<u8>, TotpError> {
    if text.len() > 2 * MAX_SECRET_LEN {
        return Err(TotpError::BadSecretLength);
    }
    let mut clean: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'-'))
        .map(|b| b.to_ascii_uppercase())
        .collect();
    while clean.last() == Some(&b'=') {
        clean.pop();
    }
    data_encoding::BASE32_NOPAD
        .decode(&clean)
        .map_err(|_| TotpError::BadBase32)
}

/// Encodes bytes as unpadded upper-case base32 (what authenticator apps read).
pub fn encode_base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// The RFC 4226 dynamic truncation of HMAC-SHA1(secret, counter): a 31-bit value.
pub fn truncated_value(secret: &[u8], counter: u64) -> u32 {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return 0;
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let word = [
        digest[offset],
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ];
    u32::from_be_bytes(word) & 0x7fff_ffff
}

/// speakeasy's code: the last `length` characters of `value`'s decimal string, or the
/// whole string when it is not longer than `length` (no zero padding).
pub fn speakeasy_code(value: u32, length: usize) -> String {
    let text = value.to_string();
    let skip = text.len().saturating_sub(length);
    text.get(skip..).unwrap_or_default().to_owned()
}

/// The RFC 6238 code: `value % 10^digits`, zero-padded to `digits` (1..=10; 10 digits is
/// the whole value, zero-padded).
pub fn rfc_code(value: u32, digits: usize) -> String {
    let digits = digits.clamp(1, MAX_DIGITS);
    let modulus = 10u64.pow(digits as u32);
    format!("{:0digits$}", u64::from(value) % modulus)
}

/// The counter for `now_unix` under `step` (T0 = 0). `step` 0 is treated as 1.
pub fn counter_at(now_unix: u64, step: u64) -> u64 {
    now_unix / step.max(1)
}

/// The token an RFC 6238 generator (oathtool, pyotp) produces for `record` at `now_unix`.
pub fn generate(record: &TotpRecord, now_unix: u64, digits: usize) -> String {
    let value = truncated_value(&record.secret, counter_at(now_unix, record.step));
    rfc_code(value, digits)
}

/// Checks a hidden server's token against `record` at `now_unix`, accepting the current
/// step and `skew` steps either side (node-rendezvous: `skew = 0`).
///
/// The digit count is the token's length. Tokens shorter than [`MIN_DIGITS`] or with a
/// non-digit are refused before any HMAC; tokens longer than [`MAX_DIGITS`] can never
/// match and are refused as [`TotpError::Mismatch`]. For each step in the window the
/// token is compared, in constant time, with the RFC 6238 code of that length, which is
/// speakeasy's code whenever that has the token's length (see the module docs). Every
/// step in the window is computed, match or not. `skew` is capped at 10 steps.
pub fn verify(
    record: &TotpRecord,
    token: &[u8],
    now_unix: u64,
    skew: u64,
) -> Result<(), TotpError> {
    if token.len() < MIN_DIGITS {
        return Err(TotpError::TooShort);
    }
    if !token.iter().all(u8::is_ascii_digit) {
        return Err(TotpError::NotDigits);
    }
    if token.len() > MAX_DIGITS {
        return Err(TotpError::Mismatch);
    }
    let skew = skew.min(10);
    let current = counter_at(now_unix, record.step);
    let mut matched = subtle::Choice::from(0u8);
    for counter in current.saturating_sub(skew)..=current.saturating_add(skew) {
        let value = truncated_value(&record.secret, counter);
        let code = rfc_code(value, token.len());
        matched |= code.as_bytes().ct_eq(token);
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(TotpError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B: the SHA-1 seed.
    const RFC_SECRET: &[u8] = b"12345678901234567890";
    /// The node-rendezvous example secret (base32 of a 40-character speakeasy key).
    const NODE_KEY: &str = "PKMLogv7SFLJubPIvgiRB7q6l7UmxmAmt6NNGWCy";

    fn rfc_record(step: u64) -> TotpRecord {
        TotpRecord::new(RFC_SECRET.to_vec(), step, TotpAlgorithm::Sha1, None).unwrap()
    }

    fn node_record() -> TotpRecord {
        let b32 = encode_base32(NODE_KEY.as_bytes());
        TotpRecord::from_base32(&b32, 30, TotpAlgorithm::Sha1, None).unwrap()
    }

    #[test]
    fn rfc_6238_sha1_vectors() {
        let r = rfc_record(30);
        for (t, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(generate(&r, t, 8), code, "t={t}");
            assert_eq!(verify(&r, code.as_bytes(), t, 0), Ok(()), "t={t}");
            // The 6-digit code is the tail of the 8-digit one.
            assert_eq!(verify(&r, &code.as_bytes()[2..], t, 0), Ok(()), "t={t}");
        }
    }

    #[test]
    fn rfc_4226_truncation_vectors() {
        // RFC 4226 appendix D: truncated decimal values for counters 0..3.
        let want = [1_284_755_224u32, 1_094_287_082, 137_359_152, 1_726_969_429];
        for (c, v) in want.iter().enumerate() {
            assert_eq!(truncated_value(RFC_SECRET, c as u64), *v, "counter {c}");
        }
        assert_eq!(rfc_code(1_284_755_224, 6), "755224");
    }

    #[test]
    fn speakeasy_long_token_vector() {
        let r = node_record();
        let value = truncated_value(r.secret(), counter_at(1_400_000_000, 30));
        assert_eq!(value, 2_122_594_051);
        assert_eq!(speakeasy_code(value, 6), "594051");
        assert_eq!(speakeasy_code(value, 40), "2122594051");
        assert_eq!(verify(&r, b"594051", 1_400_000_000, 0), Ok(()));
        assert_eq!(verify(&r, b"2122594051", 1_400_000_000, 0), Ok(()));
        assert_eq!(verify(&r, b"22594051", 1_400_000_000, 0), Ok(()));
        // Longer than the value's digits: speakeasy's code stays 10 digits; no match.
        assert_eq!(
            verify(&r, b"02122594051", 1_400_000_000, 0),
            Err(TotpError::Mismatch)
        );
        assert_eq!(
            verify(&r, &[b'1'; 40], 1_400_000_000, 0),
            Err(TotpError::Mismatch)
        );
    }

    #[test]
    fn short_values_speakeasy_and_rfc_forms() {
        assert_eq!(speakeasy_code(12_345, 6), "12345");
        assert_eq!(rfc_code(12_345, 6), "012345");
        assert_eq!(speakeasy_code(1_000_123, 6), "000123");
        assert_eq!(rfc_code(1_000_123, 6), "000123");
        assert_eq!(rfc_code(2_122_594_051, 10), "2122594051");
        assert_eq!(rfc_code(7, 10), "0000000007");
    }

    #[test]
    fn short_and_non_digit_tokens_are_refused_before_any_hmac() {
        let r = rfc_record(30);
        assert_eq!(verify(&r, b"87082", 59, 0), Err(TotpError::TooShort));
        assert_eq!(verify(&r, b"", 59, 0), Err(TotpError::TooShort));
        assert_eq!(verify(&r, b"28708a", 59, 0), Err(TotpError::NotDigits));
        assert_eq!(verify(&r, b" 287082", 59, 0), Err(TotpError::NotDigits));
        assert_eq!(
            verify(&r, "２８７０８２".as_bytes(), 59, 0),
            Err(TotpError::NotDigits)
        );
    }

    #[test]
    fn window_edges_and_skew() {
        let r = rfc_record(30);
        // Code for counter 1 (t = 30..=59).
        let code = generate(&r, 45, 6);
        assert_eq!(verify(&r, code.as_bytes(), 30, 0), Ok(()));
        assert_eq!(verify(&r, code.as_bytes(), 59, 0), Ok(()));
        assert_eq!(verify(&r, code.as_bytes(), 29, 0), Err(TotpError::Mismatch));
        assert_eq!(verify(&r, code.as_bytes(), 60, 0), Err(TotpError::Mismatch));
        // One step of skew accepts the neighbours, not two steps away.
        assert_eq!(verify(&r, code.as_bytes(), 29, 1), Ok(()));
        assert_eq!(verify(&r, code.as_bytes(), 89, 1), Ok(()));
        assert_eq!(verify(&r, code.as_bytes(), 90, 1), Err(TotpError::Mismatch));
        // Counter 0 with skew does not underflow.
        let zero = generate(&r, 0, 6);
        assert_eq!(verify(&r, zero.as_bytes(), 0, 1), Ok(()));
        assert_eq!(
            verify(&r, zero.as_bytes(), u64::MAX, 10),
            Err(TotpError::Mismatch)
        );
        // The same code verifies again within its step (no reuse tracking).
        assert_eq!(verify(&r, code.as_bytes(), 31, 0), Ok(()));
    }

    #[test]
    fn per_record_step() {
        let r60 = rfc_record(60);
        // Counter 1 under a 60 s step covers t = 60..=119.
        let code = generate(&r60, 60, 6);
        assert_eq!(code, rfc_code(truncated_value(RFC_SECRET, 1), 6));
        assert_eq!(verify(&r60, code.as_bytes(), 119, 0), Ok(()));
        assert_eq!(
            verify(&r60, code.as_bytes(), 120, 0),
            Err(TotpError::Mismatch)
        );
        assert_eq!(counter_at(10, 0), 10, "step 0 is treated as 1");
    }

    #[test]
    fn base32_is_case_insensitive_with_optional_padding() {
        let key = NODE_KEY.as_bytes();
        let upper = encode_base32(key);
        assert_eq!(decode_base32(&upper).unwrap(), key);
        assert_eq!(decode_base32(&upper.to_lowercase()).unwrap(), key);
        assert_eq!(decode_base32("MZXW6===").unwrap(), b"foo");
        assert_eq!(decode_base32("mzxw6").unwrap(), b"foo");
        assert_eq!(decode_base32("MZXW 6").unwrap(), b"foo");
        assert_eq!(decode_base32("MZXW1"), Err(TotpError::BadBase32));
        assert_eq!(decode_base32("M"), Err(TotpError::BadBase32));
        assert_eq!(
            decode_base32(&"A".repeat(5000)),
            Err(TotpError::BadSecretLength)
        );
        assert_eq!(
            TotpRecord::from_base32("", 30, TotpAlgorithm::Sha1, None),
            Err(TotpError::BadSecretLength)
        );
    }

    #[test]
    fn record_validation() {
        assert_eq!(
            TotpRecord::new(b"k".to_vec(), 0, TotpAlgorithm::Sha1, None),
            Err(TotpError::BadStep)
        );
        assert_eq!(TotpAlgorithm::parse("SHA1"), Ok(TotpAlgorithm::Sha1));
        assert_eq!(
            TotpAlgorithm::parse("sha256"),
            Err(TotpError::UnsupportedAlgorithm)
        );
        assert_eq!(TotpParking::parse("replace"), Ok(TotpParking::Replace));
        assert_eq!(TotpParking::parse("fifo"), Err(TotpError::BadParking));
        let r = node_record();
        assert!(!format!("{r:?}").contains("PKM"), "secret not printed");
        assert_eq!(decode_base32(&r.base32()).unwrap(), NODE_KEY.as_bytes());
    }
}
