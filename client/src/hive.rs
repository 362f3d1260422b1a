//! The Hive streaming fallback (`CONNECT hive:<ws>/<device>`), device side: the target,
//! the signed message of a `Hive` proof and the park proof header. The relay's verifier
//! (`tryst_relay::hive`) checks proofs over the same [`proof_message`], so the signed
//! bytes cannot drift. Exact formats: docs/protocol-publications.md §7 and
//! docs/compat/hive-stream.md.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey};
use tryst_engine::target::{KeySpace, RendezvousId, RendezvousKey};

/// The `CONNECT` target scheme.
pub const SCHEME: &str = "hive:";
/// The `Proxy-Authorization` scheme of a park proof.
pub const PROOF_SCHEME: &str = "Hive";
/// The header carrying a device's publication on a park.
pub const PUBLICATION_HEADER: &str = "Hive-Publication";
/// Domain tag of the streaming fallback park proof.
pub const CONNECT_DOMAIN: &[u8] = b"hive-connect-v1\0";

/// A `hive:` target: workspace and device ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiveTarget {
    /// The workspace UUID's 16 bytes.
    pub workspace: [u8; 16],
    /// The device UUID's 16 bytes.
    pub device: [u8; 16],
}

impl HiveTarget {
    /// The rendezvous key: `derived(Hive, ws ‖ device)`.
    pub fn key(&self) -> RendezvousKey {
        let mut data = [0u8; 32];
        data[..16].copy_from_slice(&self.workspace);
        data[16..].copy_from_slice(&self.device);
        RendezvousKey::derived(KeySpace::Hive, &data)
    }

    /// The canonical `CONNECT` target, `hive:<ws>/<device>` (lower-case UUIDs).
    pub fn target(&self) -> String {
        format!(
            "{SCHEME}{}/{}",
            RendezvousId(self.workspace),
            RendezvousId(self.device)
        )
    }
}

/// The signed message of a Hive proof: `domain ‖ ws ‖ device ‖ ts u64 LE ‖ nonce`.
pub fn proof_message(
    domain: &[u8],
    ws: &[u8; 16],
    device: &[u8; 16],
    ts: u64,
    nonce: &[u8; 16],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + 56);
    m.extend_from_slice(domain);
    m.extend_from_slice(ws);
    m.extend_from_slice(device);
    m.extend_from_slice(&ts.to_le_bytes());
    m.extend_from_slice(nonce);
    m
}

/// The `Proxy-Authorization` value of a park by `key` (the publication's signing key) at
/// `ts` with `nonce`: `Hive ts=<ts>, nonce=<32 hex>, sig=<base64>`.
pub fn park_proof_header(
    key: &SigningKey,
    target: &HiveTarget,
    ts: u64,
    nonce: &[u8; 16],
) -> String {
    let msg = proof_message(CONNECT_DOMAIN, &target.workspace, &target.device, ts, nonce);
    let sig = key.sign(&msg).to_bytes();
    format!(
        "{PROOF_SCHEME} ts={ts}, nonce={}, sig={}",
        hex::encode(nonce),
        STANDARD.encode(sig)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_is_exact() {
        let m = proof_message(CONNECT_DOMAIN, &[1; 16], &[2; 16], 0x0102, &[3; 16]);
        assert_eq!(&m[..16], CONNECT_DOMAIN);
        assert_eq!(&m[16..32], &[1; 16]);
        assert_eq!(&m[32..48], &[2; 16]);
        assert_eq!(&m[48..56], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&m[56..], &[3; 16]);
    }

    #[test]
    fn the_target_is_canonical() {
        let t = HiveTarget {
            workspace: [0xab; 16],
            device: [0x01; 16],
        };
        assert_eq!(
            t.target(),
            "hive:abababab-abab-abab-abab-abababababab/01010101-0101-0101-0101-010101010101"
        );
    }
}
