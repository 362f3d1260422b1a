//! Shared fixtures of the benches and the instruction-count scenarios (`instr`).
//!
//! Everything here is deterministic: fixed Ed25519 seeds (Ed25519 signing is itself
//! deterministic), fixed ids, fixed timestamps. Nothing reads the clock.

#![forbid(unsafe_code)]

/// Fixtures for the Hive family (`tryst_relay::hive`) and the tag family
/// (`tryst_relay::tag`).
pub mod fixtures {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use ed25519_dalek::{Signer as _, SigningKey};
    use tryst_relay::hive::forward::{DRAIN_DOMAIN, DRAIN_SCHEME, proof_message};
    use tryst_relay::hive::record::{Candidate, Record};
    use tryst_relay::hive::verify::{VerifiedPublication, sign_publication};
    use tryst_relay::tag::kdf::HashedTag;
    use tryst_relay::tag::wire::{CreateOptions, park_message};

    /// The fixtures' unix time: 2026-11-22T06:00:00Z, the `publishedAt` of every
    /// fixture publication.
    pub const T0: i64 = 1_795_327_200;
    /// The fixture workspace.
    pub const WORKSPACE: [u8; 16] = [0x0b; 16];
    /// The fixture account.
    pub const ACCOUNT: [u8; 16] = [0x5d; 16];
    /// The fixture device.
    pub const DEVICE: [u8; 16] = [0xa1; 16];
    /// The fixture hashed tag (the relay only ever sees hashed tags).
    pub const TAG: HashedTag = HashedTag([0x3c; 32]);

    /// The fixture device's Ed25519 key: seed bytes 0x00, 0x01, ..., 0x1f.
    pub fn device_key() -> SigningKey {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = i as u8;
        }
        SigningKey::from_bytes(&seed)
    }

    /// A record of the fixture device with `candidates` candidates (1..=16), published
    /// at [`T0`] for 90 s.
    pub fn record(candidates: usize) -> Record {
        Record {
            workspace: WORKSPACE,
            account: ACCOUNT,
            device: DEVICE,
            signing_key: device_key().verifying_key().to_bytes(),
            candidates: (0..candidates)
                .map(|i| Candidate {
                    kind: if i == 0 { "stunReflexive" } else { "hostLocal" }.into(),
                    host: format!("192.0.2.{}", i + 1),
                    port: 51820 + i as u16,
                    priority: 100 - i as u32,
                })
                .collect(),
            published_at: "2026-11-22T06:00:00Z".into(),
            ttl_seconds: 90,
        }
    }

    /// The signed POST /v1/rendezvous body of [`record`]`(candidates)`.
    pub fn publication(candidates: usize) -> Vec<u8> {
        sign_publication(&device_key(), &record(candidates))
    }

    /// A verified publication of `device` in `workspace` as the store holds it (built
    /// directly, without signing: the store never looks at the signature), published at
    /// [`T0`] + `nanos` ns and fresh until [`T0`] + 300 s.
    pub fn stored(
        workspace: [u8; 16],
        device: [u8; 16],
        nanos: u32,
        body: &[u8],
    ) -> VerifiedPublication {
        VerifiedPublication {
            workspace,
            device,
            account: ACCOUNT,
            signing_key: device_key().verifying_key().to_bytes(),
            published_at_unix: T0,
            expires_at_unix: T0 + 300,
            body: body.to_vec(),
            published_at_nanos: nanos,
        }
    }

    /// The id bytes of number `n` (its little-endian bytes, then `fill`).
    pub fn numbered(n: u32, fill: u8) -> [u8; 16] {
        let mut id = [fill; 16];
        id[..4].copy_from_slice(&n.to_le_bytes());
        id
    }

    /// The nonce of number `n` (16 bytes).
    pub fn nonce(n: u64) -> [u8; 16] {
        let mut out = [0x6e; 16];
        out[..8].copy_from_slice(&n.to_le_bytes());
        out
    }

    /// The fixture device's `Authorization: Hive-Drain ...` value at `ts` with `nonce`.
    pub fn drain_header(ts: u64, nonce: &[u8; 16]) -> String {
        let message = proof_message(DRAIN_DOMAIN, &WORKSPACE, &DEVICE, ts, nonce);
        let sig = device_key().sign(&message).to_bytes();
        format!(
            "{DRAIN_SCHEME} ts={ts}, nonce={}, sig={}",
            hex::encode(nonce),
            STANDARD.encode(sig)
        )
    }

    /// The publisher's `Proxy-Authorization: Tag ...` value for [`TAG`] at `ts` with
    /// `nonce`, signed with the tag's derived key over the creation `options`.
    pub fn tag_proof_header(ts: u64, nonce: &[u8], options: &CreateOptions) -> String {
        let message = park_message(&TAG, ts, nonce, options);
        let sig = TAG.derived_signing_key().sign(&message).to_bytes();
        format!(
            "Tag ts={ts}, nonce={}, sig={}",
            hex::encode(nonce),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }
}

