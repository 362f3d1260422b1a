//! The SDK's `OwnershipSignature` (`QLFOwnershipSignature+FactoryMethods.m`): an
//! Ed25519 signature over
//!
//! ```text
//! marshal(op) ‖ data ‖ marshal(b<nonce>) ‖ marshal(I<timestamp, int64>)
//! ```
//!
//! where `op` is the `OperationType` union member (`OperationCreate`, `OperationGet`,
//! `OperationList`, `OperationDelete`) and `data` the marshalled arguments the
//! operation covers, each without a message header. The relay checks: the op is the one
//! the operation requires, `|now − timestamp| <= window`, the nonce is 1..=64 bytes and
//! unseen for this key within the window ([`ReplayCache`], bounded, fails closed), and
//! the signature verifies strictly (`crate::ed25519`). Pure: `now` is passed in.

use super::Failure;
use super::lf::{Record, Value};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashSet};

/// The four `OperationType` members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `OperationCreate` (activate, publish).
    Create,
    /// `OperationGet` (getInfo).
    Get,
    /// `OperationList` (getResponses, subscribeToResponses, queryItems, subscribe).
    List,
    /// `OperationDelete` (deactivate, acknowledgeReceipt).
    Delete,
}

impl Op {
    /// The constructor name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "OperationCreate",
            Self::Get => "OperationGet",
            Self::List => "OperationList",
            Self::Delete => "OperationDelete",
        }
    }
}

/// The bytes an ownership signature covers.
pub fn signed_bytes(op: Op, data: &[u8], nonce: &[u8], timestamp_ms: i64) -> Vec<u8> {
    let mut out = Value::Record(Record::unit(op.name())).encode();
    out.extend_from_slice(data);
    Value::Bytes(nonce.to_vec()).encode_into(&mut out);
    Value::Int64(timestamp_ms).encode_into(&mut out);
    out
}

/// Builds an `OwnershipSignature` value (the client side; tests and tools).
pub fn sign(
    key: &ed25519_dalek::SigningKey,
    op: Op,
    data: &[u8],
    nonce: &[u8],
    timestamp_ms: i64,
) -> Value {
    use ed25519_dalek::Signer as _;
    let sig = key.sign(&signed_bytes(op, data, nonce, timestamp_ms));
    Value::Record(Record::new(
        "OwnershipSignature",
        vec![
            ("nonce", Value::Bytes(nonce.to_vec())),
            ("op", Value::Record(Record::unit(op.name()))),
            ("signature", Value::Bytes(sig.to_bytes().to_vec())),
            ("timestamp", Value::Int64(timestamp_ms)),
        ],
    ))
}

/// Remembers (key, nonce) pairs for the signature window. Bounded: when full of
/// unexpired entries it refuses ([`Failure::ReplayCacheFull`]) instead of forgetting.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    seen: HashSet<[u8; 32]>,
    by_expiry: BTreeMap<u64, Vec<[u8; 32]>>,
}

impl ReplayCache {
    /// A cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: HashSet::new(),
            by_expiry: BTreeMap::new(),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Records a verified signature ([`verify`]); refuses one recorded before within
    /// its window, or any when full of unexpired entries.
    pub fn insert(&mut self, v: &Verified, now_ms: u64) -> Result<(), Failure> {
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() >= now_ms {
                break;
            }
            for k in entry.remove() {
                self.seen.remove(&k);
            }
        }
        let id = v.id;
        if self.seen.contains(&id) {
            return Err(Failure::ReplayedSignature);
        }
        if self.seen.len() >= self.capacity {
            return Err(Failure::ReplayCacheFull);
        }
        self.seen.insert(id);
        self.by_expiry.entry(v.expiry_ms).or_default().push(id);
        Ok(())
    }
}

/// A signature that verified, before any replay cache saw it: what a replay cache
/// records (locally, or cluster-wide: `crate::cluster::replay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// SHA-256 over the signing key, the nonce's length and the nonce.
    pub id: [u8; 32],
    /// Unix ms after which its timestamp can no longer pass the window check.
    pub expiry_ms: u64,
}

/// Checks `sig` (an `OwnershipSignature` value) for `op` over `data` under `key`.
pub fn check(
    sig: &Value,
    key: &VerifyingKey,
    op: Op,
    data: &[u8],
    now_ms: u64,
    window_ms: u64,
    replay: &mut ReplayCache,
) -> Result<(), Failure> {
    let v = verify(sig, key, op, data, now_ms, window_ms)?;
    replay.insert(&v, now_ms)
}

