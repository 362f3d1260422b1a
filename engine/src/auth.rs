//! The native park proof: HMAC-SHA256 over a domain-separated message, a time window and
//! a bounded replay cache that fails closed.
//!
//! Header: `Proxy-Authorization: Tryst ts=<unix seconds>, nonce=<hex>, mac=<base64url>`.
//!
//! Message (bytes, `\n`-separated, no trailing newline):
//! `tryst-proof-v1\n<operation>\n<canonical id>\n<ts>\n<nonce lower-case hex>`, where
//! `<operation>` is `park`. The MAC is HMAC-SHA256 under the id's secret, sent as unpadded
//! base64url (43 characters). Nonces are 16 to 64 hex digits (8 to 32 bytes).
//!
//! Check order: parse, secret lookup, time window, MAC (constant time), replay cache.
//! The replay cache is consulted only after the MAC verified, so nobody without the
//! secret can fill it.

use crate::target::RendezvousId;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::core_api::CoreWrapper;
use hmac::{Hmac, HmacCore, Mac};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::LazyLock;

type HmacSha256 = Hmac<Sha256>;

/// Domain-separation prefix, the first line of every signed message.
const MESSAGE_PREFIX: &[u8] = b"tryst-proof-v1\n";
/// Longest `Proxy-Authorization` value [`parse_proof`] looks at.
pub const MAX_PROOF_VALUE_LEN: usize = 512;
/// Fewest nonce bytes (16 hex digits).
pub const MIN_NONCE_BYTES: usize = 8;
/// Most nonce bytes (64 hex digits).
pub const MAX_NONCE_BYTES: usize = 32;
/// Most decimal digits accepted in `ts=` (`u64::MAX` has 20).
const MAX_TS_DIGITS: usize = 20;
/// Length of the unpadded base64url MAC.
const MAC_B64_LEN: usize = 43;
/// Key of the MAC computed for unknown ids, so their refusal costs the same time as a
/// wrong MAC for a known id. Its value does not matter; the result is always refused.
const DUMMY_KEY: [u8; 32] = [0x5a; 32];

/// Longest secret kept inline in a [`Secret`] (what `tryst provision` makes: 32 bytes).
const INLINE_SECRET: usize = 32;

/// A per-id shared secret. Its `Debug` never prints the bytes.
///
/// Up to 32 bytes (`INLINE_SECRET`) are held inline, so a table of secrets (one per
/// provisioned id, in every worker's share of the secrets file) is one allocation with
/// no second one per id: a million ids used to add a million 32-byte heap blocks, which
/// also kept the heap pages of the file's parse resident around them.
#[derive(Clone)]
pub struct Secret(SecretBytes);

#[derive(Clone)]
enum SecretBytes {
    Inline { len: u8, bytes: [u8; INLINE_SECRET] },
    Boxed(Box<[u8]>),
}

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE_SECRET => {
                let mut inline = [0u8; INLINE_SECRET];
                inline[..bytes.len()].copy_from_slice(&bytes);
                Self(SecretBytes::Inline { len, bytes: inline })
            }
            _ => Self(SecretBytes::Boxed(bytes.into_boxed_slice())),
        }
    }
    /// The secret bytes, for MAC computation.
    pub fn expose(&self) -> &[u8] {
        match &self.0 {
            SecretBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            SecretBytes::Boxed(bytes) => bytes,
        }
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An id's secret as the relay checks proofs with it: the HMAC-SHA256 state right after
/// the key, i.e. the inner and outer hashes each past their one block of padded key
/// (80 bytes, whatever the secret's length: a key longer than a block is hashed first).
///
/// HMAC pads and hashes the key before every message; [`verify`] with a [`Secret`]
/// does that per proof, two of the four SHA-256 compressions of a park proof. A relay
/// makes one `MacKey` per id when it loads its secrets and [`verify_keyed`] starts each
/// proof from a copy of it. Its `Debug` never prints the state.
#[derive(Clone)]
pub struct MacKey(HmacCore<Sha256>);

impl MacKey {
    /// Pads and hashes `secret` once.
    pub fn new(secret: &Secret) -> Self {
        Self::from_key(secret.expose())
    }

    fn from_key(key: &[u8]) -> Self {
        // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
        Self(
            <HmacCore<Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts keys of every length"),
        )
    }

    /// A fresh MAC computation under this key (a copy of the keyed state).
    fn start(&self) -> HmacSha256 {
        CoreWrapper::from_core(self.0.clone())
    }
}

impl From<&Secret> for MacKey {
    fn from(secret: &Secret) -> Self {
        Self::new(secret)
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

/// The keyed state of [`DUMMY_KEY`], made once: [`verify_keyed`] checks an unknown id's
/// proof from a copy of it, at the same cost as a known id's.
static DUMMY_MAC_KEY: LazyLock<MacKey> = LazyLock::new(|| MacKey::from_key(&DUMMY_KEY));

/// Makes the dummy key's state now (a router calls it when it starts), so that not even
/// the first unknown id's proof takes longer than a known id's.
pub fn prepare() {
    LazyLock::force(&DUMMY_MAC_KEY);
}

/// What a proof authorises; part of the signed message (domain separation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// A hidden server parks a connection under its id.
    Park,
}

impl Operation {
    /// The operation's name inside the signed message.
    pub fn label(self) -> &'static str {
        match self {
            Self::Park => "park",
        }
    }
}

/// A parsed `Tryst` proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Claimed unix time in seconds.
    pub ts: u64,
    /// Zeros the client sent before `ts`'s significant digits (`ts=007` has 2). The MAC
    /// covers the digits exactly as sent, so they are part of the proof.
    pub ts_leading_zeros: u8,
    /// Nonce bytes (8 to 32), held inline.
    pub nonce: Nonce,
    /// The 32-byte HMAC-SHA256 tag.
    pub mac: [u8; 32],
}

/// A proof's nonce: [`MIN_NONCE_BYTES`] to [`MAX_NONCE_BYTES`] bytes, held inline, so
/// parsing a proof allocates nothing and no nonce of another length can exist.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce {
    len: u8,
    bytes: [u8; MAX_NONCE_BYTES],
}

