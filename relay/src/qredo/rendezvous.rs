//! The `Rendezvous` service's table, sans-IO: every call takes `now` (unix ms) and
//! returns the result value the SDK expects, or a [`Failure`].
//!
//! An entry is created by `create` (no signature: the SDK sends none) with the
//! creation info's ownership public key; `activate`, `getInfo`, `getResponses`,
//! `subscribeToResponses` and `deactivate` must carry an [`ownership`] signature by that
//! key. `respond` carries none (knowing the tag is the credential) and appends a
//! response with the next sequence number (1, 2, ...).
//!
//! ```text
//!  (absent) --create--> Active --duration elapsed / deactivate--> Inactive
//!                          ^                                          |
//!                          +------------------ activate --------------+
//!  Inactive entries are forgotten `max_duration` after they stopped (or sooner when
//!  the table is full, oldest first); a forgotten tag can be created again.
//! ```

use super::Failure;
use super::lf::{DateTime, Record, Value};
use super::ownership::{self, Op, ReplayCache};
use crate::tag::kdf::HashedTag;
use crate::tag::sync::SharedTag;
use crate::tag::wire::TagMode;
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;

/// Limits of a [`RendezvousTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RendezvousLimits {
    /// Most entries (active and inactive).
    pub max_tags: usize,
    /// Longest duration, seconds: longer requests are capped, and a rendezvous created
    /// without one gets this.
    pub max_duration_secs: u64,
    /// Most responses kept per rendezvous (an unlimited one is `Rejected
    /// (MaxResponseCountReached)` beyond).
    pub max_responses: usize,
    /// Accepted `|now − timestamp|` of an ownership signature, ms.
    pub window_ms: u64,
    /// Capacity of the signature replay cache.
    pub replay_capacity: usize,
}

impl Default for RendezvousLimits {
    fn default() -> Self {
        Self {
            max_tags: 100_000,
            max_duration_secs: 24 * 3600,
            max_responses: 1000,
            window_ms: 60_000,
            replay_capacity: 1 << 18,
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// What every registered responder is answered: `RendezvousResponseRegistered
    /// {info}`, `info` being the creation's `EncryptedResponderInfo` (built once here
    /// rather than per `respond`).
    registered: Value,
    owner: VerifyingKey,
    single: bool,
    /// When it stops (or stopped) being active.
    expires_at_ms: u64,
    deactivated_at_ms: Option<u64>,
    /// `RendezvousResponse` records with their sequence numbers (1, 2, ...).
    responses: Vec<(i64, Record)>,
    /// The duration asked for at the last `create` or `activate`, seconds (shared with
    /// the `tag:` family: a park naming another `Tag-Duration` conflicts).
    requested_secs: u64,
    /// A single-response rendezvous whose response was taken outside this table (by a
    /// `CONNECT tag:` responder, as the owner worker reported): `respond` is
    /// `Rejected(MaxResponseCountReached)`.
    consumed_elsewhere: bool,
}

impl Entry {
    fn active(&self, now_ms: u64) -> bool {
        self.deactivated_at_ms.is_none() && now_ms < self.expires_at_ms
    }
    fn stopped_at(&self) -> u64 {
        self.deactivated_at_ms
            .map_or(self.expires_at_ms, |d| d.min(self.expires_at_ms))
    }
}

/// The table.
#[derive(Debug)]
pub struct RendezvousTable {
    limits: RendezvousLimits,
    entries: HashMap<[u8; 32], Entry>,
    replay: ReplayCache,
    /// `Some` while [`RendezvousTable::probe`] runs an operation: its signature is
    /// verified and recorded here, and the operation stops before any effect.
    probe: Option<Option<ownership::Verified>>,
}

/// A response registered by `respond`, for subscribers: the value they are pushed comes
/// from [`RendezvousTable::registered_value`], built only when someone subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The hashed tag.
    pub tag: [u8; 32],
    /// Its sequence number.
    pub seq: i64,
}

fn limit_value(single: bool) -> Value {
    Value::Record(Record::unit(if single {
        "RendezvousSingleResponse"
    } else {
        "RendezvousUnlimitedResponses"
    }))
}

fn at(ms: u64) -> Value {
    Value::DateTime(DateTime::from_unix_ms(ms))
}

fn rejected(reason: &str) -> Value {
    Value::Record(Record::new(
        "RendezvousResponseRejected",
        vec![("reason", Value::Record(Record::unit(reason)))],
    ))
}

fn with_sequence(seq: i64, response: &Record) -> Value {
    Value::Record(Record::new(
        "RendezvousResponseWithSequenceValue",
        vec![
            ("response", Value::Record(response.clone())),
            ("sequenceValue", Value::Int64(seq)),
        ],
    ))
}

/// The marshalled bytes of a QUID (the data most signatures cover).
fn quid_bytes(tag: &[u8; 32]) -> Vec<u8> {
    Value::Quid(*tag).encode()
}

impl RendezvousTable {
    /// An empty table.
    pub fn new(limits: RendezvousLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            replay: ReplayCache::new(limits.replay_capacity),
            probe: None,
        }
    }

