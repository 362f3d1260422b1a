//! Forward mailboxes (`/v1/forward/{ws}/{device}`), sans-IO: the mailbox table, the
//! drain proof and its replay cache. The HTTP adapter ([`super::service`]) adds the
//! long-poll wait.
//!
//! - `POST` appends an opaque body (at most [`ForwardLimits::max_body`], 1 MiB) to the
//!   recipient's mailbox. Over the per-mailbox byte cap (4 MiB): 429 (the recipient must
//!   drain first); over the relay-wide byte or mailbox cap after evicting idle mailboxes:
//!   503.
//! - `GET` drains: the concatenation of every queued body, in arrival order.
//! - A mailbox untouched (no append, no drain, no waiting drain) for
//!   [`ForwardLimits::idle_secs`] (300) is evicted with its contents.
//! - One waiting drain per mailbox: a second one is refused with 409 while the first waits.
//!
//! Drain proof: `Authorization: Hive-Drain ts=<unix secs>, nonce=<32 hex>, sig=<base64>`,
//! `sig` = Ed25519 (strict) by the device's freshest publication key over
//! `"hive-forward-drain-v1\0" ‖ ws (16) ‖ device (16) ‖ ts u64 LE ‖ nonce (16)`.
//! `|now - ts| <= 60`; a (ws, device, nonce) seen within the window is a replay.

use super::record::decode_fixed;
use super::verify::{SignatureError, verify_strict};
use std::collections::{HashMap, VecDeque};

/// Domain tag of the drain proof.
pub const DRAIN_DOMAIN: &[u8] = b"hive-forward-drain-v1\0";
/// Domain tag of the streaming fallback park proof (`Proxy-Authorization: Hive ...`,
/// docs/protocol-publications.md §7); same layout as the drain proof, so
/// [`parse_proof`] (scheme `Hive`), [`check_proof`] and [`ReplayCache`] serve it too.
pub use tryst_client::hive::CONNECT_DOMAIN;
/// The `Authorization` scheme of the drain proof.
pub const DRAIN_SCHEME: &str = "Hive-Drain";

/// Limits of the forward mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardLimits {
    /// Largest POST body (413 beyond).
    pub max_body: usize,
    /// Most queued bytes per mailbox (429 beyond).
    pub max_mailbox_bytes: usize,
    /// Most queued bytes over all mailboxes (503 beyond).
    pub max_total_bytes: usize,
    /// Most mailboxes (503 beyond).
    pub max_mailboxes: usize,
    /// A mailbox idle this long (seconds) is evicted.
    pub idle_secs: i64,
    /// Accepted `|now - ts|` of a drain proof, seconds.
    pub proof_window_secs: i64,
    /// Most remembered drain nonces (503 when full of unexpired ones).
    pub max_nonces: usize,
}

impl Default for ForwardLimits {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            max_mailbox_bytes: 4 << 20,
            max_total_bytes: 256 << 20,
            max_mailboxes: 4096,
            idle_secs: 300,
            proof_window_secs: 60,
            max_nonces: 65_536,
        }
    }
}

/// A mailbox key: (workspace, device), raw.
pub type MailboxKey = ([u8; 16], [u8; 16]);

/// Why a forward request was refused (the adapter maps these to HTTP).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The body exceeds the 1 MiB limit (413).
    #[error("forward body larger than 1 MiB")]
    TooLarge,
    /// The recipient's mailbox is at its byte cap (429).
    #[error("mailbox full")]
    MailboxFull,
    /// The relay's forward byte cap or mailbox cap is reached (503).
    #[error("forward storage full")]
    RelayFull,
    /// Another drain is already waiting on this mailbox (409).
    #[error("a drain is already waiting on this mailbox")]
    DrainBusy,
    /// Missing or malformed drain proof (401).
    #[error("drain proof: {0}")]
    Proof(#[from] ProofError),
    /// The drain proof's nonce was already used (401).
    #[error("drain proof replayed")]
    Replay,
    /// The replay cache is full of unexpired nonces (503).
    #[error("drain proof cache full")]
    ReplayCacheFull,
}