impl Nonce {
    /// The nonce `bytes`, or `None` unless they are 8 to 32 bytes long.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if !(MIN_NONCE_BYTES..=MAX_NONCE_BYTES).contains(&bytes.len()) {
            return None;
        }
        let mut inline = [0u8; MAX_NONCE_BYTES];
        inline.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Self {
            // At most MAX_NONCE_BYTES (32): fits a u8.
            len: bytes.len() as u8,
            bytes: inline,
        })
    }

    /// The nonce's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The nonce of a proof's `nonce=` value: 16 to 64 hex digits, an even count, any
    /// case; `None` for anything else. Decoded in place, without allocating.
    fn from_hex(hex_digits: &[u8]) -> Option<Self> {
        let n = hex_digits.len();
        if !n.is_multiple_of(2) || !(2 * MIN_NONCE_BYTES..=2 * MAX_NONCE_BYTES).contains(&n) {
            return None;
        }
        let mut bytes = [0u8; MAX_NONCE_BYTES];
        hex::decode_to_slice(hex_digits, bytes.get_mut(..n / 2)?).ok()?;
        Some(Self {
            // n / 2 is at most MAX_NONCE_BYTES (32): fits a u8.
            len: (n / 2) as u8,
            bytes,
        })
    }
}

impl std::ops::Deref for Nonce {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", hex::encode(self.as_bytes()))
    }
}

/// Why a proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// No `Proxy-Authorization` header (peer).
    #[error("missing proof")]
    Missing,
    /// The header is not a well-formed `Tryst` proof (peer).
    #[error("malformed proof")]
    Malformed,
    /// No secret for this id, or the MAC does not verify (peer). One variant for both so
    /// the answer does not reveal which ids exist.
    #[error("proof does not verify")]
    BadMac,
    /// `|now - ts|` exceeds the window (peer clock or replay).
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
    /// This nonce was already used within the window (peer replay).
    #[error("nonce already used")]
    ReplayedNonce,
    /// The replay cache is full; refused rather than forgetting (relay under load).
    #[error("replay cache full")]
    ReplayCacheFull,
}

/// Feeds the signed message to `sink` piece by piece, without allocating.
fn write_message(
    op: Operation,
    id: &RendezvousId,
    (ts, leading_zeros): (u64, u8),
    nonce: &[u8],
    mut sink: impl FnMut(&[u8]),
) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const ZEROS: &[u8; MAX_TS_DIGITS] = &[b'0'; MAX_TS_DIGITS];
    sink(MESSAGE_PREFIX);
    sink(op.label().as_bytes());
    sink(b"\n");
    sink(&id.canonical());
    sink(b"\n");
    // A parsed proof has at most MAX_TS_DIGITS digits in all, so this never truncates.
    sink(&ZEROS[..usize::from(leading_zeros).min(MAX_TS_DIGITS)]);
    let mut digits = [0u8; MAX_TS_DIGITS];
    let mut start = digits.len();
    let mut rest = ts;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    sink(&digits[start..]);
    sink(b"\n");
    let mut chunk = [0u8; 64];
    for part in nonce.chunks(chunk.len() / 2) {
        for (i, b) in part.iter().enumerate() {
            chunk[2 * i] = HEX[usize::from(b >> 4)];
            chunk[2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        sink(&chunk[..2 * part.len()]);
    }
}

/// Builds the signed message for `op`, `id`, `ts` and `nonce`.
pub fn proof_message(op: Operation, id: &RendezvousId, ts: u64, nonce: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + 2 * nonce.len());
    write_message(op, id, (ts, 0), nonce, |part| out.extend_from_slice(part));
    out
}

fn mac_state(
    key: &MacKey,
    op: Operation,
    id: &RendezvousId,
    ts: (u64, u8),
    nonce: &[u8],
) -> HmacSha256 {
    let mut mac = key.start();
    write_message(op, id, ts, nonce, |part| mac.update(part));
    mac
}

/// Computes the MAC for a proof whose `ts` is sent in canonical decimal (no leading zeros).
pub fn sign(secret: &Secret, op: Operation, id: &RendezvousId, ts: u64, nonce: &[u8]) -> [u8; 32] {
    sign_padded(secret, op, id, ts, 0, nonce)
}

