//! The tag ownership proof: arbitrary `Proxy-Authorization` values through
//! `wire::parse_proof` and the table's verifier (nothing forged verifies), then proofs
//! built from the input and really signed (with the derived key or a registered one),
//! checked through a whole head: fresh ones park exactly once, stale ones and any
//! single-bit change of the signature, the timestamp or the options are refused.
use crate::tag::kdf::HashedTag;
use crate::tag::table::{TagLimits, TagTable};
use crate::tag::wire::{self, CreateOptions, TagMode};
use ed25519_dalek::SigningKey;
use tryst_engine::reject::Rejection;

const NOW: u64 = 1_700_000_000;
const WINDOW: u64 = 60;

fn table() -> TagTable {
    TagTable::new(TagLimits {
        max_tags: 8,
        proof_window_secs: WINDOW,
        replay_capacity: 64,
        ..TagLimits::default()
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let tag = HashedTag([0x5a; 32]);
    // Raw: whatever parses was not signed by the derived key.
    if let Ok(proof) = wire::parse_proof(data) {
        assert!(wire::NONCE_BYTES.contains(&proof.nonce.len()));
        let mut t = table();
        assert!(
            t.park(&tag, &proof, &CreateOptions::default(), proof.ts)
                .is_err()
        );
        assert!(t.is_empty());
    }
    // Structured: [ts offset, flags, mutation index, nonce...].
    let [offset, flags, flip, rest @ ..] = data else {
        return;
    };
    let ts = (NOW + 128).wrapping_sub(u64::from(*offset));
    let nonce: Vec<u8> = rest
        .iter()
        .copied()
        .chain(std::iter::repeat(0))
        .take(16 + usize::from(flags & 15).min(16))
        .collect();
    let registered = SigningKey::from_bytes(&[flags | 1; 32]);
    let options = CreateOptions {
        mode: match (flags >> 4) & 3 {
            1 => Some(TagMode::SingleShot),
            2 => Some(TagMode::LongTerm),
            _ => None,
        },
        duration_secs: (flags & 0x40 != 0).then_some(u64::from(*offset) + 1),
        owner_key: (flags & 0x80 != 0).then(|| registered.verifying_key()),
    };
    let key = if options.owner_key.is_some() {
        registered
    } else {
        tag.derived_signing_key()
    };
    let head = wire::park_request(&tag, &key, ts, &nonce, &options);
    let mut value = head
        .lines()
        .find_map(|l| l.strip_prefix("Proxy-Authorization: "))
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    let proof = wire::parse_proof(&value).expect("a built proof parses");
    let mut t = table();
    let fresh = ts.abs_diff(NOW) <= WINDOW;
    match t.park(&tag, &proof, &options, NOW) {
        Ok(_) => {
            assert!(fresh);
            // Options are signed: the same proof under other options does not verify
            // (under the same options it is a replay).
            let none = CreateOptions::default();
            let want = if options == none {
                Rejection::ReplayedNonce
            } else {
                Rejection::BadProof
            };
            assert_eq!(t.park(&tag, &proof, &none, NOW), Err(want));
            assert_eq!(
                t.park(&tag, &proof, &options, NOW),
                Err(Rejection::ReplayedNonce)
            );
        }
        Err(r) => {
            assert!(!fresh);
            assert_eq!(r, Rejection::StaleTimestamp);
        }
    }
    // Any single-bit change of the signature text is refused by a fresh table.
    let sig_at = value.len() - 86;
    let i = sig_at + usize::from(*flip) % 86;
    value[i] ^= 1 << (flip % 7);
    if let Ok(changed) = wire::parse_proof(&value)
        && changed != proof
    {
        assert!(table().park(&tag, &changed, &options, NOW).is_err());
    }
}
