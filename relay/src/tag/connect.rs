//! The `tag:` family's `CONNECT` side: [`TagFamily`], a [`SchemeFamily`] over the
//! sans-IO [`TagTable`], one per worker. Pure (the clock is passed in as `now`).

use super::sync;
use super::table::{TagLimits, TagTable, room_key};
use super::wire::{self, TagMode};
use crate::router::SchemeFamily;
use tryst_engine::head::RequestHead;
use tryst_engine::reject::Rejection;
use tryst_engine::route::{
    Classified, HalfClose, ParkMode, ReachPlan, ReloadError, Route, Router, Transport,
};
use tryst_engine::target::RendezvousKey;

/// The `tag:` scheme family. One per worker; the owner worker of a hashed tag (by its
/// room key) holds that tag's entry, so every park and respond for a tag meets the same
/// table and replay cache.
#[derive(Debug)]
pub struct TagFamily {
    table: TagTable,
    /// The single-shot tag the last decision consumed, until [`Router::claim`].
    consumed: Option<super::kdf::HashedTag>,
    /// Reports for the supervisor ([`sync::Report`], encoded), taken by
    /// [`Router::reports`].
    reports: Vec<Vec<u8>>,
}

impl TagFamily {
    /// A family with an empty table.
    pub fn new(limits: TagLimits) -> Self {
        Self {
            table: TagTable::new(limits),
            consumed: None,
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
            sync::Control::Put { id, shared } => {
                let answer = match self.table.share(&shared, false, now) {
                    Ok(dead) => {
                        if dead {
                            evict.push(room_key(&shared.tag));
                        }
                        sync::Answer::Applied
                    }
                    Err(answer) => {
                        tracing::warn!(tag = %shared.tag.to_hex(), ?answer, "a tag shared with /services could not be stored");
                        answer
                    }
                };
                (id != 0).then_some((id, answer))
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
            if self.table.respond(&tag, now)? == TagMode::SingleShot {
                // Decided cluster-wide when clustered (`Router::claim`).
                self.consumed = Some(tag);
                if self.table.is_shared(&tag) {
                    // `/services` must refuse RPC responders from now on.
                    self.reports.push(sync::Report::Consumed { tag }.encode());
                }
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
            notice: false,
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

    /// A newer single-shot park on another node: the tag lives there now.
    fn replaced_elsewhere(&mut self, key: &RendezvousKey, now_unix: u64) {
        self.table.moved_away(key, now_unix);
    }

    /// A park proof's replay claim (`tryst:replay:tag:...`, the node's own cache on
    /// failure), or a single-shot consumption's claim (`tryst:tag-once:<hashed tag>`,
    /// kept as long as a tag entry can live): exactly one responder wins across nodes,
    /// and while the directory cannot decide, responders are refused `503 overloaded`
    /// rather than risk two winners.
    /// A single-shot responder refused because its claim could not be decided: the tag
    /// is published again here (it was not consumed anywhere as far as anyone knows).
    fn claim_refused(&mut self, key: &str, now_unix: u64) {
        let Some(hex) = key.strip_prefix(super::TAG_ONCE_PREFIX) else {
            return;
        };
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(hex, &mut bytes).is_ok() {
            self.table
                .unconsume(&super::kdf::HashedTag(bytes), now_unix);
        }
    }

    fn claim(&mut self, now_unix: u64) -> Option<tryst_engine::claim::Claim> {
        let replay = self.table.take_replay_claim(now_unix);
        let Some(tag) = self.consumed.take() else {
            return replay;
        };
        let mut key = String::from(super::TAG_ONCE_PREFIX);
        tryst_engine::claim::push_hex(&mut key, &tag.0);
        Some(tryst_engine::claim::Claim {
            key,
            ttl_secs: u32::try_from(self.table.max_duration_secs().max(1)).unwrap_or(u32::MAX),
            on_unavailable: tryst_engine::claim::OnUnavailable::Refuse(Rejection::Overloaded),
        })
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
    fn claims_name_the_park_nonce_and_the_single_shot_consumption() {
        use tryst_engine::claim::OnUnavailable;
        let mut f = family();
        let tag = hashed_tag("", "claimed");
        let o = CreateOptions {
            mode: Some(TagMode::SingleShot),
            ..CreateOptions::default()
        };
        route(&mut f, &park_text(&tag, 9, &o), b"");
        let park = f.claim(NOW).expect("a park proof's claim");
        assert_eq!(
            park.key,
            format!(
                "tryst:replay:tag:{}:{}",
                hex::encode(room_key(&tag).bytes()),
                "09".repeat(16)
            )
        );
        assert_eq!(park.ttl_secs, 60);
        assert_eq!(park.on_unavailable, OnUnavailable::Proceed);
        assert_eq!(f.claim(NOW), None, "taken once");
        let respond = format!("CONNECT {} HTTP/1.1\r\n\r\n", tag.target());
        assert!(matches!(route(&mut f, &respond, b""), Route::Reach(_)));
        let once = f.claim(NOW).expect("a consumption's claim");
        assert_eq!(once.key, format!("tryst:tag-once:{}", tag.to_hex()));
        assert_eq!(
            once.on_unavailable,
            OnUnavailable::Refuse(Rejection::Overloaded)
        );
        // Refused for want of a decision: the tag is published again.
        f.claim_refused(&once.key, NOW);
        assert!(matches!(route(&mut f, &respond, b""), Route::Reach(_)));
        assert!(f.claim(NOW).is_some());
        assert_eq!(
            refused(route(&mut f, &respond, b"")),
            response("404 Not Found", "unknown_tag", "no such tag", "")
        );
        assert_eq!(f.claim(NOW), None, "a refusal claims nothing");
        // Other keys change nothing.
        f.claim_refused("tryst:tag-once:zz", NOW);
        f.claim_refused("tryst:replay:tag:00", NOW);
        assert!(refused(route(&mut f, &respond, b"")).contains("unknown_tag"));
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
                mode: ParkMode::Queue,
                notice: false,
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
                mode: ParkMode::Replace,
                notice: false,
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