/// Computes the MAC for a proof whose `ts` is sent with `leading_zeros` zeros before its
/// significant digits (the MAC covers `ts` exactly as sent).
pub fn sign_padded(
    secret: &Secret,
    op: Operation,
    id: &RendezvousId,
    ts: u64,
    leading_zeros: u8,
    nonce: &[u8],
) -> [u8; 32] {
    mac_state(&MacKey::new(secret), op, id, (ts, leading_zeros), nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Formats a complete `Proxy-Authorization` value (`Tryst ts=…, nonce=…, mac=…`), as a
/// hidden server sends it.
pub fn proof_header(
    secret: &Secret,
    op: Operation,
    id: &RendezvousId,
    ts: u64,
    nonce: &[u8],
) -> String {
    let mac = sign(secret, op, id, ts, nonce);
    format!(
        "Tryst ts={ts}, nonce={}, mac={}",
        hex::encode(nonce),
        URL_SAFE_NO_PAD.encode(mac)
    )
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// `ts` and the count of zeros sent before its significant digits.
fn parse_ts(v: &[u8]) -> Option<(u64, u8)> {
    if v.is_empty() || v.len() > MAX_TS_DIGITS {
        return None;
    }
    let ts = v.iter().try_fold(0u64, |acc, &c| {
        if !c.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })?;
    // Keep one digit for ts = 0 ("000" is two zeros before "0"); at most 19, fits a u8.
    let zeros = v
        .iter()
        .take(v.len() - 1)
        .take_while(|&&c| c == b'0')
        .count();
    Some((ts, u8::try_from(zeros).ok()?))
}

fn parse_mac(v: &[u8]) -> Option<[u8; 32]> {
    if v.len() != MAC_B64_LEN {
        return None;
    }
    // 43 characters decode to at most 33 bytes; the engine rejects padding and
    // non-zero trailing bits, so each MAC has exactly one accepted spelling.
    let mut out = [0u8; 33];
    let n = URL_SAFE_NO_PAD.decode_slice(v, &mut out).ok()?;
    out.get(..n)?.try_into().ok()
}

/// Parses a `Proxy-Authorization` value. Bounded and panic-free.
///
/// Grammar: the scheme `Tryst` (any letter case), one or more spaces, then exactly the
/// three parameters `ts`, `nonce` and `mac` in any order, separated by `,` with optional
/// spaces or tabs around it. Parameter names match case-insensitively (RFC 9110 §11.2);
/// values are bare tokens: `ts` 1 to 20 decimal digits fitting a `u64`, `nonce` 16 to 64
/// hex digits (even count, any case), `mac` exactly 43 characters of unpadded base64url
/// decoding to 32 bytes. Unknown, repeated, missing or empty parameters, quoted values
/// and values longer than [`MAX_PROOF_VALUE_LEN`] bytes are all [`ProofError::Malformed`].
pub fn parse_proof(value: &[u8]) -> Result<Proof, ProofError> {
    if value.len() > MAX_PROOF_VALUE_LEN {
        return Err(ProofError::Malformed);
    }
    let value = trim_ows(value);
    let scheme_end = value
        .iter()
        .position(|&b| b == b' ')
        .ok_or(ProofError::Malformed)?;
    let (scheme, params) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"Tryst") {
        return Err(ProofError::Malformed);
    }
    let (mut ts, mut nonce, mut mac) = (None, None, None);
    for item in params.split(|&b| b == b',') {
        let item = trim_ows(item);
        let eq = item
            .iter()
            .position(|&b| b == b'=')
            .ok_or(ProofError::Malformed)?;
        let (name, v) = item.split_at(eq);
        let v = v.get(1..).ok_or(ProofError::Malformed)?;
        let slot_was_empty = if name.eq_ignore_ascii_case(b"ts") {
            ts.replace(parse_ts(v).ok_or(ProofError::Malformed)?)
                .is_none()
        } else if name.eq_ignore_ascii_case(b"nonce") {
            nonce
                .replace(Nonce::from_hex(v).ok_or(ProofError::Malformed)?)
                .is_none()
        } else if name.eq_ignore_ascii_case(b"mac") {
            mac.replace(parse_mac(v).ok_or(ProofError::Malformed)?)
                .is_none()
        } else {
            return Err(ProofError::Malformed);
        };
        if !slot_was_empty {
            return Err(ProofError::Malformed);
        }
    }
    match (ts, nonce, mac) {
        (Some((ts, ts_leading_zeros)), Some(nonce), Some(mac)) => Ok(Proof {
            ts,
            ts_leading_zeros,
            nonce,
            mac,
        }),
        _ => Err(ProofError::Malformed),
    }
}

/// Verifies window and MAC (not replay): `|now - ts| <= window_secs`, then the MAC in
/// constant time. `secret` is `None` for an unknown id (answered as [`ProofError::BadMac`]).
///
/// The window is checked first and for unknown ids too, and an unknown id still costs one
/// MAC computation under a dummy key, so neither the answer nor its timing tells a peer
/// whether an id is provisioned. This pads and hashes the key for every proof; a relay
/// checking many proofs keeps a [`MacKey`] per id and calls [`verify_keyed`].
pub fn verify(
    secret: Option<&Secret>,
    op: Operation,
    id: &RendezvousId,
    proof: &Proof,
    now_unix: u64,
    window_secs: u64,
) -> Result<(), ProofError> {
    if now_unix.abs_diff(proof.ts) > window_secs {
        return Err(ProofError::StaleTimestamp);
    }
    // The dummy key is keyed here too, so both cases do the same work.
    let key = MacKey::from_key(secret.map_or(&DUMMY_KEY[..], Secret::expose));
    check_mac(&key, secret.is_some(), op, id, proof)
}

/// [`verify`] with the id's key state made beforehand ([`MacKey::new`], once per id):
/// the same checks and answers, and the same constant-time comparison, without padding
/// and hashing the key per proof. `key` is `None` for an unknown id, whose proof is
/// checked from a copy of a dummy key's state made once, so it costs what a known id's
/// does.
pub fn verify_keyed(
    key: Option<&MacKey>,
    op: Operation,
    id: &RendezvousId,
    proof: &Proof,
    now_unix: u64,
    window_secs: u64,
) -> Result<(), ProofError> {
    if now_unix.abs_diff(proof.ts) > window_secs {
        return Err(ProofError::StaleTimestamp);
    }
    check_mac(key.unwrap_or(&DUMMY_MAC_KEY), key.is_some(), op, id, proof)
}

/// The MAC check shared by [`verify`] and [`verify_keyed`]: always one MAC computation
/// and one constant-time comparison (`verify_slice`), then refused unless `known`.
fn check_mac(
    key: &MacKey,
    known: bool,
    op: Operation,
    id: &RendezvousId,
    proof: &Proof,
) -> Result<(), ProofError> {
    let ok = mac_state(
        key,
        op,
        id,
        (proof.ts, proof.ts_leading_zeros),
        &proof.nonce,
    )
    .verify_slice(&proof.mac)
    .is_ok();
    if ok && known {
        Ok(())
    } else {
        Err(ProofError::BadMac)
    }
}

/// What the replay cache remembers: the id and the nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ReplayKey {
    id: [u8; 16],
    nonce: Nonce,
}

/// Remembers (id, nonce) pairs seen within the window. Bounded: when full of unexpired
/// entries it refuses new proofs ([`ProofError::ReplayCacheFull`]) instead of forgetting.
///
/// Retention: an entry inserted at `now` for a proof stamped `ts` is kept while
/// `now' <= max(ts, now) + window` (saturating). [`verify`] accepts that `ts` again only
/// while `now' <= ts + window`, so a nonce is remembered for as long as its proof could
/// still pass the window check: it cannot be replayed. Callers insert only proofs that
/// passed [`verify`], so every expiry lies within `[now + window, now + 2 * window]`.
///
/// Structure: a `HashSet` of keys for the membership test, and a `BTreeMap` from expiry
/// second to the keys expiring then. Expiries are not monotone in insertion order (they
/// follow `ts`), so a plain FIFO will not do; grouping by second keeps the map small (at
/// most `2 * window + 1` live buckets with a steady clock, e.g. 121 for 60 s), so
/// finding the oldest bucket is a near-constant step and each entry is removed exactly
/// once: eviction is amortised O(1) per entry.
///
/// Restarts: the cache lives in memory, so a process (or worker) that starts again has
/// forgotten every nonce. [`ReplayCache::started_at`] gives it the unix second it
/// started; it then refuses as replays all proofs stamped at or before that second. Those
/// are the only proofs an earlier instance can have accepted without the client's clock
/// running ahead of the relay's, and they stop passing the window check one window after
/// the start anyway, so the rule needs no state and no disk. Its cost: a proof made in
/// the start second or earlier (a client whose clock lags) is refused, for at most one
/// window after the start.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    window_secs: u64,
    started_unix: Option<u64>,
    seen: HashSet<ReplayKey>,
    by_expiry: BTreeMap<u64, Vec<ReplayKey>>,
    /// The cache's name in cluster-wide claim keys (`tryst:replay:<scope>:...`).
    scope: &'static str,
    /// The last accepted entry and its expiry, until [`ReplayCache::take_claim`].
    last: Option<(ReplayKey, u64)>,
}

