//! The `tag:` wire: the target, the publisher's ownership proof and creation options,
//! the responder's challenge, and the frames exchanged at pairing. Pure parsers and
//! builders; nothing here does I/O or reads the clock.
//!
//! Exact formats (also in `docs/compat/qredo.md`):
//!
//! - Target: `tag:<64 hex digits>` (the hashed tag; any letter case).
//! - Park proof: `Proxy-Authorization: Tag ts=<unix seconds>, nonce=<32..=64 hex>,
//!   sig=<86 chars unpadded base64url>`; parameters in any order, each exactly once,
//!   separated by commas with optional spaces or tabs.
//! - The signed message ([`park_message`]):
//!   `"tryst-tag-park-v1\0" ‖ hashedTag(32) ‖ ts(u64 BE) ‖ nonce_len(u8) ‖ nonce ‖
//!   mode(u8: 0 absent, 1 single-shot, 2 long-term) ‖ duration(u64 BE, 0 absent) ‖
//!   owner key(32; all zero when absent)`, so the creation options are signed too.
//! - Responder hello ([`hello_frame`]), the first bytes every publisher connection
//!   receives at pairing: `"TAGHELLO" ‖ 0x01 ‖ len(u8) ‖ challenge(len)`, `len` 0 when
//!   the responder sent no `Tag-Challenge`.
//! - Challenge answer ([`answer_frame`]), the publisher's first bytes when challenged:
//!   `"TAGPROOF" ‖ Ed25519 signature(64)` over
//!   `"tryst-tag-challenge-v1\0" ‖ hashedTag ‖ challenge` by the key named in the tag.

use super::kdf::HashedTag;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
pub use tryst_client::tag::{
    ANSWER_LEN, ANSWER_MAGIC, CHALLENGE_BYTES, CHALLENGE_CONTEXT, CreateOptions, FrameError,
    HELLO_MAGIC, HELLO_VERSION, NONCE_BYTES, PARK_CONTEXT, TagMode, answer_frame,
    challenge_message, hello_frame, park_message, park_request, parse_hello,
};
use tryst_engine::reject::Rejection;

/// Why a tag request was refused by a parser (all caused by the peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The target is not `tag:<64 hex>`.
    #[error("malformed tag target")]
    MalformedTag,
    /// The `Proxy-Authorization` value is not a well-formed `Tag` proof.
    #[error("malformed proof")]
    MalformedProof,
    /// A malformed or duplicated `Tag-Mode`, `Tag-Duration` or `Tag-Challenge`.
    #[error("malformed tag option")]
    MalformedOption,
    /// `Tag-Owner-Key` is not a strong Ed25519 public key.
    #[error("bad owner key")]
    BadOwnerKey,
}

impl From<WireError> for Rejection {
    fn from(e: WireError) -> Self {
        match e {
            WireError::MalformedTag => Self::MalformedTag,
            WireError::MalformedProof => Self::MalformedProof,
            WireError::MalformedOption => Self::MalformedTagOption,
            WireError::BadOwnerKey => Self::BadOwnerKey,
        }
    }
}

/// Parses a `tag:` target (the scheme in any case) into its hashed tag.
pub fn parse_target(target: &str) -> Result<HashedTag, WireError> {
    let b = target.as_bytes();
    if b.len() != 4 + 64 || !b[..4].eq_ignore_ascii_case(b"tag:") {
        return Err(WireError::MalformedTag);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(&b[4..], &mut out).map_err(|_| WireError::MalformedTag)?;
    Ok(HashedTag(out))
}

/// A parsed `Tag` ownership proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagProof {
    /// Claimed unix time, seconds.
    pub ts: u64,
    /// Nonce bytes (16..=32).
    pub nonce: Vec<u8>,
    /// The Ed25519 signature.
    pub sig: [u8; 64],
}

