//! [`CompatRouter`]: the native protocol and node-rendezvous on one listener.
//!
//! Decisions, in order (every one is a unit test below):
//!
//! **CONNECT**
//! - `uuid:<UUID>` exactly (no query): the native protocol, unchanged on both transports
//!   (a native client may use the TLS listener too).
//! - node-rendezvous when the target is `uuid:` (any case) with a query string, or, on
//!   [`Transport::Tls`], any other target. Checks in upstream's order: scheme not
//!   `uuid:` → 403; no non-empty `response` → 407; bytes after the head → 409; id not a
//!   UUID, no TOTP record, or a token that does not verify → 401 (one diagnostic, so the
//!   answer does not reveal which ids exist); else `Park` with the record's parking mode
//!   or [`CompatRouterConfig::node_park_mode`].
//! - on [`Transport::Plain`] every other target keeps the native refusal (400
//!   `unknown_target` / `malformed_uuid`): a plain listener is first of all the native
//!   one, and a port scanner's `CONNECT host:443` should not get a node frame there.
//!
//! **Other methods** (mobile clients). The HTTP service owns [`HTTP_SERVICE_PATHS`] and
//! the prefixes [`HTTP_SERVICE_PREFIXES`]; node-rendezvous owns everything else.
//! - `Authorization` naming a UUID (Basic user or Digest `username`), or for an upgrade
//!   without `Authorization` `?rendezvous=<UUID>`: a reach. The classification is a
//!   rendezvous key (never `Http`), the plan greets with nothing, forwards the rebuilt
//!   head ([`super::rebuild_head`]) and answers 404 `UUID not registered` after the
//!   client wait. This holds on the service's paths too, so a hidden server can serve
//!   its own `/metrics`.
//! - on a service path, anything else (no `Authorization`, another scheme, a user that
//!   is not a UUID) goes to the HTTP service: `GET /metrics` from Prometheus, with or
//!   without its own basic auth, keeps working.
//! - elsewhere: no `Authorization` (and no usable `?rendezvous=` on an upgrade) → on
//!   [`Transport::Tls`] (node-rendezvous's listener upstream) the 401 Digest challenge;
//!   on [`Transport::Plain`] the HTTP service, whose unknown paths are the hivemind
//!   dead-drop's (`404 not_found`, its upstream answer on its plain port); a header upstream cannot parse → permanent 400; a user name
//!   that is not a UUID → 404 `UUID not registered` at once (it can never be parked).
//! - methods the head parser does not name (`Method::Other`) keep the native 405 unless
//!   they are a mobile reach as above.
//!
//! Refusals decided on the owner need a key at classification time; they use
//! [`REFUSAL_KEY`] (all zeros), so they are handled by one worker. Only the owner's
//! [`Router::route`] decides; classification never refuses a node request itself,
//! because the engine would answer with its native frame.

use super::{
    AuthorizationError, DIAG_EARLY_DATA, DIAG_INVALID_REQUEST, DIAG_MISSING_RESPONSE,
    DIAG_WRONG_SCHEME, NodeConnectError, authorization_username, bad_authorization_frame,
    digest_challenge, error_frame, is_upgrade, looks_like_node_connect, not_registered_frame,
    parse_node_connect, query_param, rebuild_head, target_path,
};
use crate::head::{Method, RequestHead};
use crate::reject::Rejection;
use crate::route::{
    Classified, HalfClose, NativeRouter, NativeRouterConfig, ParkMode, ReachPlan, ReloadError,
    Route, Router, SecretSource, Transport, connect_id,
};
use crate::target::{RendezvousId, RendezvousKey, TargetError};
use crate::totp::{self, TotpParking};
use md5::{Digest, Md5};

