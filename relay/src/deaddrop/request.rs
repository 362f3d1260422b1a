//! The JSON bodies of `/deposit`, `/retrieve` and `/ack`, checked in upstream's order.
//! Sans-IO: the caller passes the body bytes, the client address and `now`.

use crate::deaddrop::limits::{RateLimiter, ReplayCache, ReplayError};
use crate::deaddrop::proof::{self, ProofError};
use crate::deaddrop::store::{Delivered, Mailbox, NewMessage};
use crate::deaddrop::{DeadDropConfig, MAX_TTL_SECS, REPLAY_CACHE_CAP};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Most deposit ids one `/ack` may name.
pub const MAX_ACK_IDS: usize = 1024;

/// HiveMessage types `HiveMessage.deserialize` accepts with an object payload
/// (hivemind_bus_client, as installed with hivemind-rendezvous 0.1.2a2; `bin` needs a
/// binary payload and fails there).
pub const HIVE_MESSAGE_TYPES: &[&str] = &[
    "shake",
    "bus",
    "shared_bus",
    "intercom",
    "broadcast",
    "propagate",
    "escalate",
    "hello",
    "query",
    "cascade",
    "ping",
    "rendezvous",
];

/// Why a request was refused: upstream's reasons, plus tryst's where upstream crashes,
/// has no limit, or lacks the feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// 400 `empty_body`: no body.
    EmptyBody,
    /// 400 `invalid_json`: not JSON (tryst: also JSON that is not an object).
    InvalidJson,
    /// 404 `not_found`.
    NotFound,
    /// 405 `method_not_allowed` (tryst; upstream answers 501 HTML).
    MethodNotAllowed,
    /// 413 `payload_too_large` (tryst; body or payload over the limit).
    PayloadTooLarge,
    /// 408 `body_timeout` (tryst).
    BodyTimeout,
    /// 400 `malformed_body` (tryst; bad chunked encoding).
    MalformedBody,
    /// 429 `rate_limit_exceeded`, with Retry-After seconds.
    RateLimited(u64),
    /// 400 `invalid_ttl` (tryst; upstream crashes on non-integers, accepts `<= 0`).
    InvalidTtl,
    /// 400 `missing_fields`.
    MissingFields,
    /// 400 `invalid_field` (tryst; a field of the wrong JSON type where upstream crashes).
    InvalidField,
    /// 400 `invalid_timestamp` (tryst; a timestamp Python's `int()` refuses).
    InvalidTimestamp,
    /// 400 `depositor_proof_required`.
    DepositorProofRequired,
    /// 401 `invalid_depositor_signature` (`replay` when a used proof came again).
    InvalidDepositorSignature {
        /// The proof was a replay.
        replay: bool,
    },
    /// 400 `invalid_payload`.
    InvalidPayload,
    /// 400 `payload_must_be_intercom`.
    PayloadMustBeIntercom,
    /// 400 `recipient_fingerprint_required`.
    RecipientFingerprintRequired,
    /// 400 `recipient_fingerprint_mismatch`.
    RecipientFingerprintMismatch,
    /// 401 `replay_detected`: stale timestamp, or (tryst) a proof used before.
    ReplayDetected {
        /// The proof was used before (not merely stale).
        replay: bool,
    },
    /// 401 `invalid_signature`.
    InvalidSignature,
    /// 503 `replay_cache_full` (tryst).
    ReplayCacheFull,
    /// 507 `mailbox_full` (tryst).
    MailboxFull,
    /// 507 `too_many_mailboxes` (tryst).
    TooManyMailboxes,
    /// 507 `store_full` (tryst).
    StoreFull,
    /// 500 `storage_error`.
    StorageError,
    /// 503 `busy` (tryst; the store's queue is full).
    Busy,
    /// 503 `store_unavailable` (tryst; the database server cannot be reached; nothing
    /// was stored or changed).
    StoreUnavailable,
}