    /// Runs a signed operation (`activate`, `deactivate`, `getInfo`, `getResponses`,
    /// `subscribe`) up to its signature check only: no replay cache is touched and
    /// nothing changes. `Ok(Some(v))`: the signature verified (a cluster claims `v`
    /// before the operation runs for real); `Err`: the operation's own refusal, which
    /// running it would give too; `Ok(None)`: it checks no signature.
    pub fn probe<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, Failure>,
    ) -> Result<Option<ownership::Verified>, Failure> {
        self.probe = Some(None);
        let result = op(self);
        match (self.probe.take().flatten(), result) {
            (Some(v), _) => Ok(Some(v)),
            (None, Err(e)) => Err(e),
            (None, Ok(_)) => Ok(None),
        }
    }

    /// Entries held (active and inactive).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries active at `now_ms`.
    pub fn active(&self, now_ms: u64) -> usize {
        self.entries.values().filter(|e| e.active(now_ms)).count()
    }

    /// The entry of `tag` as the `tag:` family's table must hold it (see
    /// [`crate::tag::sync`]), if there is one.
    pub fn shared(&self, tag: &[u8; 32], now_ms: u64) -> Option<SharedTag> {
        let e = self.entries.get(tag)?;
        Some(SharedTag {
            tag: HashedTag(*tag),
            owner: e.owner.to_bytes(),
            mode: if e.single {
                TagMode::SingleShot
            } else {
                TagMode::LongTerm
            },
            requested_duration_secs: e.requested_secs,
            expires_at: e.expires_at_ms / 1000,
            active: e.active(now_ms),
            consumed: e.single && (e.consumed_elsewhere || !e.responses.is_empty()),
        })
    }

    /// Every entry as [`RendezvousTable::shared`] gives it (for a restarted worker).
    pub fn all_shared(&self, now_ms: u64) -> Vec<SharedTag> {
        self.entries
            .keys()
            .filter_map(|tag| self.shared(tag, now_ms))
            .collect()
    }

    /// The hashed tag of a `RendezvousResponse`, when it names a single-response
    /// rendezvous that is active and still unanswered here: its response must first be
    /// claimed from the owner worker, which decides single-shot consumption.
    pub fn needs_claim(&self, response: &Value, now_ms: u64) -> Option<[u8; 32]> {
        let tag = *response
            .as_record()
            .ok()?
            .field("hashedTag")
            .and_then(Value::as_quid)
            .ok()?;
        let e = self.entries.get(&tag)?;
        (e.single && e.active(now_ms) && e.responses.is_empty() && !e.consumed_elsewhere)
            .then_some(tag)
    }

    /// The single response of `tag` was taken outside this table (a tunnel responder, or
    /// another RPC responder whose claim won).
    pub fn mark_consumed(&mut self, tag: &[u8; 32]) {
        if let Some(e) = self.entries.get_mut(tag)
            && e.single
        {
            e.consumed_elsewhere = true;
        }
    }

    /// Forgets `tag` (a `create` the owner worker refused).
    pub fn forget(&mut self, tag: &[u8; 32]) {
        self.entries.remove(tag);
    }

    fn duration_ms(&self, requested: Option<i32>) -> Result<u64, Failure> {
        let max = self.limits.max_duration_secs;
        let secs = match requested {
            None => max,
            Some(s) if s <= 0 => return Err(Failure::BadArguments),
            Some(s) => u64::try_from(s).map_or(max, |s| s.min(max)),
        };
        Ok(secs.saturating_mul(1000))
    }

    /// Makes room for one entry: forgets inactive entries stopped longer than
    /// `max_duration` ago, then (when still full) the longest-stopped ones.
    fn make_room(&mut self, now_ms: u64) -> Result<(), Failure> {
        let keep_ms = self.limits.max_duration_secs.saturating_mul(1000);
        if self.entries.len() < self.limits.max_tags {
            return Ok(());
        }
        self.entries
            .retain(|_, e| e.active(now_ms) || now_ms.saturating_sub(e.stopped_at()) < keep_ms);
        if self.entries.len() < self.limits.max_tags {
            return Ok(());
        }
        let oldest = self
            .entries
            .iter()
            .filter(|(_, e)| !e.active(now_ms))
            .min_by_key(|(_, e)| e.stopped_at())
            .map(|(k, _)| *k);
        match oldest {
            Some(k) => {
                self.entries.remove(&k);
                Ok(())
            }
            None => Err(Failure::Busy),
        }
    }

    /// `create(RendezvousCreationInfo)` → `RendezvousCreated{expiresAt}` |
    /// `RendezvousAlreadyExists`.
    pub fn create(&mut self, info: &Value, now_ms: u64) -> Result<Value, Failure> {
        let bad = |_| Failure::BadArguments;
        let info = info.as_record().map_err(bad)?;
        if info.name != "RendezvousCreationInfo" || info.fields.len() != 5 {
            return Err(Failure::BadArguments);
        }
        let duration = info
            .field("durationSeconds")
            .and_then(Value::as_optional_i32)
            .map_err(bad)?;
        let responder_info = info.field("encryptedResponderInfo").map_err(bad)?;
        check_responder_info(responder_info)?;
        let tag = *info
            .field("hashedTag")
            .and_then(Value::as_quid)
            .map_err(bad)?;
        let owner = info
            .field("ownershipPublicKey")
            .and_then(Value::as_bytes)
            .map_err(bad)?;
        let owner = <[u8; 32]>::try_from(owner).map_err(|_| Failure::BadArguments)?;
        let owner = crate::ed25519::strict_key(&owner).map_err(|_| Failure::BadArguments)?;
        let single = match info.field("responseCountLimit").and_then(Value::as_record) {
            Ok(r) if r.name == "RendezvousSingleResponse" && r.fields.is_empty() => true,
            Ok(r) if r.name == "RendezvousUnlimitedResponses" && r.fields.is_empty() => false,
            _ => return Err(Failure::BadArguments),
        };
        let duration_ms = self.duration_ms(duration)?;
        if self.entries.contains_key(&tag) {
            return Ok(Value::Record(Record::unit("RendezvousAlreadyExists")));
        }
        self.make_room(now_ms)?;
        let expires_at_ms = now_ms.saturating_add(duration_ms);
        self.entries.insert(
            tag,
            Entry {
                registered: Value::Record(Record::new(
                    "RendezvousResponseRegistered",
                    vec![("info", responder_info.clone())],
                )),
                owner,
                single,
                expires_at_ms,
                deactivated_at_ms: None,
                responses: Vec::new(),
                requested_secs: duration_ms / 1000,
                consumed_elsewhere: false,
            },
        );
        Ok(Value::Record(Record::new(
            "RendezvousCreated",
            vec![("expiresAt", Value::Set(vec![at(expires_at_ms)]))],
        )))
    }

    fn owned(
        &mut self,
        tag: &Value,
        sig: &Value,
        op: Op,
        data: &[u8],
        now_ms: u64,
    ) -> Result<&mut Entry, Failure> {
        let tag = *tag.as_quid().map_err(|_| Failure::BadArguments)?;
        let entry = self
            .entries
            .get_mut(&tag)
            .ok_or(Failure::UnknownRendezvous)?;
        if let Some(probed) = &mut self.probe {
            let v = ownership::verify(sig, &entry.owner, op, data, now_ms, self.limits.window_ms)?;
            *probed = Some(v);
            // Never answered: `probe` returns the verified signature instead.
            return Err(Failure::Busy);
        }
        ownership::check(
            sig,
            &entry.owner,
            op,
            data,
            now_ms,
            self.limits.window_ms,
            &mut self.replay,
        )?;
        Ok(entry)
    }

    /// `activate(hashedTag, durationSeconds, signature)` → `RendezvousActivated
    /// {expiresAt}`; signed `OperationCreate` over the tag and the duration set.
    pub fn activate(
        &mut self,
        tag: &Value,
        duration: &Value,
        sig: &Value,
        now_ms: u64,
    ) -> Result<Value, Failure> {
        let requested = duration
            .as_optional_i32()
            .map_err(|_| Failure::BadArguments)?;
        let duration_ms = self.duration_ms(requested)?;
        let mut data = quid_bytes(tag.as_quid().map_err(|_| Failure::BadArguments)?);
        duration.encode_into(&mut data);
        let entry = self.owned(tag, sig, Op::Create, &data, now_ms)?;
        entry.deactivated_at_ms = None;
        entry.expires_at_ms = now_ms.saturating_add(duration_ms);
        entry.requested_secs = duration_ms / 1000;
        Ok(Value::Record(Record::new(
            "RendezvousActivated",
            vec![("expiresAt", Value::Set(vec![at(entry.expires_at_ms)]))],
        )))
    }

    /// `getInfo(hashedTag, signature)` → `RendezvousInfo`; signed `OperationGet` over
    /// the tag (the SDK never calls it; tryst's choice, by analogy).
    pub fn get_info(&mut self, tag: &Value, sig: &Value, now_ms: u64) -> Result<Value, Failure> {
        let data = quid_bytes(tag.as_quid().map_err(|_| Failure::BadArguments)?);
        let entry = self.owned(tag, sig, Op::Get, &data, now_ms)?;
        Ok(Value::Record(Record::new(
            "RendezvousInfo",
            vec![
                (
                    "deactivatedAt",
                    Value::Set(entry.deactivated_at_ms.map(at).into_iter().collect()),
                ),
                ("expiresAt", Value::Set(vec![at(entry.expires_at_ms)])),
                (
                    "numOfResponses",
                    // A response a tunnel took counts as the single one.
                    Value::Int64(
                        entry.responses.len() as i64
                            + i64::from(entry.consumed_elsewhere && entry.responses.is_empty()),
                    ),
                ),
                ("responseCountLimit", limit_value(entry.single)),
            ],
        )))
    }

    /// `respond(RendezvousResponse)` → `RendezvousResponseRegistered{info}` |
    /// `RendezvousResponseUnknownTag` | `RendezvousResponseRejected{reason}`; the
    /// registered response (for subscribers) alongside.
    pub fn respond(
        &mut self,
        response: &Value,
        now_ms: u64,
    ) -> Result<(Value, Option<Registered>), Failure> {
        self.respond_with(response, now_ms, false)
    }

    /// [`RendezvousTable::respond`] for a responder whose claim on a single-response
    /// rendezvous the owner worker granted (see [`RendezvousTable::needs_claim`]): a
    /// consumption reported meanwhile by a losing claim does not refuse it.
    pub fn respond_claimed(
        &mut self,
        response: &Value,
        now_ms: u64,
    ) -> Result<(Value, Option<Registered>), Failure> {
        self.respond_with(response, now_ms, true)
    }

    fn respond_with(
        &mut self,
        response: &Value,
        now_ms: u64,
        claimed: bool,
    ) -> Result<(Value, Option<Registered>), Failure> {
        let bad = |_| Failure::BadArguments;
        let rec = response.as_record().map_err(bad)?;
        if rec.name != "RendezvousResponse" || rec.fields.len() != 3 {
            return Err(Failure::BadArguments);
        }
        let tag = *rec
            .field("hashedTag")
            .and_then(Value::as_quid)
            .map_err(bad)?;
        let code = rec
            .field("responderAuthenticationCode")
            .and_then(Value::as_bytes)
            .map_err(bad)?;
        let key = rec
            .field("responderPublicKey")
            .and_then(Value::as_bytes)
            .map_err(bad)?;
        let Some(entry) = self.entries.get_mut(&tag) else {
            return Ok((
                Value::Record(Record::unit("RendezvousResponseUnknownTag")),
                None,
            ));
        };
        // An X25519 public key and an HMAC-SHA256 code, as the SDK sends them.
        if key.len() != 32 || code.len() != 32 {
            return Ok((rejected("RendezvousResponseInvalid"), None));
        }
        if !entry.active(now_ms) {
            return Ok((rejected("RendezvousResponseDurationElapsed"), None));
        }
        let cap = if entry.single {
            1
        } else {
            self.limits.max_responses
        };
        if entry.responses.len() >= cap || (entry.consumed_elsewhere && !claimed) {
            return Ok((rejected("RendezvousResponseMaxResponseCountReached"), None));
        }
        let seq = entry.responses.len() as i64 + 1;
        entry.responses.push((seq, rec.clone()));
        Ok((entry.registered.clone(), Some(Registered { tag, seq })))
    }

    /// The `RendezvousResponseWithSequenceValue` subscribers are pushed for `registered`
    /// (`None` if its rendezvous was forgotten since).
    pub fn registered_value(&self, registered: &Registered) -> Option<Value> {
        let entry = self.entries.get(&registered.tag)?;
        let (seq, response) = entry
            .responses
            .iter()
            .rev()
            .find(|(seq, _)| *seq == registered.seq)?;
        Some(with_sequence(*seq, response))
    }

    /// `getResponses(hashedTag, after, signature)` → `RendezvousResponsesResult
    /// {responses, sequenceValue}`: the responses with a sequence number above `after`
    /// and the highest sequence number returned (`after` when none); signed
    /// `OperationList` over the tag and `after` (`QredoRendezvous.m
    /// enumerateResponsesWithBlock:`).
    pub fn get_responses(
        &mut self,
        tag: &Value,
        after: &Value,
        sig: &Value,
        now_ms: u64,
    ) -> Result<Value, Failure> {
        let after_seq = after.as_i64().map_err(|_| Failure::BadArguments)?;
        let mut data = quid_bytes(tag.as_quid().map_err(|_| Failure::BadArguments)?);
        after.encode_into(&mut data);
        let entry = self.owned(tag, sig, Op::List, &data, now_ms)?;
        let mut last = after_seq;
        let mut out = Vec::new();
        for (seq, r) in entry.responses.iter().filter(|(s, _)| *s > after_seq) {
            out.push(Value::Record(r.clone()));
            last = *seq;
        }
        Ok(Value::Record(Record::new(
            "RendezvousResponsesResult",
            vec![
                ("responses", Value::Seq(out)),
                ("sequenceValue", Value::Int64(last)),
            ],
        )))
    }

    /// `subscribeToResponses(hashedTag, signature)`: checks the signature
    /// (`OperationList` over the tag) and returns the responses already registered, as
    /// `RendezvousResponseWithSequenceValue` values to push first.
    pub fn subscribe(
        &mut self,
        tag: &Value,
        sig: &Value,
        now_ms: u64,
    ) -> Result<Vec<Value>, Failure> {
        let data = quid_bytes(tag.as_quid().map_err(|_| Failure::BadArguments)?);
        let entry = self.owned(tag, sig, Op::List, &data, now_ms)?;
        Ok(entry
            .responses
            .iter()
            .map(|(seq, r)| with_sequence(*seq, r))
            .collect())
    }

    /// `deactivate(hashedTag, signature)` → `RendezvousDeactivated`; signed
    /// `OperationDelete` over the tag. Responders are then `Rejected
    /// (DurationElapsed)`; `activate` revives it.
    pub fn deactivate(&mut self, tag: &Value, sig: &Value, now_ms: u64) -> Result<Value, Failure> {
        let data = quid_bytes(tag.as_quid().map_err(|_| Failure::BadArguments)?);
        let entry = self.owned(tag, sig, Op::Delete, &data, now_ms)?;
        entry.deactivated_at_ms.get_or_insert(now_ms);
        Ok(Value::Record(Record::unit("RendezvousDeactivated")))
    }
}