impl ReplayCache {
    /// A cache holding at most `capacity` entries, each kept until
    /// `max(ts, now) + window_secs` (long enough to cover the whole accepted window).
    pub fn new(capacity: usize, window_secs: u64) -> Self {
        Self {
            capacity,
            window_secs,
            started_unix: None,
            seen: HashSet::new(),
            by_expiry: BTreeMap::new(),
            scope: "native",
            last: None,
        }
    }

    /// The same cache named `scope` in its cluster-wide claim keys (`"native"` unless
    /// set; each family's cache has its own, so equal nonces of two families never
    /// collide). ASCII letters, digits and `-` only.
    #[must_use]
    pub fn scoped(mut self, scope: &'static str) -> Self {
        self.scope = scope;
        self
    }

    /// The cluster-wide claim for the entry the last successful
    /// [`ReplayCache::check_and_insert`] added, taken once: key
    /// `tryst:replay:<scope>:<id hex>:<nonce hex>`, kept until the entry would expire here. A replay cache
    /// falls back to itself when the claim cannot be decided
    /// ([`crate::claim::OnUnavailable::Proceed`]).
    pub fn take_claim(&mut self, now_unix: u64) -> Option<crate::claim::Claim> {
        let (key, expiry) = self.last.take()?;
        let mut text = String::with_capacity(96);
        text.push_str("tryst:replay:");
        text.push_str(self.scope);
        text.push(':');
        crate::claim::push_hex(&mut text, &key.id);
        text.push(':');
        crate::claim::push_hex(&mut text, key.nonce.as_bytes());
        Some(crate::claim::Claim {
            key: text,
            ttl_secs: u32::try_from(expiry.saturating_sub(now_unix).max(1)).unwrap_or(u32::MAX),
            on_unavailable: crate::claim::OnUnavailable::Proceed,
        })
    }

    /// The same cache, for a process or worker that started at `started_unix`: proofs
    /// stamped at or before that second are refused as replays (see the type's docs).
    #[must_use]
    pub fn started_at(mut self, started_unix: u64) -> Self {
        self.started_unix = Some(started_unix);
        self
    }

