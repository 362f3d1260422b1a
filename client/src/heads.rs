//! Request heads: what a hidden server sends to park and what a client sends to reach.
//! Pure builders; the only clock and randomness are in the `*_now` helpers.
//!
//! The relay's integration tests use these builders, so a change to the wire format
//! breaks them at once (see `relay/tests/it/tunnel.rs`).

use std::fmt::Display;
use std::time::{SystemTime, UNIX_EPOCH};
use tryst_engine::auth::{Operation, Secret, proof_header};
use tryst_engine::target::RendezvousId;

/// Nonce bytes in proofs built by [`fresh_nonce`] (the relay accepts 8 to 32).
pub const NONCE_BYTES: usize = 16;

/// The native park head for `id`, signed with `secret` at `ts` with `nonce`:
/// `CONNECT uuid:<id> HTTP/1.1`, one `Proxy-Authorization: Tryst ...` header, blank line.
pub fn park_head(id: &RendezvousId, secret: &Secret, ts: u64, nonce: &[u8]) -> String {
    park_head_for(id, id, secret, ts, nonce)
}

/// Like [`park_head`] but naming `target_id` in the request line (any spelling the
/// caller wants to test, e.g. upper case) while signing for `id`.
pub fn park_head_for(
    target_id: impl Display,
    id: &RendezvousId,
    secret: &Secret,
    ts: u64,
    nonce: &[u8],
) -> String {
    let value = proof_header(secret, Operation::Park, id, ts, nonce);
    format!("CONNECT uuid:{target_id} HTTP/1.1\r\nProxy-Authorization: {value}\r\n\r\n")
}

/// A park head with the current time and a fresh random nonce.
pub fn park_head_now(id: &RendezvousId, secret: &Secret) -> String {
    park_head(id, secret, now_unix(), &fresh_nonce())
}

/// `head` (a native park head) asking the relay to send
/// [`tryst_engine::reject::PAIRING_NOTICE`] when it is paired, before any byte of its
/// client's: a hidden server whose service speaks first learns of its client at once.
pub fn with_pairing_notice(head: &str) -> String {
    let body = head.strip_suffix("\r\n").unwrap_or(head);
    format!(
        "{body}{}: 1\r\n\r\n",
        tryst_engine::reject::PAIRING_NOTICE_HEADER
    )
}

/// The native reach head: `CONNECT uuid:<id> HTTP/1.1` and a blank line. `id` is written
/// as given (a [`RendezvousId`] writes its canonical form).
pub fn reach_head(id: impl Display) -> String {
    format!("CONNECT uuid:{id} HTTP/1.1\r\n\r\n")
}

/// The node-rendezvous park head (a steward-style hidden server):
/// `CONNECT uuid:<id>?response=<TOTP code> HTTP/1.1` and a blank line. The code comes
/// from [`node_code_now`] or any RFC 6238 generator.
pub fn node_park_head(id: impl Display, code: &str) -> String {
    format!("CONNECT uuid:{id}?response={code} HTTP/1.1\r\n\r\n")
}

/// The TOTP code of `record` now, `digits` long (6 for node-rendezvous's default).
pub fn node_code_now(record: &tryst_engine::totp::TotpRecord, digits: usize) -> String {
    tryst_engine::totp::generate(record, now_unix(), digits)
}

/// The current unix time in seconds (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`NONCE_BYTES`] random bytes from the thread-local CSPRNG.
pub fn fresh_nonce() -> [u8; NONCE_BYTES] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tryst_engine::auth::{parse_proof, verify};

    const ID: &str = "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f";

    #[test]
    fn park_head_carries_a_proof_the_engine_verifies() {
        let id = RendezvousId::parse(ID).unwrap();
        let secret = Secret::new(vec![7; 32]);
        let head = park_head(&id, &secret, 1_700_000_000, &[1; 16]);
        assert!(head.starts_with(&format!("CONNECT uuid:{ID} HTTP/1.1\r\n")));
        assert!(head.ends_with("\r\n\r\n"));
        let value = head
            .lines()
            .find_map(|l| l.strip_prefix("Proxy-Authorization: "))
            .unwrap();
        let proof = parse_proof(value.as_bytes()).unwrap();
        let now = 1_700_000_000;
        assert_eq!(
            verify(Some(&secret), Operation::Park, &id, &proof, now, 60),
            Ok(())
        );
        let wrong = Secret::new(vec![8; 32]);
        assert!(verify(Some(&wrong), Operation::Park, &id, &proof, now, 60).is_err());
    }

    #[test]
    fn reach_head_is_exact() {
        let id = RendezvousId::parse(&ID.to_uppercase()).unwrap();
        assert_eq!(
            reach_head(id),
            format!("CONNECT uuid:{ID} HTTP/1.1\r\n\r\n")
        );
    }

    #[test]
    fn fresh_nonces_differ() {
        assert_ne!(fresh_nonce(), fresh_nonce());
    }
}