impl Reject {
    /// Status and reason code.
    pub fn status_reason(self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Self::EmptyBody => (S::BAD_REQUEST, "empty_body"),
            Self::InvalidJson => (S::BAD_REQUEST, "invalid_json"),
            Self::NotFound => (S::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BodyTimeout => (S::REQUEST_TIMEOUT, "body_timeout"),
            Self::MalformedBody => (S::BAD_REQUEST, "malformed_body"),
            Self::RateLimited(_) => (S::TOO_MANY_REQUESTS, "rate_limit_exceeded"),
            Self::InvalidTtl => (S::BAD_REQUEST, "invalid_ttl"),
            Self::MissingFields => (S::BAD_REQUEST, "missing_fields"),
            Self::InvalidField => (S::BAD_REQUEST, "invalid_field"),
            Self::InvalidTimestamp => (S::BAD_REQUEST, "invalid_timestamp"),
            Self::DepositorProofRequired => (S::BAD_REQUEST, "depositor_proof_required"),
            Self::InvalidDepositorSignature { .. } => {
                (S::UNAUTHORIZED, "invalid_depositor_signature")
            }
            Self::InvalidPayload => (S::BAD_REQUEST, "invalid_payload"),
            Self::PayloadMustBeIntercom => (S::BAD_REQUEST, "payload_must_be_intercom"),
            Self::RecipientFingerprintRequired => {
                (S::BAD_REQUEST, "recipient_fingerprint_required")
            }
            Self::RecipientFingerprintMismatch => {
                (S::BAD_REQUEST, "recipient_fingerprint_mismatch")
            }
            Self::ReplayDetected { .. } => (S::UNAUTHORIZED, "replay_detected"),
            Self::InvalidSignature => (S::UNAUTHORIZED, "invalid_signature"),
            Self::ReplayCacheFull => (S::SERVICE_UNAVAILABLE, "replay_cache_full"),
            Self::MailboxFull => (S::INSUFFICIENT_STORAGE, "mailbox_full"),
            Self::TooManyMailboxes => (S::INSUFFICIENT_STORAGE, "too_many_mailboxes"),
            Self::StoreFull => (S::INSUFFICIENT_STORAGE, "store_full"),
            Self::StorageError => (S::INTERNAL_SERVER_ERROR, "storage_error"),
            Self::Busy => (S::SERVICE_UNAVAILABLE, "busy"),
            Self::StoreUnavailable => (S::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }

    /// A used proof came again.
    pub fn is_replay(self) -> bool {
        matches!(
            self,
            Self::ReplayDetected { replay: true }
                | Self::InvalidDepositorSignature { replay: true }
        )
    }

    /// `{"status":"error","reason":...}` with the status (and Retry-After when limited).
    pub fn response(self) -> Response<Full<Bytes>> {
        let (status, reason) = self.status_reason();
        let body = serde_json::json!({"status": "error", "reason": reason}).to_string();
        let mut resp = crate::body::json_reply(status, body);
        let h = resp.headers_mut();
        match self {
            Self::RateLimited(secs) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Self::Busy | Self::ReplayCacheFull | Self::StoreUnavailable => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // Part of the body may be unread.
            Self::PayloadTooLarge | Self::BodyTimeout | Self::MalformedBody => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

/// What a request asks of the store once every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Store this message.
    Deposit(NewMessage),
    /// Hand out a mailbox's messages; `keep` (`"ack": false`) leaves them until `/ack`.
    Retrieve {
        /// Which mailbox.
        mailbox: Mailbox,
        /// At-least-once mode.
        keep: bool,
    },
    /// Delete these messages of the mailbox.
    Ack {
        /// Which mailbox.
        mailbox: Mailbox,
        /// Deposit ids.
        ids: Vec<String>,
    },
}

/// A proof the replay cache admitted for a request: what a cluster claims on every
/// node ([`crate::cluster::replay`]) before the request is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// SHA-256 of the signature (the local cache's key).
    pub digest: [u8; 32],
    /// When its timestamp leaves the window (unix seconds).
    pub until: i64,
    /// The refusal a replay of it gets.
    pub replay: Reject,
}

/// The stateful part of checking: the rate limiter and the replay cache, each behind
/// its own short lock. Shared by every request (`&self`): RSA-PSS verification, the
/// expensive part, runs under no lock, so concurrent requests verify in parallel.
#[derive(Debug)]
pub struct Checker {
    relay_pem: String,
    max_payload: usize,
    require_depositor_proof: bool,
    require_recipient_fingerprint: bool,
    rate: Mutex<RateLimiter>,
    replay: Mutex<ReplayCache>,
}

/// A panic while holding one of the checker's locks cannot leave its table in a state
/// that matters more than refusing every request would.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Python truthiness of an optional JSON value.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

fn present(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null))
}

impl Checker {
    /// A checker for `config`, binding proofs to `relay_pem`.
    pub fn new(config: &DeadDropConfig, relay_pem: String) -> Self {
        Self {
            relay_pem,
            max_payload: config.max_payload,
            require_depositor_proof: config.require_depositor_proof,
            require_recipient_fingerprint: config.require_recipient_fingerprint,
            rate: Mutex::new(RateLimiter::new(
                config.rate_limit,
                u64::try_from(config.rate_window.as_millis()).unwrap_or(u64::MAX),
                1 << 16,
            )),
            replay: Mutex::new(ReplayCache::new(REPLAY_CACHE_CAP, proof::WINDOW_SECS)),
        }
    }

