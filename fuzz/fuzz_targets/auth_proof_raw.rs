//! The real proof parser and verifier on arbitrary bytes: never panics, and nothing
//! forged without the secret verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tryst_engine::auth::{Operation, ProofError, ReplayCache, Secret, parse_proof, verify};
use tryst_engine::target::RendezvousId;

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = parse_proof(data) else {
        return;
    };
    assert!((8..=32).contains(&proof.nonce.len()));
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
        verify(None, Operation::Park, &id, &proof, proof.ts, 60),
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
    let mut cache = ReplayCache::new(2, 60);
    assert_eq!(cache.check_and_insert(&id, &proof, proof.ts), Ok(()));
    assert_eq!(
        cache.check_and_insert(&id, &proof, proof.ts),
        Err(ProofError::ReplayedNonce)
    );
});
