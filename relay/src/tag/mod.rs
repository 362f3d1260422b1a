//! Qredo-style tag rendezvous on the engine (`CONNECT tag:<hashedTag>`).
//!
//! A publisher announces a tag by parking under its hashed tag with an Ed25519
//! ownership proof; responders who know the tag `CONNECT` to the same hashed tag without
//! a proof and get a tunnel of their own to one parked publisher connection. Only the
//! Qredo KDF of the tag ([`kdf`]) ever reaches the relay.
//!
//! - [`kdf`]: the Qredo hashed tag and the derived ownership key.
//! - [`wire`]: the target, proof, options and challenge parsers; the pairing frames.
//! - [`table`]: the sans-IO tag table (modes, durations, tombstones, replay cache).
//! - [`TagFamily`]: the [`SchemeFamily`] plugging it into the workers' router.
//!
//! Exact wire and security notes: `docs/compat/qredo.md`.

pub mod kdf;
pub mod table;
pub mod wire;

use crate::router::SchemeFamily;
use table::{TagLimits, TagTable, room_key};
use tryst_engine::head::RequestHead;
use tryst_engine::reject::Rejection;
use tryst_engine::route::{Classified, ParkMode, ReachPlan, Route, Transport};
use tryst_engine::target::RendezvousKey;
use wire::TagMode;

/// The `tag:` scheme family. One per worker; the owner worker of a hashed tag (by its
/// room key) holds that tag's entry, so every park and respond for a tag meets the same
/// table and replay cache.
#[derive(Debug)]
pub struct TagFamily {
    table: TagTable,
}

impl TagFamily {
    /// A family with an empty table.
    pub fn new(limits: TagLimits) -> Self {
        Self {
            table: TagTable::new(limits),
        }
    }

    /// The table (for tests and metrics).
    pub fn table(&self) -> &TagTable {
        &self.table
    }

    fn decide(&mut self, head: &RequestHead, early: &[u8], now: u64) -> Result<Route, Rejection> {
        let tag = wire::parse_target(&head.target)?;
        let proofs = head.header_count("proxy-authorization");
        if proofs == 0 {
            let challenge = wire::parse_challenge(head)?;
            self.table.respond(&tag, now)?;
            return Ok(Route::Reach(ReachPlan {
                key: room_key(&tag),
                greeting: tryst_engine::reject::OK_RESPONSE.to_vec(),
                forward: wire::hello_frame(challenge.as_deref()),
                not_parked: None,
            }));
        }
        if proofs > 1 {
            return Err(Rejection::MalformedProof);
        }
        let proof = wire::parse_proof(head.header("proxy-authorization").unwrap_or_default())?;
        let options = wire::parse_create_options(head)?;
        if !early.is_empty() {
            return Err(Rejection::EarlyData);
        }
        let parked = self.table.park(&tag, &proof, &options, now)?;
        if parked.created {
            tracing::debug!(tag = %tag.to_hex(), mode = parked.mode.as_str(), "tag created");
        }
        Ok(Route::Park {
            key: room_key(&tag),
            mode: match parked.mode {
                TagMode::SingleShot => ParkMode::Replace,
                TagMode::LongTerm => ParkMode::Queue,
            },
        })
    }
}

impl SchemeFamily for TagFamily {
    fn scheme(&self) -> &'static str {
        "tag:"
    }

    fn classify(&self, head: &RequestHead, _transport: Transport) -> Result<Classified, Rejection> {
        let tag = wire::parse_target(&head.target)?;
        Ok(Classified::Rendezvous(room_key(&tag)))
    }

    fn route(
        &mut self,
        head: &RequestHead,
        early: &[u8],
        now_unix: u64,
        _transport: Transport,
    ) -> Route {
        self.decide(head, early, now_unix)
            .unwrap_or_else(Route::Reject)
    }

    fn evictions(&mut self, now_unix: u64, out: &mut Vec<RendezvousKey>) {
        self.table.evictions(now_unix, out);
    }
}