/// Paths served by the relay's HTTP service whatever the request carries (exact match
/// on the path, query ignored), unless a mobile client names a UUID: health and metrics,
/// Pico's `/new`, and the hivemind dead-drop's endpoints.
pub const HTTP_SERVICE_PATHS: &[&str] = &[
    "/healthz",
    "/metrics",
    "/new",
    "/pubkey",
    "/deposit",
    "/retrieve",
    "/ack",
    "/services",
];
/// Path prefixes of the HTTP service's API families: publications (`/v1/`), Pico
/// channels (`/channel/`), and the dead-drop's own namespace.
pub const HTTP_SERVICE_PREFIXES: &[&str] = &["/v1/", "/channel/", "/deaddrop/"];
/// The key under which requests that will be refused by the owner are classified.
pub const REFUSAL_KEY: RendezvousKey = RendezvousKey::uuid([0; 16]);

/// Settings of the combined router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompatRouterConfig {
    /// The native router's settings.
    pub native: NativeRouterConfig,
    /// TOTP steps accepted either side of the current one (node-rendezvous: 0).
    pub totp_skew_steps: u64,
    /// Parking mode of a node-rendezvous park whose record sets none. Default
    /// [`ParkMode::Replace`], upstream's one-socket-per-id behaviour: steward opens a new
    /// CONNECT after every pairing and on every reconnect, and with a FIFO a steward that
    /// lost its connection without a FIN would leave a dead socket first in line for the
    /// next mobile client. Native parks always queue.
    pub node_park_mode: ParkMode,
    /// `/metrics` is served on an operators' listener only (`--metrics-listen`): on the
    /// public listeners it is not a service path, so it is answered as any unknown path.
    pub metrics_private: bool,
}

impl Default for CompatRouterConfig {
    fn default() -> Self {
        Self {
            native: NativeRouterConfig::default(),
            totp_skew_steps: 0,
            node_park_mode: ParkMode::Replace,
            metrics_private: false,
        }
    }
}

/// What a non-CONNECT request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mobile {
    /// A mobile client for this id.
    Reach(RendezvousId),
    /// The HTTP service's business.
    Http,
    /// A user name that is not a UUID: 404.
    NotRegistered,
    /// An `Authorization` header upstream cannot parse: 400.
    BadAuthorization,
    /// No credentials: the 401 Digest challenge.
    Challenge,
}