impl ForwardError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge => 413,
            Self::MailboxFull => 429,
            Self::RelayFull | Self::ReplayCacheFull => 503,
            Self::DrainBusy => 409,
            Self::Proof(_) | Self::Replay => 401,
        }
    }
}

/// A parsed Hive proof header (`<scheme> ts=.., nonce=.., sig=..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiveProof {
    /// Unix seconds.
    pub ts: u64,
    /// The 16 nonce bytes.
    pub nonce: [u8; 16],
    /// The Ed25519 signature.
    pub sig: [u8; 64],
}

/// Why a proof header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// No header.
    #[error("missing Authorization")]
    Missing,
    /// Not the expected scheme.
    #[error("wrong scheme")]
    Scheme,
    /// A parameter is missing, repeated, unknown or badly encoded.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// `ts` is outside the window.
    #[error("ts out of window")]
    Window,
    /// The signature does not verify under the publication key.
    #[error("bad signature")]
    Signature(SignatureError),
}

/// Parses `<scheme> ts=<decimal>, nonce=<32 hex>, sig=<base64 of 64 bytes>` (scheme
/// compared case-insensitively; parameters in any order, each exactly once, separated by
/// commas with optional spaces).
pub fn parse_proof(value: &str, scheme: &str) -> Result<HiveProof, ProofError> {
    let value = value.trim_matches(' ');
    let (got_scheme, params) = value.split_once(' ').ok_or(ProofError::Scheme)?;
    if !got_scheme.eq_ignore_ascii_case(scheme) {
        return Err(ProofError::Scheme);
    }
    let (mut ts, mut nonce, mut sig) = (None, None, None);
    for part in params.split(',') {
        let (name, val) = part
            .trim_matches(' ')
            .split_once('=')
            .ok_or(ProofError::Malformed("parameter"))?;
        match name {
            "ts" if ts.is_none() => {
                if val.is_empty() || val.len() > 19 || !val.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProofError::Malformed("ts"));
                }
                ts = Some(
                    val.parse::<u64>()
                        .map_err(|_| ProofError::Malformed("ts"))?,
                );
            }
            "nonce" if nonce.is_none() => {
                let mut raw = [0u8; 16];
                if val.len() != 32 || hex::decode_to_slice(val, &mut raw).is_err() {
                    return Err(ProofError::Malformed("nonce"));
                }
                nonce = Some(raw);
            }
            "sig" if sig.is_none() => {
                sig = Some(decode_fixed::<64>(val).ok_or(ProofError::Malformed("sig"))?);
            }
            _ => return Err(ProofError::Malformed("parameter")),
        }
    }
    Ok(HiveProof {
        ts: ts.ok_or(ProofError::Malformed("ts"))?,
        nonce: nonce.ok_or(ProofError::Malformed("nonce"))?,
        sig: sig.ok_or(ProofError::Malformed("sig"))?,
    })
}

/// The signed message of a Hive proof (`domain ‖ ws ‖ device ‖ ts u64 LE ‖ nonce`),
/// built by tryst-client so devices and the relay sign and check the same bytes.
pub use tryst_client::hive::proof_message;

/// Checks a parsed proof: window, then strict signature by `key` over the message with
/// `domain`. (Replay is the caller's [`ReplayCache`].)
pub fn check_proof(
    proof: &HiveProof,
    domain: &[u8],
    key: &[u8; 32],
    (ws, device): (&[u8; 16], &[u8; 16]),
    now: i64,
    window_secs: i64,
) -> Result<(), ProofError> {
    let skew = i128::from(proof.ts) - i128::from(now);
    if skew.unsigned_abs() > u128::from(window_secs.unsigned_abs()) {
        return Err(ProofError::Window);
    }
    let msg = proof_message(domain, ws, device, proof.ts, &proof.nonce);
    verify_strict(key, &msg, &proof.sig).map_err(ProofError::Signature)
}