/// Parses a `Proxy-Authorization: Tag ...` value.
pub fn parse_proof(value: &[u8]) -> Result<TagProof, WireError> {
    const BAD: WireError = WireError::MalformedProof;
    let text = std::str::from_utf8(value).map_err(|_| BAD)?;
    let (scheme, params) = text.split_once(' ').ok_or(BAD)?;
    if !scheme.eq_ignore_ascii_case("tag") {
        return Err(BAD);
    }
    let (mut ts, mut nonce, mut sig) = (None, None, None);
    for param in params.split(',') {
        let param = param.trim_matches([' ', '\t']);
        let (name, v) = param.split_once('=').ok_or(BAD)?;
        let slot = match name {
            "ts" => &mut ts,
            "nonce" => &mut nonce,
            "sig" => &mut sig,
            _ => return Err(BAD),
        };
        if slot.replace(v).is_some() {
            return Err(BAD);
        }
    }
    let ts = ts.ok_or(BAD)?;
    if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|c| c.is_ascii_digit()) {
        return Err(BAD);
    }
    let ts: u64 = ts.parse().map_err(|_| BAD)?;
    let nonce = nonce.ok_or(BAD)?;
    if nonce.len() % 2 != 0 || !NONCE_BYTES.contains(&(nonce.len() / 2)) {
        return Err(BAD);
    }
    let nonce = hex::decode(nonce).map_err(|_| BAD)?;
    let sig_text = sig.ok_or(BAD)?;
    if sig_text.len() != 86 {
        return Err(BAD);
    }
    let bytes = URL_SAFE_NO_PAD.decode(sig_text).map_err(|_| BAD)?;
    let sig: [u8; 64] = bytes.try_into().map_err(|_| BAD)?;
    Ok(TagProof { ts, nonce, sig })
}

/// The one value of a header that may appear at most once.
fn single<'h>(
    head: &'h tryst_engine::head::RequestHead,
    name: &str,
) -> Result<Option<&'h [u8]>, WireError> {
    if head.header_count(name) > 1 {
        return Err(WireError::MalformedOption);
    }
    Ok(head.header(name))
}

/// Largest `Tag-Duration` accepted as a number (larger values are not malformed but are
/// capped by the relay; this only bounds the digits).
const MAX_DURATION_DIGITS: usize = 12;

/// Parses the creation options of a park.
pub fn parse_create_options(
    head: &tryst_engine::head::RequestHead,
) -> Result<CreateOptions, WireError> {
    let mode = match single(head, "tag-mode")? {
        None => None,
        Some(v) if v.eq_ignore_ascii_case(b"single-shot") => Some(TagMode::SingleShot),
        Some(v) if v.eq_ignore_ascii_case(b"long-term") => Some(TagMode::LongTerm),
        Some(_) => return Err(WireError::MalformedOption),
    };
    let duration_secs = match single(head, "tag-duration")? {
        None => None,
        Some(v) => {
            if v.is_empty() || v.len() > MAX_DURATION_DIGITS || !v.iter().all(u8::is_ascii_digit) {
                return Err(WireError::MalformedOption);
            }
            let secs = v.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
            if secs == 0 {
                return Err(WireError::MalformedOption);
            }
            Some(secs)
        }
    };
    let owner_key = match head.header_count("tag-owner-key") {
        0 => None,
        1 => Some(parse_owner_key(
            head.header("tag-owner-key").unwrap_or_default(),
        )?),
        _ => return Err(WireError::BadOwnerKey),
    };
    Ok(CreateOptions {
        mode,
        duration_secs,
        owner_key,
    })
}

/// Parses a `Tag-Owner-Key` value: 43 characters of unpadded base64url encoding a
/// strong Ed25519 public key (a valid point, not of small order).
pub fn parse_owner_key(value: &[u8]) -> Result<VerifyingKey, WireError> {
    if value.len() != 43 {
        return Err(WireError::BadOwnerKey);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| WireError::BadOwnerKey)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| WireError::BadOwnerKey)?;
    crate::ed25519::strict_key(&bytes).map_err(|_| WireError::BadOwnerKey)
}

/// Parses a responder's `Tag-Challenge` (at most once; 32..=128 hex digits).
pub fn parse_challenge(
    head: &tryst_engine::head::RequestHead,
) -> Result<Option<Vec<u8>>, WireError> {
    let Some(v) = single(head, "tag-challenge")? else {
        return Ok(None);
    };
    if v.len() % 2 != 0 || !CHALLENGE_BYTES.contains(&(v.len() / 2)) {
        return Err(WireError::MalformedOption);
    }
    hex::decode(v)
        .map(Some)
        .map_err(|_| WireError::MalformedOption)
}

