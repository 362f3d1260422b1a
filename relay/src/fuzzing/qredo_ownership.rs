//! `qredo_ownership`: the SDK's `OwnershipSignature` check (`qredo::ownership::check`).
//!
//! Raw: the input, read as a Lingua Franca value, is offered as a signature under a
//! fixed key: nothing forged verifies. Structured (`[ts offset, op, flip, data...]`): a
//! real signature over `data` verifies iff its timestamp is inside the window, exactly
//! once (its replay is refused); under another op, over other data, or with one bit of
//! the signature flipped it never verifies.

use crate::qredo::Failure;
use crate::qredo::lf::{Limits, Value, sexp};
use crate::qredo::ownership::{Op, ReplayCache, check, sign};
use ed25519_dalek::SigningKey;

const NOW: u64 = 1_700_000_000_000;
const WINDOW: u64 = 60_000;

fn op(b: u8) -> Op {
    match b % 4 {
        0 => Op::Create,
        1 => Op::Get,
        2 => Op::List,
        _ => Op::Delete,
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let key = SigningKey::from_bytes(&[0x42; 32]);
    let vk = key.verifying_key();
    if let Ok(value) = sexp::parse(data, &Limits::default()).and_then(|s| Value::decode(&s)) {
        let mut replay = ReplayCache::new(16);
        for o in [Op::Create, Op::Get, Op::List, Op::Delete] {
            assert_ne!(check(&value, &vk, o, b"", NOW, WINDOW, &mut replay), Ok(()));
        }
    }
    let [offset, which, flip, rest @ ..] = data else {
        return;
    };
    let skew_ms = (i64::from(*offset) - 128) * 1000;
    let ts = NOW as i64 + skew_ms;
    let o = op(*which);
    let nonce = [*which, *flip, 1, 2, 3, 4, 5, 6];
    let sig = sign(&key, o, rest, &nonce, ts);
    let mut replay = ReplayCache::new(16);
    let fresh = skew_ms.unsigned_abs() <= WINDOW;
    let got = check(&sig, &vk, o, rest, NOW, WINDOW, &mut replay);
    if fresh {
        assert_eq!(got, Ok(()));
        assert_eq!(
            check(&sig, &vk, o, rest, NOW, WINDOW, &mut replay),
            Err(Failure::ReplayedSignature)
        );
    } else {
        assert_eq!(got, Err(Failure::StaleSignature));
    }
    let mut fresh_cache = ReplayCache::new(16);
    assert_ne!(
        check(
            &sig,
            &vk,
            op(which.wrapping_add(1)),
            rest,
            NOW,
            WINDOW,
            &mut fresh_cache
        ),
        Ok(())
    );
    let mut other = rest.to_vec();
    other.push(*flip);
    assert_ne!(
        check(&sig, &vk, o, &other, NOW, WINDOW, &mut fresh_cache),
        Ok(())
    );
    // One bit of the signature flipped.
    let Value::Record(mut rec) = sig else {
        unreachable!("sign builds a record")
    };
    if let Some((_, Value::Bytes(s))) = rec.fields.iter_mut().find(|(n, _)| n == "signature") {
        let bit = usize::from(*flip) % (s.len() * 8);
        s[bit / 8] ^= 1 << (bit % 8);
    }
    assert_ne!(
        check(
            &Value::Record(rec),
            &vk,
            o,
            rest,
            NOW,
            WINDOW,
            &mut fresh_cache
        ),
        Ok(())
    );
}
