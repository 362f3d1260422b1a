//! `auth_proof_raw`: the real proof parser and verifier on arbitrary bytes. Never panics,
//! and nothing forged without the secret verifies, with the secret or with its key state
//! made once (`verify_keyed`, as a worker checks proofs).

use crate::auth::{
    MacKey, Operation, ProofError, ReplayCache, Secret, parse_proof, verify, verify_keyed,
};
use crate::target::RendezvousId;

/// Runs one input as a `Proxy-Authorization` value.
pub fn run(data: &[u8]) {
    let Ok(proof) = parse_proof(data) else {
        return;
    };
    assert!((8..=32).contains(&proof.nonce.len()));
    // `ts` is kept as sent: its zeros and significant digits fit the 20-digit bound.
    let digits = proof.ts.checked_ilog10().map_or(1, |d| d as usize + 1);
    assert!(usize::from(proof.ts_leading_zeros) + digits <= 20);
    let id = RendezvousId([0x42; 16]);
    let secret = Secret::new(b"fuzz fixed secret".to_vec());
    // `now == ts` passes the window, so this exercises the MAC comparison itself.
    let got = verify(Some(&secret), Operation::Park, &id, &proof, proof.ts, 60);
    assert_eq!(
        got,
        Err(ProofError::BadMac),
        "a proof forged without the secret verified"
    );
    assert_eq!(
        verify_keyed(
            Some(&MacKey::new(&secret)),
            Operation::Park,
            &id,
            &proof,
            proof.ts,
            60
        ),
        Err(ProofError::BadMac),
        "a proof forged without the secret verified against its key state"
    );
    assert_eq!(
        verify(None, Operation::Park, &id, &proof, proof.ts, 60),
        Err(ProofError::BadMac)
    );
    assert_eq!(
        verify_keyed(None, Operation::Park, &id, &proof, proof.ts, 60),
        Err(ProofError::BadMac)
    );
    let _ = verify(Some(&secret), Operation::Park, &id, &proof, 0, 60);
    let _ = verify(
        Some(&secret),
        Operation::Park,
        &id,
        &proof,
        u64::MAX,
        u64::MAX,
    );
    // A cache that started at (or after) the proof's second refuses it: an earlier
    // process may have accepted it.
    let mut restarted = ReplayCache::new(2, 60).started_at(proof.ts);
    assert_eq!(
        restarted.check_and_insert(&id, &proof, proof.ts),
        Err(ProofError::ReplayedNonce)
    );
    let mut cache = ReplayCache::new(2, 60);
    assert_eq!(cache.check_and_insert(&id, &proof, proof.ts), Ok(()));
    assert_eq!(
        cache.check_and_insert(&id, &proof, proof.ts),
        Err(ProofError::ReplayedNonce)
    );
}