/// The Hive, tag and Qredo workloads of the instruction-count gate (`instr`): each is prepared
/// by `new` (keys, signatures, frames, publications: all outside the measurement) and
/// run once by `run`, which `instr` calls inside its measured function. `run` returns
/// how many operations succeeded.
pub mod workloads {
    use super::{fixtures, qredo};
    use tryst_engine::auth::{MacKey, Operation, Secret, proof_header};
    use tryst_engine::head::{HeadLimits, HeadStatus, RequestHead, parse_head};
    use tryst_engine::node::{CompatRouter, CompatRouterConfig};
    use tryst_engine::route::{
        Classified, NativeRouterConfig, ReloadError, Route, Router, SecretSource, Transport,
    };
    use tryst_engine::target::RendezvousId;
    use tryst_relay::hive::forward::{self, ForwardLimits, Mailboxes};
    use tryst_relay::hive::store::{Inserted, PublicationStore, StoreLimits};
    use tryst_relay::hive::verify::{PublicationPolicy, VerifiedPublication, verify_publication};
    use tryst_relay::qredo::lf;
    use tryst_relay::qredo::rendezvous::RendezvousTable;
    use tryst_relay::router::RelayRouter;
    use tryst_relay::tag::table::{TagLimits, TagTable};
    use tryst_relay::tag::wire::{self, CreateOptions};

    /// Operations per run of the verify, proof, forward and park workloads.
    pub const ITERATIONS: usize = 1_000;
    /// Publications inserted by [`HiveStoreInsert`].
    pub const STORE_DEVICES: usize = 10_000;
    /// Devices per workspace there (the default per-workspace cap is 256).
    pub const STORE_PER_WORKSPACE: usize = 250;

    /// [`ITERATIONS`] x `verify_publication` of a 2-candidate publication.
    #[derive(Debug)]
    pub struct HiveVerify {
        body: Vec<u8>,
        policy: PublicationPolicy,
        n: usize,
    }

    impl HiveVerify {
        /// Signs the publication.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self::with_iterations(ITERATIONS)
        }

        /// The same workload with `n` verifications (the unit tests use few).
        pub fn with_iterations(n: usize) -> Self {
            Self {
                body: fixtures::publication(2),
                policy: PublicationPolicy::default(),
                n,
            }
        }