/// Nonces seen within the proof window, per (ws, device). Bounded: when full of
/// unexpired nonces it refuses rather than forgets.
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashMap<(MailboxKey, [u8; 16]), i64>,
    cap: usize,
    started: Option<i64>,
}

impl ReplayCache {
    /// An empty cache holding at most `cap` nonces.
    pub fn new(cap: usize) -> Self {
        Self {
            seen: HashMap::new(),
            cap: cap.max(1),
            started: None,
        }
    }

    /// The same cache in a process that started at `started` (unix seconds): it has
    /// forgotten what an earlier process saw, so proofs stamped at or before that second
    /// are refused as replays. Proofs made later are unaffected; the refused ones would be
    /// stale one window after the start anyway.
    #[must_use]
    pub fn started_at(mut self, started: i64) -> Self {
        self.started = Some(started);
        self
    }

    /// Records `nonce` of a proof made at `ts` (kept until `ts + window`); refuses a
    /// nonce already held, or a proof stamped at or before the process's start.
    pub fn check_and_insert(
        &mut self,
        key: MailboxKey,
        nonce: [u8; 16],
        ts: u64,
        now: i64,
        window_secs: i64,
    ) -> Result<(), ForwardError> {
        let ts = i64::try_from(ts).unwrap_or(i64::MAX);
        if self.started.is_some_and(|started| ts <= started) {
            return Err(ForwardError::Replay);
        }
        let until = ts.saturating_add(window_secs);
        if let Some(&exp) = self.seen.get(&(key, nonce))
            && exp >= now
        {
            return Err(ForwardError::Replay);
        }
        if self.seen.len() >= self.cap {
            self.seen.retain(|_, exp| *exp >= now);
            if self.seen.len() >= self.cap {
                return Err(ForwardError::ReplayCacheFull);
            }
        }
        self.seen.insert((key, nonce), until);
        Ok(())
    }

