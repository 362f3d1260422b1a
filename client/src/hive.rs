//! The Hive streaming fallback (`CONNECT hive:<ws>/<device>`), device side: the target,
//! the signed message of a `Hive` proof and the park proof header. The relay's verifier
//! (`tryst_relay::hive`) checks proofs over the same [`proof_message`], so the signed
//! bytes cannot drift. Exact formats: docs/protocol-publications.md §7 and
//! docs/compat/hive.md.

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

/// The park head of a device: `CONNECT hive:<ws>/<device> HTTP/1.1`, the
/// `Hive-Publication` header (`publication_b64`: the standard padded base64 of a signed
/// publication body) and the `Proxy-Authorization` proof `proof`, then a blank line.
pub fn park_head(target: &HiveTarget, publication_b64: &str, proof: &str) -> String {
    format!(
        "CONNECT {} HTTP/1.1\r\n{PUBLICATION_HEADER}: {publication_b64}\r\nProxy-Authorization: {proof}\r\n\r\n",
        target.target()
    )
}

/// The reach head of a client: `CONNECT hive:<ws>/<device> HTTP/1.1`, no proof.
pub fn reach_head(target: &HiveTarget) -> String {
    format!("CONNECT {} HTTP/1.1\r\n\r\n", target.target())
}

/// A Hive device: its workspace and device ids, its account id and its Ed25519 signing
/// key (the key its publications name). `Debug` never shows the key's secret half.
#[derive(Clone)]
pub struct Device {
    /// Workspace and device.
    pub target: HiveTarget,
    /// `publisherAccountID`.
    pub account: [u8; 16],
    /// The signing key.
    pub key: SigningKey,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("target", &self.target.target())
            .field(
                "public_key",
                &hex::encode(self.key.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

/// Default `ttlSeconds` of a [`Publisher`]'s publications.
pub const DEFAULT_TTL_SECS: u32 = 120;
/// Longest a [`Publisher`] reuses one signed publication: the relay refuses a
/// publication whose `publishedAt` is more than its skew window (300 s) from its clock,
/// whatever its TTL, so a publication is re-signed at half its TTL or after 60 s,
/// whichever comes first.
pub const MAX_REUSE_SECS: u64 = 60;

/// A device's streaming-fallback parks over time: it signs a publication (no
/// candidates: the device is reached through the relay) and re-signs it when it is
/// [`Publisher::reuse_secs`] old (or the clock went back), so every park carries a
/// fresh one; each park gets a fresh proof and nonce.
#[derive(Debug)]
pub struct Publisher {
    device: Device,
    ttl: u32,
    current: std::sync::Mutex<Option<(u64, String)>>,
}

impl Publisher {
    /// A publisher for `device` whose publications ask for `ttl` seconds (at least 2;
    /// keep it within the relay's `--max-ttl`, 300 s by default).
    pub fn new(device: Device, ttl: u32) -> Self {
        Self {
            device,
            ttl: ttl.max(2),
            current: std::sync::Mutex::new(None),
        }
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// How long one signed publication is reused: `min(ttl / 2, 60 s)`.
    pub fn reuse_secs(&self) -> u64 {
        (u64::from(self.ttl) / 2).min(MAX_REUSE_SECS)
    }

    /// A signed publication body published at `now`.
    pub fn sign_at(&self, now: u64) -> Vec<u8> {
        let record = crate::publication::Record {
            workspace: self.device.target.workspace,
            account: self.device.account,
            device: self.device.target.device,
            signing_key: self.device.key.verifying_key().to_bytes(),
            candidates: Vec::new(),
            published_at: crate::publication::format_rfc3339_utc(
                i64::try_from(now).unwrap_or(i64::MAX),
            ),
            ttl_seconds: self.ttl,
        };
        crate::publication::sign_publication(&self.device.key, &record)
    }

    /// The base64 publication to carry at `now`: the current one, or a newly signed one
    /// when the current one is [`Self::reuse_secs`] old or from the future.
    pub fn publication_at(&self, now: u64) -> String {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*current {
            Some((at, b64)) if *at <= now && now - *at < self.reuse_secs() => b64.clone(),
            _ => {
                let b64 = STANDARD.encode(self.sign_at(now));
                *current = Some((now, b64.clone()));
                b64
            }
        }
    }

    /// The park head at `now` with `nonce`.
    pub fn park_head_at(&self, now: u64, nonce: &[u8; 16]) -> String {
        let target = &self.device.target;
        let proof = park_proof_header(&self.device.key, target, now, nonce);
        park_head(target, &self.publication_at(now), &proof)
    }

    /// The park head now, with a fresh random nonce.
    pub fn park_head_now(&self) -> String {
        let nonce: [u8; 16] = rand::random();
        self.park_head_at(crate::heads::now_unix(), &nonce)
    }
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
    fn a_publisher_reuses_its_publication_then_re_signs_it() {
        let p = Publisher::new(
            Device {
                target: HiveTarget {
                    workspace: [1; 16],
                    device: [2; 16],
                },
                account: [3; 16],
                key: SigningKey::from_bytes(&[9; 32]),
            },
            90,
        );
        assert_eq!(p.reuse_secs(), 45);
        let first = p.publication_at(1_000);
        assert_eq!(p.publication_at(1_044), first);
        let second = p.publication_at(1_045);
        assert_ne!(second, first);
        assert_eq!(second, STANDARD.encode(p.sign_at(1_045)));
        // A clock that went back gets a new one too.
        assert_ne!(p.publication_at(1_000), second);
        // Long TTLs are still re-signed within the relay's skew window.
        let long = Publisher::new(p.device().clone(), 3_600);
        assert_eq!(long.reuse_secs(), MAX_REUSE_SECS);
        let head = p.park_head_at(1_000, &[5; 16]);
        assert!(head.starts_with(
            "CONNECT hive:01010101-0101-0101-0101-010101010101/02020202-0202-0202-0202-020202020202 HTTP/1.1\r\nHive-Publication: "
        ));
        assert!(head.contains(
            "\r\nProxy-Authorization: Hive ts=1000, nonce=05050505050505050505050505050505, sig="
        ));
        assert!(head.ends_with("\r\n\r\n"));
        assert!(!format!("{:?}", p.device()).contains(&hex::encode([9u8; 32])));
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
