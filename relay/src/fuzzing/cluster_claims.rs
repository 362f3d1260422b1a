//! The cluster claims' codecs: the worker <-> supervisor claim, verdict and eviction
//! messages (`tryst_engine::claim`, bytes another process wrote) and the replace
//! announcements other nodes publish through the directory
//! (`cluster::claims::parse_replace`).
//!
//! Raw: `decode_request`, `decode_verdict`, `decode_evict` and `parse_replace` on
//! arbitrary bytes never panic; whatever decodes re-encodes to exactly the input (the
//! codecs are canonical) and a decoded claim's key is a valid key with a ttl of at
//! least 1.
//!
//! Built: a claim request made from the input (worker, id, ttl, key bytes) decodes iff
//! its key is valid and its ttl non-zero, to the same fields; a replace announcement
//! made from the input (space, key bytes, node, epoch, seq) parses back to the same
//! fields.

use crate::cluster::claims::{REPLACE_PREFIX, parse_replace, replace_key};
use tryst_engine::claim::{self, ClaimRequest};
use tryst_engine::target::{KeySpace, RendezvousKey};

/// Runs one input.
pub fn run(data: &[u8]) {
    raw(data);
    built(data);
}

fn raw(data: &[u8]) {
    if let Some(r) = claim::decode_request(data) {
        assert!(claim::valid_key(r.key.as_bytes()) && r.ttl_secs >= 1);
        assert_eq!(claim::encode_request(&r), data);
    }
    if let Some((id, v)) = claim::decode_verdict(data) {
        assert_eq!(claim::encode_verdict(id, v).as_slice(), data);
    }
    if let Some(key) = claim::decode_evict(data) {
        assert_eq!(claim::encode_evict(&key).as_slice(), data);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(r) = parse_replace(text)
    {
        let key = replace_key(&r.key);
        let again = format!(
            "{} {} {} {}",
            key.strip_prefix(REPLACE_PREFIX).unwrap_or_default(),
            r.node,
            r.epoch,
            r.seq
        );
        assert_eq!(again, text, "replace announcements are canonical");
    }
}

fn built(data: &[u8]) {
    if data.len() < 14 {
        return;
    }
    let worker = u16::from_le_bytes([data[0], data[1]]);
    let id = u64::from_le_bytes(data[2..10].try_into().unwrap_or_default());
    let ttl = u32::from_le_bytes(data[10..14].try_into().unwrap_or_default());
    let key_bytes = &data[14..];
    if let Ok(key) = std::str::from_utf8(key_bytes) {
        let r = ClaimRequest {
            worker,
            id,
            ttl_secs: ttl,
            key: key.to_owned(),
        };
        let decoded = claim::decode_request(&claim::encode_request(&r));
        if ttl >= 1 && claim::valid_key(key_bytes) {
            assert_eq!(decoded, Some(r));
        } else {
            assert_eq!(decoded, None);
        }
    }
    let space = match data[0] % 3 {
        0 => KeySpace::Uuid,
        1 => KeySpace::Tag,
        _ => KeySpace::Hive,
    };
    let mut bytes = [0u8; 16];
    for (b, d) in bytes.iter_mut().zip(&data[1..]) {
        *b = *d;
    }
    let key = RendezvousKey::from_parts(space, bytes);
    assert_eq!(claim::decode_evict(&claim::encode_evict(&key)), Some(key));
    let node: String = data[10..]
        .iter()
        .take(64)
        .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789.-_"[usize::from(*b) % 39]))
        .collect();
    let seq = u64::from(ttl);
    let text = format!(
        "{} {node} {id} {seq}",
        replace_key(&key)
            .strip_prefix(REPLACE_PREFIX)
            .unwrap_or_default()
    );
    let r = parse_replace(&text).expect("a built announcement parses");
    assert_eq!(
        (r.key, r.node, r.epoch, r.seq),
        (key, node.as_str(), id, seq)
    );
}