/// [`check`] without the replay cache: the signature's form, time window and
/// Ed25519 signature.
pub fn verify(
    sig: &Value,
    key: &VerifyingKey,
    op: Op,
    data: &[u8],
    now_ms: u64,
    window_ms: u64,
) -> Result<Verified, Failure> {
    let bad = |_| Failure::BadArguments;
    let rec = sig.as_record().map_err(bad)?;
    if rec.name != "OwnershipSignature" {
        return Err(Failure::BadArguments);
    }
    let nonce = rec.field("nonce").and_then(Value::as_bytes).map_err(bad)?;
    let signed_op = rec.field("op").and_then(Value::as_record).map_err(bad)?;
    let signature = rec
        .field("signature")
        .and_then(Value::as_bytes)
        .map_err(bad)?;
    let ts = rec
        .field("timestamp")
        .and_then(Value::as_i64)
        .map_err(bad)?;
    if rec.fields.len() != 4 || !signed_op.fields.is_empty() {
        return Err(Failure::BadArguments);
    }
    if nonce.is_empty() || nonce.len() > 64 {
        return Err(Failure::BadArguments);
    }
    let Ok(signature) = <[u8; 64]>::try_from(signature) else {
        return Err(Failure::BadSignature);
    };
    if signed_op.name != op.name() {
        return Err(Failure::BadSignature);
    }
    let ts_ms = u64::try_from(ts).map_err(|_| Failure::StaleSignature)?;
    if ts_ms.abs_diff(now_ms) > window_ms {
        return Err(Failure::StaleSignature);
    }
    let message = signed_bytes(op, data, nonce, ts);
    crate::ed25519::verify_with(key, &message, &signature).map_err(|_| Failure::BadSignature)?;
    // Kept until the timestamp can no longer pass the window check.
    let expiry_ms = ts_ms.max(now_ms).saturating_add(window_ms);
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([nonce.len() as u8]);
    h.update(nonce);
    Ok(Verified {
        id: h.finalize().into(),
        expiry_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn signed_bytes_follow_the_sdk_layout() {
        let bytes = signed_bytes(Op::List, b"DATA", &[1, 2], 5);
        assert_eq!(
            bytes,
            b"(1:C14:'OperationList)DATA3:b\x01\x029:I\x00\x00\x00\x00\x00\x00\x00\x05"
        );
    }

    #[test]
    fn good_bad_stale_and_replayed() {
        let sk = SigningKey::from_bytes(&[9; 32]);
        let vk = sk.verifying_key();
        let mut replay = ReplayCache::new(8);
        let sig = sign(&sk, Op::Delete, b"x", &[7; 16], NOW as i64);
        assert_eq!(
            check(&sig, &vk, Op::Delete, b"x", NOW, 60_000, &mut replay),
            Ok(())
        );
        assert_eq!(
            check(&sig, &vk, Op::Delete, b"x", NOW + 1, 60_000, &mut replay),
            Err(Failure::ReplayedSignature)
        );
        let sig = sign(&sk, Op::Delete, b"x", &[8; 16], NOW as i64);
        assert_eq!(
            check(&sig, &vk, Op::Delete, b"y", NOW, 60_000, &mut replay),
            Err(Failure::BadSignature)
        );
        assert_eq!(
            check(&sig, &vk, Op::List, b"x", NOW, 60_000, &mut replay),
            Err(Failure::BadSignature)
        );
        assert_eq!(
            check(
                &sig,
                &vk,
                Op::Delete,
                b"x",
                NOW + 60_001,
                60_000,
                &mut replay
            ),
            Err(Failure::StaleSignature)
        );
        let other = SigningKey::from_bytes(&[10; 32]).verifying_key();
        assert_eq!(
            check(&sig, &other, Op::Delete, b"x", NOW, 60_000, &mut replay),
            Err(Failure::BadSignature)
        );
        let mut full = ReplayCache::new(0);
        assert_eq!(
            check(&sig, &vk, Op::Delete, b"x", NOW, 60_000, &mut full),
            Err(Failure::ReplayCacheFull)
        );
        // Expired entries are forgotten once the timestamp can no longer pass.
        let sig = sign(&sk, Op::Get, b"", &[1; 16], NOW as i64);
        let mut one = ReplayCache::new(1);
        assert_eq!(check(&sig, &vk, Op::Get, b"", NOW, 1000, &mut one), Ok(()));
        let later = sign(&sk, Op::Get, b"", &[2; 16], (NOW + 500) as i64);
        assert_eq!(
            check(&later, &vk, Op::Get, b"", NOW + 500, 1000, &mut one),
            Err(Failure::ReplayCacheFull)
        );
        assert_eq!(
            check(&later, &vk, Op::Get, b"", NOW + 1001, 1000, &mut one),
            Ok(())
        );
    }
}
