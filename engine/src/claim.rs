//! Cluster-wide claims (issue #16): what must hold across several relay nodes, decided
//! by one atomic `SET NX` in the cluster directory, never on the splice path.
//!
//! A [`Router`](crate::route::Router) may attach a [`Claim`] to its last decision
//! ([`Router::claim`](crate::route::Router::claim)): "this proof's nonce is used", "this
//! single-shot tag is consumed". On a single node nothing asks for claims and routers'
//! claims are dropped unread. With a cluster, the owner worker keeps the connection
//! pending, sends the claim to the supervisor ([`encode_request`], a datagram on the
//! HTTP hand-off socket), and the supervisor answers a [`Verdict`] ([`encode_verdict`]).
//! Won: the route is carried out. Lost: the worker routes the head again, and the
//! family, whose local state now holds the nonce (or the consumed tag), gives its own
//! exact refusal. Unavailable (the directory is down, the hand-off full, or no answer
//! before the claim's deadline): [`OnUnavailable`] decides.
//!
//! The codecs here parse bytes from another process (supervisor and workers trust each
//! other, but the parsers are still total and fuzzed: `fuzz/fuzz_targets/claim_codec.rs`).

use crate::target::{KeySpace, RendezvousKey};

/// Longest claim key, bytes.
pub const MAX_KEY_LEN: usize = 200;

/// Longest a worker waits for a verdict before settling the claim as unavailable (the
/// supervisor's directory commands time out after 1 s, so it answers well before this
/// unless it is itself stuck). Families whose timers start at a claimed decision (a
/// consumed single-shot tag's publisher grace) add this in a cluster.
pub const CLAIM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// What to do when a claim cannot be decided cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Carry out the route: the family's local state already checked it (replay
    /// caches fall back to the node's own cache). Counted as a fallback.
    Proceed,
    /// Refuse with this rejection's response (an operation that is only correct when
    /// atomic across nodes, e.g. consuming a single-shot tag).
    Refuse(crate::reject::Rejection),
}

/// A cluster-wide claim attached to a route decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The directory key (ASCII graphic, 1..=[`MAX_KEY_LEN`] bytes), e.g.
    /// `tryst:replay:native:<id hex>:<nonce hex>`.
    pub key: String,
    /// How long the key must live, seconds (at least 1).
    pub ttl_secs: u32,
    /// What happens when the claim cannot be decided.
    pub on_unavailable: OnUnavailable,
}

/// The supervisor's answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// This node set the key first: carry out the route.
    Won = 1,
    /// Another node (or an earlier request) holds the key: refuse as the family does.
    Lost = 2,
    /// The directory could not decide (down, timed out, hand-off full).
    Unavailable = 3,
}

impl Verdict {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Won),
            2 => Some(Self::Lost),
            3 => Some(Self::Unavailable),
            _ => None,
        }
    }
}

/// A claim as the supervisor receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The worker that sent it (where the verdict goes).
    pub worker: u16,
    /// The worker's id for it (echoed in the verdict).
    pub id: u64,
    /// The key's lifetime, seconds (at least 1).
    pub ttl_secs: u32,
    /// The key.
    pub key: String,
}

/// True for a usable claim key: 1..=[`MAX_KEY_LEN`] ASCII graphic bytes.
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.iter().all(u8::is_ascii_graphic)
}

/// Encodes a claim request (without the message kind byte): worker (u16 LE), id (u64
/// LE), ttl (u32 LE), then the key's bytes.
pub fn encode_request(r: &ClaimRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + r.key.len());
    out.extend_from_slice(&r.worker.to_le_bytes());
    out.extend_from_slice(&r.id.to_le_bytes());
    out.extend_from_slice(&r.ttl_secs.to_le_bytes());
    out.extend_from_slice(r.key.as_bytes());
    out
}

/// Decodes [`encode_request`]'s bytes; `None` unless the layout, a ttl of at least 1
/// and a [`valid_key`] are all there.
pub fn decode_request(b: &[u8]) -> Option<ClaimRequest> {
    let worker = u16::from_le_bytes(b.get(0..2)?.try_into().ok()?);
    let id = u64::from_le_bytes(b.get(2..10)?.try_into().ok()?);
    let ttl_secs = u32::from_le_bytes(b.get(10..14)?.try_into().ok()?);
    let key = b.get(14..)?;
    if ttl_secs == 0 || !valid_key(key) {
        return None;
    }
    Some(ClaimRequest {
        worker,
        id,
        ttl_secs,
        key: std::str::from_utf8(key).ok()?.to_owned(),
    })
}

