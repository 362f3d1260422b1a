//! The routing contract between the engine and the relay, and the native router.
//!
//! Routing happens twice per connection, both pure:
//! 1. [`Router::classify`] on the worker that accepted the connection: which rendezvous
//!    key (hence which owner worker), or the HTTP service. Cheap; no proof is checked.
//! 2. [`Router::route`] on the owner worker: the full decision, proofs and replay cache
//!    included. Because every connection for a key lands on the same owner, that owner's
//!    replay cache sees every nonce for the key.

use crate::auth::{self, MacKey, Operation, ProofError, ReplayCache};
use crate::head::{Method, RequestHead};
use crate::reject::Rejection;
use crate::target::{
    ConnectTarget, RendezvousId, RendezvousKey, TargetError, parse_connect_target,
};
use crate::totp::TotpRecord;

/// How the connection reached the relay; compatibility families answer differently on
/// their own transport (node-rendezvous lives on TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Plain TCP.
    #[default]
    Plain,
    /// TLS terminated by the relay.
    Tls,
}

/// Where a head goes after classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// A rendezvous request: handled by the worker owning this key.
    Rendezvous(RendezvousKey),
    /// Anything else: handed, with the bytes already read, to the relay's HTTP service.
    Http,
}

/// How a park treats connections already parked under the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParkMode {
    /// Join the key's FIFO (tryst's default; the per-key cap evicts the oldest).
    #[default]
    Queue,
    /// Close every connection already parked under the key first (node-rendezvous keeps
    /// one parked socket per id and a new one replaces the old).
    Replace,
}

/// How a tunnel ends when one side finishes sending (FIN, or TLS close_notify + FIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HalfClose {
    /// Per direction, as TCP does: the FIN is forwarded with `shutdown(SHUT_WR)` and
    /// the other direction keeps flowing until it ends too (the native protocol).
    #[default]
    PerDirection,
    /// Both connections are closed as soon as either side has finished sending and its
    /// bytes are delivered: node-rendezvous upstream ends both sockets at once.
    CloseBoth,
}

/// What a client is told and what its hidden server receives when they pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachPlan {
    /// The key to reach.
    pub key: RendezvousKey,
    /// Bytes written to the client at pairing, before any byte from the server
    /// (the native `HTTP/1.1 200`; empty for a mobile client whose request is forwarded).
    pub greeting: Vec<u8>,
    /// Bytes written to the server at pairing, before the client's early bytes (empty
    /// natively; node-rendezvous mobile requests forward their rebuilt head here).
    pub forward: Vec<u8>,
    /// The exact response when no server parks within the client wait (`None`: the
    /// engine's [`Rejection::NotParked`] response). Counted as `NotParked` either way.
    pub not_parked: Option<Vec<u8>>,
    /// How the tunnel ends when one side finishes (decided by the client's protocol).
    pub half_close: HalfClose,
}

impl ReachPlan {
    /// The native plan: greet with `HTTP/1.1 200`, forward nothing extra.
    pub fn native(key: RendezvousKey) -> Self {
        Self {
            key,
            greeting: crate::reject::OK_RESPONSE.to_vec(),
            forward: Vec::new(),
            not_parked: None,
            half_close: HalfClose::PerDirection,
        }
    }
}

/// The owner's decision for a rendezvous request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A hidden server parks under `key`; it is answered `200` at once.
    Park {
        /// The key to park under.
        key: RendezvousKey,
        /// Queue behind, or replace, connections already parked under the key.
        mode: ParkMode,
        /// Answer with [`crate::reject::OK_RESPONSE_WITH_NOTICE`] and send
        /// [`crate::reject::PAIRING_NOTICE`] first when paired (a native park's
        /// `Tryst-Pairing-Notice: 1`).
        notice: bool,
    },
    /// A client wants the server parked under the plan's key.
    Reach(ReachPlan),
    /// Hand to the HTTP service after all.
    Http,
    /// Refuse with the engine's response for this rejection, then close.
    Reject(Rejection),
    /// Refuse with these exact bytes (a compatibility family's own error frame), counted
    /// under the rejection, then close.
    RejectWith(Rejection, Vec<u8>),
}

impl Route {
    /// A native park (FIFO).
    pub fn park(key: RendezvousKey) -> Self {
        Self::Park {
            key,
            mode: ParkMode::Queue,
            notice: false,
        }
    }

