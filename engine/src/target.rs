//! CONNECT targets and rendezvous ids.
//!
//! Canonical id form: lower-case hyphenated UUID (`8-4-4-4-12` hex digits). Upper-case
//! and mixed-case hyphenated spellings are canonicalised to the same 16 bytes; every
//! other spelling (braces, `urn:uuid:`, no hyphens, whitespace) is refused. Proofs are
//! computed over the canonical spelling, so auth and routing always agree.

use std::fmt;

/// A rendezvous id: the 16 bytes of a UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RendezvousId(pub [u8; 16]);

impl RendezvousId {
    /// Parses a hyphenated UUID in any letter case; refuses every other spelling.
    ///
    /// Exactly 36 bytes: hex digits (`0-9`, `a-f`, `A-F`) with hyphens at offsets 8, 13,
    /// 18 and 23. Written by hand rather than with the `uuid` crate, whose parser also
    /// accepts braces, `urn:uuid:` and unhyphenated forms.
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let b: &[u8; 36] = text
            .as_bytes()
            .try_into()
            .map_err(|_| TargetError::MalformedUuid)?;
        if [b[8], b[13], b[18], b[23]] != [b'-'; 4] {
            return Err(TargetError::MalformedUuid);
        }
        // Every byte of the id from the digit pair at each offset. Digits are 0..=15; a
        // byte that is not one reads as `NOT_HEX`, whose high bits survive into `seen`.
        let mut out = [0u8; 16];
        let mut seen = 0u8;
        for (byte, &at) in out.iter_mut().zip(&DIGIT_PAIRS) {
            let (high, low) = (
                HEX_VALUE[usize::from(b[at])],
                HEX_VALUE[usize::from(b[at + 1])],
            );
            seen |= high | low;
            *byte = (high << 4) | (low & 0x0f);
        }
        if seen > 0x0f {
            return Err(TargetError::MalformedUuid);
        }
        Ok(Self(out))
    }

    /// The canonical lower-case hyphenated spelling as ASCII bytes, without allocating
    /// (the form [`fmt::Display`] writes and proofs sign).
    pub fn canonical(&self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut pos = 0;
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                pos += 1; // leave the hyphen
            }
            out[pos] = HEX[usize::from(byte >> 4)];
            out[pos + 1] = HEX[usize::from(byte & 0x0f)];
            pos += 2;
        }
        out
    }
}

/// Where each byte's two hex digits start in the 36-byte hyphenated spelling.
const DIGIT_PAIRS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// What [`HEX_VALUE`] holds for a byte that is not a hex digit.
const NOT_HEX: u8 = 0xff;

/// The value of each ASCII hex digit, any case; [`NOT_HEX`] for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = match c as u8 {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'f' => d - b'a' + 10,
            d @ b'A'..=b'F' => d - b'A' + 10,
            _ => NOT_HEX,
        };
        c += 1;
    }
    table
};

impl fmt::Display for RendezvousId {
    /// Writes the canonical lower-case hyphenated form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.canonical();
        // Only ASCII hex digits and hyphens are ever written.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for RendezvousId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RendezvousId({self})")
    }
}

/// The namespace of a [`RendezvousKey`]. Keys of different spaces never compare equal,
/// so a client naming a `uuid:` id can never reach a connection parked under a tag or a
/// Hive device, whatever bytes it chooses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub enum KeySpace {
    /// `uuid:` ids (native protocol and node-rendezvous): the id's 16 bytes.
    Uuid = 0,
    /// Qredo-style tags (`tag:<hashedTag>`).
    Tag = 1,
    /// Hive devices (`hive:<workspace>/<device>`).
    Hive = 2,
}

/// The key the waiting room and worker placement use: a namespace and 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct RendezvousKey {
    space: KeySpace,
    bytes: [u8; 16],
}

impl std::hash::Hash for RendezvousKey {
    /// One 128-bit write (the room's hot path hashes keys on every park and pair). Keys
    /// equal in bytes but not in space hash alike, which only matters for collisions,
    /// never for equality; such pairs need a SHA-256 prefix collision to exist.
    /// `#[inline]`: without it, whether this one write is inlined into the table's
    /// `hash_one` depends on how the using crate happens to split its code into codegen
    /// units (it was not, at +25 % instructions for the room, once `instr` grew).
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_le_bytes(self.bytes) ^ u128::from(self.space as u8));
    }
}

impl From<RendezvousId> for RendezvousKey {
    fn from(id: RendezvousId) -> Self {
        Self::uuid(id.0)
    }
}