/// The responder's check of an answer frame against the public key named in the tag
/// (strict Ed25519). The relay cannot do this: it never sees the tag.
pub fn verify_answer(key: &VerifyingKey, tag: &HashedTag, challenge: &[u8], frame: &[u8]) -> bool {
    let Some(sig) = frame.strip_prefix(ANSWER_MAGIC.as_slice()) else {
        return false;
    };
    let Ok(sig) = <[u8; 64]>::try_from(sig) else {
        return false;
    };
    crate::ed25519::verify_with(key, &challenge_message(tag, challenge), &sig).is_ok()
}

/// The identity key of an "authenticated" tag `<prefix>@<key>`: exactly one `@`,
/// followed by the Ed25519 public key as 43 characters of unpadded base64url or 64 hex
/// digits. `None` for anonymous tags and weak keys.
pub fn tag_identity_key(tag: &str) -> Option<VerifyingKey> {
    let (_, key) = tag.split_once('@')?;
    if key.contains('@') {
        return None;
    }
    let bytes: [u8; 32] = match key.len() {
        43 => URL_SAFE_NO_PAD.decode(key).ok()?.try_into().ok()?,
        64 => {
            let mut out = [0u8; 32];
            hex::decode_to_slice(key, &mut out).ok()?;
            out
        }
        _ => return None,
    };
    crate::ed25519::strict_key(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::kdf::hashed_tag;
    use ed25519_dalek::{Signer as _, SigningKey};
    use tryst_engine::head::{HeadLimits, HeadStatus, parse_head};

    fn head(text: &str) -> tryst_engine::head::RequestHead {
        match parse_head(text.as_bytes(), &HeadLimits::default()) {
            Ok(HeadStatus::Complete(h)) => h,
            other => panic!("not a complete head: {other:?}"),
        }
    }

    const HELLO: &str = "b361493fec41a15b1debb72c3012259bfe40f02420a1a570a70faf6ab8c6e3a7";

    #[test]
    fn targets() {
        let t = parse_target(&format!("tag:{HELLO}")).unwrap();
        assert_eq!(t, hashed_tag("", "hello"));
        assert_eq!(
            parse_target(&format!("TAG:{}", HELLO.to_uppercase())),
            Ok(t)
        );
        for bad in [
            "tag:".to_owned(),
            format!("tag:{}", &HELLO[1..]),
            format!("tag:{HELLO}0"),
            format!("tag:{}g", &HELLO[1..]),
            format!("tag: {}", &HELLO[1..]),
            format!("tog:{HELLO}"),
            format!("tag:{}\u{e9}", &HELLO[2..]),
        ] {
            assert_eq!(parse_target(&bad), Err(WireError::MalformedTag), "{bad}");
        }
    }

    /// A park proof signed over a fixed vector, checked against python3's
    /// `cryptography` Ed25519 (deterministic signatures): key = derived key of "hello",
    /// ts 1700000000, nonce 00..0f, no options.
    const VECTOR_SIG: &str = "6d0414b359f39d7bca34426ce3adbf050cc66f1f1edb98f41919d516c5d1a478d418e18dbfc295499ee6431f786097a8c67fc223fc84be09aedbe623e718ef00";

    #[test]
    fn park_message_layout_is_exact() {
        let tag = hashed_tag("", "hello");
        let nonce: Vec<u8> = (0..16).collect();
        let m = park_message(&tag, 1_700_000_000, &nonce, &CreateOptions::default());
        let mut want = b"tryst-tag-park-v1\0".to_vec();
        want.extend_from_slice(&tag.0);
        want.extend_from_slice(&1_700_000_000u64.to_be_bytes());
        want.push(16);
        want.extend_from_slice(&nonce);
        want.push(0);
        want.extend_from_slice(&[0; 8]);
        want.extend_from_slice(&[0; 32]);
        assert_eq!(m, want);
        let key = tag.derived_signing_key();
        let sig = key.sign(&m);
        assert_eq!(hex::encode(sig.to_bytes()), VECTOR_SIG);
        let opts = CreateOptions {
            mode: Some(TagMode::SingleShot),
            duration_secs: Some(300),
            owner_key: Some(key.verifying_key()),
        };
        let m = park_message(&tag, 1, &nonce, &opts);
        assert_eq!(m[m.len() - 41], 1);
        assert_eq!(&m[m.len() - 40..m.len() - 32], &300u64.to_be_bytes());
        assert_eq!(&m[m.len() - 32..], key.verifying_key().as_bytes());
    }

    #[test]
    fn proofs_parse_in_any_order_and_refuse_everything_else() {
        let sig = URL_SAFE_NO_PAD.encode([7u8; 64]);
        let nonce = "00112233445566778899aabbccddeeff";
        let good = format!("Tag ts=17, nonce={nonce}, sig={sig}");
        let p = parse_proof(good.as_bytes()).unwrap();
        assert_eq!(p.ts, 17);
        assert_eq!(p.nonce, hex::decode(nonce).unwrap());
        assert_eq!(p.sig, [7; 64]);
        let reordered = format!("tag sig={sig},nonce={},\tts=17", nonce.to_uppercase());
        assert_eq!(parse_proof(reordered.as_bytes()), Ok(p));
        let bad = [
            String::new(),
            "Tag".into(),
            format!("Tryst ts=17, nonce={nonce}, sig={sig}"),
            format!("Tag ts=17, nonce={nonce}"),
            format!("Tag ts=17, ts=17, nonce={nonce}, sig={sig}"),
            format!("Tag ts=-1, nonce={nonce}, sig={sig}"),
            format!("Tag ts=, nonce={nonce}, sig={sig}"),
            format!("Tag ts=99999999999999999999, nonce={nonce}, sig={sig}"),
            format!("Tag ts=17, nonce={}, sig={sig}", &nonce[2..]),
            format!("Tag ts=17, nonce={nonce}0, sig={sig}"),
            format!("Tag ts=17, nonce={}, sig={sig}", "ab".repeat(33)),
            format!("Tag ts=17, nonce={}zz, sig={sig}", &nonce[2..]),
            format!("Tag ts=17, nonce={nonce}, sig={sig}="),
            format!("Tag ts=17, nonce={nonce}, sig={}", &sig[1..]),
            format!("Tag ts=17, nonce={nonce}, sig={}+", &sig[1..]),
            format!("Tag ts=17, nonce={nonce}, sig={sig}, extra=1"),
            // Parameter names are case-sensitive (the scheme is not): issue 12 item 9.
            format!("Tag TS=17, nonce={nonce}, sig={sig}"),
            format!("Tag ts=17, Nonce={nonce}, sig={sig}"),
            format!("Tag ts=17, nonce={nonce}, SIG={sig}"),
            format!("Tag ts=17 nonce={nonce}, sig={sig}"),
        ];
        for b in bad {
            assert_eq!(
                parse_proof(b.as_bytes()),
                Err(WireError::MalformedProof),
                "{b}"
            );
        }
        assert_eq!(
            parse_proof(b"Tag ts=1, nonce=\xff"),
            Err(WireError::MalformedProof)
        );
    }

    #[test]
    fn options() {
        let key = hashed_tag("", "k").derived_public_key();
        let k64 = URL_SAFE_NO_PAD.encode(key.as_bytes());
        let h = head(&format!(
            "CONNECT x HTTP/1.1\r\ntag-mode: Single-Shot\r\nTag-Duration: 300\r\nTag-Owner-Key: {k64}\r\n\r\n"
        ));
        assert_eq!(
            parse_create_options(&h),
            Ok(CreateOptions {
                mode: Some(TagMode::SingleShot),
                duration_secs: Some(300),
                owner_key: Some(key),
            })
        );
        assert_eq!(
            parse_create_options(&head("CONNECT x HTTP/1.1\r\n\r\n")),
            Ok(CreateOptions::default())
        );
        for (h, want) in [
            ("Tag-Mode: forever\r\n", WireError::MalformedOption),
            (
                "Tag-Mode: long-term\r\nTag-Mode: long-term\r\n",
                WireError::MalformedOption,
            ),
            ("Tag-Duration: 0\r\n", WireError::MalformedOption),
            ("Tag-Duration: -5\r\n", WireError::MalformedOption),
            ("Tag-Duration: 1e3\r\n", WireError::MalformedOption),
            (
                "Tag-Duration: 9999999999999\r\n",
                WireError::MalformedOption,
            ),
            ("Tag-Owner-Key: abc\r\n", WireError::BadOwnerKey),
        ] {
            let h = head(&format!("CONNECT x HTTP/1.1\r\n{h}\r\n"));
            assert_eq!(parse_create_options(&h), Err(want), "{h:?}");
        }
    }

    #[test]
    fn weak_and_invalid_owner_keys_are_refused() {
        // The identity point (small order) and an all-zero encoding (order 4).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for weak in [identity, [0u8; 32]] {
            assert_eq!(
                parse_owner_key(URL_SAFE_NO_PAD.encode(weak).as_bytes()),
                Err(WireError::BadOwnerKey)
            );
        }
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(
            parse_owner_key(URL_SAFE_NO_PAD.encode(off_curve).as_bytes()),
            Err(WireError::BadOwnerKey)
        );
        let good = hashed_tag("", "x").derived_public_key();
        assert_eq!(
            parse_owner_key(URL_SAFE_NO_PAD.encode(good.as_bytes()).as_bytes()),
            Ok(good)
        );
    }

    #[test]
    fn challenges() {
        let h = head(&format!(
            "CONNECT x HTTP/1.1\r\nTag-Challenge: {}\r\n\r\n",
            "ab".repeat(16)
        ));
        assert_eq!(parse_challenge(&h), Ok(Some(vec![0xab; 16])));
        assert_eq!(
            parse_challenge(&head("CONNECT x HTTP/1.1\r\n\r\n")),
            Ok(None)
        );
        for v in [
            "ab".repeat(15),
            "ab".repeat(65),
            format!("{}a", "ab".repeat(16)),
            "zz".repeat(16),
        ] {
            let h = head(&format!("CONNECT x HTTP/1.1\r\nTag-Challenge: {v}\r\n\r\n"));
            assert_eq!(parse_challenge(&h), Err(WireError::MalformedOption), "{v}");
        }
    }

    #[test]
    fn hello_and_answer_frames_round_trip() {
        let tag = hashed_tag("", "hello");
        assert_eq!(hello_frame(None), b"TAGHELLO\x01\x00");
        let challenge = [9u8; 20];
        let f = hello_frame(Some(&challenge));
        assert_eq!(&f[..10], b"TAGHELLO\x01\x14");
        assert_eq!(parse_hello(&f), Ok((challenge.to_vec(), 30)));
        assert_eq!(parse_hello(&f[..5]), Err(FrameError::Incomplete));
        assert_eq!(parse_hello(&f[..29]), Err(FrameError::Incomplete));
        assert_eq!(parse_hello(b"GET / HTTP/1.1"), Err(FrameError::Invalid));
        assert_eq!(parse_hello(b"TAGHELLO\x02\x00"), Err(FrameError::Invalid));
        assert_eq!(
            parse_hello(b"TAGHELLO\x01\x03abc"),
            Err(FrameError::Invalid)
        );

        let identity = SigningKey::from_bytes(&[5; 32]);
        let answer = answer_frame(&identity, &tag, &challenge);
        let pk = identity.verifying_key();
        assert!(verify_answer(&pk, &tag, &challenge, &answer));
        assert!(!verify_answer(&pk, &tag, &[8; 20], &answer));
        assert!(!verify_answer(
            &pk,
            &hashed_tag("", "other"),
            &challenge,
            &answer
        ));
        assert!(!verify_answer(
            &tag.derived_public_key(),
            &tag,
            &challenge,
            &answer
        ));
        assert!(!verify_answer(&pk, &tag, &challenge, &answer[..71]));
    }

    #[test]
    fn authenticated_tags_name_their_key() {
        let pk = SigningKey::from_bytes(&[5; 32]).verifying_key();
        let b64 = URL_SAFE_NO_PAD.encode(pk.as_bytes());
        assert_eq!(tag_identity_key(&format!("shop@{b64}")), Some(pk));
        assert_eq!(
            tag_identity_key(&format!("@{}", hex::encode(pk.as_bytes()))),
            Some(pk)
        );
        assert_eq!(tag_identity_key("0123456789abcdef"), None);
        assert_eq!(tag_identity_key(&format!("a@b@{b64}")), None);
        assert_eq!(
            tag_identity_key(&format!("a@{}", URL_SAFE_NO_PAD.encode([0u8; 32]))),
            None
        );
    }
}