    /// The same checker in a process that started at `started` (unix seconds): proofs
    /// stamped at or before it are refused as replays (the replay cache is in memory).
    #[must_use]
    pub fn started_at(mut self, started: i64) -> Self {
        let replay = self
            .replay
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        self.replay = Mutex::new(replay.started_at(started));
        self
    }

    /// The relay PEM proofs are bound to.
    pub fn relay_pem(&self) -> &str {
        &self.relay_pem
    }

    /// Checks a POST body for `path` (`/deposit`, `/retrieve`, `/ack`).
    pub fn check(
        &self,
        path: &str,
        body: &[u8],
        peer: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<Action, Reject> {
        self.check_admitted(path, body, peer, now_ms)
            .map(|(action, _)| action)
    }

    /// [`Checker::check`], also naming the proof its replay cache admitted for the
    /// request (at most one), so a cluster can check it on every node.
    pub fn check_admitted(
        &self,
        path: &str,
        body: &[u8],
        peer: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<(Action, Option<Admitted>), Reject> {
        let value: Value = serde_json::from_slice(body).map_err(|_| Reject::InvalidJson)?;
        let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        match path {
            "/deposit" => {
                lock(&self.rate)
                    .check(peer, now_ms)
                    .map_err(Reject::RateLimited)?;
                let Value::Object(body) = value else {
                    return Err(Reject::InvalidJson);
                };
                self.deposit(&body, now, now_ms)
            }
            "/retrieve" | "/ack" => {
                let Value::Object(body) = value else {
                    return Err(Reject::InvalidJson);
                };
                let (mailbox, admitted) = self.claim(&body, now)?;
                let admitted = Some(admitted);
                if path == "/retrieve" {
                    let keep = match body.get("ack") {
                        None | Some(Value::Null) | Some(Value::Bool(true)) => false,
                        Some(Value::Bool(false)) => true,
                        Some(_) => return Err(Reject::InvalidField),
                    };
                    Ok((Action::Retrieve { mailbox, keep }, admitted))
                } else {
                    let ids = match body.get("deposit_ids") {
                        Some(Value::Array(a)) if a.len() <= MAX_ACK_IDS => a
                            .iter()
                            .map(|v| v.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                            .ok_or(Reject::InvalidField)?,
                        None | Some(Value::Null) => return Err(Reject::MissingFields),
                        Some(_) => return Err(Reject::InvalidField),
                    };
                    Ok((Action::Ack { mailbox, ids }, admitted))
                }
            }
            _ => Err(Reject::NotFound),
        }
    }

    fn admit(
        &self,
        sig: &[u8],
        ts: i64,
        now: i64,
        replay: Reject,
    ) -> Result<Admitted, ReplayError> {
        let digest = Sha256::digest(sig).into();
        lock(&self.replay).admit(digest, ts, now)?;
        Ok(Admitted {
            digest,
            until: ts.saturating_add(proof::WINDOW_SECS),
            replay,
        })
    }

    /// The retrieve/ack proof: `pubkey`, `timestamp`, `signature`. Returns the mailbox
    /// and the admitted proof.
    fn claim(&self, body: &Map<String, Value>, now: i64) -> Result<(Mailbox, Admitted), Reject> {
        let (pubkey, ts, sig) = (
            body.get("pubkey"),
            body.get("timestamp"),
            body.get("signature"),
        );
        if !truthy(pubkey) || !present(ts) || !truthy(sig) {
            return Err(Reject::MissingFields);
        }
        let ts = ts.and_then(proof::py_int).ok_or(Reject::InvalidTimestamp)?;
        if !proof::fresh(ts, now) {
            return Err(Reject::ReplayDetected { replay: false });
        }
        let (Some(Value::String(pubkey)), Some(Value::String(sig))) = (pubkey, sig) else {
            return Err(Reject::InvalidSignature);
        };
        let sig = proof::verify(pubkey, &self.relay_pem, ts, sig, now).map_err(|e| match e {
            ProofError::Stale => Reject::ReplayDetected { replay: false },
            _ => Reject::InvalidSignature,
        })?;
        let replayed = Reject::ReplayDetected { replay: true };
        let admitted = self.admit(&sig, ts, now, replayed).map_err(|e| match e {
            ReplayError::Replayed => replayed,
            ReplayError::Full => Reject::ReplayCacheFull,
        })?;
        Ok((proof::mailbox_of(pubkey), admitted))
    }

    fn deposit(
        &self,
        body: &Map<String, Value>,
        now: i64,
        now_ms: u64,
    ) -> Result<(Action, Option<Admitted>), Reject> {
        let ttl = match body.get("ttl") {
            None => MAX_TTL_SECS,
            Some(v) => proof::py_int(v).ok_or(Reject::InvalidTtl)?,
        };
        if ttl <= 0 {
            return Err(Reject::InvalidTtl);
        }
        let ttl = ttl.min(MAX_TTL_SECS);
        let (payload, target) = (body.get("payload"), body.get("target_pubkey"));
        if !truthy(payload) || !truthy(target) {
            return Err(Reject::MissingFields);
        }
        let Some(Value::String(target)) = target else {
            return Err(Reject::InvalidField);
        };
        // A payload that is not a string is not a serialised HiveMessage.
        let Some(Value::String(payload)) = payload else {
            return Err(Reject::InvalidPayload);
        };
        if payload.len() > self.max_payload {
            return Err(Reject::PayloadTooLarge);
        }

        let (dpk, dts, dsig) = (
            body.get("depositor_pubkey"),
            body.get("depositor_timestamp"),
            body.get("depositor_signature"),
        );
        let trio = truthy(dpk) && present(dts) && truthy(dsig);
        if self.require_depositor_proof && !trio {
            return Err(Reject::DepositorProofRequired);
        }
        let mut admitted = None;
        if trio {
            let ts = dts
                .and_then(proof::py_int)
                .ok_or(Reject::InvalidTimestamp)?;
            let bad = Reject::InvalidDepositorSignature { replay: false };
            let (Some(Value::String(pk)), Some(Value::String(sig))) = (dpk, dsig) else {
                return Err(bad);
            };
            let sig = proof::verify(pk, &self.relay_pem, ts, sig, now).map_err(|_| bad)?;
            let replayed = Reject::InvalidDepositorSignature { replay: true };
            admitted = Some(self.admit(&sig, ts, now, replayed).map_err(|e| match e {
                ReplayError::Replayed => replayed,
                ReplayError::Full => Reject::ReplayCacheFull,
            })?);
        }

        let envelope = hive_message_envelope(payload)?;
        let fp = envelope.get("recipient_fingerprint");
        if self.require_recipient_fingerprint && fp.is_none() {
            return Err(Reject::RecipientFingerprintRequired);
        }
        if let Some(fp) = fp
            && fp.as_str() != Some(proof::recipient_fingerprint(target).as_str())
        {
            return Err(Reject::RecipientFingerprintMismatch);
        }
        let now = u64::try_from(now).unwrap_or(0);
        Ok((
            Action::Deposit(NewMessage {
                mailbox: proof::mailbox_of(target),
                deposit_id: deposit_id(now_ms, rand::random()),
                payload: payload.clone(),
                expires_at: now.saturating_add(ttl.unsigned_abs()),
            }),
            admitted,
        ))
    }
}

/// The body of a successful retrieve: `{"messages":[...],"status":"ok"}` (the key
/// order `json!` gave it), each message its payload string or, in `/ack` mode,
/// `{"deposit_id":...,"payload":...}`. Serialized from the messages in place, without
/// first building a JSON tree of a mailbox that may hold thousands.
pub fn retrieved_body(msgs: &[Delivered], keep: bool) -> serde_json::Result<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct Kept<'a> {
        deposit_id: &'a str,
        payload: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Body<T> {
        messages: T,
        status: &'static str,
    }
    fn write<T: serde::Serialize>(out: &mut Vec<u8>, messages: T) -> serde_json::Result<()> {
        serde_json::to_writer(
            out,
            &Body {
                messages,
                status: "ok",
            },
        )
    }
    // The strings, their quotes and commas, and a sixteenth for escapes (payloads are
    // often JSON themselves), so a large mailbox's body is not copied as it grows.
    let size: usize = msgs
        .iter()
        .map(|m| {
            let payload = m.payload.len() + m.payload.len() / 16 + 3;
            if keep {
                payload + m.deposit_id.len() + 32
            } else {
                payload
            }
        })
        .sum();
    let mut out = Vec::with_capacity(size + 32);
    if keep {
        let messages: Vec<Kept<'_>> = msgs
            .iter()
            .map(|m| Kept {
                deposit_id: &m.deposit_id,
                payload: &m.payload,
            })
            .collect();
        write(&mut out, messages)?;
    } else {
        let messages: Vec<&str> = msgs.iter().map(|m| m.payload.as_str()).collect();
        write(&mut out, messages)?;
    }
    Ok(out)
}

/// A new deposit id: a UUID version 7 (RFC 9562) from the deposit's Unix time in
/// milliseconds and 74 random bits (no counter, so an id says nothing about other
/// deposits). Upstream hands out random version 4 UUIDs; clients treat the id as an
/// opaque string. The id tells whoever holds it when the deposit was made: the
/// depositor, who knows, and a recipient that retrieves with `"ack": false`; the store
/// keeps it as long as the message. Time-ordered ids land at the right edge of the
/// store's id index (redb's `ids` table, PostgreSQL's unique index on `deposit_id`)
/// instead of at a random leaf, which makes a group commit write several pages fewer
/// (docs/performance.md).
fn deposit_id(now_ms: u64, random: [u8; 10]) -> String {
    uuid::Builder::from_unix_timestamp_millis(now_ms, &random)
        .into_uuid()
        .to_string()
}

/// Parses `payload` as upstream's `HiveMessage.deserialize` does and requires INTERCOM;
/// returns the message's payload object (the envelope).
pub fn hive_message_envelope(payload: &str) -> Result<Map<String, Value>, Reject> {
    let v: Value = serde_json::from_str(payload).map_err(|_| Reject::InvalidPayload)?;
    let Value::Object(mut m) = v else {
        return Err(Reject::InvalidPayload);
    };
    let Some(Value::Object(envelope)) = m.remove("payload") else {
        return Err(Reject::InvalidPayload);
    };
    let Some(Value::String(t)) = m.get("msg_type") else {
        return Err(Reject::InvalidPayload);
    };
    if !HIVE_MESSAGE_TYPES.contains(&t.as_str()) {
        return Err(Reject::InvalidPayload);
    }
    if t != "intercom" {
        return Err(Reject::PayloadMustBeIntercom);
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
    use serde_json::json;

    /// The retrieve body is byte for byte what building it with `json!` gave, quotes,
    /// backslashes and non-ASCII included, in both modes and for an empty mailbox.
    #[test]
    fn retrieved_body_matches_the_json_tree_it_replaces() {
        let msgs = vec![
            Delivered {
                deposit_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
                payload: "plain".into(),
            },
            Delivered {
                deposit_id: "id \"quoted\"".into(),
                payload: "a\\b \"c\" \u{1} é \n".into(),
            },
        ];
        let payloads: Vec<Value> = msgs.iter().map(|m| m.payload.clone().into()).collect();
        let kept: Vec<Value> = msgs
            .iter()
            .map(|m| serde_json::json!({"deposit_id": m.deposit_id, "payload": m.payload}))
            .collect();
        let tree = |messages: Vec<Value>| {
            serde_json::json!({"status": "ok", "messages": messages}).to_string()
        };
        assert_eq!(
            String::from_utf8(retrieved_body(&msgs, false).unwrap()).unwrap(),
            tree(payloads)
        );
        assert_eq!(
            String::from_utf8(retrieved_body(&msgs, true).unwrap()).unwrap(),
            tree(kept)
        );
        for keep in [false, true] {
            assert_eq!(
                retrieved_body(&[], keep).unwrap(),
                br#"{"messages":[],"status":"ok"}"#
            );
        }
    }

    const PEM: &str = include_str!("../../tests/fixtures/deaddrop/client-pub.pem");
    const KEY: &str = include_str!("../../tests/fixtures/deaddrop/client-key.pem");
    const NOW: i64 = 1_700_000_000;
    const NOW_MS: u64 = 1_700_000_000_000;

    fn sign(ts: i64) -> String {
        let key = rsa::pss::BlindedSigningKey::<Sha256>::new(
            rsa::RsaPrivateKey::from_pkcs8_pem(KEY).unwrap(),
        );
        let sig = key.sign_with_rng(
            &mut rand::thread_rng(),
            &proof::ownership_message(PEM, "relay", ts),
        );
        base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
    }

    fn checker(f: impl FnOnce(&mut DeadDropConfig)) -> Checker {
        let mut c = DeadDropConfig::in_dir(std::path::Path::new("/x"));
        c.rate_limit = 1000;
        f(&mut c);
        Checker::new(&c, "relay".into())
    }

    fn check(c: &mut Checker, path: &str, v: &Value) -> Result<Action, Reject> {
        c.check(path, v.to_string().as_bytes(), None, NOW_MS)
    }

    #[test]
    fn deposit_ids_are_uuid_v7_in_time_order() {
        let first = deposit_id(NOW_MS, [0xff; 10]);
        let later = deposit_id(NOW_MS + 1, [0; 10]);
        assert!(first < later, "{first} sorts after {later}");
        let parsed = uuid::Uuid::parse_str(&first).unwrap();
        assert_eq!(parsed.get_version(), Some(uuid::Version::SortRand));
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(
            parsed.get_timestamp().map(|t| t.to_unix()),
            Some((1_700_000_000, 0))
        );
        assert_ne!(
            deposit_id(NOW_MS, rand::random()),
            deposit_id(NOW_MS, rand::random())
        );
    }

    fn intercom(env: Value) -> String {
        json!({"msg_type": "intercom", "payload": env}).to_string()
    }

    #[test]
    fn required_depositor_proof_and_fingerprint() {
        let mut c = checker(|c| {
            c.require_depositor_proof = true;
            c.require_recipient_fingerprint = true;
        });
        let base = json!({"payload": intercom(json!({})), "target_pubkey": "T"});
        assert_eq!(
            check(&mut c, "/deposit", &base),
            Err(Reject::DepositorProofRequired)
        );
        // An incomplete trio counts as absent.
        let mut partial = base.clone();
        partial["depositor_pubkey"] = json!(PEM);
        partial["depositor_timestamp"] = json!(NOW);
        assert_eq!(
            check(&mut c, "/deposit", &partial),
            Err(Reject::DepositorProofRequired)
        );
        let mut full = partial.clone();
        full["depositor_signature"] = json!(sign(NOW));
        assert_eq!(
            check(&mut c, "/deposit", &full),
            Err(Reject::RecipientFingerprintRequired)
        );
        let mut with_fp = partial.clone();
        with_fp["depositor_signature"] = json!(sign(NOW));
        with_fp["payload"] = json!(intercom(
            json!({"recipient_fingerprint": proof::recipient_fingerprint("T")})
        ));
        let Ok(Action::Deposit(m)) = check(&mut c, "/deposit", &with_fp) else {
            panic!()
        };
        assert_eq!(m.mailbox, proof::mailbox_of("T"));
        assert_eq!(m.expires_at, NOW as u64 + 604_800);
        // The same depositor proof again.
        assert_eq!(
            check(&mut c, "/deposit", &with_fp),
            Err(Reject::InvalidDepositorSignature { replay: true })
        );
    }

    #[test]
    fn field_types_and_ttl_edges() {
        let mut c = checker(|_| {});
        let ok = intercom(json!({}));
        for (body, want) in [
            (
                json!({"payload": {"msg_type": "intercom"}, "target_pubkey": "T"}),
                Reject::InvalidPayload,
            ),
            (
                json!({"payload": ok, "target_pubkey": ["T"]}),
                Reject::InvalidField,
            ),
            (
                json!({"payload": ok, "target_pubkey": "T", "ttl": [1]}),
                Reject::InvalidTtl,
            ),
            (
                json!({"payload": ok, "target_pubkey": "T", "ttl": false}),
                Reject::InvalidTtl,
            ),
            (
                json!({"payload": 0, "target_pubkey": "T"}),
                Reject::MissingFields,
            ),
            (
                json!({"payload": ok, "target_pubkey": "T", "depositor_pubkey": 5, "depositor_timestamp": NOW, "depositor_signature": "AA=="}),
                Reject::InvalidDepositorSignature { replay: false },
            ),
        ] {
            assert_eq!(check(&mut c, "/deposit", &body), Err(want), "{body}");
        }
        // ttl: capped, truncating floats, strings.
        for (ttl, want) in [
            (json!(10_000_000), 604_800),
            (json!(1.9), 1),
            (json!(" 60 "), 60),
            (json!(true), 1),
        ] {
            let body = json!({"payload": ok, "target_pubkey": "T", "ttl": ttl});
            let Ok(Action::Deposit(m)) = check(&mut c, "/deposit", &body) else {
                panic!("{body}")
            };
            assert_eq!(m.expires_at, NOW as u64 + want, "{body}");
        }
    }

    #[test]
    fn retrieve_and_ack_edges() {
        let mut c = checker(|_| {});
        let proof = |ts: i64| json!({"pubkey": PEM, "timestamp": ts, "signature": sign(ts)});
        let mut p = proof(NOW);
        p["pubkey"] = json!(5);
        assert_eq!(
            check(&mut c, "/retrieve", &p),
            Err(Reject::InvalidSignature)
        );
        let mut p = proof(NOW);
        p["timestamp"] = json!("soon");
        assert_eq!(
            check(&mut c, "/retrieve", &p),
            Err(Reject::InvalidTimestamp)
        );
        let mut p = proof(NOW);
        p["ack"] = json!("no");
        assert_eq!(check(&mut c, "/retrieve", &p), Err(Reject::InvalidField));
        let mut p = proof(NOW - 60);
        p["ack"] = json!(false);
        assert_eq!(
            check(&mut c, "/retrieve", &p),
            Ok(Action::Retrieve {
                mailbox: proof::mailbox_of(PEM),
                keep: true
            })
        );
        let mut a = proof(NOW + 60);
        a["deposit_ids"] = json!(vec!["x"; MAX_ACK_IDS + 1]);
        assert_eq!(check(&mut c, "/ack", &a), Err(Reject::InvalidField));
        let mut a = proof(NOW);
        assert_eq!(check(&mut c, "/ack", &a), Err(Reject::MissingFields));
        a["signature"] = json!(sign(NOW));
        a["deposit_ids"] = json!(["a", "b"]);
        assert_eq!(
            check(&mut c, "/ack", &a),
            Ok(Action::Ack {
                mailbox: proof::mailbox_of(PEM),
                ids: vec!["a".into(), "b".into()]
            })
        );
        assert_eq!(check(&mut c, "/nope", &json!({})), Err(Reject::NotFound));
    }

    #[test]
    fn rate_limit_comes_first_and_counts_non_objects() {
        let mut c = checker(|c| c.rate_limit = 2);
        assert_eq!(
            check(&mut c, "/deposit", &json!([1])),
            Err(Reject::InvalidJson)
        );
        assert_eq!(
            check(&mut c, "/deposit", &json!({})),
            Err(Reject::MissingFields)
        );
        assert_eq!(
            check(&mut c, "/deposit", &json!({})),
            Err(Reject::RateLimited(60))
        );
        // Unparseable JSON is refused before the limiter and not counted.
        assert_eq!(
            c.check("/deposit", b"{", None, NOW_MS),
            Err(Reject::InvalidJson)
        );
        // Another address has its own window.
        let other = Some("192.0.2.1".parse().unwrap());
        assert_eq!(
            c.check("/deposit", b"{}", other, NOW_MS),
            Err(Reject::MissingFields)
        );
    }

    #[test]
    fn every_reject_has_a_stable_status_and_json_body() {
        let r = Reject::RateLimited(7).response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        assert_eq!(
            Reject::StoreFull.status_reason(),
            (StatusCode::INSUFFICIENT_STORAGE, "store_full")
        );
        assert_eq!(
            Reject::PayloadTooLarge.status_reason().0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