impl RendezvousKey {
    /// The key of a `uuid:` id given as its 16 bytes.
    pub const fn uuid(bytes: [u8; 16]) -> Self {
        Self {
            space: KeySpace::Uuid,
            bytes,
        }
    }

    /// A key derived from arbitrary family data: the first 16 bytes of
    /// `SHA-256("tryst-key-v1\0" ‖ space byte ‖ data)`, kept in `space`.
    pub fn derived(space: KeySpace, data: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"tryst-key-v1\0");
        hasher.update([space as u8]);
        hasher.update(data);
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self { space, bytes }
    }

    /// A key from its namespace and 16 bytes (as [`Self::space`] and [`Self::bytes`]
    /// give them; used to pass a key between processes).
    pub const fn from_parts(space: KeySpace, bytes: [u8; 16]) -> Self {
        Self { space, bytes }
    }

    /// The key's namespace.
    pub const fn space(&self) -> KeySpace {
        self.space
    }

    /// The key's 16 bytes (the id itself for [`KeySpace::Uuid`]).
    pub const fn bytes(&self) -> &[u8; 16] {
        &self.bytes
    }

    /// The space byte then the 16 key bytes: the form messages and the cluster
    /// directory carry ([`RendezvousKey::from_wire`] reads it back).
    pub fn to_wire(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[0] = self.space as u8;
        out[1..].copy_from_slice(&self.bytes);
        out
    }

    /// Reads [`RendezvousKey::to_wire`]'s form; `None` for an unknown space byte.
    pub fn from_wire(wire: &[u8; 17]) -> Option<Self> {
        let space = match wire[0] {
            0 => KeySpace::Uuid,
            1 => KeySpace::Tag,
            2 => KeySpace::Hive,
            _ => return None,
        };
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&wire[1..]);
        Some(Self { space, bytes })
    }

    /// The worker that owns this key under `placement`: SipHash-1-3 keyed with the
    /// placement's 128-bit key, over the space byte and the 16 key bytes, reduced
    /// `mod workers`.
    ///
    /// The key is chosen at random when the relay starts and shared by all its worker
    /// processes (see [`Placement`]), so every worker maps a key to the same owner, but
    /// a peer who does not know the key cannot choose ids that all land on one worker.
    #[inline]
    pub fn owner(&self, placement: &Placement) -> usize {
        use std::hash::Hasher as _;
        let mut input = [0u8; 17];
        input[0] = self.space as u8;
        input[1..].copy_from_slice(&self.bytes);
        let mut h = siphasher::sip::SipHasher13::new_with_keys(placement.k0, placement.k1);
        h.write(&input);
        // The remainder is below `workers`, which came from a usize.
        (h.finish() % placement.workers as u64) as usize
    }
}

/// How rendezvous keys are spread over workers: the worker count and the 128-bit key of
/// the owner hash ([`RendezvousKey::owner`]). The supervisor picks the key at random at
/// start and gives it to every worker it spawns (restarted ones included), so placement
/// agrees within one relay and differs between runs. Its `Debug` does not show the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    workers: usize,
    k0: u64,
    k1: u64,
}

impl Placement {
    /// `workers` workers (0 is treated as 1) and the hash key `key`.
    pub fn new(workers: usize, key: [u8; 16]) -> Self {
        let (a, b) = key.split_at(8);
        let half = |h: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(h);
            u64::from_le_bytes(w)
        };
        Self {
            workers: workers.max(1),
            k0: half(a),
            k1: half(b),
        }
    }

    /// `workers` workers and a fresh random key.
    pub fn random(workers: usize) -> Self {
        Self::new(workers, rand::random())
    }

    /// The number of workers keys are spread over (at least 1).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The hash key, to pass to another process.
    pub fn key(&self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.k0.to_le_bytes());
        key[8..].copy_from_slice(&self.k1.to_le_bytes());
        key
    }
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// A parsed CONNECT target.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectTarget {
    /// `uuid:<UUID>`: the native rendezvous target.
    Uuid(RendezvousId),
}

/// Why a target was refused. Caused by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The target's scheme is not one the relay serves.
    #[error("unknown target scheme")]
    UnknownScheme,
    /// `uuid:` followed by something that is not a hyphenated UUID.
    #[error("malformed UUID")]
    MalformedUuid,
}

