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
//! - [`sync`]: the messages that share the table with Qredo's `/services` (one tag
//!   table for RPC and `CONNECT tag:`).
//! - [`TagFamily`]: the [`SchemeFamily`] plugging it into the workers' router.
//!
//! Exact wire and security notes: `docs/compat/qredo.md`.

pub mod kdf;
pub mod sync;
pub mod table;
pub mod wire;

use crate::router::SchemeFamily;
use std::time::Duration;
use table::{TagLimits, TagTable, room_key};
use tryst_engine::head::RequestHead;
use tryst_engine::reject::Rejection;
use tryst_engine::route::{
    Classified, HalfClose, ParkMode, ReachPlan, ReloadError, Route, Router, Transport,
};
use tryst_engine::target::RendezvousKey;
use wire::TagMode;

/// What `tryst tag` prints for `tag` under `app_id`: the hashed tag, the derived
/// ownership public key (unpadded base64url and hex) and the `CONNECT` target.
pub fn describe(app_id: &str, tag: &str) -> String {
    use base64::Engine as _;
    let hashed = kdf::hashed_tag(app_id, tag);
    let owner = hashed.derived_public_key();
    format!(
        "hashed tag   {}\n\
         owner key    {} (Ed25519, derived: seed = hashed tag; hex {})\n\
         target       CONNECT {} HTTP/1.1\n",
        hashed.to_hex(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(owner.as_bytes()),
        hex::encode(owner.as_bytes()),
        hashed.target(),
    )
}

/// The `tag:` scheme family. One per worker; the owner worker of a hashed tag (by its
/// room key) holds that tag's entry, so every park and respond for a tag meets the same
/// table and replay cache.
#[derive(Debug)]
pub struct TagFamily {
    table: TagTable,
    /// Reports for the supervisor ([`sync::Report`], encoded), taken by
    /// [`Router::reports`].
    reports: Vec<Vec<u8>>,
}

impl TagFamily {
    /// A family with an empty table.
    pub fn new(limits: TagLimits) -> Self {
        Self {
            table: TagTable::new(limits),
            reports: Vec::new(),
        }
    }

    /// Applies one [`sync::Control`] from the supervisor at `now`; the room key of a
    /// tag that is no longer live goes to `evict`.
    pub fn apply(&mut self, control: sync::Control, now: u64, evict: &mut Vec<RendezvousKey>) {
        let reply = match control {
            sync::Control::Create { id, shared } => {
                let answer = match self.table.share(&shared, true, now) {
                    Ok(dead) => {
                        if dead {
                            evict.push(room_key(&shared.tag));
                        }
                        sync::Answer::Created
                    }
                    Err(answer) => answer,
                };
                Some((id, answer))
            }
            sync::Control::Put { shared } => {
                match self.table.share(&shared, false, now) {
                    Ok(true) => evict.push(room_key(&shared.tag)),
                    Ok(false) => {}
                    Err(answer) => {
                        tracing::warn!(tag = %shared.tag.to_hex(), ?answer, "a tag shared with /services could not be stored")
                    }
                }
                None
            }
            sync::Control::Claim { id, tag } => Some((id, self.table.claim(&tag, now))),
        };
        if let Some((id, answer)) = reply {
            self.reports
                .push(sync::Report::Reply { id, answer }.encode());
        }
    }

    /// The same family in a worker that started at `started_unix` (see
    /// [`TagTable::started_at`]).
    #[must_use]
    pub fn started_at(mut self, started_unix: u64) -> Self {
        self.table = self.table.started_at(started_unix);
        self
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
            if self.table.respond(&tag, now)? == TagMode::SingleShot && self.table.is_shared(&tag) {
                // `/services` must refuse RPC responders from now on.
                self.reports.push(sync::Report::Consumed { tag }.encode());
            }
            return Ok(Route::Reach(ReachPlan {
                key: room_key(&tag),
                greeting: tryst_engine::reject::OK_RESPONSE.to_vec(),
                forward: wire::hello_frame(challenge.as_deref()),
                not_parked: None,
                half_close: HalfClose::PerDirection,
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
}

impl Router for TagFamily {
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

    /// A [`sync::Control`] from the supervisor (the scheme already stripped by the
    /// relay's router); one that does not parse (only a bug sends it) is logged.
    fn control(&mut self, message: &[u8], now_unix: u64, evict: &mut Vec<RendezvousKey>) {
        match sync::Control::decode(message) {
            Ok(control) => self.apply(control, now_unix, evict),
            Err(e) => tracing::warn!(error = %e, "tag: unreadable control message ignored"),
        }
    }

    fn reports(&mut self, out: &mut Vec<Vec<u8>>) {
        out.append(&mut self.reports);
    }

    /// Nothing is loaded from disk: the family's state lives only in memory.
    fn reload(&mut self) -> Result<(), ReloadError> {
        Ok(())
    }
}

/// The `tag:` table limits: the tag flags, the proof window, and a publisher grace of
/// the client wait rounded up to whole seconds.
pub fn resolve(
    s: &crate::cli::Settings,
    proof_window_secs: u64,
    client_wait: Duration,
) -> Result<TagLimits, crate::config::ConfigError> {
    use crate::config::invalid;
    let defaults = TagLimits::default();
    let max_duration = s
        .tag_max_duration
        .map_or_else(|| Duration::from_secs(defaults.max_duration_secs), |d| d.0);
    if max_duration < Duration::from_secs(1) || max_duration.subsec_nanos() != 0 {
        return Err(invalid(
            "tag-max-duration",
            "must be a whole number of seconds, at least 1s",
        ));
    }
    let max_tags = s.tag_max_tags.unwrap_or(defaults.max_tags);
    if !(1..=100_000_000).contains(&max_tags) {
        return Err(invalid("tag-max-tags", "must be between 1 and 100000000"));
    }
    Ok(TagLimits {
        max_tags,
        max_duration_secs: max_duration.as_secs(),
        proof_window_secs,
        publisher_grace_secs: client_wait.as_secs() + u64::from(client_wait.subsec_nanos() > 0),
        ..defaults
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::kdf::{HashedTag, hashed_tag};
    use crate::tag::wire::CreateOptions;
    use tryst_engine::head::{HeadLimits, HeadStatus, parse_head};

    const NOW: u64 = 1_700_000_000;

    fn head(text: &str) -> RequestHead {
        match parse_head(text.as_bytes(), &HeadLimits::default()) {
            Ok(HeadStatus::Complete(h)) => h,
            other => panic!("not a complete head: {other:?}"),
        }
    }

    fn family() -> TagFamily {
        TagFamily::new(TagLimits::default())
    }

    fn park_text(tag: &HashedTag, seed: u8, options: &CreateOptions) -> String {
        wire::park_request(tag, &tag.derived_signing_key(), NOW, &[seed; 16], options)
    }

    fn route(f: &mut TagFamily, text: &str, early: &[u8]) -> Route {
        f.route(&head(text), early, NOW, Transport::Plain)
    }

    /// The exact bytes a refusal sends.
    fn refused(route: Route) -> String {
        match route {
            Route::Reject(r) => String::from_utf8(r.response()).unwrap_or_default(),
            other => panic!("not refused: {other:?}"),
        }
    }

    fn response(status: &str, code: &str, message: &str, extra: &str) -> String {
        let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn park_then_respond_with_the_hello_frame() {
        let mut f = family();
        let tag = hashed_tag("", "hello");
        let key = room_key(&tag);
        let text = park_text(&tag, 1, &CreateOptions::default());
        assert_eq!(
            f.classify(&head(&text), Transport::Plain),
            Ok(Classified::Rendezvous(key))
        );
        assert_eq!(
            route(&mut f, &text, b""),
            Route::Park {
                key,
                mode: ParkMode::Queue
            }
        );
        let respond = format!("CONNECT {} HTTP/1.1\r\n\r\n", tag.target());
        assert_eq!(
            route(&mut f, &respond, b"early"),
            Route::Reach(ReachPlan {
                key,
                greeting: b"HTTP/1.1 200\r\n\r\n".to_vec(),
                forward: b"TAGHELLO\x01\x00".to_vec(),
                not_parked: None,
                half_close: HalfClose::PerDirection,
            })
        );
        let challenged = format!(
            "CONNECT {} HTTP/1.1\r\nTag-Challenge: {}\r\n\r\n",
            tag.target(),
            "0f".repeat(32)
        );
        let Route::Reach(plan) = route(&mut f, &challenged, b"") else {
            panic!("not a reach");
        };
        let mut want = b"TAGHELLO\x01\x20".to_vec();
        want.extend_from_slice(&[0x0f; 32]);
        assert_eq!(plan.forward, want);
    }

    #[test]
    fn single_shot_parks_replace() {
        let mut f = family();
        let tag = hashed_tag("", "once");
        let o = CreateOptions {
            mode: Some(TagMode::SingleShot),
            ..CreateOptions::default()
        };
        assert_eq!(
            route(&mut f, &park_text(&tag, 1, &o), b""),
            Route::Park {
                key: room_key(&tag),
                mode: ParkMode::Replace
            }
        );
        let respond = format!("CONNECT {} HTTP/1.1\r\n\r\n", tag.target());
        assert!(matches!(route(&mut f, &respond, b""), Route::Reach(_)));
        assert_eq!(
            refused(route(&mut f, &respond, b"")),
            response("404 Not Found", "unknown_tag", "no such tag", "")
        );
    }

    #[test]
    fn refusals_are_exact() {
        let mut f = family();
        let tag = hashed_tag("", "refusals");
        let t = tag.target();
        let good = park_text(&tag, 1, &CreateOptions::default());
        let proof_line = good.lines().nth(1).unwrap_or_default().to_owned();
        let cases: Vec<(String, &[u8], String)> = vec![
            (
                format!("CONNECT {t} HTTP/1.1\r\n\r\n"),
                b"",
                response("404 Not Found", "unknown_tag", "no such tag", ""),
            ),
            (
                "CONNECT tag:abc HTTP/1.1\r\n\r\n".into(),
                b"",
                response(
                    "400 Bad Request",
                    "malformed_tag",
                    "malformed tag target (expected tag:<64 hex digits>)",
                    "",
                ),
            ),
            (
                format!("CONNECT {t} HTTP/1.1\r\nProxy-Authorization: Tag ts=1\r\n\r\n"),
                b"",
                response("400 Bad Request", "malformed_proof", "malformed proof", ""),
            ),
            (
                format!("CONNECT {t} HTTP/1.1\r\n{proof_line}\r\n{proof_line}\r\n\r\n"),
                b"",
                response("400 Bad Request", "malformed_proof", "malformed proof", ""),
            ),
            (
                format!("CONNECT {t} HTTP/1.1\r\n{proof_line}\r\nTag-Mode: sometimes\r\n\r\n"),
                b"",
                response(
                    "400 Bad Request",
                    "malformed_tag_option",
                    "malformed tag option",
                    "",
                ),
            ),
            (
                format!(
                    "CONNECT {t} HTTP/1.1\r\n{proof_line}\r\nTag-Owner-Key: {}\r\n\r\n",
                    "A".repeat(43)
                ),
                b"",
                response(
                    "400 Bad Request",
                    "bad_owner_key",
                    "owner key is not a strong Ed25519 public key",
                    "",
                ),
            ),
            (
                format!("CONNECT {t} HTTP/1.1\r\nTag-Challenge: xyz\r\n\r\n"),
                b"",
                response(
                    "400 Bad Request",
                    "malformed_tag_option",
                    "malformed tag option",
                    "",
                ),
            ),
            (
                good.clone(),
                b"x",
                response(
                    "409 Conflict",
                    "early_data",
                    "bytes sent before the 200",
                    "",
                ),
            ),
            (
                // Signed with the wrong key.
                wire::park_request(
                    &tag,
                    &hashed_tag("", "x").derived_signing_key(),
                    NOW,
                    &[2; 16],
                    &CreateOptions::default(),
                ),
                b"",
                response("403 Forbidden", "bad_proof", "proof does not verify", ""),
            ),
            (
                wire::park_request(
                    &tag,
                    &tag.derived_signing_key(),
                    NOW - 61,
                    &[3; 16],
                    &CreateOptions::default(),
                ),
                b"",
                response(
                    "403 Forbidden",
                    "stale_timestamp",
                    "timestamp outside the accepted window",
                    "",
                ),
            ),
        ];
        for (text, early, want) in cases {
            assert_eq!(refused(route(&mut f, &text, early)), want, "{text}");
        }
        assert!(matches!(route(&mut f, &good, b""), Route::Park { .. }));
        assert_eq!(
            refused(route(&mut f, &good, b"")),
            response("403 Forbidden", "replayed_nonce", "nonce already used", "")
        );
        let conflicting = park_text(
            &tag,
            4,
            &CreateOptions {
                mode: Some(TagMode::SingleShot),
                ..CreateOptions::default()
            },
        );
        assert_eq!(
            refused(route(&mut f, &conflicting, b"")),
            response(
                "409 Conflict",
                "tag_conflict",
                "options conflict with the tag's creation options",
                ""
            )
        );
    }

    #[test]
    fn gone_and_full_responses_are_exact() {
        let mut f = TagFamily::new(TagLimits {
            max_tags: 1,
            max_duration_secs: 10,
            ..TagLimits::default()
        });
        let a = hashed_tag("", "a");
        assert!(matches!(
            route(&mut f, &park_text(&a, 1, &CreateOptions::default()), b""),
            Route::Park { .. }
        ));
        let b = hashed_tag("", "b");
        assert_eq!(
            refused(route(
                &mut f,
                &park_text(&b, 1, &CreateOptions::default()),
                b""
            )),
            response(
                "503 Service Unavailable",
                "tag_table_full",
                "tag table full",
                "Retry-After: 1\r\n"
            )
        );
        let late = wire::park_request(
            &a,
            &a.derived_signing_key(),
            NOW + 10,
            &[2; 16],
            &CreateOptions::default(),
        );
        assert_eq!(
            refused(f.route(&head(&late), b"", NOW + 10, Transport::Plain)),
            response("410 Gone", "tag_gone", "tag consumed or expired", "")
        );
        let mut out = Vec::new();
        f.evictions(NOW + 10, &mut out);
        assert_eq!(out, vec![room_key(&a)]);
    }
}