/// `EncryptedResponderInfo{authenticationCode: bytes, authenticationType:
/// RendezvousAnonymous | RendezvousTrusted{signature}, value: bytes}`.
fn check_responder_info(v: &Value) -> Result<(), Failure> {
    let bad = |_| Failure::BadArguments;
    let r = v.as_record().map_err(bad)?;
    if r.name != "EncryptedResponderInfo" || r.fields.len() != 3 {
        return Err(Failure::BadArguments);
    }
    r.field("authenticationCode")
        .and_then(Value::as_bytes)
        .map_err(bad)?;
    r.field("value").and_then(Value::as_bytes).map_err(bad)?;
    let t = r
        .field("authenticationType")
        .and_then(Value::as_record)
        .map_err(bad)?;
    match t.name.as_str() {
        "RendezvousAnonymous" if t.fields.is_empty() => Ok(()),
        "RendezvousTrusted" if t.fields.len() == 1 => Ok(()),
        _ => Err(Failure::BadArguments),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const T0: u64 = 1_700_000_000_000;

    fn info(tag: [u8; 32], owner: &SigningKey, single: bool, duration: Option<i32>) -> Value {
        Value::Record(Record::new(
            "RendezvousCreationInfo",
            vec![
                (
                    "durationSeconds",
                    Value::Set(duration.map(Value::Int32).into_iter().collect()),
                ),
                (
                    "encryptedResponderInfo",
                    Value::Record(Record::new(
                        "EncryptedResponderInfo",
                        vec![
                            ("authenticationCode", Value::Bytes(vec![1; 32])),
                            (
                                "authenticationType",
                                Value::Record(Record::unit("RendezvousAnonymous")),
                            ),
                            ("value", Value::Bytes(vec![2; 40])),
                        ],
                    )),
                ),
                ("hashedTag", Value::Quid(tag)),
                (
                    "ownershipPublicKey",
                    Value::Bytes(owner.verifying_key().to_bytes().to_vec()),
                ),
                ("responseCountLimit", limit_value(single)),
            ],
        ))
    }

    fn response(tag: [u8; 32]) -> Value {
        Value::Record(Record::new(
            "RendezvousResponse",
            vec![
                ("hashedTag", Value::Quid(tag)),
                ("responderAuthenticationCode", Value::Bytes(vec![3; 32])),
                ("responderPublicKey", Value::Bytes(vec![4; 32])),
            ],
        ))
    }

    fn outcome(t: &mut RendezvousTable, tag: [u8; 32], now: u64) -> String {
        let (v, _) = t.respond(&response(tag), now).unwrap();
        let r = v.as_record().unwrap();
        match r.name.as_str() {
            "RendezvousResponseRejected" => {
                r.field("reason").unwrap().as_record().unwrap().name.clone()
            }
            _ => r.name.clone(),
        }
    }

    #[test]
    fn durations_elapse_and_are_capped() {
        let owner = SigningKey::from_bytes(&[5; 32]);
        let mut t = RendezvousTable::new(RendezvousLimits {
            max_duration_secs: 100,
            ..RendezvousLimits::default()
        });
        let created = t
            .create(&info([1; 32], &owner, false, Some(10)), T0)
            .unwrap();
        assert_eq!(
            created,
            Value::Record(Record::new(
                "RendezvousCreated",
                vec![(
                    "expiresAt",
                    Value::Set(vec![Value::DateTime(DateTime::from_unix_ms(T0 + 10_000))])
                )],
            ))
        );
        assert_eq!(
            outcome(&mut t, [1; 32], T0 + 9_999),
            "RendezvousResponseRegistered"
        );
        assert_eq!(
            outcome(&mut t, [1; 32], T0 + 10_000),
            "RendezvousResponseDurationElapsed"
        );
        // No duration, or a longer one: the cap.
        let created = t.create(&info([2; 32], &owner, false, None), T0).unwrap();
        let capped = t
            .create(&info([3; 32], &owner, false, Some(1_000_000)), T0)
            .unwrap();
        let want = Value::Set(vec![Value::DateTime(DateTime::from_unix_ms(T0 + 100_000))]);
        assert_eq!(created.as_record().unwrap().field("expiresAt"), Ok(&want));
        assert_eq!(capped.as_record().unwrap().field("expiresAt"), Ok(&want));
        assert_eq!(
            t.create(&info([4; 32], &owner, false, Some(0)), T0),
            Err(Failure::BadArguments)
        );
        assert_eq!(
            t.create(&info([4; 32], &owner, false, Some(-5)), T0),
            Err(Failure::BadArguments)
        );
    }

    #[test]
    fn single_unlimited_and_the_response_cap() {
        let owner = SigningKey::from_bytes(&[5; 32]);
        let mut t = RendezvousTable::new(RendezvousLimits {
            max_responses: 3,
            ..RendezvousLimits::default()
        });
        t.create(&info([1; 32], &owner, true, None), T0).unwrap();
        t.create(&info([2; 32], &owner, false, None), T0).unwrap();
        assert_eq!(outcome(&mut t, [1; 32], T0), "RendezvousResponseRegistered");
        assert_eq!(
            outcome(&mut t, [1; 32], T0),
            "RendezvousResponseMaxResponseCountReached"
        );
        for _ in 0..3 {
            assert_eq!(outcome(&mut t, [2; 32], T0), "RendezvousResponseRegistered");
        }
        assert_eq!(
            outcome(&mut t, [2; 32], T0),
            "RendezvousResponseMaxResponseCountReached"
        );
        assert_eq!(outcome(&mut t, [9; 32], T0), "RendezvousResponseUnknownTag");
        // Sequence numbers for subscribers: 1, 2, 3.
        let (_, reg) = t.respond(&response([2; 32]), T0).unwrap();
        assert_eq!(reg, None);
        let pushed_value =
            |t: &RendezvousTable, seq| t.registered_value(&Registered { tag: [2; 32], seq });
        assert_eq!(
            pushed_value(&t, 3),
            Some(with_sequence(3, response([2; 32]).as_record().unwrap()))
        );
        assert_eq!(pushed_value(&t, 4), None, "no fourth response");
        let sig = ownership::sign(
            &owner,
            Op::List,
            &Value::Quid([2; 32]).encode(),
            &[1; 16],
            T0 as i64,
        );
        let pushed = t.subscribe(&Value::Quid([2; 32]), &sig, T0).unwrap();
        let seqs: Vec<_> = pushed
            .iter()
            .map(|v| {
                v.as_record()
                    .unwrap()
                    .field("sequenceValue")
                    .unwrap()
                    .clone()
            })
            .collect();
        assert_eq!(seqs, [Value::Int64(1), Value::Int64(2), Value::Int64(3)]);
    }

    #[test]
    fn a_full_table_forgets_the_longest_stopped_then_refuses() {
        let owner = SigningKey::from_bytes(&[5; 32]);
        let mut t = RendezvousTable::new(RendezvousLimits {
            max_tags: 2,
            max_duration_secs: 1000,
            ..RendezvousLimits::default()
        });
        t.create(&info([1; 32], &owner, false, Some(1)), T0)
            .unwrap();
        t.create(&info([2; 32], &owner, false, Some(2)), T0)
            .unwrap();
        // Both active: refused.
        assert_eq!(
            t.create(&info([3; 32], &owner, false, None), T0),
            Err(Failure::Busy)
        );
        // [1] stopped first: it goes; its tag can be created again later.
        let v = t
            .create(&info([3; 32], &owner, false, None), T0 + 2_500)
            .unwrap();
        assert_eq!(v.as_record().unwrap().name, "RendezvousCreated");
        assert_eq!(t.len(), 2);
        assert_eq!(
            outcome(&mut t, [1; 32], T0 + 2_500),
            "RendezvousResponseUnknownTag"
        );
        assert_eq!(
            outcome(&mut t, [2; 32], T0 + 2_500),
            "RendezvousResponseDurationElapsed"
        );
    }

    #[test]
    fn malformed_creation_info_is_refused() {
        let owner = SigningKey::from_bytes(&[5; 32]);
        let mut t = RendezvousTable::new(RendezvousLimits::default());
        let good = info([1; 32], &owner, true, None);
        let mut r = good.as_record().unwrap().clone();
        r.fields[3].1 = Value::Bytes(vec![0; 31]);
        assert_eq!(t.create(&Value::Record(r), T0), Err(Failure::BadArguments));
        let mut r = good.as_record().unwrap().clone();
        r.fields[4].1 = Value::Record(Record::unit("RendezvousSomeResponses"));
        assert_eq!(t.create(&Value::Record(r), T0), Err(Failure::BadArguments));
        let mut r = good.as_record().unwrap().clone();
        r.name = "Other".into();
        assert_eq!(t.create(&Value::Record(r), T0), Err(Failure::BadArguments));
        assert!(t.is_empty());
    }

    proptest::proptest! {
        /// Whatever values arrive as arguments, no operation panics, and the table
        /// stays within its cap.
        #[test]
        fn arbitrary_arguments_never_panic(
            args in proptest::collection::vec(crate::qredo::lf::props::value(), 0..4),
            at in proptest::prelude::any::<u64>(),
        ) {
            let owner = SigningKey::from_bytes(&[5; 32]);
            let mut t = RendezvousTable::new(RendezvousLimits {
                max_tags: 2,
                ..RendezvousLimits::default()
            });
            t.create(&info([1; 32], &owner, false, None), T0).unwrap();
            let a = |i: usize| args.get(i).cloned().unwrap_or(Value::Bool(false));
            let tag = Value::Quid([1; 32]);
            let _ = t.create(&a(0), at);
            let _ = t.respond(&a(0), at);
            let _ = t.activate(&a(0), &a(1), &a(2), at);
            let _ = t.activate(&tag, &a(1), &a(2), at);
            let _ = t.get_info(&tag, &a(0), at);
            let _ = t.get_responses(&tag, &a(0), &a(1), at);
            let _ = t.subscribe(&a(0), &a(1), at);
            let _ = t.deactivate(&tag, &a(0), at);
            proptest::prop_assert!(t.len() <= 2);
        }
    }
}