/// Parses a CONNECT request target.
///
/// Only `uuid:<UUID>` is served; the scheme is matched case-sensitively (`uuid:` in lower
/// case). Anything without that prefix is [`TargetError::UnknownScheme`]; the prefix
/// followed by anything but a hyphenated UUID is [`TargetError::MalformedUuid`].
pub fn parse_connect_target(target: &str) -> Result<ConnectTarget, TargetError> {
    let rest = target
        .strip_prefix("uuid:")
        .ok_or(TargetError::UnknownScheme)?;
    // A `?` suffix makes the 36-byte check below fail (MalformedUuid): node-rendezvous's
    // `uuid:<ID>?response=<TOTP>` is recognised by `node::CompatRouter` instead.
    RendezvousId::parse(rest).map(ConnectTarget::Uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOWER: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    const BYTES: [u8; 16] = [
        0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
        0xc8,
    ];

    #[test]
    fn parses_lower_case_to_its_bytes_and_displays_it_back() {
        let id = RendezvousId::parse(LOWER).unwrap();
        assert_eq!(id.0, BYTES);
        assert_eq!(id.to_string(), LOWER);
        assert_eq!(&id.canonical(), LOWER.as_bytes());
        assert_eq!(format!("{id:?}"), format!("RendezvousId({LOWER})"));
    }

    #[test]
    fn upper_and_mixed_case_canonicalise_to_the_same_bytes() {
        for spelling in [
            "6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
            "6Ba7b810-9dAD-11d1-80B4-00c04fD430c8",
        ] {
            let id = RendezvousId::parse(spelling).unwrap();
            assert_eq!(id.0, BYTES, "{spelling}");
            assert_eq!(id.to_string(), LOWER);
        }
    }

    #[test]
    fn extreme_values_round_trip() {
        for text in [
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ] {
            assert_eq!(RendezvousId::parse(text).unwrap().to_string(), text);
        }
        let all = RendezvousId::parse("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF").unwrap();
        assert_eq!(all.0, [0xff; 16]);
    }

    #[test]
    fn other_spellings_are_malformed() {
        let bad = [
            "",
            "6ba7b8109dad11d180b400c04fd430c8",       // no hyphens
            "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}", // braces
            "urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8", // urn
            " 6ba7b810-9dad-11d1-80b4-00c04fd430c8",  // leading space
            "6ba7b810-9dad-11d1-80b4-00c04fd430c8 ",  // trailing space
            "6ba7b810-9dad-11d1-80b4-00c04fd430c",    // 35 chars
            "6ba7b810-9dad-11d1-80b4-00c04fd430c80",  // 37 chars
            "6ba7b8109-dad-11d1-80b4-00c04fd430c8",   // hyphen moved
            "6ba7b810-9dad-11d1-80b4000c04fd430c8-",  // hyphen at the end
            "6ba7b810-9dad-11d1-80b4-00c04fd430cg",   // non-hex digit
            "6ba7b810+9dad-11d1-80b4-00c04fd430c8",   // other separator
            "6ba7b810-9dad-11d1-80b4-00c04fd430\u{e9}", // 36 bytes, non-ASCII
            "6ba7b810-9dad-11d1-80b4-00c04fd43\u{0}c8", // NUL
        ];
        for text in bad {
            assert_eq!(
                RendezvousId::parse(text),
                Err(TargetError::MalformedUuid),
                "{text:?}"
            );
        }
    }

    /// Every byte value at every offset of a valid id, against the rule stated on
    /// [`RendezvousId::parse`]: accepted exactly when it is a hyphen at 8, 13, 18, 23
    /// and a hex digit elsewhere, and then to the bytes the digits spell.
    #[test]
    fn every_byte_at_every_offset_is_judged_by_the_rule() {
        for at in 0..36 {
            for c in 0..=255u8 {
                let mut text = LOWER.as_bytes().to_vec();
                text[at] = c;
                let Ok(text) = String::from_utf8(text) else {
                    continue; // not a &str: cannot be a target
                };
                let hyphen_at = matches!(at, 8 | 13 | 18 | 23);
                let valid = if hyphen_at {
                    c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                };
                let parsed = RendezvousId::parse(&text);
                assert_eq!(parsed.is_ok(), valid, "byte {c:#04x} at {at}");
                if let Ok(id) = parsed {
                    let digits: String = text.chars().filter(|&c| c != '-').collect();
                    let want = u128::from_str_radix(&digits, 16).expect("32 hex digits");
                    assert_eq!(id.0, want.to_be_bytes(), "byte {c:#04x} at {at}");
                }
            }
        }
    }

    #[test]
    fn connect_target_accepts_only_the_uuid_scheme() {
        let t = format!("uuid:{LOWER}");
        assert_eq!(
            parse_connect_target(&t),
            Ok(ConnectTarget::Uuid(RendezvousId(BYTES)))
        );
        let upper = "uuid:6BA7B810-9DAD-11D1-80B4-00C04FD430C8";
        assert_eq!(
            parse_connect_target(upper),
            Ok(ConnectTarget::Uuid(RendezvousId(BYTES)))
        );
        for unknown in [
            "",
            "uuid",
            "UUID:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            "tag:x",
            "example.com:443",
            "/uuid:x",
            " uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        ] {
            assert_eq!(
                parse_connect_target(unknown),
                Err(TargetError::UnknownScheme),
                "{unknown:?}"
            );
        }
        for malformed in [
            "uuid:",
            "uuid:xyz",
            "uuid:6ba7b8109dad11d180b400c04fd430c8",
            "uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8?response=123456",
            "uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8?",
        ] {
            assert_eq!(
                parse_connect_target(malformed),
                Err(TargetError::MalformedUuid),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn keys_of_different_spaces_never_collide() {
        let data = [7u8; 16];
        let uuid = RendezvousKey::uuid(data);
        let tag = RendezvousKey::derived(KeySpace::Tag, &data);
        let hive = RendezvousKey::derived(KeySpace::Hive, &data);
        assert_ne!(uuid, tag);
        assert_ne!(tag, hive);
        // Same bytes, different space: still different keys.
        let forged = RendezvousKey::uuid(*tag.bytes());
        assert_ne!(forged, tag);
        assert_eq!(tag.space(), KeySpace::Tag);
        // Derivation is stable (other processes compute the same key).
        assert_eq!(tag, RendezvousKey::derived(KeySpace::Tag, &data));
        assert_eq!(
            hex::encode(tag.bytes()),
            hex::encode(
                &{
                    use sha2::{Digest, Sha256};
                    let mut h = Sha256::new();
                    h.update(b"tryst-key-v1\0\x01");
                    h.update(data);
                    h.finalize()
                }[..16]
            )
        );
    }

    #[test]
    fn owner_is_keyed_siphash13_mod_workers() {
        use std::hash::Hasher as _;
        let hash_key = [0x5a; 16];
        let key = RendezvousKey::uuid(BYTES);
        let tag = RendezvousKey::derived(KeySpace::Tag, b"t");
        for workers in [1usize, 2, 4, 7, 1000] {
            let placement = Placement::new(workers, hash_key);
            for k in [key, tag] {
                let mut h = siphasher::sip::SipHasher13::new_with_keys(
                    u64::from_le_bytes([0x5a; 8]),
                    u64::from_le_bytes([0x5a; 8]),
                );
                h.write(&[k.space() as u8]);
                h.write(k.bytes());
                assert_eq!(k.owner(&placement), (h.finish() % workers as u64) as usize);
            }
        }
        assert_eq!(key.owner(&Placement::new(1, hash_key)), 0);
        assert_eq!(
            key.owner(&Placement::new(0, hash_key)),
            0,
            "zero workers is treated as one, not a panic"
        );
        // The key survives the trip to another process.
        let p = Placement::new(7, *b"0123456789abcdef");
        assert_eq!(Placement::new(7, p.key()), p);
        assert!(!format!("{p:?}").contains("k0"), "Debug hides the key");
        assert_eq!(RendezvousKey::from(RendezvousId(BYTES)), key);
    }

    #[test]
    fn different_hash_keys_place_ids_differently() {
        // What the key is for: ids chosen to land on one worker under one key spread
        // over all workers under another.
        let aimed: Vec<RendezvousKey> = (0u32..100_000)
            .map(|i| {
                let mut bytes = [0u8; 16];
                bytes[..4].copy_from_slice(&i.to_le_bytes());
                RendezvousKey::uuid(bytes)
            })
            .filter(|k| k.owner(&Placement::new(4, [1; 16])) == 0)
            .take(4000)
            .collect();
        assert_eq!(aimed.len(), 4000);
        let mut counts = [0usize; 4];
        for k in &aimed {
            counts[k.owner(&Placement::new(4, [2; 16]))] += 1;
        }
        for c in counts {
            assert!((800..=1200).contains(&c), "still aimed: {counts:?}");
        }
    }

    #[test]
    fn owner_spreads_keys_over_workers() {
        let mut counts = [0usize; 8];
        for i in 0u32..8000 {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&i.to_le_bytes());
            counts[RendezvousKey::uuid(bytes).owner(&Placement::new(8, [9; 16]))] += 1;
        }
        for c in counts {
            assert!((700..=1300).contains(&c), "uneven spread: {counts:?}");
        }
    }
}