        /// Verifies it `n` ([`ITERATIONS`]) times; returns how many verified.
        #[inline(never)]
        pub fn run(&self) -> usize {
            (0..self.n)
                .filter(|_| {
                    verify_publication(std::hint::black_box(&self.body), fixtures::T0, &self.policy)
                        .is_ok()
                })
                .count()
        }
    }

    /// [`ITERATIONS`] x Hive-Drain `parse_proof` + `check_proof`.
    #[derive(Debug)]
    pub struct HiveDrainProof {
        key: [u8; 32],
        header: String,
        n: usize,
    }

    impl HiveDrainProof {
        /// Signs the proof.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self::with_iterations(ITERATIONS)
        }

        /// The same workload with `n` checks (the unit tests use few).
        pub fn with_iterations(n: usize) -> Self {
            Self {
                key: fixtures::device_key().verifying_key().to_bytes(),
                header: fixtures::drain_header(fixtures::T0 as u64, &fixtures::nonce(1)),
                n,
            }
        }

        /// Parses and checks it `n` ([`ITERATIONS`]) times; returns how many passed.
        #[inline(never)]
        pub fn run(&self) -> usize {
            let who = (&fixtures::WORKSPACE, &fixtures::DEVICE);
            (0..self.n)
                .filter(|_| {
                    forward::parse_proof(std::hint::black_box(&self.header), forward::DRAIN_SCHEME)
                        .is_ok_and(|p| {
                            forward::check_proof(
                                &p,
                                forward::DRAIN_DOMAIN,
                                &self.key,
                                who,
                                fixtures::T0,
                                60,
                            )
                            .is_ok()
                        })
                })
                .count()
        }
    }

    /// [`ITERATIONS`] x append of a 1 KiB frame to one forward mailbox, then its drain.
    #[derive(Debug)]
    pub struct HiveForward {
        boxes: Mailboxes,
        frames: Vec<Vec<u8>>,
    }

    impl HiveForward {
        /// Allocates the frames.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self {
                boxes: Mailboxes::new(ForwardLimits::default()),
                frames: (0..ITERATIONS).map(|i| vec![i as u8; 1024]).collect(),
            }
        }

        /// Appends and drains every frame; returns the bytes drained.
        #[inline(never)]
        pub fn run(&mut self) -> usize {
            let key = (fixtures::WORKSPACE, fixtures::DEVICE);
            let mut drained = 0;
            for f in std::mem::take(&mut self.frames) {
                if self.boxes.append(key, f, fixtures::T0).is_ok() {
                    drained += self
                        .boxes
                        .take(&key, fixtures::T0)
                        .map_or(0, |out| out.len());
                }
            }
            drained
        }

        /// Whether nothing is left queued.
        pub fn is_empty(&self) -> bool {
            self.boxes.total_bytes() == 0
        }
    }

    /// [`STORE_DEVICES`] new publications into an empty store.
    #[derive(Debug)]
    pub struct HiveStoreInsert {
        store: PublicationStore,
        publications: Vec<VerifiedPublication>,
    }

    impl HiveStoreInsert {
        /// Builds the publications (without signing: the store never checks signatures).
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            let body = fixtures::publication(2);
            Self {
                store: PublicationStore::new(StoreLimits::default()),
                publications: (0..STORE_DEVICES as u32)
                    .map(|n| {
                        let ws = fixtures::numbered(n / STORE_PER_WORKSPACE as u32, 0x0b);
                        fixtures::stored(ws, fixtures::numbered(n, 0xa1), 0, &body)
                    })
                    .collect(),
            }
        }

        /// Inserts them all; returns how many were new.
        #[inline(never)]
        pub fn run(&mut self) -> usize {
            std::mem::take(&mut self.publications)
                .into_iter()
                .filter_map(|p| self.store.insert(p, fixtures::T0).ok())
                .filter(|i| *i == Inserted::New)
                .count()
        }

        /// Publications held.
        pub fn stored(&self) -> usize {
            self.store.len()
        }
    }

    /// [`ITERATIONS`] parks of a publisher on its existing tag, each with a fresh nonce:
    /// proof parse, strict Ed25519 against the stored owner key, replay cache.
    #[derive(Debug)]
    pub struct TagParkVerify {
        table: TagTable,
        headers: Vec<String>,
    }

    impl TagParkVerify {
        /// Creates the tag (nonce 0) and signs the proofs (nonces 1..=[`ITERATIONS`]).
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self::with_iterations(ITERATIONS)
        }

        /// The same workload with `n` parks (the unit tests use few).
        pub fn with_iterations(n: usize) -> Self {
            let now = fixtures::T0 as u64;
            let options = CreateOptions::default();
            let mut table = TagTable::new(TagLimits::default());
            let first = fixtures::tag_proof_header(now, &fixtures::nonce(0), &options);
            let first = wire::parse_proof(first.as_bytes()).expect("fixture parses");
            let created = table.park(&fixtures::TAG, &first, &options, now);
            assert!(created.is_ok_and(|p| p.created), "fixture tag is created");
            Self {
                table,
                headers: (1..=n as u64)
                    .map(|n| fixtures::tag_proof_header(now, &fixtures::nonce(n), &options))
                    .collect(),
            }
        }

        /// Parses and parks every proof; returns how many parked.
        #[inline(never)]
        pub fn run(&mut self) -> usize {
            let now = fixtures::T0 as u64;
            let options = CreateOptions::default();
            let table = &mut self.table;
            self.headers
                .iter()
                .filter(|h| {
                    wire::parse_proof(std::hint::black_box(h.as_bytes())).is_ok_and(|proof| {
                        table.park(&fixtures::TAG, &proof, &options, now).is_ok()
                    })
                })
                .count()
        }
    }

    /// One provisioned id's keyed HMAC state: the secret source of [`RouteHeads`] and
    /// of the splice bench's worker.
    #[derive(Debug)]
    pub struct OneSecret {
        id: RendezvousId,
        key: MacKey,
    }

    impl OneSecret {
        /// `id` provisioned with `secret`.
        pub fn new(id: RendezvousId, secret: &Secret) -> Self {
            Self {
                id,
                key: MacKey::new(secret),
            }
        }
    }

    impl SecretSource for OneSecret {
        fn mac_key(&self, id: &RendezvousId) -> Option<&MacKey> {
            (*id == self.id).then_some(&self.key)
        }
        fn reload(&mut self) -> Result<(), ReloadError> {
            Ok(())
        }
    }

    /// The id and secret of [`RouteHeads`].
    pub const ROUTE_ID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    const ROUTE_SECRET: &[u8; 32] = b"route secret, 32 bytes long....!";

    /// [`ITERATIONS`] pairings' worth of request heads decided by the relay's router as
    /// a worker decides them (`classify` on the accepting worker, then `route` on the
    /// owner): each pairing is a hidden server's park (`CONNECT uuid:<id>` with a fresh
    /// HMAC proof and the pairing-notice header, as `tryst expose` sends it) and a
    /// client's reach (`CONNECT uuid:<id>`). The heads are parsed and the proofs signed
    /// in `new`; the router is the relay's ([`RelayRouter`] over the engine's
    /// `CompatRouter`) without scheme families, which a `uuid:` target never reaches.
    #[derive(Debug)]
    pub struct RouteHeads {
        router: RelayRouter<OneSecret>,
        heads: Vec<RequestHead>,
    }

    impl RouteHeads {
        /// Signs the proofs (nonces 0..[`ITERATIONS`]) and parses every head.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self::with_iterations(ITERATIONS)
        }

        /// The same workload with `n` pairings (the unit tests use few).
        pub fn with_iterations(n: usize) -> Self {
            let id = RendezvousId::parse(ROUTE_ID).expect("constant id is valid");
            let secret = Secret::new(ROUTE_SECRET.to_vec());
            let now = fixtures::T0 as u64;
            let parse = |text: String| match parse_head(text.as_bytes(), &HeadLimits::default()) {
                Ok(HeadStatus::Complete(head)) => head,
                other => panic!("fixture head did not parse: {other:?}"),
            };
            let heads = (0..n as u64)
                .flat_map(|i| {
                    let proof = proof_header(&secret, Operation::Park, &id, now, &fixtures::nonce(i));
                    [
                        parse(format!(
                            "CONNECT uuid:{ROUTE_ID} HTTP/1.1\r\nProxy-Authorization: {proof}\r\nTryst-Pairing-Notice: 1\r\n\r\n"
                        )),
                        parse(format!("CONNECT uuid:{ROUTE_ID} HTTP/1.1\r\n\r\n")),
                    ]
                })
                .collect();
            let secrets = OneSecret::new(id, &secret);
            let config = CompatRouterConfig {
                native: NativeRouterConfig {
                    started_unix: now - 3_600,
                    ..NativeRouterConfig::default()
                },
                ..CompatRouterConfig::default()
            };
            Self {
                router: RelayRouter::new(CompatRouter::new(secrets, config)),
                heads,
            }
        }

        /// Classifies and routes every head; returns how many parked or reached (every
        /// proof is fresh once: a second run parks none).
        #[inline(never)]
        pub fn run(&mut self) -> usize {
            let now = fixtures::T0 as u64;
            let router = &mut self.router;
            self.heads
                .iter()
                .filter(|head| {
                    let head = std::hint::black_box(*head);
                    matches!(
                        router.classify(head, Transport::Plain),
                        Ok(Classified::Rendezvous(_))
                    ) && matches!(
                        router.route(head, b"", now, Transport::Plain),
                        Route::Park { .. } | Route::Reach(_)
                    )
                })
                .count()
        }
    }

    /// [`ITERATIONS`] decodes of a `Rendezvous.create` request as the SDK sends it
    /// (`qredo::creation_info`: 5 fields, 2 nested records, a 120-byte responder info).
    #[derive(Debug)]
    pub struct QredoDecodeCreate {
        bytes: Vec<u8>,
        limits: lf::Limits,
    }

    impl QredoDecodeCreate {
        /// Encodes the request.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self {
                bytes: qredo::request("create", vec![qredo::creation_info()]).encode(),
                limits: lf::Limits::default(),
            }
        }

        /// Decodes it [`ITERATIONS`] times; returns how many decoded.
        #[inline(never)]
        pub fn run(&self) -> usize {
            (0..ITERATIONS)
                .filter(|_| {
                    lf::decode_request(std::hint::black_box(&self.bytes), &self.limits).is_ok()
                })
                .count()
        }
    }

    /// [`ITERATIONS`] encodes of the result of a `respond`
    /// (`RendezvousResponseRegistered{info}` with the creation's responder info).
    #[derive(Debug)]
    pub struct QredoEncodeResult {
        response: lf::Response,
    }

    impl QredoEncodeResult {
        /// Answers one `respond` to build the result.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            let (value, _) = qredo::table()
                .respond(&qredo::response(), qredo::T0 + 1)
                .expect("fixture responds");
            Self {
                response: lf::Response {
                    header: qredo::request("respond", Vec::new()).header,
                    outcome: lf::Outcome::Success(vec![value]),
                },
            }
        }

        /// The encoding's length.
        pub fn encoded_len(&self) -> usize {
            self.response.encode().len()
        }

        /// Encodes it [`ITERATIONS`] times; returns the bytes written.
        #[inline(never)]
        pub fn run(&self) -> usize {
            (0..ITERATIONS)
                .map(|_| std::hint::black_box(&self.response).encode().len())
                .sum()
        }
    }

    /// [`ITERATIONS`] whole `respond` calls through the sans-IO path: decode the request,
    /// `RendezvousTable::respond` to one unlimited rendezvous, encode the result (what
    /// `Qredo::call` does between the transport and the table, less the app check).
    #[derive(Debug)]
    pub struct QredoRespond {
        table: RendezvousTable,
        body: Vec<u8>,
        limits: lf::Limits,
    }

    impl QredoRespond {
        /// Creates the rendezvous and encodes the request.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self {
                table: qredo::table(),
                body: qredo::request("respond", vec![qredo::response()]).encode(),
                limits: lf::Limits::default(),
            }
        }

        /// Answers the request [`ITERATIONS`] times; returns how many were registered.
        #[inline(never)]
        pub fn run(&mut self) -> usize {
            let mut registered = 0;
            for _ in 0..ITERATIONS {
                let Ok(req) = lf::decode_request(std::hint::black_box(&self.body), &self.limits)
                else {
                    continue;
                };
                let Some(arg) = req.args.first() else {
                    continue;
                };
                if let Ok((value, Some(_))) = self.table.respond(arg, qredo::T0 + 1) {
                    std::hint::black_box(
                        lf::Response {
                            header: req.header,
                            outcome: lf::Outcome::Success(vec![value]),
                        }
                        .encode(),
                    );
                    registered += 1;
                }
            }
            registered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use tryst_relay::hive::forward::{DRAIN_DOMAIN, DRAIN_SCHEME, check_proof, parse_proof};
    use tryst_relay::hive::verify::{PublicationPolicy, verify_publication};
    use tryst_relay::tag::table::{TagLimits, TagTable};
    use tryst_relay::tag::wire;

    #[test]
    fn workloads_succeed_in_full() {
        use super::workloads::*;
        // Ed25519 is slow unoptimised: the signature workloads run a few operations here;
        // `instr` asserts the full counts whenever the gate runs.
        assert_eq!(HiveVerify::with_iterations(3).run(), 3);
        assert_eq!(HiveDrainProof::with_iterations(3).run(), 3);
        let mut forward = HiveForward::new();
        assert_eq!(forward.run(), ITERATIONS * 1024);
        assert!(forward.is_empty());
        let mut store = HiveStoreInsert::new();
        assert_eq!(store.run(), STORE_DEVICES);
        assert_eq!(store.stored(), STORE_DEVICES);
        let mut tag = TagParkVerify::with_iterations(3);
        assert_eq!(tag.run(), 3);
        assert_eq!(tag.run(), 0, "every nonce is now a replay");
        assert_eq!(QredoDecodeCreate::new().run(), ITERATIONS);
        let encode = QredoEncodeResult::new();
        assert_eq!(encode.run(), ITERATIONS * encode.encoded_len());
        assert_eq!(QredoRespond::new().run(), ITERATIONS);
        let mut route = RouteHeads::with_iterations(3);
        assert_eq!(route.run(), 6, "three parks and three reaches");
        assert_eq!(
            route.run(),
            3,
            "the parks' proofs are replays now; reaches still route"
        );
    }

    #[test]
    fn publications_verify_and_are_deterministic() {
        for n in [1, 2, 16] {
            let body = publication(n);
            assert_eq!(body, publication(n), "signing is deterministic");
            let p = verify_publication(&body, T0, &PublicationPolicy::default())
                .unwrap_or_else(|e| panic!("{n} candidates: {e}"));
            assert_eq!((p.workspace, p.device), (WORKSPACE, DEVICE));
        }
    }

    #[test]
    fn drain_header_checks_and_a_tampered_one_does_not() {
        let key = device_key().verifying_key().to_bytes();
        let header = drain_header(T0 as u64, &nonce(7));
        let proof = parse_proof(&header, DRAIN_SCHEME).expect("parses");
        check_proof(&proof, DRAIN_DOMAIN, &key, (&WORKSPACE, &DEVICE), T0, 60).expect("checks");
        let mut bad = proof;
        bad.nonce = nonce(8);
        assert!(check_proof(&bad, DRAIN_DOMAIN, &key, (&WORKSPACE, &DEVICE), T0, 60).is_err());
    }

    #[test]
    fn tag_proofs_park_once_each() {
        let now = T0 as u64;
        let mut table = TagTable::new(TagLimits::default());
        for n in 0..3 {
            let header = tag_proof_header(now, &nonce(n), &Default::default());
            let proof = wire::parse_proof(header.as_bytes()).expect("parses");
            let parked = table
                .park(&TAG, &proof, &Default::default(), now)
                .expect("parks");
            assert_eq!(parked.created, n == 0);
            assert!(
                table.park(&TAG, &proof, &Default::default(), now).is_err(),
                "replay"
            );
        }
        assert_eq!(wire::parse_target(&TAG.target()).expect("parses"), TAG);
    }
}