/// Encodes a verdict (without the kind byte): id (u64 LE), verdict byte.
pub fn encode_verdict(id: u64, v: Verdict) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[..8].copy_from_slice(&id.to_le_bytes());
    out[8] = v as u8;
    out
}

/// Decodes [`encode_verdict`]'s bytes (exactly 9).
pub fn decode_verdict(b: &[u8]) -> Option<(u64, Verdict)> {
    if b.len() != 9 {
        return None;
    }
    let id = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    Some((id, Verdict::from_byte(b[8])?))
}

/// Encodes an eviction order (without the kind byte): space byte, 16 key bytes.
pub fn encode_evict(key: &RendezvousKey) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[0] = key.space() as u8;
    out[1..].copy_from_slice(key.bytes());
    out
}

/// Decodes [`encode_evict`]'s bytes (exactly 17, a known space).
pub fn decode_evict(b: &[u8]) -> Option<RendezvousKey> {
    if b.len() != 17 {
        return None;
    }
    let space = match b[0] {
        0 => KeySpace::Uuid,
        1 => KeySpace::Tag,
        2 => KeySpace::Hive,
        _ => return None,
    };
    let bytes: [u8; 16] = b[1..].try_into().ok()?;
    Some(RendezvousKey::from_parts(space, bytes))
}

/// Prefix of the claim keys that announce a replace park ([`replace_claim`]).
pub const REPLACE_PREFIX: &str = "tryst:replace:";

/// The claim a clustered worker attaches to a replace park (`ParkMode::Replace`):
/// `tryst:replace:<space byte>:<key hex>`, on its own when the router gave no claim,
/// after the router's claim (a park proof's nonce, e.g. a single-shot `tag:` park) was
/// won otherwise. The supervisor announces it to the other nodes, which close what they
/// have parked under the key; the park proceeds whatever the directory says.
pub fn replace_claim(key: &RendezvousKey) -> Claim {
    let mut text = format!("{REPLACE_PREFIX}{}:", key.space() as u8);
    push_hex(&mut text, key.bytes());
    Claim {
        key: text,
        ttl_secs: 1,
        on_unavailable: OnUnavailable::Proceed,
    }
}

/// Lower-case hex of `bytes`, appended to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let r = ClaimRequest {
            worker: 3,
            id: 0x0102_0304_0506_0708,
            ttl_secs: 61,
            key: "tryst:replay:native:ab:cd".into(),
        };
        let bytes = encode_request(&r);
        assert_eq!(decode_request(&bytes), Some(r.clone()));
        assert_eq!(decode_request(&bytes[..14]), None, "empty key");
        assert_eq!(decode_request(&bytes[..5]), None);
        let mut zero_ttl = bytes.clone();
        zero_ttl[10..14].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(decode_request(&zero_ttl), None);
        let mut space = bytes.clone();
        space.push(b' ');
        assert_eq!(decode_request(&space), None);
        let long = ClaimRequest {
            key: "k".repeat(MAX_KEY_LEN + 1),
            ..r
        };
        assert_eq!(decode_request(&encode_request(&long)), None);
    }

    #[test]
    fn verdicts_and_evictions_round_trip() {
        for v in [Verdict::Won, Verdict::Lost, Verdict::Unavailable] {
            assert_eq!(decode_verdict(&encode_verdict(7, v)), Some((7, v)));
        }
        let mut bad = encode_verdict(7, Verdict::Won);
        bad[8] = 0;
        assert_eq!(decode_verdict(&bad), None);
        assert_eq!(decode_verdict(&bad[..8]), None);
        let key = RendezvousKey::derived(KeySpace::Tag, b"x");
        assert_eq!(decode_evict(&encode_evict(&key)), Some(key));
        let mut bad = encode_evict(&key);
        bad[0] = 9;
        assert_eq!(decode_evict(&bad), None);
    }

    #[test]
    fn hex_is_lower_case() {
        let mut s = String::new();
        push_hex(&mut s, &[0x00, 0xab, 0xff]);
        assert_eq!(s, "00abff");
    }
}
