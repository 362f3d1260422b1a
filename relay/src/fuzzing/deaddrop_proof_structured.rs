//! Proofs signed with the fixture key, then corrupted (or not) in one structured way:
//! only an uncorrupted, in-window proof verifies; a stale one is `Stale`; through the
//! checker, a valid retrieve proof is accepted once and its replay refused.
use crate::deaddrop::proof::{self, ProofError};
use crate::deaddrop::request::{Action, Checker, Reject};
use arbitrary::Arbitrary;
use base64::Engine as _;
use rsa::RsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use sha2::Sha256;
use std::sync::OnceLock;

const PEM: &str = include_str!("../../tests/fixtures/deaddrop/client-pub.pem");
const KEY: &str = include_str!("../../tests/fixtures/deaddrop/client-key.pem");

#[derive(Debug, Arbitrary)]
enum Corruption {
    None,
    SigBit(u16),
    Ts(i8),
    RelayPem(u8),
    ClaimerPemChar(u16),
}

#[derive(Debug, Arbitrary)]
struct Input {
    relay: String,
    ts: u32,
    now_offset: i8,
    corruption: Corruption,
}

fn key() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| RsaPrivateKey::from_pkcs8_pem(KEY).expect("fixture key"))
}

/// Runs one input, decoded as libfuzzer-sys decodes it.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) else {
        return;
    };
    let ts = i64::from(input.ts);
    let now = ts + i64::from(input.now_offset);
    let msg = proof::ownership_message(PEM, &input.relay, ts);
    let signer = rsa::pss::BlindedSigningKey::<Sha256>::new(key().clone());
    let mut sig = signer.sign_with_rng(&mut rand::thread_rng(), &msg).to_vec();
    let (mut vts, mut vrelay, mut vpem) = (ts, input.relay.clone(), PEM.to_owned());
    let corrupted = match input.corruption {
        Corruption::None => false,
        Corruption::SigBit(b) => {
            let i = usize::from(b) % (sig.len() * 8);
            sig[i / 8] ^= 1 << (i % 8);
            true
        }
        Corruption::Ts(d) => {
            vts += i64::from(d.max(1));
            true
        }
        Corruption::RelayPem(c) => {
            vrelay.push(char::from(c));
            true
        }
        Corruption::ClaimerPemChar(p) => {
            // Change one base64 character of the body (not the armor).
            let body_start = "-----BEGIN PUBLIC KEY-----\n".len();
            let i = body_start + usize::from(p) % 300;
            let mut bytes = vpem.into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            vpem = String::from_utf8(bytes).expect("ascii");
            true
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
    let got = proof::verify(&vpem, &vrelay, vts, &b64, now);
    if !proof::fresh(vts, now) {
        assert_eq!(got, Err(ProofError::Stale));
    } else if corrupted {
        assert!(got.is_err(), "{:?}", input.corruption);
    } else {
        assert!(got.is_ok());
        // Through the checker: accepted once, then refused as a replay.
        let mut config = crate::deaddrop::DeadDropConfig::in_dir(std::path::Path::new("/x"));
        config.rate_limit = 1;
        let checker = Checker::new(&config, input.relay.clone());
        let body =
            serde_json::json!({"pubkey": PEM, "timestamp": ts, "signature": b64}).to_string();
        let now_ms = u64::try_from(now).unwrap_or(0) * 1000;
        if now >= 0 {
            match checker.check("/retrieve", body.as_bytes(), None, now_ms) {
                Ok(Action::Retrieve {
                    mailbox,
                    keep: false,
                }) => assert_eq!(mailbox, proof::mailbox_of(PEM)),
                other => panic!("{other:?}"),
            }
            assert_eq!(
                checker.check("/retrieve", body.as_bytes(), None, now_ms),
                Err(Reject::ReplayDetected { replay: true })
            );
        }
    }
}