/// Fixtures of Qredo's `/services` benches (`benches/qredo.rs`) and of `qredo_cpu`: a
/// `Rendezvous.create` request as the SDK sends it, a `respond`, and a table holding
/// the rendezvous.
pub mod qredo {
    use tryst_relay::qredo::lf::{Interchange, PROTOCOL_VERSION, Record, Request, Value};
    use tryst_relay::qredo::rendezvous::{RendezvousLimits, RendezvousTable};

    /// The fixtures' time, unix ms.
    pub const T0: u64 = 1_700_000_000_000;
    /// The fixture hashed tag.
    pub const TAG: [u8; 32] = [0x11; 32];

    /// A `Rendezvous` request for `op` with `args`.
    pub fn request(op: &str, args: Vec<Value>) -> Request {
        Request {
            header: Interchange {
                protocol: PROTOCOL_VERSION,
                release: PROTOCOL_VERSION,
                return_channel: b"client-1".to_vec(),
                correlation: vec![7; 16],
                service: "Rendezvous".into(),
                operation: op.into(),
            },
            app_id: "com.example.chat".into(),
            app_secret: vec![0x5e; 8],
            args,
        }
    }

    /// A `RendezvousCreationInfo` as the SDK sends it (anonymous, unlimited, 600 s).
    pub fn creation_info() -> Value {
        let owner = ed25519_dalek::SigningKey::from_bytes(&TAG);
        Value::Record(Record::new(
            "RendezvousCreationInfo",
            vec![
                ("durationSeconds", Value::Set(vec![Value::Int32(600)])),
                (
                    "encryptedResponderInfo",
                    Value::Record(Record::new(
                        "EncryptedResponderInfo",
                        vec![
                            ("authenticationCode", Value::Bytes(vec![0xaa; 32])),
                            (
                                "authenticationType",
                                Value::Record(Record::unit("RendezvousAnonymous")),
                            ),
                            ("value", Value::Bytes(vec![0x42; 120])),
                        ],
                    )),
                ),
                ("hashedTag", Value::Quid(TAG)),
                (
                    "ownershipPublicKey",
                    Value::Bytes(owner.verifying_key().to_bytes().to_vec()),
                ),
                (
                    "responseCountLimit",
                    Value::Record(Record::unit("RendezvousUnlimitedResponses")),
                ),
            ],
        ))
    }

    /// A `RendezvousResponse` to [`TAG`].
    pub fn response() -> Value {
        Value::Record(Record::new(
            "RendezvousResponse",
            vec![
                ("hashedTag", Value::Quid(TAG)),
                ("responderAuthenticationCode", Value::Bytes(vec![3; 32])),
                ("responderPublicKey", Value::Bytes(vec![4; 32])),
            ],
        ))
    }

    /// A table holding the rendezvous of [`creation_info`] (no response cap).
    pub fn table() -> RendezvousTable {
        let mut t = RendezvousTable::new(RendezvousLimits {
            max_responses: usize::MAX,
            ..RendezvousLimits::default()
        });
        t.create(&creation_info(), T0).expect("created");
        t
    }
}