    /// A native park (FIFO) that is told of its pairing.
    pub fn park_with_notice(key: RendezvousKey) -> Self {
        Self::Park {
            key,
            mode: ParkMode::Queue,
            notice: true,
        }
    }

    /// A native reach.
    pub fn reach(key: RendezvousKey) -> Self {
        Self::Reach(ReachPlan::native(key))
    }
}

/// Routing policy supplied by the relay. Implementations must be pure apart from their
/// own bounded state (replay caches): no I/O, no clock reads (time is passed in).
pub trait Router {
    /// Cheap classification on the accepting worker.
    fn classify(&self, head: &RequestHead, transport: Transport) -> Result<Classified, Rejection>;
    /// The full decision on the owner worker. `early` are the bytes that followed the
    /// head; `now_unix` is wall-clock seconds.
    fn route(
        &mut self,
        head: &RequestHead,
        early: &[u8],
        now_unix: u64,
        transport: Transport,
    ) -> Route;
    /// Re-reads whatever the router loads (secrets). Called on SIGHUP; on error the old
    /// state stays and the error is returned for logging.
    fn reload(&mut self) -> Result<(), ReloadError>;
    /// Keys whose parked connections the owner worker must close now (e.g. a tag that
    /// expired or was consumed), appended to `out`. The worker polls this every 250 ms
    /// (`EVICTION_POLL` in the driver) with wall-clock seconds; keys this worker does not
    /// own are harmless (it has nothing parked under them). The default has none.
    fn evictions(&mut self, now_unix: u64, out: &mut Vec<RendezvousKey>) {
        let _ = (now_unix, out);
    }
    /// The cluster-wide claim of the decision the last [`Router::route`] returned, if
    /// any (see [`crate::claim`]): taken once. A clustered worker calls this after
    /// every `route`, so a claim never outlives its decision; a single node never calls
    /// it (implementations keep at most the last decision's claim, overwritten by the
    /// next). `now_unix` as given to `route`. The default has none.
    fn claim(&mut self, now_unix: u64) -> Option<crate::claim::Claim> {
        let _ = now_unix;
        None
    }
    /// A claim with [`crate::claim::OnUnavailable::Refuse`] could not be decided and
    /// its connection was refused: undo what the decision changed locally (e.g. put a
    /// consumed single-shot tag back), so that the refusal leaves no trace. `key` is the
    /// claim's key. The default does nothing.
    fn claim_refused(&mut self, key: &str, now_unix: u64) {
        let _ = (key, now_unix);
    }
    /// Another node's newer replace park for `key` (a cluster's replace announcement):
    /// the worker has closed what it parked under the key; forget what makes this node
    /// look like the key's holder (e.g. a single-shot tag's entry, so that a responder
    /// here is carried to the node that holds it now). The default does nothing.
    fn replaced_elsewhere(&mut self, key: &RendezvousKey, now_unix: u64) {
        let _ = (key, now_unix);
    }
    /// A family control message from the supervisor (`Engine::send_family`), delivered
    /// to the worker owning the key it was sent for. The engine does not read it; keys
    /// whose parked connections must be closed now are appended to `evict`. The default
    /// ignores it.
    fn control(&mut self, message: &[u8], now_unix: u64, evict: &mut Vec<RendezvousKey>) {
        let _ = (message, now_unix, evict);
    }
    /// Messages for the supervisor (family reports, e.g. a tag consumed by a tunnel, or
    /// the answer to a control message), appended to `out`. The worker asks once per
    /// loop turn and sends each to the supervisor, which reads them with
    /// `HttpInbox::take_family_reports`. The default has none.
    fn reports(&mut self, out: &mut Vec<Vec<u8>>) {
        let _ = out;
    }
}

/// Looks up per-id secrets for the native proof.
pub trait SecretSource {
    /// The keyed HMAC state of `id`'s secret ([`MacKey::new`], made once per id when the
    /// source loads), if provisioned.
    fn mac_key(&self, id: &RendezvousId) -> Option<&MacKey>;
    /// The node-rendezvous TOTP record for `id`, if provisioned (none by default).
    fn totp(&self, id: &RendezvousId) -> Option<&TotpRecord> {
        let _ = id;
        None
    }
    /// Re-reads the source; on error the old secrets stay.
    fn reload(&mut self) -> Result<(), ReloadError>;
}

