//! `totp_check`: TOTP verification. Raw: any secret, token, time, step and skew: never panics, and
//! refusals are the documented ones. Structured: the code generated for a known secret
//! and time verifies (also one step away with skew 1), a changed digit never verifies
//! with skew 0, and speakeasy's and RFC 6238's codes agree whenever they have the same
//! length.
use crate::totp::{
    TotpAlgorithm, TotpError, TotpRecord, counter_at, decode_base32, generate, rfc_code,
    speakeasy_code, truncated_value, verify,
};
use arbitrary::Arbitrary;

/// One input: arbitrary values for the verifier, or a generated code to check.
#[derive(Debug, Arbitrary)]
pub enum Input {
    /// Anything at all: only the documented refusals may come back.
    Raw {
        /// Shared secret bytes.
        secret: Vec<u8>,
        /// Text for the base32 decoder.
        base32: String,
        /// The token as sent.
        token: Vec<u8>,
        /// Verifier clock (unix seconds).
        now: u64,
        /// Time step in seconds.
        step: u64,
        /// Accepted steps either side.
        skew: u64,
    },
    /// A code generated for `secret` at `now` must verify; a changed digit must not.
    Structured {
        /// Shared secret bytes (empty becomes one zero byte; at most 1024).
        secret: Vec<u8>,
        /// Clock (unix seconds).
        now: u64,
        /// Time step in seconds (0 becomes 1).
        step: u16,
        /// Code length 6 + digits % 5.
        digits: u8,
        /// Which digit to change, and by how much.
        flip: u8,
    },
}

/// Runs one decoded input.
pub fn run(input: Input) {
    match input {
        Input::Raw {
            secret,
            base32,
            token,
            now,
            step,
            skew,
        } => {
            let _ = decode_base32(&base32);
            let Ok(record) = TotpRecord::new(secret, step, TotpAlgorithm::Sha1, None) else {
                return;
            };
            match verify(&record, &token, now, skew) {
                Ok(()) => {
                    assert!((6..=10).contains(&token.len()));
                    assert!(token.iter().all(u8::is_ascii_digit));
                }
                Err(TotpError::TooShort) => assert!(token.len() < 6),
                Err(TotpError::NotDigits) => assert!(!token.iter().all(u8::is_ascii_digit)),
                Err(TotpError::Mismatch) => {}
                Err(e) => panic!("unexpected refusal {e:?}"),
            }
        }
        Input::Structured {
            mut secret,
            now,
            step,
            digits,
            flip,
        } => {
            if secret.is_empty() {
                secret.push(0);
            }
            secret.truncate(1024);
            let step = u64::from(step).max(1);
            let digits = 6 + usize::from(digits % 5);
            let record =
                TotpRecord::new(secret.clone(), step, TotpAlgorithm::Sha1, None).expect("valid");
            let code = generate(&record, now, digits);
            assert_eq!(code.len(), digits);
            assert_eq!(verify(&record, code.as_bytes(), now, 0), Ok(()));
            if let Some(later) = now.checked_add(step) {
                assert_eq!(verify(&record, code.as_bytes(), later, 1), Ok(()));
            }
            let mut changed = code.clone().into_bytes();
            let pos = usize::from(flip) % digits;
            changed[pos] = b'0' + (changed[pos] - b'0' + 1 + flip % 9) % 10;
            assert_eq!(verify(&record, &changed, now, 0), Err(TotpError::Mismatch));
            let value = truncated_value(&secret, counter_at(now, step));
            let speakeasy = speakeasy_code(value, digits);
            if speakeasy.len() == digits {
                assert_eq!(speakeasy, rfc_code(value, digits));
            }
        }
    }
}