    /// Nonces held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[derive(Debug, Default)]
struct Mailbox {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    last_active: i64,
    waiting: bool,
}

/// The forward mailboxes.
#[derive(Debug)]
pub struct Mailboxes {
    limits: ForwardLimits,
    boxes: HashMap<MailboxKey, Mailbox>,
    total_bytes: usize,
}

impl Mailboxes {
    /// No mailboxes.
    pub fn new(limits: ForwardLimits) -> Self {
        Self {
            limits,
            boxes: HashMap::new(),
            total_bytes: 0,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &ForwardLimits {
        &self.limits
    }

    /// Mailboxes held.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// Bytes queued over all mailboxes.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Bytes queued for `key`.
    pub fn queued(&self, key: &MailboxKey) -> usize {
        self.boxes.get(key).map_or(0, |m| m.bytes)
    }

    fn ensure(&mut self, key: MailboxKey, now: i64) -> Result<&mut Mailbox, ForwardError> {
        if !self.boxes.contains_key(&key) && self.boxes.len() >= self.limits.max_mailboxes {
            self.evict_idle(now);
            if self.boxes.len() >= self.limits.max_mailboxes {
                return Err(ForwardError::RelayFull);
            }
        }
        let mailbox = self.boxes.entry(key).or_default();
        mailbox.last_active = now;
        Ok(mailbox)
    }

    /// Appends `body` to `key`'s mailbox (an empty body only refreshes it).
    pub fn append(&mut self, key: MailboxKey, body: Vec<u8>, now: i64) -> Result<(), ForwardError> {
        let len = body.len();
        if len > self.limits.max_body {
            return Err(ForwardError::TooLarge);
        }
        if self.queued(&key) + len > self.limits.max_mailbox_bytes {
            return Err(ForwardError::MailboxFull);
        }
        if self.total_bytes + len > self.limits.max_total_bytes {
            self.evict_idle(now);
            if self.total_bytes + len > self.limits.max_total_bytes {
                return Err(ForwardError::RelayFull);
            }
        }
        let mailbox = self.ensure(key, now)?;
        if len > 0 {
            mailbox.frames.push_back(body);
            mailbox.bytes += len;
            self.total_bytes += len;
        }
        Ok(())
    }

    /// Takes everything queued for `key`, concatenated in arrival order; `None` when
    /// nothing is queued.
    pub fn take(&mut self, key: &MailboxKey, now: i64) -> Option<Vec<u8>> {
        let mailbox = self.boxes.get_mut(key)?;
        mailbox.last_active = now;
        if mailbox.frames.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(mailbox.bytes);
        for frame in mailbox.frames.drain(..) {
            out.extend_from_slice(&frame);
        }
        self.total_bytes -= mailbox.bytes;
        mailbox.bytes = 0;
        Some(out)
    }

    /// Registers the one waiting drain of `key` (creating the mailbox if needed).
    pub fn begin_wait(&mut self, key: MailboxKey, now: i64) -> Result<(), ForwardError> {
        let mailbox = self.ensure(key, now)?;
        if mailbox.waiting {
            return Err(ForwardError::DrainBusy);
        }
        mailbox.waiting = true;
        Ok(())
    }

    /// Ends the waiting drain of `key`; the mailbox counts as active at `now`.
    pub fn end_wait(&mut self, key: &MailboxKey, now: i64) {
        if let Some(mailbox) = self.boxes.get_mut(key) {
            mailbox.waiting = false;
            mailbox.last_active = now;
        }
    }

    /// Evicts mailboxes idle for at least `idle_secs` (never one with a waiting drain);
    /// returns how many.
    pub fn evict_idle(&mut self, now: i64) -> usize {
        let idle = self.limits.idle_secs;
        let before = self.boxes.len();
        let mut freed = 0;
        self.boxes.retain(|_, m| {
            let keep = m.waiting || now.saturating_sub(m.last_active) < idle;
            if !keep {
                freed += m.bytes;
            }
            keep
        });
        self.total_bytes -= freed;
        before - self.boxes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use ed25519_dalek::{Signer as _, SigningKey};

    const K: MailboxKey = ([1; 16], [2; 16]);

    #[test]
    fn append_take_concatenates_in_order() {
        let mut m = Mailboxes::new(ForwardLimits::default());
        assert_eq!(m.take(&K, 0), None);
        m.append(K, b"one".to_vec(), 0).unwrap();
        m.append(K, Vec::new(), 0).unwrap();
        m.append(K, b"two".to_vec(), 1).unwrap();
        assert_eq!(m.total_bytes(), 6);
        assert_eq!(m.take(&K, 2).as_deref(), Some(&b"onetwo"[..]));
        assert_eq!(m.take(&K, 2), None);
        assert_eq!(m.total_bytes(), 0);
    }

    #[test]
    fn byte_caps() {
        let limits = ForwardLimits {
            max_body: 4,
            max_mailbox_bytes: 6,
            max_total_bytes: 10,
            max_mailboxes: 2,
            ..ForwardLimits::default()
        };
        let mut m = Mailboxes::new(limits);
        assert_eq!(m.append(K, vec![0; 5], 0), Err(ForwardError::TooLarge));
        m.append(K, vec![0; 4], 0).unwrap();
        assert_eq!(m.append(K, vec![0; 3], 0), Err(ForwardError::MailboxFull));
        m.append(K, vec![0; 2], 0).unwrap();
        let k2 = ([1; 16], [3; 16]);
        m.append(k2, vec![0; 4], 0).unwrap();
        assert_eq!(m.append(k2, vec![0; 1], 0), Err(ForwardError::RelayFull));
        let k3 = ([1; 16], [4; 16]);
        assert_eq!(m.append(k3, Vec::new(), 0), Err(ForwardError::RelayFull));
        assert_eq!(ForwardError::MailboxFull.status(), 429);
        assert_eq!(ForwardError::RelayFull.status(), 503);
        assert_eq!(ForwardError::TooLarge.status(), 413);
        // Idle ones are evicted to make room.
        m.append(k3, vec![0; 4], 300).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m.total_bytes(), 4);
    }

    #[test]
    fn idle_eviction_after_five_minutes() {
        let mut m = Mailboxes::new(ForwardLimits::default());
        m.append(K, b"x".to_vec(), 1000).unwrap();
        assert_eq!(m.evict_idle(1299), 0);
        assert_eq!(m.take(&K, 1200).as_deref(), Some(&b"x"[..]));
        // The drain at 1200 refreshed it.
        assert_eq!(m.evict_idle(1499), 0);
        assert_eq!(m.evict_idle(1500), 1);
        assert!(m.is_empty());
        // A waiting drain keeps its mailbox.
        m.begin_wait(K, 0).unwrap();
        assert_eq!(m.evict_idle(10_000), 0);
        m.end_wait(&K, 10_000);
        assert_eq!(m.evict_idle(10_299), 0);
        assert_eq!(m.evict_idle(10_300), 1);
    }

    #[test]
    fn one_waiting_drain() {
        let mut m = Mailboxes::new(ForwardLimits::default());
        m.begin_wait(K, 0).unwrap();
        assert_eq!(m.begin_wait(K, 0), Err(ForwardError::DrainBusy));
        assert_eq!(ForwardError::DrainBusy.status(), 409);
        m.end_wait(&K, 1);
        m.begin_wait(K, 1).unwrap();
    }

    fn proof_header(
        key: &SigningKey,
        ws: &[u8; 16],
        dev: &[u8; 16],
        ts: u64,
        nonce: [u8; 16],
    ) -> String {
        let sig = key.sign(&proof_message(DRAIN_DOMAIN, ws, dev, ts, &nonce));
        format!(
            "Hive-Drain ts={ts}, nonce={}, sig={}",
            hex::encode(nonce),
            STANDARD.encode(sig.to_bytes())
        )
    }

    #[test]
    fn drain_proof_parse_and_check() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let pk = key.verifying_key().to_bytes();
        let (ws, dev) = K;
        let header = proof_header(&key, &ws, &dev, 1000, [7; 16]);
        let p = parse_proof(&header, DRAIN_SCHEME).unwrap();
        assert_eq!(p.ts, 1000);
        for now in [940, 1000, 1060] {
            assert_eq!(
                check_proof(&p, DRAIN_DOMAIN, &pk, (&ws, &dev), now, 60),
                Ok(())
            );
        }
        for now in [939, 1061] {
            assert_eq!(
                check_proof(&p, DRAIN_DOMAIN, &pk, (&ws, &dev), now, 60),
                Err(ProofError::Window)
            );
        }
        // Another mailbox, domain or key: refused.
        let other = [3; 16];
        assert!(check_proof(&p, DRAIN_DOMAIN, &pk, (&ws, &other), 1000, 60).is_err());
        assert!(check_proof(&p, b"hive-connect-v1\0", &pk, (&ws, &dev), 1000, 60).is_err());
        let pk2 = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
        assert_eq!(
            check_proof(&p, DRAIN_DOMAIN, &pk2, (&ws, &dev), 1000, 60),
            Err(ProofError::Signature(SignatureError::Invalid))
        );
        // Syntax.
        let sig = STANDARD.encode([0u8; 64]);
        let n = "00".repeat(16);
        for (bad, want) in [
            (String::new(), ProofError::Scheme),
            ("Bearer x".to_owned(), ProofError::Scheme),
            (
                format!("Hive-Drain ts=1, nonce={n}"),
                ProofError::Malformed("sig"),
            ),
            (
                format!("Hive-Drain ts=-1, nonce={n}, sig={sig}"),
                ProofError::Malformed("ts"),
            ),
            (
                format!("Hive-Drain ts=1, ts=1, nonce={n}, sig={sig}"),
                ProofError::Malformed("parameter"),
            ),
            (
                format!("Hive-Drain ts=1, nonce=00, sig={sig}"),
                ProofError::Malformed("nonce"),
            ),
            (
                format!("Hive-Drain ts=1, nonce={n}, sig=AAAA"),
                ProofError::Malformed("sig"),
            ),
            (
                format!("Hive-Drain ts=1, nonce={n}, sig={sig}, x=1"),
                ProofError::Malformed("parameter"),
            ),
            (
                format!("Hive-Drain ts=99999999999999999999, nonce={n}, sig={sig}"),
                ProofError::Malformed("ts"),
            ),
        ] {
            assert_eq!(parse_proof(&bad, DRAIN_SCHEME), Err(want), "{bad}");
        }
        assert!(
            parse_proof(
                &format!("hive-drain nonce={n},sig={sig},ts=5"),
                DRAIN_SCHEME
            )
            .is_ok()
        );
    }

    /// The proof vectors of docs/protocol-publications.md (the publication test-vector
    /// key, seed 00..1f; ts 1795327200; nonce 00..0f), for the drain proof and the
    /// streaming park proof (same layout, domain `hive-connect-v1\0`).
    #[test]
    fn proof_vectors() {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = i as u8;
        }
        let key = SigningKey::from_bytes(&seed);
        let ws = crate::hive::record::parse_uuid("0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f").unwrap();
        let dev = crate::hive::record::parse_uuid("a1b2c3d4-e5f6-4738-9a0b-1c2d3e4f5061").unwrap();
        let mut nonce = [0u8; 16];
        for (i, b) in nonce.iter_mut().enumerate() {
            *b = i as u8;
        }
        let cases: [(&[u8], &str, &str); 2] = [
            (
                DRAIN_DOMAIN,
                "686976652d666f72776172642d647261696e2d7631000b6c6f1e3c4b4a8e9d2f6a1c2b3d4e5fa1b2c3d4e5f647389a0b1c2d3e4f5061e084026b00000000000102030405060708090a0b0c0d0e0f",
                "I7nfwpmYX2yykmyWv8gEide+a/2dbizN1yrNuzhJa1l9vo0FmJl2xXX1xuDpsHc/Zp0LRvXr7p19eFp0JeslAw==",
            ),
            (
                CONNECT_DOMAIN,
                "686976652d636f6e6e6563742d7631000b6c6f1e3c4b4a8e9d2f6a1c2b3d4e5fa1b2c3d4e5f647389a0b1c2d3e4f5061e084026b00000000000102030405060708090a0b0c0d0e0f",
                "gLWGY3hUYGancpiQK1VZRJVKxTK2DwuFJcAon9mbHeWK7+WSJneVcsfgivqwkLi/XZGSlJMTkIItvQxfBVptCg==",
            ),
        ];
        for (domain, message, sig) in cases {
            let m = proof_message(domain, &ws, &dev, 1_795_327_200, &nonce);
            assert_eq!(hex::encode(&m), message);
            assert_eq!(STANDARD.encode(key.sign(&m).to_bytes()), sig);
            let header = format!(
                "Hive-Drain ts=1795327200, nonce={}, sig={sig}",
                hex::encode(nonce)
            );
            let p = parse_proof(&header, DRAIN_SCHEME).unwrap();
            let pk = key.verifying_key().to_bytes();
            assert_eq!(
                check_proof(&p, domain, &pk, (&ws, &dev), 1_795_327_200, 60),
                Ok(())
            );
        }
    }

    #[test]
    fn replay_cache_refuses_replays_and_is_bounded() {
        let mut c = ReplayCache::new(2);
        c.check_and_insert(K, [1; 16], 100, 100, 60).unwrap();
        assert_eq!(
            c.check_and_insert(K, [1; 16], 100, 150, 60),
            Err(ForwardError::Replay)
        );
        assert_eq!(ForwardError::Replay.status(), 401);
        // The same nonce for another mailbox is fine.
        c.check_and_insert(([9; 16], [9; 16]), [1; 16], 100, 100, 60)
            .unwrap();
        assert_eq!(
            c.check_and_insert(K, [2; 16], 100, 100, 60),
            Err(ForwardError::ReplayCacheFull)
        );
        // After the window the old entries are dropped.
        c.check_and_insert(K, [2; 16], 161, 161, 60).unwrap();
        assert_eq!(c.len(), 1);
    }
}