/// Why a [`Router::reload`] or [`SecretSource::reload`] failed. In every case the part
/// that failed keeps its previous state; the error is only logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The source could not be read or parsed (the loader's own error, kept as the source).
    #[error(transparent)]
    Load(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// One scheme family's reload failed.
    #[error("{scheme}: {source}")]
    Family {
        /// The family's scheme (`tag`, `hive`, ...).
        scheme: &'static str,
        /// What went wrong in that family.
        #[source]
        source: Box<Self>,
    },
    /// Several parts failed, each with its own error (joined with `; ` when displayed).
    #[error("{}", join_errors(.0))]
    Several(Vec<Self>),
}

impl ReloadError {
    /// Wraps a loader's error.
    pub fn load(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Load(Box::new(error))
    }

    /// Tags `self` with the scheme of the family it came from.
    pub fn in_family(self, scheme: &'static str) -> Self {
        Self::Family {
            scheme,
            source: Box::new(self),
        }
    }

    /// `Ok` when `errors` is empty, the single error when there is one, else
    /// [`ReloadError::Several`].
    pub fn collect(mut errors: Vec<Self>) -> Result<(), Self> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Self::Several(errors)),
        }
    }
}

fn join_errors(errors: &[ReloadError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Settings of the native router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeRouterConfig {
    /// Accepted `|now - ts|`, seconds.
    pub proof_window_secs: u64,
    /// Replay cache capacity (entries).
    pub replay_capacity: usize,
    /// Unix second this router's process started: proofs stamped at or before it are
    /// refused as replays (see [`ReplayCache::started_at`]). 0 by default (no effect).
    pub started_unix: u64,
}

impl Default for NativeRouterConfig {
    fn default() -> Self {
        Self {
            proof_window_secs: 60,
            replay_capacity: 1 << 20,
            started_unix: 0,
        }
    }
}

/// The native protocol: `CONNECT uuid:<UUID>` with a `Tryst` proof parks, without one
/// reaches; every other method goes to the HTTP service.
#[derive(Debug)]
pub struct NativeRouter<S> {
    secrets: S,
    replay: ReplayCache,
    window_secs: u64,
}

impl<S: SecretSource> NativeRouter<S> {
    /// A router over `secrets`.
    pub fn new(secrets: S, config: NativeRouterConfig) -> Self {
        auth::prepare();
        Self {
            secrets,
            replay: ReplayCache::new(config.replay_capacity, config.proof_window_secs)
                .started_at(config.started_unix),
            window_secs: config.proof_window_secs,
        }
    }

    /// The secret source.
    pub fn secrets(&self) -> &S {
        &self.secrets
    }

    fn check_park(
        &mut self,
        id: &RendezvousId,
        value: &[u8],
        now_unix: u64,
    ) -> Result<(), ProofError> {
        let proof = auth::parse_proof(value)?;
        auth::verify_keyed(
            self.secrets.mac_key(id),
            Operation::Park,
            id,
            &proof,
            now_unix,
            self.window_secs,
        )?;
        self.replay.check_and_insert(id, &proof, now_unix)
    }
}

/// The id a native `CONNECT` target names. Parsed once per router call: a router in
/// front ([`crate::node::CompatRouter`]) that parsed it hands the result to
/// [`NativeRouter::classify_connect`] and [`NativeRouter::route_connect`].
pub(crate) fn connect_id(target: &str) -> Result<RendezvousId, TargetError> {
    match parse_connect_target(target)? {
        ConnectTarget::Uuid(id) => Ok(id),
    }
}

/// Whether a park asked to be told of its pairing: no `Tryst-Pairing-Notice` header, or
/// exactly one whose value is `1`; anything else is refused.
pub fn pairing_notice(head: &RequestHead) -> Result<bool, Rejection> {
    let name = crate::reject::PAIRING_NOTICE_HEADER;
    match head.header_count(name) {
        0 => Ok(false),
        1 if head.header(name) == Some(b"1".as_slice()) => Ok(true),
        _ => Err(Rejection::MalformedParkOption),
    }
}

impl<S: SecretSource> NativeRouter<S> {
    /// [`Router::classify`] of a `CONNECT` whose target's id is `id` ([`connect_id`]).
    pub(crate) fn classify_connect(
        id: Result<RendezvousId, TargetError>,
    ) -> Result<Classified, Rejection> {
        Ok(Classified::Rendezvous(id?.into()))
    }

    /// [`Router::route`] of a `CONNECT` whose target's id is `id` ([`connect_id`]).
    pub(crate) fn route_connect(
        &mut self,
        id: Result<RendezvousId, TargetError>,
        head: &RequestHead,
        early: &[u8],
        now_unix: u64,
    ) -> Route {
        let id = match id {
            Ok(id) => id,
            Err(e) => return Route::Reject(e.into()),
        };
        if head.header_count("proxy-authorization") > 1 {
            return Route::Reject(Rejection::MalformedProof);
        }
        match head.header("proxy-authorization") {
            None => Route::reach(id.into()),
            Some(value) => {
                if let Err(e) = self.check_park(&id, value, now_unix) {
                    return Route::Reject(e.into());
                }
                if !early.is_empty() {
                    return Route::Reject(Rejection::EarlyData);
                }
                match pairing_notice(head) {
                    Ok(false) => Route::park(id.into()),
                    Ok(true) => Route::park_with_notice(id.into()),
                    Err(r) => Route::Reject(r),
                }
            }
        }
    }
}

impl<S: SecretSource> Router for NativeRouter<S> {
    fn classify(&self, head: &RequestHead, _transport: Transport) -> Result<Classified, Rejection> {
        match head.method {
            Method::Connect => Self::classify_connect(connect_id(&head.target)),
            Method::Other(_) => Err(Rejection::MethodNotAllowed),
            _ => Ok(Classified::Http),
        }
    }

    fn route(
        &mut self,
        head: &RequestHead,
        early: &[u8],
        now_unix: u64,
        transport: Transport,
    ) -> Route {
        if head.method != Method::Connect {
            return match self.classify(head, transport) {
                Ok(_) => Route::Http,
                Err(r) => Route::Reject(r),
            };
        }
        self.route_connect(connect_id(&head.target), head, early, now_unix)
    }

    fn claim(&mut self, now_unix: u64) -> Option<crate::claim::Claim> {
        self.replay.take_claim(now_unix)
    }

    fn reload(&mut self) -> Result<(), ReloadError> {
        self.secrets.reload()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;
    use crate::head::{HeadLimits, HeadStatus, parse_head};

    const ID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    const NOW: u64 = 1_700_000_000;

    /// One provisioned id with a fixed secret.
    #[derive(Debug)]
    struct OneSecret {
        id: RendezvousId,
        key: MacKey,
        reloads: usize,
    }

    impl SecretSource for OneSecret {
        fn mac_key(&self, id: &RendezvousId) -> Option<&MacKey> {
            (*id == self.id).then_some(&self.key)
        }
        fn reload(&mut self) -> Result<(), ReloadError> {
            self.reloads += 1;
            Ok(())
        }
    }

    fn id() -> RendezvousId {
        RendezvousId::parse(ID).unwrap()
    }

    fn router() -> NativeRouter<OneSecret> {
        let secrets = OneSecret {
            id: id(),
            key: MacKey::new(&Secret::new(b"route test".to_vec())),
            reloads: 0,
        };
        NativeRouter::new(secrets, NativeRouterConfig::default())
    }

    fn head(text: &str) -> RequestHead {
        match parse_head(text.as_bytes(), &HeadLimits::default()) {
            Ok(HeadStatus::Complete(h)) => h,
            other => panic!("test head did not parse: {other:?}"),
        }
    }

    fn proof(secret: &[u8], ts: u64, nonce: &[u8]) -> String {
        auth::proof_header(
            &Secret::new(secret.to_vec()),
            Operation::Park,
            &id(),
            ts,
            nonce,
        )
    }

    fn park_head(auth_value: &str) -> RequestHead {
        head(&format!(
            "CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: {auth_value}\r\n\r\n"
        ))
    }

    fn key() -> RendezvousKey {
        id().into()
    }

    #[test]
    fn park_with_a_good_proof() {
        let mut r = router();
        let h = park_head(&proof(b"route test", NOW, &[1; 16]));
        assert_eq!(
            r.classify(&h, Transport::Plain),
            Ok(Classified::Rendezvous(key()))
        );
        assert_eq!(r.route(&h, b"", NOW, Transport::Plain), Route::park(key()));
    }

    #[test]
    fn a_park_asks_for_a_pairing_notice_with_one_header_valued_1() {
        let park = |extra: &str, nonce: u8| {
            head(&format!(
                "CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: {}\r\n{extra}\r\n",
                proof(b"route test", NOW, &[nonce; 16])
            ))
        };
        let mut r = router();
        for (n, extra) in ["Tryst-Pairing-Notice: 1\r\n", "tryst-pairing-notice:1\r\n"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                r.route(&park(extra, 10 + n as u8), b"", NOW, Transport::Plain),
                Route::park_with_notice(key()),
                "{extra:?}"
            );
        }
        for (n, extra) in [
            "Tryst-Pairing-Notice: 0\r\n",
            "Tryst-Pairing-Notice: yes\r\n",
            "Tryst-Pairing-Notice: \r\n",
            "Tryst-Pairing-Notice: 1\r\nTryst-Pairing-Notice: 1\r\n",
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(
                r.route(&park(extra, 20 + n as u8), b"", NOW, Transport::Plain),
                Route::Reject(Rejection::MalformedParkOption),
                "{extra:?}"
            );
        }
        // A client's reach carrying it is a plain reach: the notice is the server's.
        let reach = head(&format!(
            "CONNECT uuid:{ID} HTTP/1.1\r\nTryst-Pairing-Notice: 1\r\n\r\n"
        ));
        assert_eq!(
            r.route(&reach, b"", NOW, Transport::Plain),
            Route::reach(key())
        );
    }

    #[test]
    fn upper_case_target_parks_under_the_same_key() {
        let mut r = router();
        let text = format!(
            "CONNECT uuid:{} HTTP/1.1\r\nproxy-authorization: {}\r\n\r\n",
            ID.to_uppercase(),
            proof(b"route test", NOW, &[1; 16])
        );
        assert_eq!(
            r.route(&head(&text), b"", NOW, Transport::Plain),
            Route::park(key())
        );
    }

    #[test]
    fn reach_without_a_proof() {
        let mut r = router();
        let h = head(&format!(
            "CONNECT uuid:{ID} HTTP/1.1\r\nHost: relay\r\n\r\n"
        ));
        assert_eq!(
            r.classify(&h, Transport::Plain),
            Ok(Classified::Rendezvous(key()))
        );
        // Early bytes from a client are its payload, not an error.
        assert_eq!(
            r.route(&h, b"hello", NOW, Transport::Plain),
            Route::reach(key())
        );
        // Reaching an id nobody provisioned is also just a reach.
        let other = head("CONNECT uuid:00000000-0000-0000-0000-000000000000 HTTP/1.1\r\n\r\n");
        assert_eq!(
            r.route(&other, b"", NOW, Transport::Plain),
            Route::reach(RendezvousKey::uuid([0; 16]))
        );
    }

    #[test]
    fn bad_mac_and_unknown_id_are_bad_proof() {
        let mut r = router();
        let h = park_head(&proof(b"wrong secret", NOW, &[1; 16]));
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Plain),
            Route::Reject(Rejection::BadProof)
        );
        let zero = RendezvousId([0; 16]);
        let value = auth::proof_header(
            &Secret::new(b"route test".to_vec()),
            Operation::Park,
            &zero,
            NOW,
            &[1; 16],
        );
        let h = head(&format!(
            "CONNECT uuid:{zero} HTTP/1.1\r\nProxy-Authorization: {value}\r\n\r\n"
        ));
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Plain),
            Route::Reject(Rejection::BadProof)
        );
    }

    #[test]
    fn stale_timestamp() {
        let mut r = router();
        let h = park_head(&proof(b"route test", NOW - 61, &[1; 16]));
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Plain),
            Route::Reject(Rejection::StaleTimestamp)
        );
        let h = park_head(&proof(b"route test", NOW + 61, &[2; 16]));
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Plain),
            Route::Reject(Rejection::StaleTimestamp)
        );
    }

    #[test]
    fn replayed_nonce() {
        let mut r = router();
        let h = park_head(&proof(b"route test", NOW, &[1; 16]));
        assert_eq!(r.route(&h, b"", NOW, Transport::Plain), Route::park(key()));
        assert_eq!(
            r.route(&h, b"", NOW + 1, Transport::Plain),
            Route::Reject(Rejection::ReplayedNonce)
        );
    }

    #[test]
    fn full_replay_cache_is_a_relay_refusal() {
        let secrets = OneSecret {
            id: id(),
            key: MacKey::new(&Secret::new(b"route test".to_vec())),
            reloads: 0,
        };
        let config = NativeRouterConfig {
            proof_window_secs: 60,
            replay_capacity: 1,
            started_unix: 0,
        };
        let mut r = NativeRouter::new(secrets, config);
        let first = park_head(&proof(b"route test", NOW, &[1; 16]));
        assert_eq!(
            r.route(&first, b"", NOW, Transport::Plain),
            Route::park(key())
        );
        let second = park_head(&proof(b"route test", NOW, &[2; 16]));
        assert_eq!(
            r.route(&second, b"", NOW, Transport::Plain),
            Route::Reject(Rejection::ReplayCacheFull)
        );
    }

    #[test]
    fn malformed_and_duplicate_proofs() {
        let mut r = router();
        let good = proof(b"route test", NOW, &[1; 16]);
        let h = head(&format!(
            "CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: {good}\r\nPROXY-AUTHORIZATION: {good}\r\n\r\n"
        ));
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Plain),
            Route::Reject(Rejection::MalformedProof)
        );
        let h = park_head("Basic dXNlcjpwYXNz");
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Plain),
            Route::Reject(Rejection::MalformedProof)
        );
        // The refused duplicate did not consume the nonce.
        assert_eq!(
            r.route(&park_head(&good), b"", NOW, Transport::Plain),
            Route::park(key())
        );
    }

    #[test]
    fn early_data_on_park() {
        let mut r = router();
        let h = park_head(&proof(b"route test", NOW, &[1; 16]));
        assert_eq!(
            r.route(&h, b"x", NOW, Transport::Plain),
            Route::Reject(Rejection::EarlyData)
        );
    }

    #[test]
    fn bad_targets() {
        let mut r = router();
        let h = head("CONNECT example.com:443 HTTP/1.1\r\n\r\n");
        assert_eq!(
            r.classify(&h, Transport::Plain),
            Err(Rejection::UnknownTarget)
        );
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Plain),
            Route::Reject(Rejection::UnknownTarget)
        );
        let h = head("CONNECT uuid:{6ba7b810-9dad-11d1-80b4-00c04fd430c8} HTTP/1.1\r\n\r\n");
        assert_eq!(
            r.classify(&h, Transport::Plain),
            Err(Rejection::MalformedUuid)
        );
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Plain),
            Route::Reject(Rejection::MalformedUuid)
        );
    }

    #[test]
    fn other_methods_go_to_http_and_unknown_ones_are_refused() {
        let mut r = router();
        for text in [
            "GET /healthz HTTP/1.1\r\n\r\n",
            "POST /v1/deposit HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
        ] {
            let h = head(text);
            assert_eq!(r.classify(&h, Transport::Plain), Ok(Classified::Http));
            assert_eq!(r.route(&h, b"{}", NOW, Transport::Plain), Route::Http);
        }
        let h = head(&format!("BREW uuid:{ID} HTTP/1.1\r\n\r\n"));
        assert_eq!(
            r.classify(&h, Transport::Plain),
            Err(Rejection::MethodNotAllowed)
        );
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Plain),
            Route::Reject(Rejection::MethodNotAllowed)
        );
    }

    #[test]
    fn reload_errors_name_their_family_and_join() {
        assert!(ReloadError::collect(Vec::new()).is_ok());
        let io = || ReloadError::load(std::io::Error::other("secrets.toml: bad"));
        let one = ReloadError::collect(vec![io()]).unwrap_err();
        assert!(matches!(one, ReloadError::Load(_)), "{one:?}");
        assert_eq!(one.to_string(), "secrets.toml: bad");
        let both = ReloadError::collect(vec![io(), io().in_family("tag")]).unwrap_err();
        assert_eq!(
            both.to_string(),
            "secrets.toml: bad; tag: secrets.toml: bad"
        );
        let ReloadError::Several(parts) = both else {
            panic!("two errors are Several");
        };
        let source = std::error::Error::source(&parts[1]).expect("a family keeps its source");
        assert_eq!(source.to_string(), "secrets.toml: bad");
    }

    #[test]
    fn reload_reaches_the_secret_source() {
        let mut r = router();
        assert!(r.reload().is_ok());
        assert_eq!(r.secrets.reloads, 1);
    }
}
