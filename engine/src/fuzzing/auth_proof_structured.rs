//! `auth_proof_structured`: proofs signed with a known secret, so inputs get past the MAC
//! into the window and replay logic. Checks: an uncorrupted in-window proof verifies (in
//! every accepted spelling), an out-of-window one is stale, a corrupted MAC, secret or id
//! never verifies, and a second use of a nonce is refused. `verify_keyed` (the key state
//! made once, as a worker keeps it) gives exactly `verify`'s answer for every input, for
//! secrets of every length (empty, under, at and over SHA-256's 64-byte block).

use crate::auth::{
    MacKey, Operation, ProofError, ReplayCache, Secret, parse_proof, proof_header, sign, verify,
    verify_keyed,
};
use crate::target::RendezvousId;
use arbitrary::Arbitrary;

const WINDOW: u64 = 60;
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// How the signed proof is damaged before verification.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Corruption {
    /// Left intact.
    None,
    /// Flip one bit of the decoded MAC.
    MacBit(u8),
    /// Replace one character of the base64url MAC with a different one.
    MacChar {
        /// Position in the 43-character MAC (modulo).
        pos: u8,
        /// Replacement character, an index into the base64url alphabet (modulo).
        with: u8,
    },
    /// Verify under a secret differing in one byte.
    Secret(u8),
    /// Verify for another id.
    Id(u8),
    /// Verify with the timestamp moved (the MAC covers it).
    Ts(u8),
}

/// One structured input.
#[derive(Debug, Arbitrary)]
pub struct Input {
    /// Rendezvous id bytes.
    pub id: [u8; 16],
    /// Shared secret bytes (any length, empty included).
    pub secret: Vec<u8>,
    /// Nonce bytes, forced into the accepted 8..=32 range.
    pub nonce: Vec<u8>,
    /// The verifier's clock.
    pub now: u64,
    /// `ts - now`, saturating.
    pub ts_offset: i16,
    /// Respell the header: upper-case nonce, reversed parameter order, scheme case.
    pub spelling: u8,
    /// Damage applied before verification.
    pub corruption: Corruption,
    /// Replay cache capacity (modulo 4; 0 must fail closed).
    pub cache_capacity: u8,
}

/// Runs one decoded input.
pub fn run(input: Input) {
    let Input {
        id,
        secret,
        mut nonce,
        now,
        ts_offset,
        spelling,
        corruption,
        cache_capacity,
    } = input;
    nonce.truncate(32);
    while nonce.len() < 8 {
        nonce.push(0xa5);
    }
    let id = RendezvousId(id);
    let secret = Secret::new(secret);
    let ts = now.saturating_add_signed(i64::from(ts_offset));
    let in_window = now.abs_diff(ts) <= WINDOW;

    let header = proof_header(&secret, Operation::Park, &id, ts, &nonce);
    let header = respell(&header, spelling);
    let mut header = header.into_bytes();
    if let Corruption::MacChar { pos, with } = corruption {
        let mac_start = header.len() - 43;
        let i = mac_start + usize::from(pos) % 43;
        let mut c = B64URL[usize::from(with) % 64];
        if c == header[i] {
            c = B64URL[(usize::from(with) + 1) % 64];
        }
        header[i] = c;
        // Either the MAC no longer parses (non-canonical last character) or it differs.
        if let Ok(p) = parse_proof(&header) {
            assert_ne!(p.mac, sign(&secret, Operation::Park, &id, ts, &nonce));
            assert!(verify(Some(&secret), Operation::Park, &id, &p, now, WINDOW).is_err());
        }
        return;
    }

    let mut proof = parse_proof(&header).expect("a signed proof parses in every spelling");
    assert_eq!((proof.ts, proof.nonce.as_bytes()), (ts, &nonce[..]));
    let (mut v_secret, mut v_id) = (secret.clone(), id);
    let corrupted = match corruption {
        Corruption::None | Corruption::MacChar { .. } => false,
        Corruption::MacBit(bit) => {
            proof.mac[usize::from(bit / 8)] ^= 1 << (bit % 8);
            true
        }
        Corruption::Secret(i) => {
            // A changed byte, never an appended zero: HMAC pads short keys with zeros, so
            // `k` and `k || 0` are the same key.
            let mut bytes = secret.expose().to_vec();
            match bytes.get_mut(usize::from(i) % secret.expose().len().max(1)) {
                Some(b) => *b ^= 0x01,
                None => bytes.push(1),
            }
            v_secret = Secret::new(bytes);
            true
        }
        Corruption::Id(i) => {
            v_id.0[usize::from(i) % 16] ^= 0x80;
            true
        }
        Corruption::Ts(d) => {
            proof.ts = proof.ts.wrapping_add(u64::from(d) + 1);
            true
        }
    };

    let got = verify(Some(&v_secret), Operation::Park, &v_id, &proof, now, WINDOW);
    let keyed = MacKey::new(&v_secret);
    assert_eq!(
        verify_keyed(Some(&keyed), Operation::Park, &v_id, &proof, now, WINDOW),
        got,
        "the keyed state answers as the secret does"
    );
    assert_eq!(
        verify_keyed(None, Operation::Park, &v_id, &proof, now, WINDOW),
        verify(None, Operation::Park, &v_id, &proof, now, WINDOW),
    );
    let stale = now.abs_diff(proof.ts) > WINDOW;
    if stale {
        assert_eq!(got, Err(ProofError::StaleTimestamp));
    } else if corrupted {
        assert_eq!(got, Err(ProofError::BadMac));
    } else {
        assert!(in_window);
        assert_eq!(got, Ok(()));
    }
    assert!(verify(None, Operation::Park, &v_id, &proof, now, WINDOW).is_err());

    if got.is_ok() {
        let capacity = usize::from(cache_capacity % 4);
        let mut cache = ReplayCache::new(capacity, WINDOW);
        if capacity == 0 {
            assert_eq!(
                cache.check_and_insert(&id, &proof, now),
                Err(ProofError::ReplayCacheFull)
            );
            return;
        }
        assert_eq!(cache.check_and_insert(&id, &proof, now), Ok(()));
        assert_eq!(
            cache.check_and_insert(&id, &proof, now),
            Err(ProofError::ReplayedNonce)
        );
        // Still refused at the last second the window accepts the proof.
        let last = proof.ts.saturating_add(WINDOW);
        if verify(Some(&secret), Operation::Park, &id, &proof, last, WINDOW).is_ok() && last >= now
        {
            assert_eq!(
                cache.check_and_insert(&id, &proof, last),
                Err(ProofError::ReplayedNonce)
            );
        }
        assert_eq!(cache.len(), 1);
    }
}

/// Equivalent spellings of `Tryst ts=…, nonce=…, mac=…` that must parse the same.
fn respell(header: &str, spelling: u8) -> String {
    let Some(params) = header.strip_prefix("Tryst ") else {
        return header.to_owned();
    };
    let mut parts: Vec<String> = params.split(", ").map(str::to_owned).collect();
    if spelling & 1 != 0 {
        for p in &mut parts {
            if let Some(n) = p.strip_prefix("nonce=") {
                *p = format!("nonce={}", n.to_ascii_uppercase());
            }
        }
    }
    if spelling & 2 != 0 {
        // nonce, ts, mac: the MAC stays last, where MacChar corruption finds it.
        parts.swap(0, 1);
    }
    let scheme = if spelling & 4 != 0 { "tRYST" } else { "Tryst" };
    let sep = if spelling & 8 != 0 { " ,\t" } else { ", " };
    let pad = if spelling & 16 != 0 { "   " } else { " " };
    format!("{scheme}{pad}{}", parts.join(sep))
}