    /// Drops every entry whose expiry is before `now_unix`.
    fn evict_expired(&mut self, now_unix: u64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() >= now_unix {
                break;
            }
            for key in entry.remove() {
                self.seen.remove(&key);
            }
        }
    }

    /// Records a verified proof's nonce. Errors if it was seen before, if it is stamped at
    /// or before this cache's start (an earlier instance may have seen it), or if the cache
    /// is full. Expired entries are dropped first, in amortised O(1) per entry.
    pub fn check_and_insert(
        &mut self,
        id: &RendezvousId,
        proof: &Proof,
        now_unix: u64,
    ) -> Result<(), ProofError> {
        self.evict_expired(now_unix);
        if self.started_unix.is_some_and(|started| proof.ts <= started) {
            return Err(ProofError::ReplayedNonce);
        }
        let key = ReplayKey {
            id: id.0,
            nonce: proof.nonce,
        };
        if self.seen.contains(&key) {
            return Err(ProofError::ReplayedNonce);
        }
        if self.seen.len() >= self.capacity {
            return Err(ProofError::ReplayCacheFull);
        }
        let expiry = proof.ts.max(now_unix).saturating_add(self.window_secs);
        self.last = Some((key, expiry));
        self.seen.insert(key);
        self.by_expiry.entry(expiry).or_default().push(key);
        Ok(())
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no entries are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_keep_their_bytes_inline_or_boxed() {
        for len in [0, 1, 16, 31, 32, 33, 64, 1024] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let s = Secret::new(bytes.clone());
            assert_eq!(s.expose(), &bytes[..], "{len} bytes");
            assert_eq!(s.clone(), s);
            assert!(matches!(
                (&s.0, len <= INLINE_SECRET),
                (SecretBytes::Inline { .. }, true) | (SecretBytes::Boxed(_), false)
            ));
        }
        // Equal prefixes of different lengths are different secrets.
        assert_ne!(Secret::new(vec![1; 16]), Secret::new(vec![1; 17]));
        assert!(size_of::<Secret>() <= 40);
    }

    const ID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    const TS: u64 = 1_700_000_000;
    const NONCE_HEX: &str = "00112233445566778899aabbccddeeff";
    /// HMAC-SHA256 computed independently with python3's `hmac` module:
    /// `hmac.new(b"tryst known-vector secret", MESSAGE, hashlib.sha256)`.
    const KNOWN_MAC_HEX: &str = "6b94286bb9d0cf4be68985ba635733e54e750cea383dd3a41d8fb7dfa4bb41a2";
    const KNOWN_MAC_B64: &str = "a5Qoa7nQz0vmiYW6Y1cz5U51DOo4PdOkHY-336S7QaI";
    const MESSAGE: &[u8] = b"tryst-proof-v1\npark\n6ba7b810-9dad-11d1-80b4-00c04fd430c8\n1700000000\n00112233445566778899aabbccddeeff";

    fn id() -> RendezvousId {
        RendezvousId::parse(ID).unwrap()
    }
    fn secret() -> Secret {
        Secret::new(b"tryst known-vector secret".to_vec())
    }
    fn nonce() -> Vec<u8> {
        hex::decode(NONCE_HEX).unwrap()
    }
    fn header_value(ts: u64, nonce_hex: &str, mac_b64: &str) -> String {
        format!("Tryst ts={ts}, nonce={nonce_hex}, mac={mac_b64}")
    }
    fn signed(ts: u64, nonce: &[u8]) -> Proof {
        parse_proof(proof_header(&secret(), Operation::Park, &id(), ts, nonce).as_bytes()).unwrap()
    }

    #[test]
    fn an_accepted_nonce_is_claimed_once_under_its_scope() {
        let mut cache = ReplayCache::new(16, 60).scoped("hive-park");
        let proof = signed(TS, &[0xab; 16]);
        assert_eq!(cache.take_claim(TS), None);
        assert_eq!(cache.check_and_insert(&id(), &proof, TS + 10), Ok(()));
        let claim = cache.take_claim(TS + 10).unwrap();
        assert_eq!(
            claim.key,
            format!(
                "tryst:replay:hive-park:{}:{}",
                hex::encode(id().0),
                "ab".repeat(16)
            )
        );
        // Kept until the entry would expire here: max(ts, now) + window.
        assert_eq!(claim.ttl_secs, 60);
        assert_eq!(claim.on_unavailable, crate::claim::OnUnavailable::Proceed);
        assert_eq!(cache.take_claim(TS + 10), None, "taken once");
        // A refused replay claims nothing.
        assert!(cache.check_and_insert(&id(), &proof, TS + 11).is_err());
        assert_eq!(cache.take_claim(TS + 11), None);
    }

    #[test]
    fn known_vector_matches_an_independent_implementation() {
        assert_eq!(proof_message(Operation::Park, &id(), TS, &nonce()), MESSAGE);
        let mac = sign(&secret(), Operation::Park, &id(), TS, &nonce());
        assert_eq!(hex::encode(mac), KNOWN_MAC_HEX);
        assert_eq!(
            proof_header(&secret(), Operation::Park, &id(), TS, &nonce()),
            header_value(TS, NONCE_HEX, KNOWN_MAC_B64)
        );
        let proof = parse_proof(header_value(TS, NONCE_HEX, KNOWN_MAC_B64).as_bytes()).unwrap();
        assert_eq!(
            proof,
            Proof {
                ts: TS,
                nonce: Nonce::new(&nonce()).unwrap(),
                ts_leading_zeros: 0,
                mac
            }
        );
        assert_eq!(
            verify(Some(&secret()), Operation::Park, &id(), &proof, TS, 60),
            Ok(())
        );
    }

    #[test]
    fn message_uses_canonical_id_decimal_ts_and_lower_hex_nonce() {
        let upper = RendezvousId::parse(&ID.to_uppercase()).unwrap();
        let msg = proof_message(Operation::Park, &upper, 0, &[0xAB; 8]);
        assert_eq!(
            msg,
            format!("tryst-proof-v1\npark\n{ID}\n0\nabababababababab").into_bytes()
        );
        let msg = proof_message(Operation::Park, &upper, u64::MAX, &[0xff; 40]);
        let want = format!(
            "tryst-proof-v1\npark\n{ID}\n18446744073709551615\n{}",
            "ff".repeat(40)
        );
        assert_eq!(msg, want.into_bytes());
        // The signature is over exactly the message.
        let mut mac = HmacSha256::new_from_slice(secret().expose()).unwrap();
        mac.update(&proof_message(Operation::Park, &id(), 42, &nonce()));
        let want: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(sign(&secret(), Operation::Park, &id(), 42, &nonce()), want);
    }

    #[test]
    fn parse_accepts_spelling_variants() {
        let want = Proof {
            ts: TS,
            nonce: Nonce::new(&nonce()).unwrap(),
            ts_leading_zeros: 0,
            mac: hex::decode(KNOWN_MAC_HEX).unwrap().try_into().unwrap(),
        };
        let n = NONCE_HEX;
        let m = KNOWN_MAC_B64;
        let variants = [
            format!("Tryst ts={TS}, nonce={n}, mac={m}"),
            format!("tryst ts={TS},nonce={n},mac={m}"),
            format!("TRYST   mac={m} ,  nonce={n}\t,\tts={TS}"),
            format!("Tryst nonce={}, ts={TS}, mac={m}", n.to_uppercase()),
            format!("Tryst TS={TS}, Nonce={n}, MAC={m}"),
            format!("  Tryst ts={TS}, nonce={n}, mac={m}  "),
        ];
        for v in variants {
            assert_eq!(parse_proof(v.as_bytes()), Ok(want.clone()), "{v:?}");
        }
        // Leading zeros are kept: the MAC covers ts exactly as sent.
        let padded = format!("Tryst ts=000{TS}, nonce={n}, mac={m}");
        assert_eq!(
            parse_proof(padded.as_bytes()),
            Ok(Proof {
                ts_leading_zeros: 3,
                ..want.clone()
            })
        );
        let zero = parse_proof(format!("Tryst ts=000, nonce={n}, mac={m}").as_bytes());
        assert_eq!(zero.map(|p| (p.ts, p.ts_leading_zeros)), Ok((0, 2)));
    }

    #[test]
    fn ts_is_signed_exactly_as_sent() {
        let s = secret();
        let mac = sign_padded(&s, Operation::Park, &id(), TS, 1, &nonce());
        // The MAC is over the message with `0<ts>`, byte for byte.
        let mut want = HmacSha256::new_from_slice(s.expose()).unwrap();
        want.update(format!("tryst-proof-v1\npark\n{ID}\n0{TS}\n{NONCE_HEX}").as_bytes());
        let want: [u8; 32] = want.finalize().into_bytes().into();
        assert_eq!(mac, want);
        let padded = |mac: [u8; 32]| {
            let v = format!(
                "Tryst ts=0{TS}, nonce={NONCE_HEX}, mac={}",
                URL_SAFE_NO_PAD.encode(mac)
            );
            parse_proof(v.as_bytes()).unwrap()
        };
        assert_eq!(
            verify(Some(&s), Operation::Park, &id(), &padded(mac), TS, 60),
            Ok(())
        );
        // The MAC of the canonical spelling does not verify the padded one, nor the reverse.
        let canonical = sign(&s, Operation::Park, &id(), TS, &nonce());
        assert_eq!(
            verify(Some(&s), Operation::Park, &id(), &padded(canonical), TS, 60),
            Err(ProofError::BadMac)
        );
        let unpadded =
            parse_proof(header_value(TS, NONCE_HEX, &URL_SAFE_NO_PAD.encode(mac)).as_bytes())
                .unwrap();
        assert_eq!(
            verify(Some(&s), Operation::Park, &id(), &unpadded, TS, 60),
            Err(ProofError::BadMac)
        );
    }

    #[test]
    fn a_stale_ts_with_a_wrong_mac_is_reported_stale() {
        let wrong = parse_proof(header_value(TS, NONCE_HEX, &"A".repeat(43)).as_bytes()).unwrap();
        for now in [TS + 61, TS - 61] {
            assert_eq!(
                verify(Some(&secret()), Operation::Park, &id(), &wrong, now, 60),
                Err(ProofError::StaleTimestamp)
            );
        }
        assert_eq!(
            verify(Some(&secret()), Operation::Park, &id(), &wrong, TS, 60),
            Err(ProofError::BadMac)
        );
    }

    #[test]
    fn a_restarted_cache_refuses_proofs_stamped_up_to_its_start() {
        let before = signed(TS, &nonce());
        let mut first = ReplayCache::new(16, 60);
        assert_eq!(first.check_and_insert(&id(), &before, TS), Ok(()));
        // The process restarts at TS + 1 and forgets every nonce.
        let mut second = ReplayCache::new(16, 60).started_at(TS + 1);
        assert_eq!(
            second.check_and_insert(&id(), &before, TS + 2),
            Err(ProofError::ReplayedNonce)
        );
        // Stamped in the start second: refused too (the rule's cost).
        assert_eq!(
            second.check_and_insert(&id(), &signed(TS + 1, &[7; 16]), TS + 2),
            Err(ProofError::ReplayedNonce)
        );
        // Stamped after the start: accepted once.
        let after = signed(TS + 2, &[8; 16]);
        assert_eq!(second.check_and_insert(&id(), &after, TS + 2), Ok(()));
        assert_eq!(
            second.check_and_insert(&id(), &after, TS + 3),
            Err(ProofError::ReplayedNonce)
        );
        // Without a start, ts 0 is an ordinary timestamp.
        let zero = signed(0, &[9; 16]);
        assert_eq!(
            ReplayCache::new(1, 60).check_and_insert(&id(), &zero, 0),
            Ok(())
        );
    }

    #[test]
    fn parse_refuses_malformed_values() {
        let n = NONCE_HEX;
        let m = KNOWN_MAC_B64;
        let mut bad = vec![
            String::new(),
            "Tryst".to_string(),
            "Tryst ".to_string(),
            format!("Basic ts={TS}, nonce={n}, mac={m}"),
            format!("Trysts ts={TS}, nonce={n}, mac={m}"),
            format!("Tryst\tts={TS}, nonce={n}, mac={m}"),
            format!("Tryst nonce={n}, mac={m}"),
            format!("Tryst ts={TS}, mac={m}"),
            format!("Tryst ts={TS}, nonce={n}"),
            format!("Tryst ts={TS}, ts={TS}, nonce={n}, mac={m}"),
            format!("Tryst ts={TS}, nonce={n}, nonce={n}, mac={m}"),
            format!("Tryst ts={TS}, nonce={n}, mac={m}, mac={m}"),
            format!("Tryst ts={TS}, nonce={n}, mac={m}, realm=x"),
            format!("Tryst ts={TS}, nonce={n}, mac={m},"),
            format!("Tryst ts={TS},, nonce={n}, mac={m}"),
            format!("Tryst ts = {TS}, nonce={n}, mac={m}"),
            format!("Tryst ts=\"{TS}\", nonce={n}, mac={m}"),
            format!("Tryst ts, nonce={n}, mac={m}"),
            format!("Tryst ts=, nonce={n}, mac={m}"),
            format!("Tryst ts=-1, nonce={n}, mac={m}"),
            format!("Tryst ts=+1, nonce={n}, mac={m}"),
            format!("Tryst ts=1e9, nonce={n}, mac={m}"),
            format!("Tryst ts=18446744073709551616, nonce={n}, mac={m}"), // u64::MAX + 1
            format!("Tryst ts=000000000000000000001, nonce={n}, mac={m}"), // 21 digits
            format!("Tryst ts={TS}, nonce={}, mac={m}", &n[..15]),
            format!("Tryst ts={TS}, nonce={}, mac={m}", &n[..17]),
            format!("Tryst ts={TS}, nonce={}, mac={m}", "a".repeat(65)),
            format!("Tryst ts={TS}, nonce={}, mac={m}", "a".repeat(66)),
            format!("Tryst ts={TS}, nonce=0x{}, mac={m}", &n[2..]),
            format!("Tryst ts={TS}, nonce={}g, mac={m}", &n[..31]),
            format!("Tryst ts={TS}, nonce={n}, mac={}", &m[..42]),
            format!("Tryst ts={TS}, nonce={n}, mac={m}A"),
            format!("Tryst ts={TS}, nonce={n}, mac={m}="),
            format!("Tryst ts={TS}, nonce={n}, mac={}J", &m[..42]), // non-zero trailing bits
            format!("Tryst ts={TS}, nonce={n}, mac={}", m.replace('-', "+")), // standard alphabet
            format!("Tryst ts={TS}, nonce={n}, mac={}", "é".repeat(21)),
        ];
        // Over the value cap, even though otherwise well formed.
        bad.push(format!(
            "Tryst ts={TS}, nonce={n}, mac={m}{}",
            " ".repeat(MAX_PROOF_VALUE_LEN)
        ));
        for v in &bad {
            assert_eq!(
                parse_proof(v.as_bytes()),
                Err(ProofError::Malformed),
                "{v:?}"
            );
        }
        assert_eq!(
            parse_proof(b"Tryst ts=1, nonce=\xff\xfe, mac=x"),
            Err(ProofError::Malformed)
        );
    }

    #[test]
    fn parse_accepts_the_extreme_lengths() {
        let max = signed(u64::MAX, &[7; MAX_NONCE_BYTES]);
        assert_eq!(max.ts, u64::MAX);
        assert_eq!(max.nonce.len(), 32);
        let min = signed(0, &[7; MIN_NONCE_BYTES]);
        assert_eq!((min.ts, min.nonce.len()), (0, 8));
        // Padding up to the cap exactly is still parsed.
        let v = proof_header(&secret(), Operation::Park, &id(), TS, &nonce());
        let padded = format!("{v}{}", " ".repeat(MAX_PROOF_VALUE_LEN - v.len()));
        assert_eq!(padded.len(), MAX_PROOF_VALUE_LEN);
        assert!(parse_proof(padded.as_bytes()).is_ok());
    }

    #[test]
    fn verify_refuses_every_mismatch_as_bad_mac() {
        let proof = signed(TS, &nonce());
        let park = Operation::Park;
        assert_eq!(verify(Some(&secret()), park, &id(), &proof, TS, 60), Ok(()));
        let other_secret = Secret::new(b"another secret".to_vec());
        assert_eq!(
            verify(Some(&other_secret), park, &id(), &proof, TS, 60),
            Err(ProofError::BadMac)
        );
        assert_eq!(
            verify(None, park, &id(), &proof, TS, 60),
            Err(ProofError::BadMac)
        );
        let other_id = RendezvousId([1; 16]);
        assert_eq!(
            verify(Some(&secret()), park, &other_id, &proof, TS, 60),
            Err(ProofError::BadMac)
        );
        let mut moved_ts = proof.clone();
        moved_ts.ts += 1;
        assert_eq!(
            verify(Some(&secret()), park, &id(), &moved_ts, TS, 60),
            Err(ProofError::BadMac)
        );
        let mut other_nonce = proof.clone();
        let mut flipped_nonce = nonce();
        flipped_nonce[0] ^= 1;
        other_nonce.nonce = Nonce::new(&flipped_nonce).unwrap();
        assert_eq!(
            verify(Some(&secret()), park, &id(), &other_nonce, TS, 60),
            Err(ProofError::BadMac)
        );
        for bit in [0, 7, 128, 255] {
            let mut flipped = proof.clone();
            flipped.mac[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                verify(Some(&secret()), park, &id(), &flipped, TS, 60),
                Err(ProofError::BadMac)
            );
        }
        // A secret that happens to equal the dummy key still does not verify for `None`.
        let dummy = Secret::new(DUMMY_KEY.to_vec());
        let dummy_proof =
            parse_proof(proof_header(&dummy, park, &id(), TS, &nonce()).as_bytes()).unwrap();
        assert_eq!(
            verify(Some(&dummy), park, &id(), &dummy_proof, TS, 60),
            Ok(())
        );
        assert_eq!(
            verify(None, park, &id(), &dummy_proof, TS, 60),
            Err(ProofError::BadMac)
        );
    }

    #[test]
    fn a_mac_key_keys_like_hmac_for_every_key_length() {
        // Empty, short, one block (64), just over (hashed first), long.
        let msg = proof_message(Operation::Park, &id(), TS, &nonce());
        for len in [0, 1, 16, 32, 63, 64, 65, 128, 1024] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
            let mut want = HmacSha256::new_from_slice(&bytes).unwrap();
            want.update(&msg);
            let want: [u8; 32] = want.finalize().into_bytes().into();
            let key = MacKey::new(&Secret::new(bytes));
            let mut got = key.start();
            got.update(&msg);
            let got: [u8; 32] = got.finalize().into_bytes().into();
            assert_eq!(got, want, "{len}-byte key");
            // A key state is used again and again: each proof starts from a copy.
            let mut again = key.start();
            again.update(&msg);
            assert_eq!(<[u8; 32]>::from(again.finalize().into_bytes()), want);
        }
        assert_eq!(
            size_of::<MacKey>(),
            80,
            "the secrets tables are sized for it"
        );
        let key = MacKey::new(&secret());
        assert_eq!(format!("{key:?}"), "MacKey(<redacted>)");
    }

    #[test]
    fn verify_keyed_answers_as_verify_does() {
        let park = Operation::Park;
        let proof = signed(TS, &nonce());
        let key = MacKey::new(&secret());
        let other = MacKey::from(&Secret::new(b"another secret".to_vec()));
        assert_eq!(
            verify_keyed(Some(&key), park, &id(), &proof, TS, 60),
            Ok(())
        );
        let mut cases = vec![(proof.clone(), TS), (proof.clone(), TS + 61)];
        let mut moved_ts = proof.clone();
        moved_ts.ts += 1;
        cases.push((moved_ts, TS));
        let mut flipped = proof.clone();
        flipped.mac[31] ^= 0x80;
        cases.push((flipped, TS));
        let other_secret = Secret::new(b"another secret".to_vec());
        let pairs = [
            (Some(&key), Some(secret())),
            (Some(&other), Some(other_secret)),
            (None, None),
        ];
        for (p, now) in &cases {
            for (keyed, plain) in &pairs {
                assert_eq!(
                    verify_keyed(*keyed, park, &id(), p, *now, 60),
                    verify(plain.as_ref(), park, &id(), p, *now, 60),
                );
            }
        }
        assert_eq!(
            verify_keyed(Some(&other), park, &id(), &proof, TS, 60),
            Err(ProofError::BadMac)
        );
        assert_eq!(
            verify_keyed(None, park, &id(), &proof, TS, 60),
            Err(ProofError::BadMac)
        );
        assert_eq!(
            verify_keyed(None, park, &id(), &proof, TS + 61, 60),
            Err(ProofError::StaleTimestamp)
        );
        // The dummy key's own proofs still do not verify for an unknown id.
        let dummy = Secret::new(DUMMY_KEY.to_vec());
        let dummy_proof =
            parse_proof(proof_header(&dummy, park, &id(), TS, &nonce()).as_bytes()).unwrap();
        assert_eq!(
            verify_keyed(
                Some(&MacKey::new(&dummy)),
                park,
                &id(),
                &dummy_proof,
                TS,
                60
            ),
            Ok(())
        );
        assert_eq!(
            verify_keyed(None, park, &id(), &dummy_proof, TS, 60),
            Err(ProofError::BadMac)
        );
    }

    #[test]
    fn window_edges_both_directions() {
        let s = secret();
        let check = |ts: u64, now: u64| {
            verify(
                Some(&s),
                Operation::Park,
                &id(),
                &signed(ts, &nonce()),
                now,
                60,
            )
        };
        assert_eq!(check(TS, TS + 60), Ok(()));
        assert_eq!(check(TS, TS + 61), Err(ProofError::StaleTimestamp));
        assert_eq!(check(TS, TS - 60), Ok(()));
        assert_eq!(check(TS, TS - 61), Err(ProofError::StaleTimestamp));
        assert_eq!(check(u64::MAX, u64::MAX - 60), Ok(()));
        assert_eq!(
            check(u64::MAX, u64::MAX - 61),
            Err(ProofError::StaleTimestamp)
        );
        assert_eq!(check(u64::MAX - 60, u64::MAX), Ok(()));
        assert_eq!(
            check(u64::MAX - 61, u64::MAX),
            Err(ProofError::StaleTimestamp)
        );
        assert_eq!(check(0, u64::MAX), Err(ProofError::StaleTimestamp));
        assert_eq!(check(u64::MAX, 0), Err(ProofError::StaleTimestamp));
        assert_eq!(check(0, 60), Ok(()));
        assert_eq!(check(60, 0), Ok(()));
        // The window is checked before the secret lookup's outcome shows.
        let stale = signed(TS, &nonce());
        assert_eq!(
            verify(None, Operation::Park, &id(), &stale, TS + 61, 60),
            Err(ProofError::StaleTimestamp)
        );
        // A zero window accepts only the same second.
        assert_eq!(
            verify(Some(&s), Operation::Park, &id(), &stale, TS, 0),
            Ok(())
        );
        assert_eq!(
            verify(Some(&s), Operation::Park, &id(), &stale, TS + 1, 0),
            Err(ProofError::StaleTimestamp)
        );
    }

    #[test]
    fn replay_is_refused_per_id_and_nonce() {
        let mut cache = ReplayCache::new(16, 60);
        assert!(cache.is_empty());
        let proof = signed(TS, &nonce());
        assert_eq!(cache.check_and_insert(&id(), &proof, TS), Ok(()));
        assert_eq!(
            cache.check_and_insert(&id(), &proof, TS),
            Err(ProofError::ReplayedNonce)
        );
        assert_eq!(
            cache.check_and_insert(&id(), &proof, TS + 30),
            Err(ProofError::ReplayedNonce)
        );
        // Same nonce spelled in upper case parses to the same bytes: still a replay.
        let upper = header_value(TS, &NONCE_HEX.to_uppercase(), KNOWN_MAC_B64);
        let upper = parse_proof(upper.as_bytes()).unwrap();
        assert_eq!(
            cache.check_and_insert(&id(), &upper, TS),
            Err(ProofError::ReplayedNonce)
        );
        // Other id or other nonce: fresh.
        assert_eq!(
            cache.check_and_insert(&RendezvousId([9; 16]), &proof, TS),
            Ok(())
        );
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS, &[1; 8]), TS),
            Ok(())
        );
        // A nonce that is a prefix of another is a different nonce.
        let mut longer = nonce();
        longer.push(0);
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS, &longer), TS),
            Ok(())
        );
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn nonce_is_remembered_for_as_long_as_its_ts_is_in_the_window() {
        for ts_offset in [-60i64, -1, 0, 1, 60] {
            let now = TS;
            let ts = TS.checked_add_signed(ts_offset).unwrap();
            let mut cache = ReplayCache::new(4, 60);
            let proof = signed(ts, &nonce());
            assert_eq!(cache.check_and_insert(&id(), &proof, now), Ok(()));
            // Every second at which verify would still accept `ts` must see the replay.
            let mut later = now;
            while later <= ts + 60 {
                assert_eq!(
                    verify(Some(&secret()), Operation::Park, &id(), &proof, later, 60),
                    Ok(())
                );
                assert_eq!(
                    cache.check_and_insert(&id(), &proof, later),
                    Err(ProofError::ReplayedNonce),
                    "ts {ts_offset:+} at +{}",
                    later - now
                );
                later += 1;
            }
            // Kept until max(ts, now) + window, then dropped.
            let expiry = ts.max(now) + 60;
            assert_eq!(
                cache.check_and_insert(&id(), &signed(ts, &[2; 8]), expiry),
                Ok(())
            );
            assert_eq!(cache.len(), 2);
            assert_eq!(
                cache.check_and_insert(&id(), &signed(ts, &[3; 8]), expiry + 1),
                Ok(())
            );
            assert_eq!(cache.len(), 2, "the first entry expired at {expiry}");
        }
    }

    #[test]
    fn full_cache_refuses_and_never_forgets_early() {
        let mut cache = ReplayCache::new(3, 60);
        for i in 0..3u8 {
            assert_eq!(
                cache.check_and_insert(&id(), &signed(TS, &[i; 8]), TS),
                Ok(())
            );
        }
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS, &[9; 8]), TS),
            Err(ProofError::ReplayCacheFull)
        );
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS, &[9; 8]), TS + 60),
            Err(ProofError::ReplayCacheFull)
        );
        // A replay is reported as such even when full.
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS, &[0; 8]), TS + 60),
            Err(ProofError::ReplayedNonce)
        );
        assert_eq!(cache.len(), 3);
        // Once they expire, space is freed and new proofs are accepted again.
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS + 61, &[9; 8]), TS + 61),
            Ok(())
        );
        assert_eq!(cache.len(), 1);
        // A zero-capacity cache refuses everything, failing closed.
        let mut none = ReplayCache::new(0, 60);
        assert_eq!(
            none.check_and_insert(&id(), &signed(TS, &[1; 8]), TS),
            Err(ProofError::ReplayCacheFull)
        );
    }

    #[test]
    fn expiry_frees_entries_in_expiry_order_not_insertion_order() {
        let mut cache = ReplayCache::new(2, 60);
        // Inserted first, expires last (future ts); inserted second, expires first.
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS + 60, &[1; 8]), TS),
            Ok(())
        );
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS - 60, &[2; 8]), TS),
            Ok(())
        );
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS, &[3; 8]), TS + 61),
            Ok(())
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS + 60, &[1; 8]), TS + 61),
            Err(ProofError::ReplayedNonce)
        );
        assert_eq!(
            cache.check_and_insert(&id(), &signed(TS + 60, &[1; 8]), TS + 121),
            Ok(())
        );
    }

    #[test]
    fn extreme_timestamps_do_not_panic_and_nonces_outside_8_to_32_bytes_cannot_exist() {
        let mut cache = ReplayCache::new(4, 60);
        let top = Proof {
            ts: u64::MAX,
            ts_leading_zeros: 0,
            nonce: Nonce::new(&[1; 8]).unwrap(),
            mac: [0; 32],
        };
        assert_eq!(cache.check_and_insert(&id(), &top, u64::MAX), Ok(()));
        assert_eq!(
            cache.check_and_insert(&id(), &top, u64::MAX),
            Err(ProofError::ReplayedNonce)
        );
        // The longest nonce differs from another only in its last byte: both are kept.
        let mut last = [5; MAX_NONCE_BYTES];
        let long = Proof {
            ts: 0,
            ts_leading_zeros: 0,
            nonce: Nonce::new(&last).unwrap(),
            mac: [0; 32],
        };
        assert_eq!(cache.check_and_insert(&id(), &long, 0), Ok(()));
        assert_eq!(
            cache.check_and_insert(&id(), &long, 0),
            Err(ProofError::ReplayedNonce)
        );
        last[MAX_NONCE_BYTES - 1] = 6;
        let long2 = Proof {
            nonce: Nonce::new(&last).unwrap(),
            ..long
        };
        assert_eq!(cache.check_and_insert(&id(), &long2, 0), Ok(()));
        // Equal prefixes of different lengths are different nonces.
        let shorter = Proof {
            nonce: Nonce::new(&last[..MAX_NONCE_BYTES - 1]).unwrap(),
            ..long
        };
        assert_eq!(cache.check_and_insert(&id(), &shorter, 0), Ok(()));
        for len in [0, 1, MIN_NONCE_BYTES - 1, MAX_NONCE_BYTES + 1, 100] {
            assert_eq!(Nonce::new(&vec![5; len]), None, "{len} bytes");
        }
        assert_eq!(
            format!("{:?}", Nonce::new(&[0xab; 8]).unwrap()),
            "Nonce(abababababababab)"
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", secret()), "Secret(<redacted>)");
    }
}