fn is_service_path(target: &str, metrics_private: bool) -> bool {
    let path = target_path(target);
    if metrics_private && path == "/metrics" {
        return false;
    }
    HTTP_SERVICE_PATHS.contains(&path) || HTTP_SERVICE_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Classifies a request that is not a CONNECT. Requests without credentials on a path
/// that is not the service's belong to node-rendezvous (the Digest challenge) on the TLS
/// listener, where node-rendezvous lives upstream, and to the HTTP service on the plain
/// listener, where the hivemind dead-drop lives upstream (its `404 not_found`).
fn classify_mobile(head: &RequestHead, transport: Transport, metrics_private: bool) -> Mobile {
    let service = is_service_path(&head.target, metrics_private);
    let named = match head.header("authorization") {
        Some(value) => match authorization_username(value) {
            Ok(user) => Some(user),
            Err(AuthorizationError::UnsupportedScheme)
            | Err(AuthorizationError::BadBasic)
            | Err(AuthorizationError::BadDigest) => {
                return if service {
                    Mobile::Http
                } else {
                    Mobile::BadAuthorization
                };
            }
        },
        None if is_upgrade(head) => query_param(&head.target, "rendezvous").map(str::to_owned),
        None => None,
    };
    match named {
        Some(user) => match RendezvousId::parse(&user) {
            Ok(id) => Mobile::Reach(id),
            Err(_) if service => Mobile::Http,
            Err(_) => Mobile::NotRegistered,
        },
        None if service || transport == Transport::Plain => Mobile::Http,
        None => Mobile::Challenge,
    }
}

/// Which protocol a CONNECT speaks. A native one carries its parsed target, so the
/// native router does not parse it again.
enum ConnectFamily {
    Native(Result<RendezvousId, TargetError>),
    Node,
}

fn connect_family(target: &str, transport: Transport) -> ConnectFamily {
    match connect_id(target) {
        Ok(id) => ConnectFamily::Native(Ok(id)),
        _ if looks_like_node_connect(target) || transport == Transport::Tls => ConnectFamily::Node,
        Err(e) => ConnectFamily::Native(Err(e)),
    }
}

/// The native protocol plus node-rendezvous hidden servers and mobile clients (see the
/// module docs for every decision).
#[derive(Debug)]
pub struct CompatRouter<S> {
    native: NativeRouter<S>,
    config: CompatRouterConfig,
    /// Per-router random salt and counter for Digest nonces (no clock reads here).
    nonce_salt: [u8; 16],
    challenges: u64,
}

impl<S: SecretSource> CompatRouter<S> {
    /// A router over `secrets` (native secrets and TOTP records).
    pub fn new(secrets: S, config: CompatRouterConfig) -> Self {
        Self {
            native: NativeRouter::new(secrets, config.native),
            config,
            nonce_salt: rand::random(),
            challenges: 0,
        }
    }

    /// The secret source.
    pub fn secrets(&self) -> &S {
        self.native.secrets()
    }

    fn node_park(&self, head: &RequestHead, early: &[u8], now_unix: u64) -> Route {
        let refuse = |r: Rejection, code: u16, diag: &str| {
            Route::RejectWith(r, error_frame(code, false, diag))
        };
        let target = match parse_node_connect(&head.target) {
            Ok(t) => t,
            Err(NodeConnectError::WrongScheme) => {
                return refuse(Rejection::UnknownTarget, 403, DIAG_WRONG_SCHEME);
            }
        };
        let Some(token) = target.response else {
            return refuse(Rejection::ProofRequired, 407, DIAG_MISSING_RESPONSE);
        };
        if !early.is_empty() {
            return refuse(Rejection::EarlyData, 409, DIAG_EARLY_DATA);
        }
        let bad = || refuse(Rejection::BadProof, 401, DIAG_INVALID_REQUEST);
        let Ok(id) = RendezvousId::parse(target.host) else {
            return bad();
        };
        let Some(record) = self.secrets().totp(&id) else {
            return bad();
        };
        if totp::verify(
            record,
            token.as_bytes(),
            now_unix,
            self.config.totp_skew_steps,
        )
        .is_err()
        {
            return bad();
        }
        let mode = match record.parking() {
            Some(TotpParking::Queue) => ParkMode::Queue,
            Some(TotpParking::Replace) => ParkMode::Replace,
            None => self.config.node_park_mode,
        };
        Route::Park {
            key: id.into(),
            mode,
            notice: false,
        }
    }

    fn challenge(&mut self, now_unix: u64) -> Vec<u8> {
        self.challenges = self.challenges.wrapping_add(1);
        let mut h = Md5::new();
        h.update(self.nonce_salt);
        h.update(now_unix.to_be_bytes());
        h.update(self.challenges.to_be_bytes());
        digest_challenge(&hex::encode(h.finalize()))
    }
}

impl<S: SecretSource> Router for CompatRouter<S> {
    fn classify(&self, head: &RequestHead, transport: Transport) -> Result<Classified, Rejection> {
        if head.method == Method::Connect {
            return match connect_family(&head.target, transport) {
                ConnectFamily::Native(id) => NativeRouter::<S>::classify_connect(id),
                ConnectFamily::Node => Ok(Classified::Rendezvous(
                    parse_node_connect(&head.target)
                        .ok()
                        .and_then(|t| RendezvousId::parse(t.host).ok())
                        .map_or(REFUSAL_KEY, RendezvousKey::from),
                )),
            };
        }
        match classify_mobile(head, transport, self.config.metrics_private) {
            Mobile::Reach(id) => Ok(Classified::Rendezvous(id.into())),
            _ if matches!(head.method, Method::Other(_)) => Err(Rejection::MethodNotAllowed),
            Mobile::Http => Ok(Classified::Http),
            Mobile::NotRegistered | Mobile::BadAuthorization | Mobile::Challenge => {
                Ok(Classified::Rendezvous(REFUSAL_KEY))
            }
        }
    }

    fn route(
        &mut self,
        head: &RequestHead,
        early: &[u8],
        now_unix: u64,
        transport: Transport,
    ) -> Route {
        if head.method == Method::Connect {
            return match connect_family(&head.target, transport) {
                ConnectFamily::Native(id) => self.native.route_connect(id, head, early, now_unix),
                ConnectFamily::Node => self.node_park(head, early, now_unix),
            };
        }
        match classify_mobile(head, transport, self.config.metrics_private) {
            Mobile::Reach(id) => Route::Reach(ReachPlan {
                key: id.into(),
                greeting: Vec::new(),
                forward: rebuild_head(head),
                not_parked: Some(not_registered_frame()),
                // Upstream ends both sockets when either side ends.
                half_close: HalfClose::CloseBoth,
            }),
            _ if matches!(head.method, Method::Other(_)) => {
                Route::Reject(Rejection::MethodNotAllowed)
            }
            Mobile::Http => Route::Http,
            Mobile::NotRegistered => {
                Route::RejectWith(Rejection::NotParked, not_registered_frame())
            }
            Mobile::BadAuthorization => {
                Route::RejectWith(Rejection::MalformedHead, bad_authorization_frame())
            }
            Mobile::Challenge => {
                Route::RejectWith(Rejection::ProofRequired, self.challenge(now_unix))
            }
        }
    }

    /// The native park proof's replay claim (node-rendezvous TOTP parks have no replay
    /// cache, so no claim).
    fn claim(&mut self, now_unix: u64) -> Option<crate::claim::Claim> {
        self.native.claim(now_unix)
    }

    fn reload(&mut self) -> Result<(), ReloadError> {
        self.native.reload()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{self, MacKey, Operation, Secret};
    use crate::head::{HeadLimits, HeadStatus, parse_head};
    use crate::totp::{TotpAlgorithm, TotpRecord};
    use base64::Engine as _;

    const ID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    const QUEUE_ID: &str = "11111111-2222-4333-8444-555555555555";
    const NATIVE_ONLY: &str = "22222222-2222-4333-8444-555555555555";
    const NOW: u64 = 1_400_000_000;
    const KEY: &[u8] = b"PKMLogv7SFLJubPIvgiRB7q6l7UmxmAmt6NNGWCy";

    #[derive(Debug)]
    struct Secrets {
        native: MacKey,
        totp: TotpRecord,
        queue: TotpRecord,
    }

    impl SecretSource for Secrets {
        fn mac_key(&self, id: &RendezvousId) -> Option<&MacKey> {
            (id.to_string() == NATIVE_ONLY).then_some(&self.native)
        }
        fn totp(&self, id: &RendezvousId) -> Option<&TotpRecord> {
            match id.to_string().as_str() {
                ID => Some(&self.totp),
                QUEUE_ID => Some(&self.queue),
                _ => None,
            }
        }
        fn reload(&mut self) -> Result<(), ReloadError> {
            Ok(())
        }
    }

    fn router_with(config: CompatRouterConfig) -> CompatRouter<Secrets> {
        let rec = |p| TotpRecord::new(KEY.to_vec(), 30, TotpAlgorithm::Sha1, p).unwrap();
        CompatRouter::new(
            Secrets {
                native: MacKey::new(&Secret::new(b"native secret".to_vec())),
                totp: rec(None),
                queue: rec(Some(TotpParking::Queue)),
            },
            config,
        )
    }

    fn router() -> CompatRouter<Secrets> {
        router_with(CompatRouterConfig::default())
    }

    fn head(text: &str) -> RequestHead {
        match parse_head(text.as_bytes(), &HeadLimits::default()) {
            Ok(HeadStatus::Complete(h)) => h,
            other => panic!("test head did not parse: {other:?}"),
        }
    }

    fn key(id: &str) -> RendezvousKey {
        RendezvousId::parse(id).unwrap().into()
    }

    fn frame(route: Route) -> (Rejection, String) {
        match route {
            Route::RejectWith(r, bytes) => (r, String::from_utf8(bytes).unwrap()),
            other => panic!("expected RejectWith, got {other:?}"),
        }
    }

    fn node_frame(code: u16, permanent: bool, diag: &str) -> String {
        format!(
            "HTTP/1.1 {code}\r\n\r\n{{\"error\":{{\"permanent\":{permanent},\"diagnostic\":\"{diag}\"}}}}"
        )
    }

    fn connect(target: &str) -> RequestHead {
        head(&format!("CONNECT {target} HTTP/1.1\r\nHost: relay\r\n\r\n"))
    }

    fn both() -> [Transport; 2] {
        [Transport::Plain, Transport::Tls]
    }

    #[test]
    fn node_park_with_a_good_token_replaces_by_default() {
        let mut r = router();
        for t in both() {
            let h = connect(&format!("uuid:{ID}?response=594051"));
            assert_eq!(r.classify(&h, t), Ok(Classified::Rendezvous(key(ID))));
            let want = Route::Park {
                key: key(ID),
                mode: ParkMode::Replace,
                notice: false,
            };
            assert_eq!(r.route(&h, b"", NOW, t), want);
            // Reused within its step (1399999980..=1400000009; steward re-parks after
            // pairing), upper-case id.
            let h = connect(&format!("uuid:{}?response=594051", ID.to_uppercase()));
            assert_eq!(r.route(&h, b"", NOW - 20, t), want);
            assert_eq!(r.route(&h, b"", NOW + 9, t), want);
            // The long form.
            let h = connect(&format!("uuid:{ID}?response=2122594051"));
            assert_eq!(r.route(&h, b"", NOW, t), want);
        }
    }

    #[test]
    fn park_mode_from_the_record_or_the_config() {
        let code = totp::generate(
            &TotpRecord::new(KEY.to_vec(), 30, TotpAlgorithm::Sha1, None).unwrap(),
            NOW,
            6,
        );
        let h = connect(&format!("uuid:{QUEUE_ID}?response={code}"));
        assert_eq!(
            router().route(&h, b"", NOW, Transport::Tls),
            Route::Park {
                key: key(QUEUE_ID),
                mode: ParkMode::Queue,
                notice: false,
            }
        );
        let mut r = router_with(CompatRouterConfig {
            node_park_mode: ParkMode::Queue,
            ..CompatRouterConfig::default()
        });
        let h = connect(&format!("uuid:{ID}?response={code}"));
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Tls),
            Route::Park {
                key: key(ID),
                mode: ParkMode::Queue,
                notice: false,
            }
        );
    }

    #[test]
    fn node_refusals_in_upstream_order_with_exact_bytes() {
        let mut r = router();
        let t = Transport::Tls;
        // 403: wrong scheme (on TLS), even with every other fault present.
        let h = connect("example.com:443");
        assert_eq!(r.classify(&h, t), Ok(Classified::Rendezvous(REFUSAL_KEY)));
        assert_eq!(
            frame(r.route(&h, b"early", NOW, t)),
            (
                Rejection::UnknownTarget,
                node_frame(403, false, "invalid protocol, should be uuid:")
            )
        );
        // 407: no response (also with early bytes and an unknown id).
        for target in [
            format!("uuid:{ID}?"),
            format!("uuid:{ID}?response="),
            format!("UUID:{ID}"),
            "uuid:not-a-uuid?x=1".to_owned(),
        ] {
            let h = connect(&target);
            assert_eq!(
                frame(r.route(&h, b"x", NOW, t)),
                (
                    Rejection::ProofRequired,
                    node_frame(407, false, "missing response parameter")
                ),
                "{target}"
            );
        }
        // 409: early bytes, even with a bad token.
        let h = connect(&format!("uuid:{ID}?response=000000"));
        assert_eq!(
            frame(r.route(&h, b"x", NOW, t)),
            (
                Rejection::EarlyData,
                node_frame(
                    409,
                    false,
                    "wait for response to CONNECT before sending data"
                )
            )
        );
        // 401: bad token, short token, non-digits, unknown id, bad id, wrong step.
        let bad = (
            Rejection::BadProof,
            node_frame(401, false, "invalid request"),
        );
        for target in [
            format!("uuid:{ID}?response=000000"),
            format!("uuid:{ID}?response=94051"),
            format!("uuid:{ID}?response=59405a"),
            format!("uuid:{NATIVE_ONLY}?response=594051"),
            "uuid:xyz?response=594051".to_owned(),
        ] {
            let h = connect(&target);
            assert_eq!(frame(r.route(&h, b"", NOW, t)), bad, "{target}");
        }
        let h = connect(&format!("uuid:{ID}?response=594051"));
        assert_eq!(frame(r.route(&h, b"", NOW + 10, t)), bad);
        assert_eq!(frame(r.route(&h, b"", NOW - 21, t)), bad);
    }

    #[test]
    fn skew_is_configurable() {
        let mut r = router_with(CompatRouterConfig {
            totp_skew_steps: 1,
            ..CompatRouterConfig::default()
        });
        let h = connect(&format!("uuid:{ID}?response=594051"));
        for now in [NOW - 30, NOW + 30] {
            assert!(matches!(
                r.route(&h, b"", now, Transport::Tls),
                Route::Park { .. }
            ));
        }
        assert!(matches!(
            r.route(&h, b"", NOW + 60, Transport::Tls),
            Route::RejectWith(Rejection::BadProof, _)
        ));
    }

    #[test]
    fn plain_listener_keeps_native_refusals_for_foreign_targets() {
        let mut r = router();
        let t = Transport::Plain;
        let h = connect("example.com:443");
        assert_eq!(r.classify(&h, t), Err(Rejection::UnknownTarget));
        assert_eq!(
            r.route(&h, b"", NOW, t),
            Route::Reject(Rejection::UnknownTarget)
        );
        let h = connect("uuid:xyz");
        assert_eq!(r.classify(&h, t), Err(Rejection::MalformedUuid));
        assert_eq!(
            r.route(&h, b"", NOW, t),
            Route::Reject(Rejection::MalformedUuid)
        );
        // With a query the node rules apply on plain too.
        let h = connect("uuid:xyz?response=594051");
        assert_eq!(r.classify(&h, t), Ok(Classified::Rendezvous(REFUSAL_KEY)));
        assert!(matches!(
            r.route(&h, b"", NOW, t),
            Route::RejectWith(Rejection::BadProof, _)
        ));
    }

    #[test]
    fn native_connect_is_unchanged_on_both_transports() {
        let mut r = router();
        let id = RendezvousId::parse(NATIVE_ONLY).unwrap();
        let proof = auth::proof_header(
            &Secret::new(b"native secret".to_vec()),
            Operation::Park,
            &id,
            NOW,
            &[3; 16],
        );
        for (i, t) in both().into_iter().enumerate() {
            let reach = connect(&format!("uuid:{ID}"));
            assert_eq!(r.classify(&reach, t), Ok(Classified::Rendezvous(key(ID))));
            assert_eq!(r.route(&reach, b"hi", NOW, t), Route::reach(key(ID)));
            let nonce = [i as u8 + 10; 16];
            let proof = auth::proof_header(
                &Secret::new(b"native secret".to_vec()),
                Operation::Park,
                &id,
                NOW,
                &nonce,
            );
            let park = head(&format!(
                "CONNECT uuid:{NATIVE_ONLY} HTTP/1.1\r\nProxy-Authorization: {proof}\r\n\r\n"
            ));
            assert_eq!(r.route(&park, b"", NOW, t), Route::park(key(NATIVE_ONLY)));
        }
        let park = head(&format!(
            "CONNECT uuid:{NATIVE_ONLY} HTTP/1.1\r\nProxy-Authorization: {proof}\r\n\r\n"
        ));
        assert_eq!(
            r.route(&park, b"x", NOW, Transport::Plain),
            Route::Reject(Rejection::EarlyData)
        );
    }

    fn basic(user: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"))
        )
    }

    fn mobile_plan(h: &RequestHead) -> ReachPlan {
        ReachPlan {
            key: key(ID),
            greeting: Vec::new(),
            forward: rebuild_head(h),
            not_parked: Some(node_frame(404, false, "UUID not registered").into_bytes()),
            half_close: HalfClose::CloseBoth,
        }
    }

    #[test]
    fn mobile_basic_and_digest_reach_with_the_rebuilt_head() {
        let mut r = router();
        let digest = format!(
            "Digest username=\"{}\", realm=\"rendezvous\", response=\"x\"",
            ID.to_uppercase()
        );
        for auth_value in [basic(ID), digest] {
            let h = head(&format!(
                "GET /some/path?q=1 HTTP/1.1\r\nHost: relay\r\nAuthorization: {auth_value}\r\nAccept: */*\r\n\r\n"
            ));
            for t in both() {
                assert_eq!(r.classify(&h, t), Ok(Classified::Rendezvous(key(ID))));
                let route = r.route(&h, b"body", NOW, t);
                assert_eq!(route, Route::Reach(mobile_plan(&h)));
                let Route::Reach(plan) = route else {
                    unreachable!()
                };
                assert_eq!(
                    plan.forward,
                    b"GET /some/path?q=1 HTTP/1.1\r\nhost: relay\r\naccept: */*\r\n\r\n"
                );
            }
        }
        // Any method, including ones the head parser does not name.
        let h = head(&format!(
            "PROPFIND /dav HTTP/1.1\r\nAuthorization: {}\r\n\r\n",
            basic(ID)
        ));
        assert_eq!(
            r.classify(&h, Transport::Tls),
            Ok(Classified::Rendezvous(key(ID)))
        );
        assert_eq!(
            r.route(&h, b"", NOW, Transport::Tls),
            Route::Reach(mobile_plan(&h))
        );
    }

    #[test]
    fn websocket_upgrade_with_rendezvous_query() {
        let mut r = router();
        let text = format!(
            "GET /ws?rendezvous={ID} HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let h = head(&text);
        assert_eq!(
            r.classify(&h, Transport::Tls),
            Ok(Classified::Rendezvous(key(ID)))
        );
        let Route::Reach(plan) = r.route(&h, b"", NOW, Transport::Tls) else {
            panic!("expected a reach")
        };
        assert_eq!(plan, mobile_plan(&h));
        assert!(
            plan.forward
                .starts_with(format!("GET /ws?rendezvous={ID} HTTP/1.1\r\n").as_bytes())
        );
        // The query only counts on upgrades.
        let h = head(&format!("GET /ws?rendezvous={ID} HTTP/1.1\r\n\r\n"));
        assert!(matches!(
            r.route(&h, b"", NOW, Transport::Tls),
            Route::RejectWith(Rejection::ProofRequired, _)
        ));
        // An upgrade without either gets the challenge; with a non-UUID, 404.
        let h = head("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert!(matches!(
            r.route(&h, b"", NOW, Transport::Tls),
            Route::RejectWith(Rejection::ProofRequired, _)
        ));
        let h = head("GET /ws?rendezvous=bob HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(
            frame(r.route(&h, b"", NOW, Transport::Tls)),
            (
                Rejection::NotParked,
                node_frame(404, false, "UUID not registered")
            )
        );
    }

    #[test]
    fn mobile_refusals_have_exact_bytes() {
        let mut r = router();
        // Without credentials on an unknown path: the hivemind dead-drop's on the plain
        // listener (the HTTP service answers its 404), node-rendezvous's on TLS.
        let h = head("GET /some/path HTTP/1.1\r\nHost: relay\r\n\r\n");
        assert_eq!(r.classify(&h, Transport::Plain), Ok(Classified::Http));
        assert_eq!(r.route(&h, b"", NOW, Transport::Plain), Route::Http);
        for t in both() {
            if t == Transport::Tls {
                assert_eq!(r.classify(&h, t), Ok(Classified::Rendezvous(REFUSAL_KEY)));
                let (rej, text) = frame(r.route(&h, b"", NOW, t));
                assert_eq!(rej, Rejection::ProofRequired);
                let prefix = "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Digest realm=\"rendezvous\", qop=\"auth, auth-int\", nonce=\"";
                let suffix = "\", opaque=\"a4f316df3e6c55a20ca82389083849ea\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                assert!(text.starts_with(prefix) && text.ends_with(suffix), "{text}");
                let nonce = &text[prefix.len()..text.len() - suffix.len()];
                assert_eq!(nonce.len(), 32);
                assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()));
                // A fresh nonce per challenge.
                let (_, again) = frame(r.route(&h, b"", NOW, t));
                assert_ne!(again, text);
            }

            for bad in ["Bearer x", "Basic !!", "Basic Onc=", "Digest realm=\"r\""] {
                let h = head(&format!("GET /p HTTP/1.1\r\nAuthorization: {bad}\r\n\r\n"));
                assert_eq!(r.classify(&h, t), Ok(Classified::Rendezvous(REFUSAL_KEY)));
                assert_eq!(
                    frame(r.route(&h, b"", NOW, t)),
                    (
                        Rejection::MalformedHead,
                        node_frame(400, true, "invalid Authorization header")
                    ),
                    "{bad}"
                );
            }
            let h = head(&format!(
                "POST /p HTTP/1.1\r\nAuthorization: {}\r\n\r\n",
                basic("bob")
            ));
            assert_eq!(
                frame(r.route(&h, b"", NOW, t)),
                (
                    Rejection::NotParked,
                    node_frame(404, false, "UUID not registered")
                )
            );
        }
    }

    #[test]
    fn service_paths_stay_with_the_http_service() {
        let mut r = router();
        for path in [
            "/healthz",
            "/metrics",
            "/metrics?x=1",
            "/v1/deposit",
            "/deaddrop/x",
            "/new",
            "/channel/abc",
            "/pubkey",
            "/deposit",
            "/retrieve",
            "/ack",
        ] {
            for extra in [
                "",
                "Authorization: Basic Ym9iOnB3\r\n",
                "Authorization: Bearer t\r\n",
            ] {
                let h = head(&format!("GET {path} HTTP/1.1\r\n{extra}\r\n"));
                for t in both() {
                    assert_eq!(r.classify(&h, t), Ok(Classified::Http), "{path} {extra}");
                    assert_eq!(r.route(&h, b"", NOW, t), Route::Http, "{path} {extra}");
                }
            }
        }
        // A mobile client naming a UUID reaches its hidden server's own /metrics.
        let h = head(&format!(
            "GET /metrics HTTP/1.1\r\nAuthorization: {}\r\n\r\n",
            basic(ID)
        ));
        assert_eq!(
            r.classify(&h, Transport::Plain),
            Ok(Classified::Rendezvous(key(ID)))
        );
        // Near misses are not service paths: challenged on TLS.
        for path in ["/metricsx", "/v1", "/healthz/"] {
            let h = head(&format!("GET {path} HTTP/1.1\r\n\r\n"));
            assert_eq!(
                r.classify(&h, Transport::Tls),
                Ok(Classified::Rendezvous(REFUSAL_KEY)),
                "{path}"
            );
        }
    }

    #[test]
    fn private_metrics_are_an_unknown_path_on_the_public_listeners() {
        let mut r = router_with(CompatRouterConfig {
            metrics_private: true,
            ..CompatRouterConfig::default()
        });
        let h = head("GET /metrics HTTP/1.1\r\n\r\n");
        // Plain: the HTTP service (which answers it as unknown); TLS: the challenge.
        assert_eq!(r.classify(&h, Transport::Plain), Ok(Classified::Http));
        assert_eq!(
            r.classify(&h, Transport::Tls),
            Ok(Classified::Rendezvous(REFUSAL_KEY))
        );
        assert!(matches!(
            r.route(&h, b"", NOW, Transport::Tls),
            Route::RejectWith(Rejection::ProofRequired, _)
        ));
        let h = head("GET /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(r.classify(&h, Transport::Tls), Ok(Classified::Http));
    }

    #[test]
    fn unknown_methods_without_a_reach_are_405() {
        let mut r = router();
        for text in [
            "BREW /pot HTTP/1.1\r\n\r\n",
            "BREW /metrics HTTP/1.1\r\n\r\n",
        ] {
            let h = head(text);
            assert_eq!(
                r.classify(&h, Transport::Plain),
                Err(Rejection::MethodNotAllowed)
            );
            assert_eq!(
                r.route(&h, b"", NOW, Transport::Plain),
                Route::Reject(Rejection::MethodNotAllowed)
            );
        }
    }
}
