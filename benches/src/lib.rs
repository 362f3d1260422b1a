//! Shared fixtures of the benches and the instruction-count scenarios (`instr`).
//!
//! Everything here is deterministic: fixed Ed25519 seeds (Ed25519 signing is itself
//! deterministic), fixed ids, fixed timestamps. Nothing reads the clock.

#![forbid(unsafe_code)]

/// Fixtures for the Hive family (`tryst_relay::hive`) and the tag family
/// (`tryst_relay::tag`).
pub mod fixtures {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use ed25519_dalek::{Signer as _, SigningKey};
    use tryst_relay::hive::forward::{DRAIN_DOMAIN, DRAIN_SCHEME, proof_message};
    use tryst_relay::hive::record::{Candidate, Record};
    use tryst_relay::hive::verify::{VerifiedPublication, sign_publication};
    use tryst_relay::tag::kdf::HashedTag;
    use tryst_relay::tag::wire::{CreateOptions, park_message};

    /// The fixtures' unix time: 2026-11-22T06:00:00Z, the `publishedAt` of every
    /// fixture publication.
    pub const T0: i64 = 1_795_327_200;
    /// The fixture workspace.
    pub const WORKSPACE: [u8; 16] = [0x0b; 16];
    /// The fixture account.
    pub const ACCOUNT: [u8; 16] = [0x5d; 16];
    /// The fixture device.
    pub const DEVICE: [u8; 16] = [0xa1; 16];
    /// The fixture hashed tag (the relay only ever sees hashed tags).
    pub const TAG: HashedTag = HashedTag([0x3c; 32]);

    /// The fixture device's Ed25519 key: seed bytes 0x00, 0x01, ..., 0x1f.
    pub fn device_key() -> SigningKey {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = i as u8;
        }
        SigningKey::from_bytes(&seed)
    }

    /// A record of the fixture device with `candidates` candidates (1..=16), published
    /// at [`T0`] for 90 s.
    pub fn record(candidates: usize) -> Record {
        Record {
            workspace: WORKSPACE,
            account: ACCOUNT,
            device: DEVICE,
            signing_key: device_key().verifying_key().to_bytes(),
            candidates: (0..candidates)
                .map(|i| Candidate {
                    kind: if i == 0 { "stunReflexive" } else { "hostLocal" }.into(),
                    host: format!("192.0.2.{}", i + 1),
                    port: 51820 + i as u16,
                    priority: 100 - i as u32,
                })
                .collect(),
            published_at: "2026-11-22T06:00:00Z".into(),
            ttl_seconds: 90,
        }
    }

    /// The signed POST /v1/rendezvous body of [`record`]`(candidates)`.
    pub fn publication(candidates: usize) -> Vec<u8> {
        sign_publication(&device_key(), &record(candidates))
    }

    /// A verified publication of `device` in `workspace` as the store holds it (built
    /// directly, without signing: the store never looks at the signature), published at
    /// [`T0`] + `nanos` ns and fresh until [`T0`] + 300 s.
    pub fn stored(
        workspace: [u8; 16],
        device: [u8; 16],
        nanos: u32,
        body: &[u8],
    ) -> VerifiedPublication {
        VerifiedPublication {
            workspace,
            device,
            account: ACCOUNT,
            signing_key: device_key().verifying_key().to_bytes(),
            published_at_unix: T0,
            expires_at_unix: T0 + 300,
            body: body.to_vec(),
            published_at_nanos: nanos,
        }
    }

    /// The id bytes of number `n` (its little-endian bytes, then `fill`).
    pub fn numbered(n: u32, fill: u8) -> [u8; 16] {
        let mut id = [fill; 16];
        id[..4].copy_from_slice(&n.to_le_bytes());
        id
    }

    /// The nonce of number `n` (16 bytes).
    pub fn nonce(n: u64) -> [u8; 16] {
        let mut out = [0x6e; 16];
        out[..8].copy_from_slice(&n.to_le_bytes());
        out
    }

    /// The fixture device's `Authorization: Hive-Drain ...` value at `ts` with `nonce`.
    pub fn drain_header(ts: u64, nonce: &[u8; 16]) -> String {
        let message = proof_message(DRAIN_DOMAIN, &WORKSPACE, &DEVICE, ts, nonce);
        let sig = device_key().sign(&message).to_bytes();
        format!(
            "{DRAIN_SCHEME} ts={ts}, nonce={}, sig={}",
            hex::encode(nonce),
            STANDARD.encode(sig)
        )
    }

    /// The publisher's `Proxy-Authorization: Tag ...` value for [`TAG`] at `ts` with
    /// `nonce`, signed with the tag's derived key over the creation `options`.
    pub fn tag_proof_header(ts: u64, nonce: &[u8], options: &CreateOptions) -> String {
        let message = park_message(&TAG, ts, nonce, options);
        let sig = TAG.derived_signing_key().sign(&message).to_bytes();
        format!(
            "Tag ts={ts}, nonce={}, sig={}",
            hex::encode(nonce),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use tryst_relay::hive::forward::{DRAIN_DOMAIN, DRAIN_SCHEME, check_proof, parse_proof};
    use tryst_relay::hive::verify::{PublicationPolicy, verify_publication};
    use tryst_relay::tag::table::{TagLimits, TagTable};
    use tryst_relay::tag::wire;

    #[test]
    fn publications_verify_and_are_deterministic() {
        for n in [1, 2, 16] {
            let body = publication(n);
            assert_eq!(body, publication(n), "signing is deterministic");
            let p = verify_publication(&body, T0, &PublicationPolicy::default())
                .unwrap_or_else(|e| panic!("{n} candidates: {e}"));
            assert_eq!((p.workspace, p.device), (WORKSPACE, DEVICE));
        }
    }

    #[test]
    fn drain_header_checks_and_a_tampered_one_does_not() {
        let key = device_key().verifying_key().to_bytes();
        let header = drain_header(T0 as u64, &nonce(7));
        let proof = parse_proof(&header, DRAIN_SCHEME).expect("parses");
        check_proof(&proof, DRAIN_DOMAIN, &key, (&WORKSPACE, &DEVICE), T0, 60).expect("checks");
        let mut bad = proof;
        bad.nonce = nonce(8);
        assert!(check_proof(&bad, DRAIN_DOMAIN, &key, (&WORKSPACE, &DEVICE), T0, 60).is_err());
    }

    #[test]
    fn tag_proofs_park_once_each() {
        let now = T0 as u64;
        let mut table = TagTable::new(TagLimits::default());
        for n in 0..3 {
            let header = tag_proof_header(now, &nonce(n), &Default::default());
            let proof = wire::parse_proof(header.as_bytes()).expect("parses");
            let parked = table
                .park(&TAG, &proof, &Default::default(), now)
                .expect("parks");
            assert_eq!(parked.created, n == 0);
            assert!(
                table.park(&TAG, &proof, &Default::default(), now).is_err(),
                "replay"
            );
        }
        assert_eq!(wire::parse_target(&TAG.target()).expect("parses"), TAG);
    }
}
